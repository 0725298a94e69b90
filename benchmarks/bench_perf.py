"""Training-step performance: eager fp32 vs each optimisation vs end to end, plus correctness checks.

Usage::

    python benchmarks/bench_perf.py                       # GPU: 32x224x224, batch 16; CPU: 8x32x32, batch 4
    python benchmarks/bench_perf.py --quick               # fewer steps, smaller end-to-end world
    python benchmarks/bench_perf.py --rows eager bf16 e2e-device --size 16 112 8 --out perf.json
    python benchmarks/bench_perf.py --checks-only         # only the correctness checks

What runs: the package's PECoP continual-pretraining step (I3D + 3D-Adapters, VSPP heads, SGD,
BatchNorm in training mode, backbone frozen) through the real :class:`~pecop_lib.train.loop.Trainer`.
Each row runs in a fresh child process (clean peak memory, no compile-cache sharing) for
``warmup + steps`` steps; the rate is taken over the last ``steps`` (cuDNN autotuning, compilation,
loader start-up and prefetch fall in the warm-up; end-to-end rows warm up for at least the
``2 x workers`` batches the loader prefetches, so that a full prefetch queue cannot flatter them).

Rows (``--rows``; default all that apply to the device):

* ``eager``: fp32 eager, the baseline (on a GPU, cuDNN may use TF32 for fp32 convolutions: the
  header prints the flag);
* ``channels_last``, ``fused``: the :class:`~pecop_lib.models.fast_path.FastPath` switches in fp32;
* ``bf16``, ``bf16+cl``, ``bf16+cl+fused``: bf16 autocast, alone and with the switches;
* ``bf16+cl+fused+compile``: plus ``torch.compile`` (inductor);
* ``hpt bf16+cl``: the whole backbone trains (the HPT strategy, also full fine-tuning's cost);
* ``features bf16+cl``: frozen-backbone feature extraction (inference mode, what
  :class:`~pecop_lib.heads.feature_store.FeatureStore` runs once for ``dom_g``);
* ``e2e-workers``: end to end from JPEG frame folders (synthetic MTL-AQA), decode + per-clip
  transform in loader workers, the best eager configuration's model;
* ``e2e-device``: the same, but workers only decode; pinned memory, batched augmentation on the
  device (:mod:`pecop_lib.data.gpu_augment`). Its ``vs synthetic`` column is the goal's ratio.

Peak memory is ``torch.cuda.max_memory_allocated`` on a GPU and the child's peak RSS on a CPU.

Correctness checks (always run first, unless ``--no-checks``): on one batch, in eval mode, the pooled
features and the adapters' gradients of every fast path and of bf16 against the eager fp32 model
(relative L2 error, gradient cosine), and the device augmentation against the per-clip CPU transform.
bf16 is expected around 1e-2 relative; a cuDNN bf16 conv3d bug shows up as a far larger error or
NaN. The process exits with status 1 if a check fails.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pecop_lib.config import resolve_device
from pecop_lib.data import official_transform
from pecop_lib.data.gpu_augment import DeferredTransform, augment_batch, collate_raw
from pecop_lib.data.synthetic import WorldSpec, generate_world
from pecop_lib.models import FastPath, apply_fast_path, build_backbone, list_adapters, mark_trainable
from pecop_lib.pretrain import cosine_optimizer, pretext_model, pretext_step, pretraining_videos
from pecop_lib.pretrain.pretext import PretextClips
from pecop_lib.ssl import VSPPSampler
from pecop_lib.train import Trainer, epoch_loader
from pecop_lib.train.device_augment import device_augmented

GPU_SIZE = (32, 224, 16)
CPU_SIZE = (8, 32, 4)


@dataclass(frozen=True)
class Row:
    """One benchmark configuration."""

    name: str
    precision: str = "fp32"
    fast: FastPath = field(default_factory=FastPath)
    compile: bool = False
    input: str = "synthetic"  # synthetic | workers | device | inference
    strategy: str = "pecop"  # what trains (pecop: adapters; hpt: the whole backbone)


ROWS: dict[str, Row] = {r.name: r for r in (
    Row("eager"),
    Row("channels_last", fast=FastPath(channels_last=True)),
    Row("fused", fast=FastPath(fused_adapters=True)),
    Row("bf16", "bf16"),
    Row("bf16+cl", "bf16", FastPath(channels_last=True)),
    Row("bf16+cl+fused", "bf16", FastPath(channels_last=True, fused_adapters=True)),
    Row("bf16+cl+fused+compile", "bf16", FastPath(channels_last=True, fused_adapters=True), compile=True),
    Row("hpt bf16+cl", "bf16", FastPath(channels_last=True), strategy="hpt"),
    Row("features bf16+cl", "bf16", FastPath(channels_last=True), input="inference"),
)}
E2E_ROWS = ("e2e-workers", "e2e-device")


def e2e_row(name: str, model_row: Row) -> Row:
    """An end-to-end row running ``model_row``'s model from disk."""
    return Row(f"{name} ({model_row.name})", model_row.precision, model_row.fast, model_row.compile,
               "workers" if name == "e2e-workers" else "device")


# ------------------------------------------------------------------------------ measurement
def _model(fast: FastPath, sampler: VSPPSampler, device: torch.device, strategy: str = "pecop") -> torch.nn.Module:
    backbone = build_backbone("i3d", adapters=strategy == "pecop", seed=0)
    mark_trainable(backbone, strategy)
    backbone.to(device)
    apply_fast_path(backbone, fast)
    torch.manual_seed(0)
    return pretext_model(backbone, sampler)


def _peak(device: torch.device) -> float:
    """Peak memory in GiB: CUDA allocator on a GPU, the process's peak RSS on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    status = Path("/proc/self/status")
    if status.is_file():  # VmHWM: this process image's peak RSS (ru_maxrss would include the parent's at fork)
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20  # bytes on macOS, KiB elsewhere


def measure(row: Row, device_spec: str, size: tuple[int, int, int], warmup: int, steps: int,
            world: str | None, workers: int) -> dict[str, Any]:
    """Run one row (in the calling process) and return its rate and peak memory."""
    device = resolve_device(device_spec)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)
    frames, crop, batch = size
    sampler = VSPPSampler(clip_len=frames)
    model = _model(row.fast, sampler, device, row.strategy)
    if row.input == "inference":
        return _measure_inference(model.backbone, row, device, size, warmup, steps)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = cosine_optimizer(params, lr=0.01, momentum=0.9, weight_decay=1e-4, t_max=22, eta_min=1e-6)
    memory_format = torch.channels_last_3d if row.fast.channels_last else torch.contiguous_format
    if row.input in ("workers", "device"):  # measure past the batches the workers prefetch at the start
        warmup = max(warmup, 2 * workers + 2)
    total = warmup + steps
    stamps: list[float] = []
    base_step = pretext_step(sampler)
    if row.input == "synthetic":
        generator = torch.Generator().manual_seed(0)
        clips = torch.randn(batch, 3, frames, crop, crop, generator=generator)
        clips = clips.to(device).contiguous(memory_format=memory_format)
        labels = torch.stack([torch.randint(1, sampler.num_speed_classes, (batch,), generator=generator),
                              torch.randint(0, sampler.num_segment_classes, (batch,), generator=generator)], 1)
        labels = labels.to(device)

        def data(epoch: int) -> list[Any]:
            return [(clips, labels)] * total

        step = base_step
    else:
        if world is None:
            raise ValueError(f"row {row.name} needs a world folder")
        videos = pretraining_videos(Path(world) / "MTL-AQA", "MTL-AQA")
        transform = official_transform("core_mtl", train=True, crop=crop)
        deferred = row.input == "device"
        repeat = -(-batch * total // len(videos))
        dataset = PretextClips(videos, sampler, DeferredTransform(transform) if deferred else transform,
                               repeat=repeat, seed=0)
        data = epoch_loader(dataset, batch, seed=0, drop_last=True, num_workers=workers,
                            pin_memory=device.type == "cuda", collate_fn=collate_raw if deferred else None)
        step = device_augmented(base_step, transform, memory_format=memory_format) if deferred else base_step

    def timed(model: torch.nn.Module, batch_: Any) -> Any:
        stamps.append(time.perf_counter())
        return step(model, batch_)

    trainer = Trainer(model, timed, optimizer, scheduler, device=device, precision=row.precision,
                      compile=row.compile, show_progress=False,
                      loader_workers=workers if row.input in ("workers", "device") else 0)
    started = time.perf_counter()
    trainer.fit(data, 1)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    stamps.append(time.perf_counter())
    measured = stamps[-(steps + 1):]
    rate = steps * batch / (measured[-1] - measured[0])
    return {"row": row.name, "clips_per_s": rate, "peak_gib": _peak(device), "seconds": time.perf_counter() - started,
            "steps": len(stamps) - 1}


def _measure_inference(backbone: torch.nn.Module, row: Row, device: torch.device, size: tuple[int, int, int],
                       warmup: int, steps: int) -> dict[str, Any]:
    """Clips/s of frozen feature extraction: ``forward_pooled`` in inference mode, eval BatchNorm."""
    frames, crop, batch = size
    memory_format = torch.channels_last_3d if row.fast.channels_last else torch.contiguous_format
    clips = torch.randn(batch, 3, frames, crop, crop, generator=torch.Generator().manual_seed(0))
    clips = clips.to(device).contiguous(memory_format=memory_format)
    backbone.eval()
    dtype = torch.bfloat16 if row.precision == "bf16" else None
    started = time.perf_counter()
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        for index in range(warmup + steps):
            if index == warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                begin = time.perf_counter()
            backbone.forward_pooled(clips)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    rate = steps * batch / (time.perf_counter() - begin)
    return {"row": row.name, "clips_per_s": rate, "peak_gib": _peak(device), "seconds": time.perf_counter() - started,
            "steps": warmup + steps}


def _child(queue: mp.Queue, args: tuple[Any, ...]) -> None:
    try:
        queue.put(measure(*args))
    except Exception as exc:  # noqa: BLE001 (reported in the table, the other rows go on)
        queue.put({"row": args[0].name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"})


def measure_isolated(*args: Any) -> dict[str, Any]:
    """:func:`measure` in a fresh spawned process."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, args))
    process.start()
    try:
        result = queue.get()
    finally:
        process.join()
    return result


# ------------------------------------------------------------------------------ correctness
def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0))


def check_precisions(device: torch.device, size: tuple[int, int, int]) -> list[dict[str, Any]]:
    """Pooled features and adapter gradients of each fast path / precision against strict fp32 (eval-mode BN)."""
    frames, crop, batch = size
    clips = torch.randn(min(batch, 4), 3, frames, crop, crop, generator=torch.Generator().manual_seed(1)).to(device)

    def run(fast: FastPath, dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
        backbone = build_backbone("i3d", adapters=True, seed=0)
        mark_trainable(backbone, "pecop")
        backbone.to(device).eval()
        apply_fast_path(backbone, fast)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            pooled = backbone.forward_pooled(clips)
        grads = torch.autograd.grad(pooled.float().square().mean(), list(list_adapters(backbone)["mixed_4d"].parameters()))
        return pooled.detach().float(), torch.cat([g.flatten() for g in grads])

    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:  # the reference: strict fp32 (no TF32 on GPUs)
        reference, ref_grad = run(FastPath(), None)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    cases = [("fp32 eager (TF32 as configured)", FastPath(), None),
             ("fp32 channels_last", FastPath(channels_last=True), None),
             ("fp32 fused", FastPath(fused_adapters=True), None),
             ("bf16", FastPath(), torch.bfloat16),
             ("bf16 channels_last+fused", FastPath(channels_last=True, fused_adapters=True), torch.bfloat16)]
    out = []
    for name, fast, dtype in cases:
        pooled, grad = run(fast, dtype)
        error, cosine = _relative(pooled, reference), _cosine(grad, ref_grad)
        limit = 5e-2 if dtype is not None else (1e-2 if device.type == "cuda" else 1e-4)  # TF32 on GPUs: ~1e-3
        finite = bool(torch.isfinite(pooled).all() and torch.isfinite(grad).all())
        min_cosine = 0.98 if dtype is not None else 0.999
        out.append({"check": name, "features_rel_err": error, "grad_cosine": cosine, "limit": limit,
                    "min_grad_cosine": min_cosine, "ok": finite and error < limit and cosine > min_cosine})
    return out


def check_augment(device: torch.device, crop: int) -> dict[str, Any]:
    """Device augmentation of 4 random clips against the per-clip CPU transform."""
    transform = official_transform("core_mtl", train=True, crop=crop)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (8, crop + 34, crop + 34, 3), dtype=np.uint8) for _ in range(4)]
    reference = torch.stack([transform(f, np.random.default_rng([3, i])) for i, f in enumerate(frames)])
    raw = collate_raw([DeferredTransform(transform)(f, np.random.default_rng([3, i])) for i, f in enumerate(frames)])
    raw = type(raw)(raw.frames.to(device), raw.draw.to(device))
    error = float((augment_batch(raw, transform, memory_format=torch.channels_last_3d).cpu() - reference).abs().max())
    return {"check": f"device augmentation on {device.type} vs CPU transform (max abs)", "max_abs_err": error,
            "limit": 5e-3, "ok": error < 5e-3}


# ------------------------------------------------------------------------------ driver
def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        flags = f"cudnn {torch.backends.cudnn.version()}, TF32 conv {torch.backends.cudnn.allow_tf32}"
        return f"{torch.cuda.get_device_name(device)} ({flags})"
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--size", type=int, nargs=3, metavar=("FRAMES", "CROP", "BATCH"), default=None)
    parser.add_argument("--rows", nargs="+", default=None, help=f"subset of {[*ROWS, *E2E_ROWS]}")
    parser.add_argument("--e2e-model", default=None, help="row whose model the end-to-end rows run "
                        "(default GPU: bf16+cl+fused, CPU: eager)")
    parser.add_argument("--steps", type=int, default=None, help="measured steps per row")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps per row")
    parser.add_argument("--workers", type=int, default=None, help="loader workers of the end-to-end rows")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-isolate", action="store_true", help="run rows in this process (peak memory mixes)")
    parser.add_argument("--no-checks", action="store_true")
    parser.add_argument("--checks-only", action="store_true")
    parser.add_argument("--world", default=None, help="existing synthetic world folder for the end-to-end rows")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--budget-s", type=float, default=None, help="skip the rows left once this much time has passed")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (also in the row processes); on a "
                        "shared CPU 1 thread is far steadier than oversubscribed cores")
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the spawned row processes read it at import
        torch.set_num_threads(args.threads)

    begun = time.perf_counter()
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    size = tuple(args.size) if args.size else (GPU_SIZE if gpu else CPU_SIZE)
    frames, crop, batch = size
    steps = args.steps or (10 if args.quick else 30 if gpu else 6)
    warmup = args.warmup or (5 if gpu else 2)
    workers = args.workers if args.workers is not None else (max(1, (os.cpu_count() or 2) - 2) if gpu else 2)
    names = args.rows or ([*ROWS, *E2E_ROWS] if gpu else ["eager", "channels_last", "fused", "e2e-workers",
                                                           "e2e-device"])
    unknown = sorted(set(names) - set(ROWS) - set(E2E_ROWS))
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {[*ROWS, *E2E_ROWS]}")
    model_row = ROWS[args.e2e_model or ("bf16+cl+fused" if gpu else "eager")]
    results: dict[str, Any] = {"device": device_name(device), "torch": torch.__version__, "size": size,
                               "steps": steps, "warmup": warmup, "workers": workers, "checks": [], "rows": []}
    print(f"device: {results['device']}; torch {torch.__version__}")
    print(f"PECoP VSPP step (I3D + 3D-Adapters, backbone frozen, BN train), clip {frames}x{crop}x{crop}, batch {batch}; "
          f"{warmup} warm-up + {steps} measured steps per row")

    failed = False
    if not args.no_checks:
        checks = check_precisions(device, size) + [check_augment(device, crop)]
        results["checks"] = checks
        print("\ncorrectness (against strict fp32 eager, TF32 off; eval-mode BatchNorm; one batch):")
        for c in checks:
            detail = ", ".join(f"{k} {v:.3g}" for k, v in c.items() if isinstance(v, float))
            print(f"  {'ok  ' if c['ok'] else 'FAIL'} {c['check']}: {detail}")
        failed = not all(c["ok"] for c in checks)
    if args.checks_only:
        return int(failed)

    with tempfile.TemporaryDirectory() as tmp:
        world = args.world
        if world is None and any(n in E2E_ROWS for n in names):
            side = max(crop * 256 // 224 + 2, 32)
            side += side % 2
            spec = WorldSpec(size=side, aqa_videos=8 if args.quick else 16, jigsaws_trials=1, action_videos=2,
                             action_frames=8, seed=0)
            started = time.perf_counter()
            world = str(generate_world(Path(tmp) / "world", spec, datasets=("MTL-AQA",),
                                       workers=os.cpu_count() or 1).root)
            print(f"\nend-to-end input: synthetic MTL-AQA JPEG folders at {side}x{side} px, generated in "
                  f"{time.perf_counter() - started:.0f} s; {workers} loader workers; model of row {model_row.name!r}")
        print(f"\n{'row':44s} {'clips/s':>9s} {'vs eager':>9s} {'vs synth':>9s} {'peak GiB':>9s}")
        rates: dict[str, float] = {}
        for name in names:
            row = ROWS[name] if name in ROWS else e2e_row(name, model_row)
            if args.budget_s is not None and time.perf_counter() - begun > args.budget_s:
                print(f"{row.name:44s} skipped: the {args.budget_s:.0f} s budget is spent", flush=True)
                results["rows"].append({"row": row.name, "error": "skipped (time budget)"})
                continue
            call = (row, str(device), size, warmup, steps, world, workers)
            result = measure(*call) if args.no_isolate else measure_isolated(*call)
            results["rows"].append(result)
            if "error" in result:
                print(f"{row.name:44s} FAILED: {result['error']}", flush=True)
                continue
            rate = result["clips_per_s"]
            rates[name] = rate
            vs_eager = f"{rate / rates['eager']:.2f}x" if "eager" in rates else "-"
            vs_synth = "-"
            if row.input in ("workers", "device"):
                if model_row.name not in rates:
                    model_result = measure_isolated(model_row, str(device), size, warmup, steps, None, workers)
                    rates[model_row.name] = model_result.get("clips_per_s", float("nan"))
                vs_synth = f"{rate / rates[model_row.name]:.0%}"
                result["vs_synthetic"] = rate / rates[model_row.name]
            print(f"{row.name:44s} {rate:9.2f} {vs_eager:>9s} {vs_synth:>9s} {result['peak_gib']:9.2f}", flush=True)
            if args.out:  # after every row: a run stopped by a time limit keeps what it measured
                Path(args.out).write_text(json.dumps(results, indent=2, default=str) + "\n")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"\nresults written to {args.out}")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
