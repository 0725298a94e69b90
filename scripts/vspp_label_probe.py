"""Are the VSPP labels recoverable from the clips themselves? A sanity probe of the sampler and the world.

VSPP asks a network for the speed and the position of the one re-paced segment of a clip. Before
blaming the network when the pretext accuracy stays at chance, check that the labels are in the
pixels at all: this probe draws VSPP clips of a synthetic target dataset exactly as stage 2 does
(:class:`~pecop_lib.pretrain.pretext.PretextClips`, the official sampler and PECoP's transform),
reduces each clip to its motion-energy profile (mean absolute difference of consecutive frames,
``T - 1`` numbers) and fits a small MLP on 80 % of the clips; it prints held-out accuracies against
chance. A re-paced segment moves faster, so its position shows in the profile; its speed only
through the size of that jump, so expect the segment far above chance and the speed a little above.

Usage::

    python scripts/vspp_label_probe.py                       # 32 px world, 16-frame clips, MTL-AQA
    python scripts/vspp_label_probe.py --size 64 --clip-len 32 --dataset PD4T --task Gait

The world is the tutorial preset's with the sizes given here (generated once into the cache,
``$PECOP_CACHE_DIR``). Results of past runs: ``reports/cpu-pretext-probe/README.md``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from pecop_lib.config import resolve
from pecop_lib.data import official_transform
from pecop_lib.outputs import progress
from pecop_lib.pretrain import official_normal_pace, pretraining_videos
from pecop_lib.pretrain.pipeline import synthetic_root
from pecop_lib.pretrain.pretext import PretextClips
from pecop_lib.ssl import VSPPSampler


def motion_profiles(clips: PretextClips) -> tuple[torch.Tensor, torch.Tensor]:
    """Motion energy per clip ``(N, T - 1)`` and VSPP labels ``(N, 2)`` (speed, segment)."""
    profiles, labels = [], []
    for index in progress(range(len(clips)), desc="clips"):
        clip, label = clips[index]
        profiles.append((clip[:, 1:] - clip[:, :-1]).abs().mean(dim=(0, 2, 3)))
        labels.append(label)
    return torch.stack(profiles), torch.stack(labels)


def held_out_accuracy(features: torch.Tensor, labels: torch.Tensor, classes: int, *, seed: int = 0,
                      steps: int = 500) -> float:
    """Accuracy of a one-hidden-layer MLP trained (Adam) on the first 80 % and tested on the rest."""
    torch.manual_seed(seed)
    split = int(0.8 * len(features))
    net = torch.nn.Sequential(torch.nn.Linear(features.shape[1], 64), torch.nn.ReLU(), torch.nn.Linear(64, classes))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(net(features[:split]), labels[:split])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float((net(features[split:]).argmax(1) == labels[split:]).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="MTL-AQA", help="target dataset (default MTL-AQA)")
    parser.add_argument("--task", default=None, help="JIGSAWS or PD4T task")
    parser.add_argument("--fold", type=int, default=None, help="JIGSAWS fold")
    parser.add_argument("--size", type=int, default=32, help="synthetic frame side and crop (px)")
    parser.add_argument("--videos", type=int, default=48, help="synthetic dives / PD4T videos per task")
    parser.add_argument("--clip-len", type=int, default=16, help="VSPP clip length (official 32)")
    parser.add_argument("--repeat", type=int, default=40, help="clips per video")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    cfg = resolve("tutorial", seed=args.seed, data_synthetic_size=args.size, data_synthetic_aqa_videos=args.videos,
                  data_synthetic_jigsaws_trials=1, data_synthetic_action_videos=2, data_synthetic_action_frames=16)
    videos = pretraining_videos(synthetic_root(cfg) / args.dataset, args.dataset, task=args.task, fold=args.fold)
    sampler = VSPPSampler(clip_len=args.clip_len, normal_pace=official_normal_pace(args.dataset, args.task))
    clips = PretextClips(videos, sampler, official_transform("core_mtl", train=True, crop=args.size),
                         repeat=args.repeat, seed=args.seed)
    start = time.perf_counter()
    profiles, labels = motion_profiles(clips)
    profiles = (profiles - profiles.mean(0)) / (profiles.std(0) + 1e-6)
    print(f"{len(profiles)} clips of {len(videos)} {args.dataset} videos in {time.perf_counter() - start:.0f} s")
    for column, name, classes in ((0, "speed", sampler.num_speed_classes), (1, "segment", sampler.num_segment_classes)):
        present = np.unique(labels[:, column].numpy())
        accuracy = held_out_accuracy(profiles, labels[:, column], classes, seed=args.seed)
        print(f"{name:8s} held-out accuracy {accuracy:.3f}  (chance {1 / len(present):.3f}: "
              f"{len(present)} label values occur, head size {classes})")


if __name__ == "__main__":
    main()
