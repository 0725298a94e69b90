"""Fine-tuning recipes, options, settings, protocol selection and reporting (no training, no data)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pecop_lib.finetune import (
    RECIPES,
    AQAModel,
    FinetuneOptions,
    FinetuneResult,
    Reported,
    Setting,
    adam_two_rates,
    get_recipe,
    select_epochs,
    set_trainable,
    settings_for,
)
from pecop_lib.finetune.report import (
    aggregate_folds,
    comparison_rows,
    comparison_table,
    paper_reference,
    summarize_seeds,
)
from pecop_lib.heads import USDL, core_bounds, head_kind, usdl_spec
from pecop_lib.models import AdapterConfig
from pecop_lib.paper import paper_table
from tests._heads_stand_ins import TinyBackbone, single_thread  # noqa: F401 (autouse fixture)


def test_recipes_hold_the_official_hyperparameters():
    musdl = get_recipe("musdl", "MTL-AQA")
    assert (musdl.lr_backbone, musdl.lr_head, musdl.weight_decay, musdl.batch_size, musdl.epochs, musdl.bn_mode) == (
        1e-4, 1e-4, 1e-5, 4, 100, "train")
    assert get_recipe("usdl", "MTL-AQA").weight_decay == 0.0
    core = get_recipe("core", "MTL-AQA")
    assert (core.lr_backbone, core.lr_head, core.batch_size, core.grad_accum_steps, core.epochs, core.bn_mode) == (
        1e-4, 1e-3, 1, 2, 200, "frozen")
    tsa = get_recipe("tsa", "FineDiving")
    assert (tsa.lr_head, tsa.batch_size, tsa.epochs, tsa.bn_mode, tsa.max_crop, tsa.windowing) == (
        1e-3, 8, 200, "frozen", 112, "tsa_finediving")
    assert get_recipe("musdl", "JIGSAWS").official_protocol == "official_last10"
    assert get_recipe("usdl", "JIGSAWS").epochs == 80
    assert get_recipe("core", "MTL-AQA").official_protocol == "official"
    assert {r.windowing for r in RECIPES.values() if r.dataset == "MTL-AQA" and r.head != "core"} == {"musdl_mtl_aqa"}
    assert get_recipe("core", "MTL-AQA").windowing == "core_mtl_aqa"


@pytest.mark.parametrize(("head", "dataset", "message"), [
    ("tsa", "MTL-AQA", "supported on"),
    ("musdl", "PD4T", "supported on"),
    ("usd", "MTL-AQA", "unknown head"),
    ("core", "AQA-7", "unknown dataset"),
])
def test_unsupported_pairings_are_refused(head, dataset, message):
    with pytest.raises(ValueError, match=message):
        get_recipe(head, dataset)


def test_settings_validate_task_and_fold():
    with pytest.raises(ValueError, match="needs a task"):
        Setting("core", "PD4T")
    with pytest.raises(ValueError, match="single task"):
        Setting("core", "MTL-AQA", task="Gait")
    with pytest.raises(ValueError, match=r"needs the test fold being evaluated, one of \(0, 1, 2, 3\)"):
        Setting("musdl", "JIGSAWS", "Suturing", 4)
    with pytest.raises(ValueError, match="only JIGSAWS has folds"):
        Setting("core", "PD4T", "Gait", 0)
    assert Setting("musdl", "JIGSAWS", "Suturing", 2).label == "musdl/JIGSAWS/Suturing/fold2"


def test_settings_for_scopes():
    main = settings_for("musdl")
    assert [s.dataset for s in main] == ["MTL-AQA"] + ["JIGSAWS"] * 4
    assert {s.task for s in main[1:]} == {"Suturing"} and [s.fold for s in main[1:]] == [0, 1, 2, 3]
    assert [s.label for s in settings_for("tsa")] == ["tsa/FineDiving"]
    assert [s.label for s in settings_for("core")] == ["core/MTL-AQA"]
    assert [s.label for s in settings_for("usdl")] == ["usdl/MTL-AQA"]
    assert [s.label for s in settings_for("musdl", "minimal")] == ["musdl/MTL-AQA"]
    paper = settings_for("core", "paper")
    assert len(paper) == 1 + 12 + 1 + 4  # MTL-AQA, 3 JIGSAWS tasks x 4 folds, FineDiving, 4 PD4T tasks
    assert [s.label for s in settings_for("core", datasets=["PD4T"])] == ["core/PD4T/Gait"]
    with pytest.raises(ValueError, match="is not run on"):
        settings_for("tsa", datasets=["PD4T"])


def test_options_resolve_zeros_to_the_recipe_and_reject_bad_values():
    recipe = get_recipe("core", "MTL-AQA")
    assert FinetuneOptions().resolved(recipe) == {"epochs": 200, "batch_size": 1, "lr_backbone": 1e-4, "lr_head": 1e-3}
    assert FinetuneOptions(epochs=3, lr_head=0.5).resolved(recipe)["epochs"] == 3
    with pytest.raises(ValueError, match="train_backbone must be one of"):
        FinetuneOptions(train_backbone="some")
    with pytest.raises(ValueError, match="val_fraction"):
        FinetuneOptions(val_fraction=1.0)


def test_trainable_modes_and_two_learning_rates():
    backbone = TinyBackbone(32)
    assert len(set_trainable(backbone, "all")) == len(list(backbone.parameters()))
    assert set_trainable(backbone, "frozen") == []
    with pytest.raises(ValueError, match="needs a backbone with adapters"):
        set_trainable(backbone, "adapters")
    model = AQAModel(backbone, USDL(usdl_spec("jigsaws"), in_dim=32), head_kind("usdl"), None)  # type: ignore[arg-type]
    set_trainable(backbone, "all")
    opt = adam_two_rates(model, lr_backbone=1e-4, lr_head=1e-3, weight_decay=1e-5)
    assert [g["lr"] for g in opt.param_groups] == [1e-4, 1e-3]
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    assert opt.param_groups[0]["weight_decay"] == 1e-5
    set_trainable(backbone, "frozen")
    assert [g["lr"] for g in adam_two_rates(model, lr_backbone=1e-4, lr_head=1e-3, weight_decay=0).param_groups] == [1e-3]


def test_adapters_mode_trains_adapters_only():
    from pecop_lib.models import build_backbone

    backbone = build_backbone("r3d18", adapters=AdapterConfig(), seed=0)
    names = set_trainable(backbone, "adapters")
    assert names and all(".adapter." in f".{n}" for n in names)


def _records(test, val=None):
    return [{"test_rho": t, "val_rho": v, "test_pred": [float(i), 2.0 * i + (t or 0.0), 1.0 - i], "test_l2": 1.0 + i,
             "test_rl2": 2.0 + i} for i, (t, v) in enumerate(zip(test, val or [None] * len(test), strict=True))]


def test_protocols_pick_the_expected_epochs():
    true = np.array([0.0, 1.0, 2.0])
    reported = select_epochs(_records([0.1, 0.5, 0.3], [0.9, 0.2, 0.1]), true, "official", validation=True, bootstrap=0)
    assert reported["official"].epoch == 2 and reported["official"].rho == 0.5
    assert reported["official"].l2 == 2.0 and reported["official"].rl2 == 3.0
    assert reported["honest"].epoch == 1 and reported["honest"].rho == 0.1
    last = select_epochs(_records([0.1, 0.5, 0.3]), true, "official_last10", validation=False, bootstrap=0)
    assert set(last) == {"official_last10"}
    assert last["official_last10"].rho == pytest.approx(0.3) and last["official_last10"].epoch is None
    assert "last 3 epochs (10 in the official protocol)" in last["official_last10"].description
    twelve = select_epochs(_records([0.0] * 2 + [0.5] * 10), true, "official_last10", validation=False, bootstrap=0)
    assert twelve["official_last10"].rho == pytest.approx(0.5)


def test_constant_predictions_report_nan_not_a_crash():
    reported = select_epochs(_records([None, None], [None, None]), np.arange(3.0), "official", validation=True,
                             bootstrap=0)
    assert math.isnan(reported["official"].rho) and "constant" in reported["official"].description
    assert math.isnan(reported["honest"].rho)


def test_bootstrap_interval_brackets_the_reported_rho():
    rng = np.random.default_rng(0)
    true = rng.normal(size=40)
    records = [{"test_rho": None, "val_rho": None, "test_pred": (true + rng.normal(scale=s, size=40)).tolist(),
                "test_l2": 0.0, "test_rl2": 0.0} for s in (2.0, 0.3)]
    from pecop_lib.eval import spearman

    for r in records:
        r["test_rho"] = spearman(r["test_pred"], true)
    rep = select_epochs(records, true, "official", validation=False, bootstrap=300, seed=1)["official"]
    assert rep.epoch == 2 and rep.ci is not None
    assert rep.ci.low < rep.rho < rep.ci.high and rep.ci.value == pytest.approx(rep.rho)


def test_core_bounds_fall_back_to_all_pairs_with_a_warning():
    with pytest.warns(UserWarning, match="no two training videos share"):
        bounds = core_bounds(np.array([1.0, 2.0, 4.0]), ["a", "b", "c"], 30.0)
    assert bounds.shape == (16, 2) and bounds[-1, 1] == 30.0 and bounds[0, 0] == -30.0
    same = core_bounds(np.array([1.0, 2.0, 4.0]), ["a", "a", "b"], 30.0)
    assert same[8, 0] == 0.0 and same[9, 0] == 1.0  # the only same-group difference is 1


def test_paper_references():
    assert paper_reference("musdl", "MTL-AQA", pecop=False) == pytest.approx(0.9273)
    assert paper_reference("musdl", "MTL-AQA", pecop=True) == pytest.approx(0.9372)
    assert paper_reference("core", "JIGSAWS", "Needle_Passing", pecop=True) == pytest.approx(0.90)
    assert paper_reference("musdl", "JIGSAWS", None, pecop=False) == pytest.approx(0.70)
    assert paper_reference("usdl", "MTL-AQA", pecop=True) is None  # not in the paper
    assert paper_reference("tsa", "FineDiving", pecop=True) == pytest.approx(0.9313)
    assert paper_reference("core", "PD4T", "Gait", pecop=False, backbone="r3d18") == pytest.approx(0.7616)
    assert paper_reference("usdl", "PD4T", "Leg agility", pecop=True) == pytest.approx(
        paper_table("table4").row("USDL + PECoP")["Leg agility"] / 100)


def _fake(setting: Setting, rho: float, honest_rho: float) -> FinetuneResult:
    name = "official_last10" if setting.dataset == "JIGSAWS" else "official"
    reported = {name: Reported(name, rho, None, ""), "honest": Reported("honest", honest_rho, 1, "")}
    return FinetuneResult(setting, "x", [], np.zeros(2), [], np.zeros(0), reported, {})


def test_jigsaws_folds_average_then_fisher_z():
    results = [_fake(Setting("musdl", "JIGSAWS", t, f), r, r / 2)
               for t, rhos in (("Suturing", (0.6, 0.8, 0.7, 0.9)), ("Knot_Tying", (0.5, 0.5, 0.5, 0.7)))
               for f, r in enumerate(rhos)]
    agg = aggregate_folds(results)
    assert agg["official"]["Suturing"] == pytest.approx(0.75) and agg["official"]["Knot_Tying"] == pytest.approx(0.55)
    z = (0.5 * math.log(1.75 / 0.25) + 0.5 * math.log(1.55 / 0.45)) / 2
    assert agg["official"]["avg"] == pytest.approx(math.tanh(z))
    assert agg["honest"]["Suturing"] == pytest.approx(0.375)
    rows = comparison_rows({"Dom-G": results})
    assert [r["task"] for r in rows] == ["Suturing (4 folds)", "Knot_Tying (4 folds)", "Avg (Fisher-z)"]
    assert rows[0]["official"] == "75.00" and rows[0]["paper"] == "71.00" and rows[0]["protocol"] == "official_last10"


def test_seed_summary_and_comparison_rows():
    setting = Setting("core", "MTL-AQA")
    runs = [_fake(setting, r, r - 0.1) for r in (0.8, 0.9, 1.0 - 1e-9)]
    summary = summarize_seeds(runs)
    assert summary["official"]["mean"] == pytest.approx(0.9) and summary["official"]["n"] == 3
    assert summary["honest"]["mean"] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="one setting"):
        summarize_seeds([runs[0], _fake(Setting("core", "FineDiving"), 0.5, 0.5)])
    rows = comparison_rows({"Dom-G": runs[:1], "PECoP": runs[1:2]})
    assert [(r["backbone"], r["official"], r["honest"], r["paper"], r["difficulty only"]) for r in rows] == [
        ("Dom-G", "80.00", "70.00", "95.12", "n/a"), ("PECoP", "90.00", "80.00", "95.20", "n/a")]


def test_difficulty_baseline_by_hand():
    from pecop_lib.data.dataset import AQARecord
    from pecop_lib.finetune import difficulty_baseline

    train = [AQARecord("a", "a", 20.0, "2.0", 2.0), AQARecord("b", "b", 60.0, "3.0", 3.0)]  # completeness 10, 20
    test = [AQARecord(k, k, s, str(d), d) for k, s, d in (("c", 30.0, 2.0), ("d", 20.0, 3.0), ("e", 50.0, 3.5))]
    # predictions 15 x difficulty = 30, 45, 52.5 rank 1, 2, 3 against true ranks 2, 1, 3: rho = 0.5
    assert difficulty_baseline(train, test) == pytest.approx(0.5)
    assert difficulty_baseline(train, [AQARecord("f", "f", 18.0, "Suturing")] * 2) is None


def test_usdl_targets_of_a_batch_are_what_the_head_is_trained_on():
    from pecop_lib.data.dataset import AQARecord

    usdl, musdl = head_kind("usdl"), head_kind("musdl")
    rec = AQARecord("a", "a", 60.0, "3.0", 3.0, judge_scores=(7.0, 6.5, 7.5, 8.0, 6.0, 7.0, 7.0))
    assert usdl.path_targets(rec).tolist() == [60.0]
    assert musdl.path_targets(rec).tolist() == [7.0, 6.5, 7.5, 8.0, 6.0, 7.0, 7.0]
    jig = AQARecord("b", "b", 18.0, "Suturing", subscores=(3, 3, 3, 3, 3, 3))
    assert musdl.path_targets(jig).shape == (6,)
    # the training targets are the same numbers, as float32: the final score (), the judges (7,), the sub-scores (6,)
    assert usdl.target(rec).dtype == torch.float32 and usdl.target(rec).shape == () and float(usdl.target(rec)) == 60.0
    assert musdl.target(rec).tolist() == [7.0, 6.5, 7.5, 8.0, 6.0, 7.0, 7.0] and musdl.target(jig).shape == (6,)
    head = USDL(usdl_spec("mtl_aqa", multi_path=True))
    assert head.targets(musdl.target(rec)[None]).shape == (1, 7, 21)


def test_the_shared_notebook_cells_report_what_the_notebooks_wrote(capsys):
    from pecop_lib.finetune.notebook import notebook_metrics

    setting = Setting("core", "MTL-AQA")
    runs = {"Dom-G": [_fake(setting, 0.8, 0.7)]}
    table = comparison_table(runs)
    best = {"MTL-AQA": {"margin": 0.1}}
    metrics = notebook_metrics(runs, table, {"MTL-AQA": ("difficulty alone", 0.76)}, best, FinetuneOptions(),
                               exemplar_encodings={"official": 20, "cached": 4})
    assert list(metrics) == ["runs", "table", "baselines", "beats_baseline", "exemplar_encodings", "options"]
    assert metrics["baselines"] == {"MTL-AQA": {"baseline": "difficulty alone", "rho": 0.76}}
    assert metrics["runs"]["Dom-G core/MTL-AQA"]["official_rho"] == 0.8 and metrics["table"] == table.to_dict("records")
    assert metrics["options"] == FinetuneOptions().__dict__
