"""Continual-pretraining step throughput: clips/s of the I3D + 3D-Adapters VSPP training step.

Usage::

    python benchmarks/bench_pretrain.py                  # GPU: 32x224x224, batch 16; CPU: 8x32x32, batch 4
    python benchmarks/bench_pretrain.py --quick          # fewer steps, smaller end-to-end world
    python benchmarks/bench_pretrain.py --device cpu --size 16 64 4 --modes fp32 bf16 fp32+compile

Two inputs, each run by the real :class:`~pecop_lib.train.loop.Trainer` (PECoP strategy: adapters
and VSPP heads train, BatchNorm in training mode, SGD):

* ``synthetic``: one random batch on the device, repeated (the model's step alone);
* ``disk``: :func:`~pecop_lib.pretrain.continual.continual_pretrain` end to end on a generated
  synthetic MTL-AQA (JPEG frame folders): VSPP sampling, decoding, PECoP's transform, loader workers.

Modes: ``fp32``, ``bf16`` (autocast), and ``+compile`` (``torch.compile``, default inductor backend).
Each measurement runs two epochs and reports the second (warm-up, cuDNN autotuning and compilation
fall in the first). The table states the device; on a shared machine numbers vary between runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from pecop_lib.config import resolve_device
from pecop_lib.data import official_transform
from pecop_lib.data.synthetic import WorldSpec, generate_world
from pecop_lib.models import build_backbone, mark_trainable
from pecop_lib.pretrain import (
    continual_pretrain,
    cosine_optimizer,
    pretext_model,
    pretext_step,
    pretraining_videos,
)
from pecop_lib.ssl import VSPPSampler
from pecop_lib.train import RunContext, Trainer

GPU_SIZE = (32, 224, 16)
CPU_SIZE = (8, 32, 4)


def _mode(mode: str) -> tuple[str, bool]:
    """``"bf16+compile"`` -> (``"bf16"``, True)."""
    precision, _, compiled = mode.partition("+")
    if precision not in ("fp32", "bf16") or compiled not in ("", "compile"):
        raise ValueError(f"unknown mode {mode!r}; use fp32, bf16, fp32+compile or bf16+compile")
    return precision, bool(compiled)


def _peak(device: torch.device) -> str:
    return f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f}" if device.type == "cuda" else "-"


def synthetic_rate(device: torch.device, size: tuple[int, int, int], mode: str, steps: int) -> float:
    """Clips/s of the training step on one random batch repeated ``steps`` times (second epoch)."""
    frames, crop, batch = size
    precision, compiled = _mode(mode)
    sampler = VSPPSampler(clip_len=frames)
    backbone = build_backbone("i3d", adapters=True, seed=0)
    mark_trainable(backbone, "pecop")
    model = pretext_model(backbone, sampler)
    optimizer, scheduler = cosine_optimizer([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9,
                                      weight_decay=1e-4, t_max=22, eta_min=1e-6)
    generator = torch.Generator().manual_seed(0)
    clips = torch.randn(batch, 3, frames, crop, crop, generator=generator).to(device)
    labels = torch.stack([torch.randint(1, sampler.num_speed_classes, (batch,), generator=generator),
                          torch.randint(0, sampler.num_segment_classes, (batch,), generator=generator)], 1).to(device)
    trainer = Trainer(model, pretext_step(sampler), optimizer, scheduler, device=device, precision=precision,
                      compile=compiled, show_progress=False)
    history = trainer.fit(lambda epoch: [(clips, labels)] * steps, 2)
    return history.epochs[-1]["samples_per_s"]


def disk_rate(device: torch.device, size: tuple[int, int, int], mode: str, world_root: Path, workers: int,
              steps: int) -> float:
    """Clips/s of :func:`continual_pretrain` reading the synthetic MTL-AQA from disk (second epoch, ~``steps`` steps)."""
    frames, crop, batch = size
    precision, compiled = _mode(mode)
    backbone = build_backbone("i3d", adapters=True, seed=0)
    videos = pretraining_videos(world_root / "MTL-AQA", "MTL-AQA")
    repeat = -(-batch * steps // len(videos))  # list repetitions for about ``steps`` full batches
    result = continual_pretrain(
        backbone, videos, VSPPSampler(clip_len=frames), official_transform("core_mtl", train=True, crop=crop),
        epochs=2, batch_size=batch, list_repeat=repeat,
        run=RunContext(device=device, precision=precision, compile=compiled, num_workers=workers, show_progress=False),
    )
    return result.history.epochs[-1]["samples_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--quick", action="store_true", help="fewer steps and a smaller world")
    parser.add_argument("--size", type=int, nargs=3, metavar=("FRAMES", "CROP", "BATCH"), default=None,
                        help=f"clip frames, crop side, batch (default GPU {GPU_SIZE}, CPU {CPU_SIZE})")
    parser.add_argument("--modes", nargs="+", default=None,
                        help="fp32 bf16 fp32+compile bf16+compile (default GPU: fp32 bf16 bf16+compile; CPU: fp32 bf16)")
    parser.add_argument("--inputs", nargs="+", choices=("synthetic", "disk"), default=("synthetic", "disk"))
    parser.add_argument("--steps", type=int, default=None, help="steps per epoch on synthetic tensors")
    parser.add_argument("--workers", type=int, default=None, help="loader workers for the disk input")
    args = parser.parse_args()

    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    size = tuple(args.size) if args.size else (GPU_SIZE if gpu else CPU_SIZE)
    modes = args.modes or (["fp32", "bf16", "bf16+compile"] if gpu else ["fp32", "bf16"])
    for mode in modes:
        _mode(mode)
    steps = args.steps or (3 if args.quick else 10 if not gpu else 20)
    workers = args.workers if args.workers is not None else (8 if gpu else 0)
    if gpu:
        torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(device) if gpu else f"CPU ({platform.processor() or platform.machine()}, " \
                                                         f"{torch.get_num_threads()} threads)"
    frames, crop, batch = size
    print(f"device: {name}; torch {torch.__version__}; I3D + 3D-Adapters (PECoP), VSPP, clip {frames}x{crop}x{crop}, "
          f"batch {batch}; second of two epochs")
    with tempfile.TemporaryDirectory() as tmp:
        world_root = None
        if "disk" in args.inputs:
            side = max(crop * 256 // 224 + 1, 32)
            side += side % 2
            spec = WorldSpec(size=side, aqa_videos=8 if args.quick else 16, jigsaws_trials=1, action_videos=2,
                             action_frames=8, seed=0)
            started = time.perf_counter()
            world_root = generate_world(Path(tmp) / "world", spec, datasets=("MTL-AQA",), workers=os.cpu_count() or 1).root
            print(f"disk input: synthetic MTL-AQA at {side}px generated in {time.perf_counter() - started:.0f} s, "
                  f"{workers} loader workers")
        print(f"{'input':10s} {'mode':14s} {'clips/s':>9s} {'ms/clip':>9s} {'peak GiB':>9s}")
        for source in args.inputs:
            for mode in modes:
                if gpu:
                    torch.cuda.reset_peak_memory_stats(device)
                try:
                    if source == "synthetic":
                        rate = synthetic_rate(device, size, mode, steps)
                    else:
                        rate = disk_rate(device, size, mode, world_root, workers, steps)
                except (RuntimeError, ValueError) as exc:  # report a failing mode (compiler, memory), keep going
                    print(f"{source:10s} {mode:14s} FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
                    continue
                print(f"{source:10s} {mode:14s} {rate:9.2f} {1000 / rate:9.1f} {_peak(device):>9s}", flush=True)


if __name__ == "__main__":
    main()
