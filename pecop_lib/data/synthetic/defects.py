"""The known defects of every synthetic AQA video, as frame intervals of the video its loader reads.

The generators record, in each AQA dataset's ``synthetic_latents.json``, a ``"defects"`` list per
record: ``{"kind": str, "start": int, "end": int}``, sorted by ``start`` (then ``end``, ``kind``),
``end`` exclusive. ``start``/``end`` are 0-based **positions of the record's frame source**, the
index space of ``dataset.source(i).read(positions)``:

==============  ================================================================================
dataset         position ``p`` is
==============  ================================================================================
MTL-AQA         the event video's frame file ``p + 1`` (CoRe layout: the source is the whole event
                folder ``new_total_frames_256s/<event>``, 1-based; the dive spans positions
                ``start_frame - 1 .. end_frame - 1``)
FineDiving      the clip folder's ``p``-th file (frame number ``first + p``)
JIGSAWS         the trial folder's ``p``-th file
PD4T            the mp4's ``p``-th decoded frame
==============  ================================================================================

Kinds (:data:`KINDS`) and the rules that set them:

* ``hesitation`` (PD4T): the frames whose time lies in a pause between two cycles (the limb rests
  closed, frames are still). JIGSAWS: the frames of each pause, the instrument tip holding still.
* ``amplitude_decrement`` (PD4T, only when the measured decrement ``d`` is at least the first grade
  edge of :data:`~pecop_lib.data.synthetic.motor.GRADE_EDGES`): the frames where the amplitude
  envelope is below ``1 - d/2`` of its start, i.e. the second half of the video
  (:func:`~pecop_lib.data.synthetic.motor.video_defects`).
* ``tissue_hit`` (JIGSAWS): the three frames of a hit's red flash; ``needle_drop``: the frames the
  needle is out of the instrument (the tip goes down to fetch it).
* ``bad_entry`` (MTL-AQA, FineDiving): the entry phase, from the first entry frame to the end of the
  dive, when the entry's execution deduction reaches
  :data:`~pecop_lib.data.synthetic.diving.ENTRY_FAULT` points
  (:func:`~pecop_lib.data.synthetic.diving.entry_defects`).

:func:`defect_intervals` reads them back.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from pecop_lib.atomic import read_json
from pecop_lib.data.errors import DataFormatError
from pecop_lib.data.synthetic.common import LATENTS_FILE, MANIFEST

KINDS: dict[str, tuple[str, ...]] = {
    "MTL-AQA": ("bad_entry",),
    "FineDiving": ("bad_entry",),
    "JIGSAWS": ("tissue_hit", "needle_drop", "hesitation"),
    "PD4T": ("hesitation", "amplitude_decrement"),
}
"""The defect kinds each AQA dataset records (the domain-general action set records none)."""
FIRST_VERSION = 6
"""The first generator version that records defects."""


@dataclass(frozen=True)
class Defect:
    """One known defect of a video: frames ``start .. end - 1`` (positions of the record's frame source).

    Attributes:
        kind: One of the kinds of :data:`KINDS`.
        start: First frame position (0-based).
        end: One past the last frame position.
    """

    kind: str
    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"a defect needs 0 <= start < end, got {self}")

    def as_dict(self) -> dict[str, Any]:
        """The latents-file form ``{"kind", "start", "end"}``."""
        return {"kind": self.kind, "start": self.start, "end": self.end}


def defect_list(found: Iterable[tuple[str, int, int]], offset: int = 0) -> list[dict[str, Any]]:
    """The latents-file form of ``(kind, start, end)`` intervals, shifted by ``offset``, sorted by start.

    Args:
        found: Intervals in the generator's own frame indices (end exclusive).
        offset: Added to both ends (the position of the generator's frame 0 in the record's source).
    """
    defects = [Defect(str(kind), int(start) + offset, int(end) + offset) for kind, start, end in found]
    return [d.as_dict() for d in sorted(defects, key=lambda d: (d.start, d.end, d.kind))]


def _parse(path: Path, record_id: str, value: Any) -> tuple[Defect, ...]:
    try:
        return tuple(Defect(str(d["kind"]), int(d["start"]), int(d["end"])) for d in value)
    except (TypeError, KeyError, ValueError) as exc:
        raise DataFormatError(f"{path}: record {record_id!r} has malformed defects {value!r} ({exc}); "
                              "delete the world's folder and generate it again") from exc


def _stale(root: Path, path: Path, record_id: str) -> DataFormatError:
    world = root.parent
    manifest, version = world / MANIFEST, "an older generator"
    if manifest.is_file():
        found = read_json(manifest, fix=f"delete {world} and generate the world again")
        if isinstance(found, dict) and found.get("generator_version") is not None:
            version = f"generator version {found['generator_version']}"
    return DataFormatError(
        f"{path}: record {record_id!r} has no 'defects': the world was written by {version}, before defects "
        f"were recorded (generator version {FIRST_VERSION}); delete the cached world {world} and generate it "
        "again (synthetic_world() or generate_world())"
    )


StrPath = str | os.PathLike[str]


@overload
def defect_intervals(dataset_root: StrPath, record_id: None = None, *,
                     task: str | None = None) -> dict[str, tuple[Defect, ...]]: ...


@overload
def defect_intervals(dataset_root: StrPath, record_id: str, *, task: str | None = None) -> tuple[Defect, ...]: ...


def defect_intervals(
    dataset_root: StrPath, record_id: str | None = None, *, task: str | None = None
) -> dict[str, tuple[Defect, ...]] | tuple[Defect, ...]:
    """The known defects of a synthetic AQA dataset's videos (module docstring: kinds and positions).

    Args:
        dataset_root: A dataset folder of a generated world (e.g. ``world["JIGSAWS"]``).
        record_id: One record's latents key (the record id: ``"01_05"``, ``"<video>/<clip>"``,
            ``"Suturing_B001"``; PD4T: ``"<task>/<video_id>"``, or the video id with ``task``); ``None``: every
            record.
        task: Keep one task's records, keyed by the loader's record id (PD4T's latents key its videos
            ``"<task>/<video_id>"``, since one video id names a video of every task); datasets whose keys
            are record ids already are returned as they are.

    Returns:
        ``record id -> defects`` (sorted by start; empty for a video without defects), or the one
        record's defects when ``record_id`` is given.

    Raises:
        DataFormatError: When the folder has no latents file (a real dataset: its defects are not
            known), is the domain-general action set (no defects), was generated before defects
            were recorded (delete the cached world to regenerate it), or lacks ``record_id``.
    """
    root = Path(dataset_root)
    path = root / LATENTS_FILE
    if not path.is_file():
        raise DataFormatError(
            f"{path} does not exist: {root} is not a dataset folder of a generated synthetic world (a real "
            "dataset's defects are not known); pass e.g. synthetic_world()['JIGSAWS']"
        )
    latents = read_json(path, fix=f"delete {root.parent} and generate the world again")
    if not isinstance(latents, dict):
        raise DataFormatError(f"{path}: expected a dict record id -> latents; delete {root.parent} and "
                              "generate the world again")
    if root.name == "Kinetics-synth":
        raise DataFormatError(f"{path}: the domain-general action set records no defects; only the AQA "
                              f"datasets do ({', '.join(KINDS)})")
    if task is not None and any(isinstance(lat, dict) and "task" in lat for lat in latents.values()):
        prefix = f"{task}/"
        latents = {k.removeprefix(prefix): v for k, v in latents.items() if k.startswith(prefix)}
        if not latents:
            raise DataFormatError(f"{path}: no record of task {task!r}")
    if record_id is not None:
        if record_id not in latents:
            pd4t = any(isinstance(lat, dict) and "task" in lat for lat in latents.values())
            hint = " (PD4T's keys are '<task>/<video_id>')" if pd4t else ""
            raise DataFormatError(f"{path}: no record {record_id!r}{hint}")
        latents = {record_id: latents[record_id]}
    out = {}
    for key, lat in latents.items():
        if not isinstance(lat, dict) or "defects" not in lat:
            raise _stale(root, path, key)
        out[key] = _parse(path, key, lat["defects"])
    return out[record_id] if record_id is not None else out
