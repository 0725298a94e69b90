"""Adapter figures (notebook 02) draw what they are given."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from pecop_lib.models import STRATEGIES, adapter_parameter_table, build_backbone, strategy_parameter_counts
from pecop_lib.viz.adapters import (
    draw_adapted_inception_block,
    draw_adapted_residual_block,
    plot_adapter_blocks,
    plot_adapter_drift,
    plot_strategy_parameters,
)


def test_diagrams_show_adapter_steps() -> None:
    for draw in (draw_adapted_inception_block, draw_adapted_residual_block):
        fig = draw("t")
        texts = " ".join(t.get_text() for t in fig.axes[0].texts)
        assert "theta_down" in texts and "theta_up" in texts and "alpha" in texts
        plt.close(fig)


def test_bar_charts_carry_the_counts() -> None:
    model = build_backbone("r3d18", adapters=True, seed=0)
    counts = {"R3D-18": strategy_parameter_counts(model)}
    fig = plot_strategy_parameters(counts, {k: s.label for k, s in STRATEGIES.items()}, "t")
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert "230,240" in texts and "0 (frozen)" in texts
    plt.close(fig)
    rows = adapter_parameter_table(model)
    fig = plot_adapter_blocks(rows, "t")
    assert len(fig.axes[0].patches) == 3 * len(rows)
    plt.close(fig)
    fig = plot_adapter_drift({"official": {"a": 0.2, "b": 0.1}, "zero_up": {"a": 0.0, "b": 0.0}}, "t")
    assert [p.get_height() for p in fig.axes[0].patches] == [0.2, 0.1, 0.0, 0.0]
    plt.close(fig)
