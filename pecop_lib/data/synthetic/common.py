"""What every dataset generator of the synthetic world shares: names, per-video seeding, the worker pool.

Kept apart from :mod:`~pecop_lib.data.synthetic.world` so that generators in other modules
(:mod:`~pecop_lib.data.synthetic.clinical`) and readers of a generated folder
(:mod:`~pecop_lib.data.synthetic.defects`) use the same names and seeds without importing the
world module itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pecop_lib.data.synthetic.world import WorldSpec

DATASETS = ("MTL-AQA", "FineDiving", "JIGSAWS", "PD4T", "Kinetics-synth")
MP4_DATASETS = ("PD4T", "Kinetics-synth")
"""The datasets whose videos are mp4 files (the others are JPEG frame folders)."""
LATENTS_FILE = "synthetic_latents.json"
"""Each generated dataset folder's record id -> latent factors (no real dataset has it)."""
MANIFEST = "world.json"
_CODES = {name: i for i, name in enumerate(DATASETS)}


def video_rng(spec: WorldSpec, dataset: str, *index: int) -> np.random.Generator:
    """The generator of one video (or one group of videos): ``default_rng([seed, dataset code, *index])``."""
    return np.random.default_rng([spec.seed, _CODES[dataset], *index])


def parallel_map(fn: Callable, items: Iterable, workers: int) -> list:
    """``[fn(*item) for item in items]``, in ``workers`` processes when ``workers > 1`` (order kept)."""
    items = list(items)
    if workers <= 1:
        return [fn(*item) for item in items]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, *zip(*items), chunksize=max(1, len(items) // (4 * workers))))
