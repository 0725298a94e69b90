"""AQA heads on the common backbone API: USDL/MUSDL, CoRe, TSA, and the clip windowing they share.

Typical use::

    from pecop_lib.heads import USDL, usdl_spec, encode_windows, windowing_for
    windowing = windowing_for("musdl_mtl_aqa")                    # 10 windows of 16 over 103 frames
    head = USDL(usdl_spec("mtl_aqa", multi_path=True))            # MUSDL, 7 judges
    feats = encode_windows(backbone, clips, windowing).video()    # (B, 1024)
    log_p = head(feats)                                           # (B, 7, 21)
    loss = head.loss(log_p, judge_scores)
    scores = head.predict(log_p, difficulty=difficulty)           # middle three x difficulty

Heads take tensors (features, scores), never the config; they never import ``train``. Fine-tuning
reaches every head through one interface, its :class:`HeadKind` (:func:`head_kind`): recipes, the
data it needs, the loss, prediction and score scale (:mod:`pecop_lib.heads.interface`).
"""

from pecop_lib.heads.core import (
    CORE_SETTINGS,
    CoRe,
    CoReSetting,
    RegressionTree,
    core_bounds,
    group_bounds,
    leaf_targets,
    pair_deltas,
    relative_from_leaves,
)
from pecop_lib.heads.exemplars import (
    ExemplarDraw,
    FeatureCache,
    draw_exemplars,
    exemplar_votes,
    group_members,
    predict_with_exemplars,
    training_partners,
    vote_means,
)
from pecop_lib.heads.feature_store import FeatureStore
from pecop_lib.heads.interface import FinetuneRecipe, HeadKind
from pecop_lib.heads.mlp import ScoreMLP
from pecop_lib.heads.registry import HEAD_KINDS, HEADS, head_kind, recipes
from pecop_lib.heads.tsa import (
    TSA,
    CrossAttentionDecoder,
    PSNet,
    predict_transitions,
    resample_steps,
    teacher_forcing,
    transition_targets,
    usable_transitions,
)
from pecop_lib.heads.usdl import (
    MUSDL_SPECS,
    USDL,
    USDL_SPECS,
    ScoreBins,
    USDLSpec,
    combine_paths,
    decode,
    distribution_interval,
    gaussian_soft_labels,
    kl_loss,
    usdl_spec,
)
from pecop_lib.heads.windows import (
    OFFICIAL_WINDOWINGS,
    WindowFeatures,
    Windowing,
    encode_windows,
    evenly_spaced,
    windowing_for,
)

__all__ = [
    "CORE_SETTINGS",
    "HEADS",
    "HEAD_KINDS",
    "MUSDL_SPECS",
    "OFFICIAL_WINDOWINGS",
    "TSA",
    "USDL",
    "USDL_SPECS",
    "CoRe",
    "CoReSetting",
    "CrossAttentionDecoder",
    "ExemplarDraw",
    "FeatureCache",
    "FeatureStore",
    "FinetuneRecipe",
    "HeadKind",
    "PSNet",
    "RegressionTree",
    "ScoreBins",
    "ScoreMLP",
    "USDLSpec",
    "WindowFeatures",
    "Windowing",
    "combine_paths",
    "core_bounds",
    "decode",
    "distribution_interval",
    "draw_exemplars",
    "encode_windows",
    "evenly_spaced",
    "gaussian_soft_labels",
    "group_bounds",
    "exemplar_votes",
    "group_members",
    "head_kind",
    "kl_loss",
    "leaf_targets",
    "pair_deltas",
    "predict_transitions",
    "predict_with_exemplars",
    "recipes",
    "relative_from_leaves",
    "resample_steps",
    "teacher_forcing",
    "training_partners",
    "transition_targets",
    "usable_transitions",
    "usdl_spec",
    "vote_means",
    "windowing_for",
]
