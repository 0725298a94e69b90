"""Stage-2 clip loading with and without whole videos kept decoded (``DecodedFrames``).

Usage (repository root; generates the course world into the cache if it is not there)::

    python benchmarks/bench_decoded_frames.py                       # PD4T Gait and MTL-AQA of the course world
    python benchmarks/bench_decoded_frames.py --clips 600 --preset course

For each target, the same VSPP training clips (course recipe: 16 frames, PECoP's transform at the
preset's crop) are read through :class:`~pecop_lib.pretrain.pretext.PretextClips` twice in one
process, one thread: first with ``decoded=DecodedFrames(0)`` (every read goes through the 32 open sources
of :func:`~pecop_lib.data.source_cache.cached_source`), then with the default budget (the first
pass over the videos decodes them whole, timed separately as "fill"). It checks that both read
identical clips, and prints clips/s and the memory the decoded videos take. On a shared machine,
state the load average (printed) with the numbers.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from pecop_lib.config import resolve
from pecop_lib.data import official_transform
from pecop_lib.data.registry import dataset_record
from pecop_lib.data.source_cache import DecodedFrames
from pecop_lib.data.synthetic.world import synthetic_world
from pecop_lib.pretrain.pretext import PretextClips
from pecop_lib.pretrain.targets import pretraining_videos
from pecop_lib.ssl import VSPPSampler

TARGETS = (("PD4T", "Gait"), ("MTL-AQA", None))


def _read(clips: PretextClips, order: np.ndarray) -> tuple[float, list[torch.Tensor]]:
    started = time.perf_counter()
    out = [clips[int(i)][0] for i in order]
    return time.perf_counter() - started, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="course")
    parser.add_argument("--clips", type=int, default=300, help="clips read per measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = resolve(args.preset, device="cpu")
    world = synthetic_world(cfg, seed=cfg.seed, workers=os.cpu_count() or 1)
    print(f"preset {args.preset}, {args.clips} clips per measurement, load average {os.getloadavg()[0]:.2f}")
    for dataset, task in TARGETS:
        videos = pretraining_videos(world[dataset], dataset, task=task)
        sampler = VSPPSampler(clip_len=cfg.pretrain_clip_len, normal_pace=dataset_record(dataset).pace(task))
        transform = official_transform("core_mtl", train=True, crop=cfg.data_crop_size)
        order = np.random.default_rng(0).permutation(len(videos) * 4)[: args.clips]
        plain = PretextClips(videos, sampler, transform, repeat=4, seed=0, decoded=DecodedFrames(0))
        fast = PretextClips(videos, sampler, transform, repeat=4, seed=0)
        plain_s, plain_clips = _read(plain, order)
        started = time.perf_counter()
        for video in videos:  # the fill: every video decoded whole once
            video.read([1], fast.decoded)
        fill_s = time.perf_counter() - started
        fast_s, fast_clips = _read(fast, order)
        same = all(torch.equal(a, b) for a, b in zip(plain_clips, fast_clips, strict=True))
        print(f"{dataset} {task or ''}: {len(videos)} videos; cached sources {args.clips / plain_s:.1f} clips/s; "
              f"decoded {args.clips / fast_s:.1f} clips/s (fill {fill_s:.1f} s, {fast.decoded.used / 2**20:.0f} MiB); "
              f"identical clips: {same}")


if __name__ == "__main__":
    main()
