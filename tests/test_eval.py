"""Metrics, protocols and intervals against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pecop_lib.eval import (
    bootstrap_ci,
    fisher_z_mean,
    holdout_split,
    honest,
    jigsaws_average,
    l2,
    official_best,
    official_last_mean,
    relative_l2,
    seed_summary,
    segment_iou,
    spearman,
    tiou_accuracy,
)


def test_spearman_hand_computed():
    # ranks of pred: [1, 3, 2, 4]; ranks of true: [1, 2, 3, 4]; d^2 = 0+1+1+0 = 2; rho = 1 - 6*2/(4*15) = 0.8
    assert spearman([0.1, 0.5, 0.3, 0.9], [1, 2, 3, 4]) == pytest.approx(0.8)
    assert spearman([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_spearman_input_errors():
    with pytest.raises(ValueError, match="differ in length"):
        spearman([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="NaN"):
        spearman([1, float("nan")], [1, 2])
    with pytest.raises(ValueError, match="at least 2"):
        spearman([1], [1])


def test_fisher_z_matches_published_jigsaws_average():
    # MUSDL's JIGSAWS_avg.xls: S 0.71, NP 0.69, KT 0.71 -> 0.7035
    assert fisher_z_mean([0.71, 0.69, 0.71]) == pytest.approx(0.7035, abs=5e-5)
    with pytest.raises(ValueError, match="strictly inside"):
        fisher_z_mean([1.0, 0.5])


def test_jigsaws_average_folds_then_fisher():
    out = jigsaws_average({"S": [0.70, 0.72, 0.71, 0.71], "NP": [0.69] * 4, "KT": [0.75, 0.67, 0.71, 0.71]})
    assert out["S"] == pytest.approx(0.71) and out["KT"] == pytest.approx(0.71)
    assert out["avg"] == pytest.approx(0.7035, abs=5e-5)


def test_l2_and_relative_l2():
    pred, true = [1.0, 2.0, 6.0], [0.0, 2.0, 4.0]
    assert l2(pred, true) == pytest.approx((1 + 0 + 4) / 3)
    # range 4: ((1/4)^2 + 0 + (2/4)^2) / 3 = (0.0625 + 0.25) / 3
    assert relative_l2(pred, true, scale=1) == pytest.approx(0.3125 / 3)
    assert relative_l2(pred, true) == pytest.approx(100 * 0.3125 / 3)
    with pytest.raises(ValueError, match="all true scores are equal"):
        relative_l2([1, 2], [3, 3])


def test_segment_iou_and_accuracy():
    iou = segment_iou([[0, 10], [5, 15], [20, 30]], [[0, 10], [10, 20], [0, 5]])
    np.testing.assert_allclose(iou, [1.0, 5 / 15, 0.0])
    assert tiou_accuracy([[0, 10], [5, 15]], [[0, 10], [10, 20]]) == {0.5: 0.5, 0.75: 0.5}
    with pytest.raises(ValueError, match="start <= end"):
        segment_iou([[5, 1]], [[0, 1]])


def test_protocols():
    test = [0.5, 0.9, 0.6, 0.7]
    val = [0.4, 0.3, 0.8, 0.5]
    assert official_best(test).epoch == 1 and official_best(test).test_rho == 0.9
    chosen = honest(val, test)
    assert chosen.epoch == 2 and chosen.test_rho == 0.6 and chosen.protocol == "honest"
    curve = list(np.linspace(0.1, 1.0, 12))
    assert official_last_mean(curve).test_rho == pytest.approx(np.mean(curve[-10:]))
    with pytest.raises(ValueError, match="at least 10 epochs"):
        official_last_mean(test)
    with pytest.raises(ValueError, match="differ in length"):
        honest(val[:2], test)


def test_holdout_split_plain_grouped_stratified():
    keys = list(range(20))
    train, val = holdout_split(keys, 0.25, seed=1)
    assert len(val) == 5 and sorted(train + val) == keys
    assert holdout_split(keys, 0.25, seed=1) == (train, val)
    groups = [i // 4 for i in keys]  # 5 subjects of 4 trials
    train, val = holdout_split(keys, 0.3, seed=0, groups=groups)
    assert {groups[i] for i in train}.isdisjoint({groups[i] for i in val})
    assert len(val) == 8  # whole subjects until >= 6 samples
    strata = ["a"] * 10 + ["b"] * 8 + ["c"]
    train, val = holdout_split(keys[:19], 0.25, seed=0, stratify=strata)
    assert sum(strata[i] == "a" for i in val) == 2 and sum(strata[i] == "b" for i in val) == 2
    assert all(strata[i] != "c" for i in val)
    with pytest.raises(ValueError, match="at least 2 groups"):
        holdout_split(keys, 0.2, groups=[0] * 20)


def test_bootstrap_interval_contains_estimate_and_is_seeded():
    rng = np.random.default_rng(0)
    true = rng.normal(size=60)
    pred = true + rng.normal(scale=0.5, size=60)
    ci = bootstrap_ci(pred, true, n_resamples=300, seed=3)
    assert ci.low < ci.value < ci.high and 0.6 < ci.value < 1.0
    assert bootstrap_ci(pred, true, n_resamples=300, seed=3) == ci
    assert ci.format(scale=100, digits=1).count("[") == 1


def test_seed_summary():
    out = seed_summary([0.8, 0.9, 1.0])
    assert out["mean"] == pytest.approx(0.9) and out["std"] == pytest.approx(0.1) and out["n"] == 3
    # t(0.975, 2) = 4.302652730; half width = 4.3027 * 0.1 / sqrt(3)
    assert out["ci_high"] - out["mean"] == pytest.approx(4.302652730 * 0.1 / math.sqrt(3), rel=1e-6)
    assert math.isnan(seed_summary([0.5])["std"])
