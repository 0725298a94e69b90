"""The backbone to fine-tune: built and loaded strictly from any checkpoint the package writes or reads,
and which of its parameters fine-tuning updates."""

from __future__ import annotations

import os
from pathlib import Path

from pecop_lib.finetune.recipes import TRAIN_BACKBONE
from pecop_lib.models.backbone import Backbone
from pecop_lib.models.strategies import mark_parameters

BACKBONE_POOL = "window2"


def load_finetune_backbone(
    name: str,
    checkpoint: str | os.PathLike[str] | None,
    *,
    base_weights: str | os.PathLike[str] | None = None,
    bn_eps: float = 1e-5,
    width: float = 1.0,
    seed: int = 0,
) -> tuple[Backbone, str]:
    """Build the backbone to fine-tune and load its weights, strictly.

    Args:
        name: ``"i3d"`` or ``"r3d18"``.
        checkpoint: ``None`` / ``"none"``: ``base_weights`` if given, else random initialisation
            (seeded); a weights file (Kinetics, stage-1 domain-general, HPT: any layout
            :func:`~pecop_lib.models.load_weights` reads); a pretraining artifact folder (with
            ``stage1.json`` or ``stage2.json``, :mod:`pecop_lib.pretrain.artifacts`: built as recorded,
            e.g. the Dom-G or PECoP backbone); or a PECoP adapter-checkpoint folder
            (:func:`~pecop_lib.models.save_adapter_checkpoint`), loaded on top of ``base_weights``.
        base_weights: The weights the adapters were trained on (their SHA-256 is checked); for an
            adapter folder without it, the folder's ``metadata["base_weights"]`` is used if present.
        bn_eps: I3D BatchNorm eps.
        width: I3D channel multiplier (1: Kinetics I3D; a pretraining artifact records its own).
        seed: Seed of the random initialisation.

    Returns:
        The backbone (pool ``window2``, no classifier) and a one-line description of what was loaded.

    Raises:
        FileNotFoundError: If a path does not exist.
        ValueError: For an adapter folder without base weights (naming the fix).
        WeightsMismatchError: If weights do not fit the backbone.
    """
    from pecop_lib.models import build_backbone, load_adapter_checkpoint, load_weights
    from pecop_lib.models.adapter_checkpoint import read_adapter_config
    from pecop_lib.pretrain.artifacts import STAGE1_RECORD, STAGE2_RECORD, backbone_options
    from pecop_lib.pretrain.stage1_artifact import load_stage1
    from pecop_lib.pretrain.stage2_artifact import load_stage2

    options = backbone_options(name, pool=BACKBONE_POOL, bn_eps=bn_eps, width=width)
    backbone = build_backbone(name, seed=seed, **options)
    source = None if checkpoint is None or str(checkpoint).lower() == "none" else Path(checkpoint)
    if source is not None and not source.exists():
        raise FileNotFoundError(f"backbone checkpoint {source} does not exist; pass a weights file, an adapter "
                                "checkpoint folder or 'none'")
    if source is not None and source.is_dir() and any((source / r).is_file() for r in (STAGE1_RECORD, STAGE2_RECORD)):
        stage = load_stage2(source) if (source / STAGE2_RECORD).is_file() else load_stage1(source)
        backbone = stage.build()
        if backbone.name != name:
            raise ValueError(f"{source} holds a {backbone.name} backbone, not {name}; set model_backbone={backbone.name!r}")
        backbone.pool = BACKBONE_POOL
        return backbone, f"{name}: pretraining artifact {source.name}"
    if source is not None and source.is_dir():
        base = base_weights or read_adapter_config(source)["metadata"].get("base_weights")
        if not base:
            raise ValueError(
                f"{source} holds adapters only; pass base_weights= the backbone weights they were trained on "
                "(the stage-1 / Kinetics file; CLI: --base-weights)"
            )
        load_weights(backbone, _existing(base, "base weights"))
        load_adapter_checkpoint(backbone, source)
        return backbone, f"{name}: {Path(base).name} + PECoP adapters {source.name}"
    if source is not None:
        load_weights(backbone, source)
        return backbone, f"{name}: {source.name}"
    if base_weights is not None:
        load_weights(backbone, _existing(base_weights, "base weights"))
        return backbone, f"{name}: {Path(base_weights).name}"
    return backbone, f"{name}: random initialisation (seed {seed})"


def _existing(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} {p} does not exist")
    return p



def set_trainable(backbone: Backbone, mode: str) -> list[str]:
    """Mark which backbone parameters fine-tuning updates; returns their names.

    Args:
        backbone: The backbone.
        mode: ``all`` (official: every parameter, adapters included), ``adapters`` (adapters
            only) or ``frozen`` (none: the head learns on fixed features). A Kinetics classifier,
            if built, never trains (fine-tuning does not use it).

    Raises:
        ValueError: On an unknown mode, or ``adapters`` on a backbone without adapters.
    """
    if mode not in TRAIN_BACKBONE:
        raise ValueError(f"unknown train_backbone {mode!r}; choose one of {TRAIN_BACKBONE}")
    return mark_parameters(backbone, "none" if mode == "frozen" else mode, who=f"train_backbone={mode!r}")

