"""The course preset's whole notebook sequence on a 2-core CPU, checked against stated bounds and recorded.

Usage (repository root)::

    python scripts/course_run.py                                 # smoke sequence, then course; ~45 min
    python scripts/course_run.py --no-with-smoke --smoke-wall-s 260   # smoke timed earlier in this sitting
    python scripts/course_run.py --check-only runs/course-cpu    # re-check a work (or record) folder

A run has two parts, both through :func:`pecop_lib.notebooks.run_notebooks` on the CPU:

1. (``--with-smoke``, the default) the ``smoke`` sequence into ``<work>/smoke``, with its own empty
   cache ``<work>/smoke-cache``: the same machine's speed in the same sitting, for the time ratio;
2. the ``course`` sequence into ``<work>/course`` with the cache ``<work>/course-cache``, which must
   be empty (a fresh world, fresh backbones) unless ``--reuse-cache``; whether it was is recorded.

The cache folder reaches the notebooks' kernels through ``$PECOP_CACHE_DIR`` (kernels are started
with a copy of this process's environment). ``<work>`` (default ``runs/course-cpu``) also receives
``invocation.json``: the machine (host, CPUs, load averages at start and end, versions), the commit,
whether the smoke sequence ran and whether the course cache was empty, which ``--check-only`` reads.

Every check (:func:`course_checks`) is recorded with its value, bound and reason; a missing value
fails. The bounds on single metrics are data (:data:`BOUNDS`); the checks over several notebooks
(beats-baseline margins, the Fig. 5 grid and its verdicts, the notice, time, disk) are small functions.

The record (``--record``, default ``reports/course-cpu``): ``record.json``, ``summary.md`` (notebook
times course vs smoke, then the checks), ``manifest.json`` (the course runner's), ``metrics.json``
(every course notebook's metrics, by notebook), ``fig5_strategies.png`` (notebook 07's Fig. 5) and
``smoke_manifest.json`` (when the smoke sequence ran). The exit status is 0 only when every check
passed, 1 when one failed and 2 when nothing was run (a non-empty cache, an unusable setup).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import socket
import stat
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout without installing pecop
    sys.path.insert(0, str(REPO_ROOT))

from pecop_lib.atomic import atomic_write_json
from pecop_lib.config import COURSE_NOTICE, ConfigError
from pecop_lib.environment import git_commit, package_versions
from pecop_lib.notebooks import MANIFEST_FILE, NotebookParameterError, NotebookRunError, run_notebooks
from pecop_lib.outputs import METRICS_FILE
from pecop_lib.run_record import (
    FIG5_FILE,
    RECORD_FILE,
    SUMMARY_FILE,
    Bound,
    Check,
    bound_text,
    check_json,
    check_metrics,
    checks_table,
    find_fig5,
    results_from_manifest,
    write_record_files,
)

PRESET = "course"
DEVICE = "cpu"
CACHE_ENV = "PECOP_CACHE_DIR"
INVOCATION_FILE = "invocation.json"
SMOKE_MANIFEST_FILE = "smoke_manifest.json"
RECORD_FILES = (RECORD_FILE, SUMMARY_FILE, MANIFEST_FILE, METRICS_FILE, FIG5_FILE, SMOKE_MANIFEST_FILE)

MAX_COURSE_WALL_S = 2700.0
"""The whole course sequence (sum of the notebooks' wall times) fits in 45 minutes."""
MAX_SMOKE_RATIO = 10.0
"""The course sequence takes at most ten times the smoke sequence on the same machine in the same sitting."""
MAX_DISK_BYTES = 2e9
"""Course cache and course output folder together stay under 2 GB."""

FIG5_STRATEGIES: tuple[str, ...] = ("Dom-G", "Dom-S", "HPT+BN", "HPT", "PECoP")
"""The strategies every Fig. 5 task compares (the paper's four plus HPT)."""
DIVING_TASKS: tuple[str, ...] = ("MTL-AQA", "FineDiving")
PD4T_TASKS: tuple[str, ...] = ("Gait", "Finger tapping", "Hand movement", "Leg agility")
MIN_FIG5_TASKS = 2
FIG5_VERDICTS: tuple[str, ...] = ("PECoP vs Dom-G", "PECoP vs HPT+BN", "PECoP vs HPT")
"""The keys of ``fig5_verdicts.<task>``: each a non-empty sentence, whichever way the comparison falls."""

BASELINE_NOTEBOOKS: tuple[str, ...] = ("04", "05", "06", "07")
"""The fine-tuning notebooks that may write ``beats_baseline``."""
BASELINE_NUMBERS: tuple[str, ...] = ("rho", "ci_low", "ci_high", "baseline_rho", "margin")
MARGIN_TOLERANCE = 1e-6
"""How far a stated ``margin`` may be from ``ci_low - baseline_rho`` (write it unrounded)."""

_COURSE = (PRESET,)
BOUNDS: tuple[Bound, ...] = (
    Bound("03", "stage1.val_acc", 0.5, 1,
          "stage 1 learns the 16 synthetic actions (chance 1/16 = 0.0625)", _COURSE),
    Bound("03", "stage2_heldout_check.segment_acc", 0.6, 1,
          "PECoP finds the VSPP segment of held-out clips of test-split videos (16 per video; chance 0.25)",
          _COURSE),
    Bound("03", "stage2_heldout_check.speed_acc", 0.4, 1,
          "PECoP tells the VSPP speed of held-out clips of test-split videos (16 per video; chance 0.25)",
          _COURSE),
    Bound("07", "fig5_cells.{task}.{strategy}.n", 3, math.inf,
          "every Fig. 5 cell has at least three seeds", _COURSE),
    Bound("07", "fig5_cells.{task}.{strategy}.mean", -1, 1,
          "every Fig. 5 cell has a finite mean rho", _COURSE),
    Bound("07", "fig5_cells.{task}.{strategy}.ci_low", -1, 1,
          "every Fig. 5 cell has a finite 95 % interval", _COURSE),
    Bound("07", "fig5_cells.{task}.{strategy}.ci_high", -1, 1,
          "every Fig. 5 cell has a finite 95 % interval", _COURSE),
)
"""The bounds on single metrics. ``{task}`` and ``{strategy}`` are expanded over the tasks of notebook
07's ``fig5_cells`` and :data:`FIG5_STRATEGIES` (:func:`expand_bounds`)."""


@dataclass
class Evidence:
    """What the checks read, from a work folder or from a record folder.

    Attributes:
        manifest: The course runner's ``manifest.json``.
        metrics: Notebook stem -> its ``metrics.json``, for the course notebooks that ran ok.
        smoke_manifest: The smoke runner's manifest when the smoke sequence ran in the same invocation.
        invocation: The run's ``invocation.json`` (machine, commit, cache state); ``{}`` when unknown.
        disk_bytes: Bytes of the course cache and output folders; ``None`` when not measured.
        fig5: Notebook 07's Fig. 5, when drawn.
        source: The folder it was read from.
    """

    manifest: dict[str, Any]
    metrics: dict[str, dict[str, Any]]
    smoke_manifest: dict[str, Any] | None
    invocation: dict[str, Any]
    disk_bytes: int | None
    fig5: Path | None
    source: Path


def _words(notebook: str, path: str, value: Any, ok: bool, why: str, bound: str,
           note: str | None = None) -> Check:
    """A check whose bound is stated in words rather than as a numeric range."""
    return Check(notebook, path, value, math.nan, math.nan, why, ok, bound=bound, note=note)


def _number(value: Any) -> float:
    """``value`` as a float; ``nan`` for anything that is not an int or float (booleans count)."""
    return float(value) if isinstance(value, (int, float)) else math.nan


def tree_bytes(*roots: Path) -> int:
    """Bytes of the regular files under ``roots``, each file counted once, symlinks not followed.

    Hard links to one file (also across roots) count once; a symlink, to a file or a folder, counts
    nothing and is not descended into, nor is a root that is itself a symlink. Missing roots count 0.

    Args:
        roots: Folders to walk.

    Returns:
        The summed ``st_size`` of the distinct regular files.
    """
    seen: set[tuple[int, int]] = set()
    total = 0
    for root in roots:
        if root.is_symlink() or not root.is_dir():
            continue
        for folder, _, files in os.walk(root):
            for name in files:
                info = os.lstat(os.path.join(folder, name))
                if stat.S_ISREG(info.st_mode) and (info.st_dev, info.st_ino) not in seen:
                    seen.add((info.st_dev, info.st_ino))
                    total += info.st_size
    return total


def sequence_wall_s(manifest: Mapping[str, Any] | None) -> float | None:
    """The sum of the notebooks' wall times in a runner manifest, when every notebook ran ok.

    Args:
        manifest: A runner ``manifest.json``, or ``None``.

    Returns:
        The seconds, or ``None`` when there is no manifest, no notebook, or one that did not run ok.
    """
    notebooks = (manifest or {}).get("notebooks") or []
    if not notebooks or any(nb.get("status") != "ok" or nb.get("wall_s") is None for nb in notebooks):
        return None
    return round(sum(float(nb["wall_s"]) for nb in notebooks), 2)


def fig5_tasks(metrics07: Mapping[str, Any]) -> list[str]:
    """The tasks of notebook 07's ``fig5_cells``, sorted (none when it is absent or not a mapping)."""
    cells = metrics07.get("fig5_cells")
    return sorted(cells) if isinstance(cells, dict) else []


def expand_bounds(bounds: Sequence[Bound], tasks: Sequence[str]) -> list[Bound]:
    """Bounds with ``{task}``/``{strategy}`` in their path, one per task and :data:`FIG5_STRATEGIES` entry.

    Args:
        bounds: A bound table (:data:`BOUNDS`).
        tasks: The Fig. 5 tasks found (:func:`fig5_tasks`).

    Returns:
        The concrete bounds, in table order. A templated bound stays as it is when there are no
        tasks, so that it fails as missing.
    """
    out: list[Bound] = []
    for bound in bounds:
        if "{task}" in bound.path and tasks:
            out.extend(replace(bound, path=bound.path.format(task=t, strategy=s))
                       for t in tasks for s in FIG5_STRATEGIES)
        else:
            out.append(bound)
    return out


def sequence_check(manifest: Mapping[str, Any]) -> Check:
    """Every notebook of the course sequence ran ok.

    Args:
        manifest: The course runner's manifest.

    Returns:
        The check; its note names the notebooks that did not run ok.
    """
    results = results_from_manifest(manifest)
    bad = [f"{r.name}: {r.status}" for r in results if r.status != "ok"]
    ok_count = len(results) - len(bad)
    return _words("run", "course.notebooks", f"{ok_count}/{len(results)} ok" if results else "missing",
                  bool(results) and not bad, "the whole course sequence ran", "all ok",
                  "; ".join(bad) or None)


def notice_checks(manifest: Mapping[str, Any], metrics: Mapping[str, Mapping[str, Any]]) -> list[Check]:
    """Each course notebook's ``metrics.json`` says it is a course run.

    Args:
        manifest: The course runner's manifest (which notebooks to expect).
        metrics: Notebook stem -> metrics.

    Returns:
        One check per notebook of the manifest.
    """
    return [_words(nb["name"][:2], "notice", metrics.get(nb["name"], {}).get("notice", "missing"),
                   metrics.get(nb["name"], {}).get("notice") == COURSE_NOTICE,
                   "the course run's numbers say they are course numbers", repr(COURSE_NOTICE))
            for nb in manifest.get("notebooks", [])]


def _entry_problem(entry: Any) -> str | None:
    """Why a ``beats_baseline`` entry cannot count (``None`` when it can)."""
    if not isinstance(entry, dict):
        return "not a mapping"
    numbers = {k: _number(entry.get(k)) for k in BASELINE_NUMBERS}
    bad = [k for k, v in numbers.items() if not math.isfinite(v)]
    if bad:
        return f"{', '.join(bad)} not finite"
    if abs(numbers["margin"] - (numbers["ci_low"] - numbers["baseline_rho"])) > MARGIN_TOLERANCE:
        return "margin is not ci_low - baseline_rho"
    if numbers["ci_low"] > numbers["ci_high"]:
        return "ci_low > ci_high"
    return None


def baseline_checks(metrics: Mapping[str, Mapping[str, Any]]) -> list[Check]:
    """For every dataset named in a fine-tuning notebook's ``beats_baseline``, the best margin is above 0.

    A ``beats_baseline`` entry is ``{"head", "rho", "ci_low", "ci_high", "baseline", "baseline_rho",
    "margin"}`` with ``margin = ci_low - baseline_rho``: above 0 when the head's 95 % bootstrap
    interval lies entirely above the best no-video baseline. Entries with a non-finite number or a
    margin that is not ``ci_low - baseline_rho`` do not count (the note names them).

    Args:
        metrics: Notebook stem -> metrics (the notebooks of :data:`BASELINE_NOTEBOOKS` are read).

    Returns:
        One check per dataset, with the best margin and (note) the entry that achieved it; one
        failing check when no notebook named a dataset.
    """
    entries: dict[str, list[tuple[str, Any]]] = {}
    for stem in sorted(metrics):
        if stem[:2] in BASELINE_NOTEBOOKS and isinstance(metrics[stem].get("beats_baseline"), dict):
            for dataset, entry in metrics[stem]["beats_baseline"].items():
                entries.setdefault(dataset, []).append((stem, entry))
    why = "at least one head's 95 % bootstrap interval lies entirely above the best no-video baseline"
    if not entries:
        return [_words("04-07", "beats_baseline", "missing", False, why, "margin > 0",
                       f"no dataset in notebooks {', '.join(BASELINE_NOTEBOOKS)}")]
    checks = []
    for dataset, found in sorted(entries.items()):
        valid = [(stem, e) for stem, e in found if _entry_problem(e) is None]
        ignored = [f"{stem}: {_entry_problem(e)}" for stem, e in found if _entry_problem(e) is not None]
        note = f"ignored {'; '.join(ignored)}" if ignored else None
        if not valid:
            checks.append(_words("04-07", f"beats_baseline.{dataset}", "missing", False, why, "margin > 0",
                                 note))
            continue
        stem, best = max(valid, key=lambda item: float(item[1]["margin"]))
        achieved = (f"best: {stem} {best.get('head')} rho {best['rho']:.3f}, 95 % CI [{best['ci_low']:.3f}, "
                    f"{best['ci_high']:.3f}] vs {best.get('baseline')} rho {best['baseline_rho']:.3f}")
        margin = float(best["margin"])
        checks.append(_words("04-07", f"beats_baseline.{dataset}", margin, margin > 0, why, "margin > 0",
                             "; ".join(filter(None, (achieved, note)))))
    return checks


def fig5_checks(metrics07: Mapping[str, Any]) -> list[Check]:
    """Notebook 07's Fig. 5 grid: enough tasks, a diving and a PD4T task, all strategies, all verdicts.

    The cells' own numbers (seeds, mean, interval) are bounds in :data:`BOUNDS`.

    Args:
        metrics07: Notebook 07's metrics (``{}`` when it wrote none).

    Returns:
        The task-count, diving-task and PD4T-task checks, one strategy check per task and one check
        per task and verdict key.
    """
    cells = metrics07.get("fig5_cells")
    tasks = fig5_tasks(metrics07)
    diving = [t for t in tasks if t in DIVING_TASKS]
    pd4t = [t for t in tasks if t in PD4T_TASKS]
    checks = [
        Check("07", "fig5_cells (tasks)", len(tasks) if isinstance(cells, dict) else "missing",
              MIN_FIG5_TASKS, math.inf, "Fig. 5 compares the strategies on at least two tasks",
              len(tasks) >= MIN_FIG5_TASKS, note=", ".join(tasks) or None),
        _words("07", "fig5_cells (diving task)", ", ".join(diving) or "missing", bool(diving),
               "Fig. 5 has a diving task", f"one of {', '.join(DIVING_TASKS)}"),
        _words("07", "fig5_cells (PD4T task)", ", ".join(pd4t) or "missing", bool(pd4t),
               "Fig. 5 has a PD4T task", f"one of {', '.join(PD4T_TASKS)}"),
    ]
    for task in tasks:
        present = [s for s in FIG5_STRATEGIES if isinstance(cells[task], dict) and s in cells[task]]
        absent = [s for s in FIG5_STRATEGIES if s not in present]
        note = f"missing {', '.join(absent)}" if absent else None
        checks.append(_words("07", f"fig5_cells.{task}", ", ".join(present) or "missing", not absent,
                             "every task compares all five strategies",
                             f"all of {', '.join(FIG5_STRATEGIES)}", note))
    verdicts = metrics07.get("fig5_verdicts")
    for task in tasks:
        found = verdicts.get(task) if isinstance(verdicts, dict) else None
        for key in FIG5_VERDICTS:
            verdict = found.get(key) if isinstance(found, dict) else None
            ok = isinstance(verdict, str) and bool(verdict.strip())
            checks.append(_words("07", f"fig5_verdicts.{task}.{key}", verdict if ok else "missing", ok,
                                 "the verdict was computed (recorded whichever way it falls)",
                                 "a non-empty string"))
    return checks


def time_checks(manifest: Mapping[str, Any], smoke_wall_s: float | None, smoke_source: str) -> list[Check]:
    """The course sequence's wall time, alone and relative to the smoke sequence's.

    Args:
        manifest: The course runner's manifest (its notebooks' wall times are summed).
        smoke_wall_s: The smoke sequence's wall time on the same machine in the same sitting, or
            ``None`` when it was not measured.
        smoke_source: Where ``smoke_wall_s`` comes from (or why it is absent), for the note.

    Returns:
        The total-time check and the ratio check; a total or smoke time that was not measured fails.
    """
    total = sequence_wall_s(manifest)
    incomplete = None if total is not None else "not every course notebook ran ok"
    checks = [Check("run", "course.wall_s", "missing" if total is None else total, 0, MAX_COURSE_WALL_S,
                    "the course sequence fits in 45 min on a 2-core CPU",
                    total is not None and total <= MAX_COURSE_WALL_S, note=incomplete)]
    if total is None or smoke_wall_s is None or not smoke_wall_s > 0:
        checks.append(Check("run", "course.wall_s / smoke.wall_s", "not measured", 0, MAX_SMOKE_RATIO,
                            "the course sequence costs at most ten smoke sequences", False,
                            note=incomplete or smoke_source))
    else:
        ratio = round(total / smoke_wall_s, 3)
        checks.append(Check("run", "course.wall_s / smoke.wall_s", ratio, 0, MAX_SMOKE_RATIO,
                            "the course sequence costs at most ten smoke sequences", ratio <= MAX_SMOKE_RATIO,
                            note=f"smoke {smoke_wall_s:.1f} s, {smoke_source}"))
    return checks


def disk_check(disk_bytes: int | None) -> Check:
    """The course cache and output folders together stay under :data:`MAX_DISK_BYTES`.

    Args:
        disk_bytes: Their size (:func:`tree_bytes`), or ``None`` when not measured.

    Returns:
        The check.
    """
    ok = disk_bytes is not None and disk_bytes <= MAX_DISK_BYTES
    return Check("run", "disk.bytes", "missing" if disk_bytes is None else disk_bytes, 0, MAX_DISK_BYTES,
                 "course cache + course output folder", ok)


def course_checks(manifest: Mapping[str, Any], metrics: Mapping[str, dict[str, Any]], *,
                  smoke_wall_s: float | None, smoke_source: str, disk_bytes: int | None) -> list[Check]:
    """Every check of a course run.

    Args:
        manifest: The course runner's manifest.
        metrics: Notebook stem -> metrics, for the course notebooks that ran ok.
        smoke_wall_s: The smoke sequence's wall time (see :func:`time_checks`).
        smoke_source: Where it comes from, or why it is absent.
        disk_bytes: Size of the course cache and output folders.

    Returns:
        The sequence check, the bounds of :data:`BOUNDS` (every notebook they name), the notices, the
        beats-baseline margins, the Fig. 5 grid, time and disk.
    """
    by_number = {stem[:2]: m for stem, m in metrics.items()}
    bounds = expand_bounds(BOUNDS, fig5_tasks(by_number.get("07", {})))
    checks = [sequence_check(manifest)]
    for number in sorted({b.notebook for b in bounds}):
        checks += check_metrics(number, by_number.get(number, {}), PRESET, bounds)
    return [*checks, *notice_checks(manifest, metrics), *baseline_checks(metrics),
            *fig5_checks(by_number.get("07", {})), *time_checks(manifest, smoke_wall_s, smoke_source),
            disk_check(disk_bytes)]


def _read_json(path: Path) -> Any:
    """The parsed JSON file at ``path``."""
    return json.loads(path.read_text())


def _is_empty(folder: Path) -> bool:
    """``folder`` is absent or holds nothing."""
    return not folder.is_dir() or not any(folder.iterdir())


def _ok_metrics(out: Path, manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Notebook stem -> ``metrics.json`` for the notebooks of ``manifest`` that ran ok into ``out``."""
    return {nb["name"]: _read_json(out / nb["name"] / METRICS_FILE) for nb in manifest.get("notebooks", [])
            if nb.get("status") == "ok" and (out / nb["name"] / METRICS_FILE).is_file()}


def load_evidence(folder: Path) -> Evidence:
    """Read what the checks need from a work folder or a record folder.

    A record folder (it holds ``record.json``) gives the recorded manifests, metrics and disk size.
    A work folder (it holds ``course/manifest.json``) gives the runners' manifests, the course
    notebooks' ``metrics.json`` and its ``invocation.json``; the disk size is measured now, and the
    smoke manifest counts only when ``invocation.json`` says the smoke sequence ran in that invocation.

    Args:
        folder: The folder.

    Returns:
        The evidence.

    Raises:
        FileNotFoundError: If ``folder`` is neither.
    """
    if (folder / RECORD_FILE).is_file():
        record = _read_json(folder / RECORD_FILE)
        smoke = folder / SMOKE_MANIFEST_FILE
        fig5 = folder / FIG5_FILE
        return Evidence(_read_json(folder / MANIFEST_FILE), _read_json(folder / METRICS_FILE),
                        _read_json(smoke) if smoke.is_file() else None, record.get("invocation") or {},
                        record.get("disk_bytes"), fig5 if fig5.is_file() else None, folder)
    out = folder / "course"
    if not (out / MANIFEST_FILE).is_file():
        raise FileNotFoundError(f"{folder} holds neither {RECORD_FILE} (a record folder) nor "
                                f"course/{MANIFEST_FILE} (a work folder)")
    manifest = _read_json(out / MANIFEST_FILE)
    invocation = _read_json(folder / INVOCATION_FILE) if (folder / INVOCATION_FILE).is_file() else {}
    smoke = folder / "smoke" / MANIFEST_FILE
    smoke_ran = bool((invocation.get("smoke") or {}).get("ran")) and smoke.is_file()
    return Evidence(manifest, _ok_metrics(out, manifest), _read_json(smoke) if smoke_ran else None,
                    invocation, tree_bytes(folder / "course-cache", out), find_fig5(out), folder)


def machine_facts() -> dict[str, Any]:
    """The machine a run stands on: host, CPUs, platform, Python and torch versions, load averages now.

    Returns:
        ``{"hostname", "cpu_count", "cpus_usable", "platform", "python", "torch", "load_start"}``.
    """
    return {
        "hostname": socket.gethostname(), "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)), "platform": platform.platform(),
        "python": platform.python_version(), "torch": package_versions(("torch",))["torch"],
        "load_start": [round(x, 2) for x in os.getloadavg()],
    }


def run_preset(preset: str, out: Path, cache: Path, notebooks_dir: Path | None) -> float:
    """Run one whole sequence on the CPU into ``out``, with ``$PECOP_CACHE_DIR`` set to ``cache``.

    The runner prints a line per notebook; a failing notebook stops the sequence (the manifest says
    which) and its first line is printed.

    Args:
        preset: ``smoke`` or ``course``.
        out: Output folder.
        cache: Cache folder for the notebooks' kernels (they inherit this process's environment).
        notebooks_dir: Where the notebooks live (default: the repository's).

    Returns:
        The outer wall seconds (start-up and manifest writing included).

    Raises:
        pecop_lib.config.ConfigError: Unknown preset or unusable device (nothing ran).
        pecop_lib.notebooks.NotebookParameterError: A notebook lacks a parameter (nothing ran).
    """
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with mock.patch.dict(os.environ, {CACHE_ENV: str(cache)}):
        try:
            run_notebooks(preset, device=DEVICE, out=out, notebooks_dir=notebooks_dir, progress=False)
        except NotebookRunError as exc:
            print(f"course_run: {preset}: {str(exc).splitlines()[0]}", flush=True)
    return round(time.monotonic() - t0, 1)


def run_course(work: Path, *, with_smoke: bool, reuse_cache: bool, notebooks_dir: Path | None) -> None:
    """Run the smoke sequence (optional) and the course sequence into ``work``; write ``invocation.json``.

    Earlier output folders (``smoke``, ``course``), the smoke cache and ``invocation.json`` are removed
    first; the course cache is kept (the caller refuses a non-empty one unless ``reuse_cache``).

    Args:
        work: The work folder.
        with_smoke: Run the smoke sequence first.
        reuse_cache: Recorded: whether a non-empty course cache was allowed.
        notebooks_dir: Where the notebooks live (default: the repository's).
    """
    course_cache = work / "course-cache"
    cache_empty = _is_empty(course_cache)
    for stale in ("smoke", "smoke-cache", "course"):
        shutil.rmtree(work / stale, ignore_errors=True)
    (work / INVOCATION_FILE).unlink(missing_ok=True)
    invocation = {"format": "pecop.course_invocation/1",
                  "started": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine_facts(),
                  "commit": os.environ.get("PECOP_RECORD_COMMIT") or git_commit(REPO_ROOT)}
    smoke_wall = None
    if with_smoke:
        smoke_wall = run_preset("smoke", work / "smoke", work / "smoke-cache", notebooks_dir)
    course_wall = run_preset(PRESET, work / "course", course_cache, notebooks_dir)
    invocation["machine"]["load_end"] = [round(x, 2) for x in os.getloadavg()]
    invocation |= {"finished": datetime.now(UTC).isoformat(timespec="seconds"),
                   "smoke": {"ran": with_smoke, "outer_wall_s": smoke_wall},
                   "course": {"outer_wall_s": course_wall, "cache_empty": cache_empty,
                              "reuse_cache": reuse_cache}}
    atomic_write_json(work / INVOCATION_FILE, invocation)


def _seconds(value: float | None) -> str:
    """Seconds for a table cell (empty when unknown)."""
    return "" if value is None else f"{value:.1f}"


def summary_markdown(record: Mapping[str, Any]) -> str:
    """The record as Markdown: a header, notebook times course vs smoke, then the checks.

    Args:
        record: Content of ``record.json`` (:func:`build_record`).

    Returns:
        The Markdown text.
    """
    inv = record["invocation"]
    machine, course = inv.get("machine") or {}, inv.get("course") or {}
    load = " → ".join(" ".join(f"{x:.2f}" for x in machine[key])
                      for key in ("load_start", "load_end") if machine.get(key))
    commit = inv.get("commit") or {}
    commit = commit.get("commit") if isinstance(commit, dict) else commit
    cache = {True: "yes", False: "no"}.get(course.get("cache_empty"), "unknown")
    disk = "unknown" if record["disk_bytes"] is None else f"{record['disk_bytes']:,}"
    header = (f"{record['created']} · preset `{PRESET}` on {DEVICE} · "
              f"host `{machine.get('hostname', 'unknown')}` ({machine.get('cpus_usable', '?')} CPUs usable, "
              f"load {load or 'unknown'}) · Python {machine.get('python', '?')} · "
              f"torch {machine.get('torch', '?')} · commit `{commit or 'unknown'}` · "
              f"course cache empty at start: {cache} · disk {disk} bytes")
    smoke = {nb["name"]: nb for nb in (record["smoke"] or {}).get("notebooks", [])}
    lines = [f"# Course CPU run: {record['status']}", "", header, "",
             "| notebook | course | course s | smoke | smoke s |", "|---|---|---|---|---|"]
    for nb in record["course"]["notebooks"]:
        other = smoke.get(nb["name"], {})
        lines.append(f"| {nb['name']} | {nb['status']}{': ' + nb['error'] if nb['error'] else ''} | "
                     f"{_seconds(nb['wall_s'])} | {other.get('status', '')} | "
                     f"{_seconds(other.get('wall_s'))} |")
    lines.append(f"| **total** | | {_seconds(record['course']['wall_s'])} | | "
                 f"{_seconds((record['smoke'] or {}).get('wall_s'))} |")
    return "\n".join([*lines, "", *checks_table(record["checks"])]) + "\n"


def _notebooks_json(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A runner manifest's notebooks as JSON: name, status, wall seconds, first line of the error."""
    return [{k: v for k, v in asdict(r).items() if k != "checks"} for r in results_from_manifest(manifest)]


def build_record(evidence: Evidence, checks: Sequence[Check]) -> dict[str, Any]:
    """The content of ``record.json``.

    Args:
        evidence: What was checked.
        checks: The checks (:func:`course_checks`).

    Returns:
        Format, time, status (``complete`` when every check held, else ``failed``), the invocation,
        both sequences' notebooks and wall times, the disk size and every check.
    """
    smoke = evidence.smoke_manifest
    return {
        "format": "pecop.course_record/1", "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "status": "complete" if checks and all(c.ok for c in checks) else "failed",
        "preset": PRESET, "device": DEVICE, "invocation": evidence.invocation,
        "course": {"wall_s": sequence_wall_s(evidence.manifest),
                   "notebooks": _notebooks_json(evidence.manifest)},
        "smoke": None if smoke is None else {"wall_s": sequence_wall_s(smoke),
                                             "notebooks": _notebooks_json(smoke)},
        "disk_bytes": evidence.disk_bytes,
        "checks": [check_json(c) for c in checks],
        "checks_failed": sum(not c.ok for c in checks),
    }


def write_record(folder: Path, evidence: Evidence, checks: Sequence[Check]) -> dict[str, Any]:
    """Write the record folder (see the module docstring); record files of an earlier run there go first.

    Args:
        folder: The record folder.
        evidence: What was checked.
        checks: The checks.

    Returns:
        The content of ``record.json``.
    """
    if folder.resolve() != evidence.source.resolve():
        for name in RECORD_FILES:
            (folder / name).unlink(missing_ok=True)
    record = build_record(evidence, checks)
    files: dict[str, Any] = {MANIFEST_FILE: evidence.manifest, METRICS_FILE: evidence.metrics}
    if evidence.smoke_manifest is not None:
        files[SMOKE_MANIFEST_FILE] = evidence.smoke_manifest
    write_record_files(folder, record, summary_markdown(record), files, evidence.fig5)
    return record


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring).

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        0 when every check held, 1 when one failed, 2 when nothing ran.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--with-smoke", action=argparse.BooleanOptionalAction, default=True,
                        help="run the smoke sequence first, for the time ratio (default: yes)")
    parser.add_argument("--smoke-wall-s", type=float, default=None,
                        help="the smoke sequence's wall time from this sitting, when it does not run here")
    parser.add_argument("--reuse-cache", action="store_true", help="allow a non-empty <work>/course-cache")
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "runs" / "course-cpu")
    parser.add_argument("--record", type=Path, default=REPO_ROOT / "reports" / "course-cpu")
    parser.add_argument("--notebooks-dir", type=Path, default=None)
    parser.add_argument("--check-only", type=Path, default=None, metavar="RECORD_OR_WORK_DIR",
                        help="check an existing work or record folder without running anything")
    args = parser.parse_args(argv)
    if args.check_only is None:
        cache = args.work / "course-cache"
        if not _is_empty(cache) and not args.reuse_cache:
            print(f"course_run: {cache} is not empty; a course run starts from an empty cache "
                  "(remove it, or pass --reuse-cache)", file=sys.stderr)
            return 2
        try:
            run_course(args.work, with_smoke=args.with_smoke, reuse_cache=args.reuse_cache,
                       notebooks_dir=args.notebooks_dir)
        except (ConfigError, NotebookParameterError) as exc:
            print(f"course_run: {exc}", file=sys.stderr)
            return 2
    try:
        evidence = load_evidence(args.check_only or args.work)
    except FileNotFoundError as exc:
        print(f"course_run: {exc}", file=sys.stderr)
        return 2
    if evidence.smoke_manifest is not None:
        smoke_wall, source = sequence_wall_s(evidence.smoke_manifest), "smoke sequence of the same invocation"
        source += "" if smoke_wall is not None else ", which did not complete"
    else:
        smoke_wall = args.smoke_wall_s
        source = "--smoke-wall-s" if smoke_wall is not None else "smoke sequence not run in this invocation"
    checks = course_checks(evidence.manifest, evidence.metrics, smoke_wall_s=smoke_wall, smoke_source=source,
                           disk_bytes=evidence.disk_bytes)
    record = write_record(args.record, evidence, checks)
    failed = [c for c in checks if not c.ok]
    print(f"course_run: record in {args.record} ({record['status']}, {len(failed)} failed check(s))")
    for c in failed:
        data = check_json(c)
        print(f"  FAILED {c.notebook} {c.path}: {data['value']} (bound {bound_text(data)}; {c.why}"
              f"{'; ' + c.note if c.note else ''})")
    return 0 if record["status"] == "complete" else 1


if __name__ == "__main__":
    sys.exit(main())
