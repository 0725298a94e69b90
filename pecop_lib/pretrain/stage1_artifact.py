"""The stage-1 artifact (:func:`stage1_backbone`): the domain-general backbone, supervised on the synthetic
Kinetics-style action set, standing in for Kinetics-400 weights, loaded when cached (or shipped with the
package for the ``course`` preset) and trained (or resumed) when not. Folder
``stage1-<backbone>-<label>-seed<S>-<key>/`` with ``model.safetensors`` (the backbone and its action
classifier, ``pecop_lib`` layout) and ``stage1.json``."""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from pecop_lib.atomic import atomic_path, atomic_write_json, read_json
from pecop_lib.config import Config
from pecop_lib.data.formats.kinetics import KineticsActions
from pecop_lib.data.synthetic.actions import TIMING_CLASSES
from pecop_lib.data.synthetic.world import actions_identity
from pecop_lib.models.adapters import AdapterConfig
from pecop_lib.models.backbone import Backbone
from pecop_lib.models.build import build_backbone
from pecop_lib.pretrain.artifacts import (
    CURRICULUM_DIR,
    SHIPPED_STAGE1,
    STAGE1_RECORD,
    WEIGHTS_FILE,
    BackboneSource,
    backbone_options,
    finish_run,
    has_checkpoint,
    pretrain_store,
    reset_peak_memory,
    run_info,
)
from pecop_lib.pretrain.general import action_accuracy, domain_general_pretrain
from pecop_lib.store import agreed, artifact_name, digest, replace_folder
from pecop_lib.train.context import RunContext

# --------------------------------------------------------------------------------------------
# stage 1


@dataclass(frozen=True)
class Stage1Spec:
    """Everything that decides the stage-1 weights, besides the action set itself.

    Attributes:
        backbone: ``"i3d"`` or ``"r3d18"``.
        clip_len, crop: Clip frames and crop side.
        epochs, batch_size, lr, momentum, weight_decay: The optimisation, cosine annealing to 0.
        optimizer: ``"sgd"`` (momentum) or ``"adam"``.
        pool, bn_eps, width: Backbone options (``width``: I3D channel multiplier).
        seed: Initialisation, data order and augmentation draws.
        curriculum_epochs: Epochs on the constant-pace classes first (the synthetic set's
            :data:`~pecop_lib.data.synthetic.actions.TIMING_CLASSES` left out, own cosine schedule),
            before ``epochs`` on every class; 0: no curriculum.
    """

    backbone: str = "i3d"
    clip_len: int = 32
    crop: int = 112
    epochs: int = 4
    batch_size: int = 8
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    optimizer: str = "sgd"
    pool: str = "adaptive"
    bn_eps: float = 1e-5
    width: float = 1.0
    seed: int = 0
    curriculum_epochs: int = 0

    def options(self) -> dict[str, Any]:
        """Backbone constructor options."""
        return backbone_options(self.backbone, pool=self.pool, bn_eps=self.bn_eps, width=self.width)


@dataclass(frozen=True)
class Stage1Artifact:
    """A stage-1 backbone on disk.

    Attributes:
        folder: The artifact folder.
        record: The contents of ``stage1.json`` (spec, key, data, history, ``val_acc``, timings).
        trained: ``True`` if this call trained (or finished) it, ``False`` if it was loaded.
    """

    folder: Path
    record: dict[str, Any]
    trained: bool

    @property
    def spec(self) -> Stage1Spec:
        """The settings it was trained with."""
        return Stage1Spec(**self.record["spec"])

    @property
    def source(self) -> BackboneSource:
        """The artifact as a stage-2 starting point."""
        return BackboneSource("stage1", self.spec.backbone, self.spec.options(), str(self.folder / WEIGHTS_FILE),
                              self.record["key"])

    def step_curves(self) -> dict[str, list[dict[str, Any]]]:
        """Per-step training records by phase, numbered on one axis (curriculum first, when there was one).

        Returns:
            ``{"constant-pace classes": steps, "all classes": steps}`` (the second's ``"step"`` continues
            the first's), or ``{"stage 1": steps}`` without a curriculum; for
            :func:`~pecop_lib.viz.plot_pretext_curves`.
        """
        steps = self.record["history"]["steps"]
        curriculum = self.record.get("curriculum")
        if not curriculum:
            return {"stage 1": steps}
        first = curriculum["history"]["steps"]
        offset = max((s["step"] for s in first), default=0)
        return {"constant-pace classes": first, "all classes": [{**s, "step": s["step"] + offset} for s in steps]}

    def build(self, adapters: bool | AdapterConfig = False, *, seed: int | None = None) -> Backbone:
        """The trained backbone (without its action classifier), optionally with fresh adapters."""
        return self.source.build(adapters, seed=seed)

    def classifier(self) -> Backbone:
        """The trained backbone *with* its action classifier (strict loading), for evaluation."""
        spec = self.spec
        model = build_backbone(spec.backbone, num_classes=len(self.record["data"]["classes"]), **spec.options())
        model.load_state_dict(load_file(str(self.folder / WEIGHTS_FILE)), strict=True)
        return model

    def validation_accuracy(self, actions_root: str | os.PathLike[str], *, device: str | torch.device = "auto",
                            batch_size: int = 16) -> float:
        """Top-1 accuracy on the ``val`` split of an action set, measured now (held out from training).

        Raises:
            ValueError: If the action set's classes differ from the ones the backbone was trained on.
        """
        spec = self.spec
        val_set = KineticsActions(actions_root, "val", clip_len=spec.clip_len, crop=spec.crop, seed=spec.seed)
        if val_set.classes != self.record["data"]["classes"]:
            raise ValueError(f"{actions_root} has classes {val_set.classes}, the backbone was trained on "
                             f"{self.record['data']['classes']}")
        return action_accuracy(self.classifier(), val_set, batch_size=batch_size, device=device)


def stage1_key(spec: Stage1Spec, actions_root: str | os.PathLike[str]) -> str:
    """Cache key of a stage-1 run: its settings and the action set.

    A generated synthetic action set is identified by its content (generator version, seed and
    sizes: :func:`~pecop_lib.data.synthetic.world.actions_identity`), so the key is the same on
    every machine and a shipped checkpoint (:data:`SHIPPED_STAGE1`) can match it; any other action
    set by its resolved path. ``curriculum_epochs`` enters the key only when set, so the keys of the
    artifacts cached before it existed stay valid.
    """
    settings = {k: v for k, v in asdict(spec).items() if not (k == "curriculum_epochs" and v == 0)}
    return digest(("stage1", settings, actions_identity(actions_root) or str(Path(actions_root).resolve())))


def stage1_folder(spec: Stage1Spec, actions_root: str | os.PathLike[str], *, label: str = "",
                  root: str | os.PathLike[str] | None = None) -> Path:
    """Where :func:`stage1_backbone` keeps the artifact: ``<root>/stage1-<backbone>-<label>-seed<S>-<key>``."""
    return pretrain_store(root).folder(
        artifact_name("stage1", spec.backbone, label, f"seed{spec.seed}", stage1_key(spec, actions_root)))


def load_stage1(folder: str | os.PathLike[str]) -> Stage1Artifact:
    """Open a finished stage-1 artifact.

    Raises:
        FileNotFoundError: If the folder holds no ``stage1.json`` (training never finished).
    """
    folder = Path(folder)
    record_path = folder / STAGE1_RECORD
    if not record_path.is_file():
        raise FileNotFoundError(f"{folder} is not a finished stage-1 artifact (no {STAGE1_RECORD})")
    record = read_json(record_path, fix=f"delete the folder {folder} and it is trained again")
    return Stage1Artifact(folder, record, trained=False)


def train_stage1(
    spec: Stage1Spec,
    actions_root: str | os.PathLike[str],
    folder: str | os.PathLike[str],
    run: RunContext = RunContext(),
    *,
    keep_checkpoints: bool = False,
) -> Stage1Artifact:
    """Train stage 1 into ``folder`` (see :func:`stage1_backbone`, which also reuses finished artifacts).

    Args:
        spec: The settings.
        actions_root: The Kinetics-style action set (e.g. ``world["Kinetics-synth"]``).
        folder: Output folder: trainer checkpoints and metrics, ``model.safetensors``, ``stage1.json``.
        run: How it executes (:class:`~pecop_lib.train.context.RunContext`; its seed is replaced by
            ``spec.seed``); ``run.resume`` continues from the newest checkpoints in ``folder`` (and its
            curriculum phase's).
        keep_checkpoints: Keep the trainer checkpoints after success (they hold the optimiser too).

    Returns:
        The artifact (``trained=True``).
    """
    folder = Path(folder)
    run = run.but(seed=spec.seed)
    context = run.process
    train_set = KineticsActions(actions_root, "train", clip_len=spec.clip_len, crop=spec.crop, seed=spec.seed)
    val_set = KineticsActions(actions_root, "val", clip_len=spec.clip_len, crop=spec.crop, seed=spec.seed)
    backbone = build_backbone(spec.backbone, num_classes=len(train_set.classes), seed=spec.seed, **spec.options())
    reset_peak_memory(context)
    phases = [(train_set, spec.epochs, folder)]
    if spec.curriculum_epochs:
        phases.insert(0, (train_set.leave_out(TIMING_CLASSES), spec.curriculum_epochs, folder / CURRICULUM_DIR))
    results = [domain_general_pretrain(
        backbone, data, epochs=epochs, batch_size=spec.batch_size, lr=spec.lr, momentum=spec.momentum,
        weight_decay=spec.weight_decay, optimizer=spec.optimizer, run_dir=run_dir,
        # a finished phase loads and trains 0 epochs
        run=run.but(resume=run.resume and agreed(has_checkpoint(run_dir), context)),
    ) for data, epochs, run_dir in phases]
    result = results[-1]
    record = {
        "stage": 1,
        "key": stage1_key(spec, actions_root),
        "spec": asdict(spec),
        "data": {"actions_root": str(Path(actions_root).resolve()), "classes": train_set.classes,
                 "train_clips": len(train_set), "val_clips": len(val_set)},
        "history": {"epochs": result.history.epochs, "steps": result.history.steps},
        **({"curriculum": {"left_out": list(TIMING_CLASSES), "train_clips": len(phases[0][0]),
                           "history": {"epochs": results[0].history.epochs, "steps": results[0].history.steps},
                           "seconds": results[0].seconds}} if spec.curriculum_epochs else {}),
        "seconds": sum(r.seconds for r in results),
        "val_acc": action_accuracy(backbone, val_set, batch_size=spec.batch_size, device=context.device),
        "chance_acc": 1 / len(train_set.classes),
        **run_info(context, run.precision),
    }
    if context.is_main:
        state = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
        with atomic_path(folder / WEIGHTS_FILE) as tmp:
            save_file(state, str(tmp), metadata={"format": "pecop_lib.stage1/1", "key": record["key"]})
        atomic_write_json(folder / STAGE1_RECORD, record)
    finish_run(folder, context, keep_checkpoints)
    return Stage1Artifact(folder, context.all_gather_object(record)[0], trained=True)


def shipped_stage1(key: str, *, shipped: str | os.PathLike[str] = SHIPPED_STAGE1) -> Path | None:
    """The shipped stage-1 artifact folder whose key is ``key``, or ``None``."""
    folder = Path(shipped)
    matches = sorted(p for p in folder.glob(f"stage1-*-{key}") if (p / STAGE1_RECORD).is_file()) if folder.is_dir() else []
    return matches[0] if matches else None


def stage1_backbone(
    spec: Stage1Spec,
    actions_root: str | os.PathLike[str],
    *,
    label: str = "",
    root: str | os.PathLike[str] | None = None,
    force: bool = False,
    run: RunContext = RunContext(),
) -> Stage1Artifact:
    """The stage-1 backbone for ``spec``: loaded if a finished artifact exists, else trained (or resumed).

    Args:
        spec: The settings (:func:`stage1_spec` reads them from a config).
        actions_root: The Kinetics-style action set folder.
        label: Readable part of the folder name (e.g. the preset).
        root: Parent folder of the artifacts instead of ``cache_dir()/pretrain``.
        force: Retrain even if a finished artifact exists.
        run: How a training executes (its ``resume`` is decided here: an unfinished artifact resumes).

    Returns:
        The artifact; ``artifact.trained`` says whether this call trained it. A shipped artifact
        with the same key (:data:`SHIPPED_STAGE1`, e.g. the ``course`` preset's) is copied into the
        cache instead of training; its record says so (``"shipped"``).
    """
    folder = stage1_folder(spec, actions_root, label=label, root=root)
    context = run.process

    def finished(path: Path) -> bool:
        return (path / STAGE1_RECORD).is_file()

    shipped = None if force or agreed(finished(folder), context) else shipped_stage1(stage1_key(spec, actions_root))
    if shipped is not None:  # replaces an unfinished training run of the same key too
        if context.is_main:
            replace_folder(folder, lambda tmp: shutil.copytree(shipped, tmp))
        context.barrier()
    return pretrain_store(root).load_or_run(
        folder, finished=finished, load=load_stage1,
        run=lambda resume: train_stage1(spec, actions_root, folder, run.but(resume=resume)),
        resumable=lambda path: has_checkpoint(path) or has_checkpoint(path / CURRICULUM_DIR),
        context=context, force=force,
    )


# --------------------------------------------------------------------------------------------
# config -> specs


def stage1_spec(cfg: Config) -> Stage1Spec:
    """Stage-1 settings of a resolved config (``model_*`` and ``pretrain_*`` keys)."""
    return Stage1Spec(
        backbone=cfg.model_backbone, clip_len=cfg.pretrain_clip_len, crop=cfg.data_crop_size,
        epochs=cfg.pretrain_general_epochs, batch_size=cfg.pretrain_general_batch_size, lr=cfg.pretrain_general_lr,
        momentum=cfg.pretrain_momentum, weight_decay=cfg.pretrain_general_weight_decay,
        optimizer=cfg.pretrain_general_optimizer, pool=cfg.pretrain_pool, bn_eps=cfg.model_bn_eps, width=cfg.model_width,
        seed=cfg.seed, curriculum_epochs=cfg.pretrain_general_curriculum_epochs,
    )
