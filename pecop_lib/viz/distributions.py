"""Score-distribution figures (notebook 08): true against predicted scores per task and strategy
(histograms with KDEs, violins, calibration), one video's card (frames, scores, predicted
distribution against its Gaussian target), and MUSDL's per-judge view.

Inputs are plain tables and arrays, e.g. :func:`pecop_lib.studies.explorer.prediction_frame`:
a :class:`pandas.DataFrame` with columns ``task, label, video, true, pred``. Nothing is trained or
read from disk here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pecop_lib.heads.usdl import ScoreBins
from pecop_lib.viz.ablations import label_colors
from pecop_lib.viz.heads import soft_label_targets

TRUE_COLOR = "#555555"


def _panels(count: int, columns: int, width: float, height: float) -> tuple[Any, np.ndarray]:
    import matplotlib.pyplot as plt

    columns = max(1, min(columns, count))
    rows = int(np.ceil(count / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows + 0.6), squeeze=False)
    for ax in axes.ravel()[count:]:
        ax.axis("off")
    return fig, axes.ravel()


def _truth(group: Any) -> np.ndarray:
    """True scores of a task, one per video (runs of several seeds or labels repeat them)."""
    return group.drop_duplicates("video")["true"].to_numpy(dtype=np.float64)


def view_range(true: np.ndarray, margin: float = 1.0) -> tuple[float, float]:
    """The score range drawn: the true scores' range widened by ``margin`` times its span on each side.

    Predictions outside it (a diverged regressor) are left out of the density and counted instead,
    so that one broken run cannot squash every other curve into a line.
    """
    true = np.asarray(true, dtype=np.float64)
    span = float(np.ptp(true)) or max(1.0, abs(float(true.mean())))
    return float(true.min() - margin * span), float(true.max() + margin * span)


def _off_scale(values: np.ndarray, bounds: tuple[float, float]) -> tuple[np.ndarray, str]:
    inside = (values >= bounds[0]) & (values <= bounds[1])
    return values[inside], (f", {int((~inside).sum())} off-scale" if (~inside).any() else "")


def plot_score_kdes(frame: Any, title: str, *, columns: int = 3) -> Any:
    """Per task: the histogram of the true test scores and a KDE of each label's predictions.

    Args:
        frame: Rows ``task, label, video, true, pred``.
        title: Figure title.
        columns: Panels per row.

    Returns:
        The figure. A label whose predictions are constant (a collapsed regressor) gets a vertical
        line instead of a KDE; predictions outside :func:`view_range` are counted in the legend.
    """
    import seaborn as sns

    tasks = list(dict.fromkeys(frame["task"]))
    labels = list(dict.fromkeys(frame["label"]))
    fig, axes = _panels(len(tasks), columns, 4.4, 3.0)
    for ax, task in zip(axes, tasks):
        group = frame[frame["task"] == task]
        truth = _truth(group)
        bounds = view_range(truth)
        ax.hist(truth, bins=min(20, max(3, len(truth) // 2)), density=True, color=TRUE_COLOR, alpha=0.35,
                label=f"true ({len(truth)} videos)")
        for label, color in zip(labels, label_colors(labels), strict=True):
            pred, note = _off_scale(group.loc[group["label"] == label, "pred"].to_numpy(dtype=np.float64), bounds)
            if pred.size == 0:
                ax.plot([], [], color=color, label=f"{label}{note}")
            elif np.ptp(pred) > 0 and pred.size > 2:
                sns.kdeplot(x=pred, ax=ax, color=color, label=f"{label}{note}", warn_singular=False, cut=0)
            else:
                ax.axvline(pred.mean(), color=color, ls="--", lw=1.2, label=f"{label} (constant{note})")
        ax.set_xlim(*bounds)
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("test score")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def long_scores(frame: Any) -> Any:
    """``frame`` as one score per row with its source: ``"true"`` (once per video) or the label.

    Returns:
        A :class:`pandas.DataFrame` with columns ``task, source, score``.
    """
    import pandas as pd

    parts = []
    for task, group in frame.groupby("task", sort=False):
        parts.append(pd.DataFrame({"task": task, "source": "true", "score": _truth(group)}))
        parts.append(pd.DataFrame({"task": task, "source": group["label"].to_numpy(), "score": group["pred"].to_numpy()}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["task", "source", "score"])


def plot_score_violins(frame: Any, title: str, *, columns: int = 3) -> Any:
    """Per task: violins of the true scores and of each label's predictions, every video as a point
    (predictions outside :func:`view_range` are counted at the top instead)."""
    import seaborn as sns

    scores = long_scores(frame)
    tasks = list(dict.fromkeys(scores["task"]))
    labels = list(dict.fromkeys(frame["label"]))
    palette = {"true": TRUE_COLOR, **dict(zip(labels, label_colors(labels), strict=True))}
    fig, axes = _panels(len(tasks), columns, 1.2 + 0.8 * (len(labels) + 1), 3.2)
    for ax, task in zip(axes, tasks):
        part = scores[scores["task"] == task]
        bounds = view_range(part.loc[part["source"] == "true", "score"].to_numpy())
        inside = part["score"].between(*bounds)
        order = ["true", *[label for label in labels if (part["source"] == label).any()]]
        sns.violinplot(data=part[inside], x="source", y="score", hue="source", order=order, palette=palette, cut=0,
                       inner="point", density_norm="width", ax=ax, legend=False)
        off = part[~inside].groupby("source").size()
        for x, source in enumerate(order):
            if source in off.index:
                ax.text(x, bounds[1], f"{off[source]} off-scale", ha="center", va="top", fontsize=7, color="#b00")
        ax.set_ylim(*bounds)
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("")
        ax.tick_params(axis="x", rotation=35, labelsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def calibration_points(true: np.ndarray, pred: np.ndarray, bins: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Mean true and mean predicted score per quantile bin of the true scores.

    Args:
        true: ``(N,)`` true scores.
        pred: ``(N,)`` predictions.
        bins: Number of quantile bins (fewer when scores repeat).

    Returns:
        ``(mean true per bin, mean predicted per bin)``, ascending in the true score.
    """
    true, pred = np.asarray(true, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    edges = np.unique(np.quantile(true, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        return np.array([true.mean()]), np.array([pred.mean()])
    which = np.clip(np.searchsorted(edges, true, side="right") - 1, 0, len(edges) - 2)
    used = np.unique(which)
    return (np.array([true[which == b].mean() for b in used]), np.array([pred[which == b].mean() for b in used]))


def plot_calibration(frame: Any, title: str, *, bins: int = 5, columns: int = 3) -> Any:
    """Per task: mean predicted against mean true score in quantile bins of the true score, per label.

    A calibrated regressor follows the diagonal; a flat line is a model that predicts the mean.
    Bin means outside :func:`view_range` are drawn at its edge and counted in the legend.
    """
    tasks = list(dict.fromkeys(frame["task"]))
    labels = list(dict.fromkeys(frame["label"]))
    fig, axes = _panels(len(tasks), columns, 3.8, 3.4)
    for ax, task in zip(axes, tasks):
        group = frame[frame["task"] == task]
        bounds = view_range(_truth(group))
        ax.plot(bounds, bounds, color="#999999", lw=0.8, ls="--", label="calibrated")
        for label, color in zip(labels, label_colors(labels), strict=True):
            part = group[group["label"] == label]
            if part.empty:
                continue
            x, y = calibration_points(part["true"].to_numpy(), part["pred"].to_numpy(), bins)
            _, note = _off_scale(y, bounds)
            ax.plot(x, np.clip(y, *bounds), marker="o", color=color, lw=1.3, label=f"{label}{note}")
        ax.set_ylim(*bounds)
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("mean true score (bin)")
        ax.set_ylabel("mean predicted score")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_video_card(
    frames: np.ndarray,
    *,
    title: str,
    true: float,
    predictions: Mapping[str, float],
    distribution: np.ndarray | None = None,
    targets: np.ndarray | None = None,
    bins: ScoreBins | None = None,
    sigma: float = 1.0,
    path_names: Sequence[str] | None = None,
    max_paths: int = 3,
) -> Any:
    """One test video: its frames, its true score against each prediction, and, for (M)USDL, the
    predicted score distribution of each path against its Gaussian target.

    Args:
        frames: ``(T, H, W, 3)`` uint8 frames (a few, spread over the clip).
        title: Figure title.
        true: The true score.
        predictions: ``{label: predicted score}`` (e.g. per strategy, mean over seeds).
        distribution: ``(paths, bins)`` predicted distribution, or ``None`` (CoRe, or not kept).
        targets: ``(paths,)`` scores the paths were trained towards (with ``distribution``).
        bins: Score bins of a path (with ``distribution``).
        sigma: Target sigma in bins.
        path_names: Names of the paths (e.g. ``"judge 1"``).
        max_paths: Paths drawn at most.
    """
    import matplotlib.pyplot as plt

    from pecop_lib.data.explore import montage

    paths = 0 if distribution is None else min(len(distribution), max_paths)
    fig = plt.figure(figsize=(10, 3.2 + 2.0 * max(1, paths)))
    grid = fig.add_gridspec(1 + max(1, paths), 2, height_ratios=[1.5] + [1] * max(1, paths))
    ax = fig.add_subplot(grid[0, :])
    ax.imshow(montage(frames))
    ax.axis("off")
    ax = fig.add_subplot(grid[1:, 0])
    names = list(predictions)
    values = np.array([predictions[n] for n in names], dtype=np.float64)
    near = values[np.abs(values - true) <= 2 * max(abs(true), 1.0)]  # a diverged run must not hide the rest
    bounds = view_range(np.array([true, *near]), margin=0.15)
    ax.barh(np.arange(len(names)), np.clip(values, *bounds), color=label_colors(names))
    for y, v in enumerate(values):
        inside = bounds[0] <= v <= bounds[1]
        ax.text(np.clip(v, *bounds), y, f" {v:.4g}" + ("" if inside else " (off-scale)"), va="center", fontsize=7)
    ax.set_xlim(*bounds)
    ax.axvline(true, color=TRUE_COLOR, lw=2, ls="--", label=f"true {true:.2f}")
    ax.set_yticks(np.arange(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted score")
    ax.legend(fontsize=8, loc="lower right")
    if distribution is None or bins is None or targets is None:
        ax = fig.add_subplot(grid[1:, 1])
        ax.axis("off")
        ax.text(0.5, 0.5, "no predicted distribution kept for this video\n(CoRe regresses a score; (M)USDL runs keep "
                "the\ndistributions of their first test videos)", ha="center", va="center", fontsize=8)
    else:
        values = bins.values().numpy()
        gauss = soft_label_targets(bins, sigma, list(targets[:paths]))
        for p in range(paths):
            ax = fig.add_subplot(grid[1 + p, 1])
            ax.bar(values, distribution[p], width=bins.step * 0.9, color="#4e79a7", alpha=0.7, label="predicted")
            ax.plot(values, gauss[p], color="#f28e2b", lw=1.5, label="Gaussian target")
            ax.axvline(targets[p], color="#f28e2b", lw=0.8, ls="--")
            name = path_names[p] if path_names is not None else ("" if len(distribution) == 1 else f"path {p + 1}")
            ax.set_title(f"{name} target {targets[p]:g}".strip(), fontsize=8)
            if p == 0:
                ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_judge_view(bins: ScoreBins, distributions: np.ndarray, judge_scores: np.ndarray, title: str, *,
                    video_names: Sequence[str] | None = None) -> Any:
    """MUSDL per judge: each judge's predicted score (mean and std of its path's distribution) next to
    the judge's true score, per video; and all (video, judge) pairs against the diagonal.

    Args:
        bins: Score bins of a judge path.
        distributions: ``(videos, judges, bins)`` predicted distributions.
        judge_scores: ``(videos, judges)`` true judge scores.
        title: Figure title.
        video_names: Legend names of the videos.
    """
    import matplotlib.pyplot as plt

    dist = np.asarray(distributions, dtype=np.float64)
    truth = np.asarray(judge_scores, dtype=np.float64)
    if dist.ndim != 3 or truth.shape != dist.shape[:2]:
        raise ValueError(f"distributions must be (videos, judges, bins) and judge_scores (videos, judges); got "
                         f"{dist.shape} and {truth.shape}")
    values = bins.values().numpy()
    mean = (dist * values).sum(-1)
    std = np.sqrt(np.clip((dist * values**2).sum(-1) - mean**2, 0, None))
    videos, judges = truth.shape
    names = list(video_names) if video_names is not None else [f"video {v + 1}" for v in range(videos)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [2, 1]})
    offsets = np.linspace(-0.3, 0.3, videos) if videos > 1 else np.zeros(1)
    for v, color in zip(range(videos), label_colors(names), strict=True):
        xs = np.arange(1, judges + 1) + offsets[v]
        left.errorbar(xs, mean[v], yerr=std[v], fmt="o", color=color, ms=4, capsize=2, label=f"{names[v]} predicted")
        left.scatter(xs, truth[v], marker="x", color=color, s=30)
    left.set_xticks(np.arange(1, judges + 1), [f"judge {j + 1}" for j in range(judges)], fontsize=8)
    left.set_ylabel("judge score (x: true; o: predicted mean +/- std)")
    left.legend(fontsize=7, ncol=2)
    lo, hi = bins.low, bins.high
    right.plot([lo, hi], [lo, hi], color="#999999", ls="--", lw=0.8)
    right.scatter(truth.ravel(), mean.ravel(), s=14, color="#4e79a7")
    right.set_xlabel("true judge score")
    right.set_ylabel("predicted judge score (mean)")
    right.set_title(f"{videos} videos x {judges} judges", fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
