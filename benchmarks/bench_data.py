"""Loader throughput: clips/s for decode + augment, and synthetic-world generation time and size.

Usage::

    python benchmarks/bench_data.py                 # loader throughput on a generated world
    python benchmarks/bench_data.py --generate smoke tutorial   # also time world generation per preset

Throughput is measured on the synthetic PD4T-format task (mp4, decord) and the MTL-AQA-format task
(JPEG frame folders) at 16x112x112 and 32x224x224 (resize + random crop + flip + normalise), with
0 and 2 DataLoader workers. Numbers depend on the machine; the script prints them as a table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from torch.utils.data import DataLoader

from pecop_lib.data import MTLAQA, PD4T, ClipTransform
from pecop_lib.data.synthetic import WorldSpec, generate_world, world_spec


def throughput(dataset, workers: int, batches: int, batch_size: int = 4) -> float:
    """Clips per second over ``batches`` batches (after one warm-up batch)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers)
    iterator = iter(loader)
    next(iterator)
    start = time.perf_counter()
    n = 0
    for _ in range(batches):
        try:
            n += len(next(iterator)["clip"])
        except StopIteration:
            break
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generate", nargs="*", default=[], help="presets whose world generation to time")
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--workers", type=int, nargs="*", default=[0, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.generate:
            spec = world_spec(preset)
            start = time.perf_counter()
            world = generate_world(Path(tmp) / preset, spec, workers=0)
            total = sum(d["bytes"] for d in world.manifest["datasets"].values())
            print(f"generate {preset:9s} {time.perf_counter() - start:8.1f} s  {total / 1e6:8.1f} MB  "
                  + "  ".join(f"{k} {v['seconds']:.1f}s/{v['bytes'] / 1e6:.1f}MB" for k, v in world.manifest["datasets"].items()))
        spec = WorldSpec(size=128, aqa_videos=32, jigsaws_trials=1, action_videos=2, action_frames=16)
        world = generate_world(Path(tmp) / "bench", spec, datasets=("MTL-AQA", "PD4T"))
        print(f"{'dataset':10s} {'clip':>12s} {'workers':>7s} {'clips/s':>8s}")
        for frames, crop in ((16, 112), (32, 224)):
            transform = ClipTransform(resize=(crop * 256 // 224, crop * 455 // 224), crop=crop, random_crop=True, flip=True)
            for name, make in (
                ("PD4T", lambda: PD4T(world["PD4T"], "Finger tapping", transform=transform, clip_frames=frames)),
                ("MTL-AQA", lambda: MTLAQA(world["MTL-AQA"], transform=transform, clip_frames=frames)),
            ):
                for workers in args.workers:
                    rate = throughput(make(), workers, args.batches)
                    print(f"{name:10s} {frames:>3d}x{crop}x{crop:<4d} {workers:>7d} {rate:8.1f}")


if __name__ == "__main__":
    main()
