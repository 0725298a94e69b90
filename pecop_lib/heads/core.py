"""CoRe: group-aware contrastive regression (Yu et al., ICCV 2021; yuxumin/CoRe).

CoRe predicts the score *difference* between a video and an exemplar of known score. The pair
feature ``[f_known (C), f_unknown (C), s_known / theta (1)]`` goes through a binary regression
tree: ``depth - 1`` levels of two-way decisions pick one of ``2^(depth-1)`` = 16 *groups*
(score-difference intervals), and a per-leaf regressor places the difference inside the chosen
interval. Facts: ``reference/aqa-heads.md`` Sec. 4.

Group boundaries (:func:`group_bounds`): the absolute differences over all same-group training
pairs, sorted (length ``L``); positive interval ``i`` of 8 is ``[d[int(i/8 (L-1))],
d[int((i+1)/8 (L-1))]]`` with the first left edge set to 0 and the last right edge to ``theta``;
the 8 negative intervals are the mirror images (leaves 0-7 negative, 8-15 positive). MTL-AQA
split 0 gives 0 / 0.912 / 1.5 / 2.5 / 3.0 / 4.5 / 6.0 / 8.5 / 30.

Membership (:func:`leaf_targets`): a difference ``delta >= 0`` belongs to ``[l, r)``, a negative
one to ``(l, r]``; its regression target is ``(delta - l) / (r - l)`` (``delta - l`` if
``l == r``). A difference of exactly ``+-theta`` matches no official group (the official label
then falls to leaf 0 without a regression target); here it goes to the outermost group with
target 1 (resp. 0), and a difference beyond ``theta`` raises (``score_range`` is too small).

Loss (:meth:`CoRe.pair_loss`): per direction, the NLL of the true leaf (mean over the batch)
plus, for every leaf, the mean squared error of its offset over the samples whose true leaf it
is; summed over leaves and both directions, unweighted.

Inference: leaf = argmax; ``delta = l + (r - l) * offset``; test prediction = mean over the
exemplars of ``delta + s_exemplar``, times the query's difficulty when regressing completeness
(:func:`pecop_lib.heads.exemplars.predict_with_exemplars`).

Score scale per dataset (:data:`CORE_SETTINGS`): MTL-AQA regresses *completeness* = final score /
difficulty (the sum of the middle three judges, 0..30, ``theta`` = 30) and exemplars share the
difficulty. JIGSAWS and PD4T have no official CoRe code; they regress raw scores with ``theta``
set to the largest possible difference (GRS 6..30: 24; UPDRS 0..4: 4) and exemplars of the same
task. FineDiving (CoRe baseline of the FineDiving paper, no public code) is treated like MTL-AQA,
with exemplars of the same action type.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pecop_lib.heads.exemplars import group_members
from pecop_lib.heads.interface import NO_CODE, FinetuneRecipe, HeadKind
from pecop_lib.heads.windows import WindowFeatures, Windowing

TREE_DEPTH = 5
"""``RT_depth``: 4 decision levels, 16 leaves."""
TREE_HIDDEN = 256
FEATURE_DIM = 1024


@dataclass(frozen=True)
class CoReSetting:
    """Score scale of CoRe on one dataset.

    Attributes:
        score_range: ``theta``: divides the exemplar score in the pair feature and is the
            outer group edge.
        use_difficulty: Regress completeness (score / difficulty) and multiply back.
    """

    score_range: float
    use_difficulty: bool


CORE_SETTINGS: dict[str, CoReSetting] = {
    "mtl_aqa": CoReSetting(30.0, True),
    "finediving": CoReSetting(30.0, True),
    "jigsaws": CoReSetting(24.0, False),
    "pd4t": CoReSetting(4.0, False),
}
"""Per-dataset settings (only ``mtl_aqa`` is official; see the module docstring)."""


def pair_deltas(values: Sequence[float] | np.ndarray, groups: Sequence[Hashable]) -> np.ndarray:
    """``|v_i - v_j|`` over all pairs ``i < j`` of the same group (``MTLPair.delta()``).

    Args:
        values: Regressed value of every training video (MTL-AQA: completeness).
        groups: Group key of every training video (MTL-AQA: difficulty).

    Returns:
        float64 differences, grouped by group (first appearance), pairs in row-major order.
    """
    values = np.asarray(values, dtype=np.float64)
    out = []
    for members in group_members(groups).values():
        v = values[members]
        i, j = np.triu_indices(len(v), k=1)
        out.append(np.abs(v[i] - v[j]))
    return np.concatenate(out) if out else np.zeros(0)


def group_bounds(
    deltas: Sequence[float] | np.ndarray, depth: int = TREE_DEPTH, *, low: float = 0.0, high: float = 30.0
) -> np.ndarray:
    """CoRe's symmetric quantile groups (``Group_helper`` with ``Symmetrical=True``).

    Args:
        deltas: Absolute same-group training differences (:func:`pair_deltas`).
        depth: Tree depth; ``2^(depth-1)`` groups, half of them negative.
        low: Left edge of the first positive group (``Min`` = 0).
        high: Right edge of the last positive group (``Max`` = ``score_range``).

    Returns:
        float64 ``(2^(depth-1), 2)``: ``[left, right]`` of each group, leaves 0.. negative to positive.

    Raises:
        ValueError: On an empty list, a depth < 2 or a difference above ``high``.
    """
    d = np.sort(np.asarray(deltas, dtype=np.float64))
    if len(d) == 0 or depth < 2:
        raise ValueError(
            f"group_bounds needs at least one difference and depth >= 2, got {len(d)} and {depth}"
        )
    if d[-1] > high:
        raise ValueError(
            f"a training difference {d[-1]} exceeds the outer group edge {high}; raise score_range"
        )
    half = 2 ** (depth - 1) // 2
    last = len(d) - 1
    edges = [d[int(i / half * last)] for i in range(half + 1)]
    edges[0], edges[-1] = low, high
    positive = np.array([[edges[i], edges[i + 1]] for i in range(half)])
    negative = -positive[::-1, ::-1] + 0.0  # + 0.0 turns -0.0 into 0.0
    return np.concatenate([negative, positive])


def leaf_targets(delta: torch.Tensor, bounds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The true leaf and in-interval offset of each score difference.

    Args:
        delta: Score differences ``(B,)`` (unknown minus known).
        bounds: ``(L, 2)`` group edges (:func:`group_bounds`).

    Returns:
        ``leaf`` int64 ``(B,)`` and ``offset`` float32 ``(B,)`` (``(delta - l) / (r - l)``, or
        ``delta - l`` for an empty interval).

    Raises:
        ValueError: If a difference lies outside ``[bounds.min(), bounds.max()]``.
    """
    d = delta.detach().to(torch.float64).reshape(-1, 1)
    left, right = bounds[:, 0].to(d.device), bounds[:, 1].to(d.device)
    outer = float(bounds[-1, 1])
    if (d.abs() > outer).any():
        raise ValueError(
            f"score difference(s) {d[d.abs() > outer].tolist()} exceed the group range +-{outer}; raise score_range"
        )
    member = torch.where(d >= 0, (d >= left) & (d < right), (d > left) & (d <= right))
    member[:, -1] |= d[:, 0] == outer
    member[:, 0] |= d[:, 0] == -outer
    leaf = member.to(torch.float32).argmax(dim=1)
    l, r = left[leaf], right[leaf]
    width = r - l
    offset = torch.where(width > 0, (d[:, 0] - l) / torch.where(width > 0, width, 1.0), d[:, 0] - l)
    return leaf, offset.to(torch.float32)


def relative_from_leaves(
    leaf_log_probs: torch.Tensor, offsets: torch.Tensor, bounds: torch.Tensor
) -> torch.Tensor:
    """Decode: argmax leaf, then ``l + (r - l) * offset`` (``l + offset`` if ``l == r``); ``(B,)``."""
    leaf = leaf_log_probs.argmax(dim=1)
    b = bounds.to(offsets.device, offsets.dtype)
    l, r = b[leaf, 0], b[leaf, 1]
    off = offsets.gather(1, leaf[:, None])[:, 0]
    return torch.where(r > l, l + (r - l) * off, l + off)


class RegressionTree(nn.Module):
    """CoRe's group-aware regression tree (module and parameter names as ``RegressTree``).

    Args:
        in_dim: Pair-feature width (``2 C + 1``; 2049 for I3D).
        hidden: Width per node (256).
        depth: ``depth - 1`` decision levels, ``2^(depth-1)`` leaves.

    The first layer maps the pair feature to ``hidden``; level ``d`` holds ``2^d`` nodes of
    ``hidden`` channels, a grouped 1x1 convolution classifies each node's two children and
    another expands every node into its two children; the last level's 16 nodes regress one
    offset each.
    """

    def __init__(
        self, in_dim: int = 2 * FEATURE_DIM + 1, hidden: int = TREE_HIDDEN, depth: int = TREE_DEPTH
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"tree depth must be >= 2, got {depth}")
        self.depth = depth
        self.num_leaves = 2 ** (depth - 1)
        self.first_layer = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU())
        self.feature_layers = nn.ModuleList(
            nn.Sequential(nn.Conv1d(2**d * hidden, 2 ** (d + 1) * hidden, 1, groups=2**d), nn.ReLU())
            for d in range(depth - 1)
        )
        self.clf_layers = nn.ModuleList(
            nn.Conv1d(2**d * hidden, 2**d * 2, 1, groups=2**d) for d in range(depth - 1)
        )
        self.reg_layer = nn.Conv1d(self.num_leaves * hidden, self.num_leaves, 1, groups=self.num_leaves)

    def forward(self, pair: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pair features ``(B, in_dim)`` -> leaf log-probabilities ``(B, L)`` and offsets ``(B, L)``.

        ``log P(leaf)`` is the sum of the binary log-softmaxes on the root-to-leaf path; the
        children of node ``n`` are ``2n`` and ``2n + 1``.
        """
        x = self.first_layer(pair).unsqueeze(-1)
        batch = x.shape[0]
        log_p = x.new_zeros(batch, 1)
        for clf, expand in zip(self.clf_layers, self.feature_layers):
            decisions = F.log_softmax(clf(x).reshape(batch, -1, 2), dim=-1)
            log_p = (log_p.unsqueeze(-1) + decisions).reshape(batch, -1)
            x = expand(x)
        return log_p, self.reg_layer(x).squeeze(-1)


class CoRe(nn.Module):
    """CoRe head: pair feature -> regression tree -> relative score.

    Args:
        bounds: Group edges ``(2^(depth-1), 2)`` from :func:`group_bounds` (kept as a buffer,
            so checkpoints carry them).
        score_range: ``theta`` (:data:`CORE_SETTINGS`).
        in_dim: Video feature width ``C``.
        hidden, depth: Tree width and depth.
    """

    def __init__(
        self,
        bounds: np.ndarray | torch.Tensor,
        score_range: float,
        in_dim: int = FEATURE_DIM,
        hidden: int = TREE_HIDDEN,
        depth: int = TREE_DEPTH,
    ) -> None:
        super().__init__()
        self.tree = RegressionTree(2 * in_dim + 1, hidden, depth)
        bounds = torch.as_tensor(np.asarray(bounds), dtype=torch.float64)
        if bounds.shape != (self.tree.num_leaves, 2):
            raise ValueError(
                f"bounds must have shape ({self.tree.num_leaves}, 2) for depth {depth}, got {tuple(bounds.shape)}"
            )
        if score_range <= 0:
            raise ValueError(f"score_range must be > 0, got {score_range}")
        self.register_buffer("bounds", bounds)
        self.score_range = float(score_range)

    def forward(
        self, f_known: torch.Tensor, f_unknown: torch.Tensor, s_known: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Leaf log-probabilities and offsets ``(B, L)`` for ``s_unknown - s_known``.

        Args:
            f_known: Features of the video with known score ``(B, C)``.
            f_unknown: Features of the other video ``(B, C)``.
            s_known: The known score ``(B,)``.
        """
        pair = torch.cat(
            [f_known, f_unknown, (s_known.to(f_known.dtype) / self.score_range).unsqueeze(1)], dim=1
        )
        return self.tree(pair)

    def direction_loss(
        self, leaf_log_probs: torch.Tensor, offsets: torch.Tensor, delta: torch.Tensor
    ) -> torch.Tensor:
        """NLL of the true leaf + per-leaf mean squared offset error, summed over leaves."""
        leaf, target = leaf_targets(delta, self.bounds)
        loss = F.nll_loss(leaf_log_probs, leaf)
        err = (offsets.gather(1, leaf[:, None])[:, 0] - target.to(offsets.dtype)) ** 2
        count = torch.zeros(offsets.shape[1], device=err.device).index_add_(0, leaf, torch.ones_like(err))
        per_leaf = torch.zeros(offsets.shape[1], device=err.device, dtype=err.dtype).index_add_(0, leaf, err)
        return loss + (per_leaf[count > 0] / count[count > 0]).sum()

    def pair_loss(
        self, f_a: torch.Tensor, f_b: torch.Tensor, s_a: torch.Tensor, s_b: torch.Tensor
    ) -> torch.Tensor:
        """Training loss of pairs ``(a, b)`` in both directions (``b`` relative to ``a`` and back)."""
        loss_ab = self.direction_loss(*self(f_a, f_b, s_a), s_b - s_a)
        loss_ba = self.direction_loss(*self(f_b, f_a, s_b), s_a - s_b)
        return loss_ab + loss_ba

    def relative(self, f_known: torch.Tensor, f_unknown: torch.Tensor, s_known: torch.Tensor) -> torch.Tensor:
        """Decoded ``s_unknown - s_known`` ``(B,)``."""
        return relative_from_leaves(*self(f_known, f_unknown, s_known), self.bounds)

    def relative_to(
        self, query: WindowFeatures, exemplar: WindowFeatures, s_exemplar: torch.Tensor
    ) -> torch.Tensor:
        """:data:`~pecop_lib.heads.exemplars.RelativeFn` for test time: query minus exemplar ``(P,)``."""
        return self.relative(exemplar.video(), query.video(), s_exemplar)


def core_bounds(values: np.ndarray, groups: Sequence[Hashable], score_range: float) -> np.ndarray:
    """CoRe's group edges from the same-group training differences (:func:`group_bounds`).

    Falls back (with a warning) to all training pairs when no two training videos share a group,
    which only happens on tiny synthetic splits.
    """
    deltas = pair_deltas(values, groups)
    if len(deltas) == 0:
        warnings.warn("no two training videos share an exemplar group: CoRe's group bounds use all training pairs",
                      stacklevel=2)
        deltas = pair_deltas(values, ["all"] * len(values))
    return group_bounds(deltas, high=score_range)


# ------------------------------------------------------------------------------ the head's kind
_CORE_RECIPE = {"lr_backbone": 1e-4, "lr_head": 1e-3, "weight_decay": 0.0, "batch_size": 1, "grad_accum_steps": 2,
                "epochs": 200, "bn_mode": "frozen", "official_protocol": "official"}


class CoReKind(HeadKind):
    """CoRe for fine-tuning (:class:`~pecop_lib.heads.interface.HeadKind`): pairs, a regression tree
    over group edges, completeness (score / difficulty) where the dataset's setting says so."""

    name, display = "core", "CoRe"
    pairs = True
    recipes = {r.dataset: r for r in (
        FinetuneRecipe("core", "MTL-AQA", "core_mtl_aqa", **_CORE_RECIPE),
        FinetuneRecipe("core", "JIGSAWS", "musdl_jigsaws", source=NO_CODE, **_CORE_RECIPE),
        FinetuneRecipe("core", "FineDiving", "tsa_finediving", max_crop=112, source=NO_CODE, **_CORE_RECIPE),
        FinetuneRecipe("core", "PD4T", "core_mtl_aqa", source=NO_CODE, **_CORE_RECIPE),
    )}

    def values(self, records: Sequence[Any], dataset_key: str) -> np.ndarray:
        """Completeness (score / difficulty) where :data:`CORE_SETTINGS` uses the difficulty, else the score."""
        scores = super().values(records, dataset_key)
        if CORE_SETTINGS[dataset_key].use_difficulty:
            return scores / np.array([r.difficulty for r in records], dtype=np.float64)
        return scores

    def build(self, feature_dim: int, windowing: Windowing, dataset_key: str, *, decode: str,
              values: np.ndarray, groups: Sequence[str], segment_pairs: str = "separate") -> nn.Module:
        """:class:`CoRe` with group edges from the training values (:func:`core_bounds`)."""
        score_range = CORE_SETTINGS[dataset_key].score_range
        return CoRe(core_bounds(values, groups, score_range), score_range, feature_dim)

    def loss(self, head: nn.Module, batch: dict[str, torch.Tensor], a: WindowFeatures,
             b: WindowFeatures | None = None) -> torch.Tensor:
        """:meth:`CoRe.pair_loss` of the window-averaged features, both directions."""
        assert b is not None, "CoRe learns from pairs"
        return head.pair_loss(a.video(), b.video(), batch["value_a"], batch["value_b"])  # type: ignore[operator]

    def relative(self, head: nn.Module, query: WindowFeatures, exemplar: WindowFeatures,
                 s_exemplar: torch.Tensor) -> torch.Tensor:
        """:meth:`CoRe.relative_to`."""
        return head.relative_to(query, exemplar, s_exemplar)  # type: ignore[operator]

    def final_scores(self, values: np.ndarray, records: Sequence[Any], dataset_key: str) -> np.ndarray:
        """Completeness times difficulty where the dataset's setting regresses completeness."""
        if CORE_SETTINGS[dataset_key].use_difficulty:
            return values * np.array([r.difficulty for r in records])
        return values
