"""Load-or-train the two pretraining stages, so that every notebook can run on its own.

Notebooks 03-08 (and ``pecop pretrain``) all need a pretrained backbone. Training one takes
minutes to hours, so each stage's result is an *artifact*: a folder keyed by everything that
decides its weights, reused when it exists and trained (or resumed) when it does not.

* **Stage 1** (:func:`stage1_backbone`): the domain-general backbone, supervised on the synthetic
  Kinetics-style action set, standing in for Kinetics-400 weights. Folder
  ``stage1-<backbone>-<label>-seed<S>-<key>/`` with ``model.safetensors`` (the backbone and its
  action classifier, ``pecop_lib`` layout) and ``stage1.json``.
* **Stage 2** (:func:`stage2_backbone`): continual pretraining with a pretext task under one
  strategy, starting from a :class:`BackboneSource` (a stage-1 artifact, real Kinetics weights, or
  random init for ``dom_s``). Folder ``stage2-<strategy>-<pretext>-<target>-<label>-seed<S>-<key>/``
  (``<target>``: dataset, task and, for JIGSAWS, ``fold<K>``: one artifact per test fold) with
  ``adapters/`` (``pecop``: the adapter-only checkpoint of
  :func:`~pecop_lib.models.save_adapter_checkpoint`, with the re-estimated BatchNorm statistics and
  the pretext heads), or ``model.safetensors`` (``hpt``, ``hpt_bn``, ``dom_s``: the whole
  backbone), or nothing (``dom_g``), and ``stage2.json``.

The JSON record is written last: a folder without it is incomplete, and the next call resumes its
training from the trainer's checkpoints. ``<key>`` is a SHA-256 prefix over the stage's settings
(:class:`Stage1Spec` / :class:`Stage2Spec`), the data folder and, for stage 2, the identity of the
starting weights; ``<label>`` (e.g. the preset name) only makes folder names readable. Device,
precision and the number of processes are recorded but are not part of the key.

Artifacts live under ``pecop_lib.config.cache_dir() / "pretrain"`` unless a ``root`` is given.
Under ``torchrun`` every process trains (DDP), rank 0 writes, and rank 0's view of the cache
decides for all. :func:`stage1_spec` and :func:`stage2_spec` read a :class:`~pecop_lib.config.Config`
(the boundary between presets and the library).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pecop_lib.atomic import atomic_path, atomic_write_json, read_json
from pecop_lib.config import OPTIMIZERS, Config, cache_dir
from pecop_lib.data.formats.kinetics import KineticsActions
from pecop_lib.data.registry import first_fold
from pecop_lib.data.synthetic.actions import TIMING_CLASSES
from pecop_lib.data.synthetic.world import actions_identity
from pecop_lib.data.transforms import official_transform
from pecop_lib.models.adapter_checkpoint import load_adapter_checkpoint, save_adapter_checkpoint
from pecop_lib.models.adapters import AdapterConfig
from pecop_lib.models.backbone import Backbone
from pecop_lib.models.build import build_backbone
from pecop_lib.models.strategies import get_strategy
from pecop_lib.models.weights import load_weights
from pecop_lib.ssl import PaceSampler, RSPNetSampler, VSPPSampler
from pecop_lib.train.checkpoint import LATEST_FILE
from pecop_lib.train.distributed import DistributedContext
from pecop_lib.train.loop import CHECKPOINT_DIR
from pecop_lib.train.pretrain import (
    PRETEXTS,
    PretrainResult,
    Sampler,
    _device,
    action_accuracy,
    continual_pretrain,
    domain_general_pretrain,
)
from pecop_lib.train.targets import (
    check_fold,
    check_target,
    heldout_videos,
    official_normal_pace,
    pretraining_videos,
)

ARTIFACT_ROOT = "pretrain"
"""Sub-folder of ``cache_dir()`` holding the artifacts."""
WEIGHTS_FILE = "model.safetensors"
ADAPTERS_DIR = "adapters"
STAGE1_RECORD = "stage1.json"
CURRICULUM_DIR = "curriculum"
"""Run folder of stage 1's curriculum phase inside its artifact folder (removed with the checkpoints)."""
STAGE2_RECORD = "stage2.json"
SOURCE_KINDS: tuple[str, ...] = ("stage1", "weights", "scratch")
SHIPPED_STAGE1 = Path(__file__).resolve().parent.parent / "assets" / "stage1"
"""Stage-1 artifacts that ship with the package (the ``course`` preset's domain-general backbone,
trained by ``scripts/train_course_stage1.py``): used instead of training when their key matches."""


def backbone_options(backbone: str, *, pool: str = "adaptive", bn_eps: float = 1e-5, width: float = 1.0) -> dict[str, Any]:
    """Constructor options of :func:`~pecop_lib.models.build_backbone` (``bn_eps`` and ``width`` exist for I3D only).

    Raises:
        ValueError: If ``width`` is not 1 for a backbone without a width option.
    """
    if backbone != "i3d" and width != 1.0:
        raise ValueError(f"model_width={width} applies to I3D only; {backbone!r} has one width (set model_width=1)")
    options: dict[str, Any] = {"pool": pool}
    if backbone == "i3d":
        options["bn_eps"] = bn_eps
        if width != 1.0:  # the full width is the default: older artifact records stay valid
            options["width"] = width
    return options


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def settings_key(*parts: Any) -> str:
    """A 12-hex-digit cache key: SHA-256 of the parts as sorted JSON (every load-or-train cache of runs)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


@dataclass(frozen=True)
class BackboneSource:
    """Where the weights of a stage-2 starting point come from, and how to rebuild it.

    Attributes:
        kind: ``"stage1"`` (a stage-1 artifact's ``model.safetensors``), ``"weights"`` (a real
            Kinetics checkpoint of any layout :func:`~pecop_lib.models.load_weights` reads) or
            ``"scratch"`` (random init, ``dom_s``).
        backbone: ``"i3d"`` or ``"r3d18"``.
        options: Constructor options (:func:`backbone_options`).
        path: The weights file (``None`` for ``scratch``).
        identity: What the stage-2 key depends on: the stage-1 key, the file's SHA-256, or ``"scratch"``.
    """

    kind: str
    backbone: str
    options: Mapping[str, Any] = field(default_factory=dict)
    path: str | None = None
    identity: str = "scratch"

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"unknown backbone source kind {self.kind!r}; choose one of {SOURCE_KINDS}")
        if (self.path is None) != (self.kind == "scratch"):
            raise ValueError(f"a {self.kind!r} source {'takes no' if self.kind == 'scratch' else 'needs a'} weights path")

    def build(self, adapters: bool | AdapterConfig = False, *, seed: int | None = None) -> Backbone:
        """The backbone with these weights (strict loading; a stored classifier is dropped).

        Args:
            adapters: Inject adapters (they keep their seeded initialisation).
            seed: Seed of the initialisation (adapters; the whole backbone for ``scratch``).
        """
        model = build_backbone(self.backbone, adapters, seed=seed, **dict(self.options))
        if self.path is not None:
            load_weights(model, self.path)
        return model

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {**asdict(self), "options": dict(self.options)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> BackboneSource:
        """Inverse of :meth:`to_dict`."""
        return cls(**values)


def kinetics_source(path: str | os.PathLike[str], backbone: str = "i3d", *, pool: str = "adaptive",
                    bn_eps: float = 1e-5) -> BackboneSource:
    """A source for real Kinetics weights (stage 1 is skipped); the file is checked by loading it once.

    Raises:
        FileNotFoundError: If the file does not exist.
        WeightsMismatchError: If it does not fit the backbone.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"Kinetics weights {path} do not exist; give the path of model_rgb.pth, "
                                "rgb_imagenet.pt or r3d_18-b3b3357e.pth")
    source = BackboneSource("weights", backbone, backbone_options(backbone, pool=pool, bn_eps=bn_eps), str(path),
                            file_sha256(path))
    source.build()
    return source


def scratch_source(backbone: str = "i3d", *, pool: str = "adaptive", bn_eps: float = 1e-5,
                   width: float = 1.0) -> BackboneSource:
    """A randomly initialised starting point (``dom_s``)."""
    return BackboneSource("scratch", backbone, backbone_options(backbone, pool=pool, bn_eps=bn_eps, width=width))


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
    return settings_key("stage1", settings, actions_identity(actions_root) or str(Path(actions_root).resolve()))


def artifact_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding the artifacts: ``root``, or ``cache_dir()/pretrain``."""
    return Path(root) if root is not None else cache_dir() / ARTIFACT_ROOT


def stage1_folder(spec: Stage1Spec, actions_root: str | os.PathLike[str], *, label: str = "",
                  root: str | os.PathLike[str] | None = None) -> Path:
    """Where :func:`stage1_backbone` keeps the artifact: ``<root>/stage1-<backbone>-<label>-seed<S>-<key>``."""
    parts = ("stage1", spec.backbone, _slug(label), f"seed{spec.seed}", stage1_key(spec, actions_root))
    return artifact_root(root) / "-".join(p for p in parts if p)


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


def _run_info(context: DistributedContext, precision: str) -> dict[str, Any]:
    device = context.device
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": precision,
        "world_size": context.world_size,
        "torch": torch.__version__,
        "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
    }


def _reset_peak_memory(context: DistributedContext) -> None:
    if context.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(context.device)


def _has_checkpoint(folder: Path) -> bool:
    return (folder / CHECKPOINT_DIR / LATEST_FILE).is_file()


def _finish(folder: Path, context: DistributedContext, keep_checkpoints: bool) -> None:
    if context.is_main and not keep_checkpoints:
        shutil.rmtree(folder / CHECKPOINT_DIR, ignore_errors=True)
        shutil.rmtree(folder / CURRICULUM_DIR, ignore_errors=True)
    context.barrier()


def train_stage1(
    spec: Stage1Spec,
    actions_root: str | os.PathLike[str],
    folder: str | os.PathLike[str],
    *,
    device: str | torch.device = "auto",
    precision: str = "auto",
    num_workers: int = 0,
    distributed: DistributedContext | None = None,
    resume: bool = False,
    keep_checkpoints: bool = False,
    show_progress: bool = True,
) -> Stage1Artifact:
    """Train stage 1 into ``folder`` (see :func:`stage1_backbone`, which also reuses finished artifacts).

    Args:
        spec: The settings.
        actions_root: The Kinetics-style action set (e.g. ``world["Kinetics-synth"]``).
        folder: Output folder: trainer checkpoints and metrics, ``model.safetensors``, ``stage1.json``.
        device, precision, num_workers, distributed, show_progress: Training settings.
        resume: Continue from the newest checkpoints in ``folder`` (and its curriculum phase's).
        keep_checkpoints: Keep the trainer checkpoints after success (they hold the optimiser too).

    Returns:
        The artifact (``trained=True``).
    """
    folder = Path(folder)
    context = distributed or DistributedContext(device=_device(device))
    train_set = KineticsActions(actions_root, "train", clip_len=spec.clip_len, crop=spec.crop, seed=spec.seed)
    val_set = KineticsActions(actions_root, "val", clip_len=spec.clip_len, crop=spec.crop, seed=spec.seed)
    backbone = build_backbone(spec.backbone, num_classes=len(train_set.classes), seed=spec.seed, **spec.options())
    _reset_peak_memory(context)
    phases = [(train_set, spec.epochs, folder)]
    if spec.curriculum_epochs:
        phases.insert(0, (train_set.leave_out(TIMING_CLASSES), spec.curriculum_epochs, folder / CURRICULUM_DIR))
    results = [domain_general_pretrain(
        backbone, data, epochs=epochs, batch_size=spec.batch_size, lr=spec.lr, momentum=spec.momentum,
        weight_decay=spec.weight_decay, optimizer=spec.optimizer, run_dir=run_dir, device=context.device,
        precision=precision,
        num_workers=num_workers, seed=spec.seed, distributed=distributed, show_progress=show_progress,
        resume=resume and _decide(context, _has_checkpoint(run_dir)),  # a finished phase loads and trains 0 epochs
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
        **_run_info(context, precision),
    }
    if context.is_main:
        state = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
        with atomic_path(folder / WEIGHTS_FILE) as tmp:
            save_file(state, str(tmp), metadata={"format": "pecop_lib.stage1/1", "key": record["key"]})
        atomic_write_json(folder / STAGE1_RECORD, record)
    _finish(folder, context, keep_checkpoints)
    return Stage1Artifact(folder, context.all_gather_object(record)[0], trained=True)


def shipped_stage1(key: str, *, shipped: str | os.PathLike[str] = SHIPPED_STAGE1) -> Path | None:
    """The shipped stage-1 artifact folder whose key is ``key``, or ``None``."""
    folder = Path(shipped)
    matches = sorted(p for p in folder.glob(f"stage1-*-{key}") if (p / STAGE1_RECORD).is_file()) if folder.is_dir() else []
    return matches[0] if matches else None


def _install_shipped(source: Path, folder: Path) -> None:
    """Copy a shipped artifact into the cache folder (atomically: a temporary sibling, then a rename)."""
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    if folder.exists():  # an unfinished training run of the same key: the shipped result replaces it
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def _decide(context: DistributedContext, finished: bool) -> bool:
    """Rank 0's answer, shared by every process."""
    return bool(context.all_gather_object(finished)[0])


def stage1_backbone(
    spec: Stage1Spec,
    actions_root: str | os.PathLike[str],
    *,
    label: str = "",
    root: str | os.PathLike[str] | None = None,
    force: bool = False,
    device: str | torch.device = "auto",
    precision: str = "auto",
    num_workers: int = 0,
    distributed: DistributedContext | None = None,
    show_progress: bool = True,
) -> Stage1Artifact:
    """The stage-1 backbone for ``spec``: loaded if a finished artifact exists, else trained (or resumed).

    Args:
        spec: The settings (:func:`stage1_spec` reads them from a config).
        actions_root: The Kinetics-style action set folder.
        label: Readable part of the folder name (e.g. the preset).
        root: Parent folder of the artifacts instead of ``cache_dir()/pretrain``.
        force: Retrain even if a finished artifact exists.
        device, precision, num_workers, distributed, show_progress: Training settings.

    Returns:
        The artifact; ``artifact.trained`` says whether this call trained it. A shipped artifact
        with the same key (:data:`SHIPPED_STAGE1`, e.g. the ``course`` preset's) is copied into the
        cache instead of training; its record says so (``"shipped"``).
    """
    folder = stage1_folder(spec, actions_root, label=label, root=root)
    context = distributed or DistributedContext(device=_device(device))
    if not force and _decide(context, (folder / STAGE1_RECORD).is_file()):
        return load_stage1(folder)
    shipped = None if force else shipped_stage1(stage1_key(spec, actions_root))
    if shipped is not None:
        if context.is_main:
            _install_shipped(shipped, folder)
        context.barrier()
        return load_stage1(folder)
    resume = not force and _decide(context, _has_checkpoint(folder) or _has_checkpoint(folder / CURRICULUM_DIR))
    return train_stage1(spec, actions_root, folder, device=context.device, precision=precision, num_workers=num_workers,
                        distributed=distributed, resume=resume, show_progress=show_progress)


# --------------------------------------------------------------------------------------------
# stage 2


@dataclass(frozen=True)
class Stage2Spec:
    """Everything that decides the stage-2 weights, besides the starting point and the data folder.

    Attributes:
        strategy: ``pecop``, ``hpt``, ``hpt_bn``, ``dom_s`` or ``dom_g``.
        pretext: ``vspp``, ``pace`` (VideoPace) or ``rspnet``.
        dataset, task: The target (:data:`~pecop_lib.train.targets.TARGET_DATASETS`).
        fold: JIGSAWS test fold being evaluated (stage 2 reads the other three folds' trials);
            ``None`` for the other datasets (:func:`~pecop_lib.train.targets.check_fold`).
        clip_len, crop: Clip frames and crop side (PECoP's transform, ``core_mtl``, scaled to ``crop``).
        epochs, batch_size, lr, optimizer, momentum, weight_decay, cosine_t_max, eta_min, dropout, list_repeat,
            channel_order, color_jitter, bn_mode: The recipe (:func:`~pecop_lib.train.pretrain.continual_pretrain`).
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

    def __post_init__(self) -> None:
        get_strategy(self.strategy)
        if self.pretext not in PRETEXTS:
            raise ValueError(f"unknown pretext {self.pretext!r}; choose one of {PRETEXTS}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown stage-2 optimizer {self.optimizer!r}; choose one of {OPTIMIZERS} "
                             "(config key pretrain_optimizer)")
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


def stage2_key(spec: Stage2Spec, source: BackboneSource, target_root: str | os.PathLike[str]) -> str:
    """Cache key of a stage-2 run: its settings, the starting weights and the target data folder.

    ``fold`` enters the key only when set (JIGSAWS) and ``optimizer`` only when it is not the official
    SGD, so the keys of the artifacts cached before these settings existed stay valid.
    """
    settings = {k: v for k, v in asdict(spec).items()
                if not (k == "fold" and v is None) and not (k == "optimizer" and v == "sgd")}
    return settings_key("stage2", settings, source.kind, source.backbone, dict(source.options), source.identity,
                        str(Path(target_root).resolve()))


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
    parts = ("stage2", spec.strategy, spec.pretext, _slug(target), _slug(label), f"seed{spec.seed}",
             stage2_key(spec, source, target_root))
    return artifact_root(root) / "-".join(p for p in parts if p)


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


def _bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


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
    *,
    device: str | torch.device = "auto",
    precision: str = "auto",
    compile: bool | str = False,
    grad_accum_steps: int = 1,
    checkpoint_every_steps: int | None = None,
    keep_last: int | None = None,
    num_workers: int = 0,
    distributed: DistributedContext | None = None,
    resume: bool = False,
    keep_checkpoints: bool = True,
    show_progress: bool = True,
) -> Stage2Artifact:
    """Run stage 2 into ``folder`` (see :func:`stage2_backbone`, which also reuses finished artifacts).

    Args:
        spec: The settings.
        source: The starting point (``dom_s`` replaces it by random init).
        target_root: The target dataset's folder (e.g. ``world["MTL-AQA"]``).
        folder: Output folder: trainer checkpoints and metrics, the weights, ``stage2.json``.
        device, precision, compile, grad_accum_steps, checkpoint_every_steps, keep_last, num_workers,
            distributed, show_progress: See :func:`~pecop_lib.train.pretrain.continual_pretrain`.
        resume: Continue from the newest checkpoint in ``folder``.
        keep_checkpoints: Keep the trainer checkpoints after success.

    Returns:
        The artifact (``trained=True``).
    """
    folder = Path(folder)
    source = _effective_source(spec, source)
    context = distributed or DistributedContext(device=_device(device))
    videos = pretraining_videos(target_root, spec.dataset, task=spec.task, fold=spec.fold)
    heldout = heldout_videos(target_root, spec.dataset, task=spec.task, fold=spec.fold)
    backbone = source.build(spec.adapter_config() or False, seed=spec.seed)
    key = stage2_key(spec, source, target_root)
    _reset_peak_memory(context)
    result = continual_pretrain(
        backbone, videos, spec.sampler(), official_transform("core_mtl", train=True, crop=spec.crop),
        strategy=spec.strategy, epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr, optimizer=spec.optimizer,
        momentum=spec.momentum,
        weight_decay=spec.weight_decay, cosine_t_max=spec.cosine_t_max, eta_min=spec.eta_min, dropout=spec.dropout,
        list_repeat=spec.list_repeat, channel_order=spec.channel_order, color_jitter=spec.color_jitter,
        bn_mode=spec.bn_mode, run_dir=folder if spec.strategy != "dom_g" else None, device=context.device,
        precision=precision, compile=compile, grad_accum_steps=grad_accum_steps,
        checkpoint_every_steps=checkpoint_every_steps, keep_last=keep_last, num_workers=num_workers, seed=spec.seed,
        distributed=distributed, resume=resume, show_progress=show_progress, heldout=heldout,
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
        **_run_info(context, precision),
    }
    if context.is_main:
        folder.mkdir(parents=True, exist_ok=True)
        record["weights"] = _write_stage2_weights(folder, spec, backbone, result, key)
        record["stored_bytes"] = _bytes(folder / record["weights"]) if record["weights"] else 0
        atomic_write_json(folder / STAGE2_RECORD, record)
    _finish(folder, context, keep_checkpoints)
    return Stage2Artifact(folder, context.all_gather_object(record)[0], trained=True)


def stage2_backbone(
    spec: Stage2Spec,
    source: BackboneSource,
    target_root: str | os.PathLike[str],
    *,
    label: str = "",
    root: str | os.PathLike[str] | None = None,
    force: bool = False,
    device: str | torch.device = "auto",
    precision: str = "auto",
    compile: bool | str = False,
    grad_accum_steps: int = 1,
    num_workers: int = 0,
    distributed: DistributedContext | None = None,
    show_progress: bool = True,
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
        device, precision, compile, grad_accum_steps, num_workers, distributed, show_progress: Training settings.

    Returns:
        The artifact; ``artifact.trained`` says whether this call trained it.
    """
    folder = stage2_folder(spec, source, target_root, label=label, root=root)
    context = distributed or DistributedContext(device=_device(device))
    if not force and _decide(context, (folder / STAGE2_RECORD).is_file()):
        return load_stage2(folder)
    resume = not force and _decide(context, _has_checkpoint(folder) or _has_checkpoint(folder / CURRICULUM_DIR))
    return train_stage2(spec, source, target_root, folder, device=context.device, precision=precision, compile=compile,
                        grad_accum_steps=grad_accum_steps, keep_last=1, num_workers=num_workers,
                        distributed=distributed, resume=resume, keep_checkpoints=False, show_progress=show_progress)


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
            (:func:`~pecop_lib.train.targets.check_fold`).

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
    )
