"""The common AQA sample record and the dataset base class every format builds on.

Each dataset module (``formats/``) reads its official files into :class:`AQARecord` s (metadata
only: nothing is decoded) and subclasses :class:`AQADataset`, which turns a record into a sample
dict with the same keys for every dataset:

=================  ==========================  ================================================
key                value                       present for
=================  ==========================  ================================================
``clip``           float32 ``(3, T, H, W)``    all
``score``          float32 scalar              all (final score, GRS or UPDRS score)
``id``             str                         all (record key, e.g. ``"01_05"``)
``group``          str                         all (exemplar group key, see below)
``difficulty``     float32 scalar              MTL-AQA, FineDiving
``judge_scores``   float32 ``(7,)``            MTL-AQA (and FineDiving when annotated)
``subscores``      float32 ``(6,)``            JIGSAWS
``step_labels``    int64 ``(T,)``              FineDiving (sub-action type per sampled frame)
``transitions``    int64 ``(2,)``              FineDiving (first sampled frame of step 2 and 3)
=================  ==========================  ================================================

Exemplar groups: MTL-AQA groups by difficulty (CoRe's ``usingDD``), FineDiving by action type
(TSA's ``action_number_choosing``), JIGSAWS and PD4T by task. A sample is a pure function of
``(seed, epoch, index)``: call :meth:`AQADataset.set_epoch` once per epoch for fresh jitter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pecop_lib.data.sampling import subsample
from pecop_lib.data.transforms import ClipTransform, frames_of
from pecop_lib.data.video import FrameSource


@dataclass(frozen=True)
class AQARecord:
    """One annotated video, as read from the official files (no frames).

    Attributes:
        id: Printable record key (``"01_05"``, ``"Suturing_B001"``, ``"<video>/<clip>"``, ...).
        key: The key as stored in the annotation file (tuple or str).
        score: Ground-truth score (final score, GRS, UPDRS item score).
        group: Exemplar group key (see module docstring).
        difficulty: Degree of difficulty, where the dataset has one.
        judge_scores: Judges' scores in file order (MTL-AQA: 7, unsorted).
        subscores: JIGSAWS' six 1-5 sub-scores.
        extras: Every other annotation field (dive number, start/end frame, subject, ...).
    """

    id: str
    key: Any
    score: float
    group: str
    difficulty: float | None = None
    judge_scores: tuple[float, ...] | None = None
    subscores: tuple[int, ...] | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class AQADataset(Dataset):
    """Base class: records + frame selection + decoding + transform -> sample dict.

    Subclasses implement :meth:`source` (the record's frames), :meth:`positions` (the official
    frame selection) and optionally :meth:`extra` (per-sample fields that depend on positions).

    Args:
        records: The split's records, in file order.
        transform: Clip transform (see :func:`pecop_lib.data.transforms.official_transform`).
        train: Apply training jitter (temporal shifts; the transform's own randomness is set on it).
        seed: Base seed of all sample randomness.
        clip_frames: If set, keep this many of the official positions, evenly spread
            (:func:`pecop_lib.data.sampling.subsample`); ``None`` keeps the official count.
    """

    def __init__(
        self,
        records: list[AQARecord],
        transform: ClipTransform,
        *,
        train: bool,
        seed: int = 0,
        clip_frames: int | None = None,
    ) -> None:
        self.records = list(records)
        self.transform = transform
        self.train = train
        self.seed = int(seed)
        self.epoch = 0
        self.clip_frames = clip_frames

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Select the temporal/spatial jitter of ``epoch`` (samples stay reproducible)."""
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        """The generator of sample ``index`` in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def source(self, index: int) -> FrameSource:
        """The frames of record ``index``."""
        raise NotImplementedError

    def media_path(self, index: int) -> Path:
        """The video file or frame folder of record ``index`` (formats that know it without opening it override this)."""
        return self.source(index).path

    def positions(self, index: int, source: FrameSource, rng: np.random.Generator) -> np.ndarray:
        """The official frame positions of record ``index`` (before :attr:`clip_frames`)."""
        raise NotImplementedError

    def extra(self, index: int, positions: np.ndarray) -> dict[str, torch.Tensor]:
        """Additional per-sample tensors that depend on the sampled positions."""
        return {}

    @property
    def official_frames(self) -> int:
        """Frames of the format's official clip, before :attr:`clip_frames` shortens it (formats set ``num_frames``)."""
        return int(self.num_frames)  # type: ignore[attr-defined]

    def sample_positions(self, index: int, source: FrameSource, rng: np.random.Generator) -> np.ndarray:
        """Official positions, shortened to :attr:`clip_frames` when set."""
        positions = self.positions(index, source, rng)
        return subsample(positions, self.clip_frames) if self.clip_frames else positions

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        rng = self.rng(index)
        source = self.source(index)
        positions = self.sample_positions(index, source, rng)
        with frames_of(f"{source.path} (record {record.id})"):
            clip = self.transform(source.read(positions), rng)
        sample: dict[str, Any] = {
            "clip": clip,
            "score": torch.tensor(record.score, dtype=torch.float32),
            "id": record.id,
            "group": record.group,
        }
        if record.difficulty is not None:
            sample["difficulty"] = torch.tensor(record.difficulty, dtype=torch.float32)
        if record.judge_scores is not None:
            sample["judge_scores"] = torch.tensor(record.judge_scores, dtype=torch.float32)
        if record.subscores is not None:
            sample["subscores"] = torch.tensor(record.subscores, dtype=torch.float32)
        sample.update(self.extra(index, positions))
        return sample

    def scores(self) -> np.ndarray:
        """Ground-truth scores of all records, float64 ``(N,)`` (no decoding)."""
        return np.array([r.score for r in self.records], dtype=np.float64)

    def to_frame(self) -> "pandas.DataFrame":  # noqa: F821 (pandas imported lazily)
        """All records as a table: id, score, group, difficulty, judges, sub-scores and extras."""
        import pandas as pd

        rows = []
        for r in self.records:
            row = {"id": r.id, "score": r.score, "group": r.group, "difficulty": r.difficulty}
            if r.judge_scores is not None:
                row.update({f"judge_{i}": s for i, s in enumerate(r.judge_scores)})
            if r.subscores is not None:
                row.update({f"subscore_{i}": s for i, s in enumerate(r.subscores)})
            row.update({k: v for k, v in r.extras.items() if np.isscalar(v) or isinstance(v, str)})
            rows.append(row)
        return pd.DataFrame(rows)
