"""AQA metrics: Spearman's rho, Fisher-z averaging, (relative) L2 and temporal IoU.

Conventions follow the official AQA code (see ``aqa-heads.md`` sec. 8): Spearman via
``scipy.stats.spearmanr`` over a whole split; JIGSAWS folds averaged arithmetically within a task and
tasks combined with a Fisher-z mean; R-l2 normalised by the range of the *true* scores of the evaluated
split and reported **x100** as in the papers (the official code prints it without the factor).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

ArrayLike = Sequence[float] | np.ndarray


def _pair(pred: ArrayLike, true: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64).reshape(-1)
    t = np.asarray(true, dtype=np.float64).reshape(-1)
    if p.shape != t.shape:
        raise ValueError(f"predictions ({p.size}) and true scores ({t.size}) differ in length")
    if p.size < 2:
        raise ValueError(f"need at least 2 samples to score, got {p.size}")
    if not (np.isfinite(p).all() and np.isfinite(t).all()):
        raise ValueError("predictions or true scores contain NaN/inf; check the model output")
    return p, t


def spearman(pred: ArrayLike, true: ArrayLike) -> float:
    """Spearman's rank correlation of predictions and true scores (``scipy.stats.spearmanr``).

    Args:
        pred: Predicted scores, shape ``(N,)``.
        true: Ground-truth scores, shape ``(N,)``.

    Returns:
        rho in [-1, 1]; ``nan`` when either side is constant (rank correlation undefined).
    """
    p, t = _pair(pred, true)
    if np.ptp(p) == 0 or np.ptp(t) == 0:
        return float("nan")
    return float(stats.spearmanr(p, t).statistic)


def fisher_z_mean(rhos: Sequence[float]) -> float:
    """Average correlations in Fisher-z space: ``tanh(mean(arctanh(r)))``.

    Raises:
        ValueError: If a correlation is outside (-1, 1) (arctanh is infinite there) or the list is empty.
    """
    r = np.asarray(rhos, dtype=np.float64)
    if r.size == 0:
        raise ValueError("fisher_z_mean needs at least one correlation")
    if not np.all(np.abs(r) < 1):
        raise ValueError(f"Fisher-z needs correlations strictly inside (-1, 1), got {r.tolist()}")
    return float(np.tanh(np.arctanh(r).mean()))


def jigsaws_average(fold_rhos: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """JIGSAWS aggregation as published: arithmetic mean over folds per task, Fisher-z mean over tasks.

    Args:
        fold_rhos: ``{task: [rho of fold 1, ..., rho of fold 4]}``.

    Returns:
        ``{task: mean rho, ..., "avg": Fisher-z mean of the task means}``.
    """
    per_task = {task: float(np.mean(values)) for task, values in fold_rhos.items()}
    return {**per_task, "avg": fisher_z_mean(list(per_task.values()))}


def l2(pred: ArrayLike, true: ArrayLike) -> float:
    """Mean squared error ``mean((pred - true)^2)`` in score units."""
    p, t = _pair(pred, true)
    return float(np.mean((p - t) ** 2))


def relative_l2(pred: ArrayLike, true: ArrayLike, *, scale: float = 100.0) -> float:
    """Relative L2: ``scale * mean(((pred - true) / (max(true) - min(true)))^2)``.

    The range is that of the true scores of the evaluated split (as in CoRe/FineDiving).
    ``scale=100`` gives the papers' convention; ``scale=1`` what the official code prints.

    Raises:
        ValueError: If all true scores are equal (the range is zero).
    """
    p, t = _pair(pred, true)
    span = np.ptp(t)
    if span == 0:
        raise ValueError("relative L2 is undefined when all true scores are equal")
    return float(scale * np.mean(((p - t) / span) ** 2))


def segment_iou(pred: ArrayLike, true: ArrayLike) -> np.ndarray:
    """Temporal IoU of predicted and true segments ``[start, end]`` (frame units, inclusive-exclusive).

    Args:
        pred: ``(N, 2)`` predicted segments.
        true: ``(N, 2)`` ground-truth segments.

    Returns:
        ``(N,)`` IoU values in [0, 1].
    """
    p = np.asarray(pred, dtype=np.float64).reshape(-1, 2)
    t = np.asarray(true, dtype=np.float64).reshape(-1, 2)
    if p.shape != t.shape:
        raise ValueError(f"segment arrays differ in shape: {p.shape} vs {t.shape}")
    if np.any(p[:, 1] < p[:, 0]) or np.any(t[:, 1] < t[:, 0]):
        raise ValueError("segments must satisfy start <= end")
    inter = np.clip(np.minimum(p[:, 1], t[:, 1]) - np.maximum(p[:, 0], t[:, 0]), 0, None)
    union = (p[:, 1] - p[:, 0]) + (t[:, 1] - t[:, 0]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def tiou_accuracy(pred: ArrayLike, true: ArrayLike, thresholds: Sequence[float] = (0.5, 0.75)) -> dict[float, float]:
    """Share of segments whose tIoU reaches each threshold (TSA reports 0.5 and 0.75)."""
    iou = segment_iou(pred, true)
    return {float(th): float(np.mean(iou >= th)) for th in thresholds}
