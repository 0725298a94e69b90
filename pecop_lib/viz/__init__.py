"""Figures: pure functions from results to matplotlib figures (they never train or load data)."""

from pecop_lib.viz.pipeline import draw_pecop_pipeline

__all__ = ["draw_pecop_pipeline"]
