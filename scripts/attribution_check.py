"""Check temporal attribution against the synthetic world's known defects, on exported fine-tuned models.

For every given run (its ``export/honest`` model) every test video of its dataset is attributed by each method
that applies (:func:`pecop_lib.explain.methods_for`: occlusion, Integrated Gradients, and TSA's per-step shares).
Per run, method and defect kind, the rate at which the worst window (the most negative; PD4T, where a higher score
is worse: the most positive) overlaps a defect of that kind is compared with two nulls
(:func:`pecop_lib.explain.localisation`): a random window of the same video, and the worst windows of the clean test
videos (no defect at all) at the same clip positions. Videos whose only defects are of another kind are left out of
a kind's row; the row "all" counts every defect. Results are reported whichever way they fall.

Usage (the runs of a ``course`` record, e.g. notebook 09's, 04's, 05's and 06's)::

    python scripts/attribution_check.py --world <synthetic world root> \\
        --runs <out>/09_why_this_score/runs/PECoP/* <out>/06_finetune_tsa/runs/PECoP/tsa-FineDiving \\
        --out reports/attribution-course --name summary

Writes ``<name>.json`` and ``<name>.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pecop_lib.atomic import atomic_write_json, atomic_write_text
from pecop_lib.data.synthetic import defect_intervals
from pecop_lib.explain import attribute, localisation, methods_for
from pecop_lib.finetune import load_exported
from pecop_lib.finetune.scoring import split_queries


def check_run(run: Path, world: Path, *, window: int, steps: int, permutations: int, seed: int,
              limit: int = 0) -> list[dict]:
    """Localisation rows (per method and defect kind) of one run's honest export over its test videos (with
    ``limit``: the first ``limit`` with a defect and the first ``limit`` clean ones, in the split's order)."""
    model = load_exported(run)
    model.model.to("cpu")
    setting = model.setting
    root = world / setting.dataset
    queries = split_queries(model, root, "test")
    defects = defect_intervals(root, task=setting.task)
    if limit:
        faulty = [q.record_id for q in queries if defects.get(q.record_id)][:limit]
        clean = [q.record_id for q in queries if not defects.get(q.record_id)][:limit]
        queries = [q for q in queries if q.record_id in {*faulty, *clean}]
    found: dict[str, list] = {m: [] for m in methods_for(model)}
    started = time.perf_counter()
    for query in queries:
        for method, a in attribute(model, query, window=window or max(2, query.clip.shape[1] // 12),
                                   steps=steps).items():
            found[method].append(a)
    seconds = time.perf_counter() - started
    own = [defects.get(q.record_id, ()) for q in queries]
    kinds = sorted({d.kind for ds in own for d in ds})
    rows = []
    for kind in ([*kinds, "all"] if len(kinds) > 1 else kinds):
        keep = [i for i, ds in enumerate(own) if not ds or kind == "all" or any(d.kind == kind for d in ds)]
        intervals = [[(d.start, d.end) for d in own[i] if kind == "all" or d.kind == kind] for i in keep]
        for method, attributions in found.items():
            rows.append({"run": str(run), "setting": setting.label, "method": method, "kind": kind,
                         "test_videos": len(queries), "limit": limit, "epoch": model.card["epoch"], "test_rho": model.card["test_rho"],
                         "seconds_per_video": round(seconds / len(queries), 2),
                         **localisation([attributions[i] for i in keep], intervals, permutations=permutations,
                                        seed=seed)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", required=True, help="the synthetic world's root (holding <dataset>/ folders)")
    parser.add_argument("--runs", nargs="+", required=True, help="fine-tuning run folders (with export/honest)")
    parser.add_argument("--window", type=int, default=0, help="occlusion window in clip frames (0: a twelfth)")
    parser.add_argument("--steps", type=int, default=32, help="Integrated Gradients steps")
    parser.add_argument("--permutations", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0, help="seed of the permutation draws")
    parser.add_argument("--limit", type=int, default=0,
                        help="at most this many test videos with a defect and as many clean ones (0: every one)")
    parser.add_argument("--out", default="reports/attribution-course")
    parser.add_argument("--name", default="summary", help="file stem of the record")
    args = parser.parse_args()
    rows = [row for run in args.runs
            for row in check_run(Path(run), Path(args.world), window=args.window, steps=args.steps,
                                 permutations=args.permutations, seed=args.seed, limit=args.limit)]
    out = Path(args.out)
    atomic_write_json(out / f"{args.name}.json", {"window": args.window, "steps": args.steps, "limit": args.limit,
                                                  "permutations": args.permutations, "rows": rows})
    lines = ["| setting | method | defect | faulty / clean test videos | worst window on a defect | random window (p) | "
             "clean videos, same place (p) | test rho |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['setting']} | {r['method']} | {r['kind']} | {r['videos']} / {r['clean_videos']} | {r['rate']:.2f} | "
              f"{r['random_rate']:.2f} ({r['p_value']:.4f}) | {r['clean_rate']:.2f} ({r['clean_p_value']:.4f}) | "
              f"{r['test_rho']:.2f} |" for r in rows]
    atomic_write_text(out / f"{args.name}.md", "\n".join(lines) + "\n")
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
