"""Fine-tuning recipes and settings: one head on one dataset with its official hyperparameters (the
head's :class:`~pecop_lib.heads.HeadKind` holds them), the run-level options (``finetune_*`` config
keys) and the settings a notebook runs per head and scope."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pecop_lib.config import Config
from pecop_lib.data.registry import DATASETS, dataset_record
from pecop_lib.data.transforms import RESIZES
from pecop_lib.heads import (
    FinetuneRecipe,
    HeadKind,
    head_kind,
    recipes,
)
from pecop_lib.heads.tsa import SEGMENT_PAIRS
from pecop_lib.heads.usdl import DECODE_MODES
from pecop_lib.store import without_added

TRAIN_BACKBONE: tuple[str, ...] = ("all", "adapters", "frozen")
FEATURE_MODES: tuple[str, ...] = ("clips", "stored")
"""How the head sees the training videos: ``clips`` (decoded and augmented every step, the official
way) or ``stored`` (a frozen backbone's features of the un-augmented clips, computed once: the
``course`` preset's protocol, a documented deviation)."""
EXEMPLAR_MISSING: tuple[str, ...] = ("error", "any")
EXEMPLAR_DRAWS: tuple[str, ...] = ("fixed", "per_epoch")

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
        exemplar_draws: CoRe/TSA test exemplars: ``fixed`` (one draw per query for the run) or
            ``per_epoch`` (official: drawn anew for every query at every epoch).
        segment_pairs: TSA's segmentation of a training pair: ``separate`` (one PSNet call per video
            of the pair) or ``joint`` (official: one call over both, BatchNorm over 2N sequences).
        resize: Clip resize and centre crop: ``bilinear`` (the package's) or ``official`` (the head's
            official reader: PIL's nearest neighbour for CoRe and TSA, rounded centre crop):
            :func:`~pecop_lib.data.transforms.official_transform`.
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
    resize: str = "bilinear"
    exemplar_draws: str = "fixed"
    segment_pairs: str = "separate"

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
            (self.resize in RESIZES, f"resize must be one of {RESIZES}"),
            (self.exemplar_draws in EXEMPLAR_DRAWS, f"exemplar_draws must be one of {EXEMPLAR_DRAWS}"),
            (self.segment_pairs in SEGMENT_PAIRS, f"segment_pairs must be one of {SEGMENT_PAIRS}"),
        ]
        bad = [f"{message} (got {self})" for ok, message in checks if not ok]
        if bad:
            raise ValueError("invalid fine-tuning options: " + "; ".join(bad))

    def keyed(self) -> dict[str, Any]:
        """The options as they enter a run's request and cache key: the fidelity switches added later
        (``resize``, ``exemplar_draws``, ``segment_pairs``) only when they are not the package's values,
        so results cached before these switches existed stay valid."""
        before = {"resize": "bilinear", "exemplar_draws": "fixed", "segment_pairs": "separate"}
        return without_added(asdict(self), before)

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

