"""What every train/test split must satisfy, whatever its format: not empty, each video once, and no video in
both (a test video seen in training makes every test number a training number)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path

from pecop_lib.data.errors import DataFormatError


def check_split(keys: Sequence[Hashable], path: str | os.PathLike[str]) -> None:
    """Refuse an empty split or one that lists a video more than once.

    Raises:
        DataFormatError: Naming the file, the repeated key and how many keys repeat.
    """
    if not keys:
        raise DataFormatError(f"{path}: the split is empty; use the dataset's official split files")
    repeated = [key for key, count in Counter(keys).items() if count > 1]
    if repeated:
        raise DataFormatError(f"{path}: key {repeated[0]!r} is listed {Counter(keys)[repeated[0]]} times "
                              f"({len(repeated)} key(s) repeat); a split lists each video once: remove the repeats")


def check_disjoint(train: Sequence[Hashable], test: Sequence[Hashable], train_path: str | os.PathLike[str],
                   test_path: str | os.PathLike[str]) -> None:
    """Refuse a test video that is also a training video (leakage).

    Raises:
        DataFormatError: Naming both files, the first shared key and how many keys are shared.
    """
    shared = sorted(set(train) & set(test), key=repr)
    if shared:
        raise DataFormatError(f"{Path(test_path)} and {Path(train_path)} share {len(shared)} key(s), e.g. "
                              f"{shared[0]!r}: a video is in training or in test, never both; use the official "
                              "split files")


def open_split(paths: Mapping[str, Path], split: str, load: Callable[[Path], list], dataset: str) -> list:
    """Read the ``split`` of a dataset whose splits are files, checking every split file present.

    Args:
        paths: ``{"train": file, "test": file}``.
        split: The split wanted.
        load: Reads one split file (its keys; checks them against the annotations).
        dataset: Name used in the error of a missing file.

    Returns:
        The keys of ``split``.

    Raises:
        DataFormatError: If the wanted file is missing, or a split present is empty, repeats a key, or
            shares a key with the other (:func:`check_split`, :func:`check_disjoint`).
    """
    if not paths[split].exists():  # a FIFO or other special file is refused by the loader, never opened
        raise DataFormatError(f"{dataset} split file {paths[split]} does not exist; put the official split files in "
                              f"{paths[split].parent}")
    splits = {name: load(path) for name, path in paths.items() if path.exists()}
    for name, keys in splits.items():
        check_split(keys, paths[name])
    if len(splits) == 2:
        check_disjoint(splits["train"], splits["test"], paths["train"], paths["test"])
    return splits[split]
