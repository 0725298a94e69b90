"""The stage-2 artifact (:func:`stage2_backbone`): continual pretraining with a pretext task under one
strategy, starting from a :class:`~pecop_lib.pretrain.artifacts.BackboneSource` (a stage-1 artifact, real
Kinetics weights, or random init for ``dom_s``). Folder
``stage2-<strategy>-<pretext>-<target>-<label>-seed<S>-<key>/`` (``<target>``: dataset, task and, for
JIGSAWS, ``fold<K>``: one artifact per test fold) with ``adapters/`` (``pecop``: the adapter-only
checkpoint of :func:`~pecop_lib.models.save_adapter_checkpoint`, with the re-estimated BatchNorm
statistics and the pretext heads), or ``model.safetensors`` (``hpt``, ``hpt_bn``, ``dom_s``: the whole
backbone), or nothing (``dom_g``), and ``stage2.json``."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from pecop_lib.atomic import atomic_path, atomic_write_json, read_json
from pecop_lib.config import OPTIMIZERS, Config
from pecop_lib.data.registry import first_fold
from pecop_lib.data.transforms import RESIZES, official_transform
from pecop_lib.models.adapter_checkpoint import load_adapter_checkpoint, save_adapter_checkpoint
from pecop_lib.models.adapters import AdapterConfig
from pecop_lib.models.backbone import Backbone
from pecop_lib.models.strategies import get_strategy
from pecop_lib.models.weights import load_weights
from pecop_lib.pretrain.artifacts import (
    ADAPTERS_DIR,
    STAGE2_RECORD,
    WEIGHTS_FILE,
    BackboneSource,
    finish_run,
    folder_bytes,
    has_checkpoint,
    pretrain_store,
    reset_peak_memory,
    run_info,
)
from pecop_lib.pretrain.continual import PretrainResult, continual_pretrain
from pecop_lib.pretrain.pretext import PRETEXTS, Sampler, pretext_accuracy, pretext_model
from pecop_lib.pretrain.targets import (
    check_fold,
    check_target,
    heldout_videos,
    official_normal_pace,
    pretraining_videos,
)
from pecop_lib.ssl import PaceSampler, RSPNetSampler, VSPPSampler
from pecop_lib.store import artifact_name, digest, without_added
from pecop_lib.train.context import RunContext

# --------------------------------------------------------------------------------------------
# stage 2


@dataclass(frozen=True)
class Stage2Spec:
    """Everything that decides the stage-2 weights, besides the starting point and the data folder.

    Attributes:
        strategy: ``pecop``, ``hpt``, ``hpt_bn``, ``dom_s`` or ``dom_g``.
        pretext: ``vspp``, ``pace`` (VideoPace) or ``rspnet``.
        dataset, task: The target (:data:`~pecop_lib.pretrain.targets.TARGET_DATASETS`).
        fold: JIGSAWS test fold being evaluated (stage 2 reads the other three folds' trials);
            ``None`` for the other datasets (:func:`~pecop_lib.pretrain.targets.check_fold`).
        clip_len, crop: Clip frames and crop side (PECoP's transform, ``pecop_stage2``, scaled to ``crop``).
        resize: ``bilinear`` (the package's) or ``official`` (cv2's nearest neighbour, rounded centre crop):
            :func:`~pecop_lib.data.transforms.official_transform`.
        epochs, batch_size, lr, optimizer, momentum, weight_decay, cosine_t_max, eta_min, dropout, list_repeat,
            channel_order, color_jitter, bn_mode: The recipe (:func:`~pecop_lib.pretrain.continual.continual_pretrain`).
        vspp_mode, normal_pace, max_speed, num_segments: The VSPP sampler; VideoPace uses
            ``max_speed - 1`` paces, RSPNet its official speed factor 2.
        adapter_reduction, adapter_groups, adapter_init: The 3D-Adapters (``pecop`` only).
        seed: Adapter and head initialisation, data order and every sample draw.
    """

    strategy: str = "pecop"
    pretext: str = "vspp"
    dataset: str = "MTL-AQA"
    task: str | None = None
    fold: int | None = None
    clip_len: int = 32
    crop: int = 112
    epochs: int = 4
    batch_size: int = 8
    lr: float = 1e-3
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    cosine_t_max: int = 22
    eta_min: float = 1e-6
    dropout: float = 0.5
    list_repeat: int = 5
    channel_order: str = "rgb"
    color_jitter: bool = False
    bn_mode: str = "train"
    vspp_mode: str = "official"
    normal_pace: int = 1
    max_speed: int = 5
    num_segments: int = 4
    adapter_reduction: int = 4
    adapter_groups: str = "width"
    adapter_init: str = "official"
    seed: int = 0
    resize: str = "bilinear"

    def __post_init__(self) -> None:
        get_strategy(self.strategy)
        if self.pretext not in PRETEXTS:
            raise ValueError(f"unknown pretext {self.pretext!r}; choose one of {PRETEXTS}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown stage-2 optimizer {self.optimizer!r}; choose one of {OPTIMIZERS} "
                             "(config key pretrain_optimizer)")
        if self.resize not in RESIZES:
            raise ValueError(f"unknown stage-2 resize {self.resize!r}; choose one of {RESIZES} (config key pretrain_resize)")
        check_target(self.dataset, self.task)
        check_fold(self.dataset, self.fold)

    def sampler(self) -> Sampler:
        """The pretext sampler."""
        if self.pretext == "vspp":
            return VSPPSampler(mode=self.vspp_mode, clip_len=self.clip_len, max_speed=self.max_speed,
                               num_segments=self.num_segments, normal_pace=self.normal_pace)
        if self.pretext == "pace":
            return PaceSampler(clip_len=self.clip_len, max_pace=self.max_speed - 1)
        return RSPNetSampler(clip_len=self.clip_len)

    def adapter_config(self) -> AdapterConfig | None:
        """PECoP's adapters for ``pecop``; ``None`` for the other strategies."""
        if not get_strategy(self.strategy).uses_adapters:
            return None
        return AdapterConfig(reduction=self.adapter_reduction, groups=self.adapter_groups, init=self.adapter_init)


@dataclass(frozen=True)
class Stage2Artifact:
    """A stage-2 (continually pretrained) backbone on disk.

    Attributes:
        folder: The artifact folder.
        record: The contents of ``stage2.json`` (spec, key, source, data, history, costs).
        trained: ``True`` if this call trained (or finished) it, ``False`` if it was loaded.
    """

    folder: Path
    record: dict[str, Any]
    trained: bool

    @property
    def spec(self) -> Stage2Spec:
        """The settings it was trained with."""
        return Stage2Spec(**self.record["spec"])

    @property
    def source(self) -> BackboneSource:
        """The starting point."""
        return BackboneSource.from_dict(self.record["source"])

    @property
    def weights_path(self) -> Path | None:
        """``adapters/`` (``pecop``), ``model.safetensors`` (full-model strategies) or ``None`` (``dom_g``)."""
        name = self.record["weights"]
        return self.folder / name if name else None

    def build(self) -> Backbone:
        """The continually pretrained backbone (adapters and BatchNorm statistics restored for ``pecop``)."""
        spec = self.spec
        if spec.strategy == "pecop":
            model = self.source.build(seed=spec.seed)
            load_adapter_checkpoint(model, self.folder / ADAPTERS_DIR)
            return model
        model = self.source.build(seed=spec.seed)
        if self.weights_path is not None:
            load_weights(model, self.weights_path)
        return model

    def pretext_model(self) -> nn.Module:
        """The trained pretext model: the backbone of :meth:`build` with its pretext heads (``pecop`` only).

        Raises:
            ValueError: For a strategy whose artifact keeps no pretext heads (only ``pecop`` stores them), or
                stored head tensors that do not fit the pretext's model.
        """
        spec = self.spec
        if spec.strategy != "pecop":
            raise ValueError(f"{self.folder}: a {spec.strategy!r} artifact keeps the backbone only; its pretext "
                             "heads are stored by 'pecop' runs")
        backbone = self.source.build(seed=spec.seed)
        report = load_adapter_checkpoint(backbone, self.folder / ADAPTERS_DIR)
        model = pretext_model(backbone, spec.sampler(), dropout=spec.dropout)
        state = model.state_dict()
        wrong = sorted(k for k, v in report.extras.items() if k not in state or state[k].shape != v.shape)
        missing = sorted(set(pretext_head_state(model, backbone)) - set(report.extras))
        if wrong or missing:
            raise ValueError(f"{self.folder / ADAPTERS_DIR}: stored pretext heads do not fit the {spec.pretext} model "
                             f"(unknown or mis-shaped {wrong}, missing {missing}); delete the folder to retrain it")
        state.update(report.extras)
        model.load_state_dict(state)
        return model


def stage2_key(spec: Stage2Spec, source: BackboneSource, target_root: str | os.PathLike[str]) -> str:
    """Cache key of a stage-2 run: its settings, the starting weights and the target data folder.

    ``fold`` enters the key only when set (JIGSAWS), ``optimizer`` only when it is not the official
    SGD and ``resize`` only when it is not ``bilinear``, so the keys of the artifacts cached before these
    settings existed stay valid.
    """
    settings = without_added(asdict(spec), {"fold": None, "optimizer": "sgd", "resize": "bilinear"})
    return digest(("stage2", settings, source.kind, source.backbone, dict(source.options), source.identity,
                   str(Path(target_root).resolve())))


def _effective_source(spec: Stage2Spec, source: BackboneSource) -> BackboneSource:
    """``dom_s`` starts from random init whatever source is given."""
    if get_strategy(spec.strategy).init == "scratch" and source.kind != "scratch":
        return BackboneSource("scratch", source.backbone, dict(source.options))
    return source


def stage2_folder(spec: Stage2Spec, source: BackboneSource, target_root: str | os.PathLike[str], *, label: str = "",
                  root: str | os.PathLike[str] | None = None) -> Path:
    """Where :func:`stage2_backbone` keeps the artifact: ``<root>/stage2-<strategy>-<pretext>-<target>-<label>-seed<S>-<key>``.

    ``<target>`` is the dataset, its task and, for JIGSAWS, ``fold<K>`` (e.g. ``JIGSAWS-Suturing-fold1``).
    """
    source = _effective_source(spec, source)
    target = "-".join([spec.dataset] + ([spec.task] if spec.task else []) +
                      ([f"fold{spec.fold}"] if spec.fold is not None else []))
    return pretrain_store(root).folder(artifact_name("stage2", spec.strategy, spec.pretext, target, label,
                                                     f"seed{spec.seed}", stage2_key(spec, source, target_root)))


def load_stage2(folder: str | os.PathLike[str]) -> Stage2Artifact:
    """Open a finished stage-2 artifact.

    Raises:
        FileNotFoundError: If the folder holds no ``stage2.json`` (training never finished).
    """
    folder = Path(folder)
    record_path = folder / STAGE2_RECORD
    if not record_path.is_file():
        raise FileNotFoundError(f"{folder} is not a finished stage-2 artifact (no {STAGE2_RECORD})")
    record = read_json(record_path, fix=f"delete the folder {folder} and it is trained again")
    spec = record.get("spec")
    if isinstance(spec, dict) and "fold" not in spec:
        # written before stage 2 had a fold: JIGSAWS stage 2 then always read fold 0's training split
        spec["fold"] = first_fold(spec.get("dataset"))
    return Stage2Artifact(folder, record, trained=False)


def pretext_head_state(model: nn.Module, backbone: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters of a pretext model that are not the backbone's (the heads), as CPU copies."""
    own = {id(p) for p in backbone.parameters()}
    return {n: p.detach().cpu().contiguous().clone() for n, p in model.named_parameters()
            if p.requires_grad and id(p) not in own}


def _write_stage2_weights(folder: Path, spec: Stage2Spec, backbone: Backbone, result: PretrainResult,
                          key: str) -> str | None:
    """Write the trained weights (rank 0); return their name inside ``folder``."""
    if result.model is None:
        return None
    if spec.strategy == "pecop":
        save_adapter_checkpoint(backbone, folder / ADAPTERS_DIR, strategy=spec.strategy,
                                heads=pretext_head_state(result.model, backbone) or None,
                                metadata={"stage2_key": key, "pretext": spec.pretext, "dataset": spec.dataset,
                                          "task": spec.task, "fold": spec.fold, "epochs": spec.epochs})
        return ADAPTERS_DIR
    state = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": "pecop_lib.stage2/1", "key": key, "strategy": spec.strategy})
    return WEIGHTS_FILE


def train_stage2(
    spec: Stage2Spec,
    source: BackboneSource,
    target_root: str | os.PathLike[str],
    folder: str | os.PathLike[str],
    run: RunContext = RunContext(),
    *,
    keep_checkpoints: bool = True,
) -> Stage2Artifact:
    """Run stage 2 into ``folder`` (see :func:`stage2_backbone`, which also reuses finished artifacts).

    Args:
        spec: The settings.
        source: The starting point (``dom_s`` replaces it by random init).
        target_root: The target dataset's folder (e.g. ``world["MTL-AQA"]``).
        folder: Output folder: trainer checkpoints and metrics, the weights, ``stage2.json``.
        run: How it executes (:func:`~pecop_lib.pretrain.continual.continual_pretrain`; its seed is
            replaced by ``spec.seed``); ``run.resume`` continues from the newest checkpoint in ``folder``.
        keep_checkpoints: Keep the trainer checkpoints after success.

    Returns:
        The artifact (``trained=True``).
    """
    folder = Path(folder)
    source = _effective_source(spec, source)
    run = run.but(seed=spec.seed)
    context = run.process
    videos = pretraining_videos(target_root, spec.dataset, task=spec.task, fold=spec.fold)
    heldout = heldout_videos(target_root, spec.dataset, task=spec.task, fold=spec.fold)
    backbone = source.build(spec.adapter_config() or False, seed=spec.seed)
    key = stage2_key(spec, source, target_root)
    reset_peak_memory(context)
    result = continual_pretrain(
        backbone, videos, spec.sampler(), official_transform("pecop_stage2", train=True, crop=spec.crop, resize=spec.resize),
        strategy=spec.strategy, epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr, optimizer=spec.optimizer,
        momentum=spec.momentum,
        weight_decay=spec.weight_decay, cosine_t_max=spec.cosine_t_max, eta_min=spec.eta_min, dropout=spec.dropout,
        list_repeat=spec.list_repeat, channel_order=spec.channel_order, color_jitter=spec.color_jitter,
        bn_mode=spec.bn_mode, run_dir=folder if spec.strategy != "dom_g" else None, run=run, heldout=heldout,
    )
    sizes = {n: p.numel() for n, p in backbone.named_parameters()}
    head = pretext_head_state(result.model, backbone) if result.model is not None else {}
    record: dict[str, Any] = {
        "stage": 2,
        "key": key,
        "spec": asdict(spec),
        "source": source.to_dict(),
        "data": {"target_root": str(Path(target_root).resolve()), "videos": len(videos),
                 "clips_per_epoch": len(videos) * spec.list_repeat},
        "history": {"epochs": result.history.epochs, "steps": result.history.steps},
        "heldout": {"videos": len(heldout), "split": "test", "epochs": result.heldout},
        "seconds": result.seconds,
        "trainable_backbone_params": sum(sizes[n] for n in result.trainable),
        "head_params": sum(t.numel() for t in head.values()),
        **run_info(context, run.precision),
    }
    if context.is_main:
        folder.mkdir(parents=True, exist_ok=True)
        record["weights"] = _write_stage2_weights(folder, spec, backbone, result, key)
        record["stored_bytes"] = folder_bytes(folder / record["weights"]) if record["weights"] else 0
        atomic_write_json(folder / STAGE2_RECORD, record)
    finish_run(folder, context, keep_checkpoints)
    return Stage2Artifact(folder, context.all_gather_object(record)[0], trained=True)


def stage2_backbone(
    spec: Stage2Spec,
    source: BackboneSource,
    target_root: str | os.PathLike[str],
    *,
    label: str = "",
    root: str | os.PathLike[str] | None = None,
    force: bool = False,
    run: RunContext = RunContext(),
) -> Stage2Artifact:
    """The stage-2 backbone for ``spec`` from ``source``: loaded if finished, else trained (or resumed).

    Args:
        spec: The settings (:func:`stage2_spec` reads them from a config).
        source: The starting point: ``stage1_artifact.source``, :func:`kinetics_source` or
            :func:`scratch_source` (``dom_s`` always starts from random init).
        target_root: The target dataset's folder.
        label: Readable part of the folder name (e.g. the preset).
        root: Parent folder of the artifacts instead of ``cache_dir()/pretrain``.
        force: Retrain even if a finished artifact exists.
        run: How a training executes (its ``resume`` is decided here: an unfinished artifact resumes;
            one checkpoint is kept while it trains, none after).

    Returns:
        The artifact; ``artifact.trained`` says whether this call trained it.
    """
    folder = stage2_folder(spec, source, target_root, label=label, root=root)
    context = run.process
    return pretrain_store(root).load_or_run(
        folder, finished=lambda path: (path / STAGE2_RECORD).is_file(), load=load_stage2,
        run=lambda resume: train_stage2(spec, source, target_root, folder, run.but(keep_last=1, resume=resume),
                                        keep_checkpoints=False),
        resumable=has_checkpoint, context=context, force=force,
    )


def stage2_costs(artifact: Stage2Artifact) -> dict[str, Any]:
    """What a stage-2 run cost (paper Table 2, measured): parameters, time, storage, memory.

    Returns:
        ``{"strategy"`` (paper label), ``"trainable_params"`` (backbone parameters trained: adapters
        for PECoP), ``"head_params"``, ``"epochs"``, ``"seconds"``, ``"seconds_per_epoch"``,
        ``"clips_per_s"``, ``"stored_bytes"`` (what must be kept: the adapter folder for PECoP, the
        backbone otherwise), ``"peak_memory_bytes"`` (GPU only, else ``None``), ``"device_name"}``.
    """
    record = artifact.record
    epochs = record["history"]["epochs"]
    return {
        "strategy": get_strategy(record["spec"]["strategy"]).label,
        "trainable_params": record["trainable_backbone_params"],
        "head_params": record["head_params"],
        "epochs": len(epochs),
        "seconds": record["seconds"],
        "seconds_per_epoch": sum(e["seconds"] for e in epochs) / len(epochs) if epochs else 0.0,
        "clips_per_s": sum(e["samples"] for e in epochs) / max(sum(e["seconds"] for e in epochs), 1e-12) if epochs else 0.0,
        "stored_bytes": record["stored_bytes"],
        "peak_memory_bytes": record["peak_memory_bytes"],
        "device_name": record["device_name"],
    }


def demo_stage2_spec(cfg: Config, *, dataset: str = "MTL-AQA", task: str | None = None,
                     fold: int | None = None) -> Stage2Spec:
    """Notebook 03's demonstration run: PECoP's stage 2 with the preset's own clip length and epochs.

    ``pretrain_demo_clip_len`` and ``pretrain_demo_epochs`` (0: ``pretrain_clip_len`` / ``pretrain_epochs``, the
    recipe every other stage-2 run uses). The ``course`` preset trains its demonstration on 32-frame clips for 10
    epochs, where I3D keeps one time step per VSPP segment, while the comparisons (Table 2, Fig. 5) keep the
    cheaper shared recipe (docs/course.md, section 16). Stage 1 is unaffected.

    Args:
        cfg: The config.
        dataset, task, fold: The target (:func:`stage2_spec`).
    """
    spec = stage2_spec(cfg, strategy="pecop", dataset=dataset, task=task, fold=fold)
    return replace(spec, clip_len=cfg.pretrain_demo_clip_len or spec.clip_len,
                   epochs=cfg.pretrain_demo_epochs or spec.epochs)


def heldout_check(artifact: Stage2Artifact, target_root: str | os.PathLike[str], *, clips_per_video: int = 16,
                  device: str | torch.device = "auto") -> dict[str, float]:
    """Pretext accuracy of a finished ``pecop`` artifact on a large draw of held-out clips, with standard errors.

    The per-epoch held-out curve of a run reads 4 clips per test-split video: on 32 videos an accuracy near 0.4
    has a standard error of 0.04 there. This measurement draws ``clips_per_video`` other clips per video (a seed
    of its own) from the same videos, never trained on, with the run's evaluation transform.

    Args:
        artifact: A finished ``pecop`` stage-2 artifact (VSPP or VideoPace).
        target_root: The target dataset's folder (its test split is read).
        clips_per_video: Clips drawn per test-split video (config ``pretrain_heldout_check_clips``).
        device: Where to run.

    Returns:
        :func:`~pecop_lib.pretrain.pretext.pretext_accuracy`'s values (``"clips"`` included) and, for each
        accuracy ``<name>_acc``, its binomial standard error ``<name>_se`` = sqrt(p (1 - p) / clips).

    Raises:
        ValueError: If the artifact keeps no pretext heads (:meth:`Stage2Artifact.pretext_model`) or the
            target has no test-split videos.
    """
    spec = artifact.spec
    videos = heldout_videos(target_root, spec.dataset, task=spec.task, fold=spec.fold)
    if not videos:
        raise ValueError(f"{target_root}: no test-split videos of {spec.dataset} {spec.task or ''} to measure on")
    transform = official_transform("pecop_stage2", train=True, crop=spec.crop, resize=spec.resize).evaluation()
    values = pretext_accuracy(artifact.pretext_model(), videos, spec.sampler(), transform,
                              clips_per_video=clips_per_video, channel_order=spec.channel_order,
                              batch_size=spec.batch_size, seed=spec.seed + 1, device=device)
    errors = {k.removesuffix("_acc") + "_se": math.sqrt(v * (1 - v) / values["clips"])
              for k, v in values.items() if k.endswith("_acc")}
    return {**values, **errors}


def stage2_spec(cfg: Config, *, strategy: str | None = None, pretext: str | None = None, dataset: str = "MTL-AQA",
                task: str | None = None, fold: int | None = None) -> Stage2Spec:
    """Stage-2 settings of a resolved config.

    Args:
        cfg: The config.
        strategy, pretext: Override ``pretrain_strategy`` / ``pretrain_pretext``.
        dataset, task: The target.
        fold: JIGSAWS test fold being evaluated (required for JIGSAWS, ``None`` otherwise).

    Raises:
        ValueError: On an unknown target, strategy or pretext, or a bad fold
            (:func:`~pecop_lib.pretrain.targets.check_fold`).

    ``pecop`` trains ``pretrain_epochs`` epochs, the full-model strategies ``pretrain_full_epochs``;
    ``pretrain_normal_pace = 0`` means the official value for the target (3 for PD4T gait, else 1).
    """
    strategy = strategy or cfg.pretrain_strategy
    epochs = cfg.pretrain_epochs if get_strategy(strategy).uses_adapters else cfg.pretrain_full_epochs
    check_target(dataset, task)
    return Stage2Spec(
        strategy=strategy, pretext=pretext or cfg.pretrain_pretext, dataset=dataset, task=task, fold=fold,
        clip_len=cfg.pretrain_clip_len, crop=cfg.data_crop_size, epochs=epochs, batch_size=cfg.pretrain_batch_size,
        lr=cfg.pretrain_lr, optimizer=cfg.pretrain_optimizer, momentum=cfg.pretrain_momentum,
        weight_decay=cfg.pretrain_weight_decay,
        cosine_t_max=cfg.pretrain_cosine_t_max, eta_min=cfg.pretrain_eta_min, dropout=cfg.pretrain_dropout,
        list_repeat=cfg.pretrain_list_repeat, channel_order=cfg.pretrain_channel_order,
        color_jitter=cfg.pretrain_color_jitter, bn_mode=cfg.pretrain_bn_mode, vspp_mode=cfg.pretrain_vspp_mode,
        normal_pace=cfg.pretrain_normal_pace or official_normal_pace(dataset, task), max_speed=cfg.pretrain_max_speed,
        num_segments=cfg.pretrain_num_segments, adapter_reduction=cfg.model_adapter_lambda,
        adapter_groups=cfg.model_adapter_groups, adapter_init=cfg.model_adapter_init, seed=cfg.seed,
        resize=cfg.pretrain_resize,
    )
