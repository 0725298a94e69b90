"""The target datasets, one record each: what the rest of the package needs to know about a dataset.

Every question that used to be a string comparison on a dataset's name (which tasks, which folds,
how validation videos are held out, whether clips are spans of a longer video, VSPP's normal pace,
how to open a split) is answered here, so that code outside :mod:`pecop_lib.data` asks the record
instead of naming the dataset. Names are the folder names under a data root (``"MTL-AQA"``,
:func:`dataset_record`); the lower-case keys of the head tables (``"mtl_aqa"``) and the ``pecop doctor``
spellings (``"mtl-aqa"``) resolve to the same record through :func:`find_dataset`.

Example::

    from pecop_lib.data.registry import dataset_record

    pd4t = dataset_record("PD4T")
    pd4t.tasks                                  # ('Gait', 'Finger tapping', ...)
    test = pd4t.open(root, "test", task="Gait", crop=112)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pecop_lib.data.dataset import AQADataset
from pecop_lib.data.formats.finediving import FineDiving
from pecop_lib.data.formats.jigsaws import JIGSAWS
from pecop_lib.data.formats.jigsaws import NUM_FOLDS as JIGSAWS_NUM_FOLDS
from pecop_lib.data.formats.jigsaws import TASKS as JIGSAWS_TASKS
from pecop_lib.data.formats.mtl_aqa import (
    ANNOTATION_FILES,
    CORE_FRAMES_DIR,
    MTLAQA,
    MUSDL_FRAMES_DIR,
    find_info_dir,
)
from pecop_lib.data.formats.pd4t import PACE as PD4T_PACE
from pecop_lib.data.formats.pd4t import PD4T
from pecop_lib.data.formats.pd4t import TASKS as PD4T_TASKS

Opener = Callable[..., AQADataset]
"""``opener(root, split, task, fold, **loader_options)`` -> the loader of one split."""

HOLDOUT_RULES: tuple[str, ...] = ("group", "subject")
"""How validation videos are carved from a training split: stratified by the exemplar group
(difficulty, dive number) or by whole subjects (no subject on both sides)."""


@dataclass(frozen=True)
class DatasetRecord:
    """One target dataset.

    Attributes:
        name: Display name and folder name under a data root (``"MTL-AQA"``).
        key: Lower-case key of the head tables (``"mtl_aqa"``).
        card: Name of its data card, ``data_cards/<card>.md``, and its ``pecop doctor`` spelling.
        tasks: Its tasks (empty: a single task).
        folds: Its test folds (empty: one train/test split); stage 2 for fold ``k`` reads the
            other folds' trials.
        holdout: One of :data:`HOLDOUT_RULES`.
        annotated_span: Whether a record is a span of a longer video (MTL-AQA's clips of one event),
            so that stage 2 reads each video once.
        judges: Whether its records carry per-judge scores (MTL-AQA's seven judges; MUSDL needs them).
        normal_pace: VSPP's normal pace ``fr`` per task (1 for tasks not listed).
        opener: Builds a split's loader (see :data:`Opener`).
        finetune_options: Loader options fine-tuning adds for a dataset folder (MTL-AQA: MUSDL's
            annotation file with the judges when present, and the frame layout found on disk).
        higher_is_better: Whether a higher score means a better performance (diving, surgery) or not
            (PD4T's UPDRS items: 0 normal, 4 severe), so that a defect raises the score.
    """

    name: str
    key: str
    card: str
    tasks: tuple[str, ...]
    folds: tuple[int, ...]
    holdout: str
    annotated_span: bool
    judges: bool
    normal_pace: Mapping[str, int]
    opener: Opener
    finetune_options: Callable[[Path], dict[str, Any]] = field(default=lambda root: {})
    higher_is_better: bool = True

    def check_task(self, task: str | None) -> None:
        """Validate a task for this dataset.

        Raises:
            ValueError: On a missing or unknown task, or a task given to a single-task dataset; the
                message lists the valid choices.
        """
        if self.tasks and task not in self.tasks:
            raise ValueError(f"{self.name} needs a task, one of {self.tasks}; got {task!r}")
        if not self.tasks and task is not None:
            raise ValueError(f"{self.name} has a single task; do not pass task={task!r}")

    def check_fold(self, fold: int | None) -> None:
        """Validate a test fold for this dataset.

        Raises:
            ValueError: On a missing or out-of-range fold where the dataset has folds, or a fold given
                to one that has none; the message lists the valid choices.
        """
        if self.folds:
            if isinstance(fold, bool) or fold not in self.folds:
                others = ("one ", "two ", "three ", "four ")[len(self.folds) - 2] if 2 <= len(self.folds) <= 5 else ""
                raise ValueError(f"{self.name} needs the test fold being evaluated, one of {self.folds} (stage 2 "
                                 f"reads the trials of the other {others}folds); got fold={fold!r}")
        elif fold is not None:
            with_folds = [r.name for r in DATASETS.values() if r.folds]
            raise ValueError(f"{self.name} has a single train/test split; do not pass fold={fold!r} (only "
                             f"{', '.join(with_folds)} has folds)")

    def check(self, task: str | None, fold: int | None) -> None:
        """Validate a task and a test fold: :meth:`check_task`, then :meth:`check_fold`."""
        self.check_task(task)
        self.check_fold(fold)

    @property
    def first_fold(self) -> int | None:
        """The fold a reader of a single fold takes: the first test fold, ``None`` without folds."""
        return self.folds[0] if self.folds else None

    def pace(self, task: str | None) -> int:
        """VSPP's normal pace ``fr`` for a task of this dataset (official: 3 for PD4T gait, 1 otherwise)."""
        return self.normal_pace.get(task or "", 1)

    def open(self, root: str | os.PathLike[str], split: str, *, task: str | None = None, fold: int | None = None,
             **options: Any) -> AQADataset:
        """The loader of one split (``"train"`` or ``"test"``); ``options`` go to the loader (crop, seed, ...).

        Raises:
            ValueError: See :meth:`check`, or an unknown split.
        """
        self.check(task, fold)
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return self.opener(root, split, task, fold, **options)


def _mtl_aqa_finetune_options(root: Path) -> dict[str, Any]:
    info = find_info_dir(root)
    # MUSDL needs the judges: prefer its own annotation file when both are present
    annotation = info / ANNOTATION_FILES[1] if (info / ANNOTATION_FILES[1]).exists() else None
    # CoRe's whole-event frames when present (the synthetic world), else MUSDL's per-clip folders
    layout = "core" if (root / CORE_FRAMES_DIR).is_dir() or not (root / MUSDL_FRAMES_DIR).is_dir() else "musdl"
    return {"layout": layout, "annotation_file": annotation}


DATASETS: dict[str, DatasetRecord] = {
    record.name: record
    for record in (
        DatasetRecord(
            "MTL-AQA", key="mtl_aqa", card="mtl-aqa", tasks=(), folds=(), holdout="group", annotated_span=True,
            judges=True, normal_pace={}, opener=lambda root, split, task, fold, **kw: MTLAQA(root, split, **kw),
            finetune_options=_mtl_aqa_finetune_options,
        ),
        DatasetRecord(
            "FineDiving", key="finediving", card="finediving", tasks=(), folds=(), holdout="group",
            annotated_span=False, judges=False, normal_pace={},
            opener=lambda root, split, task, fold, **kw: FineDiving(root, split, **kw),
        ),
        DatasetRecord(
            "JIGSAWS", key="jigsaws", card="jigsaws", tasks=JIGSAWS_TASKS, folds=tuple(range(JIGSAWS_NUM_FOLDS)),
            holdout="subject", annotated_span=False, judges=False, normal_pace={},
            opener=lambda root, split, task, fold, **kw: JIGSAWS(root, task, fold, split, **kw),
        ),
        DatasetRecord(
            "PD4T", key="pd4t", card="pd4t", tasks=PD4T_TASKS, folds=(), holdout="subject", annotated_span=False,
            judges=False, normal_pace=PD4T_PACE, opener=lambda root, split, task, fold, **kw: PD4T(root, task, split, **kw),
            higher_is_better=False,
        ),
    )
}
"""The target datasets by name, in the order the CLI lists them."""


def dataset_record(name: str) -> DatasetRecord:
    """The record of a dataset by its exact name (``"MTL-AQA"``, the folder name under a data root).

    Raises:
        ValueError: On an unknown dataset, listing the valid names.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown target dataset {name!r}; choose one of {tuple(DATASETS)}")
    return DATASETS[name]


def first_fold(name: str | None) -> int | None:
    """:attr:`DatasetRecord.first_fold` of a dataset by name; ``None`` for a name the registry does not hold.

    For records written before stage 2 had a fold (a JIGSAWS stage 2 then always read fold 0's training
    split), whose dataset field is not checked here.
    """
    return DATASETS[name].first_fold if name in DATASETS else None


def find_dataset(spelling: str) -> DatasetRecord:
    """The record of a dataset by any spelling, case-insensitive: ``"MTL-AQA"``, ``"mtl_aqa"``, ``"mtl-aqa"``.

    Raises:
        ValueError: On an unknown dataset, listing the valid names.
    """
    wanted = spelling.lower().replace("-", "_")
    for record in DATASETS.values():
        if wanted in (record.name.lower().replace("-", "_"), record.key, record.card.replace("-", "_")):
            return record
    raise ValueError(f"unknown dataset {spelling!r}; choose one of {tuple(DATASETS)}")
