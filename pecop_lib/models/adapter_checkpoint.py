"""Adapter-only checkpoints: the ~4 MB a PECoP run really needs to keep (paper Table 2).

A checkpoint is a folder:

* ``adapter_config.json``: format tag, backbone name, :class:`AdapterConfig` (targets resolved to
  names, lambda, groups, init), strategy, BatchNorm eps/mode, pooling, the SHA-256 of the backbone
  parameters the adapters were trained on, the list of files, free metadata;
* ``adapter_model.safetensors``: adapter tensors only, keys relative to the backbone
  (``mixed_3b.adapter.down.weight``); the backbone hash is repeated in the safetensors metadata;
* ``backbone_bn_stats.safetensors`` (optional): ``running_mean``, ``running_var`` and
  ``num_batches_tracked`` of every backbone BatchNorm. PECoP trains with BatchNorm in train mode,
  so the frozen backbone's running statistics are re-estimated on the target data; without this
  file a reloaded model would normalise with the Kinetics statistics instead;
* ``heads.safetensors`` (optional): pretext heads, returned in ``report.extras`` on loading.

Every file is written atomically and the config last, so a folder with a config is complete.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from pecop_lib.atomic import atomic_path, atomic_write_json, read_json
from pecop_lib.models.adapters import AdapterConfig, inject_adapters, is_adapter_key, list_adapters
from pecop_lib.models.backbone import Backbone
from pecop_lib.models.loading import LoadReport, WeightsMismatchError, read_safetensors
from pecop_lib.store import tensors_sha256

FORMAT = "pecop_lib.adapter_checkpoint/1"
CONFIG_FILE = "adapter_config.json"
ADAPTER_FILE = "adapter_model.safetensors"
BN_STATS_FILE = "backbone_bn_stats.safetensors"
HEADS_FILE = "heads.safetensors"


def backbone_sha256(model: Backbone) -> str:
    """SHA-256 over the backbone's parameters (names, shapes, values), adapters and classifier excluded.

    Buffers (BatchNorm running statistics) are left out: they change in ``bn_mode="train"``
    while the frozen weights do not.
    """
    classifier = f"{model.classifier_prefix}."
    return tensors_sha256(((name, param) for name, param in sorted(model.named_parameters())
                           if not is_adapter_key(name) and not name.startswith(classifier)), as_float32=True)


def adapter_state_dict(model: Backbone) -> dict[str, torch.Tensor]:
    """The adapter tensors of ``model`` (contiguous CPU copies), keyed as in ``model.state_dict()``."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items() if is_adapter_key(k)}


def bn_stats_state_dict(model: Backbone) -> dict[str, torch.Tensor]:
    """Running statistics and counters of every backbone BatchNorm (CPU copies)."""
    out = {}
    for name, bn in model.batchnorm_layers():
        for buffer_name, buffer in bn.named_buffers(recurse=False):
            out[f"{name}.{buffer_name}"] = buffer.detach().cpu().contiguous().clone()
    return out


def _save_tensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str]) -> None:
    with atomic_path(path) as tmp:
        save_file(dict(tensors), str(tmp), metadata=metadata)


def save_adapter_checkpoint(
    model: Backbone,
    directory: str | os.PathLike[str],
    *,
    strategy: str = "pecop",
    include_bn_stats: bool = True,
    heads: Mapping[str, torch.Tensor] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write an adapter-only checkpoint folder (see the module docstring).

    Args:
        model: An adapted backbone.
        directory: Output folder (created).
        strategy: Recorded in the config.
        include_bn_stats: Also write ``backbone_bn_stats.safetensors``.
        heads: Optional pretext-head tensors to store beside the adapters.
        metadata: Free JSON-serialisable entries (e.g. epoch, data set).

    Returns:
        The folder.

    Raises:
        ValueError: If the model has no adapters.
    """
    if not list_adapters(model):
        raise ValueError(f"{model.name} has no adapters to save; use export_state_dict for a full checkpoint")
    folder = Path(directory)
    sha = backbone_sha256(model)
    tag = {"format": FORMAT, "backbone": model.name, "backbone_sha256": sha}
    files = [ADAPTER_FILE]
    _save_tensors(folder / ADAPTER_FILE, adapter_state_dict(model), tag)
    if include_bn_stats:
        _save_tensors(folder / BN_STATS_FILE, bn_stats_state_dict(model), tag)
        files.append(BN_STATS_FILE)
    if heads:
        _save_tensors(folder / HEADS_FILE, {k: v.detach().cpu().contiguous() for k, v in heads.items()}, tag)
        files.append(HEADS_FILE)
    config = {
        **tag,
        "adapter": model.adapter_config.to_dict(),
        "strategy": strategy,
        "bn_eps": float(model.batchnorm_layers()[0][1].eps),
        "bn_mode": model.bn_mode,
        "pool": model.pool,
        "files": files,
        "metadata": dict(metadata or {}),
    }
    atomic_write_json(folder / CONFIG_FILE, config)
    return folder


def read_adapter_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``adapter_config.json`` of a checkpoint folder.

    Raises:
        FileNotFoundError: If the folder has no config.
        ValueError: If the format tag is not this package's.
    """
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {directory} is not an adapter checkpoint folder")
    config = read_json(path, fix="save the adapters again (save_adapter_checkpoint) or restore the folder from a copy")
    if config.get("format") != FORMAT:
        raise ValueError(f"{path} has format {config.get('format')!r}, expected {FORMAT!r}")
    return config


def _check_keys(source: Path, got: Mapping[str, torch.Tensor], want: Mapping[str, torch.Tensor]) -> None:
    missing = [k for k in want if k not in got]
    unexpected = [k for k in got if k not in want]
    mismatched = [
        f"{k}: checkpoint {tuple(got[k].shape)} vs model {tuple(want[k].shape)}"
        for k in want
        if k in got and got[k].shape != want[k].shape
    ]
    if missing or unexpected or mismatched:
        raise WeightsMismatchError(
            f"{source} does not fit the model: missing {missing[:12]}; unexpected {unexpected[:12]}; "
            f"shape mismatches {mismatched[:12]}. The file is incomplete or was saved from a model with other "
            "adapter settings: re-save it with save_adapter_checkpoint from the trained model",
            missing, unexpected, mismatched,
        )  # fmt: skip


def load_adapter_checkpoint(
    model: Backbone,
    directory: str | os.PathLike[str],
    *,
    load_bn_stats: bool = True,
    check_backbone: bool = True,
) -> LoadReport:
    """Load an adapter checkpoint into ``model`` (load the backbone weights first).

    If the model has no adapters they are injected from the stored config; if it has, their
    targets, lambda and groups must equal the stored ones.

    Args:
        model: The backbone, with its (Kinetics) weights already loaded.
        directory: Folder written by :func:`save_adapter_checkpoint`.
        load_bn_stats: Also restore the stored BatchNorm statistics, when present.
        check_backbone: Refuse a backbone whose parameters differ from those the adapters were
            trained on (compared by SHA-256). Pass ``False`` only on purpose.

    Returns:
        A :class:`LoadReport` (layout ``"pecop_lib_adapters"``); stored heads are in ``extras``.

    Raises:
        ValueError: On a different backbone, adapter config or backbone hash.
        WeightsMismatchError: If the stored tensors do not match the model's adapters or BatchNorms.
    """
    folder = Path(directory)
    config = read_adapter_config(folder)
    if config["backbone"] != model.name:
        raise ValueError(f"{folder} holds adapters for {config['backbone']}, the model is {model.name}")
    stored = AdapterConfig.from_dict(config["adapter"])
    report = LoadReport(source=str(folder), layout="pecop_lib_adapters")
    if not list_adapters(model):
        inject_adapters(model, stored)
        report.notes.append(f"injected adapters from the stored config at {list(stored.targets)}")
    else:
        have = model.adapter_config
        for key in ("targets", "reduction", "groups"):
            if getattr(have, key) != getattr(stored, key):
                raise ValueError(
                    f"adapter {key} of the model ({getattr(have, key)!r}) differs from {folder} "
                    f"({getattr(stored, key)!r}); remove_adapters() first or build with the stored config"
                )
    if check_backbone:
        sha = backbone_sha256(model)
        if sha != config["backbone_sha256"]:
            raise ValueError(
                f"the model's backbone weights (sha256 {sha[:12]}...) are not those the adapters in {folder} were "
                f"trained on ({config['backbone_sha256'][:12]}...); load the same backbone weights first, "
                "or pass check_backbone=False on purpose"
            )
    state = model.state_dict()
    adapters = read_safetensors(folder / ADAPTER_FILE)
    _check_keys(folder / ADAPTER_FILE, adapters, {k: v for k, v in state.items() if is_adapter_key(k)})
    update = dict(adapters)
    if load_bn_stats and BN_STATS_FILE in config["files"]:
        stats = read_safetensors(folder / BN_STATS_FILE)
        _check_keys(folder / BN_STATS_FILE, stats, bn_stats_state_dict(model))
        update.update(stats)
        report.notes.append("restored the backbone BatchNorm statistics stored with the adapters")
    model.load_state_dict({**state, **update}, strict=True)
    report.converted = {k: k for k in update}
    if HEADS_FILE in config["files"]:
        report.extras = read_safetensors(folder / HEADS_FILE)
        report.unexpected = list(report.extras)
    return report
