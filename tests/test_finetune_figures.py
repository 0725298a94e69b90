"""Head drawings (viz.heads) and fine-tuning result figures (viz.finetune)."""

from __future__ import annotations

import numpy as np
import pytest

from pecop_lib.heads import group_bounds, usdl_spec
from pecop_lib.viz.finetune import plot_epoch_curves, plot_pred_vs_true, plot_score_distributions
from pecop_lib.viz.heads import draw_core_tree, draw_tsa_segmentation, draw_usdl_targets, soft_label_targets


def test_usdl_targets_drawing():
    spec = usdl_spec("mtl_aqa")
    targets = soft_label_targets(spec.bins, spec.sigma, [52.25, 80.0])
    np.testing.assert_allclose(targets.sum(1), 1.0, rtol=1e-6)
    assert targets[0].argmax() == 50 and targets[1].argmax() == round(80 * 100 / 104.5)
    fig = draw_usdl_targets(spec.bins, spec.sigma, [52.25, 80.0], "t")
    ax = fig.axes[0]
    curves = [line for line in ax.get_lines() if len(line.get_xdata()) == spec.bins.num_bins]
    assert len(curves) == 2
    np.testing.assert_allclose(curves[0].get_ydata(), targets[0], rtol=1e-6)
    assert "101 bins" in ax.get_xlabel() and "sigma = 5" in ax.get_xlabel()


def test_core_tree_drawing_labels_every_leaf():
    deltas = np.abs(np.random.default_rng(0).normal(0, 3, 500))
    bounds = group_bounds(deltas)
    fig = draw_core_tree(bounds, "tree", deltas=deltas)
    tree_ax = fig.axes[0]
    leaf_texts = [t.get_text() for t in tree_ax.texts if t.get_text().split("\n")[0].isdigit()]
    assert [int(t.split("\n")[0]) for t in leaf_texts] == list(range(16))
    assert leaf_texts[8].startswith("8\n[0,") and leaf_texts[15].endswith("30]")
    assert len(tree_ax.collections) == 31  # 15 inner nodes + 16 leaves
    with pytest.raises(ValueError, match="power-of-two"):
        draw_core_tree(bounds[:12], "bad")


def test_tsa_segmentation_drawing():
    labels = np.array([3] * 10 + [7] * 8 + [9] * 6 + [1] * 8)
    probs = np.random.default_rng(0).random((32, 2))
    fig = draw_tsa_segmentation(labels, (10, 24), "seg", predicted=(11, 23), probs=probs)
    assert len(fig.axes) == 3
    step_ax = fig.axes[1]
    assert [t.get_text() for t in step_ax.texts] == ["take-off", "flight", "entry"]
    vertical = sorted(round(line.get_xdata()[0], 2) for line in step_ax.get_lines())
    assert vertical == [9.5, 10.5, 22.5, 23.5]  # true 10, 24 and predicted 11, 23
    assert len(step_ax.collections) == 3  # the resampling ticks of the three steps


def test_result_figures():
    true = np.arange(6.0)
    fig = plot_pred_vs_true({"a": (true * 2, true), "b": (true[::-1], true)}, "scatter")
    assert "rho = 1.000" in fig.axes[0].get_title() and "rho = -1.000" in fig.axes[1].get_title()
    fig = plot_epoch_curves({"run": {"test": [0.1, 0.5, 0.3], "val": [0.9, 0.2, 0.1],
                                     "selected": {"official": 2, "honest": 1}}}, "curves")
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "official: epoch 2" in labels and "honest: epoch 1" in labels
    spec = usdl_spec("mtl_aqa", multi_path=True)
    pred = np.full((2, 7, 21), 1 / 21)
    fig = plot_score_distributions(spec.bins, spec.sigma, pred, np.full((2, 7), 7.5), "dists", max_paths=2)
    assert len(fig.axes) == 4
    with pytest.raises(ValueError, match="videos, paths, bins"):
        plot_score_distributions(spec.bins, spec.sigma, pred[0], np.full((2, 7), 7.5), "bad")


def test_score_histograms():
    from pecop_lib.viz.finetune import plot_score_histograms

    fig = plot_score_histograms({"a": ([1.0, 2.0, 3.0], [1.0, 1.5, 4.0])}, "h", bins=4)
    ax = fig.axes[0]
    assert len(ax.patches) == 8 and "std: predicted 0.816" in ax.get_title()
