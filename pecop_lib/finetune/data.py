"""Fine-tuning data: the splits of a setting, the validation hold-out carved from training, and the
training items of score heads (one video) and pair heads (a video and a partner of its group)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pecop_lib.data.dataset import AQADataset
from pecop_lib.data.formats.mtl_aqa import ANNOTATION_FILES, find_info_dir
from pecop_lib.data.registry import dataset_record
from pecop_lib.data.transforms import official_transform
from pecop_lib.eval import (
    holdout_split,
)
from pecop_lib.finetune.recipes import Setting
from pecop_lib.heads import (
    HeadKind,
    WindowFeatures,
    training_partners,
)

MIN_VALIDATION = 2
"""Spearman needs at least two validation videos."""


@dataclass
class FinetuneData:
    """The splits of one setting.

    Attributes:
        train: Training split with the training transform and jitter.
        reference: The same training split read with the test transform (validation queries and
            test-time exemplars).
        test: Test split (test transform).
    """

    train: AQADataset
    reference: AQADataset
    test: AQADataset


def open_finetune_data(
    root: str | os.PathLike[str],
    setting: Setting,
    *,
    crop: int = 224,
    clip_frames: int | None = None,
    seed: int = 0,
    resize: str = "bilinear",
) -> FinetuneData:
    """Open the splits of a setting from the dataset's folder (real or synthetic, same format).

    MTL-AQA is read in CoRe's layout (103 frames ending at ``end_frame``, whole-event frame
    folders) when ``new_total_frames_256s/`` exists, else in MUSDL's (per-clip ``frames/``); MUSDL's
    annotation file (with the judges) is preferred when present. (M)USDL use MUSDL's transform.

    Args:
        root: The dataset's own folder (e.g. ``world["MTL-AQA"]`` or ``<DATA_ROOT>/MTL-AQA``).
        setting: Head, dataset, task, fold.
        crop: Crop side (capped at the recipe's official crop, 112 for FineDiving).
        clip_frames: Shorten clips to this many frames (``None`` or 0: the official count).
        seed: Seed of the sample jitter.
        resize: ``bilinear`` (the package's resize and centre crop) or ``official`` (each head's
            official reader): :func:`~pecop_lib.data.transforms.official_transform`.

    Raises:
        FileNotFoundError: If ``root`` does not exist.
        DataFormatError: From the loaders, naming the file at fault.
        ValueError: If MUSDL is asked for on MTL-AQA annotations without judge scores.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{setting.dataset} folder {root} does not exist; check DATA_ROOT / the data root")
    recipe, record = setting.recipe, dataset_record(setting.dataset)
    crop = min(crop, recipe.max_crop)
    frames = clip_frames or None
    folder_options = record.finetune_options(root)  # looked up once on disk, shared by the three splits

    def open_split(split: str, train: bool) -> AQADataset:
        common: dict[str, Any] = {"crop": crop, "seed": seed, "clip_frames": frames, "train": train, "resize": resize}
        if recipe.transform is not None:
            common["transform"] = official_transform(recipe.transform, train=train, crop=crop, resize=resize)
        return record.open(root, split, task=setting.task, fold=setting.fold, **common, **folder_options)

    data = FinetuneData(open_split("train", True), open_split("train", False), open_split("test", False))
    lacking = setting.kind.lacking_targets(data.train.records + data.test.records, judged=record.judges)
    if lacking:
        raise ValueError(
            f"{setting.kind.display} needs per-judge scores but records {lacking[:5]} have none; provide "
            f"{ANNOTATION_FILES[1]} (MUSDL's release) in {find_info_dir(root)}"
        )
    return data


def validation_split(data: FinetuneData, setting: Setting, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Carve the validation hold-out from the training split.

    Diving (MTL-AQA, FineDiving) is stratified by the exemplar group (difficulty, dive number;
    unstratified, with a warning, where too few groups have two videos); JIGSAWS and PD4T hold out
    whole subjects. At least :data:`MIN_VALIDATION` videos are held out, at most half.

    Returns:
        ``(train_indices, val_indices)`` into ``data.train``; no validation for ``fraction == 0``.
    """
    records = data.train.records
    n = len(records)
    if fraction == 0:
        return list(range(n)), []
    effective = min(max(fraction, MIN_VALIDATION / n), 0.5)
    ids = [r.id for r in records]
    if dataset_record(setting.dataset).holdout == "subject":
        return holdout_split(ids, effective, seed=seed, groups=[r.extras["subject"] for r in records])
    train, val = holdout_split(ids, effective, seed=seed, stratify=[r.group for r in records])
    if len(val) < MIN_VALIDATION:  # tiny splits: too few groups with two or more videos to stratify
        warnings.warn(f"{setting.label}: stratified hold-out gave {len(val)} validation video(s); holding out "
                      f"{MIN_VALIDATION} at random instead", stacklevel=2)
        train, val = holdout_split(ids, effective, seed=seed)
    return train, val


def _stored_item(features: WindowFeatures, index: int, suffix: str = "") -> dict[str, torch.Tensor]:
    """``{"feats<suffix>": (windows, C)}`` (and ``"maps<suffix>"``) of one video's stored features."""
    item = {f"feats{suffix}": features.pooled[index]}
    if features.maps is not None:
        item[f"maps{suffix}"] = features.maps[index]
    return item


class ScoreSamples(Dataset):
    """Training items of a score head (USDL, MUSDL, MLP): ``{"clip", "target", "difficulty"}`` of selected videos.

    ``target`` is the head's :meth:`~pecop_lib.heads.HeadKind.target` (USDL: the final score; MUSDL:
    the judge / sub-scores); ``difficulty`` is 1 where the dataset has none. With ``features``
    (stored features of every video of ``base``, ``features="stored"``), items carry ``"feats"``
    ``(windows, C)`` instead of a decoded ``"clip"``.
    """

    def __init__(self, base: AQADataset, indices: Sequence[int], kind: HeadKind,
                 features: WindowFeatures | None = None) -> None:
        self.base, self.indices, self.kind, self.features = base, list(indices), kind, features

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        """Fresh jitter per epoch (:meth:`AQADataset.set_epoch`)."""
        self.base.set_epoch(epoch)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        index = self.indices[i]
        record = self.base.records[index]
        if self.features is not None:
            return {**_stored_item(self.features, index), "target": self.kind.target(record),
                    "difficulty": torch.tensor(1.0 if record.difficulty is None else record.difficulty)}
        sample = self.base[index]
        return {"clip": sample["clip"], "target": self.kind.target(record),
                "difficulty": sample.get("difficulty", torch.tensor(1.0))}


class PairSamples(Dataset):
    """Training pairs of a pair head (CoRe, TSA): each video with a random other video of its group, per epoch.

    Item ``i`` is video ``i`` (``a``) and its partner (``b``), drawn by
    :func:`pecop_lib.heads.training_partners` from ``default_rng([seed, epoch])``; values are the
    head's :meth:`~pecop_lib.heads.HeadKind.values`. Items of a head with ``steps`` (TSA) add both
    videos' ``transitions``; every item adds the head's :meth:`~pecop_lib.heads.HeadKind.extras`
    (TSA: the epoch's teacher-forcing flag).

    Args:
        base: Training split.
        indices: The training videos (the validation hold-out removed).
        values: Regressed value of every video of ``base``.
        kind: The head's interface.
        epochs: Total epochs (decides teacher forcing).
        seed: Seed of the partner draws.
        features: Stored features of every video of ``base`` (``features="stored"``): items carry
            ``"feats_a"``/``"feats_b"`` (and ``"maps_*"``) instead of decoded clips.
    """

    def __init__(self, base: AQADataset, indices: Sequence[int], values: np.ndarray, kind: HeadKind, *, epochs: int,
                 seed: int, features: WindowFeatures | None = None) -> None:
        self.base, self.indices, self.kind, self.features = base, list(indices), kind, features
        self._transitions: dict[int, torch.Tensor] = {}
        self.values = torch.as_tensor(values, dtype=torch.float32)
        self.groups = [base.records[i].group for i in self.indices]
        self.epochs, self.seed = epochs, seed
        self.set_epoch(0)

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        """Draw the epoch's partners and set its jitter and teacher-forcing flag."""
        self.epoch = epoch
        self.base.set_epoch(epoch)
        self.partners = training_partners(self.groups, np.random.default_rng([self.seed, epoch]))

    def _stored_transitions(self, index: int) -> torch.Tensor:
        if index not in self._transitions:
            self._transitions[index] = torch.as_tensor(true_transitions(self.base, index))
        return self._transitions[index]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        a, b = self.indices[i], self.indices[int(self.partners[i])]
        item: dict[str, torch.Tensor] = {"value_a": self.values[a], "value_b": self.values[b]}
        if self.features is not None:
            item.update(_stored_item(self.features, a, "_a"), **_stored_item(self.features, b, "_b"))
            if self.kind.steps:
                item.update(transitions_a=self._stored_transitions(a), transitions_b=self._stored_transitions(b))
        else:
            sample_a, sample_b = self.base[a], self.base[b]
            item.update(clip_a=sample_a["clip"], clip_b=sample_b["clip"])
            if self.kind.steps:
                item.update(transitions_a=sample_a["transitions"], transitions_b=sample_b["transitions"])
        item.update(self.kind.extras(self.epoch, self.epochs))
        return item



def true_transitions(dataset: AQADataset, index: int) -> np.ndarray:
    """Ground-truth transitions of a (FineDiving) record at its sampled frames, without decoding the clip."""
    positions = dataset.sample_positions(index, dataset.source(index), dataset.rng(index))
    return dataset.extra(index, positions)["transitions"].numpy()

