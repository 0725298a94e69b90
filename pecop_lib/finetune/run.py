"""One fine-tuning run: train a head (and the backbone, per the options) epoch by epoch, evaluate after
every epoch, resume exactly, and report both protocols (see :mod:`pecop_lib.finetune`)."""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pecop_lib.atomic import atomic_write_json, read_json
from pecop_lib.data.registry import dataset_record
from pecop_lib.finetune.backbone import BACKBONE_POOL, set_trainable
from pecop_lib.finetune.data import (
    FinetuneData,
    PairSamples,
    ScoreSamples,
    true_transitions,
    validation_split,
)
from pecop_lib.finetune.evaluation import (
    DISTRIBUTION_SAMPLES,
    Evaluator,
    SplitPrediction,
    epoch_record,
    nan_if_none,
)
from pecop_lib.finetune.export import EXPORT_DIR, run_exporter
from pecop_lib.finetune.model import AQAModel, adam_two_rates, aqa_step
from pecop_lib.finetune.recipes import FinetuneOptions, Setting
from pecop_lib.finetune.results import FinetuneResult, difficulty_baseline, select_epochs
from pecop_lib.heads import (
    FeatureStore,
    windowing_for,
)
from pecop_lib.models.backbone import Backbone
from pecop_lib.train.context import RunContext
from pecop_lib.train.data import epoch_loader
from pecop_lib.train.loop import Trainer
from pecop_lib.train.precision import autocast_dtype
from pecop_lib.train.rng import capture_rng_state, restore_rng_state

EVALUATION_FILE = "evaluation.json"


def _read_evaluation(path: Path, header: dict[str, Any]) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    stored = read_json(path, fix="use a fresh run folder, or delete the file and resume")
    if stored.get("header") != header:
        raise ValueError(
            f"{path} belongs to another run ({stored.get('header')}), not {header}; use a fresh run folder or "
            "resume with the same setting, seed and options"
        )
    return list(stored["epochs"])


def finetune(
    backbone: Backbone,
    setting: Setting,
    data: FinetuneData,
    options: FinetuneOptions = FinetuneOptions(),
    *,
    backbone_label: str = "",
    run_dir: str | os.PathLike[str] | None = None,
    run: RunContext = RunContext(),
    feature_store: FeatureStore | bool = True,
    export: bool = True,
) -> FinetuneResult:
    """Fine-tune a backbone and a head on one setting, evaluating every epoch.

    The backbone is modified in place (trainable flags, BatchNorm mode, weights). Load its
    weights first (:func:`load_finetune_backbone`).

    Args:
        backbone: The backbone (with adapters for a PECoP checkpoint).
        setting: Head, dataset, task, fold.
        data: The setting's splits (:func:`open_finetune_data`).
        options: Run-level settings (:class:`FinetuneOptions`).
        backbone_label: Label recorded with the results.
        run_dir: Folder for the trainer's checkpoints and metrics and ``evaluation.json``;
            ``None`` writes nothing (no resume).
        run: How it executes (:class:`~pecop_lib.train.context.RunContext`): its seed seeds the head
            initialisation, data order, partners, validation split and exemplars; ``run.resume``
            continues from the newest checkpoint in ``run_dir``. Gradient accumulation and the
            checkpoint cadence come from ``options`` (the recipe's accumulation when 0).
        feature_store: When the backbone cannot change during the run (``train_backbone="frozen"``
            and a recipe with frozen BatchNorm), the evaluation features of the test and training
            splits are computed once and kept on disk (:class:`~pecop_lib.heads.FeatureStore`,
            keyed by the backbone's state and the data): ``True`` uses the cache folder, a
            store uses its folder, ``False`` encodes the videos at every evaluation.
        export: With ``run_dir``, write the exported models (``run_dir/export``,
            :func:`~pecop_lib.finetune.export.run_exporter`); ``False`` for runs nobody scores with (a study's grid).

    Returns:
        The :class:`FinetuneResult` (also written to ``run_dir/evaluation.json``).

    Raises:
        ValueError: On inconsistent options, a resumed run folder of another setting, or a
            batch size not divisible by the process count.
    """
    started = time.perf_counter()
    recipe = setting.recipe
    hyper = options.resolved(recipe)
    epochs, batch_size = int(hyper["epochs"]), int(hyper["batch_size"])
    context, seed, precision = run.process, run.seed, run.precision
    if batch_size % context.world_size:
        raise ValueError(f"batch_size {batch_size} is not divisible by the {context.world_size} processes")
    clip_frames = data.train.clip_frames
    windowing = windowing_for(recipe.windowing, clip_frames)
    train_idx, val_idx = validation_split(data, setting, options.val_fraction, seed)
    set_trainable(backbone, options.train_backbone)
    stored = options.features == "stored"
    backbone.bn_mode = "frozen" if stored else recipe.bn_mode  # stored: the backbone never sees a training batch
    backbone.pool = BACKBONE_POOL
    fixed_backbone = options.train_backbone == "frozen" and backbone.bn_mode == "frozen"
    store = None
    if fixed_backbone and feature_store is not False:
        store = feature_store if isinstance(feature_store, FeatureStore) else FeatureStore()
    if stored and store is None:
        raise ValueError("features='stored' needs a feature store (feature_store=True or a FeatureStore)")

    kind, dataset_key = setting.kind, dataset_record(setting.dataset).key
    values = kind.values(data.train.records, dataset_key)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = kind.build(backbone.feature_dim, windowing, dataset_key, decode=options.decode,
                          values=values[train_idx], groups=[data.train.records[i].group for i in train_idx],
                          segment_pairs=options.segment_pairs)
    model = AQAModel(backbone, head, kind, windowing)
    optimizer = adam_two_rates(model, lr_backbone=float(hyper["lr_backbone"]), lr_head=float(hyper["lr_head"]),
                               weight_decay=recipe.weight_decay)
    train_features = None
    if stored:  # the training videos' features, read with the test transform, computed once
        was_training = backbone.training
        backbone.to(context.device).eval()
        train_features = store.window_features(  # type: ignore[union-attr]
            backbone, data.reference, windowing, maps=kind.maps,
            amp_dtype=autocast_dtype(precision, context.device), batch_size=options.eval_batch_size,
            show_progress=run.show_progress)
        backbone.train(was_training)
    samples: Dataset = (PairSamples(data.train, train_idx, values, kind, epochs=epochs, seed=seed,
                                    features=train_features)
                        if kind.pairs else ScoreSamples(data.train, train_idx, kind, features=train_features))
    loader = epoch_loader(samples, batch_size // context.world_size, seed=seed, num_workers=run.num_workers,
                          rank=context.rank, world_size=context.world_size, pin_memory=context.device.type == "cuda")
    folder = Path(run_dir) if run_dir is not None else None
    # the head, the samples and the evaluator draw from ``seed`` themselves: the loop leaves the global generators
    loop = run.but(grad_accum_steps=options.grad_accum_steps, checkpoint_every_steps=options.checkpoint_every_steps)
    grad_accum_steps = loop.accum_steps(recipe.grad_accum_steps)
    trainer = Trainer(model, aqa_step, optimizer, run_dir=folder, desc=setting.label,
                      **loop.trainer_options(recipe.grad_accum_steps, seed_globals=False))

    test_true = data.test.scores()
    val_true = data.train.scores()[val_idx]
    queries = [(data.test, i) for i in range(len(data.test))] + [(data.reference, i) for i in val_idx]
    evaluator = Evaluator(model, setting, queries, data.reference, train_idx, values[train_idx], options, seed, context,
                           autocast_dtype(precision, context.device), min(DISTRIBUTION_SAMPLES, len(test_true)),
                           store=store, split_at=len(test_true))
    exporter = None
    if folder is not None and export and context.is_main:
        exporter = run_exporter(folder / EXPORT_DIR, model, setting, data, options, train_idx, values, evaluator,
                                backbone_label=backbone_label, seed=seed,
                                amp_dtype=autocast_dtype(precision, context.device), validation=bool(val_idx))
    test_transitions = None
    if kind.steps:
        test_transitions = np.stack([true_transitions(data.test, i) for i in range(len(data.test))])
    # what decides the per-epoch records; the epoch count may grow on resume (TSA's teacher-forcing window follows it)
    header = {"setting": setting.label, "seed": seed,
              "options": {k: v for k, v in asdict(options).items() if k not in ("epochs", "bootstrap", "scope")},
              "hyper": {k: v for k, v in hyper.items() if k != "epochs"},
              "test_ids": [r.id for r in data.test.records], "val_ids": [data.train.records[i].id for i in val_idx]}
    eval_path = folder / EVALUATION_FILE if folder is not None else None

    def evaluate(epoch: int) -> dict[str, Any]:
        state = capture_rng_state()  # evaluation must not move the training generators (exact resume)
        try:
            prediction = evaluator(epoch)
        finally:
            restore_rng_state(state)
        test = SplitPrediction(prediction.pred[: len(test_true)],
                               None if prediction.transitions is None else prediction.transitions[: len(test_true)],
                               prediction.distributions)
        val_pred = prediction.pred[len(test_true):] if val_idx else None
        loss = trainer.history.epochs[-1]["loss"] if trainer.history.epochs else float("nan")
        return epoch_record(epoch, loss, test, test_true, val_pred, val_true if val_idx else None, test_transitions)

    records: list[dict[str, Any]] = []
    if run.resume:
        if eval_path is None:
            raise ValueError("run.resume needs a run_dir")
        records = _read_evaluation(eval_path, header)
        trainer.fit(loader, 0, resume=True)  # load the newest checkpoint, train nothing
    done = len(trainer.history.epochs)
    if len(records) > done or len(records) < done - 1:
        raise ValueError(
            f"{eval_path} holds {len(records)} evaluated epochs but the checkpoint is at epoch {done}; the "
            "evaluation of earlier epochs is lost: start the run again without resume"
        )

    def save() -> None:
        if eval_path is not None and context.is_main:
            atomic_write_json(eval_path, {"header": header, "epochs": records})

    if len(records) == done - 1:  # stopped between the checkpoint and its evaluation
        records.append(evaluate(done))
        save()
        if exporter is not None:
            exporter.update(records)
    for epoch in range(done, epochs):
        trainer.fit(loader, epoch + 1, of=epochs)
        records.append(evaluate(epoch + 1))
        save()
        if exporter is not None:
            exporter.update(records)
        if run.show_progress and context.is_main:
            r = records[-1]
            print(f"{setting.label} epoch {epoch + 1}/{epochs}: test rho {nan_if_none(r['test_rho']):.4f}, val rho "
                  f"{nan_if_none(r['val_rho']):.4f}, test L2 {r['test_l2']:.4g}", flush=True)
    if not records:
        raise ValueError(f"no epoch was trained or evaluated (epochs={epochs})")
    reported = select_epochs(records, test_true, recipe.official_protocol, validation=bool(val_idx),
                             bootstrap=options.bootstrap, seed=seed)
    if exporter is not None:
        exporter.finish(reported)
    hyper_out = {**hyper, "weight_decay": recipe.weight_decay, "grad_accum_steps": grad_accum_steps,
                 "bn_mode": recipe.bn_mode, "train_backbone": options.train_backbone, "decode": options.decode,
                 "windows": windowing.num_windows, "clip_frames": windowing.clip_frames, "recipe": recipe.source,
                 "train_videos": len(train_idx)}
    targets = None
    if kind.distributions:
        targets = np.stack([kind.path_targets(r) for r in data.test.records[:DISTRIBUTION_SAMPLES]])
    baseline = difficulty_baseline([data.train.records[i] for i in train_idx], data.test.records)
    difficulty = [r.difficulty for r in data.test.records]
    test_difficulty = None if any(d is None for d in difficulty) else np.asarray(difficulty, dtype=np.float64)
    return FinetuneResult(setting, backbone_label, records, test_true, [r.id for r in data.test.records], val_true,
                          reported, hyper_out, trainer.history, time.perf_counter() - started, test_transitions, targets,
                          baseline, test_difficulty)
