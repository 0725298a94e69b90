"""The notebook runner: execute the numbered notebooks headlessly with papermill.

``pecop notebooks run`` and :func:`run_notebooks` do the same thing:

1. pick the notebooks (``notebooks/NN_topic.ipynb``, numeric order, optionally ``only``);
2. check, before running anything, that every parameter to be injected is declared in each
   notebook's ``parameters`` cell (papermill itself only warns about unknown names);
3. run each notebook with kernel ``python3`` and a per-cell timeout, writing ``<out>/<stem>.ipynb``
   (the executed notebook) and letting the notebook write its figures and ``metrics.json`` into
   ``<out>/<stem>/``;
4. print one line when a notebook starts and one when it ends, with an estimate of the time left
   (:class:`SequenceProgress`); papermill's per-cell bar only on a terminal or on request;
5. keep ``<out>/manifest.json`` up to date after every notebook (environment, preset, per-notebook
   wall time and status, git commit);
6. stop at the first failure with :class:`NotebookRunError`, naming the notebook and the cell.

Kernels are started with CurveZMQ transport encryption where their kernelspec supports it, which
is what ipykernel's start-up warning "Kernel is running over TCP without encryption" asks for; the
warning is then not emitted at all, instead of once per notebook. What a kernel process itself
prints (C libraries' messages, not cell output) goes to ``<out>/<stem>.kernel.log``, kept only when
it is not empty, recorded in the manifest and quoted when the kernel dies (:mod:`pecop_lib.notebook_kernel`).
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pecop_lib.atomic import atomic_write_json
from pecop_lib.config import auto_preset, resolve, resolve_device
from pecop_lib.environment import environ, environment_report
from pecop_lib.notebook_progress import (
    MANIFEST_FILE,
    SequenceProgress,
    expected_seconds,
    format_duration,
    notebook_stage,
    previous_wall_times,
)
from pecop_lib.outputs import HEADLESS_ENV, METRICS_FILE
from pecop_lib.run_lock import run_lock

NOTEBOOK_PATTERN = re.compile(r"^(\d{2})_[A-Za-z0-9_]+\.ipynb$")
"""Names the runner picks up: two digits, an underscore, a topic."""

RUNNER_PARAMETERS: tuple[str, ...] = ("PRESET", "DEVICE", "OUT_DIR", "INTERACTIVE")
"""Parameters the runner injects into every notebook; each notebook must declare them."""



class NotebookParameterError(ValueError):
    """A parameter to be injected is not declared in a notebook's ``parameters`` cell."""


class NotebookRunError(RuntimeError):
    """A notebook failed or timed out; the message names the notebook and the cell.

    Attributes:
        notebook: Stem of the failing notebook.
        cell: Index of the failing cell in the executed notebook (``None`` if unknown).
        output_path: The executed (partial) notebook, kept for inspection.
        timed_out: True when the per-cell time limit was hit (nbclient's ``CellTimeoutError``).
    """

    def __init__(self, message: str, *, notebook: str, cell: int | None, output_path: Path,
                 timed_out: bool = False) -> None:
        super().__init__(message)
        self.notebook = notebook
        self.cell = cell
        self.output_path = output_path
        self.timed_out = timed_out


@dataclass
class NotebookRecord:
    """How one notebook went, as stored in the manifest."""

    name: str
    status: str = "pending"  # pending | ok | failed | timeout
    wall_s: float | None = None
    executed_notebook: str | None = None
    out_dir: str | None = None
    metrics_file: str | None = None
    error: str | None = None
    failed_cell: int | None = None
    kernel_log: str | None = None  # kept only when the kernel process printed something


@dataclass
class RunReport:
    """Result of :func:`run_notebooks` (also written as ``manifest.json``)."""

    preset: str
    out_dir: str
    parameters: dict[str, Any]
    environment: dict[str, Any]
    started: str
    finished: str | None = None
    status: str = "running"  # running | ok | failed
    wall_s: float | None = None
    notebooks: list[NotebookRecord] = field(default_factory=list)

    @property
    def manifest_path(self) -> Path:
        """Where the manifest of this run lives."""
        return Path(self.out_dir) / MANIFEST_FILE

    def save(self) -> Path:
        """Write the manifest atomically and return its path."""
        return atomic_write_json(self.manifest_path, asdict(self))


def default_notebooks_dir() -> Path:
    """The repository's ``notebooks/`` folder (next to the ``pecop_lib`` package)."""
    return Path(__file__).resolve().parent.parent / "notebooks"


def discover_notebooks(folder: str | os.PathLike[str] | None = None, only: Sequence[str] | None = None) -> list[Path]:
    """List the numbered notebooks of ``folder`` in numeric order.

    Args:
        folder: Folder to scan; defaults to :func:`default_notebooks_dir`.
        only: Selectors, each a two-digit number (``"03"``, also ``"3"``) or a file stem
            (``"03_vspp_pretraining"``); ``None`` selects all.

    Returns:
        Paths sorted by their number.

    Raises:
        FileNotFoundError: If the folder or no notebook exists.
        ValueError: If a selector matches no notebook.
    """
    root = Path(folder) if folder is not None else default_notebooks_dir()
    if not root.is_dir():
        raise FileNotFoundError(f"notebook folder {root} does not exist; pass the folder holding NN_topic.ipynb files")
    found = sorted((p for p in root.iterdir() if NOTEBOOK_PATTERN.match(p.name)), key=lambda p: (p.name[:2], p.name))
    if not found:
        raise FileNotFoundError(f"no notebooks named NN_topic.ipynb in {root}")
    if only is None:
        return found
    chosen: list[Path] = []
    for selector in only:
        sel = str(selector).removesuffix(".ipynb")
        matches = [p for p in found if p.stem == sel or (sel.isdigit() and int(sel) == int(p.name[:2]))]
        if not matches:
            raise ValueError(f"--only {selector!r} matches no notebook in {root}; available: {[p.stem for p in found]}")
        chosen.extend(m for m in matches if m not in chosen)
    return sorted(chosen, key=lambda p: p.name)


def declared_parameters(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The names and defaults declared in a notebook's ``parameters`` cell.

    Uses :func:`papermill.inspect_notebook`.

    Raises:
        NotebookParameterError: If the notebook has no cell tagged ``parameters``.
    """
    import papermill

    declared = papermill.inspect_notebook(str(path))
    if not declared:
        raise NotebookParameterError(
            f"{path} has no code cell tagged 'parameters' (or it declares nothing); "
            "tag the first code cell 'parameters' and declare PRESET, DEVICE, OUT_DIR, INTERACTIVE in it"
        )
    return {name: info.get("default") for name, info in declared.items()}


def validate_parameters(path: str | os.PathLike[str], parameters: dict[str, Any]) -> None:
    """Refuse parameters that a notebook does not declare (papermill would only warn).

    Raises:
        NotebookParameterError: Naming the notebook, the unknown parameter, a close match if any,
            and the declared names.
    """
    declared = declared_parameters(path)
    for name in parameters:
        if name not in declared:
            close = difflib.get_close_matches(name, declared, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise NotebookParameterError(
                f"parameter {name!r}{hint} is not declared in the parameters cell of {Path(path).name}; "
                f"declared: {', '.join(sorted(declared))}"
            )


NON_FINITE_WORDS = frozenset({"nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"})
"""Command-line words read as the float they name (not Python literals), so that the config's finiteness check
names them instead of a type error."""


def _literal(text: str) -> Any:
    """A command-line value: a Python literal when it parses as one (``3``, ``True``, ``None``), a float for
    ``nan`` / ``inf`` (:data:`NON_FINITE_WORDS`), else the text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return float(text) if text.strip().lower() in NON_FINITE_WORDS else text


def parse_parameter(assignment: str) -> tuple[str, Any]:
    """Parse ``NAME=VALUE`` from the command line (VALUE as a Python literal, else a string).

    Raises:
        ValueError: If there is no ``=`` or the name is not an identifier.
    """
    name, sep, value = assignment.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise ValueError(f"notebook parameter {assignment!r} must look like NAME=VALUE, e.g. SEED=1")
    return name, _literal(value.strip())


def headless() -> contextlib.AbstractContextManager[None]:
    """Set ``PECOP_HEADLESS=1`` for kernels started inside the block (they inherit the environment)."""
    return environ(**{HEADLESS_ENV: "1"})


def _timed_out_cell(output_path: Path, message: str) -> int | None:
    """Find the index of the cell whose source starts the preview in nbclient's timeout message."""
    preview = message.split("Here is a preview of the cell contents:", 1)[-1]
    lines = [ln.strip() for ln in preview.splitlines() if ln.strip() and not set(ln.strip()) <= {"-"}]
    if not lines or not output_path.exists():
        return None
    cells = json.loads(output_path.read_text())["cells"]
    for index, cell in enumerate(cells):
        source = "".join(cell.get("source", ""))
        if cell.get("cell_type") == "code" and lines[0] in source:
            return index
    return None


def _failure_text(record: NotebookRecord) -> str | None:
    """``None`` for a notebook that ran ok, else ``"failed in cell 3"`` or ``"timed out in cell 3"``
    (without the cell when it is unknown)."""
    if record.status == "ok":
        return None
    what = "timed out" if record.status == "timeout" else "failed"
    return f"{what} in cell {record.failed_cell}" if record.failed_cell is not None else what


def run_summary(report: RunReport) -> list[str]:
    """Where a finished run put things: output folder, manifest, executed notebooks, figures.

    Paths under the working directory are shown relative to it.

    Args:
        report: The report returned by :func:`run_notebooks`.

    Returns:
        The lines to print.
    """
    out = Path(report.out_dir)
    shown = out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out
    figures = sum(len(list((out / rec.name / "figures").glob("*.png"))) for rec in report.notebooks)
    return [
        f"pecop: {len(report.notebooks)} notebook(s) ran with preset {report.preset!r} in "
        f"{format_duration(report.wall_s or 0.0)}",
        f"  output folder:      {shown}/",
        f"  manifest:           {shown / MANIFEST_FILE}",
        f"  executed notebooks: {shown}/NN_*.ipynb",
        f"  figures:            {shown}/*/figures/ ({figures} PNG file{'' if figures == 1 else 's'})",
    ]


KERNEL_LOG_SUFFIX = ".kernel.log"
"""``<out>/<stem>.kernel.log``: what the notebook's kernel process printed outside its cells."""

KERNEL_LOG_TAIL_LINES = 20
"""How many last lines of the kernel log a failure message quotes."""


def _kernel_log_tail(log: Path) -> str:
    """The last :data:`KERNEL_LOG_TAIL_LINES` lines of a kernel log, or a note that it is empty."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    if not lines:
        return "the kernel process printed nothing"
    tail = "\n".join(f"    {ln}" for ln in lines[-KERNEL_LOG_TAIL_LINES:])
    return f"the kernel process's last output ({log}):\n{tail}"


def _run_one(path: Path, output_path: Path, parameters: dict[str, Any], *, kernel: str, cell_timeout: int,
             progress: bool, log_output: bool, kernel_log: Path) -> None:
    """Execute one notebook; translate papermill/nbclient failures into :class:`NotebookRunError`.

    The kernel process's own stdout and stderr are appended to ``kernel_log``.
    """
    import papermill
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    from pecop_lib.notebook_kernel import kernel_config

    try:
        papermill.execute_notebook(
            str(path), str(output_path), parameters=parameters, kernel_name=kernel, cwd=str(path.parent),
            progress_bar=progress, log_output=log_output, execution_timeout=cell_timeout,
            config=kernel_config(str(kernel_log)),
        )
    except papermill.PapermillExecutionError as exc:
        first = next((ln for ln in exc.source.splitlines() if ln.strip()), "")
        raise NotebookRunError(
            f"notebook {path.stem} failed in cell {exc.cell_index} (execution count {exc.exec_count}, "
            f"starting {first!r}): {exc.ename}: {exc.evalue}. Executed notebook kept at {output_path}",
            notebook=path.stem, cell=exc.cell_index, output_path=output_path,
        ) from exc
    except CellTimeoutError as exc:
        cell = _timed_out_cell(output_path, str(exc))
        raise NotebookRunError(
            f"notebook {path.stem} timed out in cell {cell} after the per-cell limit of {cell_timeout} s; "
            f"raise it with --cell-timeout. Partial notebook kept at {output_path}. {exc}",
            notebook=path.stem, cell=cell, output_path=output_path, timed_out=True,
        ) from exc
    except DeadKernelError as exc:
        raise NotebookRunError(
            f"notebook {path.stem}: its kernel died ({exc}). A kernel killed without a word was most often "
            "killed by the system for lack of memory (see `dmesg`; try a smaller preset or batch size); "
            f"{_kernel_log_tail(kernel_log)}\nPartial notebook kept at {output_path}",
            notebook=path.stem, cell=None, output_path=output_path,
        ) from exc


def run_notebooks(
    preset: str = "auto",
    *,
    only: Sequence[str] | None = None,
    device: str = "auto",
    out: str | os.PathLike[str] | None = None,
    parameters: dict[str, Any] | None = None,
    notebooks_dir: str | os.PathLike[str] | None = None,
    cell_timeout: int | None = None,
    kernel: str | None = None,
    progress: bool | None = None,
    log_output: bool = False,
) -> RunReport:
    """Run the numbered notebooks headlessly; the Python face of ``pecop notebooks run``.

    Prints one line to stdout when each notebook starts and one when it ends (also when it fails),
    with an estimate of the time left (see :class:`SequenceProgress`).

    Args:
        preset: A preset name or ``auto`` (:func:`pecop_lib.config.auto_preset`: ``tutorial`` with a
            GPU, else ``course``).
        only: Notebook selectors (see :func:`discover_notebooks`); ``None`` runs all.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; checked before anything runs.
        out: Output folder; defaults to ``runs/<preset>``.
        parameters: Extra notebook parameters; each must be declared by every selected notebook.
        notebooks_dir: Where the notebooks live; defaults to the repository's ``notebooks/``.
        cell_timeout: Per-cell limit in seconds; defaults to the preset's ``runner_cell_timeout_s``.
        kernel: Jupyter kernel name; defaults to the preset's ``runner_kernel`` (``python3``).
        progress: Show papermill's per-cell progress bar; ``None``: only when stdout is a terminal.
        log_output: Stream cell output to the log (useful in CI logs).

    Returns:
        The run report; the same content is in ``<out>/manifest.json``.

    Raises:
        pecop_lib.config.ConfigError: Unknown preset or unusable device.
        NotebookParameterError: A parameter is not declared by a notebook (nothing has run yet).
        NotebookRunError: A notebook failed or timed out (the manifest records it).
        RunFolderLockedError: Another live sequence writes into ``out`` (:func:`~pecop_lib.run_lock.run_lock`).
    """
    preset = auto_preset() if preset == "auto" else preset
    cfg = resolve(preset, device=device)
    resolve_device(device)
    cell_timeout = cell_timeout if cell_timeout is not None else cfg.runner_cell_timeout_s
    kernel = kernel or cfg.runner_kernel
    out_root = Path(out if out is not None else Path("runs") / preset).resolve()
    extra = dict(parameters or {})
    clash = set(extra) & set(RUNNER_PARAMETERS)
    if clash:
        raise NotebookParameterError(
            f"{sorted(clash)} are set by the runner itself; use the preset/device/out options instead"
        )

    paths = discover_notebooks(notebooks_dir, only)
    for path in paths:
        validate_parameters(path, {**dict.fromkeys(RUNNER_PARAMETERS), **extra})

    cell_bars = sys.stdout.isatty() if progress is None else progress
    expected = expected_seconds(paths, preset, previous_wall_times(out_root, preset))
    lines = SequenceProgress([p.stem for p in paths], expected)
    with run_lock(out_root):  # one sequence per output folder
        report = RunReport(
            preset=preset, out_dir=str(out_root), parameters={"device": device, "cell_timeout_s": cell_timeout,
                                                              "kernel": kernel, **extra},
            environment=environment_report(device), started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            notebooks=[NotebookRecord(name=p.stem) for p in paths],
        )
        report.save()
        t_run = time.perf_counter()
        with headless():
            for path, record in zip(paths, report.notebooks):
                nb_out = out_root / path.stem
                executed = out_root / path.name
                kernel_log = out_root / f"{path.stem}{KERNEL_LOG_SUFFIX}"
                kernel_log.unlink(missing_ok=True)  # the previous run's, like its executed notebook
                record.out_dir, record.executed_notebook = str(nb_out), str(executed)
                params = {"PRESET": preset, "DEVICE": device, "OUT_DIR": str(nb_out), "INTERACTIVE": False, **extra}
                print(lines.started(notebook_stage(path), time.perf_counter() - t_run), flush=True)
                t0 = time.perf_counter()
                try:
                    _run_one(path, executed, params, kernel=kernel, cell_timeout=cell_timeout, progress=cell_bars,
                             log_output=log_output, kernel_log=kernel_log)
                    metrics = nb_out / METRICS_FILE
                    if not metrics.exists():
                        raise NotebookRunError(
                            f"notebook {path.stem} ran but wrote no {METRICS_FILE} into {nb_out}; every notebook "
                            "must call pecop_lib.write_metrics(OUT_DIR, ...)", notebook=path.stem, cell=None,
                            output_path=executed,
                        )
                except NotebookRunError as exc:
                    record.status = "timeout" if exc.timed_out else "failed"
                    record.error, record.failed_cell = str(exc), exc.cell
                    raise
                else:
                    record.status = "ok"
                    record.metrics_file = str(metrics)
                finally:
                    if kernel_log.exists() and kernel_log.stat().st_size == 0:
                        kernel_log.unlink()
                    record.kernel_log = str(kernel_log) if kernel_log.exists() else None
                    record.wall_s = round(time.perf_counter() - t0, 2)
                    report.status = "failed" if record.status in ("failed", "timeout") else report.status
                    report.wall_s = round(time.perf_counter() - t_run, 2)
                    report.finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
                    report.save()
                    if record.status != "pending":  # pending: interrupted, not ended
                        print(lines.ended(record.wall_s, report.wall_s, _failure_text(record)), flush=True)
        report.status = "ok"
        report.save()
        return report
