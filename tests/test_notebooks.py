"""The notebook runner, and every committed notebook run headlessly in the smoke preset."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import REPO_ROOT
from nbformat.v4 import new_code_cell, new_notebook

from pecop_lib.config import SMOKE_NOTICE
from pecop_lib.notebooks import (
    RUNNER_PARAMETERS,
    NotebookParameterError,
    NotebookRunError,
    discover_notebooks,
    parse_parameter,
    run_notebooks,
)

NOTEBOOKS = discover_notebooks(REPO_ROOT / "notebooks")
STANDARD_PARAMETERS = (*RUNNER_PARAMETERS, "DATA_ROOT", "SEED")
PARAMS_CELL = 'PRESET = "smoke"\nDEVICE = "auto"\nDATA_ROOT = None\nOUT_DIR = "runs/x"\nSEED = 0\nINTERACTIVE = True'


def write_notebook(folder: Path, name: str, *bodies: str, params: str = PARAMS_CELL) -> Path:
    """Write a small notebook: a parameters cell, then one code cell per body."""
    cells = [new_code_cell(params, metadata={"tags": ["parameters"]})] + [new_code_cell(b) for b in bodies]
    nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                              "language": "python"}})
    path = folder / name
    nbformat.write(nb, path)
    return path


WRITE_METRICS = "import pecop_lib\npecop_lib.write_metrics(OUT_DIR, {'seed': SEED}, preset=PRESET)"


# --- hygiene of the committed notebooks -------------------------------------------------------

@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_is_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    for cell in code:
        assert not cell.outputs and cell.execution_count is None, f"{path.name} has outputs: strip them"
    assert "parameters" in code[0].metadata.get("tags", []), f"{path.name}: first code cell is not tagged parameters"
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1
    tree = ast.parse(code[0].source)
    names = []
    for stmt in tree.body:
        assert isinstance(stmt, ast.Assign) and len(stmt.targets) == 1, f"{path.name}: parameters cell must assign"
        ast.literal_eval(stmt.value)  # literals only: derived values belong in the next cell
        names.append(stmt.targets[0].id)
    missing = set(STANDARD_PARAMETERS) - set(names)
    assert not missing, f"{path.name} lacks the standard parameters {missing}"


def test_notebooks_are_numbered_uniquely():
    numbers = [p.name[:2] for p in NOTEBOOKS]
    assert numbers[0] == "00" and len(numbers) == len(set(numbers))


# --- the runner on small fixture notebooks ----------------------------------------------------

def test_runner_reports_raising_cell(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    write_notebook(nbs, "00_fine.ipynb", WRITE_METRICS)
    write_notebook(nbs, "01_broken.ipynb", "x = 1", "raise ValueError('deliberate failure')")
    write_notebook(nbs, "02_never.ipynb", WRITE_METRICS)
    out = tmp_path / "out"
    with pytest.raises(NotebookRunError, match=r"notebook 01_broken failed in cell 3 .*ValueError: deliberate failure") as err:
        run_notebooks("smoke", device="cpu", out=out, notebooks_dir=nbs, progress=False)
    assert err.value.notebook == "01_broken" and err.value.cell == 3  # cell 1 is papermill's injected cell
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert [(n["name"], n["status"]) for n in manifest["notebooks"]] == [
        ("00_fine", "ok"), ("01_broken", "failed"), ("02_never", "pending")]
    assert manifest["notebooks"][1]["failed_cell"] == 3
    assert (out / "01_broken.ipynb").exists()  # the failed notebook is kept for inspection
    assert not (out / "02_never.ipynb").exists()


def test_runner_reports_cell_timeout(tmp_path):
    write_notebook(tmp_path, "00_slow.ipynb", "x = 1", "import time\ntime.sleep(60)")
    with pytest.raises(NotebookRunError, match="notebook 00_slow timed out in cell 3") as err:
        run_notebooks("smoke", device="cpu", out=tmp_path / "out", notebooks_dir=tmp_path, cell_timeout=3,
                      progress=False)
    assert err.value.timed_out
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["notebooks"][0]["status"] == "timeout"


# What a kernel process writes to its own descriptors (C libraries' messages, e.g. libzmq's shutdown
# assertion seen on CI) is not cell output: it goes to <out>/<stem>.kernel.log, not the terminal.
WRITE_TO_FD2 = "import os\nos.write(2, b'native library says: hello from fd 2\\n')"


def test_kernel_process_output_goes_to_its_log_not_the_terminal(tmp_path, capfd):
    write_notebook(tmp_path, "00_noisy.ipynb", WRITE_TO_FD2, WRITE_METRICS)
    write_notebook(tmp_path, "01_quiet.ipynb", WRITE_METRICS)
    out = tmp_path / "out"
    (out).mkdir()
    (out / "01_quiet.kernel.log").write_text("left by an earlier run\n")
    report = run_notebooks("smoke", device="cpu", out=out, notebooks_dir=tmp_path, progress=False)
    captured = capfd.readouterr()
    assert "hello from fd 2" not in captured.out + captured.err
    noisy, quiet = report.notebooks
    assert noisy.kernel_log == str(out / "00_noisy.kernel.log")
    assert "native library says: hello from fd 2" in (out / "00_noisy.kernel.log").read_text()
    assert quiet.kernel_log is None and not (out / "01_quiet.kernel.log").exists()  # empty: removed
    manifest = json.loads((out / "manifest.json").read_text())
    assert [n["kernel_log"] for n in manifest["notebooks"]] == [noisy.kernel_log, None]


def test_dead_kernel_is_a_notebook_failure_that_quotes_the_kernel_log(tmp_path):
    # ipykernel forwards fd 2 through a pipe and a thread: give the thread a moment before the kill
    talks = WRITE_TO_FD2 + "\nimport time\ntime.sleep(1)"
    dies = "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"
    write_notebook(tmp_path, "00_dies.ipynb", talks, dies)
    out = tmp_path / "out"
    with pytest.raises(NotebookRunError, match=r"notebook 00_dies: its kernel died .*lack of memory") as err:
        run_notebooks("smoke", device="cpu", out=out, notebooks_dir=tmp_path, progress=False, cell_timeout=60)
    assert "native library says: hello from fd 2" in str(err.value)
    assert str(out / "00_dies.kernel.log") in str(err.value)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["notebooks"][0]["status"] == "failed"
    assert manifest["notebooks"][0]["kernel_log"] == str(out / "00_dies.kernel.log")


def test_runner_refuses_misspelled_parameter_before_running(tmp_path):
    write_notebook(tmp_path, "00_a.ipynb", WRITE_METRICS)
    with pytest.raises(NotebookParameterError, match=r"parameter 'SEDE' \(did you mean 'SEED'\?\) is not declared"):
        run_notebooks("smoke", device="cpu", out=tmp_path / "out", notebooks_dir=tmp_path,
                      parameters={"SEDE": 1}, progress=False)
    assert not (tmp_path / "out").exists()


def test_runner_refuses_notebook_without_runner_parameters(tmp_path):
    write_notebook(tmp_path, "00_a.ipynb", WRITE_METRICS, params='PRESET = "smoke"\nOUT_DIR = "x"')
    with pytest.raises(NotebookParameterError, match="parameter 'DEVICE' is not declared .* 00_a.ipynb"):
        run_notebooks("smoke", device="cpu", out=tmp_path / "out", notebooks_dir=tmp_path, progress=False)


def test_runner_requires_metrics(tmp_path):
    write_notebook(tmp_path, "00_quiet.ipynb", "x = 1")
    with pytest.raises(NotebookRunError, match="wrote no metrics.json"):
        run_notebooks("smoke", device="cpu", out=tmp_path / "out", notebooks_dir=tmp_path, progress=False)


def test_runner_injects_parameters_and_writes_manifest(tmp_path):
    write_notebook(tmp_path, "00_a.ipynb", WRITE_METRICS, "import os\nassert os.environ['PECOP_HEADLESS'] == '1'")
    write_notebook(tmp_path, "01_b.ipynb", WRITE_METRICS)
    report = run_notebooks("smoke", device="cpu", out=tmp_path / "out", notebooks_dir=tmp_path,
                           parameters={"SEED": 7}, only=["1"], progress=False)
    assert [n.name for n in report.notebooks] == ["01_b"]
    metrics = json.loads((tmp_path / "out" / "01_b" / "metrics.json").read_text())
    assert metrics == {"preset": "smoke", "notice": SMOKE_NOTICE, "seed": 7}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "ok" and manifest["preset"] == "smoke"
    assert manifest["parameters"]["SEED"] == 7
    for key in ("python", "packages", "torch_cuda_build", "device", "device_name", "git"):
        assert key in manifest["environment"]
    assert manifest["environment"]["packages"]["torch"]
    assert manifest["notebooks"][0]["wall_s"] > 0


def test_only_selector_errors(tmp_path):
    write_notebook(tmp_path, "00_a.ipynb", WRITE_METRICS)
    with pytest.raises(ValueError, match="--only '07' matches no notebook"):
        discover_notebooks(tmp_path, ["07"])
    assert discover_notebooks(tmp_path, ["00_a"]) == [tmp_path / "00_a.ipynb"]


def test_parse_parameter():
    assert parse_parameter("SEED=3") == ("SEED", 3)
    assert parse_parameter("DATA_ROOT=/data/mtl") == ("DATA_ROOT", "/data/mtl")
    assert parse_parameter("X=None") == ("X", None)
    name, value = parse_parameter("pretrain_lr=nan")  # a float, so the config names it as not finite
    assert name == "pretrain_lr" and isinstance(value, float) and value != value
    assert parse_parameter("X=-Inf") == ("X", float("-inf"))
    assert parse_parameter("X=nano") == ("X", "nano")
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_parameter("SEED")


def test_cli_exit_code_names_notebook_and_cell(tmp_path):
    write_notebook(tmp_path, "00_broken.ipynb", "raise RuntimeError('nope')")
    proc = subprocess.run(
        [sys.executable, "-m", "pecop_lib", "notebooks", "run", "--preset", "smoke", "--device", "cpu",
         "--notebooks-dir", str(tmp_path), "--out", str(tmp_path / "out"), "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1
    assert "notebook 00_broken failed in cell 2" in proc.stderr and "RuntimeError: nope" in proc.stderr


def test_cli_refuses_cuda_without_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = subprocess.run([sys.executable, "-m", "pecop_lib", "notebooks", "run", "--device", "cuda",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "CUDA is not available" in proc.stderr


# --- every committed notebook, headless, smoke preset ------------------------------------------

@pytest.mark.notebooks
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_smoke_preset(path, tmp_path, notebook_cache):
    report = run_notebooks("smoke", only=[path.stem], device="cpu", out=tmp_path, progress=False, log_output=True)
    assert report.status == "ok"
    out_dir = tmp_path / path.stem
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["preset"] == "smoke" and metrics["notice"] == SMOKE_NOTICE
    figures = sorted((out_dir / "figures").glob("*.png"))
    assert figures, f"{path.name} saved no figure"
    executed = nbformat.read(tmp_path / path.name, as_version=4)
    assert executed.metadata["papermill"]["parameters"]["INTERACTIVE"] is False
