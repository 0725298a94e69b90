"""Which unlabeled videos stage 2 (continual pretraining) reads, per target AQA dataset.

PECoP continues pretraining on the videos of the task it will later score, without their scores.
:func:`pretraining_videos` opens a dataset's **training split** (test videos are never seen) and
returns its distinct videos as :class:`~pecop_lib.train.pretrain.TargetVideo` spans:

============== ===================================================================================
dataset        videos
============== ===================================================================================
``MTL-AQA``    each dive: the annotated ``start_frame..end_frame`` span of its event recording
``FineDiving`` each dive clip folder
``JIGSAWS``    each trial of the task (training split of fold 0)
``PD4T``       each video of the task; ``Gait`` reads at a normal pace of 3 frames (official ``fr``)
============== ===================================================================================
"""

from __future__ import annotations

import os
from pathlib import Path

from pecop_lib.data.dataset import AQADataset
from pecop_lib.data.formats.finediving import FineDiving
from pecop_lib.data.formats.jigsaws import JIGSAWS
from pecop_lib.data.formats.jigsaws import TASKS as JIGSAWS_TASKS
from pecop_lib.data.formats.mtl_aqa import MTLAQA
from pecop_lib.data.formats.pd4t import PACE as PD4T_PACE
from pecop_lib.data.formats.pd4t import PD4T
from pecop_lib.data.formats.pd4t import TASKS as PD4T_TASKS
from pecop_lib.train.pretrain import TargetVideo, target_videos

TARGET_DATASETS: tuple[str, ...] = ("MTL-AQA", "FineDiving", "JIGSAWS", "PD4T")
"""Dataset names, equal to their folder names under a data root."""

TARGET_TASKS: dict[str, tuple[str, ...]] = {"MTL-AQA": (), "FineDiving": (), "JIGSAWS": JIGSAWS_TASKS, "PD4T": PD4T_TASKS}
"""Tasks of each dataset (empty: the dataset has a single task)."""


def check_target(dataset: str, task: str | None) -> None:
    """Validate a (dataset, task) pair.

    Raises:
        ValueError: On an unknown dataset, a missing or unknown task, or a task given to a
            single-task dataset; the message lists the valid choices.
    """
    if dataset not in TARGET_DATASETS:
        raise ValueError(f"unknown target dataset {dataset!r}; choose one of {TARGET_DATASETS}")
    tasks = TARGET_TASKS[dataset]
    if tasks and task not in tasks:
        raise ValueError(f"{dataset} needs a task, one of {tasks}; got {task!r}")
    if not tasks and task is not None:
        raise ValueError(f"{dataset} has a single task; do not pass task={task!r}")


def open_target(root: str | os.PathLike[str], dataset: str, *, task: str | None = None, crop: int = 112,
                seed: int = 0) -> AQADataset:
    """The training split of a target dataset (its scores are not used by stage 2).

    Args:
        root: The dataset's own folder (e.g. ``<data root>/MTL-AQA``).
        dataset: One of :data:`TARGET_DATASETS`.
        task: JIGSAWS or PD4T task.
        crop: Crop side of the dataset's own transform (unused by stage 2, which has its own).
        seed: Dataset seed.

    Raises:
        ValueError: See :func:`check_target`.
    """
    check_target(dataset, task)
    common = {"crop": crop, "seed": seed, "train": False}
    if dataset == "MTL-AQA":
        return MTLAQA(root, "train", **common)
    if dataset == "FineDiving":
        return FineDiving(root, "train", **common)
    if dataset == "JIGSAWS":
        return JIGSAWS(root, task, 0, "train", **common)
    return PD4T(root, task, "train", **common)


def pretraining_videos(root: str | os.PathLike[str], dataset: str, *, task: str | None = None) -> list[TargetVideo]:
    """The unlabeled videos stage 2 pretrains on (see the module docstring).

    Args:
        root: The dataset's own folder (e.g. ``<data root>/PD4T``).
        dataset: One of :data:`TARGET_DATASETS`.
        task: JIGSAWS or PD4T task.

    Returns:
        One :class:`TargetVideo` per distinct video (span) of the training split.

    Raises:
        ValueError: See :func:`check_target`.
        FileNotFoundError: If ``root`` does not exist.
    """
    check_target(dataset, task)
    if not Path(root).is_dir():
        raise FileNotFoundError(f"{dataset} folder {root} does not exist; check the data root")
    return target_videos(open_target(root, dataset, task=task), annotated_span=dataset == "MTL-AQA")


def official_normal_pace(dataset: str, task: str | None = None) -> int:
    """PECoP's VSPP normal pace ``fr`` for a target: 3 for PD4T gait, 1 otherwise."""
    check_target(dataset, task)
    return PD4T_PACE[task] if dataset == "PD4T" else 1
