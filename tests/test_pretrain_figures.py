"""Notebook 03 figures: they draw exactly the numbers they are given."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest

from pecop_lib.ssl import VSPPDraw, VSPPSampler, segment_positions
from pecop_lib.viz.vspp import (
    SEGMENT_COLOR,
    plot_adapter_alphas,
    plot_clip_frames,
    plot_cost_comparison,
    plot_label_histograms,
    plot_pretext_curves,
    plot_vspp_timelines,
)


def test_timeline_marks_the_segment_and_the_wrap() -> None:
    sampler = VSPPSampler(clip_len=8, num_segments=4)
    normal = VSPPDraw(speed=3, segment=2, start=1)
    wrap = VSPPDraw(speed=5, segment=4, start=60 - 3 - 8)
    segment = segment_positions(2, clip_len=8, num_segments=4)
    fig = plot_vspp_timelines({"a": (sampler.frames(60, normal), segment),
                               "b": (sampler.frames(60, wrap), segment_positions(4, clip_len=8, num_segments=4))},
                              "t", num_frames=60)
    first, second = fig.axes
    normal_points, segment_points = first.collections[:2]
    assert np.array_equal(segment_points.get_offsets()[:, 0], list(segment))
    assert np.array_equal(segment_points.get_offsets()[:, 1], [f for i, f in enumerate(sampler.frames(60, normal))
                                                               if i in segment])
    assert len(normal_points.get_offsets()) == 8 - len(segment)
    assert not [ln for ln in first.lines if ln.get_linestyle() == "--"]  # far from the end: no last-frame line
    assert next(ln for ln in second.lines if ln.get_linestyle() == "--").get_ydata()[0] == 60  # the wrap panel has it


def test_clip_frames_frame_the_segment_in_red() -> None:
    frames = np.zeros((10, 4, 4, 3), dtype=np.uint8)
    fig = plot_clip_frames(frames, list(range(1, 11)), [3, 4, 5], "t", columns=4)
    assert len(fig.axes) == 12
    red = [i for i, ax in enumerate(fig.axes) if ax.spines["top"].get_edgecolor()[:3] == plt.matplotlib.colors.to_rgb(SEGMENT_COLOR)]
    assert red == [3, 4, 5]
    assert [ax.get_title() for ax in fig.axes[:2]] == ["#1", "#2"] and not fig.axes[11].axison


def test_label_histograms_show_dead_classes() -> None:
    fig = plot_label_histograms({"official": [1, 2, 2, 4], "paper": [0, 1, 2, 3]}, {"official": 5, "paper": 4}, "t")
    official, paper = fig.axes
    assert [p.get_height() for p in official.patches] == [0.0, 0.25, 0.5, 0.0, 0.25]
    assert sum("never" in t.get_text() for t in official.texts) == 2
    assert [p.get_height() for p in paper.patches] == [0.25] * 4 and not paper.texts


def test_pretext_curves_smooth_and_draw_chance() -> None:
    steps = [{"step": i + 1, "loss": float(i), "speed_acc": 0.5} for i in range(10)]
    fig = plot_pretext_curves({"run": steps}, ("loss", "speed_acc"), "t", chance={"speed_acc": 0.25}, window=4)
    loss_ax, acc_ax = fig.axes
    (line,) = loss_ax.lines
    assert np.allclose(line.get_ydata(), np.arange(10)[3:] - 1.5) and list(line.get_xdata()) == list(range(4, 11))
    assert acc_ax.lines[-1].get_ydata()[0] == 0.25


def test_alphas_and_costs_plot_their_inputs() -> None:
    fig = plot_adapter_alphas({"mixed_3b": np.array([1.0, 1.5, 0.5]), "mixed_3c": np.ones(4)}, "t")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["mixed_3b", "mixed_3c"]
    rows = [{"strategy": "HPT", "trainable_params": 12e6, "stored_bytes": 49e6, "seconds_per_epoch": 10.0},
            {"strategy": "PECoP", "trainable_params": 1.1e6, "stored_bytes": 4.5e6, "seconds_per_epoch": 8.0}]
    paper = {"HPT": {"trainable parameters": 13e6, "stored size (MB)": 54.0},
             "PECoP": {"trainable parameters": 1e6, "stored size (MB)": 4.0}}
    fig = plot_cost_comparison(rows, paper, "t")
    params, stored, seconds = fig.axes
    assert [p.get_height() for p in params.patches] == [12e6, 1.1e6, 13e6, 1e6]
    assert [p.get_height() for p in stored.patches] == pytest.approx([49.0, 4.5, 54.0, 4.0])
    assert [p.get_height() for p in seconds.patches] == [10.0, 8.0]  # no published time
