"""Seconds per video of each attribution method (:mod:`pecop_lib.explain`) on exported fine-tuned models.

Usage (the runs of a ``course`` record; the synthetic world the runs were trained on)::

    python benchmarks/bench_attribution.py --world <world root> \\
        --runs <out>/09_why_this_score/runs/PECoP/* <out>/06_finetune_tsa/runs/PECoP/tsa-FineDiving \\
        --videos 4 --ig-steps 8 16 32 --batch-sizes 1 8 --threads 2

Per run, the first ``--videos`` test videos are attributed once untimed (warm-up) and then timed one by one, for
each method and setting: occlusion (one window per twelfth of the clip, as notebook 09), Integrated Gradients at
each ``--ig-steps``, each with every ``--batch-sizes`` (clips per forward pass), and TSA's per-step account. The
table gives the median and the range of the per-video seconds. Numbers depend on the machine and its load: state
both with them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from pecop_lib.explain import STEPS, attribute, methods_for
from pecop_lib.finetune import load_exported
from pecop_lib.finetune.scoring import split_queries


def bench_run(run: Path, world: Path, *, videos: int, ig_steps: list[int], batch_sizes: list[int]) -> list[dict]:
    """Timing rows of one run's honest export."""
    model = load_exported(run)
    model.model.to("cpu")
    queries = split_queries(model, world / model.setting.dataset, "test")[:videos]
    window = max(2, queries[0].clip.shape[1] // 12)
    settings = [("occlusion", {"batch_size": b}) for b in batch_sizes]
    settings += [("integrated_gradients", {"steps": s, "batch_size": b}) for s in ig_steps for b in batch_sizes]
    settings += [(STEPS, {})] if STEPS in methods_for(model) else []
    rows = []
    for method, options in settings:
        attribute(model, queries[0], methods=[method], window=window, **options)  # warm-up
        seconds = []
        for query in queries:
            started = time.perf_counter()
            attribute(model, query, methods=[method], window=window, **options)
            seconds.append(time.perf_counter() - started)
        rows.append({"setting": model.setting.label, "method": method, **options, "window": window,
                     "clip": list(queries[0].clip.shape), "videos": len(queries),
                     "median_s": float(np.median(seconds)), "min_s": min(seconds), "max_s": max(seconds)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", required=True, help="the synthetic world's root (holding <dataset>/ folders)")
    parser.add_argument("--runs", nargs="+", required=True, help="fine-tuning run folders (with export/honest)")
    parser.add_argument("--videos", type=int, default=4, help="test videos timed per run")
    parser.add_argument("--ig-steps", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--out", default=None, help="optional JSON file for the rows and the machine")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    rows = [row for run in args.runs for row in bench_run(Path(run), Path(args.world), videos=args.videos,
                                                          ig_steps=args.ig_steps, batch_sizes=args.batch_sizes)]
    machine = {"cpus": os.cpu_count(), "threads": args.threads, "torch": torch.__version__,
               "platform": platform.platform(), "load_start": load, "load_end": os.getloadavg()}
    print("| setting | method | IG steps | batch | clip (C, T, H, W) | s per video: median (min-max) |")
    print("|---|---|---:|---:|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['method']} | {r.get('steps', '-')} | {r.get('batch_size', '-')} | "
              f"{tuple(r['clip'])} | {r['median_s']:.2f} ({r['min_s']:.2f}-{r['max_s']:.2f}) |")
    print(f"machine: {machine}")
    if args.out:
        from pecop_lib.atomic import atomic_write_json

        atomic_write_json(Path(args.out), {"machine": machine, "rows": rows})


if __name__ == "__main__":
    main()
