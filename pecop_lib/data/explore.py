"""Helpers for browsing datasets (notebook 01): open every dataset under a root, tables, montages.

The same calls work for the synthetic world and for a folder of real datasets laid out as
``<root>/MTL-AQA``, ``<root>/FineDiving``, ``<root>/JIGSAWS``, ``<root>/PD4T`` (any subset).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pecop_lib.data.dataset import AQADataset
from pecop_lib.data.formats.finediving import FineDiving
from pecop_lib.data.formats.jigsaws import JIGSAWS
from pecop_lib.data.formats.mtl_aqa import MTLAQA
from pecop_lib.data.formats.pd4t import PD4T
from pecop_lib.data.synthetic.world import World

AQA_DATASETS = ("MTL-AQA", "FineDiving", "JIGSAWS", "PD4T")


def open_datasets(
    root: str | os.PathLike[str], *, split: str = "train", crop: int = 112, clip_frames: int | None = None,
    seed: int = 0, jigsaws_task: str = "Suturing", pd4t_task: str = "Finger tapping",
) -> dict[str, AQADataset]:
    """Every AQA dataset found under ``root`` (evaluation transforms), keyed by dataset name.

    Raises:
        FileNotFoundError: If none of :data:`AQA_DATASETS` exists under ``root``.
    """
    root = Path(root)
    common = {"crop": crop, "clip_frames": clip_frames, "seed": seed, "train": False}
    makers = {
        "MTL-AQA": lambda r: MTLAQA(r, split, **common),
        "FineDiving": lambda r: FineDiving(r, split, **common),
        "JIGSAWS": lambda r: JIGSAWS(r, jigsaws_task, 0, split, **common),
        "PD4T": lambda r: PD4T(r, pd4t_task, split, **common),
    }
    found = {name: make(root / name) for name, make in makers.items() if (root / name).is_dir()}
    if not found:
        raise FileNotFoundError(f"no dataset folder ({', '.join(AQA_DATASETS)}) under {root}; check DATA_ROOT")
    return found


def raw_frames(dataset: AQADataset, index: int, count: int = 8) -> np.ndarray:
    """``count`` decoded uint8 frames ``(count, H, W, 3)`` evenly spread over sample ``index``'s clip."""
    source = dataset.source(index)
    positions = dataset.positions(index, source, dataset.rng(index))
    return source.read(positions[np.linspace(0, len(positions) - 1, count).astype(int)])


def montage(frames: np.ndarray, columns: int | None = None) -> np.ndarray:
    """Tile ``(T, H, W, 3)`` frames into one image, ``columns`` per row (default: all in one row)."""
    frames = np.asarray(frames)
    columns = columns or len(frames)
    rows = -(-len(frames) // columns)
    pad = rows * columns - len(frames)
    frames = np.concatenate([frames, np.zeros((pad, *frames.shape[1:]), frames.dtype)])
    t, h, w, c = frames.shape
    return frames.reshape(rows, columns, h, w, c).transpose(0, 2, 1, 3, 4).reshape(rows * h, columns * w, c)


def table(dataset: AQADataset, name: str, world: World | None = None) -> "pandas.DataFrame":  # noqa: F821
    """The dataset's records as a table, joined with the synthetic latents when ``world`` is given."""
    frame = dataset.to_frame()
    if world is None:
        return frame
    latents = world.latents(name)
    if name == "PD4T":  # latents are keyed "<task>/<video_id>"
        latents["id"] = latents["id"].str.split("/", n=1).str[1]
        latents = latents[latents["task"] == dataset.task].drop(columns=["task"])
    overlap = [c for c in latents.columns if c in frame.columns and c != "id"]
    return frame.merge(latents.drop(columns=overlap), on="id", how="left")
