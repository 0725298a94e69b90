"""Ablation figures (notebook 07): the paper's Fig. 5 redrawn from our runs, and the same panels for
Table 5 (pretexts), Table 6 (R3D-18) and the official-vs-paper switches.

Pure functions from per-seed values to matplotlib figures; they never train or read video.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from pecop_lib.eval import seed_summary

STRATEGY_COLORS: dict[str, str] = {"Dom-G": "#bab0ac", "Dom-S": "#9c755f", "HPT+BN": "#76b7b2", "HPT": "#4e79a7",
                                   "PECoP": "#f28e2b"}
"""Bar colours of the strategies (other labels cycle through :data:`OTHER_COLORS`)."""
OTHER_COLORS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1")

PaperLookup = Callable[[str, str], float | None]
"""``(label, task) -> the paper's rho or None``."""


def label_colors(labels: Sequence[str]) -> list[str]:
    """One colour per label: the strategy colours, then :data:`OTHER_COLORS` in turn."""
    others = iter(OTHER_COLORS * (1 + len(labels) // len(OTHER_COLORS)))
    return [STRATEGY_COLORS.get(label) or next(others) for label in labels]


def plot_ablation_panels(
    values: Mapping[tuple[str, str], Sequence[float]],
    *,
    labels: Sequence[str],
    tasks: Sequence[str],
    title: str,
    paper: PaperLookup | None = None,
    columns: int = 4,
    ylabel: str = "Spearman rho",
    error: str = "std",
) -> Any:
    """One panel per task, one bar per label: the mean over seeds, an error bar (with two or more
    seeds), each seed as a dot, and the paper's value as a black diamond where it prints one.

    Args:
        values: ``{(label, task): per-seed values}`` (nan entries are left out; an empty or all-nan
            cell is drawn as "n/a").
        labels: Bar order (x axis of every panel).
        tasks: Panel order.
        title: Figure title.
        paper: Optional lookup of the paper's value of a cell.
        columns: Panels per row.
        ylabel: Y axis label.
        error: ``std`` (one standard deviation over seeds) or ``ci95`` (the 95 % t-interval of the
            mean over seeds, :func:`pecop_lib.eval.seed_summary`).

    Returns:
        The figure (the paper's Fig. 5 layout when ``labels`` are the strategies).
    """
    if error not in ("std", "ci95"):
        raise ValueError(f"error must be 'std' or 'ci95', got {error!r}")
    import matplotlib.pyplot as plt

    columns = max(1, min(columns, len(tasks)))
    rows = int(np.ceil(len(tasks) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(max(6.5, 2.2 + 0.55 * len(labels) * columns), 3.1 * rows + 0.5),
                             squeeze=False, sharey=True)
    xs = np.arange(len(labels))
    colors = label_colors(labels)
    drew_paper = False
    for ax, task in zip(axes.ravel(), tasks):
        for x, label, color in zip(xs, labels, colors, strict=True):
            cell = np.asarray(values.get((label, task), []), dtype=np.float64)
            cell = cell[np.isfinite(cell)]
            if cell.size == 0:
                ax.text(x, 0.02, "n/a", ha="center", va="bottom", fontsize=7, rotation=90, color="#666666")
            else:
                err = None
                if cell.size > 1:
                    err = cell.std(ddof=1) if error == "std" else seed_summary(cell)["ci_high"] - cell.mean()
                ax.bar(x, cell.mean(), 0.7, color=color, edgecolor="#333333", linewidth=0.6,
                       yerr=err, capsize=3 if err is not None else 0)
                jitter = np.linspace(-0.15, 0.15, cell.size) if cell.size > 1 else np.zeros(1)
                ax.scatter(x + jitter, cell, s=9, color="#222222", zorder=3)
            reference = paper(label, task) if paper is not None else None
            if reference is not None:
                ax.scatter([x], [reference], marker="D", s=28, facecolor="white", edgecolor="black", zorder=4,
                           label="paper" if not drew_paper else None)
                drew_paper = True
        ax.axhline(0, color="#999999", lw=0.6)
        ax.set_title(task, fontsize=10)
        ax.set_xticks(xs, labels, rotation=35, ha="right", fontsize=8)
        ax.set_ylim(min(-0.1, ax.get_ylim()[0]), 1.05)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    for ax in axes.ravel()[len(tasks):]:
        ax.axis("off")
    if drew_paper:
        handles = [h for ax in axes.ravel() for h in ax.get_legend_handles_labels()[0]]
        axes[0, 0].legend(handles, ["paper"], loc="lower right", fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def cell_values(frame: Any, study: str) -> dict[tuple[str, str], list[float]]:
    """``{(label, task): per-seed rho}`` of one study from :func:`pecop_lib.studies.tables.seed_values`."""
    part = frame[frame["study"] == study]
    return {(label, task): group["rho"].tolist() for (label, task), group in part.groupby(["label", "task"], sort=False)}
