"""What the run scripts share: stated bounds on notebook metrics, checks, and the record files.

``scripts/gpu_tutorial.py`` (the GPU tutorial run) and ``scripts/course_run.py`` (the course preset on a
CPU) both run the notebook sequence through :func:`pecop_lib.notebooks.run_notebooks`, check each
notebook's ``metrics.json`` against :class:`Bound` s and write a record folder (``record.json``,
``summary.md``, the runner's ``manifest.json``, ``metrics.json`` and notebook 07's Fig. 5). The pieces
they have in common live here; what is checked, and the record's layout, stay with each script.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pecop_lib.atomic import atomic_write_json, atomic_write_text
from pecop_lib.outputs import FIGURES_DIR

RECORD_FILE = "record.json"
SUMMARY_FILE = "summary.md"
FIG5_FILE = "fig5_strategies.png"


@dataclass(frozen=True)
class Bound:
    """A stated bound on one metric of one notebook.

    Attributes:
        notebook: Notebook number (``"07"``).
        path: Dotted path into its ``metrics.json``; ``*`` matches every key of a mapping (each
            match is checked; a path that matches nothing fails).
        low: Inclusive lower bound (booleans count as 0/1).
        high: Inclusive upper bound.
        why: What the bound says.
        presets: Presets it applies to.
    """

    notebook: str
    path: str
    low: float
    high: float
    why: str
    presets: tuple[str, ...] = ("tutorial",)


def lookup(metrics: Any, path: str) -> list[tuple[str, Any]]:
    """The values at a dotted path (``*`` expands over a mapping's keys or a list's items).

    Args:
        metrics: Parsed ``metrics.json`` (or any JSON-like value).
        path: Dotted path, e.g. ``"runs.*.official_rho"``.

    Returns:
        ``[(concrete path, value), ...]``; empty when the path does not exist.
    """
    found: list[tuple[str, Any]] = [("", metrics)]
    for part in path.split("."):
        step: list[tuple[str, Any]] = []
        for where, value in found:
            if part == "*" and isinstance(value, dict):
                step.extend((f"{where}.{k}".lstrip("."), v) for k, v in value.items())
            elif part == "*" and isinstance(value, list):
                step.extend((f"{where}.{i}".lstrip("."), v) for i, v in enumerate(value))
            elif isinstance(value, dict) and part in value:
                step.append((f"{where}.{part}".lstrip("."), value[part]))
        found = step
    return found


@dataclass
class Check:
    """One stated bound checked on one value.

    Attributes:
        notebook: Notebook number, or a label for a check over several (``"04-07"``, ``"run"``).
        path: What was checked (a dotted metrics path or a name).
        value: The value found; ``"missing"`` when there was none.
        low: Inclusive lower bound of a numeric range (``nan`` for a check stated in words).
        high: Inclusive upper bound of a numeric range (``nan`` for a check stated in words).
        why: What the bound says.
        ok: Whether it held.
        bound: The bound in words, for a check that is not a numeric range.
        note: What else the reader needs (which entry achieved an aggregate, why a value is absent).
    """

    notebook: str
    path: str
    value: Any
    low: float
    high: float
    why: str
    ok: bool
    bound: str | None = None
    note: str | None = None


def check_metrics(notebook: str, metrics: dict[str, Any], preset: str,
                  bounds: Sequence[Bound]) -> list[Check]:
    """Check a notebook's metrics against the bounds of its number and preset.

    A value that is missing, not a number or not finite fails its bound.

    Args:
        notebook: Notebook number (``"03"``).
        metrics: Its parsed ``metrics.json`` (``{}`` when it wrote none).
        preset: Only bounds listing this preset apply.
        bounds: The bound table.

    Returns:
        One check per matched value, in table order; one failing ``"missing"`` check per bound whose
        path matches nothing.
    """
    out = []
    for bound in (b for b in bounds if b.notebook == notebook and preset in b.presets):
        matches = lookup(metrics, bound.path)
        if not matches:
            out.append(Check(notebook, bound.path, "missing", bound.low, bound.high, bound.why, False))
        for where, value in matches:
            number = float(value) if isinstance(value, (int, float)) else math.nan
            ok = math.isfinite(number) and bound.low <= number <= bound.high
            out.append(Check(notebook, where, value, bound.low, bound.high, bound.why, ok))
    return out


@dataclass
class NotebookResult:
    """How one notebook went in a run.

    Attributes:
        name: Notebook stem (``"03_vspp_pretraining"``).
        status: ``ok``, ``failed``, ``timeout``, ``skipped`` or (runner manifests) ``pending``.
        wall_s: Wall seconds it ran, when it ran.
        error: First line of the failure, when it failed.
        checks: The checks of its metrics.
    """

    name: str
    status: str
    wall_s: float | None = None
    error: str | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Ran and every check held."""
        return self.status == "ok" and all(c.ok for c in self.checks)


def results_from_manifest(manifest: Mapping[str, Any]) -> list[NotebookResult]:
    """The notebooks of a runner ``manifest.json`` as results (without checks).

    Args:
        manifest: Parsed manifest written by :func:`pecop_lib.notebooks.run_notebooks`.

    Returns:
        One result per notebook, in run order; errors cut to their first line (500 characters).
    """
    return [NotebookResult(nb["name"], nb.get("status", "pending"), nb.get("wall_s"),
                           (nb.get("error") or "").splitlines()[0][:500] if nb.get("error") else None)
            for nb in manifest.get("notebooks", [])]


def check_json(check: Check) -> dict[str, Any]:
    """A check as JSON: non-finite bounds as ``null``, a non-finite value as its text, unset words left out.

    Args:
        check: The check.

    Returns:
        A JSON-ready mapping.
    """
    data = asdict(check)
    for key in ("low", "high"):
        data[key] = data[key] if math.isfinite(data[key]) else None
    if isinstance(data["value"], float) and not math.isfinite(data["value"]):
        data["value"] = str(data["value"])
    for key in ("bound", "note"):
        if data[key] is None:
            del data[key]
    return data


def bound_text(check: Mapping[str, Any]) -> str:
    """The bound of a JSON check (:func:`check_json`) as text: its words, else ``[low, high]``.

    Args:
        check: A JSON check.

    Returns:
        E.g. ``"[0.5, 1]"``, ``"[1, inf]"`` or the stated words.
    """
    if check.get("bound"):
        return check["bound"]
    low, high = check["low"], check["high"]
    return f"[{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}]"


def checks_table(checks: Sequence[Mapping[str, Any]]) -> list[str]:
    """JSON checks as the lines of a Markdown table (check, value, bounds, held, why).

    Args:
        checks: JSON checks (:func:`check_json`).

    Returns:
        The header, the separator and one row per check.
    """
    lines = ["| check | value | bounds | held | why |", "|---|---|---|---|---|"]
    for c in checks:
        value = f"{c['value']:.4g}" if isinstance(c["value"], float) else c["value"]
        why = f"{c['why']} ({c['note']})" if c.get("note") else c["why"]
        lines.append(f"| {c['notebook']} `{c['path']}` | {value} | {bound_text(c)} | "
                     f"{'yes' if c['ok'] else '**no**'} | {why} |")
    return lines


def find_fig5(out: Path) -> Path | None:
    """Notebook 07's Fig. 5 in a run's output folder (``07_*/figures/fig5_strategies.png``).

    Args:
        out: The runner's output folder.

    Returns:
        The file, or ``None`` when notebook 07 did not draw it there.
    """
    return next(iter(sorted(out.glob(f"07_*/{FIGURES_DIR}/{FIG5_FILE}"))), None)


def write_record_files(folder: Path, record: dict[str, Any], summary: str, json_files: Mapping[str, Any],
                       fig5: Path | None) -> None:
    """Write a record folder: ``record.json``, ``summary.md``, further JSON files and Fig. 5.

    Args:
        folder: The record folder (created when absent).
        record: Content of ``record.json``.
        summary: Content of ``summary.md``.
        json_files: File name -> content of further JSON files (the manifest, the metrics, ...).
        fig5: Fig. 5 to copy in as ``fig5_strategies.png``; ``None`` (or that very file) copies nothing.
    """
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / RECORD_FILE, record)
    for name, content in json_files.items():
        atomic_write_json(folder / name, content)
    atomic_write_text(folder / SUMMARY_FILE, summary)
    if fig5 is not None and fig5.resolve() != (folder / FIG5_FILE).resolve():
        shutil.copyfile(fig5, folder / FIG5_FILE)
