"""Parameter counts and stored sizes, computed from the real modules (paper Table 2 as code)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import torch
from safetensors.torch import save as safetensors_bytes

from pecop_lib.models.adapter_checkpoint import adapter_state_dict, bn_stats_state_dict
from pecop_lib.models.adapters import AdapterConfig, is_adapter_key, list_adapters
from pecop_lib.models.backbone import Backbone
from pecop_lib.models.build import build_backbone
from pecop_lib.models.strategies import STRATEGIES, trainable_names


def parameter_summary(model: Backbone) -> dict[str, int]:
    """Parameter counts of a backbone by part.

    Returns:
        ``{"backbone": ..., "classifier": ..., "adapters": ..., "total": ...}``; ``backbone``
        excludes adapters and the Kinetics classifier.
    """
    classifier = f"{model.classifier_prefix}."
    out = {"backbone": 0, "classifier": 0, "adapters": 0}
    for name, param in model.named_parameters():
        part = "adapters" if is_adapter_key(name) else "classifier" if name.startswith(classifier) else "backbone"
        out[part] += param.numel()
    out["total"] = sum(out.values())
    return out


def adapter_parameter_table(model: Backbone) -> list[dict[str, Any]]:
    """One row per adapter: site, channels ``C``, bottleneck ``C/lambda``, and parameters per part.

    Returns:
        Rows ``{"site", "channels", "bottleneck", "down", "up", "alpha", "total"}``.
    """
    rows = []
    for site, adapter in list_adapters(model).items():
        down = sum(p.numel() for p in adapter.down.parameters())
        up = sum(p.numel() for p in adapter.up.parameters())
        rows.append(
            {
                "site": site,
                "channels": adapter.channels,
                "bottleneck": adapter.up.in_channels,
                "down": down,
                "up": up,
                "alpha": adapter.alpha.numel(),
                "total": down + up + adapter.alpha.numel(),
            }
        )
    return rows


def strategy_parameter_counts(model: Backbone) -> dict[str, int]:
    """Trainable parameter count of every strategy on this model (strategies needing adapters: 0 without)."""
    sizes = {n: p.numel() for n, p in model.named_parameters()}
    counts = {}
    for name, spec in STRATEGIES.items():
        if spec.trains == "adapters" and not list_adapters(model):
            counts[name] = 0
            continue
        counts[name] = sum(sizes[n] for n in trainable_names(model, name))
    return counts


def stored_nbytes(state: Mapping[str, torch.Tensor], fmt: str = "safetensors") -> int:
    """Bytes a state dict takes on disk as ``"safetensors"`` or ``"torch"`` (``torch.save``)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    if fmt == "safetensors":
        return len(safetensors_bytes(tensors))
    if fmt == "torch":
        buffer = io.BytesIO()
        torch.save(tensors, buffer)
        return buffer.getbuffer().nbytes
    raise ValueError(f"unknown format {fmt!r}; choose 'safetensors' or 'torch'")


def table2(backbone: str = "i3d", adapters: AdapterConfig | None = None) -> list[dict[str, Any]]:
    """Paper Table 2 (cost of continual pretraining) recomputed from freshly built modules.

    Rows:
        * ``HPT``: all backbone parameters train; what must be stored is the whole model
          (backbone with the Kinetics classifier, BatchNorm buffers), ``torch.save`` size.
        * ``PECoP``: only the adapters train; what must be stored is the adapter-only
          checkpoint (``adapter_model.safetensors``), also given with the optional BatchNorm
          statistics file.

    Args:
        backbone: ``"i3d"`` or ``"r3d18"``.
        adapters: Adapter config (default: PECoP's).

    Returns:
        Rows ``{"strategy", "trainable_params", "stored_bytes", "stored_bytes_with_bn_stats"}``.
    """
    plain = build_backbone(backbone, num_classes=400, seed=0)
    adapted = build_backbone(backbone, adapters or AdapterConfig(), num_classes=400, seed=0)
    hpt = strategy_parameter_counts(plain)["hpt"]
    pecop = strategy_parameter_counts(adapted)["pecop"]
    full = stored_nbytes(plain.state_dict(), "torch")
    adapter_only = stored_nbytes(adapter_state_dict(adapted))
    with_bn = adapter_only + stored_nbytes(bn_stats_state_dict(adapted))
    return [
        {"strategy": "HPT", "trainable_params": hpt, "stored_bytes": full, "stored_bytes_with_bn_stats": full},
        {"strategy": "PECoP", "trainable_params": pecop, "stored_bytes": adapter_only, "stored_bytes_with_bn_stats": with_bn},
    ]
