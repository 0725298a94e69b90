"""Check temporal attribution against the synthetic world's known defects, on exported fine-tuned models.

For every given run (its ``export/honest`` model) and every test video of its dataset with at least one known
defect, both attribution methods of :mod:`pecop_lib.explain` are computed; per run and method, the rate at which
the worst window (the most negative; PD4T, where a higher score is worse: the most positive) overlaps a defect is
compared with the rate for a random window of the same video, with a
permutation p-value (:func:`pecop_lib.explain.localisation`). Results are reported whichever way they fall.

Usage (the runs of a ``course`` record, e.g. notebook 09's and notebook 04's)::

    python scripts/attribution_check.py --world <synthetic world root> \\
        --runs <out>/09_why_this_score/runs/PECoP/* <out>/04_finetune_usdl_musdl/runs/PECoP/usdl-MTL-AQA \\
        --out reports/attribution-course

Writes ``summary.json`` and ``summary.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pecop_lib.atomic import atomic_write_json, atomic_write_text
from pecop_lib.data.synthetic import defect_intervals
from pecop_lib.explain import METHODS, attribute, localisation
from pecop_lib.finetune import load_exported
from pecop_lib.finetune.scoring import split_queries


def check_run(run: Path, world: Path, *, window: int, steps: int, permutations: int) -> list[dict]:
    """Localisation rows (one per method) of one run's honest export over its test videos with defects."""
    model = load_exported(run)
    model.model.to("cpu")
    setting = model.setting
    root = world / setting.dataset
    queries = split_queries(model, root, "test")
    defects = defect_intervals(root, task=setting.task)
    chosen = [q for q in queries if defects.get(q.record_id)]
    found: dict[str, list] = {m: [] for m in METHODS}
    started = time.perf_counter()
    for query in chosen:
        for method, a in attribute(model, query, window=window or max(2, query.clip.shape[1] // 12),
                                   steps=steps).items():
            found[method].append(a)
    seconds = time.perf_counter() - started
    intervals = [[(d.start, d.end) for d in defects[q.record_id]] for q in chosen]
    kinds = sorted({d.kind for q in chosen for d in defects[q.record_id]})
    return [{"run": str(run), "setting": setting.label, "method": method, "test_videos": len(queries),
             "defect_kinds": kinds, "epoch": model.card["epoch"], "test_rho": model.card["test_rho"],
             "seconds": round(seconds, 1), **localisation(found[method], intervals, permutations=permutations)}
            for method in METHODS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", required=True, help="the synthetic world's root (holding <dataset>/ folders)")
    parser.add_argument("--runs", nargs="+", required=True, help="fine-tuning run folders (with export/honest)")
    parser.add_argument("--window", type=int, default=0, help="occlusion window in clip frames (0: a twelfth)")
    parser.add_argument("--steps", type=int, default=32, help="Integrated Gradients steps")
    parser.add_argument("--permutations", type=int, default=10_000)
    parser.add_argument("--out", default="reports/attribution-course")
    args = parser.parse_args()
    rows = [row for run in args.runs
            for row in check_run(Path(run), Path(args.world), window=args.window, steps=args.steps,
                                 permutations=args.permutations)]
    out = Path(args.out)
    atomic_write_json(out / "summary.json", {"window": args.window, "steps": args.steps, "rows": rows})
    lines = ["| setting | method | videos with a defect | worst window on a defect | random window | "
             "p-value | test rho of the model |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['setting']} | {r['method']} | {r['videos']} of {r['test_videos']} | {r['rate']:.2f} | "
              f"{r['random_rate']:.2f} | {r['p_value']:.4f} | {r['test_rho']} |" for r in rows]
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
