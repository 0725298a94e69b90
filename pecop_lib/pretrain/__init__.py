"""Stages 1 and 2: the domain-general backbone (the Kinetics stand-in on the synthetic action set, or
real Kinetics weights) and continual pretraining on the target's unlabeled videos with a pretext task
(VSPP, VideoPace, RSPNet) under one of five strategies.

:mod:`~pecop_lib.pretrain.general` trains stage 1, :mod:`~pecop_lib.pretrain.continual` stage 2 on the
pretext task of :mod:`~pecop_lib.pretrain.pretext`; :mod:`~pecop_lib.pretrain.targets` picks the
unlabeled target videos (never the test split), :mod:`~pecop_lib.pretrain.stage1_artifact` and
:mod:`~pecop_lib.pretrain.stage2_artifact` cache the results in the artifact store (:mod:`~pecop_lib.store`; shared pieces in :mod:`~pecop_lib.pretrain.artifacts`)
(load-or-train, keyed by everything that decides them) and :mod:`~pecop_lib.pretrain.pipeline` runs
both stages from a config.
"""


from pecop_lib.pretrain.artifacts import BackboneSource, kinetics_source, scratch_source
from pecop_lib.pretrain.continual import PretrainResult, continual_pretrain, cosine_optimizer
from pecop_lib.pretrain.general import action_accuracy, domain_general_pretrain
from pecop_lib.pretrain.pipeline import pretrain_run, pretrained_backbone, starting_point
from pecop_lib.pretrain.pretext import (
    PRETEXTS,
    PretextClips,
    TargetVideo,
    pretext_model,
    pretext_step,
    target_videos,
)
from pecop_lib.pretrain.stage1_artifact import (
    Stage1Artifact,
    Stage1Spec,
    load_stage1,
    stage1_backbone,
    stage1_spec,
)
from pecop_lib.pretrain.stage2_artifact import (
    Stage2Artifact,
    Stage2Spec,
    demo_stage2_spec,
    heldout_check,
    load_stage2,
    stage2_backbone,
    stage2_costs,
    stage2_spec,
)
from pecop_lib.pretrain.targets import (
    JIGSAWS_FOLDS,
    TARGET_DATASETS,
    check_evaluation_split,
    check_fold,
    named_target,
    official_normal_pace,
    pretraining_videos,
)

__all__ = [
    "JIGSAWS_FOLDS",
    "PRETEXTS",
    "TARGET_DATASETS",
    "BackboneSource",
    "PretextClips",
    "PretrainResult",
    "Stage1Artifact",
    "Stage1Spec",
    "Stage2Artifact",
    "Stage2Spec",
    "TargetVideo",
    "action_accuracy",
    "check_evaluation_split",
    "check_fold",
    "continual_pretrain",
    "cosine_optimizer",
    "demo_stage2_spec",
    "domain_general_pretrain",
    "heldout_check",
    "kinetics_source",
    "load_stage1",
    "load_stage2",
    "named_target",
    "official_normal_pace",
    "pretext_model",
    "pretext_step",
    "pretrain_run",
    "pretrained_backbone",
    "pretraining_videos",
    "scratch_source",
    "stage1_backbone",
    "stage1_spec",
    "stage2_backbone",
    "stage2_costs",
    "stage2_spec",
    "starting_point",
    "target_videos",
]
