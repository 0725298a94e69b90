"""Build a backbone by name, optionally with 3D-Adapters: the one entry point notebooks and recipes use."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from pecop_lib.models.adapters import AdapterConfig, inject_adapters
from pecop_lib.models.backbone import Backbone, seeded
from pecop_lib.models.i3d import I3D
from pecop_lib.models.r3d import R3D18

BACKBONES: dict[str, type[Backbone]] = {"i3d": I3D, "r3d18": R3D18}


def build_backbone(
    name: str,
    adapters: bool | AdapterConfig | Mapping[str, Any] = False,
    *,
    seed: int | None = None,
    **options: Any,
) -> Backbone:
    """Build ``"i3d"`` or ``"r3d18"`` with random weights (load weights with :func:`load_weights`).

    Args:
        name: ``"i3d"`` (hassony2/PECoP layout) or ``"r3d18"`` (torchvision).
        adapters: ``False``: none; ``True``: PECoP's (lambda 4, official init, default sites);
            an :class:`AdapterConfig` or a dict of its fields.
        seed: Seed for the initialisation (backbone and adapters); ``None``: the global RNG.
        **options: Constructor options of the backbone class, e.g. ``num_classes``, ``pool``,
            ``bn_mode`` and, for I3D, ``bn_eps`` / ``bn_momentum``.

    Returns:
        The backbone, in training mode, on the CPU.

    Raises:
        ValueError: On an unknown name or option (the message lists the valid ones).
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {list(BACKBONES)}")
    cls = BACKBONES[name]
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for backbone {name!r}; valid options are {valid}")
    if adapters is True:
        config: AdapterConfig | None = AdapterConfig()
    elif adapters is False or adapters is None:
        config = None
    elif isinstance(adapters, AdapterConfig):
        config = adapters
    elif isinstance(adapters, Mapping):
        config = AdapterConfig.from_dict(dict(adapters))
    else:
        raise ValueError(f"adapters must be True/False, an AdapterConfig or a dict, got {adapters!r}")
    with seeded(seed):
        model = cls(**options)
        if config is not None:
            inject_adapters(model, config)
    return model
