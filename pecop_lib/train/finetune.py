"""AQA fine-tuning on the :class:`~pecop_lib.train.loop.Trainer`: USDL, MUSDL, CoRe and TSA recipes.

A *recipe* (:data:`RECIPES`) is one head on one dataset with the hyperparameters of its official
code (facts: ``reference/aqa-heads.md`` Sec. 2-6):

=================  =====================  ==================  =====  ============  ======  ======  ===========
head / dataset     windows                Adam lr backbone /  wd     batch         epochs  BN      official
                                          head                                                     protocol
=================  =====================  ==================  =====  ============  ======  ======  ===========
USDL MTL-AQA       10 over 103 (last 87)  1e-4 / 1e-4         0      4             100     train   best test
MUSDL MTL-AQA      same                   1e-4 / 1e-4         1e-5   4             100     train   best test
USDL, MUSDL        10 over 160,           1e-4 / 1e-4         0      4             80      train   mean of the
JIGSAWS            non-overlapping                                                                 last 10
CoRe MTL-AQA       10 over 103 (last 86)  1e-4 / 1e-3         0      1 pair, acc 2 200     frozen  best test
TSA FineDiving     9 over 96 at 112 px    1e-4 / 1e-3         0      8 pairs       200     frozen  best test
=================  =====================  ==================  =====  ============  ======  ======  ===========

The paper's other pairings have no official code and reuse the closest official recipe: USDL on
PD4T (MTL-AQA's USDL recipe on PD4T's 103-frame clips, CoRe windows), CoRe on JIGSAWS (CoRe's
optimisation on JIGSAWS' 160-frame windows), on FineDiving (TSA's clips) and on PD4T. The whole
backbone (and its adapters) is trained, as in every official repository and the paper; the
backbone always pools with ``window2``, which equals the official ``(2, 7, 7)`` pool at 224 px
and FineDiving's ``(2, 4, 4)`` at 112 px.

Per epoch, :func:`finetune` trains one epoch (``trainer.fit(data, e + 1)``, the trainer
continues) and evaluates the test split **and** a validation split carved from the training
split (:func:`pecop_lib.eval.holdout_split`: stratified by difficulty / dive number for diving,
subject-disjoint for JIGSAWS and PD4T). Both protocols are then read off the same run:

* ``official``: the best test epoch (every official repository; optimistic), or for USDL/MUSDL
  on JIGSAWS the mean test rho of the last 10 epochs (``official_last10``);
* ``honest``: the epoch with the best validation rho, and the test rho at that epoch.

The model is trained on the training split *minus* the validation hold-out, so both numbers come
from one trajectory and differ only in how the epoch is chosen; ``val_fraction=0`` trains on the
whole training split and reports the official protocol only. Each reported rho carries a paired
bootstrap confidence interval over the test videos. Evaluation runs with fixed BatchNorm
statistics; CoRe and TSA compare each query with up to ``M`` training exemplars of its group,
encoding every video once per evaluation (:func:`pecop_lib.heads.predict_with_exemplars`).

Resume: the trainer's checkpoints hold model, optimiser and generators; ``evaluation.json`` in the
run folder holds every evaluated epoch, written atomically after each evaluation. A resumed run
evaluates the checkpoint's epoch if its evaluation is missing and continues.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from pecop_lib.atomic import atomic_write_json, read_json
from pecop_lib.config import Config, resolve_device
from pecop_lib.data.dataset import AQADataset
from pecop_lib.data.formats.mtl_aqa import ANNOTATION_FILES, find_info_dir
from pecop_lib.data.registry import DATASETS, dataset_record
from pecop_lib.data.transforms import official_transform
from pecop_lib.eval import (
    Interval,
    Selection,
    bootstrap_ci,
    holdout_split,
    honest,
    l2,
    official_best,
    official_last_mean,
    relative_l2,
    spearman,
    tiou_accuracy,
)
from pecop_lib.heads import (
    ExemplarDraw,
    FeatureCache,
    FeatureStore,
    FinetuneRecipe,
    HeadKind,
    WindowFeatures,
    Windowing,
    draw_exemplars,
    encode_windows,
    head_kind,
    predict_with_exemplars,
    recipes,
    training_partners,
    windowing_for,
)
from pecop_lib.heads.interface import Protocol
from pecop_lib.heads.usdl import DECODE_MODES
from pecop_lib.models.backbone import Backbone
from pecop_lib.models.strategies import mark_parameters
from pecop_lib.train.data import epoch_loader
from pecop_lib.train.distributed import DistributedContext
from pecop_lib.train.loop import StepOutput, Trainer, TrainHistory
from pecop_lib.train.precision import autocast, autocast_dtype
from pecop_lib.train.rng import capture_rng_state, restore_rng_state

TRAIN_BACKBONE: tuple[str, ...] = ("all", "adapters", "frozen")
FEATURE_MODES: tuple[str, ...] = ("clips", "stored")
"""How the head sees the training videos: ``clips`` (decoded and augmented every step, the official
way) or ``stored`` (a frozen backbone's features of the un-augmented clips, computed once: the
``course`` preset's protocol, a documented deviation)."""
EXEMPLAR_MISSING: tuple[str, ...] = ("error", "any")
BACKBONE_POOL = "window2"
EVALUATION_FILE = "evaluation.json"
DISTRIBUTION_SAMPLES = 4
"""Test videos whose predicted (M)USDL distributions are kept at every epoch (for plots)."""
MIN_VALIDATION = 2
"""Spearman needs at least two validation videos."""

RECIPES: dict[str, FinetuneRecipe] = recipes()
"""Every supported (head, dataset) pairing, keyed ``"head/dataset"`` (the paper's pairings)."""


def get_recipe(head: str, dataset: str) -> FinetuneRecipe:
    """The recipe of ``head`` on ``dataset``.

    Raises:
        ValueError: On an unknown head or dataset, or a pairing without a recipe (listing the
            supported ones).
    """
    kind = head_kind(head)
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {tuple(DATASETS)}")
    recipe = kind.recipes.get(dataset)
    if recipe is None:
        supported = sorted(kind.recipes)
        raise ValueError(
            f"{head} has no recipe for {dataset}: it is supported on {supported} "
            "(MUSDL needs per-judge or sub-scores, TSA needs step annotations)"
        )
    return recipe


@dataclass(frozen=True)
class FinetuneOptions:
    """The run-level settings of fine-tuning: the ``finetune_*`` config keys without the prefix.

    Zero means "the recipe's official value" for ``epochs``, ``batch_size``, ``lr_backbone``,
    ``lr_head`` and ``grad_accum_steps``. Build from a config with :meth:`from_config`: the
    ``finetune_*`` keys, and the two keys of the training loop that fine-tuning honours as stage 2
    does (``train_grad_accum_steps``, ``train_checkpoint_every_steps``).

    Attributes:
        epochs: Training epochs (0: official).
        batch_size: Videos or pairs per step over all processes (0: official).
        lr_backbone: Backbone learning rate (0: official).
        lr_head: Head learning rate (0: official).
        train_backbone: ``all`` (official: backbone and adapters), ``adapters`` or ``frozen``.
        features: ``clips`` (official) or ``stored``: with ``train_backbone="frozen"``, the head
            trains on the backbone's features of the training videos read with the test transform
            (no crop/flip/temporal jitter), computed once (:class:`~pecop_lib.heads.FeatureStore`),
            BatchNorm fixed. Each backbone is then judged by a head trained on the same stored
            features: cheap enough for a CPU, but without augmentation.
        decode: (M)USDL decoding: ``argmax`` (official) or ``expectation``.
        exemplars: Test exemplars per query for CoRe/TSA (official 10).
        shared_exemplars: One fixed exemplar bank per group instead of per-query draws.
        exemplar_missing: ``error`` (official) or ``any`` for a test group without training videos.
        val_fraction: Validation hold-out for the honest protocol (0: none).
        eval_batch_size: Videos per backbone call when evaluating.
        bootstrap: Bootstrap resamples of the reported rho's interval (0: none).
        scope: Which settings the notebooks run: ``minimal``, ``main`` or ``paper`` (see :func:`settings_for`).
        grad_accum_steps: Micro-batches per optimiser step (0: the recipe's; official CoRe 2, else 1).
        checkpoint_every_steps: Also checkpoint every N optimiser steps inside an epoch (0: epoch ends only).
    """

    epochs: int = 0
    batch_size: int = 0
    lr_backbone: float = 0.0
    lr_head: float = 0.0
    train_backbone: str = "all"
    features: str = "clips"
    decode: str = "argmax"
    exemplars: int = 10
    shared_exemplars: bool = False
    exemplar_missing: str = "error"
    val_fraction: float = 0.2
    eval_batch_size: int = 8
    bootstrap: int = 1000
    scope: str = "main"
    grad_accum_steps: int = 0
    checkpoint_every_steps: int = 0

    @classmethod
    def from_config(cls, cfg: Config) -> FinetuneOptions:
        """The options of a config: ``finetune_*``, ``train_grad_accum_steps`` and ``train_checkpoint_every_steps``."""
        return cls(**cfg.stage("finetune"), grad_accum_steps=cfg.train_grad_accum_steps,
                   checkpoint_every_steps=cfg.train_checkpoint_every_steps)

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 0, "epochs must be >= 0"),
            (self.batch_size >= 0, "batch_size must be >= 0"),
            (self.lr_backbone >= 0 and self.lr_head >= 0, "learning rates must be >= 0"),
            (self.train_backbone in TRAIN_BACKBONE, f"train_backbone must be one of {TRAIN_BACKBONE}"),
            (self.features in FEATURE_MODES, f"features must be one of {FEATURE_MODES}"),
            (self.features == "clips" or self.train_backbone == "frozen",
             "features='stored' needs train_backbone='frozen' (a trained backbone changes its features)"),
            (self.decode in DECODE_MODES, f"decode must be one of {DECODE_MODES}"),
            (self.exemplars >= 1, "exemplars must be >= 1"),
            (self.exemplar_missing in EXEMPLAR_MISSING, f"exemplar_missing must be one of {EXEMPLAR_MISSING}"),
            (0 <= self.val_fraction < 1, "val_fraction must be in [0, 1)"),
            (self.eval_batch_size >= 1, "eval_batch_size must be >= 1"),
            (self.bootstrap >= 0, "bootstrap must be >= 0"),
            (self.scope in SCOPES, f"scope must be one of {SCOPES}"),
            (self.grad_accum_steps >= 0, "grad_accum_steps must be >= 0"),
            (self.checkpoint_every_steps >= 0, "checkpoint_every_steps must be >= 0"),
        ]
        bad = [f"{message} (got {self})" for ok, message in checks if not ok]
        if bad:
            raise ValueError("invalid fine-tuning options: " + "; ".join(bad))

    def resolved(self, recipe: FinetuneRecipe) -> dict[str, float | int]:
        """Epochs, batch size and learning rates with zeros replaced by the recipe's values."""
        return {
            "epochs": self.epochs or recipe.epochs,
            "batch_size": self.batch_size or recipe.batch_size,
            "lr_backbone": self.lr_backbone or recipe.lr_backbone,
            "lr_head": self.lr_head or recipe.lr_head,
        }


# ------------------------------------------------------------------------------------ settings
SCOPES: tuple[str, ...] = ("minimal", "main", "paper")


@dataclass(frozen=True)
class Setting:
    """One fine-tuning run's data: dataset, task (JIGSAWS, PD4T) and JIGSAWS test fold."""

    head: str
    dataset: str
    task: str | None = None
    fold: int | None = None

    def __post_init__(self) -> None:
        get_recipe(self.head, self.dataset)
        dataset_record(self.dataset).check(self.task, self.fold)

    @property
    def recipe(self) -> FinetuneRecipe:
        """The setting's recipe."""
        return get_recipe(self.head, self.dataset)

    @property
    def kind(self) -> HeadKind:
        """The head's interface (:class:`~pecop_lib.heads.HeadKind`)."""
        return head_kind(self.head)

    @property
    def label(self) -> str:
        """E.g. ``"musdl/JIGSAWS/Suturing/fold0"``."""
        parts = [self.head, self.dataset] + ([self.task] if self.task else []) + (
            [f"fold{self.fold}"] if self.fold is not None else [])
        return "/".join(parts)


def settings_for(head: str, scope: str = "main", *, datasets: Sequence[str] | None = None) -> list[Setting]:
    """The runs a notebook makes for a head.

    Args:
        head: One of :data:`HEADS`.
        scope: ``minimal``: the head's first paper dataset (MTL-AQA; FineDiving for TSA);
            ``main``: the head's ``main_datasets`` (MUSDL: also the 4 folds of JIGSAWS Suturing,
            the last-10 protocol);
            ``paper``: every dataset, task and fold of the paper's tables for the head.
        datasets: Run these of the head's datasets instead (tasks and folds as ``scope`` says).

    Returns:
        The settings, in table order.
    """
    kind = head_kind(head)
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; choose one of {SCOPES}")
    chosen = tuple(kind.recipes)
    if datasets is not None:
        unknown = sorted(set(datasets) - set(chosen))
        if unknown:
            raise ValueError(f"{head} is not run on {unknown}; its datasets are {chosen}")
        chosen = tuple(d for d in chosen if d in datasets)
    if scope != "paper" and datasets is None:
        chosen = chosen[: kind.main_datasets if scope == "main" else 1]
    out = []
    for dataset in chosen:
        record = dataset_record(dataset)
        tasks = record.tasks or (None,)
        for task in tasks if scope == "paper" else tasks[:1]:
            out.extend(Setting(head, dataset, task, fold) for fold in record.folds or (None,))
    return out


# ------------------------------------------------------------------------------------ backbone
def load_finetune_backbone(
    name: str,
    checkpoint: str | os.PathLike[str] | None,
    *,
    base_weights: str | os.PathLike[str] | None = None,
    bn_eps: float = 1e-5,
    width: float = 1.0,
    seed: int = 0,
) -> tuple[Backbone, str]:
    """Build the backbone to fine-tune and load its weights, strictly.

    Args:
        name: ``"i3d"`` or ``"r3d18"``.
        checkpoint: ``None`` / ``"none"``: ``base_weights`` if given, else random initialisation
            (seeded); a weights file (Kinetics, stage-1 domain-general, HPT: any layout
            :func:`~pecop_lib.models.load_weights` reads); a pretraining artifact folder (with
            ``stage1.json`` or ``stage2.json``, :mod:`pecop_lib.train.artifacts`: built as recorded,
            e.g. the Dom-G or PECoP backbone); or a PECoP adapter-checkpoint folder
            (:func:`~pecop_lib.models.save_adapter_checkpoint`), loaded on top of ``base_weights``.
        base_weights: The weights the adapters were trained on (their SHA-256 is checked); for an
            adapter folder without it, the folder's ``metadata["base_weights"]`` is used if present.
        bn_eps: I3D BatchNorm eps.
        width: I3D channel multiplier (1: Kinetics I3D; a pretraining artifact records its own).
        seed: Seed of the random initialisation.

    Returns:
        The backbone (pool ``window2``, no classifier) and a one-line description of what was loaded.

    Raises:
        FileNotFoundError: If a path does not exist.
        ValueError: For an adapter folder without base weights (naming the fix).
        WeightsMismatchError: If weights do not fit the backbone.
    """
    from pecop_lib.models import build_backbone, load_adapter_checkpoint, load_weights
    from pecop_lib.models.adapter_checkpoint import read_adapter_config
    from pecop_lib.train.artifacts import (
        STAGE1_RECORD,
        STAGE2_RECORD,
        backbone_options,
        load_stage1,
        load_stage2,
    )

    options = backbone_options(name, pool=BACKBONE_POOL, bn_eps=bn_eps, width=width)
    backbone = build_backbone(name, seed=seed, **options)
    source = None if checkpoint is None or str(checkpoint).lower() == "none" else Path(checkpoint)
    if source is not None and not source.exists():
        raise FileNotFoundError(f"backbone checkpoint {source} does not exist; pass a weights file, an adapter "
                                "checkpoint folder or 'none'")
    if source is not None and source.is_dir() and any((source / r).is_file() for r in (STAGE1_RECORD, STAGE2_RECORD)):
        stage = load_stage2(source) if (source / STAGE2_RECORD).is_file() else load_stage1(source)
        backbone = stage.build()
        if backbone.name != name:
            raise ValueError(f"{source} holds a {backbone.name} backbone, not {name}; set model_backbone={backbone.name!r}")
        backbone.pool = BACKBONE_POOL
        return backbone, f"{name}: pretraining artifact {source.name}"
    if source is not None and source.is_dir():
        base = base_weights or read_adapter_config(source)["metadata"].get("base_weights")
        if not base:
            raise ValueError(
                f"{source} holds adapters only; pass base_weights= the backbone weights they were trained on "
                "(the stage-1 / Kinetics file; CLI: --base-weights)"
            )
        load_weights(backbone, _existing(base, "base weights"))
        load_adapter_checkpoint(backbone, source)
        return backbone, f"{name}: {Path(base).name} + PECoP adapters {source.name}"
    if source is not None:
        load_weights(backbone, source)
        return backbone, f"{name}: {source.name}"
    if base_weights is not None:
        load_weights(backbone, _existing(base_weights, "base weights"))
        return backbone, f"{name}: {Path(base_weights).name}"
    return backbone, f"{name}: random initialisation (seed {seed})"


def _existing(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} {p} does not exist")
    return p


# ---------------------------------------------------------------------------------------- data
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
        common: dict[str, Any] = {"crop": crop, "seed": seed, "clip_frames": frames, "train": train}
        if recipe.transform is not None:
            common["transform"] = official_transform(recipe.transform, train=train, crop=crop)
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
            self._transitions[index] = torch.as_tensor(_transitions(self.base, index))
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


# --------------------------------------------------------------------------------------- model
class AQAModel(nn.Module):
    """Backbone + head; ``forward(batch) -> (loss, metrics)`` so that DDP sees the whole step.

    Args:
        backbone: The (adapted) backbone.
        head: The head module (:meth:`~pecop_lib.heads.HeadKind.build`).
        kind: The head's interface: its loss, and whether it learns from pairs and needs maps.
        windowing: Clip windowing.
    """

    def __init__(self, backbone: Backbone, head: nn.Module, kind: HeadKind, windowing: Windowing) -> None:
        super().__init__()
        self.backbone, self.head, self.kind, self.windowing = backbone, head, kind, windowing

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss of a batch (see :class:`ScoreSamples` / :class:`PairSamples` for its keys).

        Batches with ``"feats"`` (``"feats_a"``/``"feats_b"``) carry stored features: the backbone is not run.
        """
        if not self.kind.pairs:
            if "feats" in batch:
                feats = WindowFeatures(batch["feats"])
            else:
                feats = encode_windows(self.backbone, batch["clip"], self.windowing)
            return self.kind.loss(self.head, batch, feats), {}
        if "feats_a" in batch:
            fa = WindowFeatures(batch["feats_a"], batch.get("maps_a"))
            fb = WindowFeatures(batch["feats_b"], batch.get("maps_b"))
        else:
            n = batch["clip_a"].shape[0]
            feats = encode_windows(self.backbone, torch.cat([batch["clip_a"], batch["clip_b"]]), self.windowing,
                                   maps=self.kind.maps)  # query and partner in one batch, as the official code
            fa, fb = feats.select(slice(0, n)), feats.select(slice(n, None))
        return self.kind.loss(self.head, batch, fa, fb), {}


def _aqa_step(model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
    loss, metrics = model(batch)
    count = batch["value_a"].shape[0] if "value_a" in batch else batch["target"].shape[0]
    return StepOutput(loss, metrics, count=count)


def set_trainable(backbone: Backbone, mode: str) -> list[str]:
    """Mark which backbone parameters fine-tuning updates; returns their names.

    Args:
        backbone: The backbone.
        mode: ``all`` (official: every parameter, adapters included), ``adapters`` (adapters
            only) or ``frozen`` (none: the head learns on fixed features). A Kinetics classifier,
            if built, never trains (fine-tuning does not use it).

    Raises:
        ValueError: On an unknown mode, or ``adapters`` on a backbone without adapters.
    """
    if mode not in TRAIN_BACKBONE:
        raise ValueError(f"unknown train_backbone {mode!r}; choose one of {TRAIN_BACKBONE}")
    return mark_parameters(backbone, "none" if mode == "frozen" else mode, who=f"train_backbone={mode!r}")


def adam_two_rates(model: AQAModel, *, lr_backbone: float, lr_head: float, weight_decay: float) -> torch.optim.Adam:
    """Adam with one parameter group for the trainable backbone and one for the head (official recipes)."""
    groups = [{"params": [p for p in model.backbone.parameters() if p.requires_grad], "lr": lr_backbone},
              {"params": list(model.head.parameters()), "lr": lr_head}]
    return torch.optim.Adam([g for g in groups if g["params"]], weight_decay=weight_decay)


# ---------------------------------------------------------------------------------- evaluation
@dataclass
class SplitPrediction:
    """Predictions of one evaluation pass.

    Attributes:
        pred: Predicted final scores ``(N,)``.
        transitions: TSA's predicted transitions ``(N, 2)``, else ``None``.
        distributions: (M)USDL predicted distributions of the first queries ``(k, paths, bins)``.
    """

    pred: np.ndarray
    transitions: np.ndarray | None = None
    distributions: np.ndarray | None = None


@dataclass
class _Evaluator:
    """Evaluates the model on a list of queries (test then validation videos), sharded over processes."""

    model: AQAModel
    setting: Setting
    queries: list[tuple[AQADataset, int]]
    exemplar_set: AQADataset
    exemplar_indices: list[int]
    exemplar_values: np.ndarray
    options: FinetuneOptions
    seed: int
    context: DistributedContext
    amp_dtype: torch.dtype | None
    keep_distributions: int = DISTRIBUTION_SAMPLES
    draw: ExemplarDraw | None = None
    store: FeatureStore | None = None  # set when the backbone cannot change: features computed once, on disk

    def __post_init__(self) -> None:
        if self.setting.kind.pairs:
            exemplar_groups = [self.exemplar_set.records[i].group for i in self.exemplar_indices]
            self.draw = draw_exemplars([ds.records[i].group for ds, i in self.queries], exemplar_groups,
                                       self.options.exemplars, seed=self.seed, missing=self.options.exemplar_missing,
                                       shared=self.options.shared_exemplars)  # type: ignore[arg-type]

    def _mine(self) -> list[int]:
        return list(range(self.context.rank, len(self.queries), self.context.world_size))

    def _clip(self, q: int) -> torch.Tensor:
        dataset, index = self.queries[q]
        return dataset[index]["clip"]

    def _stored(self, items: list[tuple[AQADataset, int]]) -> WindowFeatures:
        """Frozen-backbone features of dataset items, from :attr:`store`, on the model's device."""
        device = next(self.model.parameters()).device
        loaded: dict[int, WindowFeatures] = {}
        for dataset, _ in items:
            if id(dataset) not in loaded:
                loaded[id(dataset)] = self.store.window_features(  # type: ignore[union-attr]
                    self.model.backbone, dataset, self.model.windowing, maps=self.setting.kind.maps,
                    amp_dtype=self.amp_dtype, batch_size=self.options.eval_batch_size)
        feats = WindowFeatures.cat([loaded[id(dataset)].select(slice(i, i + 1)) for dataset, i in items])
        return WindowFeatures(feats.pooled.to(device), None if feats.maps is None else feats.maps.to(device))

    def _score_heads(self, mine: list[int]) -> dict[int, tuple[float, np.ndarray | None]]:
        backbone, head = self.model.backbone, self.model.head
        device = next(self.model.parameters()).device
        out: dict[int, tuple[float, np.ndarray | None]] = {}
        size = self.options.eval_batch_size
        stored = self._stored([self.queries[q] for q in mine]).video() if self.store is not None else None
        for start in range(0, len(mine), size):
            chunk = mine[start : start + size]
            if stored is not None:
                feats = stored[start : start + size]
                records = [self.queries[q][0].records[self.queries[q][1]] for q in chunk]
                difficulty = torch.tensor([1.0 if r.difficulty is None else r.difficulty for r in records], device=device)
            else:
                samples = [self.queries[q][0][self.queries[q][1]] for q in chunk]
                clips = torch.stack([s["clip"] for s in samples]).to(device)
                with autocast(device, self.amp_dtype):
                    feats = encode_windows(backbone, clips, self.model.windowing).video()
                difficulty = torch.stack([s.get("difficulty", torch.tensor(1.0)) for s in samples]).to(device)
            pred, dist = self.setting.kind.score(head, feats.float(), difficulty)
            dists = [None] * len(chunk) if dist is None else list(dist.cpu().numpy())
            for q, p, d in zip(chunk, pred.tolist(), dists, strict=True):
                out[q] = (p, d if q < self.keep_distributions else None)
        return out

    def _pair_heads(self, mine: list[int]) -> dict[int, tuple[float, np.ndarray | None]]:
        backbone, head = self.model.backbone, self.model.head
        device = next(self.model.parameters()).device
        kind = self.setting.kind

        def relative(query: WindowFeatures, exemplar: WindowFeatures, s_exemplar: torch.Tensor) -> torch.Tensor:
            def f32(x: WindowFeatures) -> WindowFeatures:
                return WindowFeatures(x.pooled.float(), None if x.maps is None else x.maps.float())

            with torch.autocast(device.type, enabled=False):  # the head decodes in fp32 (group edges)
                return kind.relative(head, f32(query), f32(exemplar), s_exemplar.float())

        draw = ExemplarDraw(self.draw.indices[mine])
        size, windowing = self.options.eval_batch_size, self.model.windowing
        if self.store is not None:  # fixed backbone: every video encoded once per run (or read from disk)
            queries = FeatureCache.filled(self._stored([self.queries[q] for q in mine]), windowing)
            exemplars = FeatureCache.filled(self._stored([(self.exemplar_set, i) for i in self.exemplar_indices]),
                                            windowing)
        else:  # each query and exemplar encoded once per evaluation; TSA's transitions reuse the queries
            queries = FeatureCache(backbone, windowing, lambda k: self._clip(mine[k]), maps=kind.maps,
                                   batch_size=size)
            exemplars = None
        with autocast(device, self.amp_dtype):
            values = predict_with_exemplars(
                relative, backbone, windowing, query_clip=lambda k: self._clip(mine[k]),
                num_queries=len(mine), exemplar_clip=lambda k: self.exemplar_set[self.exemplar_indices[k]]["clip"],
                draw=draw, exemplar_scores=self.exemplar_values, cached=True, maps=kind.maps, batch_size=size,
                query_cache=queries, exemplar_cache=exemplars,
            ).cpu().numpy()
        records = [self.queries[q][0].records[self.queries[q][1]] for q in mine]
        values = kind.final_scores(values, records, dataset_record(self.setting.dataset).key)
        out: dict[int, tuple[float, np.ndarray | None]] = {
            q: (float(v), None) for q, v in zip(mine, values, strict=True)}
        if kind.steps:  # predicted transitions of the queries (tIoU), from the features already encoded
            with torch.inference_mode():
                for start in range(0, len(mine), size):
                    chunk = mine[start : start + size]
                    feats = queries.features(range(start, start + len(chunk)))
                    trans = head.transitions(WindowFeatures(feats.pooled.float())).cpu().numpy()
                    for q, t in zip(chunk, trans, strict=True):
                        out[q] = (out[q][0], t)
        return out

    def __call__(self) -> SplitPrediction:
        """Predict every query (each process its shard, gathered on all)."""
        mine = self._mine()
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                local = self._pair_heads(mine) if self.setting.kind.pairs else self._score_heads(mine)
        finally:
            self.model.train(was_training)
        merged: dict[int, tuple[float, np.ndarray | None]] = {}
        for part in self.context.all_gather_object(local):
            merged.update(part)
        pred = np.array([merged[q][0] for q in range(len(self.queries))], dtype=np.float64)
        extra = [merged[q][1] for q in range(len(self.queries))]
        if self.setting.kind.steps:
            return SplitPrediction(pred, transitions=np.stack(extra))
        dists = [e for e in extra if e is not None]
        return SplitPrediction(pred, distributions=np.stack(dists) if dists else None)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def epoch_record(
    epoch: int, train_loss: float, test: SplitPrediction, test_true: np.ndarray, val_pred: np.ndarray | None,
    val_true: np.ndarray | None, test_transitions: np.ndarray | None,
) -> dict[str, Any]:
    """One epoch's evaluation: rho / L2 / R-l2 (x100) on test, rho on validation, tIoU (TSA), predictions.

    Undefined values (a rho of constant predictions) are stored as ``None``.
    """
    record: dict[str, Any] = {
        "epoch": epoch,
        "train_loss": train_loss,
        "test_rho": spearman(test.pred, test_true),
        "test_l2": l2(test.pred, test_true),
        "test_rl2": relative_l2(test.pred, test_true) if np.ptp(test_true) > 0 else float("nan"),
        "val_rho": spearman(val_pred, val_true) if val_pred is not None else float("nan"),
        "test_pred": test.pred.tolist(),
        "val_pred": val_pred.tolist() if val_pred is not None else [],
    }
    if test.transitions is not None and test_transitions is not None:
        accuracy = tiou_accuracy(test.transitions, test_transitions)
        record.update({f"test_tiou_{th:g}": acc for th, acc in accuracy.items()})
        record["test_transitions"] = test.transitions.tolist()
    if test.distributions is not None:
        record["distributions"] = test.distributions.tolist()
    return {k: _finite(v) if isinstance(v, float) else v for k, v in record.items()}  # JSON: nan -> None


# ------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Reported:
    """The number a protocol reports, with its bootstrap interval.

    Attributes:
        protocol: ``official``, ``official_last10`` or ``honest``.
        rho: Test Spearman (``nan`` if predictions were constant at every epoch considered).
        epoch: Selected epoch (1-based), ``None`` for averaged protocols.
        description: How it was chosen.
        ci: Paired bootstrap interval over the test videos (``None`` without bootstrap).
        l2: Test L2 at the selected epoch.
        rl2: Test R-l2 (x100) at the selected epoch.
    """

    protocol: str
    rho: float
    epoch: int | None
    description: str
    ci: Interval | None = None
    l2: float | None = None
    rl2: float | None = None


@dataclass
class FinetuneResult:
    """Everything a fine-tuning run measured.

    Attributes:
        setting: What was trained.
        backbone_label: Free label of the backbone (e.g. ``"Dom-G"``, ``"PECoP"``).
        epochs: One :func:`epoch_record` per epoch.
        test_true: True test scores; ``test_ids`` their record ids.
        val_true: True validation scores (empty without validation).
        reported: Protocol name -> :class:`Reported`.
        hyper: The resolved hyperparameters.
        history: The trainer's records.
        seconds: Wall time (training and evaluation).
        test_transitions: TSA: true transitions of the test videos ``(N, 2)``.
        distribution_targets: (M)USDL: the per-path scores of the first test videos, whose
            predicted distributions every epoch record keeps ``(k, paths)``.
        difficulty_baseline: Diving: the test rho of :func:`difficulty_baseline` (no video seen).
        test_difficulty: Diving: the degree of difficulty of every test video (``None`` elsewhere);
            see :meth:`execution_rho`.
    """

    setting: Setting
    backbone_label: str
    epochs: list[dict[str, Any]]
    test_true: np.ndarray
    test_ids: list[str]
    val_true: np.ndarray
    reported: dict[str, Reported]
    hyper: dict[str, Any]
    history: TrainHistory = field(default_factory=TrainHistory)
    seconds: float = 0.0
    test_transitions: np.ndarray | None = None
    distribution_targets: np.ndarray | None = None
    difficulty_baseline: float | None = None
    test_difficulty: np.ndarray | None = None

    def execution_rho(self, protocol: str = "official") -> float:
        """Diving: test Spearman of the *execution* score at the protocol's epoch.

        The execution score is the final score divided by the degree of difficulty (the judges'
        middle-three sum, before the difficulty factor); predictions are divided the same way. On
        the synthetic dives the difficulty alone ranks the final scores at rho ~0.9, which hides what
        the backbone saw; the execution score does not contain it. ``nan`` without difficulties.
        """
        if self.test_difficulty is None:
            return float("nan")
        return float(spearman(self.predictions(protocol) / self.test_difficulty, self.test_true / self.test_difficulty))

    def curve(self, key: str) -> np.ndarray:
        """Per-epoch values of a record key (e.g. ``"test_rho"``), float ``(epochs,)``."""
        return np.array([np.nan if r.get(key) is None else r[key] for r in self.epochs], dtype=np.float64)

    def predictions(self, protocol: str = "official") -> np.ndarray:
        """Test predictions at the protocol's epoch (last epoch for averaged protocols)."""
        return np.asarray(self.record(protocol)["test_pred"], dtype=np.float64)

    def record(self, protocol: str = "official") -> dict[str, Any]:
        """The epoch record at the protocol's epoch (the last epoch for averaged protocols)."""
        rep = self.reported.get(protocol)
        return self.epochs[((rep.epoch if rep is not None else None) or len(self.epochs)) - 1]

    def summary(self) -> dict[str, Any]:
        """Flat JSON-ready summary: setting, hyperparameters, each protocol's rho, epoch, CI, L2, R-l2."""
        out: dict[str, Any] = {"setting": self.setting.label, "backbone": self.backbone_label, **self.hyper,
                               "seconds": self.seconds, "test_videos": len(self.test_true),
                               "val_videos": len(self.val_true), "difficulty_baseline_rho": self.difficulty_baseline}
        if self.test_difficulty is not None:
            out.update({f"{name}_execution_rho": _finite(self.execution_rho(name)) for name in self.reported})
        for name, rep in self.reported.items():
            out[f"{name}_rho"] = _finite(rep.rho)
            out[f"{name}_epoch"] = rep.epoch
            out[f"{name}_ci"] = None if rep.ci is None else [_finite(rep.ci.low), _finite(rep.ci.high)]
            out[f"{name}_l2"] = rep.l2
            out[f"{name}_rl2"] = rep.rl2
        if self.setting.kind.steps:
            out["final_tiou_0.5"] = self.epochs[-1].get("test_tiou_0.5")
            out["final_tiou_0.75"] = self.epochs[-1].get("test_tiou_0.75")
        return out


def _interval(pred_by_epoch: Sequence[np.ndarray], true: np.ndarray, resamples: int, seed: int) -> Interval | None:
    """Paired bootstrap over test videos of the (mean over the given epochs of the) test rho."""
    if resamples == 0 or len(true) < 3:
        return None
    preds = np.stack(pred_by_epoch)

    def metric(index: np.ndarray, t: np.ndarray) -> float:
        rhos = [spearman(p[index.astype(np.int64)], t) for p in preds]
        return float(np.nanmean(rhos)) if not np.isnan(rhos).all() else float("nan")

    with warnings.catch_warnings():  # degenerate resamples (constant predictions) give nan and warn
        warnings.simplefilter("ignore")
        return bootstrap_ci(np.arange(len(true), dtype=np.float64), true, metric, n_resamples=resamples, seed=seed)


def select_epochs(epochs: list[dict[str, Any]], test_true: np.ndarray, protocol: Protocol, *, validation: bool,
                  bootstrap: int = 1000, seed: int = 0) -> dict[str, Reported]:
    """Apply the official protocol (and the honest one with a validation split) to per-epoch records.

    With fewer than 10 epochs the ``official_last10`` protocol averages all epochs (and says so).
    A protocol whose rho is ``nan`` at every epoch (constant predictions) reports ``nan``.
    """
    test_rhos = [_nan(r["test_rho"]) for r in epochs]
    preds = [np.asarray(r["test_pred"]) for r in epochs]
    out: dict[str, Reported] = {}

    def reported(sel: Selection | None, name: str, description: str, use: list[int]) -> Reported:
        ci = _interval([preds[i] for i in use], test_true, bootstrap, seed)
        if sel is None:
            return Reported(name, float("nan"), None, description + " (predictions constant at every epoch)", ci)
        one = sel.epoch is not None
        return Reported(name, sel.test_rho, sel.epoch + 1 if one else None, sel.description, ci,
                        epochs[sel.epoch]["test_l2"] if one else None, epochs[sel.epoch]["test_rl2"] if one else None)

    def safe(fn: Callable[[], Selection]) -> Selection | None:
        try:
            return fn()
        except ValueError as exc:
            if "NaN at every epoch" in str(exc):
                return None
            raise

    if protocol == "official_last10":
        last = min(10, len(epochs))
        sel = safe(lambda: official_last_mean(test_rhos, last=last))
        desc = f"mean test rho of the last {last} epochs" + ("" if last == 10 else " (10 in the official protocol)")
        rep = reported(sel, "official_last10", desc, list(range(len(epochs) - last, len(epochs))))
        out["official_last10"] = replace(rep, description=desc)
    else:
        sel = safe(lambda: official_best(test_rhos))
        out["official"] = reported(sel, "official", "best epoch on the test split (optimistic)",
                                   [sel.epoch] if sel else [len(epochs) - 1])
    if validation:
        val_rhos = [_nan(r["val_rho"]) for r in epochs]
        sel = safe(lambda: honest(val_rhos, test_rhos))
        out["honest"] = reported(sel, "honest", "epoch chosen on the validation split",
                                 [sel.epoch] if sel else [len(epochs) - 1])
    return out


# ------------------------------------------------------------------------------------- the run
def difficulty_baseline(train: Sequence[Any], test: Sequence[Any]) -> float | None:
    """Test rho of a "model" that never looks at the video: difficulty x mean training completeness.

    On diving (final score = execution x difficulty, difficulty known) this is what a head gets
    for free; a head has learned something about execution only where it beats this number.

    Args:
        train, test: Records (:class:`~pecop_lib.data.dataset.AQARecord`).

    Returns:
        rho, or ``None`` for datasets without difficulty.
    """
    if any(r.difficulty is None for r in (*train, *test)):
        return None
    completeness = float(np.mean([r.score / r.difficulty for r in train]))
    return _finite(spearman([r.difficulty * completeness for r in test], [r.score for r in test]))


def _transitions(dataset: AQADataset, index: int) -> np.ndarray:
    """Ground-truth transitions of a (FineDiving) record at its sampled frames, without decoding the clip."""
    positions = dataset.sample_positions(index, dataset.source(index), dataset.rng(index))
    return dataset.extra(index, positions)["transitions"].numpy()


def _read_evaluation(path: Path, header: dict[str, Any]) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    stored = read_json(path, fix="use a fresh run folder, or delete the file and resume")
    if stored.get("header") != header:
        raise ValueError(
            f"{path} belongs to another run ({stored.get('header')}), not {header}; use a fresh run folder or "
            "resume with the same setting, seed and options"
        )
    return list(stored["epochs"])


def finetune(
    backbone: Backbone,
    setting: Setting,
    data: FinetuneData,
    options: FinetuneOptions = FinetuneOptions(),
    *,
    backbone_label: str = "",
    run_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device = "auto",
    precision: str = "auto",
    compile: bool | str = False,
    keep_last: int | None = None,
    num_workers: int = 0,
    seed: int = 0,
    distributed: DistributedContext | None = None,
    resume: bool = False,
    show_progress: bool = True,
    feature_store: FeatureStore | bool = True,
) -> FinetuneResult:
    """Fine-tune a backbone and a head on one setting, evaluating every epoch.

    The backbone is modified in place (trainable flags, BatchNorm mode, weights). Load its
    weights first (:func:`load_finetune_backbone`).

    Args:
        backbone: The backbone (with adapters for a PECoP checkpoint).
        setting: Head, dataset, task, fold.
        data: The setting's splits (:func:`open_finetune_data`).
        options: Run-level settings (:class:`FinetuneOptions`).
        backbone_label: Label recorded with the results.
        run_dir: Folder for the trainer's checkpoints and metrics and ``evaluation.json``;
            ``None`` writes nothing (no resume).
        device, precision, compile, keep_last, distributed, show_progress: See
            :class:`~pecop_lib.train.loop.Trainer`.
        num_workers: Loader workers for training.
        seed: Seed of the head initialisation, data order, partners, validation split and exemplars.
        resume: Continue from the newest checkpoint in ``run_dir``.
        feature_store: When the backbone cannot change during the run (``train_backbone="frozen"``
            and a recipe with frozen BatchNorm), the evaluation features of the test and training
            splits are computed once and kept on disk (:class:`~pecop_lib.heads.FeatureStore`,
            keyed by the backbone's state and the data): ``True`` uses the cache folder, a
            store uses its folder, ``False`` encodes the videos at every evaluation.

    Returns:
        The :class:`FinetuneResult` (also written to ``run_dir/evaluation.json``).

    Raises:
        ValueError: On inconsistent options, a resumed run folder of another setting, or a
            batch size not divisible by the process count.
    """
    started = time.perf_counter()
    recipe = setting.recipe
    hyper = options.resolved(recipe)
    epochs, batch_size = int(hyper["epochs"]), int(hyper["batch_size"])
    local = device if isinstance(device, torch.device) else resolve_device(device)
    context = distributed or DistributedContext(device=local)
    if batch_size % context.world_size:
        raise ValueError(f"batch_size {batch_size} is not divisible by the {context.world_size} processes")
    clip_frames = data.train.clip_frames
    windowing = windowing_for(recipe.windowing, clip_frames)
    train_idx, val_idx = validation_split(data, setting, options.val_fraction, seed)
    set_trainable(backbone, options.train_backbone)
    stored = options.features == "stored"
    backbone.bn_mode = "frozen" if stored else recipe.bn_mode  # stored: the backbone never sees a training batch
    backbone.pool = BACKBONE_POOL
    fixed_backbone = options.train_backbone == "frozen" and backbone.bn_mode == "frozen"
    store = None
    if fixed_backbone and feature_store is not False:
        store = feature_store if isinstance(feature_store, FeatureStore) else FeatureStore()
    if stored and store is None:
        raise ValueError("features='stored' needs a feature store (feature_store=True or a FeatureStore)")

    kind, dataset_key = setting.kind, dataset_record(setting.dataset).key
    values = kind.values(data.train.records, dataset_key)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = kind.build(backbone.feature_dim, windowing, dataset_key, decode=options.decode,
                          values=values[train_idx], groups=[data.train.records[i].group for i in train_idx])
    model = AQAModel(backbone, head, kind, windowing)
    optimizer = adam_two_rates(model, lr_backbone=float(hyper["lr_backbone"]), lr_head=float(hyper["lr_head"]),
                               weight_decay=recipe.weight_decay)
    train_features = None
    if stored:  # the training videos' features, read with the test transform, computed once
        was_training = backbone.training
        backbone.to(context.device).eval()
        train_features = store.window_features(  # type: ignore[union-attr]
            backbone, data.reference, windowing, maps=kind.maps,
            amp_dtype=autocast_dtype(precision, context.device), batch_size=options.eval_batch_size,
            show_progress=show_progress)
        backbone.train(was_training)
    samples: Dataset = (PairSamples(data.train, train_idx, values, kind, epochs=epochs, seed=seed,
                                    features=train_features)
                        if kind.pairs else ScoreSamples(data.train, train_idx, kind, features=train_features))
    loader = epoch_loader(samples, batch_size // context.world_size, seed=seed, num_workers=num_workers,
                          rank=context.rank, world_size=context.world_size, pin_memory=context.device.type == "cuda")
    run = Path(run_dir) if run_dir is not None else None
    grad_accum_steps = options.grad_accum_steps or recipe.grad_accum_steps
    trainer = Trainer(model, _aqa_step, optimizer, run_dir=run, device=context.device, precision=precision,
                      compile=compile, grad_accum_steps=grad_accum_steps, keep_last=keep_last,
                      checkpoint_every_steps=options.checkpoint_every_steps or None,
                      distributed=distributed, desc=setting.label, show_progress=show_progress,
                      loader_workers=num_workers)

    test_true = data.test.scores()
    val_true = data.train.scores()[val_idx]
    queries = [(data.test, i) for i in range(len(data.test))] + [(data.reference, i) for i in val_idx]
    evaluator = _Evaluator(model, setting, queries, data.reference, train_idx, values[train_idx], options, seed, context,
                           autocast_dtype(precision, context.device), min(DISTRIBUTION_SAMPLES, len(test_true)),
                           store=store)
    test_transitions = None
    if kind.steps:
        test_transitions = np.stack([_transitions(data.test, i) for i in range(len(data.test))])
    # what decides the per-epoch records; the epoch count may grow on resume (TSA's teacher-forcing window follows it)
    header = {"setting": setting.label, "seed": seed,
              "options": {k: v for k, v in asdict(options).items() if k not in ("epochs", "bootstrap", "scope")},
              "hyper": {k: v for k, v in hyper.items() if k != "epochs"},
              "test_ids": [r.id for r in data.test.records], "val_ids": [data.train.records[i].id for i in val_idx]}
    eval_path = run / EVALUATION_FILE if run is not None else None

    def evaluate(epoch: int) -> dict[str, Any]:
        state = capture_rng_state()  # evaluation must not move the training generators (exact resume)
        try:
            prediction = evaluator()
        finally:
            restore_rng_state(state)
        test = SplitPrediction(prediction.pred[: len(test_true)],
                               None if prediction.transitions is None else prediction.transitions[: len(test_true)],
                               prediction.distributions)
        val_pred = prediction.pred[len(test_true):] if val_idx else None
        loss = trainer.history.epochs[-1]["loss"] if trainer.history.epochs else float("nan")
        return epoch_record(epoch, loss, test, test_true, val_pred, val_true if val_idx else None, test_transitions)

    records: list[dict[str, Any]] = []
    if resume:
        if eval_path is None:
            raise ValueError("resume=True needs a run_dir")
        records = _read_evaluation(eval_path, header)
        trainer.fit(loader, 0, resume=True)  # load the newest checkpoint, train nothing
    done = len(trainer.history.epochs)
    if len(records) > done or len(records) < done - 1:
        raise ValueError(
            f"{eval_path} holds {len(records)} evaluated epochs but the checkpoint is at epoch {done}; the "
            "evaluation of earlier epochs is lost: start the run again without resume"
        )

    def save() -> None:
        if eval_path is not None and context.is_main:
            atomic_write_json(eval_path, {"header": header, "epochs": records})

    if len(records) == done - 1:  # stopped between the checkpoint and its evaluation
        records.append(evaluate(done))
        save()
    for epoch in range(done, epochs):
        trainer.fit(loader, epoch + 1)
        records.append(evaluate(epoch + 1))
        save()
        if show_progress and context.is_main:
            r = records[-1]
            print(f"{setting.label} epoch {epoch + 1}/{epochs}: test rho {_nan(r['test_rho']):.4f}, val rho "
                  f"{_nan(r['val_rho']):.4f}, test L2 {r['test_l2']:.4g}", flush=True)
    if not records:
        raise ValueError(f"no epoch was trained or evaluated (epochs={epochs})")
    reported = select_epochs(records, test_true, recipe.official_protocol, validation=bool(val_idx),
                             bootstrap=options.bootstrap, seed=seed)
    hyper_out = {**hyper, "weight_decay": recipe.weight_decay, "grad_accum_steps": grad_accum_steps,
                 "bn_mode": recipe.bn_mode, "train_backbone": options.train_backbone, "decode": options.decode,
                 "windows": windowing.num_windows, "clip_frames": windowing.clip_frames, "recipe": recipe.source,
                 "train_videos": len(train_idx)}
    targets = None
    if kind.distributions:
        targets = np.stack([kind.path_targets(r) for r in data.test.records[:DISTRIBUTION_SAMPLES]])
    baseline = difficulty_baseline([data.train.records[i] for i in train_idx], data.test.records)
    difficulty = [r.difficulty for r in data.test.records]
    test_difficulty = None if any(d is None for d in difficulty) else np.asarray(difficulty, dtype=np.float64)
    return FinetuneResult(setting, backbone_label, records, test_true, [r.id for r in data.test.records], val_true,
                          reported, hyper_out, trainer.history, time.perf_counter() - started, test_transitions, targets,
                          baseline, test_difficulty)
