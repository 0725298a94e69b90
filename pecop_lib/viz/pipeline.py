"""The PECoP story in one drawing: domain-general pretraining, continual pretraining, AQA fine-tuning."""

from __future__ import annotations

from typing import Any

from pecop_lib.viz.diagram import DATA, FROZEN, HEAD, TRAINED, arrow, box


def draw_pecop_pipeline(title: str = "PECoP in three stages") -> Any:
    """Draw the three-stage PECoP pipeline (paper Figs. 1-2) as a block diagram.

    Stage 1 trains the whole backbone on a domain-general action set (Kinetics-400, or pecop's
    synthetic stand-in). Stage 2 freezes it and trains only small 3D-Adapters on the target
    domain's *unlabeled* videos with the VSPP pretext. Stage 3 fine-tunes backbone, adapters and an
    AQA head on the labelled scores.

    Args:
        title: Figure title (pass it through :func:`pecop_lib.titled` for smoke runs).

    Returns:
        The :class:`matplotlib.figure.Figure`.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(11, 4.2))
    ax.set_xlim(0, 11)
    ax.set_ylim(0, 4.2)
    ax.axis("off")
    stages = [
        (0.2, "1. Domain-general pretraining", "Kinetics-400\n(or synthetic\naction set)", "I3D backbone\nall weights trained",
         TRAINED, None, "action classes"),
        (3.9, "2. Continual pretraining (PECoP)", "target videos,\nno labels", "I3D frozen\n+ 3D-Adapters trained",
         FROZEN, "//", "VSPP: speed +\nsegment position"),
        (7.6, "3. AQA fine-tuning", "target videos\n+ quality scores", "I3D + adapters\nfine-tuned",
         TRAINED, None, "USDL / MUSDL /\nCoRe / TSA -> score"),
    ]
    for x, name, data, backbone, color, hatch, head in stages:
        ax.text(x + 1.55, 3.95, name, ha="center", va="center", fontsize=10, weight="bold")
        box(ax, x, 2.75, 3.1, 0.8, data, DATA)
        box(ax, x, 1.55, 3.1, 0.85, backbone, color, hatch=hatch)
        box(ax, x, 0.35, 3.1, 0.8, head, HEAD)
        arrow(ax, x + 1.55, 2.75, x + 1.55, 2.42)
        arrow(ax, x + 1.55, 1.55, x + 1.55, 1.17)
    # adapters drawn as small trained blocks inside the frozen backbone of stage 2
    for i in range(5):
        box(ax, 4.05 + i * 0.58, 1.6, 0.22, 0.16, "", TRAINED)
    arrow(ax, 3.32, 1.97, 3.88, 1.97)
    arrow(ax, 7.02, 1.97, 7.58, 1.97)
    ax.legend(handles=[Patch(facecolor=TRAINED, edgecolor="#333", label="trained"),
                       Patch(facecolor=FROZEN, edgecolor="#333", hatch="//", label="frozen"),
                       Patch(facecolor=DATA, edgecolor="#333", label="data"),
                       Patch(facecolor=HEAD, edgecolor="#333", label="task head")],
              loc="lower center", ncol=4, bbox_to_anchor=(0.5, -0.08), frameon=False, fontsize=8.5)
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig
