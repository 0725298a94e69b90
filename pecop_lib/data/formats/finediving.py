"""FineDiving (xujinglin/FineDiving) in its official format, as read by the TSA code.

Layout under ``root``::

    Annotations/fine-grained_annotation_aqa.pkl    (video_name, clip_idx) -> [action_type,
                                                    final_score, difficulty, <unused>, frame_labels]
    Annotations/FineDiving_coarse_annotation.pkl   (same keys) -> dict of named fields
    Annotations/FineDiving_fine-grained_annotation.pkl
    Annotations/Sub_action_Types_Table.pkl         sub-action type id -> name
    Annotations/train_split.pkl, test_split.pkl    lists of (video_name, clip_idx)
    FINADiving_MTL_256s/<video_name>/<clip_idx>/%05d.jpg   absolute frame numbers of the video

Frames: 96 frame numbers by ``np.linspace(first, last, 96)`` over the folder; the per-frame label
array is indexed by ``number - first``, so its length must equal the folder's frame count (the
mismatch of FineDiving issue #1 raises here, naming record and folder). Steps: every dive is cut
into 3 steps by 2 transitions (issue #5), even with 4-5 sub-action types.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from pecop_lib.data.dataset import AQADataset, AQARecord
from pecop_lib.data.errors import DataFormatError
from pecop_lib.data.formats.fields import FIX, Field, check_fields
from pecop_lib.data.formats.splits import open_split
from pecop_lib.data.safe_pickle import safe_load
from pecop_lib.data.sampling import linspace_numbers
from pecop_lib.data.transforms import ClipTransform, official_transform
from pecop_lib.data.video import FrameFolder, FrameSource

ANNOTATION_DIR = "Annotations"
AQA_FILE = "fine-grained_annotation_aqa.pkl"
COARSE_FILE = "FineDiving_coarse_annotation.pkl"
FINE_FILE = "FineDiving_fine-grained_annotation.pkl"
SUB_ACTION_TABLE = "Sub_action_Types_Table.pkl"
FRAMES_DIR = "FINADiving_MTL_256s"
FRAME_PATTERN = r"\d{5}\.jpg"
NUM_FRAMES = 96
FINEDIVING_FIELDS: tuple[Field, ...] = (
    Field("final_score", low=0),  # and at most 30 x difficulty (checked with the record)
    Field("difficulty", low=0, high=5, low_open=True),
    Field("frame_labels", low=0, integer=True, count=0),
)
"""The numeric fields of a ``fine-grained_annotation_aqa.pkl`` record (positions 1, 2 and 4 of its list)."""
RECORD_FIELDS = ("action_type", "dive_score", "difficulty", "start_frame", "end_frame", "sub-action_types",
                 "judge_scores", "frames_labels", "steps_transit_frames")
"""Fields of the coarse and fine-grained annotation dicts (FineDiving README)."""


def transitions_from_labels(labels: np.ndarray) -> np.ndarray:
    """The two step transitions of a label sequence, as TSA derives them.

    Distinct labels are ordered by first appearance; the transitions are the first positions of
    the second and of the last distinct label (TSA returns these minus one and adds the one back
    in its runner). Three steps (take-off | flight | entry) result even with 4-5 sub-action types.

    Args:
        labels: Per-frame sub-action labels of the sampled frames, shape ``(T,)``.

    Returns:
        int64 ``(2,)``.

    Raises:
        ValueError: If fewer than two distinct labels occur (no transition to find).
    """
    labels = np.asarray(labels)
    _, first = np.unique(labels, return_index=True)
    first = np.sort(first)
    if len(first) < 2:
        raise ValueError(f"a step label sequence needs at least 2 distinct labels, got {np.unique(labels).tolist()}")
    return np.array([first[1], first[-1]], dtype=np.int64)


def load_aqa_annotations(path: str | os.PathLike[str]) -> dict[tuple[str, int], tuple]:
    """Read ``fine-grained_annotation_aqa.pkl`` and validate every record's fields and ranges."""
    path = Path(path)
    data = safe_load(path)
    if not isinstance(data, dict) or not data:
        raise DataFormatError(f"{path}: expected a dict (video_name, clip_idx) -> record, got {type(data).__name__}")
    for key, rec in data.items():
        where = f"{path}: record {key!r}"
        if not (isinstance(key, tuple) and len(key) == 2):
            raise DataFormatError(f"{path}: key {key!r} is not a (video_name, clip_idx) tuple")
        try:
            action_type, fields = rec[0], {"final_score": rec[1], "difficulty": rec[2], "frame_labels": rec[4]}
        except (IndexError, TypeError, KeyError) as exc:
            raise DataFormatError(
                f"{where} is not [action_type, final_score, difficulty, _, frame_labels] ({exc})"
            ) from exc
        checked = check_fields(fields, FINEDIVING_FIELDS, where)
        if not checked["final_score"] <= 30 * checked["difficulty"] + 1e-6:
            raise DataFormatError(f"{where}: final score {rec[1]} outside [0, 30 x difficulty]; {FIX}")
        if not isinstance(action_type, str):
            raise DataFormatError(f"{where}: action type {action_type!r} is not a string")
    return data


def load_split(path: str | os.PathLike[str], annotations: dict) -> list[tuple[str, int]]:
    """Read ``train_split.pkl`` / ``test_split.pkl`` and check every key is annotated."""
    path = Path(path)
    keys = safe_load(path)
    if not isinstance(keys, list):
        raise DataFormatError(f"{path}: expected a list of (video_name, clip_idx), got {type(keys).__name__}")
    out = [tuple(k) for k in keys]
    missing = [k for k in out if k not in annotations]
    if missing:
        raise DataFormatError(f"{path}: split key {missing[0]!r} (and {len(missing) - 1} more) has no annotation")
    return out


class FineDiving(AQADataset):
    """FineDiving (or its synthetic twin): 96 linspace frames with step labels and transitions.

    Args:
        root: Dataset root (``Annotations/`` and the frames folder).
        split: ``"train"`` or ``"test"``.
        transform: Default: TSA's (112 W x 200 H resize, crop 112, flip in training), scaled to ``crop``.
        resize: Flavour of the default transform (``bilinear`` or ``official``:
            :func:`~pecop_lib.data.transforms.official_transform`).
        num_frames: Frames per clip (96 officially).
        check_frames: List every clip folder at construction and raise on a label/frame count
            mismatch (FineDiving issue #1).
        frames_dir: Frames folder relative to ``root``.
        seed, clip_frames, train: See :class:`AQADataset`.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: Literal["train", "test"] = "train",
        *,
        transform: ClipTransform | None = None,
        crop: int = 112,
        resize: str = "bilinear",
        num_frames: int = NUM_FRAMES,
        check_frames: bool = True,
        frames_dir: str = FRAMES_DIR,
        seed: int = 0,
        clip_frames: int | None = None,
        train: bool | None = None,
    ) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"FineDiving split must be 'train' or 'test', got {split!r}")
        self.root = Path(root)
        annotations = self.root / ANNOTATION_DIR
        self.annotation_file = annotations / AQA_FILE
        self.annotations = load_aqa_annotations(self.annotation_file)
        paths = {name: annotations / f"{name}_split.pkl" for name in ("train", "test")}
        self.keys = open_split(paths, split, lambda path: load_split(path, self.annotations), "FineDiving")
        self.frames_root = self.root / frames_dir
        self.num_frames = num_frames
        self._first_frame: dict[int, int] = {}
        if check_frames:
            for i in range(len(self.keys)):
                self.source(i)
        records = []
        for key in self.keys:
            rec = self.annotations[key]
            records.append(
                AQARecord(id=f"{key[0]}/{key[1]}", key=key, score=float(rec[1]), group=str(rec[0]),
                          difficulty=float(rec[2]), extras={"action_type": str(rec[0]), "video": key[0], "clip": key[1]})
            )
        train = split == "train" if train is None else train
        super().__init__(records,
                         transform or official_transform("tsa_finediving", train=train, crop=crop, resize=resize),
                         train=train, seed=seed, clip_frames=clip_frames)

    def labels(self, index: int) -> np.ndarray:
        """Per-frame sub-action labels of record ``index`` (one per folder frame)."""
        return np.asarray(self.annotations[self.keys[index]][4])

    def source(self, index: int) -> FrameSource:
        key = self.keys[index]
        folder = FrameFolder(self.frames_root / str(key[0]) / str(key[1]), pattern=FRAME_PATTERN)
        folder.check_consecutive()
        numbers = folder.numbers()
        labels = self.labels(index)
        if len(labels) != len(folder):
            raise DataFormatError(
                f"{self.annotation_file}: record {key!r} has {len(labels)} frame labels but {folder.path} holds "
                f"{len(folder)} frames (FineDiving issue #1); use the re-released annotations or re-extract the clip"
            )
        self._first_frame[index] = int(numbers[0])
        return folder

    def positions(self, index: int, source: FrameSource, rng: np.random.Generator) -> np.ndarray:
        first = self._first_frame[index]
        return linspace_numbers(first, first + len(source) - 1, self.num_frames)

    def extra(self, index: int, positions: np.ndarray) -> dict[str, torch.Tensor]:
        labels = self.labels(index)[positions]
        try:
            transitions = transitions_from_labels(labels)
        except ValueError as exc:
            raise DataFormatError(f"{self.annotation_file}: record {self.keys[index]!r}: {exc}") from exc
        return {"step_labels": torch.as_tensor(labels, dtype=torch.int64),
                "transitions": torch.as_tensor(transitions, dtype=torch.int64)}
