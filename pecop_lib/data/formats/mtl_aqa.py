"""MTL-AQA in its official formats (ParitoshParmar/MTL-AQA, MUSDL and CoRe releases).

Layout under ``root`` (the annotation folder may be ``info/`` as in CoRe or ``data/info/`` as in
MUSDL)::

    info/final_annotations_dict_with_dive_number.pkl   (CoRe: + dive_number)  or
    info/augmented_final_annotations_dict.pkl          (MUSDL: + judge_scores)
    info/train_split_0.pkl, info/test_split_0.pkl      lists of (event, clip)
    new_total_frames_256s/<event:02d>/%08d.jpg         CoRe: whole event videos, 1-based
    frames/<event:02d>_<clip:02d>/*.jpg                MUSDL: one folder per clip (>= 109 frames)

Records map ``(event, clip)`` to ``start_frame``, ``end_frame``, ``difficulty``,
``final_score``, ``judge_scores`` (7, unsorted), ``dive_number``, ``position``, ``armstand``,
``rotation_type``, ``ss_no``, ``tw_no``, ``primary_view``. The diving rule
``final_score = sum(middle three judges) x difficulty`` holds for 1,384 of the 1,412 real
records; :func:`rule_deviations` reports the rest (annotation noise, not fixed here). In MUSDL's
``augmented_final_annotations_dict.pkl`` record ``(4, 49)`` has a judge score of 45.0 (CoRe's
copy has 4.5; the final score is the same either way): judge scores outside 0..10 are reported with a warning by default
(``judge_outliers="warn"``) and raise with ``judge_outliers="raise"``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pecop_lib.data.dataset import AQADataset, AQARecord
from pecop_lib.data.errors import DataFormatError
from pecop_lib.data.formats.fields import FIX, Field, check_fields
from pecop_lib.data.formats.splits import open_split
from pecop_lib.data.safe_pickle import safe_load
from pecop_lib.data.sampling import leading_window, window_ending_at
from pecop_lib.data.transforms import ClipTransform, official_transform
from pecop_lib.data.video import FrameFolder, FrameSource

ANNOTATION_FILES = ("final_annotations_dict_with_dive_number.pkl", "augmented_final_annotations_dict.pkl")
INFO_DIRS = ("info", "data/info")
REQUIRED_KEYS = ("start_frame", "end_frame", "difficulty", "final_score")
CORE_FRAMES_DIR = "new_total_frames_256s"
MUSDL_FRAMES_DIR = "frames"
CLIP_LENGTH = 103
NUM_JUDGES = 7
RULE_TOLERANCE = 0.05
"""Absolute tolerance of the diving-rule check (the real finals are rounded to 2 decimals)."""


def clip_id(key: tuple[int, int]) -> str:
    """``(event, clip)`` -> ``"EE_CC"`` (MUSDL's per-clip folder name)."""
    return f"{int(key[0]):02d}_{int(key[1]):02d}"


def middle_three(judge_scores: np.ndarray) -> float:
    """Sum of the middle three of seven judges' scores (drop the two highest and two lowest)."""
    scores = np.sort(np.asarray(judge_scores, dtype=np.float64))
    if scores.shape != (NUM_JUDGES,):
        raise ValueError(f"middle_three needs {NUM_JUDGES} judge scores, got shape {scores.shape}")
    return float(scores[2:5].sum())


def find_info_dir(root: str | os.PathLike[str]) -> Path:
    """The folder holding the annotation pickles (``info/`` or ``data/info/``)."""
    root = Path(root)
    for name in INFO_DIRS:
        if any((root / name / f).exists() for f in ANNOTATION_FILES):  # special files: refused when read
            return root / name
    raise DataFormatError(
        f"no MTL-AQA annotation file under {root}: expected one of {ANNOTATION_FILES} in "
        f"{' or '.join(INFO_DIRS)}; point the root at the folder that contains info/"
    )


MTL_AQA_FIELDS: tuple[Field, ...] = (
    Field("start_frame", low=0, integer=True),
    Field("end_frame", low=0, integer=True),
    Field("difficulty", low=0, high=5, low_open=True),
    Field("final_score", low=0),  # and at most 30 x difficulty (checked with the record)
    Field("judge_scores", low=0, high=10, count=NUM_JUDGES, required=False),
    *(Field(name, low=0, integer=True, required=False)
      for name in ("primary_view", "position", "armstand", "rotation_type", "ss_no", "tw_no")),
)
"""The numeric fields of an MTL-AQA record (:mod:`pecop_lib.data.formats.fields`); judge scores outside 0..10
warn by default (the released MUSDL file has one, record (4, 49): 45.0 for 4.5)."""


def _validate_record(key: Any, rec: Any, path: Path, need_judges: bool, fields: Sequence[Field]) -> None:
    where = f"{path}: record {key!r}"
    if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, (int, np.integer)) for k in key)):
        raise DataFormatError(f"{path}: key {key!r} is not an (event, clip) tuple of ints")
    if not isinstance(rec, dict):
        raise DataFormatError(f"{where} is a {type(rec).__name__}, expected a dict")
    keys = REQUIRED_KEYS + (("judge_scores",) if need_judges else ())
    missing = [k for k in keys if k not in rec]
    if missing:
        raise DataFormatError(
            f"{where} lacks key(s) {missing}; the file is not an MTL-AQA annotation dict: use the released "
            f"{' or '.join(ANNOTATION_FILES)}"
        )
    checked = check_fields(rec, fields, where)
    if not checked["start_frame"] <= checked["end_frame"]:
        raise DataFormatError(f"{where}: start_frame {rec['start_frame']} / end_frame {rec['end_frame']} out of order")
    if not checked["final_score"] <= 30 * checked["difficulty"] + 1e-6:
        raise DataFormatError(
            f"{where}: final_score {rec['final_score']} outside [0, 30 x difficulty = {30 * rec['difficulty']:.2f}]; {FIX}"
        )


def load_annotations(
    path: str | os.PathLike[str], *, need_judges: bool = False, judge_outliers: Literal["warn", "raise"] = "warn"
) -> dict[tuple[int, int], dict]:
    """Read and validate an MTL-AQA annotation pickle (restricted unpickler).

    Args:
        path: ``final_annotations_dict_with_dive_number.pkl`` or ``augmented_final_annotations_dict.pkl``.
        need_judges: Require ``judge_scores`` in every record (MUSDL).
        judge_outliers: What to do with a judge score outside 0..10 (the real file has one).

    Raises:
        DataFormatError: Naming the file and record for a missing key or out-of-range value.
    """
    path = Path(path)
    data = safe_load(path)
    if not isinstance(data, dict) or not data:
        raise DataFormatError(f"{path}: expected a non-empty dict (event, clip) -> record, got {type(data).__name__}")
    if judge_outliers not in ("warn", "raise"):
        raise ValueError(f"judge_outliers must be 'warn' or 'raise', got {judge_outliers!r}")
    outside = "error" if judge_outliers == "raise" else "warn"
    fields = [replace(f, outside=outside) if f.name == "judge_scores" else f for f in MTL_AQA_FIELDS]
    for key, rec in data.items():
        _validate_record(key, rec, path, need_judges, fields)
    return data


def load_split(path: str | os.PathLike[str], annotations: dict) -> list[tuple[int, int]]:
    """Read a split pickle (list of ``(event, clip)``) and check every key is annotated."""
    path = Path(path)
    keys = safe_load(path)
    if not isinstance(keys, list):
        raise DataFormatError(f"{path}: expected a list of (event, clip) tuples, got {type(keys).__name__}")
    for key in keys:
        if tuple(key) not in annotations:
            raise DataFormatError(f"{path}: split key {key!r} has no annotation record; use matching split files")
    return [tuple(k) for k in keys]


def rule_deviations(annotations: dict, tolerance: float = RULE_TOLERANCE) -> list[tuple[int, int]]:
    """Keys whose final score differs from middle-three x difficulty by more than ``tolerance``."""
    return sorted(
        key
        for key, rec in annotations.items()
        if "judge_scores" in rec
        and abs(middle_three(rec["judge_scores"]) * rec["difficulty"] - rec["final_score"]) > tolerance
    )


def to_record(key: tuple[int, int], rec: dict) -> AQARecord:
    """One annotation dict as an :class:`AQARecord` (group = difficulty, CoRe's ``usingDD``)."""
    judges = rec.get("judge_scores")
    extras = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in rec.items() if k != "judge_scores"}
    return AQARecord(
        id=clip_id(key),
        key=key,
        score=float(rec["final_score"]),
        group=f"{float(rec['difficulty']):.1f}",
        difficulty=float(rec["difficulty"]),
        judge_scores=None if judges is None else tuple(float(j) for j in judges),
        extras=extras,
    )


class MTLAQA(AQADataset):
    """MTL-AQA (or its synthetic twin): 103-frame clips ending at ``end_frame``.

    Args:
        root: Dataset root (holds ``info/`` and the frames folder).
        split: ``"train"`` or ``"test"`` (files ``<split>_split_<split_index>.pkl``).
        layout: ``"core"`` (whole event videos, clip ends at ``end_frame``, train shift
            ``randint(-3, 3)``) or ``"musdl"`` (per-clip folders, frames 0..102 + train shift
            ``randint(0, 6)``).
        transform: Clip transform; default: the official one of ``layout`` at ``crop``.
        train: Training jitter; defaults to ``split == "train"``.
        crop: Crop side for the default transform.
        resize: Resize flavour of the default transform (``bilinear`` or ``official``:
            :func:`~pecop_lib.data.transforms.official_transform`).
        seed, clip_frames: See :class:`AQADataset`.
        annotation_file: Use this pickle instead of the first found of :data:`ANNOTATION_FILES`.
        frames_dir: Frames folder relative to ``root`` (default per layout).
        split_index: Which ``*_split_<i>.pkl`` pair to read.
        judge_outliers: ``"warn"`` (default: read the file as published) or ``"raise"``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: Literal["train", "test"] = "train",
        *,
        layout: Literal["core", "musdl"] = "core",
        transform: ClipTransform | None = None,
        train: bool | None = None,
        crop: int = 224,
        resize: str = "bilinear",
        seed: int = 0,
        clip_frames: int | None = None,
        annotation_file: str | os.PathLike[str] | None = None,
        frames_dir: str | None = None,
        split_index: int = 0,
        judge_outliers: Literal["warn", "raise"] = "warn",
    ) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"MTL-AQA split must be 'train' or 'test', got {split!r}")
        if layout not in ("core", "musdl"):
            raise ValueError(f"MTL-AQA layout must be 'core' or 'musdl', got {layout!r}")
        self.root = Path(root)
        info = find_info_dir(self.root)
        if annotation_file is None:
            annotation_file = next(info / f for f in ANNOTATION_FILES if (info / f).exists())
        self.annotation_file = Path(annotation_file)
        self.annotations = load_annotations(self.annotation_file, judge_outliers=judge_outliers)
        paths = {name: info / f"{name}_split_{split_index}.pkl" for name in ("train", "test")}
        self.keys = open_split(paths, split, lambda path: load_split(path, self.annotations), "MTL-AQA")
        self.layout = layout
        self.frames_root = self.root / (frames_dir or (CORE_FRAMES_DIR if layout == "core" else MUSDL_FRAMES_DIR))
        if not self.frames_root.is_dir():
            raise DataFormatError(
                f"MTL-AQA frames folder {self.frames_root} does not exist; extract frames there or pass frames_dir"
            )
        train = split == "train" if train is None else train
        if transform is None:
            transform = official_transform("core_mtl" if layout == "core" else "musdl_mtl", train=train, crop=crop,
                                           resize=resize)
        super().__init__(
            [to_record(k, self.annotations[k]) for k in self.keys], transform, train=train, seed=seed,
            clip_frames=clip_frames,
        )
        self._sources: dict[Path, FrameFolder] = {}

    def folder(self, index: int) -> Path:
        """Frame folder of record ``index`` (event video for ``core``, clip folder for ``musdl``)."""
        event, clip = self.keys[index]
        return self.frames_root / (f"{event:02d}" if self.layout == "core" else clip_id((event, clip)))

    def source(self, index: int) -> FrameSource:
        folder = self.folder(index)
        if folder not in self._sources:  # cache the (large) event file lists
            frames = FrameFolder(folder)
            # no gaps in either layout: a missing frame would shift every later one; CoRe's event videos are
            # ffmpeg's 1-based %08d.jpg, so positions are frame numbers - 1
            frames.check_consecutive(first=1 if self.layout == "core" else None)
            self._sources[folder] = frames
        return self._sources[folder]

    @property
    def official_frames(self) -> int:
        """103 frames (both layouts)."""
        return CLIP_LENGTH

    def positions(self, index: int, source: FrameSource, rng: np.random.Generator) -> np.ndarray:
        if self.layout == "core":
            end = int(self.annotations[self.keys[index]]["end_frame"])
            shift = int(rng.integers(-3, 4)) if self.train else 0
            if end + shift > len(source):
                raise DataFormatError(
                    f"{source.path}: record {self.keys[index]} ends at frame {end} (+ shift {shift}) but the "
                    f"folder holds {len(source)} frames; the frames do not match the annotations"
                )
            return window_ending_at(end, CLIP_LENGTH, shift)
        shift = int(rng.integers(0, 7)) if self.train else 0
        return leading_window(CLIP_LENGTH, shift)
