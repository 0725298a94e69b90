"""Ablation and score-distribution figures (pecop_lib.viz.ablations, pecop_lib.viz.distributions) and the
notebook-08 explorer's cards (VideoBrowser): what is drawn, from which numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pecop_lib.heads import usdl_spec
from pecop_lib.studies import explorer
from pecop_lib.viz.ablations import cell_values, label_colors, plot_ablation_panels
from pecop_lib.viz.distributions import (
    calibration_points,
    long_scores,
    plot_calibration,
    plot_judge_view,
    plot_score_kdes,
    plot_score_violins,
    plot_video_card,
    view_range,
)
from tests._ablation_stand_ins import ablation_result


def _bars(ax):
    return [p for p in ax.patches if p.get_width() > 0 and p.get_height() != 0]


def test_fig5_panels_mean_error_bars_seeds_and_paper():
    values = {("Dom-G", "MTL-AQA"): [0.5, 0.7], ("PECoP", "MTL-AQA"): [0.9], ("Dom-G", "S"): [np.nan],
              ("PECoP", "S"): [0.2, 0.4, 0.6]}
    paper = {("PECoP", "MTL-AQA"): 0.952}
    fig = plot_ablation_panels(values, labels=["Dom-G", "PECoP"], tasks=["MTL-AQA", "S"], title="t",
                               paper=lambda label, task: paper.get((label, task)))
    mtl, jig = fig.axes[:2]
    assert [round(b.get_height(), 6) for b in _bars(mtl)] == [0.6, 0.9]
    assert [round(b.get_height(), 6) for b in _bars(jig)] == [0.4]  # Dom-G on S is all-nan: no bar
    assert any(t.get_text() == "n/a" for t in jig.texts)
    assert len(mtl.lines) + len(mtl.collections) >= 3  # one error bar (two seeds), seed dots, the paper diamond
    from matplotlib.collections import PathCollection

    offsets = np.concatenate([c.get_offsets() for c in mtl.collections if isinstance(c, PathCollection)])
    assert [1.0, 0.952] in offsets.round(3).tolist()  # the paper's value at PECoP's x
    assert sorted(offsets[:, 1].round(3).tolist()) == [0.5, 0.7, 0.9, 0.952]
    caps = [line for line in jig.lines if len(line.get_xdata()) == 1]
    assert caps, "three seeds draw an error bar with caps"
    assert [t.get_text() for t in mtl.get_xticklabels()] == ["Dom-G", "PECoP"]


def test_cell_values_and_colors():
    frame = pd.DataFrame({"study": ["fig5", "fig5", "table5"], "label": ["PECoP", "PECoP", "VSPP"],
                          "task": ["S", "S", "S"], "seed": [0, 1, 0], "rho": [0.1, 0.2, 0.3]})
    assert cell_values(frame, "fig5") == {("PECoP", "S"): [0.1, 0.2]}
    colors = label_colors(["PECoP", "official", "all paper", "Dom-G"])
    assert colors[0] == "#f28e2b" and colors[3] == "#bab0ac" and colors[1] != colors[2]


def test_view_range_and_calibration_points():
    assert view_range(np.array([2.0, 4.0])) == (0.0, 6.0)
    assert view_range(np.array([5.0, 5.0]), margin=0.5) == (2.5, 7.5)  # no spread: the value's size
    true = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    pred = np.array([2.0, 2.0, 4.0, 4.0, 6.0, 6.0])
    x, y = calibration_points(true, pred, bins=3)
    assert x.tolist() == [1.5, 3.5, 5.5] and y.tolist() == [2.0, 4.0, 6.0]
    x, y = calibration_points(np.ones(4), np.arange(4.0), bins=5)
    assert x.tolist() == [1.0] and y.tolist() == [1.5]


def _frame() -> pd.DataFrame:
    rows = []
    for label, preds in {"Dom-G": [1.0, 1.0, 1.0, 1.0], "PECoP": [1.5, 2.5, 2.9, 4.2], "Dom-S": [-900.0, 2, 3, 4]}.items():
        for video, (t, p) in enumerate(zip([1.0, 2.0, 3.0, 4.0], preds, strict=True)):
            rows.append({"task": "MTL-AQA", "label": label, "seed": 0, "video": f"v{video}", "true": t, "pred": p})
    return pd.DataFrame(rows)


def test_score_figures_count_off_scale_and_constant_predictions():
    frame = _frame()
    scores = long_scores(frame)
    assert (scores["source"] == "true").sum() == 4  # the truth once per video, not once per label
    fig = plot_score_kdes(frame, "kde")
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "Dom-G (constant)" in legend and "Dom-S, 1 off-scale" in legend and "true (4 videos)" in legend
    assert fig.axes[0].get_xlim() == view_range(np.array([1.0, 2.0, 3.0, 4.0]))
    fig = plot_score_violins(frame, "violin")
    assert any(t.get_text() == "1 off-scale" for t in fig.axes[0].texts)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["true", "Dom-G", "PECoP", "Dom-S"]
    fig = plot_calibration(frame, "cal", bins=2)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["calibrated", "Dom-G", "PECoP", "Dom-S, 1 off-scale"]


def test_video_card_and_judge_view():
    spec = usdl_spec("mtl_aqa", multi_path=True)
    dist = np.zeros((7, spec.bins.num_bins))
    dist[:, 16] = 1.0  # every judge: all mass on 8.0
    frames = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    fig = plot_video_card(frames, title="card", true=80.0, predictions={"PECoP": 79.0, "Dom-S": -5000.0},
                          distribution=dist, targets=np.full(7, 7.5), bins=spec.bins, sigma=spec.sigma,
                          path_names=[f"judge {j + 1}" for j in range(7)])
    assert len(fig.axes) == 2 + 3  # frames, predictions, three judge paths (max_paths)
    texts = [t.get_text() for t in fig.axes[1].texts]
    assert " -5000 (off-scale)" in texts and " 79" in texts
    plain = plot_video_card(frames, title="card", true=1.0, predictions={"PECoP": 1.0})
    assert any("no predicted distribution" in t.get_text() for ax in plain.axes for t in ax.texts)
    judges = plot_judge_view(spec.bins, dist[None], np.full((1, 7), 7.5), "j")
    means = judges.axes[1].collections[0].get_offsets()[:, 1]
    assert np.allclose(means, 8.0)
    with pytest.raises(ValueError, match=r"\(videos, judges, bins\)"):
        plot_judge_view(spec.bins, dist, np.full((1, 7), 7.5), "j")


def test_video_browser_cards(monkeypatch):
    dist = np.zeros((2, 7, 21))
    dist[:, :, 10] = 1.0
    musdl = ablation_result("musdl", "PECoP", "MTL-AQA", 0, 0.5, pred=(60.0, 61.0, 62.0, 63.0), distributions=dist,
                            targets=np.full((2, 7), 8.0), head="musdl")
    core = [ablation_result("fig5", "PECoP", "MTL-AQA", seed, 0.9, pred=(1.0 + seed, 2, 3, 4)) for seed in (0, 1)]
    browser = explorer.VideoBrowser(core + [musdl], "/nowhere", crop=32, clip_frames=16)
    monkeypatch.setattr(explorer.VideoBrowser, "_frames", lambda self, task, video: np.zeros((2, 4, 4, 3), np.uint8))
    assert browser.choices() == ["MTL-AQA | a", "MTL-AQA | b", "MTL-AQA | c", "MTL-AQA | d"]
    card = browser.card("MTL-AQA | a", "PECoP")
    assert card.predictions == {"PECoP": 1.5, "MUSDL PECoP": 60.0}  # CoRe: mean of two seeds
    assert card.distribution.shape == (7, 21) and card.path_names[0] == "judge 1" and card.bins.num_bins == 21
    assert card.caption == "MTL-AQA video a: true 1.00; predicted: PECoP 1.50, MUSDL PECoP 60.00"
    assert browser.card("MTL-AQA | c", "PECoP").distribution is None  # only the first two videos kept one
    with pytest.raises(KeyError, match="no test video"):
        browser.card("MTL-AQA | zz", "PECoP")
    table = explorer.judge_table(musdl)
    assert table["predicted mean"].tolist() == [5.0] * 7 and table["mean abs error"].tolist() == [3.0] * 7
    with pytest.raises(ValueError, match="needs a finished MUSDL run"):
        explorer.judge_table(core[0])
