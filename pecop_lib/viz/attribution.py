"""Attribution figures (notebook 09, ``pecop explain``): a video's frames over the per-time attribution of its
score, one panel per method, with the known defects drawn on the time axis.

Pure functions from numbers to matplotlib figures; they never score or read video.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DEFECT_COLOR = "#e15759"
NEGATIVE_COLOR = "#4e79a7"
POSITIVE_COLOR = "#f28e2b"


def plot_attribution_timeline(attributions: Mapping[str, Any], *, title: str, frames: np.ndarray | None = None,
                              defects: Sequence[tuple[str, int, int]] = ()) -> Any:
    """The attribution of one video's score over its frames, by each method.

    Args:
        attributions: ``{method: Attribution}`` (:func:`pecop_lib.explain.explain`) of one video.
        title: Figure title.
        frames: Optional uint8 thumbnails ``(K, H, W, 3)`` drawn in a strip above, evenly over the clip.
        defects: Known defects ``(kind, start, end)`` in video frames, shaded on every panel.

    Returns:
        The figure: per method, the frame values against the video frame they were read from (bars, blue where
        they lowered the score), the worst window outlined (:meth:`~pecop_lib.explain.Attribution.worst_window`).
    """
    import matplotlib.pyplot as plt

    methods = list(attributions)
    rows = len(methods) + (frames is not None)
    fig, axes = plt.subplots(rows, 1, figsize=(10, 1.2 + 2.2 * rows), squeeze=False,
                             gridspec_kw={"height_ratios": ([0.8] if frames is not None else []) + [1.0] * len(methods)})
    axes = axes[:, 0]
    first = attributions[methods[0]]
    span = (float(first.positions[0]), float(first.positions[-1]) + 1)
    if frames is not None:
        strip = axes[0]
        strip.imshow(np.concatenate(list(frames), axis=1), aspect="auto",
                     extent=(span[0], span[1], 0, 1))
        strip.set_yticks([])
        strip.set_title(title)
        axes = axes[1:]
    for ax, method in zip(axes, methods, strict=True):
        a = attributions[method]
        x = np.asarray(a.positions, dtype=float)
        width = np.diff(np.append(x, x[-1] + (x[-1] - x[-2] if len(x) > 1 else 1)))
        colors = [NEGATIVE_COLOR if v < 0 else POSITIVE_COLOR for v in a.frame_values]
        ax.bar(x, a.frame_values, width=width, align="edge", color=colors)
        for kind, start, end in defects:
            ax.axvspan(start, end, color=DEFECT_COLOR, alpha=0.2, lw=0)
            ax.text(start, 1.0, kind, color=DEFECT_COLOR, fontsize=8, va="top", transform=ax.get_xaxis_transform())
        lo, hi = a.span(a.worst_window())
        ax.axvspan(lo, hi, fill=False, edgecolor="black", lw=1.2, ls="--")
        ax.axhline(0, color="#888888", lw=0.8)
        ax.set_xlim(*span)
        ax.set_ylabel(method.replace("_", " "))
        worst = "lowered it" if a.higher_is_better else "raised it (a higher score is worse)"
        ax.set_title(f"{method.replace('_', ' ')}: score {a.score:.3f}; dashed: the window that {worst} most",
                     fontsize=9)
    axes[-1].set_xlabel("video frame")
    if frames is None:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
