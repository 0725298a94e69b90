"""How sure a number is: bootstrap confidence intervals and multi-seed summaries."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from pecop_lib.eval.metrics import ArrayLike, spearman


@dataclass(frozen=True)
class Interval:
    """A point estimate with a confidence interval."""

    value: float
    low: float
    high: float
    confidence: float

    def format(self, scale: float = 1.0, digits: int = 3) -> str:
        """E.g. ``0.912 [0.871, 0.944]`` (``scale=100`` for rho x 100)."""
        v, lo, hi = (scale * x for x in (self.value, self.low, self.high))
        return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def bootstrap_ci(
    pred: ArrayLike,
    true: ArrayLike,
    metric: Callable[[np.ndarray, np.ndarray], float] = spearman,
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Paired percentile bootstrap of a metric over test samples (``scipy.stats.bootstrap``).

    Args:
        pred: ``(N,)`` predictions.
        true: ``(N,)`` true scores.
        metric: ``metric(pred, true) -> float``; Spearman by default.
        n_resamples: Bootstrap resamples.
        confidence: Confidence level of the interval.
        seed: Seed of the resampling (same seed, same interval).

    Returns:
        The metric on the full sample with its interval.
    """
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    res = stats.bootstrap(
        (p, t), lambda a, b: metric(a, b), paired=True, vectorized=False, n_resamples=n_resamples,
        confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed),
    )
    return Interval(metric(p, t), float(res.confidence_interval.low), float(res.confidence_interval.high), confidence)


def seed_summary(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean, standard deviation and a t-interval of a metric measured over several seeds.

    Returns:
        ``{"mean", "std", "n", "ci_low", "ci_high"}``; with one seed, std and the interval are ``nan``.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("seed_summary needs at least one value")
    mean = float(x.mean())
    if x.size == 1:
        return {"mean": mean, "std": float("nan"), "n": 1, "ci_low": float("nan"), "ci_high": float("nan")}
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * std / np.sqrt(x.size))
    return {"mean": mean, "std": std, "n": int(x.size), "ci_low": mean - half, "ci_high": mean + half}
