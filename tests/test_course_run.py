"""scripts/course_run.py without the real sequence: the checker on constructed metrics, the disk walker,
``--check-only`` on a constructed work folder and its record, and one run of fixture notebooks."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import pytest
from conftest import REPO_ROOT
from test_notebooks import write_notebook

from pecop_lib.config import COURSE_NOTICE

spec = importlib.util.spec_from_file_location("course_run", REPO_ROOT / "scripts" / "course_run.py")
course_run = importlib.util.module_from_spec(spec)
sys.modules["course_run"] = course_run
spec.loader.exec_module(course_run)

STEMS = ("00_overview", "01_dataset_exploration", "02_adapter_architecture", "03_vspp_pretraining",
         "04_finetune_usdl_musdl", "05_finetune_core", "06_finetune_tsa", "07_ablations", "08_score_distributions")
TASKS = ("MTL-AQA", "Gait")


def entry(rho, ci_low, ci_high, baseline_rho, head="CoRe + PECoP"):
    return {"head": head, "rho": rho, "ci_low": ci_low, "ci_high": ci_high, "baseline": "mean score",
            "baseline_rho": baseline_rho, "margin": ci_low - baseline_rho}


def manifest(wall_s=100.0, stems=STEMS):
    return {"preset": "course", "notebooks": [{"name": s, "status": "ok", "wall_s": wall_s} for s in stems]}


def passing_metrics():
    metrics = {s: {"preset": "course", "notice": COURSE_NOTICE} for s in STEMS}
    metrics["03_vspp_pretraining"] |= {"stage1": {"val_acc": 0.8},
                                       "stage2_heldout_check": {"segment_acc": 0.75, "speed_acc": 0.5}}
    metrics["04_finetune_usdl_musdl"]["beats_baseline"] = {"MTL-AQA": entry(0.5, 0.3, 0.6, 0.4, "USDL"),
                                                           "Gait": entry(0.6, 0.45, 0.7, 0.2, "MUSDL")}
    metrics["05_finetune_core"]["beats_baseline"] = {"MTL-AQA": entry(0.7, 0.55, 0.8, 0.4)}
    metrics["07_ablations"] |= {
        "fig5_cells": {t: {s: {"n": 3, "mean": 0.5, "ci_low": 0.4, "ci_high": 0.6}
                           for s in course_run.FIG5_STRATEGIES} for t in TASKS},
        "fig5_verdicts": {t: {k: "PECoP is within the interval" for k in course_run.FIG5_VERDICTS} for t in TASKS},
    }
    return metrics


def run_checks(metrics, runner=None, smoke_wall_s=300.0, disk_bytes=10**9):
    return course_run.course_checks(runner or manifest(), metrics, smoke_wall_s=smoke_wall_s, smoke_source="test",
                                    disk_bytes=disk_bytes)


def failed(checks):
    return [(c.notebook, c.path) for c in checks if not c.ok]


def test_a_complete_passing_set_passes():
    checks = run_checks(passing_metrics())
    assert failed(checks) == []
    paths = {c.path: c for c in checks}
    assert {"stage1.val_acc", "stage2_heldout_check.speed_acc", "fig5_cells.Gait.HPT+BN.n", "course.wall_s",
            "course.wall_s / smoke.wall_s", "disk.bytes", "fig5_verdicts.MTL-AQA.PECoP vs HPT"} <= set(paths)
    assert len([c for c in checks if c.path == "notice"]) == len(STEMS)
    best = paths["beats_baseline.MTL-AQA"]
    assert best.value == pytest.approx(0.15) and best.note.startswith("best: 05_finetune_core CoRe + PECoP")
    assert paths["course.wall_s"].value == 900 and paths["course.wall_s / smoke.wall_s"].value == 3.0


def _concrete_bounds():
    metrics = passing_metrics()
    return course_run.expand_bounds(course_run.BOUNDS, course_run.fig5_tasks(metrics["07_ablations"]))


@pytest.mark.parametrize("bound", _concrete_bounds(), ids=lambda b: f"{b.notebook}:{b.path}")
def test_removing_one_bounds_value_fails_exactly_that_check(bound):
    metrics = passing_metrics()
    stem = next(s for s in STEMS if s.startswith(bound.notebook))
    *parents, leaf = bound.path.split(".")
    node = metrics[stem]
    for part in parents:
        node = node[part]
    del node[leaf]
    checks = run_checks(metrics)
    assert failed(checks) == [(bound.notebook, bound.path)]
    assert next(c for c in checks if c.path == bound.path).value == "missing"


def test_a_dataset_with_only_negative_margins_fails_the_aggregate():
    metrics = passing_metrics()
    metrics["06_finetune_tsa"]["beats_baseline"] = {"FineDiving": entry(0.4, 0.1, 0.5, 0.3, "TSA")}
    checks = run_checks(metrics)
    assert failed(checks) == [("04-07", "beats_baseline.FineDiving")]
    assert next(c for c in checks if c.path == "beats_baseline.FineDiving").value == pytest.approx(-0.2)


def test_a_margin_that_is_not_ci_low_minus_baseline_does_not_count():
    metrics = passing_metrics()
    metrics["04_finetune_usdl_musdl"]["beats_baseline"]["Gait"]["margin"] = 0.9  # ci_low 0.45 - 0.2 = 0.25
    metrics["04_finetune_usdl_musdl"]["beats_baseline"]["Gait"]["ci_low"] = None
    check = next(c for c in run_checks(metrics) if c.path == "beats_baseline.Gait")
    assert not check.ok and check.value == "missing" and "ci_low not finite" in check.note


def test_no_beats_baseline_anywhere_fails():
    metrics = passing_metrics()
    for stem in STEMS:
        metrics[stem].pop("beats_baseline", None)
    assert failed(run_checks(metrics)) == [("04-07", "beats_baseline")]


def test_two_seeds_instead_of_three_fail():
    metrics = passing_metrics()
    metrics["07_ablations"]["fig5_cells"]["Gait"]["PECoP"]["n"] = 2
    assert failed(run_checks(metrics)) == [("07", "fig5_cells.Gait.PECoP.n")]


def test_a_missing_pd4t_task_fails():
    metrics = passing_metrics()
    fig5 = metrics["07_ablations"]
    fig5["fig5_cells"]["FineDiving"] = fig5["fig5_cells"].pop("Gait")
    fig5["fig5_verdicts"]["FineDiving"] = fig5["fig5_verdicts"].pop("Gait")
    assert failed(run_checks(metrics)) == [("07", "fig5_cells (PD4T task)")]


def test_one_task_a_missing_strategy_and_a_missing_verdict_fail():
    metrics = passing_metrics()
    fig5 = metrics["07_ablations"]
    del fig5["fig5_cells"]["Gait"], fig5["fig5_verdicts"]["Gait"]
    del fig5["fig5_cells"]["MTL-AQA"]["HPT"]["n"]
    fig5["fig5_cells"]["MTL-AQA"].pop("Dom-S")
    fig5["fig5_verdicts"]["MTL-AQA"]["PECoP vs Dom-G"] = " "
    assert set(failed(run_checks(metrics))) == {
        ("07", "fig5_cells (tasks)"), ("07", "fig5_cells (PD4T task)"), ("07", "fig5_cells.MTL-AQA"),
        ("07", "fig5_verdicts.MTL-AQA.PECoP vs Dom-G"), ("07", "fig5_cells.MTL-AQA.HPT.n"),
        *(("07", f"fig5_cells.MTL-AQA.Dom-S.{k}") for k in ("n", "mean", "ci_low", "ci_high"))}


def test_wrong_notice_fails():
    metrics = passing_metrics()
    metrics["05_finetune_core"]["notice"] = "smoke run"
    assert failed(run_checks(metrics)) == [("05", "notice")]


def test_time_over_2700_s_fails():
    checks = run_checks(passing_metrics(), runner=manifest(wall_s=301.0))  # 9 x 301 = 2709 s, ratio 9.03
    assert failed(checks) == [("run", "course.wall_s")]


def test_a_course_more_than_ten_smoke_sequences_fails():
    assert failed(run_checks(passing_metrics(), smoke_wall_s=89.0)) == [("run", "course.wall_s / smoke.wall_s")]


def test_an_unmeasured_smoke_sequence_fails():
    check = run_checks(passing_metrics(), smoke_wall_s=None)[-2]
    assert (check.path, check.value, check.ok, check.note) == ("course.wall_s / smoke.wall_s", "not measured",
                                                               False, "test")


def test_a_notebook_that_did_not_run_fails_the_sequence_and_its_checks():
    runner = manifest()
    runner["notebooks"][3] |= {"status": "failed", "error": "notebook 03 failed in cell 4\nTraceback"}
    metrics = passing_metrics()
    del metrics["03_vspp_pretraining"]
    assert failed(run_checks(metrics, runner=runner)) == [
        ("run", "course.notebooks"), ("03", "stage1.val_acc"), ("03", "stage2_heldout_check.segment_acc"),
        ("03", "stage2_heldout_check.speed_acc"), ("03", "notice"), ("run", "course.wall_s"),
        ("run", "course.wall_s / smoke.wall_s")]


def test_disk_over_2e9_fails():
    assert failed(run_checks(passing_metrics(), disk_bytes=2 * 10**9 + 1)) == [("run", "disk.bytes")]
    assert failed(run_checks(passing_metrics(), disk_bytes=None)) == [("run", "disk.bytes")]


def test_disk_walker_counts_a_file_once_and_skips_symlinks(tmp_path):
    a, b, outside = tmp_path / "a", tmp_path / "b" / "sub", tmp_path / "outside"
    for folder in (a, b, outside):
        folder.mkdir(parents=True)
    (a / "f1").write_bytes(b"x" * 10)
    os.link(a / "f1", a / "hard")
    os.link(a / "f1", b / "hard-across-roots")
    (b / "f2").write_bytes(b"y" * 5)
    (outside / "big").write_bytes(b"z" * 1000)
    (a / "file-link").symlink_to(outside / "big")
    (a / "dir-link").symlink_to(outside, target_is_directory=True)
    (tmp_path / "root-link").symlink_to(outside, target_is_directory=True)
    assert course_run.tree_bytes(a, tmp_path / "b", tmp_path / "missing", tmp_path / "root-link") == 15
    assert course_run.tree_bytes(outside) == 1000


# --- the record from a constructed work folder -------------------------------------------------

def write_work(work, metrics, *, smoke_ran=True):
    """A finished run's work folder: manifests, metrics, Fig. 5, a cache file and invocation.json."""
    course = work / "course"
    course.mkdir(parents=True)
    (course / "manifest.json").write_text(json.dumps(manifest()))
    for stem, values in metrics.items():
        (course / stem).mkdir()
        (course / stem / "metrics.json").write_text(json.dumps(values))
    (course / "07_ablations" / "figures").mkdir()
    (course / "07_ablations" / "figures" / "fig5_strategies.png").write_bytes(b"png")
    (work / "course-cache").mkdir()
    (work / "course-cache" / "world.bin").write_bytes(b"w" * 100)
    (work / "smoke").mkdir()
    (work / "smoke" / "manifest.json").write_text(json.dumps(manifest(wall_s=30.0)))
    (work / "invocation.json").write_text(json.dumps({
        "machine": {"hostname": "box", "cpus_usable": 2, "python": "3.12.3", "torch": "2.5.1",
                    "load_start": [1.5, 1.2, 1.0], "load_end": [2.0, 1.8, 1.4]},
        "commit": {"commit": "abc123", "dirty": False},
        "smoke": {"ran": smoke_ran, "outer_wall_s": 280.0},
        "course": {"outer_wall_s": 905.0, "cache_empty": True, "reuse_cache": False}}))


def test_check_only_on_a_work_folder_writes_the_record(tmp_path, capsys):
    work, record_dir = tmp_path / "work", tmp_path / "record"
    write_work(work, passing_metrics())
    (record_dir).mkdir()
    (record_dir / "smoke_manifest.json").write_text("{}")  # an earlier record's file goes
    assert course_run.main(["--check-only", str(work), "--record", str(record_dir)]) == 0
    assert sorted(p.name for p in record_dir.iterdir()) == sorted(course_run.RECORD_FILES)
    record = json.loads((record_dir / "record.json").read_text())
    assert record["status"] == "complete" and record["checks_failed"] == 0
    course_bytes = sum(p.stat().st_size for p in (work / "course").rglob("*") if p.is_file())
    assert record["disk_bytes"] == 100 + course_bytes
    assert record["course"]["wall_s"] == 900 and record["smoke"]["wall_s"] == 270
    assert record["invocation"]["machine"]["load_end"] == [2.0, 1.8, 1.4]
    ratio = next(c for c in record["checks"] if c["path"] == "course.wall_s / smoke.wall_s")
    assert ratio["value"] == pytest.approx(900 / 270, abs=1e-3) and "same invocation" in ratio["note"]
    assert json.loads((record_dir / "metrics.json").read_text()) == passing_metrics()
    assert json.loads((record_dir / "smoke_manifest.json").read_text()) == manifest(wall_s=30.0)
    assert (record_dir / "fig5_strategies.png").read_bytes() == b"png"
    summary = (record_dir / "summary.md").read_text()
    assert "# Course CPU run: complete" in summary and "| 03_vspp_pretraining | ok | 100.0 | ok | 30.0 |" in summary
    assert "| **total** | | 900.0 | | 270.0 |" in summary and "load 1.50 1.20 1.00 → 2.00 1.80 1.40" in summary
    assert "| 03 `stage1.val_acc` | 0.8 | [0.5, 1] | yes |" in summary
    assert "| 07 `fig5_cells (PD4T task)` | Gait | one of Gait, Finger tapping, Hand movement, Leg agility | yes |" \
        in summary
    assert f"record in {record_dir} (complete, 0 failed check(s))" in capsys.readouterr().out

    again = tmp_path / "again"  # the record folder itself can be re-checked
    assert course_run.main(["--check-only", str(record_dir), "--record", str(again)]) == 0
    rechecked = json.loads((again / "record.json").read_text())
    assert rechecked["checks"] == record["checks"] and (again / "smoke_manifest.json").is_file()


def test_check_only_without_a_smoke_sequence_of_the_same_invocation(tmp_path, capsys):
    work, record_dir = tmp_path / "work", tmp_path / "record"
    write_work(work, passing_metrics(), smoke_ran=False)
    assert course_run.main(["--check-only", str(work), "--record", str(record_dir)]) == 1
    out = capsys.readouterr().out
    assert "1 failed check(s)" in out and "FAILED run course.wall_s / smoke.wall_s: not measured" in out
    assert not (record_dir / "smoke_manifest.json").exists()
    assert "# Course CPU run: failed" in (record_dir / "summary.md").read_text()
    assert course_run.main(["--check-only", str(work), "--record", str(record_dir), "--smoke-wall-s", "120"]) == 0
    record = json.loads((record_dir / "record.json").read_text())
    assert record["smoke"] is None and record["status"] == "complete"


def test_check_only_on_a_folder_that_is_neither(tmp_path, capsys):
    assert course_run.main(["--check-only", str(tmp_path), "--record", str(tmp_path / "r")]) == 2
    assert "neither" in capsys.readouterr().err


def test_a_non_empty_course_cache_is_refused(tmp_path, capsys):
    (tmp_path / "w" / "course-cache").mkdir(parents=True)
    (tmp_path / "w" / "course-cache" / "old").write_text("x")
    assert course_run.main(["--work", str(tmp_path / "w"), "--record", str(tmp_path / "r")]) == 2
    assert "--reuse-cache" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["course-cache"] and not (tmp_path / "r").exists()


ENV_METRICS = ("import os, pecop_lib\npecop_lib.write_metrics(OUT_DIR, {'cache': os.environ.get('PECOP_CACHE_DIR')}, "
               "preset=PRESET)")


@pytest.mark.slow
def test_a_run_of_fixture_notebooks_sets_each_sequence_cache(tmp_path):
    nbs, work, record_dir = tmp_path / "nbs", tmp_path / "work", tmp_path / "record"
    nbs.mkdir()
    write_notebook(nbs, "00_env.ipynb", ENV_METRICS)
    (work / "smoke").mkdir(parents=True)
    (work / "smoke" / "stale.txt").write_text("from an earlier run")
    status = course_run.main(["--work", str(work), "--record", str(record_dir), "--notebooks-dir", str(nbs)])
    assert status == 1  # the fixture has none of the course metrics
    assert not (work / "smoke" / "stale.txt").exists()
    smoke = json.loads((work / "smoke" / "00_env" / "metrics.json").read_text())
    course = json.loads((work / "course" / "00_env" / "metrics.json").read_text())
    assert smoke["cache"] == str(work / "smoke-cache") and smoke["preset"] == "smoke"
    assert course["cache"] == str(work / "course-cache") and course["notice"] == COURSE_NOTICE
    assert os.environ.get("PECOP_CACHE_DIR") != str(work / "course-cache")  # restored afterwards
    record = json.loads((record_dir / "record.json").read_text())
    invocation = record["invocation"]
    assert invocation["smoke"]["ran"] and invocation["course"]["cache_empty"] and not invocation["course"]["reuse_cache"]
    assert len(invocation["machine"]["load_start"]) == 3 and len(invocation["machine"]["load_end"]) == 3
    assert invocation["machine"]["cpu_count"] >= 1 and invocation["machine"]["torch"]
    assert [nb["status"] for nb in record["course"]["notebooks"]] == ["ok"]
    assert [nb["status"] for nb in record["smoke"]["notebooks"]] == ["ok"]
    checks = {c["path"]: c for c in record["checks"]}
    assert checks["course.notebooks"]["ok"] and checks["notice"]["ok"] and checks["disk.bytes"]["ok"]
    assert checks["course.wall_s / smoke.wall_s"]["note"].endswith("smoke sequence of the same invocation")
    assert not checks["stage1.val_acc"]["ok"] and (record_dir / "smoke_manifest.json").is_file()
