"""scripts/gpu_tutorial.py without a GPU: metric lookup and bounds, the budgeted sequence on small
fixture notebooks (ok, failing, over budget, skipped), and the record files."""

from __future__ import annotations

import importlib.util
import json
import math
import sys

import pytest
from conftest import REPO_ROOT
from test_notebooks import write_notebook

from pecop_lib import run_record

spec = importlib.util.spec_from_file_location("gpu_tutorial", REPO_ROOT / "scripts" / "gpu_tutorial.py")
gpu_tutorial = importlib.util.module_from_spec(spec)
sys.modules["gpu_tutorial"] = gpu_tutorial
spec.loader.exec_module(gpu_tutorial)


def test_lookup_expands_wildcards_over_mappings_and_lists():
    metrics = {"runs": {"a b/c": {"rho": 0.5}, "d": {"rho": None}}, "spread": [{"rho": 0.1}, {"rho": 0.2}], "x": 3}
    assert run_record.lookup(metrics, "runs.*.rho") == [("runs.a b/c.rho", 0.5), ("runs.d.rho", None)]
    assert run_record.lookup(metrics, "spread.*.rho") == [("spread.0.rho", 0.1), ("spread.1.rho", 0.2)]
    assert run_record.lookup(metrics, "x") == [("x", 3)]
    assert run_record.lookup(metrics, "runs.zz.rho") == []


def test_bounds_fail_on_missing_non_finite_and_out_of_range():
    bounds = (run_record.Bound("07", "r.*", 0, 1, "in [0, 1]", ("smoke",)),
              run_record.Bound("07", "gone", 0, 1, "missing", ("smoke",)),
              run_record.Bound("07", "flag", 1, 1, "true", ("smoke",)),
              run_record.Bound("07", "r.*", 5, 6, "tutorial only"))
    checks = run_record.check_metrics("07", {"r": {"a": 0.5, "b": None, "c": 2.0}, "flag": True}, "smoke", bounds)
    assert [(c.path, c.ok) for c in checks] == [("r.a", True), ("r.b", False), ("r.c", False), ("gone", False),
                                                ("flag", True)]
    assert checks[3].value == "missing"


def test_every_bound_names_an_existing_notebook_and_a_valid_range():
    numbers = {p.name[:2] for p in (REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    for bound in gpu_tutorial.BOUNDS:
        assert bound.notebook in numbers and bound.low <= bound.high and bound.why
        assert set(bound.presets) <= {"smoke", "tutorial", "paper"}


METRICS = "import pecop_lib\npecop_lib.write_metrics(OUT_DIR, {'videos': 3, 'seed': SEED}, preset=PRESET)"
FIG5 = ("import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\nfig = plt.figure()\n"
        "pecop_lib.save_figure(fig, OUT_DIR, 'fig5_strategies')")


@pytest.mark.slow
def test_sequence_writes_a_record(tmp_path, monkeypatch):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    write_notebook(nbs, "00_fine.ipynb", METRICS)
    write_notebook(nbs, "07_ablations.ipynb", METRICS, FIG5)
    write_notebook(nbs, "08_score_distributions.ipynb", METRICS, "raise ValueError('broken on purpose')")
    bounds = (gpu_tutorial.Bound("00", "videos", 1, math.inf, "videos", ("smoke",)),
              gpu_tutorial.Bound("08", "videos", 1, 10, "videos", ("smoke",)),
              gpu_tutorial.Bound("07", "videos", 5, 10, "fails on purpose", ("smoke",)))
    monkeypatch.setattr(gpu_tutorial, "BOUNDS", bounds)
    record_dir, copy = tmp_path / "record", tmp_path / "out"
    status = gpu_tutorial.main(["--preset", "smoke", "--device", "cpu", "--notebooks-dir", str(nbs), "--only", "07",
                                "00", "08", "--budget-s", "900", "--work", str(tmp_path / "work"),
                                "--record", str(record_dir), "--copy-to", str(copy)])
    assert status == 1
    record = json.loads((record_dir / "record.json").read_text())
    assert record["status"] == "partial" and record["preset"] == "smoke" and record["device"] == "cpu"
    assert record["device_name"].startswith("CPU") and record["budget_s"] == 900
    states = {nb["name"]: nb["status"] for nb in record["notebooks"]}
    assert states == {"07_ablations": "ok", "00_fine": "ok", "08_score_distributions": "failed"}
    assert list(states) == ["07_ablations", "00_fine", "08_score_distributions"]  # the order given
    assert "broken on purpose" in record["notebooks"][2]["error"]
    checks = [(c["notebook"], c["path"], c["ok"], c["high"]) for nb in record["notebooks"] for c in nb["checks"]]
    assert checks == [("07", "videos", False, 10), ("00", "videos", True, None)]  # 08 failed before its metrics
    assert record["checks_failed"] == 1 and all(nb["wall_s"] > 0 for nb in record["notebooks"])
    metrics = json.loads((record_dir / "metrics.json").read_text())
    assert set(metrics) == {"07_ablations", "00_fine"} and metrics["00_fine"]["videos"] == 3
    manifest = json.loads((record_dir / "manifest.json").read_text())
    assert [n["name"] for n in manifest["notebooks"]] == ["07_ablations", "00_fine", "08_score_distributions"]
    summary = (record_dir / "summary.md").read_text()
    assert "# GPU tutorial run: partial" in summary and "| 07 `videos` | 3 | [5, 10] | **no** |" in summary
    assert "| 00 `videos` | 3 | [1, inf] | yes |" in summary
    assert (record_dir / "fig5_strategies.png").stat().st_size > 0
    assert sorted(p.name for p in copy.iterdir()) == sorted(gpu_tutorial.RECORD_FILES)


def test_budget_stops_a_notebook_and_skips_the_rest(tmp_path, monkeypatch):
    """A fake runner and clock: each notebook costs 100 s; the runner stops one whose cell limit is shorter."""
    clock = {"now": 0.0}
    limits = []
    cost = {"00_a": 100.0, "01_b": 100.0, "02_c": 100.0, "03_d": 100.0}

    def fake_run(preset, *, only, device, out, notebooks_dir, cell_timeout, progress, log_output):
        name = only[0]
        limits.append(cell_timeout)
        timed_out = cost[name] > cell_timeout
        clock["now"] += min(cost[name], cell_timeout)
        out.mkdir(parents=True, exist_ok=True)
        status = "timeout" if timed_out else "ok"
        (out / "manifest.json").write_text(json.dumps({"environment": {"device": "cpu"}, "notebooks": [
            {"name": name, "status": status}]}))
        if timed_out:
            raise gpu_tutorial.NotebookRunError(f"notebook {name} timed out", notebook=name, cell=2,
                                                output_path=out / f"{name}.ipynb", timed_out=True)
        (out / name).mkdir()
        (out / name / "metrics.json").write_text(json.dumps({"preset": preset}))
        return type("Report", (), {"notebooks": [type("R", (), {"status": "ok"})()]})()

    for name in cost:
        write_notebook(tmp_path, f"{name}.ipynb", METRICS)
    monkeypatch.setattr(gpu_tutorial, "run_notebooks", fake_run)
    monkeypatch.setattr(gpu_tutorial.time, "monotonic", lambda: clock["now"])
    results, manifest, metrics = gpu_tutorial.run_sequence("smoke", "cpu", None, tmp_path / "work", 215.0,
                                                           notebooks_dir=tmp_path)
    assert [(r.name, r.status) for r in results] == [("00_a", "ok"), ("01_b", "ok"), ("02_c", "skipped"),
                                                     ("03_d", "skipped")]
    assert limits == [215, 115]
    assert results[2].error == "budget: 15 s left" and set(metrics) == {"00_a", "01_b"}
    clock["now"] = 0.0
    limits.clear()
    results, _, _ = gpu_tutorial.run_sequence("smoke", "cpu", ["01", "00"], tmp_path / "work2", 150.0,
                                              notebooks_dir=tmp_path)
    assert [(r.name, r.status) for r in results] == [("01_b", "ok"), ("00_a", "timeout")] and limits == [150, 50]
    assert "timed out" in results[1].error and manifest["wall_s"] == 200.0


def test_cuda_without_gpu_is_refused(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert gpu_tutorial.main(["--record", str(tmp_path / "r"), "--work", str(tmp_path / "w")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert math.isfinite(gpu_tutorial.MIN_NOTEBOOK_BUDGET_S)
