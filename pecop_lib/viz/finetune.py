"""Figures of fine-tuning results: per-epoch curves with the protocols' choices, predicted vs true
scores, predicted score distributions next to their Gaussian targets.

Inputs are plain arrays and dicts (e.g. from :class:`pecop_lib.finetune.FinetuneResult`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pecop_lib.eval import spearman
from pecop_lib.heads.usdl import ScoreBins
from pecop_lib.viz.heads import soft_label_targets


def _grid(count: int, columns: int) -> tuple[int, int]:
    columns = max(1, min(columns, count))
    return int(np.ceil(count / columns)), columns


def _finish(fig: Any, axes: Any, used: int, title: str) -> Any:
    """Blank the grid's panels past the first ``used``, add the title, lay out; returns ``fig``."""
    for ax in axes.ravel()[used:]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_epoch_curves(curves: Mapping[str, Mapping[str, Any]], title: str) -> Any:
    """Test and validation Spearman per epoch, one panel per run, with each protocol's epoch marked.

    Args:
        curves: ``{label: {"test": (E,), "val": (E,) or empty, "selected": {protocol: epoch (1-based) or None}}}``.
        title: Figure title.
    """
    import matplotlib.pyplot as plt

    rows, cols = _grid(len(curves), 2)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.0 * rows), squeeze=False)
    from matplotlib.ticker import MaxNLocator

    # official: filled star on top; honest: hollow circle (both stay visible on the same epoch)
    styles = {"official": {"marker": "*", "s": 110, "color": "#d62728", "zorder": 4},
              "honest": {"marker": "o", "s": 150, "facecolors": "none", "edgecolors": "#2ca02c", "linewidths": 1.8,
                         "zorder": 3}}
    for ax, (label, c) in zip(axes.ravel(), curves.items()):
        test = np.asarray(c["test"], dtype=np.float64)
        epochs = np.arange(1, len(test) + 1)
        ax.plot(epochs, test, color="#4e79a7", lw=1.4, label="test rho")
        val = np.asarray(c.get("val", []), dtype=np.float64)
        if val.size:
            ax.plot(epochs, val, color="#999", lw=1.2, ls="--", label="validation rho")
        for protocol, epoch in c.get("selected", {}).items():
            if epoch is None:
                continue
            style = styles.get(protocol, styles["official"])
            ax.scatter([epoch], [test[epoch - 1]], label=f"{protocol}: epoch {epoch}", **style)
        ax.set_title(label, fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("Spearman rho")
        ax.legend(fontsize=7)
    return _finish(fig, axes, len(curves), title)


def plot_pred_vs_true(runs: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str) -> Any:
    """Predicted against true test scores, one panel per run, with the identity line and rho.

    Args:
        runs: ``{label: (predicted, true)}``.
        title: Figure title.
    """
    import matplotlib.pyplot as plt

    rows, cols = _grid(len(runs), 4)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.3 * rows), squeeze=False)
    for ax, (label, (pred, true)) in zip(axes.ravel(), runs.items()):
        p, t = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
        ax.scatter(t, p, s=14, alpha=0.75)
        lo, hi = float(min(p.min(), t.min())), float(max(p.max(), t.max()))
        ax.plot([lo, hi], [lo, hi], color="#999", lw=0.8, ls="--")
        rho = spearman(p, t) if len(p) >= 2 else float("nan")
        ax.set_title(f"{label}\nrho = {rho:.3f}", fontsize=9)
        ax.set_xlabel("true score")
        ax.set_ylabel("predicted score")
    return _finish(fig, axes, len(runs), title)


def plot_score_distributions(
    bins: ScoreBins, sigma: float, predicted: np.ndarray, true_scores: np.ndarray, title: str, *,
    path_names: Sequence[str] | None = None, max_paths: int = 3,
) -> Any:
    """(M)USDL: each test video's predicted score distribution next to its Gaussian target.

    Args:
        bins: Score bins of a path.
        sigma: Target sigma in bins.
        predicted: Predicted distributions ``(videos, paths, bins)``.
        true_scores: The scores each path was trained towards ``(videos, paths)`` (USDL: the final
            score; MUSDL: the judge or sub-scores).
        title: Figure title.
        path_names: Row labels (e.g. ``"judge 1"``).
        max_paths: Draw at most this many paths (rows) per video.
    """
    import matplotlib.pyplot as plt

    pred = np.asarray(predicted, dtype=np.float64)
    true = np.asarray(true_scores, dtype=np.float64).reshape(pred.shape[0], -1)
    if pred.ndim != 3 or true.shape[1] != pred.shape[1]:
        raise ValueError(f"predicted must be (videos, paths, bins) and true (videos, paths); got {pred.shape}, {true.shape}")
    paths = min(pred.shape[1], max_paths)
    videos = pred.shape[0]
    values = bins.values().numpy()
    fig, axes = plt.subplots(paths, videos, figsize=(3.0 * videos, 2.2 * paths + 0.6), squeeze=False, sharex=True)
    for v in range(videos):
        targets = soft_label_targets(bins, sigma, true[v, :paths])
        for p in range(paths):
            ax = axes[p, v]
            ax.bar(values, pred[v, p], width=bins.step * 0.9, color="#4e79a7", alpha=0.7, label="predicted")
            ax.plot(values, targets[p], color="#f28e2b", lw=1.5, label="Gaussian target")
            ax.axvline(true[v, p], color="#f28e2b", lw=0.8, ls="--")
            name = path_names[p] if path_names is not None else (f"path {p + 1}" if pred.shape[1] > 1 else "")
            ax.set_title(f"video {v + 1} {name}: true {true[v, p]:g}", fontsize=8)
            if v == 0 and p == 0:
                ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_score_histograms(runs: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str,
                          bins: int = 20) -> Any:
    """Distribution of predicted test scores against the true ones, one panel per run (CoRe, TSA).

    Args:
        runs: ``{label: (predicted, true)}``.
        title: Figure title.
        bins: Histogram bins (shared by both histograms of a panel).
    """
    import matplotlib.pyplot as plt

    rows, cols = _grid(len(runs), 4)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), squeeze=False)
    for ax, (label, (pred, true)) in zip(axes.ravel(), runs.items()):
        p, t = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
        edges = np.histogram_bin_edges(np.concatenate([p, t]), bins=bins)
        ax.hist(t, bins=edges, alpha=0.5, color="#f28e2b", label="true")
        ax.hist(p, bins=edges, alpha=0.5, color="#4e79a7", label="predicted")
        ax.set_title(f"{label}\nstd: predicted {p.std():.3g}, true {t.std():.3g}", fontsize=9)
        ax.set_xlabel("score")
        ax.legend(fontsize=7)
    return _finish(fig, axes, len(runs), title)
