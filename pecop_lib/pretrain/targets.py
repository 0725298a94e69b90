"""Which unlabeled videos stage 2 (continual pretraining) reads, per target AQA dataset.

PECoP continues pretraining on the videos of the task it will later score, without their scores.
:func:`pretraining_videos` opens a dataset's **training split** (test videos are never seen) and
returns its distinct videos as :class:`~pecop_lib.pretrain.pretext.TargetVideo` spans:

============== ===================================================================================
dataset        videos
============== ===================================================================================
``MTL-AQA``    each dive: the annotated ``start_frame..end_frame`` span of its event recording
``FineDiving`` each dive clip folder
``JIGSAWS``    each trial of the task in the training split of the test ``fold`` being evaluated
               (the other three folds): one stage 2 per fold, as fold ``k``'s test trials are the
               training trials of every other fold
``PD4T``       each video of the task; ``Gait`` reads at a normal pace of 3 frames (official ``fr``)
============== ===================================================================================

:func:`check_fold` says which targets take a fold (JIGSAWS only, and there always);
:func:`check_evaluation_split` refuses to score a JIGSAWS fold on a backbone pretrained for another.
"""

from __future__ import annotations

import os
from pathlib import Path

from pecop_lib.data.dataset import AQADataset
from pecop_lib.data.registry import DATASETS, dataset_record
from pecop_lib.pretrain.pretext import TargetVideo, target_videos

TARGET_DATASETS: tuple[str, ...] = tuple(DATASETS)
"""Dataset names, equal to their folder names under a data root (:data:`~pecop_lib.data.registry.DATASETS`)."""

TARGET_TASKS: dict[str, tuple[str, ...]] = {name: record.tasks for name, record in DATASETS.items()}
"""Tasks of each dataset (empty: the dataset has a single task)."""

JIGSAWS_FOLDS: tuple[int, ...] = DATASETS["JIGSAWS"].folds
"""JIGSAWS test folds; stage 2 for fold ``k`` reads the trials of the other three."""


def named_target(name: str) -> tuple[str, str | None]:
    """A stage-2 target by one name: a single-task dataset or a task of a dataset -> ``(dataset, task)``.

    ``"MTL-AQA"`` -> ``("MTL-AQA", None)``, ``"Leg agility"`` -> ``("PD4T", "Leg agility")``,
    ``"Suturing"`` -> ``("JIGSAWS", "Suturing")`` (how ``pretrain_demo_task`` names notebook 03's target).

    Raises:
        ValueError: On a name that is neither, or a multi-task dataset named without its task; the
            message lists the valid names.
    """
    if name in TARGET_TASKS and not TARGET_TASKS[name]:
        return name, None
    for dataset, tasks in TARGET_TASKS.items():
        if name in tasks:
            return dataset, name
    valid = [d for d, tasks in TARGET_TASKS.items() if not tasks] + [t for tasks in TARGET_TASKS.values() for t in tasks]
    raise ValueError(f"unknown stage-2 target {name!r}: name a single-task dataset or a task, one of {valid}")


def check_target(dataset: str, task: str | None) -> None:
    """Validate a (dataset, task) pair.

    Raises:
        ValueError: On an unknown dataset, a missing or unknown task, or a task given to a
            single-task dataset; the message lists the valid choices.
    """
    dataset_record(dataset).check_task(task)


def check_fold(dataset: str, fold: int | None) -> None:
    """Validate the test fold of a stage-2 target: JIGSAWS needs one, the other datasets take none.

    Raises:
        ValueError: On a missing or out-of-range fold for JIGSAWS, or a fold given to a dataset with a
            single train/test split; the message lists the valid choices.
    """
    dataset_record(dataset).check_fold(fold)


def check_evaluation_split(pretrained: tuple[str, str | None, int | None], dataset: str, task: str | None,
                           fold: int | None) -> None:
    """Refuse to score a setting on a backbone whose stage 2 read that setting's test videos.

    Stage 2 for JIGSAWS fold ``k`` reads the trials of the other three folds, which are the test
    trials of those folds' runs; any other (dataset, task) pairing shares no video.

    Args:
        pretrained: The stage-2 target ``(dataset, task, fold)``.
        dataset, task, fold: The setting to be fine-tuned and tested.

    Raises:
        ValueError: If the backbone was pretrained on another fold of the same JIGSAWS task, naming the fix.
    """
    source_dataset, source_task, source_fold = pretrained
    if dataset == source_dataset and dataset_record(dataset).folds and task == source_task and fold != source_fold:
        raise ValueError(
            f"the backbone was continually pretrained for {dataset} {task} fold {source_fold}: its training videos "
            f"include the test videos of fold {fold}; use the fold-{fold} stage-2 backbone (pecop pretrain --fold "
            f"{fold}) or evaluate fold {source_fold} only (--fold {source_fold})"
        )


def open_target(root: str | os.PathLike[str], dataset: str, *, task: str | None = None, fold: int | None = None,
                crop: int = 112, seed: int = 0, split: str = "train") -> AQADataset:
    """A split of a target dataset (its scores are not used by stage 2).

    Args:
        root: The dataset's own folder (e.g. ``<data root>/MTL-AQA``).
        dataset: One of :data:`TARGET_DATASETS`.
        task: JIGSAWS or PD4T task.
        fold: JIGSAWS test fold (:data:`JIGSAWS_FOLDS`): its training split is the other three folds.
        crop: Crop side of the dataset's own transform (unused by stage 2, which has its own).
        seed: Dataset seed.
        split: ``"train"`` (what stage 2 pretrains on) or ``"test"`` (held out: stage 2 only measures on it).

    Raises:
        ValueError: See :func:`check_target` and :func:`check_fold`, or an unknown split.
    """
    return dataset_record(dataset).open(root, split, task=task, fold=fold, crop=crop, seed=seed, train=False)


def pretraining_videos(root: str | os.PathLike[str], dataset: str, *, task: str | None = None,
                       fold: int | None = None) -> list[TargetVideo]:
    """The unlabeled videos stage 2 pretrains on (see the module docstring).

    Args:
        root: The dataset's own folder (e.g. ``<data root>/PD4T``).
        dataset: One of :data:`TARGET_DATASETS`.
        task: JIGSAWS or PD4T task.
        fold: JIGSAWS test fold being evaluated (required for JIGSAWS, ``None`` otherwise).

    Returns:
        One :class:`TargetVideo` per distinct video (span) of the training split.

    Raises:
        ValueError: See :func:`check_target` and :func:`check_fold`.
        FileNotFoundError: If ``root`` does not exist.
    """
    check_target(dataset, task)
    check_fold(dataset, fold)
    if not Path(root).is_dir():
        raise FileNotFoundError(f"{dataset} folder {root} does not exist; check the data root")
    return target_videos(open_target(root, dataset, task=task, fold=fold),
                         annotated_span=dataset_record(dataset).annotated_span)


def heldout_videos(root: str | os.PathLike[str], dataset: str, *, task: str | None = None,
                   fold: int | None = None) -> list[TargetVideo]:
    """The target's test-split videos: stage 2 never trains on them, it measures its pretext there.

    Arguments and errors as :func:`pretraining_videos`.
    """
    check_target(dataset, task)
    check_fold(dataset, fold)
    if not Path(root).is_dir():
        raise FileNotFoundError(f"{dataset} folder {root} does not exist; check the data root")
    return target_videos(open_target(root, dataset, task=task, fold=fold, split="test"),
                         annotated_span=dataset_record(dataset).annotated_span)


def official_normal_pace(dataset: str, task: str | None = None) -> int:
    """PECoP's VSPP normal pace ``fr`` for a target: 3 for PD4T gait, 1 otherwise."""
    check_target(dataset, task)
    return dataset_record(dataset).pace(task)
