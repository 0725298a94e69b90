"""What the notebook sequence costs under a preset on this machine: measured unit costs x counted work.

Usage::

    python benchmarks/bench_tutorial_cpu.py                       # tutorial preset, its cached synthetic world
    python benchmarks/bench_tutorial_cpu.py --preset smoke --out cost.json

Running the ``tutorial`` sequence on a small CPU takes far longer than a session, so this script
*estimates* it, and says so: it measures the unit costs on this machine at the preset's sizes
(one clip's VSPP step, one fine-tuning window's training step and evaluation pass, one stage-1
clip, one frame's decoding; each the best of a few repetitions on small batches) and multiplies
them by the work the notebooks do, counted from the config and the synthetic world with the
library itself (target videos x list repeats x epochs, training/validation/test videos x windows x
epochs for every fine-tuning setting and both backbones, exemplars of CoRe/TSA, ...).

Not counted: notebooks 00-02 (seconds), figures, Python overheads, the loader's decoding when it
overlaps the model (on a 2-core machine it does not: the decode column is added to the total).
Counts follow the notebooks as they are written (04: USDL + MUSDL, 05: CoRe, 06: TSA, each with the
Dom-G and PECoP backbones; 03: stage 1, PECoP and HPT on MTL-AQA); a notebook that changes its
settings changes them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pecop_lib.config import resolve
from pecop_lib.data import KineticsActions
from pecop_lib.data.synthetic import load_world, world_spec
from pecop_lib.data.video import open_source
from pecop_lib.finetune import (
    FinetuneOptions,
    open_finetune_data,
    settings_for,
    validation_split,
)
from pecop_lib.heads import windowing_for
from pecop_lib.models import build_backbone, mark_trainable
from pecop_lib.pretrain.stage1_artifact import stage1_spec
from pecop_lib.pretrain.stage2_artifact import stage2_spec
from pecop_lib.pretrain.targets import pretraining_videos

NOTEBOOK_HEADS = {"04": ("usdl", "musdl"), "05": ("core",), "06": ("tsa",)}
BACKBONES = ("Dom-G", "PECoP")


def best_of(fn: Callable[[], object], reps: int) -> float:
    """Best wall time of ``reps`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


@dataclass
class Units:
    """Measured seconds per unit of work on this machine."""

    reps: int
    batch: int
    cache: dict[tuple, float]

    def step(self, strategy: str, frames: int, crop: int) -> float:
        """Seconds per clip of a training step (forward + backward) of ``strategy``'s trainable set."""
        key = ("step", strategy, frames, crop)
        if key not in self.cache:
            model = build_backbone("i3d", adapters=strategy == "pecop", seed=0)
            mark_trainable(model, strategy)
            model.train()
            clips = torch.randn(self.batch, 3, frames, crop, crop)
            self.cache[key] = best_of(lambda: model.forward_pooled(clips).square().mean().backward(), self.reps) / self.batch
        return self.cache[key]

    def inference(self, frames: int, crop: int) -> float:
        """Seconds per clip of an evaluation pass (eval BatchNorm, inference mode)."""
        key = ("inference", frames, crop)
        if key not in self.cache:
            model = build_backbone("i3d", seed=0).eval()
            clips = torch.randn(self.batch, 3, frames, crop, crop)

            def run() -> None:
                with torch.inference_mode():
                    model.forward_pooled(clips)

            self.cache[key] = best_of(run, self.reps) / self.batch
        return self.cache[key]


def decode_seconds_per_frame(root: Path) -> float:
    """Seconds to decode one JPEG frame of the world's MTL-AQA folders (32 frames, best of 3)."""
    folder = next(p for p in sorted((root / "MTL-AQA").rglob("*")) if p.is_dir() and any(p.glob("*.jpg")))
    source = open_source(folder)
    positions = np.arange(min(32, len(source)))
    return best_of(lambda: source.read(positions), 3) / len(positions)


def estimate(preset: str, world_root: Path, units: Units) -> tuple[list[dict[str, object]], dict[str, float]]:
    """Rows ``{stage, what, count, unit_s, hours}`` and the unit costs."""
    cfg = resolve(preset)
    rows: list[dict[str, object]] = []
    decode = decode_seconds_per_frame(world_root)

    def add(stage: str, what: str, count: float, unit: float, frames_decoded: float = 0.0) -> None:
        rows.append({"stage": stage, "what": what, "count": count, "unit_s": unit, "hours": count * unit / 3600,
                     "decode_hours": frames_decoded * decode / 3600})

    # notebook 03: stage 1 on the action set, then stage 2 (PECoP and HPT) on MTL-AQA
    s1 = stage1_spec(cfg)
    actions = KineticsActions(world_root / "Kinetics-synth", "train", clip_len=s1.clip_len, crop=s1.crop)
    clips = len(actions) // s1.batch_size * s1.batch_size * s1.epochs
    add("03 stage 1 (domain-general)", f"{clips} clips {s1.clip_len}x{s1.crop}px, whole I3D trains",
        clips, units.step("hpt", s1.clip_len, s1.crop), clips * s1.clip_len)

    def stage2(target: str, task: str | None, strategy: str, notebook: str, fold: int | None = None) -> None:
        spec = stage2_spec(cfg, strategy=strategy, dataset=target, task=task, fold=fold)
        videos = pretraining_videos(world_root / target, target, task=task, fold=fold)
        per_epoch = len(videos) * spec.list_repeat // spec.batch_size * spec.batch_size
        count = per_epoch * spec.epochs
        add(f"{notebook} stage 2 {strategy} {target}{'/' + task if task else ''}"
            f"{f'/fold{fold}' if fold is not None else ''}",
            f"{len(videos)} videos x{spec.list_repeat} x {spec.epochs} epochs, {spec.clip_len}x{spec.crop}px",
            count, units.step(strategy, spec.clip_len, spec.crop), count * spec.clip_len)

    stage2("MTL-AQA", None, "pecop", "03")
    stage2("MTL-AQA", None, "hpt", "03")

    # notebooks 04-06: fine-tuning, Dom-G and PECoP backbones (the PECoP artifact of each target, JIGSAWS: each fold)
    options = FinetuneOptions(**cfg.stage("finetune"))
    targets_done = {("MTL-AQA", None, None)}
    for notebook, heads in NOTEBOOK_HEADS.items():
        for head in heads:
            for setting in settings_for(head, options.scope):
                if (setting.dataset, setting.task, setting.fold) not in targets_done:
                    targets_done.add((setting.dataset, setting.task, setting.fold))
                    stage2(setting.dataset, setting.task, "pecop", notebook, setting.fold)
                data = open_finetune_data(world_root / setting.dataset, setting, crop=cfg.data_crop_size,
                                          clip_frames=cfg.data_clip_frames or None, seed=cfg.seed)
                train, val = validation_split(data, setting, options.val_fraction, cfg.seed)
                recipe = setting.recipe
                crop = min(cfg.data_crop_size, recipe.max_crop)
                windowing = windowing_for(recipe.windowing, data.train.clip_frames or None)
                epochs = options.resolved(recipe)["epochs"]
                per_video = windowing.num_windows
                train_windows = len(train) * (2 if recipe.pairs else 1) * per_video * epochs
                clip_frames = windowing.clip_frames
                add(f"{notebook} fine-tune train {setting.label}",
                    f"{len(train)} {'pairs' if recipe.pairs else 'videos'} x {per_video} windows of {windowing.window} "
                    f"x {epochs} epochs x {len(BACKBONES)} backbones",
                    train_windows * len(BACKBONES), units.step("hpt", windowing.window, crop),
                    len(train) * (2 if recipe.pairs else 1) * clip_frames * epochs * len(BACKBONES))
                queries = len(data.test) + len(val)
                exemplars = min(len(train), queries * options.exemplars) if recipe.pairs else 0
                encoded = queries + exemplars  # each video once per evaluation (TSA's transitions reuse the queries)
                add(f"{notebook} fine-tune eval {setting.label}",
                    f"({len(data.test)} test + {len(val)} val{f' + <={exemplars} exemplars' if exemplars else ''}"
                    f") x {per_video} windows x {epochs} epochs x {len(BACKBONES)} backbones",
                    encoded * per_video * epochs * len(BACKBONES), units.inference(windowing.window, crop),
                    encoded * clip_frames * epochs * len(BACKBONES))
    return rows, {"decode_s_per_frame": decode, **{"/".join(map(str, k)): v for k, v in units.cache.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tutorial")
    parser.add_argument("--world", default=None, help="synthetic world folder (default: the preset's cached world)")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.world:
        root = Path(args.world)
    else:
        from pecop_lib.config import cache_dir

        root = cache_dir() / "synthetic" / world_spec(args.preset).key()
    world = load_world(root)
    if world is None:
        raise SystemExit(f"no synthetic world at {root}; generate it first: python -c \"import pecop_lib; "
                         f"pecop_lib.synthetic_world('{args.preset}')\" (its time is part of the cost)")
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    print(f"preset {args.preset}; machine: {machine}; torch {torch.__version__}")
    print("ESTIMATE: measured unit costs x counted work (not a run of the whole sequence)\n")
    generation = sum(d["seconds"] for d in world.manifest["datasets"].values())
    rows, units = estimate(args.preset, root, Units(args.reps, args.batch, {}))
    rows.insert(0, {"stage": "01 synthetic world generation", "what": "measured (manifest)", "count": 1,
                    "unit_s": generation, "hours": generation / 3600, "decode_hours": 0.0})
    print(f"{'stage':52s} {'count':>9s} {'s/unit':>8s} {'model h':>9s} {'decode h':>9s}  what")
    for r in rows:
        print(f"{r['stage']:52s} {r['count']:9.0f} {r['unit_s']:8.3f} {r['hours']:9.2f} {r['decode_hours']:9.2f}  "
              f"{r['what']}")
    total = sum(r["hours"] + r["decode_hours"] for r in rows)
    by_kind: dict[str, float] = {}
    for r in rows:
        kind = " ".join(str(r["stage"]).split()[1:3])
        by_kind[kind] = by_kind.get(kind, 0.0) + r["hours"] + r["decode_hours"]
    print("\nby kind of work: " + ", ".join(f"{k} {v:.0f} h" for k, v in sorted(by_kind.items(), key=lambda x: -x[1])))
    print(f"total: about {total:.0f} h = {total / 24:.1f} days on this machine (estimate)")
    print("units:", {k: round(v, 4) for k, v in units.items()})
    if args.out:
        Path(args.out).write_text(json.dumps({"preset": args.preset, "machine": machine, "rows": rows, "units": units,
                                              "total_hours": total}, indent=2) + "\n")


if __name__ == "__main__":
    main()
