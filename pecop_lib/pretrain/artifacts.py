"""The pretraining artifacts: load-or-train the two stages, so that every notebook can run on its own.

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

Artifacts live in the :class:`~pecop_lib.store.ArtifactStore` ``cache_dir()/pretrain`` unless a
``root`` is given, loaded or made by its one rule (:meth:`~pecop_lib.store.ArtifactStore.load_or_run`).
Under ``torchrun`` every process trains (DDP), rank 0 writes, and rank 0's view of the cache
decides for all. :func:`stage1_spec` and :func:`stage2_spec` read a :class:`~pecop_lib.config.Config`
(the boundary between presets and the library).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from pecop_lib.models.adapters import AdapterConfig
from pecop_lib.models.backbone import Backbone
from pecop_lib.models.build import build_backbone
from pecop_lib.models.weights import load_weights
from pecop_lib.store import ArtifactStore, file_sha256
from pecop_lib.train.checkpoint import LATEST_FILE
from pecop_lib.train.distributed import DistributedContext
from pecop_lib.train.loop import CHECKPOINT_DIR

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


def pretrain_store(root: str | os.PathLike[str] | None = None) -> ArtifactStore:
    """The store of both stages' artifacts: ``root``, or ``cache_dir()/pretrain``."""
    return ArtifactStore.at(ARTIFACT_ROOT, root)


def run_info(context: DistributedContext, precision: str) -> dict[str, Any]:
    """Where a stage ran (device, its name, precision, processes, peak GPU memory), for the JSON record."""
    device = context.device
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": precision,
        "world_size": context.world_size,
        "torch": torch.__version__,
        "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
    }


def reset_peak_memory(context: DistributedContext) -> None:
    """Start counting the peak GPU memory anew (nothing on the CPU)."""
    if context.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(context.device)


def has_checkpoint(folder: Path) -> bool:
    """Whether ``folder`` holds a trainer checkpoint to resume from."""
    return (folder / CHECKPOINT_DIR / LATEST_FILE).is_file()


def finish_run(folder: Path, context: DistributedContext, keep_checkpoints: bool) -> None:
    """After a finished run: drop the trainer checkpoints unless kept (rank 0), then wait for every process."""
    if context.is_main and not keep_checkpoints:
        shutil.rmtree(folder / CHECKPOINT_DIR, ignore_errors=True)
        shutil.rmtree(folder / CURRICULUM_DIR, ignore_errors=True)
    context.barrier()


def folder_bytes(path: Path) -> int:
    """Bytes on disk of a file, or of every file under a folder."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
