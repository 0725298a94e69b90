"""Ablation grid (pecop_lib.studies.plans) and its report (pecop_lib.studies.tables, verdicts, explorer): plans from
presets, per-seed values and summaries, the paper lookup, verdicts computed from numbers, Table 2 and
switch tables, divergence handling, and load-or-train on a tiny world."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

import pecop_lib
from pecop_lib.config import ConfigError
from pecop_lib.eval import fisher_z_mean
from pecop_lib.finetune import EXPORT_DIR, Setting
from pecop_lib.finetune.runs import result_to_json
from pecop_lib.paper import FIG5_TASKS
from pecop_lib.studies import explorer, tables
from pecop_lib.studies import plans as ablations
from pecop_lib.studies import verdicts as study_verdicts
from pecop_lib.studies.plans import (
    SWITCHES,
    AblationRun,
    ablation_plan,
    backbone_runs,
    distribution_runs,
    finetune_options,
    parse_tasks,
    pretext_runs,
    run_ablation,
    strategy_runs,
    switch_variants,
    task_settings,
)
from pecop_lib.train.context import RunContext
from pecop_lib.train.loop import NonFiniteLossError
from tests._ablation_stand_ins import ablation_result, cost, finetune_result
from tests._heads_stand_ins import single_thread  # noqa: F401 (autouse fixture)
from tests._worlds import tiny_world

# ------------------------------------------------------------------------------------------ plans


def test_parse_tasks():
    assert parse_tasks("all") == FIG5_TASKS
    assert parse_tasks(" S, NP ,S") == ("S", "NP")
    with pytest.raises(ValueError, match=r"unknown or missing task\(s\) \['Diving'\].*'MTL-AQA'"):
        parse_tasks("MTL-AQA,Diving")
    with pytest.raises(ValueError, match="unknown or missing"):
        parse_tasks(" , ")
    assert parse_tasks(" None ", optional=True) == ()  # a study that is off
    with pytest.raises(ValueError, match=r"unknown or missing task\(s\) \['none'\]"):
        parse_tasks("none")  # Fig. 5 cannot be off


def test_task_settings_map_fig5_names_to_datasets_and_folds():
    assert task_settings("MTL-AQA", folds=3) == [Setting("core", "MTL-AQA")]
    assert task_settings("Leg agility") == [Setting("core", "PD4T", "Leg agility")]
    assert task_settings("NP", folds=2) == [Setting("core", "JIGSAWS", "Needle_Passing", 0),
                                            Setting("core", "JIGSAWS", "Needle_Passing", 1)]
    with pytest.raises(ValueError, match="folds must be in 1..4"):
        task_settings("S", folds=5)
    with pytest.raises(ValueError, match="unknown task 'Diving'"):
        task_settings("Diving")


def test_study_builders():
    runs = strategy_runs(["MTL-AQA", "S"], [0, 1], folds=2)
    assert len(runs) == (1 + 2) * 5 * 2
    assert [r.label for r in runs[:10:2]] == ["Dom-G", "Dom-S", "HPT+BN", "HPT", "PECoP"]
    assert {r.strategy for r in runs} == set(ablations.ABLATION_STRATEGIES)
    table5 = pretext_runs(["S"], [3])
    assert [(r.label, r.pretext, r.strategy, r.seed) for r in table5] == [
        ("RSPNet", "rspnet", "pecop", 3), ("VideoPace", "pace", "pecop", 3), ("VSPP", "vspp", "pecop", 3)]
    table6 = backbone_runs(["Gait"], [0])
    assert [(r.label, r.backbone, r.strategy) for r in table6] == [("Dom-G", "r3d18", "dom_g"),
                                                                    ("PECoP", "r3d18", "pecop")]
    heads = distribution_runs([0], strategies=["pecop"])
    assert [(r.study, r.setting.head, r.label) for r in heads] == [("usdl", "usdl", "PECoP"),
                                                                   ("musdl", "musdl", "PECoP")]


def test_switch_variants_change_one_switch_at_a_time():
    each = switch_variants("each")
    assert list(each) == ["official", "paper sampler", "paper BatchNorm", "paper learning rate",
                          "paper colour jitter", "all paper"]
    official = dict(each["official"])
    assert official == {"pretrain_vspp_mode": "official", "pretrain_bn_mode": "train", "pretrain_lr": 0.01,
                        "pretrain_color_jitter": False}
    for name, (key, _, paper) in SWITCHES.items():
        variant = dict(each[f"paper {name}"])
        assert {k for k in variant if variant[k] != official[k]} == {key} and variant[key] == paper
    assert all(dict(each["all paper"])[key] == paper for key, _, paper in SWITCHES.values())
    assert list(switch_variants("combined")) == ["official", "all paper"]
    assert switch_variants("none") == {}
    with pytest.raises(ValueError, match="unknown switch mode 'some'"):
        switch_variants("some")


def test_plan_follows_the_presets():
    smoke = ablation_plan(pecop_lib.resolve("smoke"))
    assert {k: len(v) for k, v in smoke.items()} == {"fig5": 5, "table5": 3, "table6": 2, "switches": 2}
    tutorial = ablation_plan(pecop_lib.resolve("tutorial"))
    assert len(tutorial["fig5"]) == 8 * 5 * 3  # every Fig. 5 task, five strategies, three seeds, one fold
    assert {r.seed for r in tutorial["fig5"]} == {0, 1, 2}
    assert len(tutorial["switches"]) == 6 * 3
    paper = ablation_plan(pecop_lib.resolve("paper", seed=4))
    assert {r.setting.fold for r in paper["table5"]} == {0, 1, 2, 3} and {r.seed for r in paper["fig5"]} == {4, 5, 6}
    with pytest.raises(ValueError, match="'ablation_seeds' = 0 is out of range; accepted: 1 <= value"):
        pecop_lib.resolve("smoke", ablation_seeds=0)  # refused before any plan is made


def test_run_config_and_options():
    cfg = pecop_lib.resolve("smoke", seed=2)
    run = AblationRun("switches", "x", "MTL-AQA", Setting("core", "MTL-AQA"), 0, backbone="r3d18",
                      switches=(("pretrain_bn_mode", "frozen"), ("pretrain_lr", 1e-3)))
    derived = run.config(cfg)
    assert (derived.model_backbone, derived.pretrain_bn_mode, derived.pretrain_lr, derived.seed) == ("r3d18", "frozen",
                                                                                                   1e-3, 2)
    assert derived.preset == "smoke" and derived.data_crop_size == cfg.data_crop_size
    bad = AblationRun("switches", "x", "MTL-AQA", Setting("core", "MTL-AQA"), 0, switches=(("pretrain_lr", "fast"),))
    with pytest.raises(ConfigError, match="pretrain_lr"):
        bad.config(cfg)
    assert finetune_options(cfg).epochs == 1
    assert finetune_options(pecop_lib.resolve("smoke", ablation_finetune_epochs=0)).epochs == cfg.finetune_epochs


# ----------------------------------------------------------------------------------------- report


def test_seed_values_average_folds_and_summaries_use_seeds():
    results = [ablation_result("fig5", "PECoP", "S", 0, 0.5, fold=0), ablation_result("fig5", "PECoP", "S", 0, 0.7, fold=1),
               ablation_result("fig5", "PECoP", "S", 1, 0.8, fold=0), ablation_result("fig5", "PECoP", "S", 1, 0.9, fold=1),
               ablation_result("fig5", "Dom-G", "S", 0, 0.1), ablation_result("fig5", "Dom-G", "S", 1, 0.0, error="nan")]
    values = tables.seed_values(results)
    pecop = values[values["label"] == "PECoP"].set_index("seed")
    assert pecop.loc[0, "rho"] == pytest.approx(0.6) and pecop.loc[1, "rho"] == pytest.approx(0.85)
    assert (pecop["folds"] == 2).all()
    summary = tables.summarize(values).set_index("label")
    assert summary.loc["PECoP", "mean"] == pytest.approx(0.725)
    assert summary.loc["PECoP", "std"] == pytest.approx(np.std([0.6, 0.85], ddof=1))
    assert summary.loc["Dom-G", "n"] == 1 and summary.loc["Dom-G", "missing"] == 1
    assert math.isnan(summary.loc["Dom-G", "std"])


def test_paper_values_come_from_the_published_tables():
    assert tables.paper_value("fig5", "PECoP", "MTL-AQA") == pytest.approx(0.9520)
    assert tables.paper_value("fig5", "HPT", "S") == pytest.approx(0.80)
    assert tables.paper_value("fig5", "Dom-G", "Gait") == pytest.approx(0.7887)  # Table 4, "CoRe"
    assert tables.paper_value("fig5", "Dom-S", "MTL-AQA") is None  # drawn in Fig. 5, never printed
    assert tables.paper_value("table5", "VSPP", "NP") == pytest.approx(0.90)
    assert tables.paper_value("table5", "VSPP", "MTL-AQA") is None
    assert tables.paper_value("table6", "PECoP", "Hand movement") == pytest.approx(0.5537)
    assert tables.paper_value("switches", "official", "MTL-AQA") is None


def test_comparison_table_averages_like_the_paper():
    results = [ablation_result("table5", label, task, 0, rho)
               for label, values in {"VSPP": (0.5, 0.6, 0.7), "RSPNet": (0.2, 0.3, 0.4)}.items()
               for task, rho in zip(("S", "NP", "KT"), values)]
    summary = tables.summarize(tables.seed_values(results))
    table = tables.comparison_table(summary, "table5", order=["VSPP", "RSPNet"]).set_index(["label", "task"])
    assert table.loc[("VSPP", "NP"), "ours"] == pytest.approx(60.0)
    assert table.loc[("VSPP", "NP"), "paper"] == pytest.approx(90.0)
    assert table.loc[("VSPP", "Avg"), "ours"] == pytest.approx(100 * fisher_z_mean([0.5, 0.6, 0.7]))
    assert table.loc[("VSPP", "Avg"), "paper"] == pytest.approx(100 * fisher_z_mean([0.88, 0.90, 0.88]))
    assert table.loc[("RSPNet", "S"), "ours - paper"] == pytest.approx(20.0 - 83.0)
    pd4t = [ablation_result("table6", "PECoP", task, 0, rho) for task, rho in (("Gait", 0.4), ("Leg agility", 0.6))]
    t6 = tables.comparison_table(tables.summarize(tables.seed_values(pd4t)), "table6").set_index(["label", "task"])
    assert t6.loc[("PECoP", "Avg"), "ours"] == pytest.approx(50.0)  # arithmetic over PD4T tasks
    assert t6.loc[("PECoP", "Avg"), "paper"] == pytest.approx((79.11 + 52.56) / 2)


def _fig5(values: dict[str, list[float]], task: str = "MTL-AQA") -> list:
    return [ablation_result("fig5", label, task, seed, rho) for label, rhos in values.items()
            for seed, rho in enumerate(rhos)]


def test_verdicts_are_computed_from_the_numbers():
    results = _fig5({"Dom-G": [0.50, 0.52, 0.54], "Dom-S": [0.60, 0.61, 0.62], "HPT+BN": [0.40, 0.45, 0.50],
                     "HPT": [0.70, 0.71, 0.72], "PECoP": [0.51, 0.53, 0.55]})
    summary = tables.summarize(tables.seed_values(results))
    verdicts = {(v.source, v.better, v.worse): v for v in study_verdicts.check_paper(summary, "fig5")}
    # Table 1: CoRe 95.12 > CoRe + HPT 94.26, ours HPT (0.71) > Dom-G (0.52) by far more than the spread
    v = verdicts[("Table 1", "Dom-G", "HPT")]
    assert v.status == "disagrees" and v.clear and v.paper_margin == pytest.approx(0.0086)
    assert v.ours_margin == pytest.approx(0.52 - 0.71)
    # PECoP 0.53 vs Dom-G 0.52: agrees, but within the spread (std 0.02 each)
    v = verdicts[("Table 1", "PECoP", "Dom-G")]
    assert v.status == "agrees" and not v.clear and v.spread == pytest.approx(0.02)
    assert verdicts[("Fig. 5 text", "Dom-G", "Dom-S")].status == "disagrees"
    assert verdicts[("Fig. 5 text", "PECoP", "HPT+BN")].status == "agrees"
    assert ("Fig. 5 text", "Dom-G", "HPT+BN") not in verdicts  # stated for JIGSAWS only
    facts = study_verdicts.run_facts(results, preset="tutorial", synthetic=True)
    assert (facts.seeds, facts.test_videos, facts.folds) == (3, 4, None)
    text = study_verdicts.verdict_text(list(verdicts.values()), facts, title="Fig. 5")
    agree = sum(v.status == "agrees" for v in verdicts.values())
    disagree = sum(v.status == "disagrees" for v in verdicts.values())
    assert f"**agree with {agree}**" in text and f"**disagree with {disagree}**" in text
    assert "Dom-G > HPT (paper +0.9; ours -19.0, larger than the seed spread)" in text
    assert "one seed" not in text.lower() and "smoke" not in text and "synthetic" in text


def test_reasons_follow_the_facts():
    facts = study_verdicts.RunFacts(preset="smoke", synthetic=False, seeds=1, epochs=1, official_epochs=200, folds=1,
                            test_videos=4, ci_half_width=0.4, diverged=("all paper (core/MTL-AQA, seed 0)",))
    text = " ".join(study_verdicts.reasons(facts))
    for part in ("**smoke**", "**one seed**", "**4 videos**", "+/-0.40", "**1 epoch**", "200", "**1 of the 4**",
                 "1 run(s) **diverged**", "all paper (core/MTL-AQA, seed 0)"):
        assert part in text
    assert "synthetic" not in text
    quiet = study_verdicts.RunFacts(preset="paper", synthetic=False, seeds=3, epochs=200, official_epochs=200, folds=4,
                            test_videos=300, ci_half_width=float("nan"))
    assert study_verdicts.reasons(quiet) == ["A test split holds about **300 videos**."]


def test_tie_and_not_measured():
    results = _fig5({"Dom-G": [0.5], "PECoP": [0.5]}) + [ablation_result("fig5", "HPT", "MTL-AQA", 0, 0, error="x")]
    summary = tables.summarize(tables.seed_values(results))
    statuses = {(v.better, v.worse): v.status for v in study_verdicts.check_paper(summary, "fig5") if v.source == "Table 1"}
    assert statuses == {("Dom-G", "HPT"): "not measured", ("PECoP", "Dom-G"): "tie", ("PECoP", "HPT"): "not measured"}


def test_cost_table_and_text():
    results = [ablation_result("fig5", "HPT", "MTL-AQA", 0, 0.5, strategy="hpt", costs=cost("HPT", 12_000_000, 48_000_000, 8, 4.0)),
               ablation_result("fig5", "PECoP", "MTL-AQA", 0, 0.5, costs=cost("PECoP", 1_000_000, 4_000_000, 8, 3.0)),
               ablation_result("fig5", "PECoP", "MTL-AQA", 1, 0.5, costs=cost("PECoP", 5, 5))]  # only the first counts
    table = tables.cost_table(results)
    assert list(table["strategy"]) == ["HPT", "PECoP"]
    assert table.set_index("strategy").loc["PECoP", "stored_MB"] == pytest.approx(4.0)
    assert table.set_index("strategy").loc["HPT", "paper_trainable_params"] == pytest.approx(13e6)
    text = tables.cost_text(table)
    assert "**12.0x** less for PECoP" in text and "is 13.0x: ours agrees with the paper" in text
    assert "HPT 8, PECoP 8 here" in text and "the paper: 16 and 8: a configuration choice" in text
    assert "HPT 4.00 s, PECoP 3.00 s (1.33x)" in text
    assert "missing" in tables.cost_text(table[table["strategy"] == "PECoP"])
    assert tables.cost_ratios(table) == {"trainable_params": 12.0, "stored_bytes": 12.0}
    assert all(math.isnan(v) for v in tables.cost_ratios(table[table["strategy"] == "HPT"]).values())


def test_switch_table_and_text():
    results = [ablation_result("switches", "official", "MTL-AQA", s, r) for s, r in enumerate((0.5, 0.6))]
    results += [ablation_result("switches", "paper sampler", "MTL-AQA", s, r) for s, r in enumerate((0.7, 0.8))]
    results += [ablation_result("switches", "all paper", "MTL-AQA", 0, 0, error="pretraining: nan")]
    summary = tables.summarize(tables.seed_values(results))
    table = study_verdicts.switch_table(summary).set_index("variant")
    assert table.loc["paper sampler", "minus official"] == pytest.approx(20.0)
    assert table.loc["paper sampler", "settings"] == "vspp_mode=paper"
    assert table.loc["all paper", "seeds"] == "0 (+1 nan)"
    text = study_verdicts.switch_text(summary)
    assert "paper sampler (MTL-AQA) raises rho by 20.0 points against the official settings (larger than the seed " \
           "spread)" in text
    assert "all paper (MTL-AQA): not measured" in text
    assert "No switch ablation" in study_verdicts.switch_text(summary[summary["study"] == "none"])


def test_prediction_frame_spread_and_distributions():
    dist = np.eye(3)[[0, 1]][:, None, :]  # two kept videos, one path, three bins
    usdl = ablation_result("usdl", "PECoP", "MTL-AQA", 0, 0.8, pred=(2.0, 2.0, 3.0, 5.0), distributions=dist,
                           targets=[[1.0], [2.0]])
    frame = explorer.prediction_frame([usdl, ablation_result("fig5", "Dom-G", "MTL-AQA", 0, 0, error="x")])
    assert list(frame["video"]) == ["a", "b", "c", "d"] and list(frame["pred"]) == [2.0, 2.0, 3.0, 5.0]
    spread = explorer.spread_table(frame).iloc[0]
    assert spread["bias"] == pytest.approx(0.5) and spread["std_ratio"] == pytest.approx(np.std([2, 2, 3, 5]) / np.std([1, 2, 3, 4]))
    kept, targets = explorer.distribution_of(usdl, "b")
    assert kept.tolist() == [[0.0, 1.0, 0.0]] and targets.tolist() == [2.0]
    assert explorer.distribution_of(usdl, "c") is None  # only the first videos keep their distribution
    assert explorer.distribution_of(usdl, "zz") is None


def test_collect_results_reads_result_files(tmp_path):
    result = finetune_result(Setting("core", "JIGSAWS", "Knot_Tying", 2), 0.7, label="PECoP")
    folder = tmp_path / "05_finetune_core" / "runs" / "PECoP" / "core-JIGSAWS"
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps(result_to_json(result, {"seed": 3})))
    found = tables.collect_results(tmp_path, "notebook 05")
    assert len(found) == 1
    run = found[0].run
    assert (run.study, run.label, run.task, run.seed, run.setting.fold) == ("notebook 05", "PECoP", "KT", 3, 2)
    assert found[0].rho() == pytest.approx(0.7)
    (folder / "result.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match=r"result.json: not a fine-tuning result"):
        tables.collect_results(tmp_path, "notebook 05")


def test_divergence_is_reported_not_raised(monkeypatch):
    def diverge(*args, **kwargs):
        raise NonFiniteLossError("non-finite loss nan at epoch 1/1; training stopped")

    monkeypatch.setattr(ablations, "pretrained_backbone", diverge)
    monkeypatch.setattr(ablations, "data_roots", lambda cfg, data_root=None: (data_root, None))
    lines: list[str] = []
    cfg = pecop_lib.resolve("smoke", device="cpu")
    done = run_ablation(cfg, switch_runs_all_paper(), data_root="/nowhere", log=lines.append)
    assert done[0].error.startswith("pretraining: non-finite loss") and math.isnan(done[0].rho())
    assert "diverged: pretraining: non-finite loss nan at epoch 1/1" in lines[0]
    values = tables.seed_values(done)
    assert values["diverged"].tolist() == [1]


def switch_runs_all_paper() -> list[AblationRun]:
    return [ablations.switch_runs("MTL-AQA", [0], mode="combined")[-1]]


# ------------------------------------------------------------------------- load-or-train (slow)


@pytest.mark.slow
def test_run_ablation_trains_once_then_loads(tmp_path_factory, tmp_path, monkeypatch):
    world = tiny_world(tmp_path_factory.getbasetemp())
    monkeypatch.setenv("PECOP_CACHE_DIR", str(tmp_path / "cache"))
    cfg = pecop_lib.resolve("smoke", device="cpu", pretrain_general_epochs=1, finetune_bootstrap=0)
    runs = strategy_runs(["MTL-AQA"], [0], strategies=["dom_g", "pecop"])
    first = run_ablation(cfg, runs, data_root=world.root, log=None,
                         execution=RunContext.from_config(cfg, show_progress=False))
    assert [r.cached for r in first] == [False, False] and all(r.error is None for r in first)
    for r in first:
        assert (r.run_dir / "result.json").is_file()
        assert not (r.run_dir / EXPORT_DIR).exists()  # a study's grid keeps results, not exported models
        assert r.run_dir.is_relative_to(tmp_path / "cache" / "ablations")
        assert f"seed{r.run.seed}" in r.run_dir.parts and r.run.strategy in r.run_dir.parts
        assert len(r.result.epochs) == 1  # ablation_finetune_epochs of the smoke preset
    assert first[1].pretrain["trainable_params"] < first[1].pretrain["stored_bytes"]  # PECoP: adapters only
    assert first[0].pretrain["trainable_params"] == 0 and first[0].pretrain["epochs"] == 0  # Dom-G trains nothing
    second = run_ablation(cfg, runs, data_root=world.root, log=None,
                          execution=RunContext.from_config(cfg, show_progress=False))
    assert [r.cached for r in second] == [True, True]
    for a, b in zip(first, second, strict=True):
        assert a.result.predictions("official").tolist() == b.result.predictions("official").tolist()
    other_seed = run_ablation(cfg, strategy_runs(["MTL-AQA"], [1], strategies=["dom_g"]), data_root=world.root,
                              log=None, execution=RunContext.from_config(cfg, show_progress=False))
    assert not other_seed[0].cached and other_seed[0].run_dir != first[0].run_dir
    frame = explorer.prediction_frame(first)
    assert set(frame["label"]) == {"Dom-G", "PECoP"} and frame["true"].notna().all()
    assert isinstance(tables.summarize(tables.seed_values(first)), pd.DataFrame)
