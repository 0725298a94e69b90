"""Drawings that explain the AQA heads: USDL's score-distribution targets, CoRe's regression tree
and group boundaries, TSA's step segmentation.

Each function takes plain values (bins, edges, labels) and returns a matplotlib figure; nothing is
trained or loaded here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pecop_lib.heads.tsa import FIX_SIZE, NUM_STEPS
from pecop_lib.heads.usdl import ScoreBins, gaussian_soft_labels
from pecop_lib.viz.diagram import FROZEN, HEAD, TRAINED

STEP_NAMES: tuple[str, ...] = ("take-off", "flight", "entry")
STEP_COLORS: tuple[str, ...] = ("#4e79a7", "#f28e2b", "#59a14f")


def soft_label_targets(bins: ScoreBins, sigma: float, scores: Sequence[float]) -> np.ndarray:
    """USDL/MUSDL targets of the given scores, float ``(len(scores), num_bins)`` (rows sum to 1)."""
    return gaussian_soft_labels(torch.tensor(list(scores), dtype=torch.float32), bins, sigma).numpy()


def draw_usdl_targets(
    bins: ScoreBins, sigma: float, scores: Sequence[float], title: str, *, labels: Sequence[str] | None = None,
    xlabel: str = "score",
) -> Any:
    """Gaussian soft labels over the score bins, one curve per score (USDL: a final score; MUSDL: one
    curve per judge of a dive).

    Args:
        bins: The score bins.
        sigma: Standard deviation in bins.
        scores: Scores to draw targets for.
        title: Figure title.
        labels: Legend entry per score (default: the score).
        xlabel: Axis label.

    Returns:
        The figure; each target is drawn as markers on the bin values with its score as a dashed line.
    """
    import matplotlib.pyplot as plt

    targets = soft_label_targets(bins, sigma, scores)
    values = bins.values().numpy()
    fig, ax = plt.subplots(figsize=(8, 3.4))
    for i, (score, target) in enumerate(zip(scores, targets, strict=True)):
        label = labels[i] if labels is not None else f"score {score:g}"
        line = ax.plot(values, target, marker="o", markersize=2.5, lw=1.2, label=label)[0]
        ax.axvline(score, color=line.get_color(), ls="--", lw=0.8)
    ax.set_xlabel(f"{xlabel} ({bins.num_bins} bins from {bins.low:g} to {bins.high:g}, sigma = {sigma:g} bins)")
    ax.set_ylabel("target probability")
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=min(4, len(scores)))
    fig.tight_layout()
    return fig


def _tree_positions(depth: int) -> list[list[float]]:
    """x position of every node per level (level d has 2^d nodes), leaves evenly spread on [0, 1]."""
    leaves = 2 ** (depth - 1)
    x = [(i + 0.5) / leaves for i in range(leaves)]
    levels = [x]
    while len(x) > 1:
        x = [(x[2 * i] + x[2 * i + 1]) / 2 for i in range(len(x) // 2)]
        levels.append(x)
    return levels[::-1]


def draw_core_tree(bounds: np.ndarray, title: str, *, deltas: Sequence[float] | None = None) -> Any:
    """CoRe's group-aware regression tree over its 16 score-difference groups.

    Top: the binary tree (one two-way decision per inner node; log P(leaf) = sum of the decisions on
    its path), each leaf labelled with its interval; leaves 0-7 negative, 8-15 positive. Bottom:
    the group edges on the score-difference axis and, if given, the histogram of the training
    differences they were computed from (both signs).

    Args:
        bounds: ``(L, 2)`` group edges (:func:`pecop_lib.heads.group_bounds`), ``L`` a power of 2.
        title: Figure title.
        deltas: Absolute same-group training differences (:func:`pecop_lib.heads.pair_deltas`).
    """
    import matplotlib.pyplot as plt

    bounds = np.asarray(bounds, dtype=np.float64)
    leaves = bounds.shape[0]
    depth = int(np.log2(leaves)) + 1
    if 2 ** (depth - 1) != leaves:
        raise ValueError(f"bounds must have a power-of-two number of groups, got {leaves}")
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(11, 6.2), gridspec_kw={"height_ratios": [1.5, 1]})
    levels = _tree_positions(depth)
    ys = np.linspace(1.0, 0.0, depth)
    for d, xs in enumerate(levels):
        for i, x in enumerate(xs):
            if d + 1 < depth:
                for child in (2 * i, 2 * i + 1):
                    ax.plot([x, levels[d + 1][child]], [ys[d], ys[d + 1]], color="#666", lw=0.8, zorder=1)
            leaf = d + 1 == depth
            negative = leaf and bounds[i, 1] <= 0
            color = (HEAD if negative else TRAINED) if leaf else FROZEN
            ax.scatter([x], [ys[d]], s=110 if leaf else 160, color=color, edgecolor="#333", zorder=2)
            if leaf:
                ax.text(x, ys[d] - 0.08, f"{i}\n[{bounds[i, 0]:.3g},\n{bounds[i, 1]:.3g}]", ha="center", va="top",
                        fontsize=6.5)
    ax.text(0.0, 1.02, "each inner node: 2-way softmax; leaf: group + in-interval offset", fontsize=8, va="bottom")
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.35, 1.1)
    ax.axis("off")
    ax.set_title(title)
    edges = np.unique(bounds.ravel())
    if deltas is not None and len(deltas):
        signed = np.concatenate([np.asarray(deltas), -np.asarray(deltas)])
        bx.hist(signed, bins=60, color="#bbb", label="training differences (both directions)")
    for e in edges:
        bx.axvline(e, color="#333", lw=0.8)
    for i, (lo, hi) in enumerate(bounds):
        bx.axvspan(lo, hi, color=HEAD if hi <= 0 else TRAINED, alpha=0.12 if i % 2 else 0.22, lw=0)
    inner = edges[np.abs(edges) < edges.max()]
    span = max(1e-6, float(np.abs(inner).max()) * 1.4) if len(inner) else float(edges.max())
    bx.set_xlim(-span, span)
    bx.set_xlabel(f"score difference (outer groups extend to +-{edges.max():g})")
    bx.set_ylabel("pairs")
    if deltas is not None and len(deltas):
        bx.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def draw_tsa_segmentation(
    step_labels: Sequence[int], transitions: Sequence[int], title: str, *,
    predicted: Sequence[int] | None = None, probs: np.ndarray | None = None, fix_size: int = FIX_SIZE,
) -> Any:
    """TSA's procedure segmentation of one dive.

    Top row: the per-frame sub-action labels of the sampled frames. Middle: the three steps
    (take-off | flight | entry) cut by the two ground-truth transitions, each resampled to
    ``fix_size`` positions (ticks) for step-wise cross-attention; predicted transitions, if given,
    as dashed lines. Bottom (if ``probs``): PSNet's per-frame probabilities of being transition 1
    or 2, searched in the first and second half of the clip.

    Args:
        step_labels: Sub-action type per sampled frame ``(T,)``.
        transitions: Ground-truth ``(t1, t2)``: first frame of step 2 and of step 3.
        title: Figure title.
        predicted: Predicted ``(t1, t2)``.
        probs: ``(T, 2)`` transition probabilities.
        fix_size: Positions per resampled step.
    """
    import matplotlib.pyplot as plt

    labels = np.asarray(step_labels)
    frames = len(labels)
    t1, t2 = (int(t) for t in transitions)
    rows = 3 if probs is not None else 2
    fig, axes = plt.subplots(rows, 1, figsize=(10, 1.3 * rows + 1.0), sharex=True)
    ax = axes[0]
    kinds = list(dict.fromkeys(labels.tolist()))
    cmap = plt.get_cmap("tab20")
    for k, kind in enumerate(kinds):
        idx = np.flatnonzero(labels == kind)
        ax.bar(idx, np.ones(len(idx)), width=1.0, color=cmap(k % 20), label=f"sub-action {kind}")
    ax.set_yticks([])
    ax.set_ylabel("labels", rotation=0, ha="right", va="center")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(title)
    bx = axes[1]
    for s, (a, e) in enumerate(((0, t1), (t1, t2), (t2, frames))):
        bx.axvspan(a - 0.5, e - 0.5, color=STEP_COLORS[s], alpha=0.35)
        bx.text((a + e - 1) / 2, 0.72, STEP_NAMES[s], ha="center", fontsize=8)
        if e - a >= 1:
            ticks = np.linspace(a, e - 1, fix_size)
            bx.scatter(ticks, np.full(fix_size, 0.3), marker="|", s=150, color=STEP_COLORS[s])
    for t in (t1, t2):
        bx.axvline(t - 0.5, color="#333", lw=1.5)
    if predicted is not None:
        for t in predicted:
            bx.axvline(int(t) - 0.5, color="#d62728", lw=1.2, ls="--")
    bx.set_ylim(0, 1)
    bx.set_yticks([])
    bx.set_ylabel(f"{NUM_STEPS} steps,\n{fix_size} positions\neach", rotation=0, ha="right", va="center", fontsize=8)
    if probs is not None:
        cx = axes[2]
        p = np.asarray(probs)
        cx.plot(np.arange(frames), p[:, 0], label="P(transition 1)")
        cx.plot(np.arange(frames), p[:, 1], label="P(transition 2)")
        cx.axvline(frames / 2 - 0.5, color="#999", lw=0.8, ls=":")
        cx.set_ylabel("PSNet", rotation=0, ha="right", va="center")
        cx.legend(fontsize=7, loc="upper right")
    axes[-1].set_xlabel("sampled frame (solid: true transitions, dashed red: predicted)")
    axes[-1].set_xlim(-0.5, frames - 0.5)
    fig.tight_layout()
    return fig
