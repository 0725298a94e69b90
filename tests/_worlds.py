"""The tiny synthetic worlds the tests share, each generated once per test session under pytest's base temporary folder.

* :func:`tiny_world` (MTL-AQA + the action set) and :func:`tiny_jigsaws`: pretraining artifacts, CLI, registry,
  doctor; the stage-1 artifacts the tests train there are reused through the artifact cache itself.
* :func:`finetune_world` (every dataset, 12 videos per task): fine-tuning runs, its CLI and the feature store.
"""

from __future__ import annotations

from pathlib import Path

from pecop_lib.data.synthetic import World, WorldSpec, generate_world
from pecop_lib.data.synthetic.world import load_world

TINY_SPEC = WorldSpec(size=32, aqa_videos=8, jigsaws_trials=1, action_videos=2, action_frames=16, seed=5)
DATASETS = ("MTL-AQA", "Kinetics-synth")
FINETUNE_SPEC = WorldSpec(size=32, aqa_videos=12, jigsaws_trials=1, action_videos=2, action_frames=16, seed=7)
FINETUNE_DATASETS = ("MTL-AQA", "FineDiving", "JIGSAWS", "PD4T", "Kinetics-synth")


def tiny_world(base: Path) -> World:
    """The tiny world under ``base/pretrain-world`` (generated on first use)."""
    root = base / "pretrain-world"
    return load_world(root) or generate_world(root, TINY_SPEC, datasets=DATASETS)


def tiny_jigsaws(base: Path) -> World:
    """JIGSAWS alone at the tiny spec (8 trials per task, 2 per test fold) under ``base/pretrain-jigsaws``."""
    root = base / "pretrain-jigsaws"
    return load_world(root) or generate_world(root, TINY_SPEC, datasets=("JIGSAWS",))


def finetune_world(base: Path) -> World:
    """Every dataset at :data:`FINETUNE_SPEC` under ``base/finetune-world`` (generated on first use)."""
    root = base / "finetune-world"
    return load_world(root) or generate_world(root, FINETUNE_SPEC, datasets=FINETUNE_DATASETS)
