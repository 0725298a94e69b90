"""USDL and MUSDL: score distributions learned from Gaussian soft labels (Tang et al., CVPR 2020).

USDL turns a score into a distribution over equally spaced *score bins*: a normal density
centred on the score's bin position with a fixed standard deviation (in bins), renormalised to
sum to 1. A small MLP predicts a distribution over the bins from the window-averaged video
feature and is trained with the KL divergence. MUSDL does the same once per judge (MTL-AQA, 7
paths) or per sub-score (JIGSAWS, 6 paths) and combines the decoded judge scores with the
sport's rule.

Official settings (nzl-thu/MUSDL, ``reference/aqa-heads.md`` Sec. 2-3):

========================  ==============  =====================  =====  =======================
spec                      scores          bins                   sigma  combination
========================  ==============  =====================  =====  =======================
USDL ``mtl_aqa``          final 0..104.5  101 (0..100)           5      none
USDL ``jigsaws``          GRS 6..30       25 (6, 7, ..., 30)     1      none
MUSDL ``mtl_aqa``         judge 0..10     21 (0, 0.5, ..., 10)   5      middle three x difficulty
MUSDL ``jigsaws``         sub-score 1..5  5 (1, ..., 5)          1      sum of the six
========================  ==============  =====================  =====  =======================

The ``pd4t`` specs (UPDRS 0..4, 5 bins, sigma 1) are this package's choice: PD4T has no official
USDL code; they follow the JIGSAWS pattern for integer scores.

Decoding is the **argmax** bin, as the official code does (its comment says "expectation", the
code takes the argmax). ``decode="expectation"`` (the mean of the predicted distribution) is
offered as a documented alternative; it is a different method and results must say which was used.

The loss is ``nn.KLDivLoss()`` with its default element-wise mean over ``batch x bins``
(not the true KL, which ``reduction="batchmean"`` would give), summed over MUSDL's paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from pecop_lib.heads.interface import NO_CODE, FinetuneRecipe, HeadKind
from pecop_lib.heads.windows import WindowFeatures, Windowing

Decode = Literal["argmax", "expectation"]
DECODE_MODES: tuple[str, ...] = ("argmax", "expectation")
Combination = Literal["middle_three_x_difficulty", "sum"]
COMBINATIONS: tuple[str, ...] = ("middle_three_x_difficulty", "sum")

FEATURE_DIM = 1024
"""Input width of the official heads (I3D's pooled feature)."""
HIDDEN = (256, 128)
"""Hidden widths of the official ``MLP_block``."""


@dataclass(frozen=True)
class ScoreBins:
    """``num_bins`` equally spaced score values from ``low`` to ``high`` (both included).

    A score ``s`` sits at the continuous bin position ``(s - low) / (high - low) * (num_bins - 1)``
    (USDL on MTL-AQA: ``s * 100 / 104.5``).
    """

    low: float
    high: float
    num_bins: int

    def __post_init__(self) -> None:
        if self.num_bins < 2 or not self.high > self.low:
            raise ValueError(f"ScoreBins needs num_bins >= 2 and high > low, got {self}")

    @property
    def step(self) -> float:
        """Score difference between neighbouring bins."""
        return (self.high - self.low) / (self.num_bins - 1)

    def values(self, device: torch.device | None = None) -> torch.Tensor:
        """Score of every bin, float32 ``(num_bins,)``."""
        return self.low + self.step * torch.arange(self.num_bins, dtype=torch.float32, device=device)

    def position(self, scores: torch.Tensor) -> torch.Tensor:
        """Continuous bin position of each score (same shape as ``scores``)."""
        return (scores.to(torch.float32) - self.low) / self.step


@dataclass(frozen=True)
class USDLSpec:
    """Score bins and target width of one (M)USDL path.

    Attributes:
        bins: The score bins.
        sigma: Standard deviation of the Gaussian target, in bins.
        num_paths: 1 for USDL; judges or sub-scores for MUSDL.
        combination: How MUSDL combines its paths (``None`` for USDL).
    """

    bins: ScoreBins
    sigma: float
    num_paths: int = 1
    combination: Combination | None = None

    def __post_init__(self) -> None:
        if self.sigma <= 0 or self.num_paths < 1:
            raise ValueError(f"USDLSpec needs sigma > 0 and num_paths >= 1, got {self}")
        if self.combination is not None and self.combination not in COMBINATIONS:
            raise ValueError(f"unknown combination {self.combination!r}; choose one of {COMBINATIONS}")
        if (self.num_paths > 1) != (self.combination is not None):
            raise ValueError(f"several paths need a combination rule and one path none, got {self}")
        if self.combination == "middle_three_x_difficulty" and self.num_paths != 7:
            raise ValueError(f"the middle-three rule needs 7 judges, got num_paths={self.num_paths}")


USDL_SPECS: dict[str, USDLSpec] = {
    "mtl_aqa": USDLSpec(ScoreBins(0.0, 104.5, 101), sigma=5.0),
    "jigsaws": USDLSpec(ScoreBins(6.0, 30.0, 25), sigma=1.0),
    "pd4t": USDLSpec(ScoreBins(0.0, 4.0, 5), sigma=1.0),
}
"""USDL targets per dataset (``pd4t``: package choice, see the module docstring)."""

MUSDL_SPECS: dict[str, USDLSpec] = {
    "mtl_aqa": USDLSpec(
        ScoreBins(0.0, 10.0, 21), sigma=5.0, num_paths=7, combination="middle_three_x_difficulty"
    ),
    "jigsaws": USDLSpec(ScoreBins(1.0, 5.0, 5), sigma=1.0, num_paths=6, combination="sum"),
}
"""MUSDL targets and combination rule per dataset."""


def usdl_spec(dataset: str, multi_path: bool = False) -> USDLSpec:
    """The official (or package-chosen) spec of USDL (``multi_path=False``) or MUSDL on ``dataset``.

    Raises:
        ValueError: For a dataset without a spec (listing those that have one).
    """
    table = MUSDL_SPECS if multi_path else USDL_SPECS
    if dataset not in table:
        name = "MUSDL" if multi_path else "USDL"
        raise ValueError(
            f"no {name} spec for dataset {dataset!r}; known: {sorted(table)} (or build a USDLSpec)"
        )
    return table[dataset]


def gaussian_soft_labels(scores: torch.Tensor, bins: ScoreBins, sigma: float) -> torch.Tensor:
    """USDL targets: a normal density over the bin indices, centred on each score's position.

    ``p_k = N(k; position(s), sigma) / sum_j N(j; position(s), sigma)`` for ``k = 0..num_bins-1``
    (``scipy.stats.norm.pdf`` then renormalisation in the official code; the density's constant
    cancels).

    Args:
        scores: Any shape ``S``.
        bins: The score bins.
        sigma: Standard deviation in bins.

    Returns:
        float32 ``S + (num_bins,)``, each row summing to 1.
    """
    k = torch.arange(bins.num_bins, dtype=torch.float64, device=scores.device)
    z = (k - bins.position(scores).to(torch.float64).unsqueeze(-1)) / sigma
    logits = -0.5 * z * z
    return torch.softmax(logits, dim=-1).to(torch.float32)


def kl_loss(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``nn.KLDivLoss()`` with the default reduction: mean over all elements of ``t * (log t - log p)``.

    Args:
        log_probs: Predicted log-probabilities ``(B, K)``.
        targets: Target distributions ``(B, K)``.

    Returns:
        Scalar loss (terms with ``t = 0`` contribute 0).
    """
    return (torch.xlogy(targets, targets) - targets * log_probs).mean()


def decode(log_probs: torch.Tensor, bins: ScoreBins, mode: Decode = "argmax") -> torch.Tensor:
    """Predicted distribution -> score.

    Args:
        log_probs: ``(..., num_bins)``.
        bins: The score bins.
        mode: ``"argmax"`` (official): the value of the most probable bin; ``"expectation"``:
            the mean score under the predicted distribution.

    Returns:
        float32 ``(...)``.
    """
    values = bins.values(log_probs.device)
    if mode == "argmax":
        return values[log_probs.argmax(dim=-1)]
    if mode == "expectation":
        return (log_probs.exp() * values).sum(dim=-1)
    raise ValueError(f"unknown decode mode {mode!r}; choose one of {DECODE_MODES}")


def combine_paths(
    path_scores: torch.Tensor, rule: Combination, difficulty: torch.Tensor | None = None
) -> torch.Tensor:
    """MUSDL's judge combination.

    Args:
        path_scores: Decoded judge or sub-scores ``(B, P)``.
        rule: ``"middle_three_x_difficulty"`` (diving, P = 7: sort, drop the two highest and
            two lowest, sum the middle three, multiply by the difficulty) or ``"sum"`` (JIGSAWS
            GRS: sum of the six sub-scores).
        difficulty: ``(B,)`` degree of difficulty; required by the diving rule.

    Returns:
        ``(B,)`` final scores.
    """
    if rule == "sum":
        return path_scores.sum(dim=1)
    if rule != "middle_three_x_difficulty":
        raise ValueError(f"unknown combination {rule!r}; choose one of {COMBINATIONS}")
    if path_scores.shape[1] != 7:
        raise ValueError(
            f"the middle-three rule needs 7 judge scores per sample, got shape {tuple(path_scores.shape)}"
        )
    if difficulty is None:
        raise ValueError("the middle-three rule multiplies by the difficulty: pass difficulty=(B,) tensor")
    middle = path_scores.sort(dim=1).values[:, 2:5].sum(dim=1)
    return middle * difficulty.to(middle.dtype)


def distribution_interval(probs: torch.Tensor, spec: USDLSpec, difficulty: torch.Tensor | None = None, *,
                          coverage: float = 0.9, samples: int = 4000, seed: int = 0) -> torch.Tensor:
    """Central interval of the final score a predicted (M)USDL distribution implies.

    One path (USDL): the quantiles of the distribution over the bin scores. Several paths (MUSDL): the
    paths are independent draws, ``samples`` joint draws (generator seeded with ``seed``) are combined with
    the spec's rule (:func:`combine_paths`), and the interval is taken over the combined scores.

    Args:
        probs: Predicted probabilities ``(B, paths, bins)`` (rows sum to 1).
        spec: The head's bins, paths and combination.
        difficulty: ``(B,)`` where the combination multiplies by it.
        coverage: Probability inside the interval (0.9: the 5th to the 95th percentile).
        samples: Monte Carlo draws per video for several paths.
        seed: Seed of those draws.

    Returns:
        float32 ``(B, 2)``: low and high end.

    Raises:
        ValueError: On a coverage outside (0, 1) or a shape that does not match the spec.
    """
    if not 0 < coverage < 1:
        raise ValueError(f"coverage must be in (0, 1), got {coverage}")
    if probs.dim() != 3 or probs.shape[1:] != (spec.num_paths, spec.bins.num_bins):
        raise ValueError(f"expected probabilities (B, {spec.num_paths}, {spec.bins.num_bins}), got {tuple(probs.shape)}")
    tail = (1 - coverage) / 2
    values = spec.bins.values(probs.device)
    probs = probs.float()
    if spec.num_paths == 1:
        cdf = probs[:, 0].cumsum(dim=1)
        ends = [torch.searchsorted(cdf, torch.full((cdf.shape[0], 1), q, device=cdf.device)).clamp(max=cdf.shape[1] - 1)
                for q in (tail, 1 - tail)]
        return torch.cat([values[e] for e in ends], dim=1)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    batch = probs.shape[0]
    flat = probs.reshape(batch * spec.num_paths, -1).cpu()
    draws = torch.multinomial(flat, samples, replacement=True, generator=generator)  # (B * paths, samples)
    path_scores = values.cpu()[draws].reshape(batch, spec.num_paths, samples).permute(0, 2, 1)
    scores = combine_paths(path_scores.reshape(batch * samples, spec.num_paths), spec.combination,  # type: ignore[arg-type]
                           None if difficulty is None else difficulty.cpu().float().repeat_interleave(samples))
    quantiles = torch.tensor([tail, 1 - tail])
    return torch.quantile(scores.reshape(batch, samples), quantiles, dim=1).T.to(probs.device)


class ScoreDistributionMLP(nn.Module):
    """The official ``MLP_block``: Linear-ReLU-Linear-ReLU-Linear, log-softmax over bins.

    The official block ends with Softmax and the loss takes ``log`` of it; returning the
    log-softmax is the same function, numerically safer.

    Args:
        num_bins: Output bins.
        in_dim: Feature width (1024 for I3D, 512 for R3D-18).
        hidden: Hidden widths.
    """

    def __init__(self, num_bins: int, in_dim: int = FEATURE_DIM, hidden: tuple[int, int] = HIDDEN) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_dim, hidden[0]),
            nn.ReLU(),
            nn.Linear(hidden[0], hidden[1]),
            nn.ReLU(),
            nn.Linear(hidden[1], num_bins),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, in_dim)`` -> log-probabilities ``(B, num_bins)``."""
        return torch.log_softmax(self.layers(features), dim=-1)


class USDL(nn.Module):
    """USDL (``spec.num_paths == 1``) or MUSDL (one :class:`ScoreDistributionMLP` per path).

    Args:
        spec: Bins, sigma, paths and combination (see :func:`usdl_spec`).
        in_dim: Feature width of the backbone.
        decode: ``"argmax"`` (official) or ``"expectation"``.

    Example:
        >>> head = USDL(usdl_spec("mtl_aqa", multi_path=True))
        >>> log_p = head(torch.randn(2, 1024))                       # (2, 7, 21)
        >>> loss = head.loss(log_p, torch.full((2, 7), 8.5))
        >>> head.predict(log_p, difficulty=torch.tensor([3.0, 2.0])).shape
        torch.Size([2])
    """

    def __init__(self, spec: USDLSpec, in_dim: int = FEATURE_DIM, decode: Decode = "argmax") -> None:
        super().__init__()
        if decode not in DECODE_MODES:
            raise ValueError(f"unknown decode mode {decode!r}; choose one of {DECODE_MODES}")
        self.spec = spec
        self.decode_mode = decode
        self.paths = nn.ModuleList(
            ScoreDistributionMLP(spec.bins.num_bins, in_dim) for _ in range(spec.num_paths)
        )

    @property
    def multi_path(self) -> bool:
        """Whether this is MUSDL (paths are combined by a rule)."""
        return self.spec.combination is not None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Video features ``(B, in_dim)`` -> log-probabilities ``(B, num_paths, num_bins)``."""
        return torch.stack([path(features) for path in self.paths], dim=1)

    def targets(self, scores: torch.Tensor) -> torch.Tensor:
        """Soft labels ``(B, num_paths, num_bins)`` from scores ``(B,)`` (USDL) or ``(B, num_paths)`` (MUSDL)."""
        scores = scores.reshape(scores.shape[0], -1)
        if scores.shape[1] != self.spec.num_paths:
            raise ValueError(
                f"expected {self.spec.num_paths} score(s) per sample (one per path), got shape {tuple(scores.shape)}; "
                "MUSDL takes judge_scores (MTL-AQA) or subscores (JIGSAWS), USDL the final score"
            )
        return gaussian_soft_labels(scores, self.spec.bins, self.spec.sigma)

    def loss(self, log_probs: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Sum over paths of :func:`kl_loss` against the Gaussian targets of ``scores``."""
        targets = self.targets(scores)
        return sum(kl_loss(log_probs[:, p], targets[:, p]) for p in range(self.spec.num_paths))  # type: ignore[return-value]

    def path_scores(self, log_probs: torch.Tensor) -> torch.Tensor:
        """Decoded score of every path ``(B, num_paths)``."""
        return decode(log_probs, self.spec.bins, self.decode_mode)

    def predict(self, log_probs: torch.Tensor, difficulty: torch.Tensor | None = None) -> torch.Tensor:
        """Final scores ``(B,)``: the decoded score (USDL) or the combined paths (MUSDL)."""
        scores = self.path_scores(log_probs)
        if not self.multi_path:
            return scores[:, 0]
        return combine_paths(scores, self.spec.combination, difficulty)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ the head's kind
_USDL_RECIPE = {"lr_backbone": 1e-4, "lr_head": 1e-4, "batch_size": 4, "grad_accum_steps": 1, "bn_mode": "train"}


class USDLKind(HeadKind):
    """USDL for fine-tuning (:class:`~pecop_lib.heads.interface.HeadKind`): one distribution of the final score."""

    name, display = "usdl", "USDL"
    distributions = True
    recipes = {r.dataset: r for r in (
        FinetuneRecipe("usdl", "MTL-AQA", "musdl_mtl_aqa", weight_decay=0.0, epochs=100, official_protocol="official",
                       transform="musdl_mtl", **_USDL_RECIPE),
        FinetuneRecipe("usdl", "JIGSAWS", "musdl_jigsaws", weight_decay=0.0, epochs=80,
                       official_protocol="official_last10", **_USDL_RECIPE),
        FinetuneRecipe("usdl", "PD4T", "core_mtl_aqa", weight_decay=0.0, epochs=100, official_protocol="official",
                       source=NO_CODE, **_USDL_RECIPE),
    )}
    multi_path = False

    def build(self, feature_dim: int, windowing: Windowing, dataset_key: str, *, decode: str,
              values: np.ndarray, groups: Sequence[str], segment_pairs: str = "separate") -> nn.Module:
        """:class:`USDL` with the dataset's spec (:func:`usdl_spec`)."""
        return USDL(self.distribution_spec(dataset_key), feature_dim, decode=decode)  # type: ignore[arg-type]

    def distribution_spec(self, dataset_key: str) -> USDLSpec:
        """The dataset's :func:`usdl_spec` (one path for USDL, judges or sub-scores for MUSDL)."""
        return usdl_spec(dataset_key, multi_path=self.multi_path)

    def loss(self, head: nn.Module, batch: dict[str, torch.Tensor], a: WindowFeatures,
             b: WindowFeatures | None = None) -> torch.Tensor:
        """KL loss of the window-averaged features' distributions against ``batch["target"]``."""
        return head.loss(head(a.video()), batch["target"])  # type: ignore[operator]

    def score(self, head: nn.Module, feats: torch.Tensor,
              difficulty: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Decoded (and, for MUSDL, combined) scores and the predicted distributions."""
        log_p = head(feats)
        return head.predict(log_p, difficulty=difficulty), log_p.exp()  # type: ignore[operator]


class MUSDLKind(USDLKind):
    """MUSDL for fine-tuning: one distribution per judge (MTL-AQA) or sub-score (JIGSAWS), combined by rule."""

    name, display = "musdl", "MUSDL"
    recipes = {r.dataset: r for r in (
        FinetuneRecipe("musdl", "MTL-AQA", "musdl_mtl_aqa", weight_decay=1e-5, epochs=100,
                       official_protocol="official", transform="musdl_mtl", **_USDL_RECIPE),
        FinetuneRecipe("musdl", "JIGSAWS", "musdl_jigsaws", weight_decay=0.0, epochs=80,
                       official_protocol="official_last10", **_USDL_RECIPE),
    )}
    main_datasets = 2  # the last-10 protocol of JIGSAWS is MUSDL's
    multi_path = True

    def lacking_targets(self, records: Sequence[Any], *, judged: bool) -> list[str]:
        """On a judged dataset, the records without per-judge scores."""
        return [r.id for r in records if r.judge_scores is None] if judged else []

    def target(self, record: Any) -> torch.Tensor:
        """The judges' scores ``(7,)`` or the JIGSAWS sub-scores ``(6,)``, float32."""
        return torch.tensor(self.path_targets(record), dtype=torch.float32)

    def path_targets(self, record: Any) -> np.ndarray:
        """The judges' scores ``(7,)`` where present, else the sub-scores ``(6,)``, float64."""
        scores = record.judge_scores if record.judge_scores is not None else record.subscores
        return np.asarray(scores, dtype=np.float64)
