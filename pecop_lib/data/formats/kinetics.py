"""Kinetics-400-style layout, used by the synthetic domain-general action set.

Layout under ``root`` (as the Kinetics download scripts produce it)::

    annotations/train.csv, annotations/val.csv    header: label,youtube_id,time_start,time_end,split
    train/<label>/<youtube_id>_<time_start:06d>_<time_end:06d>.mp4
    val/<label>/...

The dataset yields short contiguous clips with their class index, for (pre)training a backbone
from scratch when no Kinetics weights are available.
"""

from __future__ import annotations

import copy
import csv
import io
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from pecop_lib.data.errors import DataFormatError
from pecop_lib.data.files import read_text
from pecop_lib.data.formats.fields import Field, check_value, parse_number
from pecop_lib.data.sampling import contiguous_window
from pecop_lib.data.source_cache import cached_source
from pecop_lib.data.transforms import ClipTransform, frames_of

TIME = Field("time", low=0, integer=True)
"""A clip's start or end second in the source video (whole seconds, as the Kinetics lists give them)."""
CSV_HEADER = ("label", "youtube_id", "time_start", "time_end", "split")


@dataclass(frozen=True)
class KineticsEntry:
    """One CSV row."""

    label: str
    youtube_id: str
    time_start: int
    time_end: int
    split: str

    def relative_path(self) -> Path:
        """``<split>/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4``."""
        return Path(self.split) / self.label / f"{self.youtube_id}_{self.time_start:06d}_{self.time_end:06d}.mp4"


def read_csv(path: str | os.PathLike[str]) -> list[KineticsEntry]:
    """Read a Kinetics annotation CSV (with header), validating columns and times."""
    path = Path(path)
    reader = csv.DictReader(io.StringIO(read_text(path, "Kinetics annotation file"), newline=""))
    if tuple(reader.fieldnames or ()) != CSV_HEADER:
        raise DataFormatError(f"{path}: header must be {','.join(CSV_HEADER)}, got {reader.fieldnames}")
    entries = []
    for number, row in enumerate(reader, 2):
        where = f"{path}:{number}"
        if None in row or None in row.values():
            raise DataFormatError(f"{where}: malformed row {row!r} (expected the {len(CSV_HEADER)} header columns)")
        start, end = (int(check_value(TIME, parse_number(row[name], name, where), where, name))
                      for name in ("time_start", "time_end"))
        entry = KineticsEntry(row["label"], row["youtube_id"], start, end, row["split"])
        if entry.time_end <= entry.time_start:
            raise DataFormatError(f"{where}: time_end {entry.time_end} <= time_start {entry.time_start}")
        entries.append(entry)
    return entries


class KineticsActions(Dataset):
    """Short clips of the Kinetics-style action set with class indices.

    Args:
        root: Dataset root.
        split: ``"train"`` or ``"val"``.
        clip_len: Frames per clip (contiguous; random start in training, centred in evaluation).
        crop: Crop side (random in training).
        transform: Overrides the default crop/flip transform.
        seed: Base seed; samples are a function of ``(seed, epoch, index)``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: Literal["train", "val"] = "train",
        *,
        clip_len: int = 16,
        crop: int = 112,
        transform: ClipTransform | None = None,
        seed: int = 0,
    ) -> None:
        self.root = Path(root)
        self.entries = read_csv(self.root / "annotations" / f"{split}.csv")
        self.classes = sorted({e.label for e in self.entries})
        self.train = split == "train"
        self.clip_len, self.seed, self.epoch = clip_len, int(seed), 0
        # no horizontal flip: it would turn move_left into move_right and clockwise into
        # counter-clockwise (4 of the 13 synthetic classes); random crops keep every label
        self.transform = transform or ClipTransform(resize=None, crop=crop, random_crop=self.train, flip=False)

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        """Select the jitter of ``epoch``."""
        self.epoch = int(epoch)

    def leave_out(self, names: Collection[str]) -> KineticsActions:
        """A copy without the clips of the classes ``names``; the labels keep their indices.

        The classifier keeps one output per class of the whole set, so a backbone trained on the
        copy first (a curriculum) goes on training on the whole set with the same labels.

        Raises:
            ValueError: If a name is not a class of this set, or no clip is left.
        """
        left_out = set(names)
        unknown = sorted(left_out - set(self.classes))
        if unknown:
            raise ValueError(f"{self.root}: no class {unknown} in this action set (its classes: {self.classes})")
        subset = copy.copy(self)
        subset.entries = [e for e in self.entries if e.label not in left_out]
        if not subset.entries:
            raise ValueError(f"{self.root}: leaving out {sorted(left_out)} leaves no clip")
        return subset

    def __getitem__(self, index: int) -> dict[str, Any]:
        entry = self.entries[index]
        video = cached_source(self.root / entry.relative_path(), min_frames=self.clip_len)
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        slack = len(video) - self.clip_len
        start = int(rng.integers(0, slack + 1)) if self.train else slack // 2
        with frames_of(str(video.path)):
            clip = self.transform(video.read(contiguous_window(len(video), self.clip_len, start)), rng)
        return {"clip": clip, "label": torch.tensor(self.classes.index(entry.label)), "id": entry.youtube_id}
