"""What two fidelity switches change in the backbone's features (docs/fidelity.md, switches 1 and 5).

Usage (repository root; generates the course world into the cache if it is not there)::

    python benchmarks/bench_fidelity.py                 # course world, MTL-AQA test dives, shipped stage 1
    python benchmarks/bench_fidelity.py --videos 30 --frames 32

For the first ``--videos`` MTL-AQA test dives of the world, a ``--frames``-frame clip (CoRe's transform
at the preset's crop) goes through the course preset's shipped stage-1 backbone once, and it prints:

* **pooling** (switch 1): the relative difference ``|window2 - adaptive| / |adaptive|`` of the pooled
  vectors (the official ``AvgPool3d((2, 7, 7))`` weighting over time vs equal weights);
* **resize** (switch 5): the mean absolute difference of the normalised pixels between the
  package's resize (bilinear, antialiased, centre crop floored) and the official one (PIL's nearest
  neighbour, centre crop rounded), and the relative difference of the pooled vectors it causes.

Deterministic (CPU, fixed weights and clips); the numbers depend on the world and the backbone.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from pecop_lib.config import resolve
from pecop_lib.data.formats.mtl_aqa import MTLAQA
from pecop_lib.data.synthetic.world import synthetic_world
from pecop_lib.models.backbone import pool_features
from pecop_lib.pretrain.stage1_artifact import load_stage1, shipped_stage1, stage1_key, stage1_spec


def relative(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Per-row ``|x - y| / |y|``."""
    return ((x - y).norm(dim=1) / y.norm(dim=1)).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="course")
    parser.add_argument("--videos", type=int, default=30)
    parser.add_argument("--frames", type=int, default=32, help="clip frames (I3D keeps frames / 8 time steps)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    cfg = resolve(args.preset)
    world = synthetic_world(cfg)
    folder = shipped_stage1(stage1_key(stage1_spec(cfg), world["Kinetics-synth"]))
    if folder is None:
        raise SystemExit(f"no shipped stage-1 backbone for preset {args.preset!r}; use --preset course")
    backbone = load_stage1(folder).build().eval()
    crop = cfg.data_crop_size
    flavours = {name: MTLAQA(world["MTL-AQA"], "test", crop=crop, resize=name, clip_frames=args.frames)
                for name in ("bilinear", "official")}
    n = min(args.videos, len(flavours["bilinear"]))
    clips = {name: torch.stack([data[i]["clip"] for i in range(n)]) for name, data in flavours.items()}
    with torch.inference_mode():
        maps = {name: backbone.forward_features(c) for name, c in clips.items()}
    t = maps["bilinear"].shape[2]
    adaptive = pool_features(maps["bilinear"], "adaptive").mean(-1)
    window2 = pool_features(maps["bilinear"], "window2").mean(-1)
    official = pool_features(maps["official"], "adaptive").mean(-1)
    pixels = (clips["official"] - clips["bilinear"]).abs().mean(dim=(1, 2, 3, 4)).numpy()
    print(f"preset {args.preset}, {n} MTL-AQA test dives, {args.frames} frames at {crop} px, T' = {t}, "
          f"backbone {folder.name}")
    pool = relative(window2, adaptive)
    print(f"pooling  window2 vs adaptive: relative difference of the pooled vector mean {pool.mean():.4f} "
          f"(min {pool.min():.4f}, max {pool.max():.4f})")
    feat = relative(official, adaptive)
    print(f"resize   official vs bilinear: mean |pixel difference| {pixels.mean():.4f} (normalised units); "
          f"relative difference of the pooled vector mean {feat.mean():.4f} (min {feat.min():.4f}, max {feat.max():.4f})")


if __name__ == "__main__":
    main()
