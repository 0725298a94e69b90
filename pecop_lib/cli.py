"""The ``pecop`` command line: the headless face of the package.

``pecop notebooks run`` executes the notebook sequence (see :mod:`pecop_lib.notebooks`);
``pecop notebooks list`` shows the notebooks and their parameters; ``pecop pretrain`` runs
continual pretraining (stage 1 from the cache or real weights, then stage 2; see
:mod:`pecop_lib.pretrain.pipeline`), also under ``torchrun``. Later stages register their own
subcommands here (``doctor``). ``pecop finetune`` fine-tunes an AQA head on a pretrained backbone (see
:mod:`pecop_lib.finetune.runs`). ``pecop course build`` / ``pecop course grade`` make the course kit's
editions and grade submissions (see :mod:`pecop_lib.course_kit`). ``pecop score`` and ``pecop explain`` use
a run's exported model (see :mod:`pecop_lib.model_commands`).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from pecop_lib import __version__
from pecop_lib.config import OPTIMIZERS, PRESET_NAMES, ConfigError
from pecop_lib.model_commands import add_model_commands
from pecop_lib.run_lock import RunFolderLockedError


def _notebooks_run(args: argparse.Namespace) -> int:
    from pecop_lib.notebooks import (
        NotebookParameterError,
        NotebookRunError,
        parse_parameter,
        run_notebooks,
        run_summary,
    )

    try:
        parameters = dict(parse_parameter(p) for p in args.parameter)
        report = run_notebooks(
            args.preset, only=args.only, device=args.device, out=args.out, parameters=parameters,
            notebooks_dir=args.notebooks_dir, cell_timeout=args.cell_timeout, progress=args.progress,
            log_output=args.log_output,
        )
    except NotebookRunError as exc:
        print(f"pecop: FAILED: {exc}", file=sys.stderr)
        return 1
    except (NotebookParameterError, ConfigError, ValueError, FileNotFoundError, NotADirectoryError,
            RunFolderLockedError) as exc:
        print(f"pecop: error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(run_summary(report)))
    return 0


def _course_build(args: argparse.Namespace) -> int:
    from pecop_lib.course_kit import build_course

    try:
        build = build_course(args.out, preset=args.preset, notebooks_dir=args.notebooks_dir, only=args.only)
    except (FileNotFoundError, ValueError) as exc:  # CourseKitError is a ValueError, as is an unknown --only
        print(f"pecop: error: {exc}", file=sys.stderr)
        return 2
    points = sum(e.points for e in build.exercises)
    print(f"course folder {build.root}: {len(build.exercises)} exercises ({points} points) in "
          f"{len(build.student)} notebooks, preset {build.preset}")
    print(f"  student edition:    {build.root / 'release'}  (hand these out)")
    print(f"  instructor edition: {build.root / 'source'}")
    print(f"  grade submissions:  pecop course grade <folder of <student>/<NN_topic>.ipynb> --course {args.out}")
    return 0


def _course_grade(args: argparse.Namespace) -> int:
    from pecop_lib.course_kit import GRADES_FILE, NOT_GRADED, CourseKitError, grade_submissions

    try:
        rows = grade_submissions(args.course, args.submissions, out=args.out)
    except CourseKitError as exc:
        print(f"pecop: error: {exc}", file=sys.stderr)
        return 2
    totals: dict[str, list[float]] = {}
    for row in rows:
        got = totals.setdefault(row["student"], [0.0, 0.0])
        got[0] += row["points"]
        got[1] += row["max_points"]
    for student, (points, most) in totals.items():
        print(f"{student}: {points:g} / {most:g} points")
    table = args.out or str(Path(args.course) / GRADES_FILE)
    print(f"grade table: {table}; feedback: {Path(args.course) / 'feedback'}")
    failed = sorted({(r["student"], r["notebook"], r["feedback"]) for r in rows if r["feedback"].startswith(NOT_GRADED)})
    for student, notebook, why in failed:
        print(f"pecop: {student}/{notebook}: {why}", file=sys.stderr)
    return 1 if failed else 0


def _notebooks_list(args: argparse.Namespace) -> int:
    from pecop_lib.notebooks import declared_parameters, discover_notebooks

    for path in discover_notebooks(args.notebooks_dir):
        params = ", ".join(f"{k}={v}" for k, v in declared_parameters(path).items())
        print(f"{path.stem}: {params}")
    return 0


PRETEXT_NAMES = {"vspp": "vspp", "videopace": "pace", "rspnet": "rspnet"}
"""Command-line pretext names (the paper's) -> library names (:data:`pecop_lib.train.PRETEXTS`)."""


def per_device_batch(per_device: int | None, world_size: int | None = None) -> int | None:
    """The batch over all processes that gives ``per_device`` clips (or pairs) to each process, or ``None``.

    BatchNorm normalises over what one device sees: the official stage 2 ran ``nn.DataParallel`` on 4
    GPUs with batch 16, so each replica's BatchNorm saw 4 clips. ``torchrun --nproc_per_node 4 ...
    --per-device-batch 4`` reproduces that (16 clips per step); on one device, ``--per-device-batch 4
    --grad-accum 4`` keeps BatchNorm at 4 clips and the step at 16 (docs/fidelity.md).

    Args:
        per_device: Clips per process and micro-batch (``--per-device-batch``).
        world_size: Processes; default ``$WORLD_SIZE`` (set by ``torchrun``), else 1.

    Raises:
        ValueError: If ``per_device`` is not positive.
    """
    if per_device is None:
        return None
    if per_device < 1:
        raise ValueError(f"--per-device-batch must be >= 1, got {per_device}")
    world = world_size if world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
    print(f"pecop: batch {per_device} per device x {world} process{'es' if world > 1 else ''} = "
          f"{per_device * world} per step (BatchNorm normalises over {per_device})", file=sys.stderr)
    return per_device * world


def _pretrain_overrides(args: argparse.Namespace) -> dict[str, object]:
    from pecop_lib.notebooks import parse_parameter

    overrides: dict[str, object] = dict(parse_parameter(p) for p in args.set)
    flags = {
        "seed": args.seed, "device": args.device, "model_backbone": args.backbone, "model_weights": args.kinetics_weights,
        "pretrain_strategy": args.strategy, "pretrain_pretext": PRETEXT_NAMES.get(args.pretext),
        "pretrain_vspp_mode": args.vspp_mode, "pretrain_epochs": args.epochs, "pretrain_full_epochs": args.epochs,
        "pretrain_batch_size": args.batch_size if args.per_device_batch is None else per_device_batch(args.per_device_batch),
        "pretrain_lr": args.lr, "pretrain_optimizer": args.optimizer,
        "train_precision": args.precision,
        "train_compile": args.compile or None, "train_grad_accum_steps": args.grad_accum,
        "train_checkpoint_every_steps": args.checkpoint_every, "data_num_workers": args.num_workers,
    }
    overrides.update({k: v for k, v in flags.items() if v is not None})
    return overrides


def _pretrain(args: argparse.Namespace) -> int:
    from pecop_lib.config import resolve
    from pecop_lib.pretrain.pipeline import pretrain_run
    from pecop_lib.pretrain.targets import check_fold, check_target
    from pecop_lib.train.context import RunContext
    from pecop_lib.train.distributed import init_distributed, shutdown_distributed
    from pecop_lib.train.loop import NonFiniteLossError

    try:
        cfg = resolve(args.preset, **_pretrain_overrides(args))
        check_target(args.dataset, args.task)
        check_fold(args.dataset, args.fold)
        if cfg.model_weights and not Path(cfg.model_weights).expanduser().is_file():
            raise FileNotFoundError(f"--kinetics-weights {cfg.model_weights} does not exist")
        target = "-".join([args.dataset] + ([args.task] if args.task else []) +
                          ([f"fold{args.fold}"] if args.fold is not None else []))
        out = Path(args.out or f"runs/{cfg.preset}/pretrain/{cfg.pretrain_strategy}-{cfg.pretrain_pretext}-"
                               f"{target}".replace(" ", "_"))
        context = init_distributed(cfg.device)
    except (ConfigError, ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"pecop: error: {exc}", file=sys.stderr)
        return 2
    try:
        run = RunContext.from_config(cfg, distributed=context, resume=args.resume, show_progress=not args.no_progress)
        artifact, stage1 = pretrain_run(cfg, out, dataset=args.dataset, task=args.task, fold=args.fold,
                                        data_root=args.data_root, actions_root=args.actions_root, run=run)
    except NonFiniteLossError as exc:
        print(f"pecop: FAILED: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
            RunFolderLockedError) as exc:
        print(f"pecop: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return _interrupted(args, out)
    finally:
        shutdown_distributed()
    if context.is_main:
        record = artifact.record
        if stage1 is not None:
            print(f"pecop: stage 1 {'trained' if stage1.trained else 'loaded'}: {stage1.folder} "
                  f"(val acc {stage1.record['val_acc']:.3f}, chance {stage1.record['chance_acc']:.3f})")
        last = record["history"]["epochs"][-1] if record["history"]["epochs"] else {}
        summary = ", ".join(f"{k} {last[k]:.4f}" for k in sorted(last) if k.endswith("acc") or k == "loss")
        print(f"pecop: stage 2 {cfg.pretrain_strategy}/{cfg.pretrain_pretext} on {args.dataset}"
              f"{' ' + args.task if args.task else ''}{f' fold {args.fold}' if args.fold is not None else ''}: "
              f"{len(record['history']['epochs'])} epoch(s) "
              f"in {record['seconds']:.1f} s; last epoch: {summary or 'no training (dom_g)'}")
        print(f"pecop: run folder {out} (weights: {record['weights'] or 'none'}, {record['stored_bytes'] / 1e6:.2f} MB)")
    return 0


def _interrupted(args: argparse.Namespace, out: Path) -> int:
    """Ctrl-C during training: the checkpoints written so far stay; say how to continue. Exit status 130."""
    argv = [a for a in args.argv if a not in ("--overwrite", "--resume")]
    print(f"\npecop: interrupted; the checkpoints written so far are in {out}. Continue with:\n"
          f"  pecop {shlex.join([*argv, '--resume'])}", file=sys.stderr)
    return 130


def _finetune(args: argparse.Namespace) -> int:
    from pecop_lib.config import resolve
    from pecop_lib.finetune.runs import finetune_command
    from pecop_lib.models.loading import WeightsMismatchError
    from pecop_lib.notebooks import parse_parameter
    from pecop_lib.train.context import RunContext
    from pecop_lib.train.distributed import init_distributed, shutdown_distributed
    from pecop_lib.train.loop import NonFiniteLossError

    overrides: dict[str, object] = dict(parse_parameter(p) for p in args.set)
    stem = f"{args.head}-{args.dataset}{'-' + args.task if args.task else ''}".replace(" ", "_")
    try:
        flags = {"seed": args.seed, "device": args.device, "finetune_epochs": args.epochs,
                 "finetune_batch_size": per_device_batch(args.per_device_batch)}
        overrides.update({k: v for k, v in flags.items() if v is not None})
        cfg = resolve(args.preset, **overrides)
        out = Path(args.out or f"runs/{cfg.preset}/finetune/{stem}")
        context = init_distributed(cfg.device)
    except (ConfigError, ValueError, RuntimeError) as exc:
        print(f"pecop: error: {exc}", file=sys.stderr)
        return 2
    try:
        metrics = finetune_command(
            cfg, head=args.head, dataset=args.dataset, task=args.task, fold=args.fold,
            backbone_checkpoint=args.backbone_checkpoint, base_weights=args.base_weights, data_root=args.data_root,
            out=out, label=args.label, overwrite=args.overwrite, keep_checkpoints=args.keep_checkpoints,
            run=RunContext.from_config(cfg, distributed=context if context.is_distributed else None,
                                       resume=args.resume, show_progress=not args.no_progress),
        )
    except NonFiniteLossError as exc:
        print(f"pecop: FAILED: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, WeightsMismatchError,
            RunFolderLockedError) as exc:
        print(f"pecop: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return _interrupted(args, out)
    finally:
        shutdown_distributed()
    for run in metrics["runs"]:
        rhos = ", ".join(f"{k.removesuffix('_rho')} rho {v:.4f}" if v is not None else f"{k.removesuffix('_rho')} rho n/a"
                         for k, v in run.items() if k.endswith("_rho"))
        print(f"  {run['setting']:<36} {rhos}")
    print(f"pecop: fine-tuned {len(metrics['runs'])} run(s) on {metrics['backbone']}; metrics: {out / 'metrics.json'}")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from pecop_lib.doctor import run_doctor

    roots = {}
    for item in args.data:
        name, sep, root = item.partition("=")
        if not sep:
            print(f"pecop: error: --data {item!r} must look like NAME=PATH, e.g. mtl-aqa=/data/MTL-AQA", file=sys.stderr)
            return 2
        roots[name.strip().lower()] = root
    findings = run_doctor(args.device, roots, args.crop)
    for finding in findings:
        print(finding.format())
    errors = sum(f.level == "error" for f in findings)
    warnings = sum(f.level == "warn" for f in findings)
    print(f"pecop doctor: {errors} error(s), {warnings} warning(s)")
    return 1 if errors else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``pecop`` command (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="pecop",
        description="PECoP: parameter-efficient continual pretraining for action quality assessment.",
    )
    parser.add_argument("--version", action="version", version=f"pecop {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    notebooks = commands.add_parser("notebooks", help="run or list the tutorial notebooks headlessly")
    nb_commands = notebooks.add_subparsers(dest="notebooks_command", required=True, metavar="ACTION")

    run = nb_commands.add_parser(
        "run", help="execute the notebooks in numeric order with papermill",
        description="Execute notebooks/NN_*.ipynb in numeric order; write executed notebooks, figures, "
                    "metrics.json per notebook and manifest.json under the output folder.",
    )
    run.add_argument("--preset", default="auto", choices=(*PRESET_NAMES, "auto"),
                     help="settings preset; auto = tutorial with a GPU, else course (default: auto)")
    run.add_argument("--only", nargs="+", metavar="NN", help="run only these notebooks (numbers or file stems)")
    run.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    run.add_argument("--out", default=None, help="output folder (default: runs/<preset>)")
    run.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE",
                     help="extra notebook parameter (must be declared by every selected notebook); repeatable")
    run.add_argument("--cell-timeout", type=int, default=None, metavar="S",
                     help="per-cell time limit in seconds (default: from the preset)")
    run.add_argument("--notebooks-dir", default=None, help="folder of the notebooks (default: the repo's notebooks/)")
    bars = run.add_mutually_exclusive_group()
    bars.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="show papermill's per-cell progress bar even when stdout is not a terminal "
                           "(default: only on a terminal; one line per notebook start and end either way)")
    bars.add_argument("--no-progress", dest="progress", action="store_false", help="hide the per-cell progress bar")
    run.add_argument("--log-output", action="store_true", help="stream cell output to the log")
    run.set_defaults(func=_notebooks_run)

    listing = nb_commands.add_parser("list", help="list the notebooks and their parameters")
    listing.add_argument("--notebooks-dir", default=None)
    listing.set_defaults(func=_notebooks_list)

    course = commands.add_parser("course", help="the course kit: student editions and autograding (nbgrader)")
    course_commands = course.add_subparsers(dest="course_command", required=True, metavar="ACTION")
    build = course_commands.add_parser(
        "build", help="build the instructor and student editions of the notebooks with exercises",
        description="Write an nbgrader course folder: source/ (instructor edition), release/ (student edition, "
                    "answers and hidden tests stripped), gradebook.db. Needs pip install -e '.[course]'.")
    build.add_argument("--out", default="course/build", help="course folder (default: course/build)")
    build.add_argument("--preset", default="course", choices=PRESET_NAMES,
                       help="preset the editions run with (default: course, the CPU preset)")
    build.add_argument("--only", nargs="+", metavar="NN", help="only these notebooks (numbers or file stems)")
    build.add_argument("--notebooks-dir", default=None, help="folder of the notebooks (default: the repo's notebooks/)")
    build.set_defaults(func=_course_build)
    grade = course_commands.add_parser(
        "grade", help="autograde submitted notebooks into a grade table (CSV) with per-exercise feedback",
        description="Autograde SUBMISSIONS/<student>/<NN_topic>.ipynb with nbgrader; write grades.csv (one row per "
                    "student and exercise) and HTML feedback under the course folder's feedback/.")
    grade.add_argument("submissions", help="folder of <student>/<NN_topic>.ipynb (or <student>/<NN_topic>/...)")
    grade.add_argument("--course", default="course/build", help="course folder made by `pecop course build`")
    grade.add_argument("--out", default=None, help="grade table (default: <course>/grades.csv)")
    grade.set_defaults(func=_course_grade)

    doctor = commands.add_parser("doctor", help="check this machine (packages, kernel, video decoding, device, "
                                                "disk, dataset roots) and print fixes")
    doctor.add_argument("--device", default="auto", help="device to check: auto | cpu | cuda | cuda:N")
    doctor.add_argument("--data", action="append", default=[], metavar="NAME=PATH",
                        help="check a dataset root in its official format; NAME is mtl-aqa, jigsaws, finediving "
                             "or pd4t; repeatable")
    doctor.add_argument("--crop", type=int, default=None,
                        help="crop side for reading the datasets (default: each dataset's official size)")
    doctor.set_defaults(func=_doctor)

    from pecop_lib.data.registry import DATASETS
    from pecop_lib.models.strategies import STRATEGIES

    pretrain = commands.add_parser(
        "pretrain", help="continual pretraining (stage 1 + stage 2) of a backbone on a target dataset",
        description="Stage 1 (domain-general backbone on the synthetic action set, cached; skipped with "
                    "--kinetics-weights), then stage 2: a pretext task on the target's unlabeled training videos "
                    "under one strategy. Writes checkpoints, metrics.json/csv, the weights and stage2.json to --out. "
                    "Multi-GPU: torchrun --nproc_per_node=G -m pecop_lib pretrain ...",
    )
    pretrain.add_argument("--preset", required=True, choices=PRESET_NAMES, help="settings preset")
    pretrain.add_argument("--strategy", required=True, choices=tuple(STRATEGIES),
                          help="pecop (adapters), hpt (whole backbone), hpt_bn (BatchNorm affine), dom_s (from "
                               "scratch), dom_g (no stage 2)")
    pretrain.add_argument("--backbone", choices=("i3d", "r3d18"), default=None, help="default: the preset's")
    pretrain.add_argument("--pretext", choices=tuple(PRETEXT_NAMES), default=None, help="default: the preset's (vspp)")
    pretrain.add_argument("--dataset", choices=tuple(DATASETS), default="MTL-AQA", help="target dataset (default MTL-AQA)")
    pretrain.add_argument("--task", default=None, help="JIGSAWS or PD4T task, e.g. Suturing, Gait, 'Finger tapping'")
    pretrain.add_argument("--fold", type=int, default=None,
                          help="JIGSAWS only, required there: the test fold 0..3 the backbone will be evaluated on "
                               "(stage 2 reads the other three folds' trials; one run per fold)")
    pretrain.add_argument("--data-root", default=None,
                          help="folder holding <dataset>/ in the official layout (default: the synthetic world)")
    pretrain.add_argument("--actions-root", default=None,
                          help="Kinetics-style action set for stage 1 (default: <data-root>/Kinetics-synth or the "
                               "synthetic world's)")
    pretrain.add_argument("--kinetics-weights", default=None, metavar="PATH",
                          help="real Kinetics weights (model_rgb.pth, rgb_imagenet.pt, r3d_18-*.pth): skip stage 1")
    pretrain.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (default: the preset's, auto)")
    pretrain.add_argument("--out", default=None, help="run folder (default: runs/<preset>/pretrain/<strategy>-...)")
    pretrain.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    pretrain.add_argument("--seed", type=int, default=None)
    pretrain.add_argument("--epochs", type=int, default=None, help="stage-2 epochs (default: the preset's)")
    batch = pretrain.add_mutually_exclusive_group()
    batch.add_argument("--batch-size", type=int, default=None, help="clips per step over all processes")
    batch.add_argument("--per-device-batch", type=int, default=None, metavar="N",
                       help="clips per device (BatchNorm's batch); the step holds N x $WORLD_SIZE (torchrun)")
    pretrain.add_argument("--lr", type=float, default=None, help="stage-2 learning rate")
    pretrain.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                          help="stage-2 optimiser (default: the preset's; official sgd)")
    pretrain.add_argument("--vspp-mode", choices=("official", "paper"), default=None)
    pretrain.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default=None)
    pretrain.add_argument("--compile", action="store_true", help="torch.compile the model")
    pretrain.add_argument("--grad-accum", type=int, default=None, metavar="N", help="micro-batches per step")
    pretrain.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                          help="also checkpoint every N steps (0: epoch ends only)")
    pretrain.add_argument("--num-workers", type=int, default=None, help="data loader workers")
    pretrain.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          help="any config key, e.g. --set pretrain_list_repeat=20 (repeatable)")
    pretrain.add_argument("--no-progress", action="store_true", help="hide progress bars")
    pretrain.set_defaults(func=_pretrain)
    from pecop_lib.heads import HEADS

    finetune = commands.add_parser(
        "finetune", help="fine-tune an AQA head (USDL, MUSDL, CoRe, TSA) on a pretrained backbone",
        description="Fine-tune backbone and head with the head's official recipe, evaluating test and a validation "
                    "hold-out every epoch; reports the official protocol (best test epoch; JIGSAWS (M)USDL: mean of "
                    "the last 10) and the honest one (epoch chosen on validation) with bootstrap intervals. JIGSAWS "
                    "without --fold runs all 4 folds. Writes per-run folders and metrics.json to --out. Multi-GPU: "
                    "torchrun --nproc_per_node=G -m pecop_lib finetune ...",
    )
    finetune.add_argument("--head", required=True, choices=HEADS)
    finetune.add_argument("--dataset", required=True, choices=tuple(DATASETS))
    finetune.add_argument("--task", default=None, help="JIGSAWS or PD4T task, e.g. Suturing, Gait, 'Finger tapping'")
    finetune.add_argument("--fold", type=int, default=None, help="JIGSAWS test fold 0..3 (default: all four)")
    finetune.add_argument("--backbone-checkpoint", required=True, metavar="PATH|none",
                          help="weights file (Kinetics, stage-1, HPT), PECoP adapter folder (needs --base-weights), "
                               "or none (random init, or --base-weights alone)")
    finetune.add_argument("--base-weights", default=None, metavar="PATH",
                          help="backbone weights the adapters were trained on (default: the preset's model_weights)")
    finetune.add_argument("--preset", required=True, choices=PRESET_NAMES, help="settings preset")
    finetune.add_argument("--data-root", default=None,
                          help="folder holding <dataset>/ in the official layout (default: the synthetic world)")
    finetune.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (default: the preset's, auto)")
    finetune.add_argument("--out", default=None, help="output folder (default: runs/<preset>/finetune/<head>-<dataset>)")
    finetune.add_argument("--label", default=None, help="backbone label in folder names and metrics")
    finetune.add_argument("--resume", action="store_true",
                          help="load finished runs in --out and continue unfinished ones from their checkpoints")
    finetune.add_argument("--overwrite", action="store_true",
                          help="replace the runs --out holds (without it, and without --resume, they are refused)")
    finetune.add_argument("--seed", type=int, default=None)
    finetune.add_argument("--epochs", type=int, default=None, help="0: the recipe's official count")
    finetune.add_argument("--per-device-batch", type=int, default=None, metavar="N",
                          help="videos (pairs) per device; the step holds N x $WORLD_SIZE (torchrun)")
    finetune.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          help="any config key, e.g. --set finetune_decode=expectation (repeatable)")
    finetune.add_argument("--keep-checkpoints", action="store_true",
                          help="keep the trainer's checkpoints of finished runs (default: only the exported models)")
    finetune.add_argument("--no-progress", action="store_true", help="hide progress bars")
    finetune.set_defaults(func=_finetune)

    add_model_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pecop`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
