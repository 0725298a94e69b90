"""3D-Adapter figures: adapted inception block (paper Fig. 3), adapted residual block (Fig. 6), cost bars."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pecop_lib.viz.diagram import FROZEN, HEAD, TRAINED, arrow, box

ADAPTER_STEPS: tuple[str, ...] = (
    "theta_down: 3x3x3 conv\nC -> C/lambda, groups C/lambda",
    "ReLU",
    "theta_up: 1x1x1 conv\nC/lambda -> C",
    "x alpha (per channel, init 1)",
)


def _legend(ax: Any) -> None:
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(facecolor=FROZEN, edgecolor="#333", hatch="//", label="frozen backbone"),
                       Patch(facecolor=TRAINED, edgecolor="#333", label="3D-Adapter (trained)")],
              loc="lower center", ncol=2, bbox_to_anchor=(0.5, -0.04), frameon=False, fontsize=8.5)  # fmt: skip


def _adapter_column(ax: Any, x: float, y: float, w: float, h_in: float) -> float:
    """Draw the adapter steps upwards from ``y`` with the residual line; return the top of the sum."""
    from matplotlib.patches import Circle

    arrow(ax, x + w / 2, h_in, x + w / 2, y)
    for i, text in enumerate(ADAPTER_STEPS):
        box(ax, x, y + i * 0.8, w, 0.55, text, TRAINED)
        if i:
            arrow(ax, x + w / 2, y + i * 0.8 - 0.25, x + w / 2, y + i * 0.8)
    top = y + len(ADAPTER_STEPS) * 0.8
    ax.add_patch(Circle((x + w / 2, top + 0.1), 0.17, facecolor="white", edgecolor="#333"))
    ax.text(x + w / 2, top + 0.1, "+", ha="center", va="center", fontsize=12)
    arrow(ax, x + w / 2, top - 0.25, x + w / 2, top - 0.07)
    # residual: from the adapter input around the right side into the sum
    ax.plot([x + w / 2, x + w + 0.35, x + w + 0.35], [h_in, h_in, top + 0.1], color="#333", lw=1.2)
    arrow(ax, x + w + 0.35, top + 0.1, x + w / 2 + 0.17, top + 0.1)
    ax.text(x + w + 0.42, (h_in + top) / 2, "residual", rotation=90, va="center", fontsize=8)
    return top + 0.27


def draw_adapted_inception_block(title: str = "Inception block with a 3D-Adapter") -> Any:
    """Paper Fig. 3: the four I3D branches, their concatenation, then the 3D-Adapter (Eq. 1).

    Returns:
        The :class:`matplotlib.figure.Figure`.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 7.2))
    ax.set_xlim(0, 8.5)
    ax.set_ylim(-0.3, 8.4)
    ax.axis("off")
    box(ax, 2.5, 0.0, 3.5, 0.5, "previous layer (C_in channels)", HEAD)
    branches = [["1x1x1 conv"], ["1x1x1 conv", "3x3x3 conv"], ["1x1x1 conv", "3x3x3 conv"],
                ["3x3x3 max-pool\nstride 1", "1x1x1 conv"]]  # fmt: skip
    centers = [0.3 + col * 2.05 + 0.87 for col in range(len(branches))]
    ax.plot([4.25, 4.25], [0.5, 0.72], color="#333", lw=1.2)
    ax.plot([centers[0], centers[-1]], [0.72, 0.72], color="#333", lw=1.2)  # fan-out bus
    ax.plot([centers[0], centers[-1]], [2.65, 2.65], color="#333", lw=1.2)  # fan-in bus
    arrow(ax, 4.25, 2.65, 4.25, 2.85)
    for col, units in enumerate(branches):
        x, first = 0.3 + col * 2.05, 2 - len(units)  # single-unit branches sit in the upper row
        for row, unit in enumerate(units, start=first):
            box(ax, x, 1.0 + row * 0.9, 1.75, 0.55, unit + ("" if "pool" in unit else "\n+ BN + ReLU"), FROZEN,
                 hatch="//")  # fmt: skip
        arrow(ax, centers[col], 0.72, centers[col], 1.0 + first * 0.9)
        if len(units) == 2:
            arrow(ax, centers[col], 1.55, centers[col], 1.9)
        ax.plot([centers[col], centers[col]], [2.45, 2.65], color="#333", lw=1.2)
    box(ax, 2.5, 2.85, 3.5, 0.5, "concatenation -> h (C channels)", FROZEN, hatch="//")
    top = _adapter_column(ax, 2.5, 3.75, 3.5, 3.35)
    box(ax, 2.5, top + 0.25, 3.5, 0.5, "h + alpha * up(ReLU(down(h)))  ->  next layer", HEAD)
    arrow(ax, 4.25, top, 4.25, top + 0.25)
    _legend(ax)
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig


def draw_adapted_residual_block(title: str = "R3D-18 residual block with a 3D-Adapter") -> Any:
    """Paper Fig. 6 as implemented here: the adapter on the output of each BasicBlock.

    Returns:
        The :class:`matplotlib.figure.Figure`.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 7.2))
    ax.set_xlim(0, 7.5)
    ax.set_ylim(-0.3, 8.4)
    ax.axis("off")
    box(ax, 1.5, 0.0, 3.5, 0.5, "previous block (x)", HEAD)
    box(ax, 1.5, 0.8, 3.5, 0.55, "conv1: 3x3x3 conv + BN + ReLU", FROZEN, hatch="//")
    box(ax, 1.5, 1.65, 3.5, 0.55, "conv2: 3x3x3 conv + BN", FROZEN, hatch="//")
    arrow(ax, 3.25, 0.5, 3.25, 0.8)
    arrow(ax, 3.25, 1.35, 3.25, 1.65)
    box(ax, 1.5, 2.5, 3.5, 0.55, "(+ shortcut: identity, or 1x1x1 conv\nstride 2 + BN)  ->  ReLU  ->  h", FROZEN,
         hatch="//")  # fmt: skip
    arrow(ax, 3.25, 2.2, 3.25, 2.5)
    ax.plot([1.5, 0.9, 0.9], [0.25, 0.25, 2.77], color="#333", lw=1.2)
    arrow(ax, 0.9, 2.77, 1.5, 2.77)
    ax.text(0.8, 1.5, "shortcut", rotation=90, va="center", fontsize=8)
    top = _adapter_column(ax, 1.5, 3.45, 3.5, 3.05)
    box(ax, 1.5, top + 0.25, 3.5, 0.5, "h + alpha * up(ReLU(down(h)))  ->  next block", HEAD)
    arrow(ax, 3.25, top, 3.25, top + 0.25)
    _legend(ax)
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_strategy_parameters(counts: Mapping[str, Mapping[str, int]], labels: Mapping[str, str], title: str) -> Any:
    """Trainable parameters per strategy, one bar group per backbone (log scale).

    Args:
        counts: ``{backbone: {strategy: trainable parameters}}``.
        labels: ``{strategy: label for the x axis}``.
        title: Figure title.

    Returns:
        The :class:`matplotlib.figure.Figure`.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    strategies = list(labels)
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(counts), 1)
    for i, (backbone, per_strategy) in enumerate(counts.items()):
        values = [max(per_strategy[s], 0) for s in strategies]
        xs = np.arange(len(strategies)) + (i - (len(counts) - 1) / 2) * width
        ax.bar(xs, [v if v > 0 else np.nan for v in values], width, label=backbone)
        for x, v in zip(xs, values):
            ax.text(x, v * 1.15 if v > 0 else 1.5, f"{v:,}" if v else "0 (frozen)", ha="center", fontsize=7,
                    rotation=90, va="bottom")  # fmt: skip
    ax.set_yscale("log")
    ax.set_ylim(1, 3e9)
    ax.set_xticks(range(len(strategies)), [labels[s] for s in strategies])
    ax.set_ylabel("trainable parameters")
    ax.legend(frameon=False)
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_adapter_blocks(rows: Sequence[Mapping[str, Any]], title: str) -> Any:
    """Parameters of each adapter, split into ``theta_down``, ``theta_up`` and ``alpha`` (stacked bars).

    Args:
        rows: :func:`pecop_lib.models.adapter_parameter_table` rows.
        title: Figure title.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.8))
    sites = [f"{r['site']}\nC={r['channels']}" for r in rows]
    bottom = [0] * len(rows)
    for part, color in (("down", TRAINED), ("up", "#e15759"), ("alpha", HEAD)):
        values = [r[part] for r in rows]
        ax.bar(sites, values, bottom=bottom, label=part, color=color)
        bottom = [b + v for b, v in zip(bottom, values)]
    for i, total in enumerate(bottom):
        ax.text(i, total, f"{total:,}", ha="center", va="bottom", fontsize=7)
    ax.set_ylabel("parameters")
    ax.tick_params(axis="x", labelsize=7)
    ax.legend(frameon=False)
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_adapter_drift(drifts: Mapping[str, Mapping[str, float]], title: str) -> Any:
    """Relative change ``||delta(h)|| / ||h||`` each adapter makes, per initialisation.

    Args:
        drifts: ``{init name: {site: relative change}}`` from :func:`pecop_lib.models.adapters.adapter_drift`.
        title: Figure title.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 3.6))
    names = list(drifts)
    sites = list(next(iter(drifts.values())))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs = np.arange(len(sites)) + (i - (len(names) - 1) / 2) * width
        ax.bar(xs, [drifts[name][s] for s in sites], width, label=name)
    ax.set_xticks(range(len(sites)), sites, fontsize=7)
    ax.set_ylabel("||adapter change|| / ||block output||")
    ax.legend(frameon=False)
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig
