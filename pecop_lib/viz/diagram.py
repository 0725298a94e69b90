"""Drawing primitives shared by the block diagrams (pipeline, adapters, heads): boxes, arrows, colours."""

from __future__ import annotations

from typing import Any

FROZEN = "#c9ccd1"
TRAINED = "#f28e2b"
DATA = "#76b7b2"
HEAD = "#4e79a7"


def box(ax: Any, x: float, y: float, w: float, h: float, text: str, color: str, *, hatch: str | None = None,
        fontsize: float = 8.5) -> None:
    """Draw a rounded box at ``(x, y)`` of size ``w x h`` with centred text."""
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02", facecolor=color, edgecolor="#333333",
                                hatch=hatch, linewidth=1.0))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize, wrap=True)


def arrow(ax: Any, x0: float, y0: float, x1: float, y1: float) -> None:
    """Draw an arrow from ``(x0, y0)`` to ``(x1, y1)``."""
    ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops={"arrowstyle": "->", "lw": 1.3, "color": "#333333"})
