"""PD4T (Parkinson's disease, 4 motor tasks) in the release format reported by third parties.

Nothing of PD4T's annotation format is published in the official repository; this module follows
the third-party description and keeps every part configurable::

    Annotations/<Task>/train.csv, test.csv      no header: video_id, num_frames, score (0..4)
    Videos/<Task>/<subject>/<stem>.mp4           video_id = "<stem>_<subject>" (3-digit subject)

Tasks: ``Gait``, ``Finger tapping``, ``Hand movement``, ``Leg agility``. Train and test must be
subject-disjoint (checked). Frame selection has no official rule; this package uses
``np.linspace`` over the decodable frames (default 103 frames, the USDL/CoRe clip length).
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from pecop_lib.data.dataset import AQADataset, AQARecord
from pecop_lib.data.errors import DataFormatError
from pecop_lib.data.files import read_text
from pecop_lib.data.formats.fields import Field, check_value, parse_number
from pecop_lib.data.formats.splits import check_split
from pecop_lib.data.sampling import linspace_positions
from pecop_lib.data.source_cache import cached_source
from pecop_lib.data.transforms import ClipTransform, official_transform
from pecop_lib.data.video import FrameSource

TASKS = ("Gait", "Finger tapping", "Hand movement", "Leg agility")
VIDEO_TEMPLATE = "Videos/{task}/{subject}/{stem}.mp4"
NUM_FRAMES = 103
FRAME_COUNT_TOLERANCE = 1
"""Decodable and declared frame counts may differ by this much (tools count a last partial frame differently)."""
PACE = {"Gait": 3, "Finger tapping": 1, "Hand movement": 1, "Leg agility": 1}
"""PECoP's normal pace ``fr`` per task (3 for the long gait videos)."""
PD4T_FIELDS: tuple[Field, ...] = (
    Field("num_frames", low=1, integer=True),
    Field("score", low=0, high=4, integer=True),
)
"""The numeric columns of a PD4T CSV row (after the video id): a frame count and the UPDRS score 0..4."""
_VIDEO_ID = re.compile(r"(?P<stem>.+)_(?P<subject>\d{3})")


@dataclass(frozen=True)
class PD4TEntry:
    """One CSV row: ``video_id, num_frames, score``."""

    video_id: str
    num_frames: int
    score: int

    @property
    def subject(self) -> str:
        """The 3-digit subject id at the end of the video id."""
        return _VIDEO_ID.fullmatch(self.video_id)["subject"]

    @property
    def stem(self) -> str:
        """The video file stem (``<visit>`` or ``<visit>_<l|r>``)."""
        return _VIDEO_ID.fullmatch(self.video_id)["stem"]


def read_csv(path: str | os.PathLike[str]) -> list[PD4TEntry]:
    """Read a header-less ``video_id, num_frames, score`` CSV, validating every row.

    Raises:
        DataFormatError: Naming file and line for a wrong column count, a video id without the
            ``_<3-digit subject>`` suffix, a non-positive frame count or a score outside 0..4.
    """
    path = Path(path)
    text = read_text(path, "PD4T annotation file")
    entries = []
    for number, row in enumerate(csv.reader(io.StringIO(text, newline="")), 1):
        if not row:
            continue
        where = f"{path}:{number}"
        if len(row) != 3:
            raise DataFormatError(f"{where}: expected 3 columns (video_id, num_frames, score), got {row!r}")
        video_id = row[0].strip()
        if not _VIDEO_ID.fullmatch(video_id):
            raise DataFormatError(f"{where}: video id {video_id!r} does not end with '_<3-digit subject>'")
        values = {f.name: check_value(f, parse_number(cell, f.name, where), where)
                  for f, cell in zip(PD4T_FIELDS, row[1:])}
        entries.append(PD4TEntry(video_id, values["num_frames"], values["score"]))
    if not entries:
        raise DataFormatError(f"{path}: no rows")
    return entries


def check_subject_disjoint(train: list[PD4TEntry], test: list[PD4TEntry], where: str) -> None:
    """Raise if a subject appears in both train and test (subject-disjoint split required)."""
    shared = sorted({e.subject for e in train} & {e.subject for e in test})
    if shared:
        raise DataFormatError(f"{where}: subjects {shared} appear in both train.csv and test.csv; the split must be subject-disjoint")


class PD4T(AQADataset):
    """One PD4T task: mp4 videos, UPDRS scores 0..4, linspace frame selection.

    Args:
        root: Dataset root (``Annotations/`` and ``Videos/``).
        task: One of :data:`TASKS`.
        split: ``"train"`` or ``"test"``.
        video_template: Path of a video relative to ``root``, with ``{task}``, ``{subject}``, ``{stem}``.
        num_frames: Frames per clip (linspace over the decodable frames).
        transform: Default: random crop + flip in training, centre crop in evaluation, no resize.
        resize: Flavour of the default transform (``bilinear`` or ``official``:
            :func:`~pecop_lib.data.transforms.official_transform`).
        seed, clip_frames, train: See :class:`AQADataset`.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        task: str,
        split: Literal["train", "test"] = "train",
        *,
        video_template: str = VIDEO_TEMPLATE,
        num_frames: int = NUM_FRAMES,
        transform: ClipTransform | None = None,
        crop: int = 224,
        resize: str = "bilinear",
        seed: int = 0,
        clip_frames: int | None = None,
        train: bool | None = None,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"PD4T task must be one of {TASKS}, got {task!r}")
        if split not in ("train", "test"):
            raise ValueError(f"PD4T split must be 'train' or 'test', got {split!r}")
        self.root = Path(root)
        folder = self.root / "Annotations" / task
        train_rows, test_rows = read_csv(folder / "train.csv"), read_csv(folder / "test.csv")
        for rows, name in ((train_rows, "train.csv"), (test_rows, "test.csv")):
            check_split([e.video_id for e in rows], folder / name)
        check_subject_disjoint(train_rows, test_rows, str(folder))
        self.entries = train_rows if split == "train" else test_rows
        self.task, self.video_template, self.num_frames = task, video_template, num_frames
        records = [
            AQARecord(id=e.video_id, key=e.video_id, score=float(e.score), group=task,
                      extras={"task": task, "subject": e.subject, "num_frames": e.num_frames})
            for e in self.entries
        ]
        train = split == "train" if train is None else train
        super().__init__(records,
                         transform or official_transform("plain", train=train, crop=crop, resize=resize),
                         train=train, seed=seed, clip_frames=clip_frames)

    def video_path(self, index: int) -> Path:
        """The mp4 of record ``index``."""
        e = self.entries[index]
        return self.root / self.video_template.format(task=self.task, subject=e.subject, stem=e.stem)

    def media_path(self, index: int) -> Path:
        """As :meth:`video_path` (nothing is opened)."""
        return self.video_path(index)

    def source(self, index: int) -> FrameSource:
        source = cached_source(self.video_path(index))
        declared = self.entries[index].num_frames
        if abs(len(source) - declared) > FRAME_COUNT_TOLERANCE:
            raise DataFormatError(
                f"{source.path}: {len(source)} decodable frames, but {self.task}'s annotation file declares {declared} "
                f"for {self.entries[index].video_id}; the video is truncated or another one: copy it again, or correct "
                "num_frames in the CSV"
            )
        return source

    def positions(self, index: int, source: FrameSource, rng: np.random.Generator) -> np.ndarray:
        return linspace_positions(len(source), self.num_frames)
