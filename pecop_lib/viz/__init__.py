"""Figures: pure functions from results to matplotlib figures (they never train or load data)."""

from pecop_lib.viz.adapters import (
    draw_adapted_inception_block,
    draw_adapted_residual_block,
    plot_adapter_blocks,
    plot_adapter_drift,
    plot_strategy_parameters,
)
from pecop_lib.viz.pipeline import draw_pecop_pipeline

__all__ = [
    "draw_adapted_inception_block",
    "draw_adapted_residual_block",
    "draw_pecop_pipeline",
    "plot_adapter_blocks",
    "plot_adapter_drift",
    "plot_strategy_parameters",
]
