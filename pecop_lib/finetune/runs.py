"""Many fine-tuning runs in one call: every setting with every backbone, each result kept on disk.

:func:`run_settings` is what ``pecop finetune`` and notebooks 04-06 call. Each run gets its own
folder ``<out>/<backbone label>/<setting label>/`` holding the trainer's checkpoints and metrics,
``evaluation.json`` (every evaluated epoch) and, when finished, ``result.json`` (the whole
:class:`~pecop_lib.finetune.FinetuneResult`). With ``resume=True`` a finished run whose
request (setting, backbone label, seed, options, clip size) matches is loaded instead of trained,
an unfinished one continues from its newest checkpoint, and the others start.
:func:`finetune_command` is ``pecop finetune``: a config, a head, a dataset and a backbone checkpoint.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from pecop_lib.atomic import atomic_write_json, read_json
from pecop_lib.config import Config
from pecop_lib.data.registry import dataset_record, first_fold
from pecop_lib.eval import Interval
from pecop_lib.finetune.data import open_finetune_data
from pecop_lib.finetune.recipes import FinetuneOptions, Setting
from pecop_lib.finetune.results import FinetuneResult, Reported
from pecop_lib.finetune.run import finetune
from pecop_lib.models.backbone import Backbone
from pecop_lib.pretrain.targets import check_evaluation_split
from pecop_lib.run_lock import changed_keys, run_lock
from pecop_lib.store import ArtifactStore
from pecop_lib.train.checkpoint import latest_checkpoint
from pecop_lib.train.context import RunContext, run_context
from pecop_lib.train.loop import CHECKPOINT_DIR, TrainHistory

RESULT_FILE = "result.json"
RESULT_FORMAT = "pecop_lib.finetune_result/1"

BackboneFactory = Callable[[Setting], Backbone]
"""``setting -> freshly loaded backbone`` (e.g. ``lambda s: artifact.build()``)."""


def result_to_json(result: FinetuneResult, request: Mapping[str, Any]) -> dict[str, Any]:
    """A finished run as JSON-ready data (see :func:`result_from_json`)."""
    def rep(r: Reported) -> dict[str, Any]:
        data = asdict(r)
        data["ci"] = None if r.ci is None else asdict(r.ci)
        return data

    def finite(x: float) -> float | None:
        return None if x is None or not np.isfinite(x) else float(x)

    reported = {}
    for name, r in result.reported.items():
        data = rep(r)
        data["rho"] = finite(r.rho)
        if data["ci"] is not None:
            data["ci"] = {k: finite(v) if isinstance(v, float) else v for k, v in data["ci"].items()}
        reported[name] = data
    return {
        "format": RESULT_FORMAT,
        "request": dict(request),
        "setting": asdict(result.setting),
        "backbone_label": result.backbone_label,
        "epochs": result.epochs,
        "test_true": result.test_true.tolist(),
        "test_ids": result.test_ids,
        "val_true": result.val_true.tolist(),
        "reported": reported,
        "hyper": result.hyper,
        "history_epochs": result.history.epochs,
        "seconds": result.seconds,
        "test_transitions": None if result.test_transitions is None else result.test_transitions.tolist(),
        "test_difficulty": None if result.test_difficulty is None else result.test_difficulty.tolist(),
        "distribution_targets": None if result.distribution_targets is None else result.distribution_targets.tolist(),
        "difficulty_baseline": result.difficulty_baseline,
    }


def result_from_json(data: Mapping[str, Any]) -> FinetuneResult:
    """Rebuild a :class:`FinetuneResult` written by :func:`result_to_json`.

    Raises:
        ValueError: If the data is not a fine-tuning result of this format.
    """
    if data.get("format") != RESULT_FORMAT:
        raise ValueError(f"not a fine-tuning result (format {data.get('format')!r}, expected {RESULT_FORMAT!r})")

    def nan(x: float | None) -> float:
        return float("nan") if x is None else float(x)

    reported = {}
    for name, r in data["reported"].items():
        ci = r["ci"]
        interval = None if ci is None else Interval(nan(ci["value"]), nan(ci["low"]), nan(ci["high"]), ci["confidence"])
        reported[name] = Reported(r["protocol"], nan(r["rho"]), r["epoch"], r["description"], interval, r["l2"],
                                  r["rl2"])

    def array(x: Any) -> np.ndarray | None:
        return None if x is None else np.asarray(x, dtype=np.float64)

    return FinetuneResult(
        Setting(**data["setting"]), data["backbone_label"], list(data["epochs"]), np.asarray(data["test_true"]),
        list(data["test_ids"]), np.asarray(data["val_true"], dtype=np.float64), reported, dict(data["hyper"]),
        TrainHistory(list(data["history_epochs"])), float(data["seconds"]), array(data["test_transitions"]),
        array(data["distribution_targets"]), data.get("difficulty_baseline"), array(data.get("test_difficulty")),
    )


def load_result(run_dir: str | os.PathLike[str]) -> FinetuneResult:
    """The finished run in ``run_dir`` (its ``result.json``).

    Raises:
        FileNotFoundError: If the run has not finished.
    """
    path = Path(run_dir) / RESULT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the run in {run_dir} has not finished")
    return result_from_json(read_json(path, fix=f"delete {path} and the run is done again"))


def run_settings(
    settings: Sequence[Setting],
    backbones: Mapping[str, BackboneFactory],
    data_root: str | os.PathLike[str],
    options: FinetuneOptions,
    *,
    out: str | os.PathLike[str],
    crop: int,
    clip_frames: int | None,
    run: RunContext = RunContext(resume=True),
    keep_checkpoints: bool = False,
    export: bool = True,
) -> dict[str, list[FinetuneResult]]:
    """Fine-tune every backbone on every setting (see the module docstring).

    Args:
        settings: The runs' data (:func:`~pecop_lib.finetune.settings_for`).
        backbones: ``{label: factory}``; each run loads a fresh backbone.
        data_root: Folder holding the datasets in their official layouts (``<root>/MTL-AQA``, ...).
        options: Fine-tuning options.
        out: Output folder.
        crop, clip_frames: Clip size (``clip_frames`` 0 / ``None``: official).
        run: As :func:`~pecop_lib.finetune.finetune`; ``run.resume`` loads finished runs and continues
            unfinished ones (see the module docstring).
        keep_checkpoints: Keep the trainer's checkpoints of finished runs (``False``, the default, deletes them,
            keeping ``evaluation.json``, ``result.json``, the exported models and the trainer's metrics).
        export: Write each run's exported models (:func:`~pecop_lib.finetune.finetune`).

    Returns:
        ``{label: [result per setting]}``.
    """
    store = ArtifactStore(Path(out))
    return {label: [_load_or_train(store, setting, label, factory, Path(data_root), options, crop=crop,
                                   clip_frames=clip_frames, run=run, keep_checkpoints=keep_checkpoints,
                                   export=export)
                    for setting in settings]
            for label, factory in backbones.items()}


def _load_or_train(store: ArtifactStore, setting: Setting, label: str, factory: BackboneFactory, data_root: Path,
                   options: FinetuneOptions, *, crop: int, clip_frames: int | None, run: RunContext,
                   keep_checkpoints: bool, export: bool) -> FinetuneResult:
    """One run of :func:`run_settings`: loaded when finished for the same request (and ``run.resume``), else trained."""
    run_dir = run_folder(store.root, label, setting)
    request = run_request(setting, label, options, seed=run.seed, crop=crop, clip_frames=clip_frames)
    done, context = run_dir / RESULT_FILE, run.process
    fix = f"delete {done} and the run is done again"

    def train(resume: bool) -> FinetuneResult:
        data = open_finetune_data(data_root / setting.dataset, setting, crop=crop, clip_frames=clip_frames,
                                  seed=run.seed, resize=options.resize)
        result = finetune(factory(setting), setting, data, options, backbone_label=label, run_dir=run_dir,
                          run=run.but(resume=resume), export=export)
        if context.is_main:
            atomic_write_json(done, result_to_json(result, request))
            if not keep_checkpoints and (run_dir / CHECKPOINT_DIR).is_dir():
                shutil.rmtree(run_dir / CHECKPOINT_DIR)
        context.barrier()
        return result

    return store.load_or_run(
        run_dir,
        finished=lambda _: run.resume and done.is_file() and read_json(done, fix=fix).get("request") == request,
        load=load_result,
        run=train,
        resumable=lambda _: run.resume and latest_checkpoint(run_dir / CHECKPOINT_DIR) is not None,
        context=context,
        lock=False,  # the caller holds the output folder (finetune_command, run_ablation's cache)
    )


def run_folder(out: str | os.PathLike[str], label: str, setting: Setting) -> Path:
    """The folder of one run: ``<out>/<backbone label>/<setting label>`` (folder-safe)."""
    return ArtifactStore(Path(out)).folder(label, setting.label)


def run_request(setting: Setting, label: str, options: FinetuneOptions, *, seed: int, crop: int,
                clip_frames: int | None) -> dict[str, Any]:
    """What decides a run's result, stored with it: a finished run is reused only for the same request."""
    return {"setting": setting.label, "backbone": label, "seed": seed, "options": options.keyed(), "crop": crop,
            "clip_frames": clip_frames or None}


def check_replacing(out: str | os.PathLike[str], label: str, settings: Sequence[Setting],
                    request: Callable[[Setting], dict[str, Any]], *, resume: bool, overwrite: bool) -> list[Path]:
    """Refuse to replace earlier runs in ``out`` unless told, before anything is written.

    Args:
        out, label, settings: The runs about to start (:func:`run_folder`).
        request: Each setting's :func:`run_request`.
        resume: Load finished runs of the same request and continue unfinished ones; a finished run of
            another request is refused, naming what differs.
        overwrite: Replace whatever the run folders hold.

    Returns:
        The run folders to delete before training (``overwrite``; empty otherwise).

    Raises:
        FileExistsError: If a run folder holds a run and neither ``resume`` nor ``overwrite`` is set.
        ValueError: With ``resume``, if a finished run was made for another request.
    """
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other: resume keeps the runs, overwrite replaces them")
    taken = []
    for setting in settings:
        folder = run_folder(out, label, setting)
        done = folder / RESULT_FILE
        if not done.is_file() and latest_checkpoint(folder / CHECKPOINT_DIR) is None:
            continue
        if overwrite:
            taken.append(folder)
        elif not resume:
            what = "a finished run (result.json)" if done.is_file() else "an unfinished run (checkpoints)"
            raise FileExistsError(f"{folder} holds {what}; pass --resume to load or continue it, --overwrite to "
                                  "replace it, or choose another --out")
        elif done.is_file():
            stored = read_json(done, fix=f"delete {done} and the run is done again").get("request", {})
            changed = changed_keys(stored, request(setting))
            if changed:
                raise ValueError(f"--resume: {folder} holds a finished run of another request ({'; '.join(changed)}); "
                                 "resume with its settings, pass --overwrite to replace it, or choose another --out")
    return taken


def check_backbone_split(checkpoint: str | os.PathLike[str], settings: Sequence[Setting]) -> None:
    """Refuse settings whose test videos a continually pretrained checkpoint has read (JIGSAWS folds).

    A stage-2 artifact or ``pecop pretrain`` run folder (``stage2.json``) records its target, and so
    does the metadata of its ``adapters/`` folder; other checkpoints (Kinetics, stage 1, HPT files,
    ``none``) carry no target and pass.

    Raises:
        ValueError: See :func:`~pecop_lib.pretrain.targets.check_evaluation_split`.
    """
    from pecop_lib.models.adapter_checkpoint import CONFIG_FILE, read_adapter_config
    from pecop_lib.pretrain.artifacts import STAGE2_RECORD
    from pecop_lib.pretrain.stage2_artifact import load_stage2

    source = Path(checkpoint)
    if (source / STAGE2_RECORD).is_file():
        spec = load_stage2(source).spec
        target = (spec.dataset, spec.task, spec.fold)
    elif (source / CONFIG_FILE).is_file() and "stage2_key" in (meta := read_adapter_config(source)["metadata"]):
        # adapters written before stage 2 had a fold: JIGSAWS then always read fold 0's training split
        target = (meta["dataset"], meta["task"], meta.get("fold", first_fold(meta["dataset"])))
    else:
        return
    for setting in settings:
        check_evaluation_split(target, setting.dataset, setting.task, setting.fold)


def finetune_command(
    cfg: Config,
    *,
    head: str,
    dataset: str,
    task: str | None,
    fold: int | None,
    backbone_checkpoint: str,
    out: str | os.PathLike[str],
    base_weights: str | None = None,
    data_root: str | os.PathLike[str] | None = None,
    label: str | None = None,
    overwrite: bool = False,
    run: RunContext | None = None,
    keep_checkpoints: bool = False,
) -> dict[str, Any]:
    """``pecop finetune``: one head on one dataset (JIGSAWS: one fold, or all four) from a config.

    Reads the ``finetune_*``, ``model_*``, ``data_*`` and ``train_*`` keys of ``cfg``. The backbone
    is loaded (and checked) before anything trains; see
    :func:`~pecop_lib.finetune.load_finetune_backbone` for what ``backbone_checkpoint`` may be.
    A backbone continually pretrained for one JIGSAWS fold is refused for the task's other folds
    (:func:`check_backbone_split`): their test trials were its pretraining videos.

    ``out`` is held for the whole command (:func:`~pecop_lib.run_lock.run_lock`); earlier runs in it are
    replaced only with ``overwrite``, reused or continued only with ``run.resume`` (:func:`check_replacing`).
    ``run`` defaults to the config's :class:`~pecop_lib.train.context.RunContext` (no resume). Each finished run
    keeps its exported models and drops its trainer checkpoints unless ``keep_checkpoints``.

    Returns:
        The metrics written to ``out/metrics.json``: the backbone, one summary per run and, for
        JIGSAWS, the fold aggregation.

    Raises:
        ValueError, FileNotFoundError, WeightsMismatchError: On bad arguments, before training.
        FileExistsError: If ``out`` holds runs and neither ``resume`` nor ``overwrite`` is set.
        RunFolderLockedError: If another live run holds ``out``.
    """
    from pecop_lib.finetune.backbone import load_finetune_backbone
    from pecop_lib.finetune.report import aggregate_folds, official_protocol
    from pecop_lib.outputs import write_metrics
    from pecop_lib.pretrain.pipeline import synthetic_root

    folds: Sequence[int | None] = [fold] if fold is not None else dataset_record(dataset).folds or [None]
    settings = [Setting(head, dataset, task, f) for f in folds]
    if str(backbone_checkpoint).lower() != "none":
        check_backbone_split(backbone_checkpoint, settings)
    options = FinetuneOptions.from_config(cfg)
    weights = base_weights or cfg.model_weights or None

    def factory(_: Setting) -> Backbone:
        return load_finetune_backbone(cfg.model_backbone, backbone_checkpoint, base_weights=weights,
                                      bn_eps=cfg.model_bn_eps, width=cfg.model_width, seed=cfg.seed)[0]

    _, description = load_finetune_backbone(cfg.model_backbone, backbone_checkpoint, base_weights=weights,
                                            bn_eps=cfg.model_bn_eps, width=cfg.model_width, seed=cfg.seed)  # fail before training
    run = run_context(cfg, run)
    context = run.process
    if data_root is None:
        data_root = synthetic_root(cfg, context)
    name = label or ("random-init" if str(backbone_checkpoint).lower() == "none" else Path(backbone_checkpoint).name)
    clip_frames = cfg.data_clip_frames or None
    with run_lock(out, enabled=context.is_main):
        replaced = check_replacing(out, name, settings, lambda s: run_request(
            s, name, options, seed=cfg.seed, crop=cfg.data_crop_size, clip_frames=clip_frames),
            resume=run.resume, overwrite=overwrite)
        if context.is_main:
            for folder in replaced:
                shutil.rmtree(folder)
        context.barrier()
        results = run_settings(settings, {name: factory}, data_root, options, out=out, crop=cfg.data_crop_size,
                               clip_frames=clip_frames, run=run, keep_checkpoints=keep_checkpoints)[name]
        metrics: dict[str, Any] = {"backbone": description, "label": name, "runs": [r.summary() for r in results]}
        record = dataset_record(dataset)
        if record.folds:
            metrics[record.key] = {"folds": [r.setting.fold for r in results],
                                   "protocol": official_protocol(results[0]), **aggregate_folds(results)}
        if context.is_main:
            write_metrics(out, metrics, preset=cfg.preset)
    return metrics


def comparison_backbones(
    cfg: Config,
    settings: Sequence[Setting],
    *,
    data_root: str | os.PathLike[str] | None = None,
    run: RunContext | None = None,
) -> dict[str, BackboneFactory]:
    """The two backbones of the "with and without PECoP" comparison, load-or-train.

    ``Dom-G``: the domain-general backbone as it is (stage 1, or real Kinetics weights when
    ``cfg.model_weights`` is set; no continual pretraining). ``PECoP``: the same backbone with
    3D-Adapters trained by the configured pretext (VSPP) on the unlabeled training videos of each
    setting's dataset and task (JIGSAWS: of the setting's fold, i.e. the other three folds' trials, so
    each fold has its own PECoP artifact). Both come from the pretraining artifact cache
    (:func:`pecop_lib.pretrain.pipeline.pretrained_backbone`): trained on first use, loaded afterwards.

    Args:
        cfg: Resolved config.
        settings: The runs' data (one PECoP artifact per dataset, task and fold).
        data_root: Folder holding the datasets (default: the synthetic world).
        run: How a pretraining executes (default: the config's run context).

    Returns:
        ``{"Dom-G": factory, "PECoP": factory}``; a factory builds a fresh backbone for a setting.
    """
    from pecop_lib.pretrain.pipeline import pretrained_backbone

    artifacts = {
        (strategy, s.dataset, s.task, s.fold): pretrained_backbone(
            cfg, strategy=strategy, dataset=s.dataset, task=s.task, fold=s.fold, data_root=data_root, run=run)
        for s in settings for strategy in ("dom_g", "pecop")
    }
    return {label: (lambda s, strategy=strategy: artifacts[(strategy, s.dataset, s.task, s.fold)].build())
            for label, strategy in (("Dom-G", "dom_g"), ("PECoP", "pecop"))}
