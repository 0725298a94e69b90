"""JIGSAWS as used by MUSDL: ``label.pkl``, ``splits.pkl`` (4 random folds per task), frame folders.

Layout under ``root``::

    info/label.pkl          '<Task>_<Subject><Trial>' -> [6 sub-scores 1..5]  (GRS = sum, 6..30)
    info/splits.pkl         task -> 4 lists of trial ids
    frames/<trial>_capture1/*.jpg          left view, sorted by name
    <Task>/meta_file_<Task>.txt            official meta file (optional; see read_meta_file)

Sub-score order (as named by a third-party parser of the meta file): respect for tissue,
suture/needle handling, time and motion, flow of operation, overall performance, quality of final
product. Frames: 160 by ``np.linspace(0, n - 1, 160)``; centre crop without resize.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import numpy as np

from pecop_lib.data.dataset import AQADataset, AQARecord
from pecop_lib.data.errors import DataFormatError
from pecop_lib.data.files import read_text
from pecop_lib.data.formats.fields import Field, check_field, check_value, parse_number
from pecop_lib.data.safe_pickle import safe_load
from pecop_lib.data.sampling import linspace_positions
from pecop_lib.data.transforms import ClipTransform, official_transform
from pecop_lib.data.video import FrameFolder, FrameSource

TASKS = ("Suturing", "Knot_Tying", "Needle_Passing")
SUBSCORE_NAMES = (
    "respect_for_tissue",
    "suture_needle_handling",
    "time_and_motion",
    "flow_of_operation",
    "overall_performance",
    "quality_of_final_product",
)
NUM_FOLDS = 4
NUM_FRAMES = 160
SKILL_LEVELS = ("N", "I", "E")
SUBSCORES = Field("sub-scores", low=1, high=5, integer=True, count=len(SUBSCORE_NAMES))
"""The schema of a trial's six sub-scores: whole numbers 1..5 (a 3.5 is refused, never truncated)."""
GRS = Field("GRS", low=6, high=30, integer=True)
"""The global rating score of a meta-file line: the sum of the six sub-scores."""
JIGSAWS_FIELDS: tuple[Field, ...] = (SUBSCORES, GRS)
_TRIAL = re.compile(r"(?P<task>[A-Za-z_]+)_(?P<subject>[A-Z])(?P<trial>\d{3})")


def _info_dir(root: Path) -> Path:
    for name in ("info", "data/info"):
        if (root / name / "label.pkl").exists():  # a special file is refused when read
            return root / name
    raise DataFormatError(f"no JIGSAWS label.pkl under {root}/info or {root}/data/info; check the dataset root")


def load_labels(path: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """Read ``label.pkl`` and check each entry is six integer sub-scores in 1..5."""
    path = Path(path)
    data = safe_load(path)
    if not isinstance(data, dict) or not data:
        raise DataFormatError(f"{path}: expected a dict trial -> 6 sub-scores, got {type(data).__name__}")
    out = {}
    for name, scores in data.items():
        values = check_field(SUBSCORES, scores, f"{path}: record {name!r}")
        if not _TRIAL.fullmatch(str(name)):
            raise DataFormatError(f"{path}: record key {name!r} is not '<Task>_<Subject><Trial>' (e.g. Suturing_B001)")
        out[str(name)] = values
    return out


def load_splits(path: str | os.PathLike[str], labels: dict[str, tuple[int, ...]]) -> dict[str, list[list[str]]]:
    """Read ``splits.pkl``: per task 4 disjoint folds of labelled trial ids."""
    path = Path(path)
    data = safe_load(path)
    if not isinstance(data, dict):
        raise DataFormatError(f"{path}: expected a dict task -> 4 folds, got {type(data).__name__}")
    for task, folds in data.items():
        if len(folds) != NUM_FOLDS:
            raise DataFormatError(f"{path}: task {task!r} has {len(folds)} folds, expected {NUM_FOLDS}")
        seen: set[str] = set()
        for fold in folds:
            for trial in fold:
                if trial not in labels:
                    raise DataFormatError(f"{path}: trial {trial!r} of task {task!r} has no entry in label.pkl")
                if trial in seen:
                    raise DataFormatError(f"{path}: trial {trial!r} appears in two folds of task {task!r}")
                seen.add(trial)
    return {str(t): [list(f) for f in folds] for t, folds in data.items()}


def read_meta_file(path: str | os.PathLike[str]) -> dict[str, dict]:
    """Parse an official ``meta_file_<Task>.txt`` (whitespace separated, double tabs allowed).

    Returns:
        ``trial -> {"skill": "N"|"I"|"E", "grs": int, "subscores": (6 ints)}``.

    Raises:
        DataFormatError: On a malformed line (naming file and line) or a GRS that is not the sum.
    """
    out = {}
    for number, line in enumerate(read_text(path, "JIGSAWS meta file").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 9 or fields[1] not in SKILL_LEVELS:
            raise DataFormatError(
                f"{path}:{number}: expected 'name skill GRS s1..s6' (9 fields, skill N/I/E), got {line!r}"
            )
        where = f"{path}:{number}"
        grs = int(check_value(GRS, parse_number(fields[2], "GRS", where), where))
        subs = tuple(int(check_value(SUBSCORES, parse_number(x, SUBSCORES.name, where), where, f"sub-score {i + 1}"))
                     for i, x in enumerate(fields[3:]))
        if grs != sum(subs):
            raise DataFormatError(f"{path}:{number}: GRS {grs} differs from the sum {sum(subs)} of the sub-scores")
        out[fields[0]] = {"skill": fields[1], "grs": grs, "subscores": subs}
    return out


class JIGSAWS(AQADataset):
    """One JIGSAWS task, one fold: train on the other three folds, test on ``fold``.

    Args:
        root: Dataset root (``info/`` and ``frames/``).
        task: One of :data:`TASKS`.
        fold: Test fold 0..3.
        split: ``"train"`` (three folds) or ``"test"`` (fold ``fold``).
        transform: Default: centre crop ``crop`` without resize (MUSDL).
        resize: Flavour of the default transform (``bilinear`` or ``official``:
            :func:`~pecop_lib.data.transforms.official_transform`).
        num_frames: Frames per video (160 officially).
        seed, clip_frames, train: See :class:`AQADataset`.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        task: str,
        fold: int,
        split: Literal["train", "test"] = "train",
        *,
        transform: ClipTransform | None = None,
        crop: int = 224,
        resize: str = "bilinear",
        num_frames: int = NUM_FRAMES,
        seed: int = 0,
        clip_frames: int | None = None,
        train: bool | None = None,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"JIGSAWS task must be one of {TASKS}, got {task!r}")
        if fold not in range(NUM_FOLDS) or split not in ("train", "test"):
            raise ValueError(f"JIGSAWS needs fold in 0..3 and split 'train'/'test', got fold={fold!r}, split={split!r}")
        self.root = Path(root)
        info = _info_dir(self.root)
        self.labels = load_labels(info / "label.pkl")
        splits = load_splits(info / "splits.pkl", self.labels)
        if task not in splits:
            raise DataFormatError(f"{info / 'splits.pkl'} has no folds for task {task!r}")
        folds = [fold] if split == "test" else [f for f in range(NUM_FOLDS) if f != fold]
        self.trials = [t for f in folds for t in splits[task][f]]
        self.task, self.fold, self.num_frames = task, fold, num_frames
        self.frames_root = self.root / "frames"
        records = []
        for trial in self.trials:
            subject = _TRIAL.fullmatch(trial)["subject"]
            subs = self.labels[trial]
            records.append(
                AQARecord(id=trial, key=trial, score=float(sum(subs)), group=task, subscores=subs,
                          extras={"task": task, "subject": subject, "fold": self._fold_of(splits[task], trial)})
            )
        train = split == "train" if train is None else train
        super().__init__(records,
                         transform or official_transform("musdl_jigsaws", train=train, crop=crop, resize=resize),
                         train=train, seed=seed, clip_frames=clip_frames)

    @staticmethod
    def _fold_of(folds: list[list[str]], trial: str) -> int:
        return next(i for i, f in enumerate(folds) if trial in f)

    def source(self, index: int) -> FrameSource:
        frames = FrameFolder(self.frames_root / f"{self.trials[index]}_capture1")
        frames.check_consecutive()  # a missing frame would shift the 160 linspace positions after it
        return frames

    def positions(self, index: int, source: FrameSource, rng: np.random.Generator) -> np.ndarray:
        return linspace_positions(len(source), self.num_frames)
