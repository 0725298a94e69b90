"""What the runner prints while a notebook sequence runs: one line per notebook with its stage (the
notebook's first heading) and an estimate of the time left, from the wall times of the last run in the same
output folder or, without one, from measured times per preset (:data:`EXPECTED_SECONDS`)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

MANIFEST_FILE = "manifest.json"

EXPECTED_SECONDS: dict[str, dict[str, float]] = {
    "smoke": {"00": 10, "01": 17, "02": 12, "03": 20, "04": 45, "05": 23, "06": 40, "07": 64, "08": 26, "09": 28},
    "course": {"00": 9, "01": 109, "02": 12, "03": 544, "04": 182, "05": 59, "06": 315, "07": 971, "08": 71, "09": 78},
}
"""Expected wall seconds per preset and two-digit notebook number on a 2-core CPU: the time-left
estimate for notebooks that did not finish in the output folder's previous run of the same preset
(see :func:`expected_seconds`). Measured from empty caches on the 2-core development machine, nothing
else running: the record of docs/course.md section 18 (reports/course-cpu/, commit 0c114e4)."""

_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)(?:\s+#+)?\s*$", re.MULTILINE)
_HEADING_NUMBER = re.compile(r"^\d{1,2}\s*[·.:)\-–—]\s*")
STAGE_CHARS = 60
"""Longest stage description in the progress lines."""


def notebook_stage(path: str | os.PathLike[str]) -> str:
    """A short description of a notebook for the progress lines: its first markdown heading, trimmed.

    ``# 03 · VSPP and continual pretraining`` gives ``VSPP and continual pretraining``: the leading
    notebook number goes, so does a subtitle after ``": "``, and the rest is cut to
    :data:`STAGE_CHARS` characters.

    Args:
        path: The notebook file.

    Returns:
        The description, or ``""`` when no markdown cell has a heading.
    """
    cells = json.loads(Path(path).read_text(encoding="utf-8")).get("cells", [])
    for cell in cells:
        if cell.get("cell_type") != "markdown":
            continue
        match = _HEADING.search("".join(cell.get("source", "")))
        if match:
            title = _HEADING_NUMBER.sub("", match.group(1).replace("*", "").replace("`", ""))
            title = title.split(": ", 1)[0].strip()
            return title if len(title) <= STAGE_CHARS else title[:STAGE_CHARS - 1].rstrip() + "…"
    return ""


def previous_wall_times(out: str | os.PathLike[str], preset: str) -> dict[str, float]:
    """Wall seconds of the notebooks that finished in the output folder's previous run of ``preset``.

    Args:
        out: The output folder; its ``manifest.json`` (written by the previous run) is read.
        preset: Only a manifest of this preset counts.

    Returns:
        Notebook stem -> wall seconds for the notebooks with status ``ok``; empty when there is no
        readable manifest of that preset.
    """
    try:
        manifest = json.loads((Path(out) / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if manifest.get("preset") != preset:
        return {}
    return {rec["name"]: float(rec["wall_s"]) for rec in manifest.get("notebooks", [])
            if rec.get("status") == "ok" and rec.get("wall_s")}


def expected_seconds(paths: Sequence[Path], preset: str, previous: dict[str, float]) -> list[float | None]:
    """The expected wall seconds of each notebook: the previous run's, else :data:`EXPECTED_SECONDS`.

    Args:
        paths: The notebooks of this run, in run order.
        preset: The resolved preset.
        previous: Output of :func:`previous_wall_times`.

    Returns:
        One value per notebook; ``None`` where neither source knows the notebook.
    """
    table = EXPECTED_SECONDS.get(preset, {})
    return [previous.get(p.stem, table.get(p.name[:2])) for p in paths]


def estimate_left(expected: Sequence[float | None], finished: Sequence[float], start: int) -> float | None:
    """Seconds left for notebooks ``start`` onwards, scaled by how the finished ones did.

    The scale is the summed wall time of the finished notebooks (``finished[i]`` is notebook ``i``)
    over their summed expectation; 1 before any has finished.

    Args:
        expected: Expected seconds per notebook, in run order (``None``: unknown).
        finished: Wall seconds of the notebooks already finished, in run order.
        start: Index of the first notebook still to count.

    Returns:
        The estimate, or ``None`` when a notebook still to count has no expectation.
    """
    rest = [e for e in expected[start:] if e is not None]
    if len(rest) < len(expected) - start:
        return None
    pairs = [(wall, exp) for wall, exp in zip(finished, expected) if exp]
    scale = sum(w for w, _ in pairs) / sum(e for _, e in pairs) if pairs else 1.0
    return scale * sum(rest)


def format_duration(seconds: float) -> str:
    """``"12 s"``, ``"4 min 12 s"`` or ``"1 h 5 min"``."""
    total = round(seconds)
    if total < 60:
        return f"{total} s"
    if total < 3600:
        return f"{total // 60} min {total % 60} s"
    return f"{total // 3600} h {total % 3600 // 60} min"


def format_estimate(seconds: float) -> str:
    """``"under a minute"``, ``"about 6 min"`` or ``"about 1 h 5 min"`` (rounded to minutes)."""
    minutes = round(seconds / 60)
    if minutes < 1:
        return "under a minute"
    if minutes < 60:
        return f"about {minutes} min"
    return f"about {minutes // 60} h {minutes % 60} min"


@dataclass
class SequenceProgress:
    """The progress lines of one run, one when a notebook starts and one when it ends.

    Attributes:
        stems: The notebooks of the run, in order.
        expected: Expected seconds per notebook (:func:`expected_seconds`).
        finished: Wall seconds of the notebooks ended so far.
    """

    stems: list[str]
    expected: list[float | None]
    finished: list[float] = field(default_factory=list)

    def _prefix(self) -> str:
        index = len(self.finished)
        return f"[{index + 1}/{len(self.stems)}] {self.stems[index]}"

    def started(self, stage: str, elapsed: float) -> str:
        """The line for the next notebook starting.

        Args:
            stage: Its description (:func:`notebook_stage`); may be empty.
            elapsed: Seconds since the sequence started.
        """
        left = estimate_left(self.expected, self.finished, len(self.finished))
        when = f"{format_estimate(left)} left in the sequence" if left is not None else \
            f"{format_duration(elapsed)} into the sequence"
        return f"{self._prefix()}{': ' + stage if stage else ''} ... started, {when}"

    def ended(self, wall: float, elapsed: float, failure: str | None = None) -> str:
        """The line for the running notebook ending; records its wall time.

        Args:
            wall: Its wall seconds.
            elapsed: Seconds since the sequence started, this notebook included.
            failure: ``None`` when it succeeded, else what happened (``"failed in cell 3"``).
        """
        prefix = self._prefix()
        self.finished.append(wall)
        if failure is not None:
            return f"{prefix} {failure} after {format_duration(wall)}"
        done = f"{prefix} done in {format_duration(wall)}"
        if len(self.finished) == len(self.stems):
            return f"{done}; sequence done in {format_duration(elapsed)}"
        left = estimate_left(self.expected, self.finished, len(self.finished))
        return f"{done}; {format_estimate(left)} left" if left is not None else \
            f"{done}; {format_duration(elapsed)} elapsed"
