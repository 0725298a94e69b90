"""Backbones (I3D, R3D-18) and 3D-Adapters: injection, training strategies, checkpoint layouts.

Typical use::

    from pecop_lib.models import build_backbone, load_weights, mark_trainable
    model = build_backbone("i3d", adapters=True)          # PECoP: 9 adapters, lambda 4
    report = load_weights(model, "model_rgb.pth")          # hassony2 K400 weights, strict
    mark_trainable(model, "pecop")                         # adapters only
    fmap = model.forward_features(clips)                   # (B, 1024, T', H', W')
    feats = model.forward_pooled(clips)                    # (B, 1024)

This room never imports ``pecop_lib.data``.
"""

from pecop_lib.models.adapter_checkpoint import (
    adapter_state_dict,
    backbone_sha256,
    load_adapter_checkpoint,
    save_adapter_checkpoint,
)
from pecop_lib.models.adapters import (
    Adapter3D,
    AdapterConfig,
    AdapterTargetError,
    adapters_disabled,
    inject_adapters,
    list_adapters,
    remove_adapters,
    set_adapters_enabled,
)
from pecop_lib.models.backbone import BN_MODES, POOL_MODES, Backbone, pool_features
from pecop_lib.models.build import BACKBONES, build_backbone
from pecop_lib.models.fast_path import FastPath, apply_fast_path, fast_path_of
from pecop_lib.models.i3d import I3D, I3D_ADAPTER_SITES
from pecop_lib.models.loading import LoadReport, WeightsMismatchError
from pecop_lib.models.params import (
    adapter_parameter_table,
    parameter_summary,
    stored_nbytes,
    strategy_parameter_counts,
    table2,
)
from pecop_lib.models.r3d import R3D18, R3D18_ADAPTER_SITES
from pecop_lib.models.strategies import STRATEGIES, Strategy, get_strategy, mark_trainable, trainable_names
from pecop_lib.models.weights import (
    LAYOUTS,
    detect_layout,
    export_state_dict,
    load_weights,
    save_official_checkpoint,
)

__all__ = [
    "BACKBONES",
    "BN_MODES",
    "I3D",
    "I3D_ADAPTER_SITES",
    "LAYOUTS",
    "POOL_MODES",
    "R3D18",
    "R3D18_ADAPTER_SITES",
    "STRATEGIES",
    "Adapter3D",
    "AdapterConfig",
    "AdapterTargetError",
    "Backbone",
    "FastPath",
    "LoadReport",
    "Strategy",
    "WeightsMismatchError",
    "adapter_parameter_table",
    "adapter_state_dict",
    "adapters_disabled",
    "apply_fast_path",
    "backbone_sha256",
    "build_backbone",
    "detect_layout",
    "export_state_dict",
    "fast_path_of",
    "get_strategy",
    "inject_adapters",
    "list_adapters",
    "load_adapter_checkpoint",
    "load_weights",
    "mark_trainable",
    "parameter_summary",
    "pool_features",
    "remove_adapters",
    "save_adapter_checkpoint",
    "save_official_checkpoint",
    "set_adapters_enabled",
    "stored_nbytes",
    "strategy_parameter_counts",
    "table2",
    "trainable_names",
]
