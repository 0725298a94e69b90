"""Probe a stage-2 recipe of the ``course`` preset on an independent *selection world*, not on the record's.

The course record (``scripts/course_run.py``) runs on the world of seed 0. A change to the preset that is chosen
by looking at that world's numbers would be tuned toward the record's checks; this probe measures a candidate on
the world of another seed instead (docs/course.md, sections 12 and 14). Stage 1 stays the shipped checkpoint: it is
keyed by the seed-0 action set, which ``--actions-root`` points to (the selection world's targets are used for
stage 2 and its held-out test split).

One invocation probes one recipe (the course preset with the ``--set`` overrides): PECoP's stage 2 is trained on
the target's training videos and measured on its test-split videos, by the record's own held-out check (4 fixed
clips per video, every epoch) and by a larger draw (``--clips`` per video, after the run) whose accuracies have a
smaller standard error.

Usage::

    python scripts/course_probe.py --actions-root <seed-0 world>/Kinetics-synth                  # the course recipe
    python scripts/course_probe.py --actions-root ... --set model_adapter_lambda=1 --set pretrain_epochs=6
    python scripts/course_probe.py --actions-root ... --clip-len 32                             # stage 2 only

Results are printed and written as JSON to ``--out`` (one file per recipe). The world and the artifacts go
to ``$PECOP_CACHE_DIR`` (use one of its own).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from pecop_lib.atomic import atomic_write_json
from pecop_lib.config import resolve
from pecop_lib.data.synthetic import synthetic_world
from pecop_lib.pretrain import heldout_check, named_target, stage2_backbone, stage2_spec, starting_point
from pecop_lib.train import RunContext


def parse_value(text: str) -> object:
    """A ``--set`` value as JSON when it parses (numbers, true/false), else the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actions-root", required=True, help="the seed-0 world's Kinetics-synth (the shipped stage 1's)")
    parser.add_argument("--world-seed", type=int, default=1, help="seed of the selection world (not 0, the record's)")
    parser.add_argument("--target", default="Leg agility", help="stage-2 target, as pretrain_demo_task names it")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a course config override")
    parser.add_argument("--clip-len", type=int, default=None,
                        help="stage-2 clip length only (the shipped stage 1 keeps the preset's)")
    parser.add_argument("--clips", type=int, default=16, help="held-out clips per test video for the final measurement")
    parser.add_argument("--out", default="runs/course-probe")
    args = parser.parse_args()

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set {item!r}: expected KEY=VALUE")
        overrides[key] = parse_value(value)
    cfg = resolve("course", seed=0, device="cpu", **overrides)
    world = synthetic_world(cfg, seed=args.world_seed)
    dataset, task = named_target(args.target)
    run = RunContext.from_config(cfg, device="cpu")
    source, _stage1 = starting_point(cfg, args.actions_root, run)
    spec = stage2_spec(cfg, strategy="pecop", dataset=dataset, task=task)
    if args.clip_len is not None:
        spec = dataclasses.replace(spec, clip_len=args.clip_len)

    start = time.perf_counter()
    artifact = stage2_backbone(spec, source, world[dataset], label=f"probe-world{args.world_seed}", run=run)
    seconds = time.perf_counter() - start

    large = heldout_check(artifact, world[dataset], clips_per_video=args.clips, device="cpu")
    record = artifact.record["heldout"]["epochs"][-1]
    result = {
        "world_seed": args.world_seed, "target": args.target, "strategy": "pecop", "overrides": overrides,
        "clip_len": spec.clip_len, "trained_now": artifact.trained, "seconds": round(seconds, 1),
        "train_seconds": artifact.record["seconds"], "steps": len(artifact.record["history"]["steps"]),
        "trainable_params": artifact.record["trainable_backbone_params"],
        "record_check": {k: record[k] for k in ("segment_acc", "speed_acc")},
        "large": {k: large[k] for k in ("segment_acc", "speed_acc", "clips")},
        "large_se": {k: large[k.replace("_acc", "_se")] for k in ("segment_acc", "speed_acc")},
        "folder": str(artifact.folder),
    }
    name = "-".join([args.target.replace(" ", "_"), "pecop", f"clip{spec.clip_len}"] +
                    [f"{k}={v}" for k, v in sorted(overrides.items())]) + f"-world{args.world_seed}.json"
    atomic_write_json(Path(args.out) / name, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
