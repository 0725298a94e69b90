"""The GPU tutorial run as a test: the notebook sequence with ``--preset tutorial`` through the runner,
each notebook's metrics checked against stated bounds, and a compact record for ``reports/gpu-tutorial/``.

Usage (repository root)::

    python scripts/gpu_tutorial.py                                  # tutorial, cuda, all notebooks, 480 s budget
    python scripts/gpu_tutorial.py --only 00 07 08 --budget-s 420   # these notebooks, in this order
    python scripts/gpu_tutorial.py --preset smoke --device cpu --only 00 --record /tmp/rec   # CPU dry run

Each notebook runs through :func:`pecop_lib.notebooks.run_notebooks` into ``--work`` (default
``runs/gpu-tutorial``; notebooks in one folder, so notebook 08 finds 04-06's runs), in the order
given, with a per-cell time limit equal to the budget that is left: a notebook that would overrun
is stopped by the runner (status ``timeout``) and the ones after it are ``skipped``. The record is
written whatever happens (status ``complete``, ``partial`` or ``failed``); the exit status is 0 only
when every selected notebook ran and every check passed.

The record (``--record``, default ``reports/gpu-tutorial``; format in ``reports/README.md``):
``record.json`` (device, versions, per-notebook status and wall time, every check), ``summary.md``
(the same as tables), ``manifest.json`` (the runner's), ``metrics.json`` (every notebook's metrics,
by notebook) and ``fig5_strategies.png`` (notebook 07's Fig. 5, when it ran). Bounds, checks and the
record writers are shared with ``scripts/course_run.py`` (:mod:`pecop_lib.run_record`).

On a lent GPU machine (Python 3.12 with torch; no network), in one call of at most 10 minutes: fetch
the wheels it lacks here first (``../shared/tools/device-wheels av`` writes ``.whl/``), then run, with
``carry: [".whl"]``::

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \\
        .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD PECOP_CACHE_DIR=/tmp/pecop-cache && \\
    PECOP_RECORD_COMMIT=<sha> python3 scripts/gpu_tutorial.py --budget-s 480 --copy-to $OUT

and commit the files that come back into ``reports/gpu-tutorial/``.

Size: the ``tutorial`` preset trains for real (notebook 07 alone: 8 Fig. 5 tasks x 5 strategies x
3 seeds plus Tables 5/6 and the switches, ~180 fine-tunings of 10 epochs and ~40 continual
pretrainings), far more than one 10-minute call; within a budget the record holds the notebooks
that finished, their times and checks, and says ``partial``. ``--only`` chooses what to spend the
budget on (e.g. ``--only 00 02 03``), and ``--preset smoke --device cuda`` runs the whole sequence's
plumbing on the GPU (device-agnostic code, CUDA paths) in minutes; smoke records are not results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout without installing pecop
    sys.path.insert(0, str(REPO_ROOT))

from pecop_lib.notebooks import MANIFEST_FILE, NotebookRunError, discover_notebooks, run_notebooks
from pecop_lib.outputs import METRICS_FILE
from pecop_lib.run_record import (
    FIG5_FILE,
    RECORD_FILE,
    SUMMARY_FILE,
    Bound,
    NotebookResult,
    check_json,
    check_metrics,
    checks_table,
    find_fig5,
    write_record_files,
)

RECORD_FILES = (RECORD_FILE, SUMMARY_FILE, MANIFEST_FILE, METRICS_FILE, FIG5_FILE)
MIN_NOTEBOOK_BUDGET_S = 20
"""A notebook is not started with less budget left than this (it is ``skipped``)."""


_ANY = ("tutorial", "smoke")
BOUNDS: tuple[Bound, ...] = (
    Bound("00", "cuda_available", 1, 1, "the run sees the GPU"),
    Bound("01", "latent_score_spearman.*", -1, 1, "scores depend on the latent factors (finite rho)", _ANY),
    Bound("01", "records.MTL-AQA", 100, math.inf, "the tutorial world's MTL-AQA training split (240 dives)"),
    Bound("02", "table2_pecop_trainable", 0.9e6, 1.3e6, "Table 2: ~1M adapter parameters (I3D, lambda 4)", _ANY),
    Bound("02", "table2_hpt_trainable", 11e6, 14e6, "Table 2: ~13M backbone parameters", _ANY),
    Bound("02", "adapter_reload_max_abs_diff", 0, 1e-6, "adapter checkpoints reload exactly", _ANY),
    Bound("03", "stage1.val_acc", 0.15, 1, "stage 1 learns the 16 synthetic actions (chance 1/16 = 0.0625)"),
    Bound("03", "pecop_last_epoch.acc", 0.25, 1, "VSPP accuracy of PECoP at least chance (0.25)"),
    Bound("04", "runs.*.official_rho", -1, 1, "every USDL/MUSDL run reports a finite rho"),
    Bound("04", "runs.*.epochs", 30, 30, "the tutorial preset's 30 fine-tuning epochs ran"),
    Bound("05", "runs.*.official_rho", -1, 1, "every CoRe run reports a finite rho"),
    Bound("05", "runs.PECoP core/MTL-AQA.official_rho", 0.3, 1, "CoRe + PECoP learns the synthetic MTL-AQA"),
    Bound("06", "runs.*.official_rho", -1, 1, "every TSA run reports a finite rho"),
    Bound("07", "summary.fig5.*.mean", -1, 1, "every Fig. 5 cell was measured (finite mean rho)"),
    Bound("07", "summary.fig5.*.n", 3, 3, "every Fig. 5 cell has its three seeds"),
    Bound("07", "table2_ratios.trainable_params", 8, 20, "PECoP trains ~13x fewer parameters than HPT (paper)", _ANY),
    Bound("07", "table2_ratios.stored_bytes", 8, 20, "PECoP stores ~13x less than HPT (paper: 54 vs 4 MB)", _ANY),
    Bound("08", "videos", 1, math.inf, "the explorer has test videos", _ANY),
    Bound("08", "spread.*.rho", -1, 1, "every strategy's test predictions give a finite rho"),
)
"""Every stated bound, in one place (the tutorial preset's unless ``presets`` says otherwise)."""


def run_sequence(preset: str, device: str, selectors: Sequence[str] | None, work: Path, budget_s: float, *,
                 notebooks_dir: str | os.PathLike[str] | None = None) -> tuple[list[NotebookResult], dict, dict]:
    """Run the notebooks one by one into ``work`` within ``budget_s`` and check their metrics.

    Returns:
        ``(results, merged manifest, {notebook: metrics})``.
    """
    paths = discover_notebooks(notebooks_dir)
    if selectors:
        order = [discover_notebooks(notebooks_dir, [s])[0] for s in selectors]
        paths = list(dict.fromkeys(order))
    started = time.monotonic()
    results: list[NotebookResult] = []
    manifest: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    for path in paths:
        left = budget_s - (time.monotonic() - started)
        if left < MIN_NOTEBOOK_BUDGET_S:
            results.append(NotebookResult(path.stem, "skipped", error=f"budget: {max(left, 0):.0f} s left"))
            continue
        t0 = time.monotonic()
        try:
            report = run_notebooks(preset, only=[path.stem], device=device, out=work, notebooks_dir=notebooks_dir,
                                   cell_timeout=int(left), progress=False, log_output=True)
            status, error = report.notebooks[0].status, None
        except NotebookRunError as exc:
            status, error = ("timeout" if exc.timed_out else "failed"), str(exc).splitlines()[0][:500]
        result = NotebookResult(path.stem, status, round(time.monotonic() - t0, 1), error)
        run_manifest = json.loads((work / MANIFEST_FILE).read_text())
        if not manifest:
            manifest = {k: v for k, v in run_manifest.items() if k != "notebooks"} | {"notebooks": []}
        manifest["notebooks"].extend(run_manifest["notebooks"])
        metrics_file = work / path.stem / METRICS_FILE
        if status == "ok" and metrics_file.is_file():
            metrics[path.stem] = json.loads(metrics_file.read_text())
            result.checks = check_metrics(path.stem[:2], metrics[path.stem], preset, BOUNDS)
        results.append(result)
    manifest["wall_s"] = round(time.monotonic() - started, 1)
    return results, manifest, metrics


def summary_markdown(record: dict[str, Any]) -> str:
    """The record as Markdown tables (notebooks, then checks)."""
    header = (f"{record['created']} · preset `{record['preset']}` · {record['device_name']} · torch {record['torch']} · "
              f"commit `{record['commit'] or 'unknown'}` · budget {record['budget_s']:.0f} s, used {record['wall_s']:.0f} s")
    lines = [f"# GPU tutorial run: {record['status']}", "", header, "", "| notebook | status | wall s | checks |", "|---|---|---|---|"]
    for nb in record["notebooks"]:
        failed = sum(not c["ok"] for c in nb["checks"])
        checks = f"{len(nb['checks']) - failed}/{len(nb['checks'])} ok" if nb["checks"] else ""
        lines.append(f"| {nb['name']} | {nb['status']}{': ' + nb['error'] if nb['error'] else ''} | "
                     f"{'' if nb['wall_s'] is None else nb['wall_s']} | {checks} |")
    lines += ["", *checks_table([c for nb in record["notebooks"] for c in nb["checks"]])]
    return "\n".join(lines) + "\n"


def write_record(folder: Path, results: Sequence[NotebookResult], manifest: dict[str, Any], metrics: dict[str, Any],
                 work: Path, *, preset: str, budget_s: float, commit: str | None) -> dict[str, Any]:
    """Write the record files into ``folder`` (see the module docstring); return ``record.json``'s content."""
    env = manifest.get("environment", {})
    ran = [r for r in results if r.status != "skipped"]
    status = ("complete" if results and all(r.passed for r in results) else
              "partial" if any(r.status == "ok" for r in ran) else "failed")
    record = {
        "format": "pecop.gpu_tutorial_record/1",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "status": status, "preset": preset, "budget_s": budget_s, "wall_s": manifest.get("wall_s", 0.0),
        "device": env.get("device"), "device_name": env.get("device_name"), "gpu_memory_gib": env.get("gpu_memory_gib"),
        "torch": (env.get("packages") or {}).get("torch"), "torch_cuda": env.get("torch_cuda_build"),
        "python": env.get("python"), "commit": commit or (env.get("git") or {}).get("commit"),
        "notebooks": [{**{k: v for k, v in asdict(r).items() if k != "checks"},
                       "checks": [check_json(c) for c in r.checks]} for r in results],
        "checks_failed": sum(not c.ok for r in results for c in r.checks),
    }
    write_record_files(folder, record, summary_markdown(record), {MANIFEST_FILE: manifest, METRICS_FILE: metrics},
                       find_fig5(work))
    return record


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring); exit status 0 when every notebook ran and every check held."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tutorial", choices=("tutorial", "smoke", "paper"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--only", nargs="+", help="notebooks to run, in this order (default: all, numeric order)")
    parser.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget of the notebooks (s)")
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "runs" / "gpu-tutorial")
    parser.add_argument("--record", type=Path, default=REPO_ROOT / "reports" / "gpu-tutorial")
    parser.add_argument("--notebooks-dir", type=Path, default=None)
    parser.add_argument("--copy-to", type=Path, default=None, help="also copy the record files here (e.g. $OUT)")
    args = parser.parse_args(argv)
    from pecop_lib.config import ConfigError, resolve_device

    try:
        resolve_device(args.device)
    except ConfigError as exc:
        print(f"gpu_tutorial: {exc}", file=sys.stderr)
        return 2
    if args.work.exists():
        shutil.rmtree(args.work)  # a record describes one fresh run
    results, manifest, metrics = run_sequence(args.preset, args.device, args.only, args.work, args.budget_s,
                                              notebooks_dir=args.notebooks_dir)
    record = write_record(args.record, results, manifest, metrics, args.work, preset=args.preset,
                          budget_s=args.budget_s, commit=os.environ.get("PECOP_RECORD_COMMIT"))
    if args.copy_to is not None:
        args.copy_to.mkdir(parents=True, exist_ok=True)
        for name in RECORD_FILES:
            if (args.record / name).is_file():
                shutil.copyfile(args.record / name, args.copy_to / name)
    print(summary_markdown(record))
    print(f"record: {args.record} ({record['status']}, {record['checks_failed']} failed check(s))")
    return 0 if record["status"] == "complete" else 1


if __name__ == "__main__":
    sys.exit(main())
