"""``pecop score`` and ``pecop explain``: what the command line does with an exported fine-tuned model
(:mod:`pecop_lib.finetune.export`): score videos into a CSV (:mod:`pecop_lib.finetune.scoring`), and attribute one
video's score over time (:mod:`pecop_lib.explain`) into a timeline figure and a JSON of the values."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _info(args: argparse.Namespace) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    from pecop_lib.finetune.scoring import read_info

    defaults = {k: v for k, v in (("difficulty", args.difficulty), ("group", args.group)) if v is not None}
    return (read_info(args.info) if args.info else None), defaults


def _score(args: argparse.Namespace) -> int:
    from pecop_lib.finetune.export import ModelCardError
    from pecop_lib.finetune.scoring import score, write_scores

    try:
        info, defaults = _info(args)
        if not args.videos and args.split is None:
            raise ValueError("give videos to score, or --data-root and --split test")
        report = score(args.model, args.videos, info=info, defaults=defaults, data_root=args.data_root,
                       split=args.split, device=args.device, protocol=args.protocol, show_progress=not args.no_progress)
    except (ModelCardError, ValueError, FileNotFoundError, OSError) as exc:
        print(f"pecop: error: {exc}", file=sys.stderr)
        return 2
    out = write_scores(report, args.out)
    print(f"pecop: scored {len(report.scores)} video(s) with {args.model}: {out}")
    for video, why in report.failures:
        print(f"pecop: FAILED {video}: {why}", file=sys.stderr)
    return 1 if report.failures else 0


def _explain(args: argparse.Namespace) -> int:
    from pecop_lib.atomic import atomic_write_json
    from pecop_lib.explain import explain
    from pecop_lib.finetune.export import ModelCardError, load_exported
    from pecop_lib.outputs import save_figure
    from pecop_lib.viz.attribution import plot_attribution_timeline

    try:
        info, defaults = _info(args)
        exported = load_exported(args.model, protocol=args.protocol)
        attributions = explain(exported, args.video, record=args.record, methods=args.methods, window=args.window,
                               steps=args.steps, info=info, defaults=defaults, data_root=args.data_root,
                               device=args.device)
    except (ModelCardError, ValueError, FileNotFoundError, OSError) as exc:
        print(f"pecop: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    stem = Path(args.video).stem if args.video else args.record.replace("/", "_")
    atomic_write_json(out / f"{stem}-attribution.json",
                      {"model": str(exported.folder), "methods": {m: a.to_dict() for m, a in attributions.items()}})
    figure = plot_attribution_timeline(attributions, title=f"Why this score: {stem} ({exported.setting.label})")
    path = save_figure(figure, out, f"{stem}-attribution")[0]
    scores = ", ".join(f"{m} {a.score:.3f}" for m, a in attributions.items())
    print(f"pecop: attributed the score of {args.video or args.record} ({scores}): {path}, "
          f"{out / f'{stem}-attribution.json'}")
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="RUN", help="a fine-tuning run folder or an export folder")
    parser.add_argument("--protocol", default="honest", choices=("honest", "official"), help="which export of a run")
    parser.add_argument("--data-root", default=None, help="the run's dataset folder: its records are read as the "
                                                          "run read them (annotated span, difficulty, group)")
    parser.add_argument("--info", default=None, help="CSV with columns video, difficulty, group")
    parser.add_argument("--difficulty", type=float, default=None, help="difficulty of every video --info does not name")
    parser.add_argument("--group", default=None, help="exemplar group (CoRe/TSA) of every video --info does not name")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")


def add_model_commands(commands: Any) -> None:
    """Register ``score`` and ``explain`` on the ``pecop`` parser's subcommands."""
    from pecop_lib.explain import METHODS, STEPS

    scorer = commands.add_parser(
        "score", help="score videos with an exported fine-tuned model (writes a CSV)",
        description="Score mp4 files or frame folders with the model a fine-tuning run exported (its export/honest "
                    "folder). A video that cannot be scored is listed with the reason; the others are scored and "
                    "the exit status is 1.")
    scorer.add_argument("videos", nargs="*", help="video files, frame folders, or folders holding them")
    _common(scorer)
    scorer.add_argument("--split", default=None, choices=("test", "train"),
                        help="with --data-root: score every record of this split of the run's dataset")
    scorer.add_argument("--out", default="scores.csv", help="CSV to write (default: scores.csv)")
    scorer.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    scorer.set_defaults(func=_score)

    explainer = commands.add_parser(
        "explain", help="attribute one video's score over time (occlusion, Integrated Gradients)",
        description="Attribute the score an exported model gives one video to its temporal windows, by window "
                    "occlusion and by Integrated Gradients (captum), and for TSA by its own per-step shares; write "
                    "the timeline figure and a JSON of the values to --out.")
    which = explainer.add_mutually_exclusive_group(required=True)
    which.add_argument("--video", help="a video file or frame folder")
    which.add_argument("--record", help="with --data-root: a record id of the run's dataset (e.g. an MTL-AQA dive)")
    _common(explainer)
    explainer.add_argument("--methods", nargs="+", default=None, choices=(*METHODS, STEPS),
                           help=f"default: every method that applies ({', '.join(METHODS)}; {STEPS} for TSA)")
    explainer.add_argument("--window", type=int, default=8, help="occlusion window in clip frames (default 8)")
    explainer.add_argument("--steps", type=int, default=32, help="Integrated Gradients path steps (default 32)")
    explainer.add_argument("--out", default="explain", help="output folder (default: explain/)")
    explainer.set_defaults(func=_explain)
