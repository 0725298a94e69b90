"""Faster execution of the same network: memory layout and fused adapter operations.

Each switch keeps the parameters, the state-dict keys and the maths; only rounding differs
(fp32 outputs stay within ~1e-5 relative of the plain model, checked by the tests). They are
switched on per model with :func:`apply_fast_path` and measured by ``benchmarks/bench_perf.py``.

* ``channels_last``: parameters and the input clip in ``torch.channels_last_3d`` (NDHWC). On GPUs
  cuDNN's fastest 3D convolutions (and bf16 tensor cores) work in this layout; on CPUs oneDNN
  also prefers it. The input is converted by a forward pre-hook on the first convolution, so the
  model takes ordinary ``(B, 3, T, H, W)`` clips.
* ``fused_adapters``: every :class:`~pecop_lib.models.adapters.Adapter3D` runs
  :meth:`~pecop_lib.models.adapters.Adapter3D.fused_forward` (``alpha`` folded into ``theta_up``,
  the residual accumulated by the matrix product).

What is *not* a switch, and why:

* **TF-SAME padding** is already static (from kernel and stride only, never from the input) and
  folded into ``Conv3d(padding=...)`` wherever it is symmetric: every 1x1x1 and stride-1 3x3x3
  convolution. The 7x7x7 stride-2 stem is the one asymmetric convolution (front 2, back 3 per
  dimension): ``Conv3d`` padding is symmetric, and padding 3 on both sides would shift every
  output window by one input pixel, so the stem keeps its ``ConstantPad3d`` (on the 3-channel
  input: the cheapest tensor of the network). The max-pools keep their zero ``ConstantPad3d``
  too: ``MaxPool3d`` pads with ``-inf``, which equals zero padding only for non-negative
  inputs, and an adapter's output (``h + delta``) can be negative.
* ``torch.compile`` is the trainer's ``compile`` option; the adapters' forward hooks cause no
  graph break (``torch._dynamo.explain`` reports one graph, tested).
* bf16 autocast is the trainer's ``precision`` option.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pecop_lib.models.adapters import list_adapters
from pecop_lib.models.backbone import Backbone

_CHANNELS_LAST_HOOK = "_channels_last_hook"


@dataclass(frozen=True)
class FastPath:
    """Which execution switches are on (see the module docstring).

    Attributes:
        channels_last: Parameters and input in ``torch.channels_last_3d``.
        fused_adapters: Adapters run their fused forward.
    """

    channels_last: bool = False
    fused_adapters: bool = False

    @property
    def label(self) -> str:
        """Short name for tables: ``"eager"``, ``"channels_last"``, ``"channels_last+fused_adapters"``."""
        on = [name for name, value in (("channels_last", self.channels_last), ("fused_adapters", self.fused_adapters))
              if value]
        return "+".join(on) or "eager"


def _to_channels_last(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook: the first convolution's input in ``channels_last_3d``."""
    return (args[0].contiguous(memory_format=torch.channels_last_3d), *args[1:])


def _first_conv(model: nn.Module) -> nn.Conv3d:
    for module in model.modules():
        if isinstance(module, nn.Conv3d):
            return module
    raise ValueError(f"{type(model).__name__} has no Conv3d layer; channels_last needs a 3D convolutional backbone")


def apply_fast_path(model: Backbone, fast: FastPath) -> Backbone:
    """Switch ``model`` (in place) to the execution ``fast`` describes; switches that are off are undone.

    Call it after adapters are injected (``fused_adapters`` acts on the adapters present) and
    after the model is on its device.

    Args:
        model: An I3D or R3D-18 backbone, with or without adapters.
        fast: The switches.

    Returns:
        ``model``.

    Raises:
        ValueError: If ``fused_adapters`` is asked for on a model without adapters.
    """
    if fast.fused_adapters and not list_adapters(model):
        raise ValueError(f"fused_adapters=True but this {model.name} has no adapters; inject them first")
    for adapter in list_adapters(model).values():
        adapter.fused = fast.fused_adapters
    hook = getattr(model, _CHANNELS_LAST_HOOK, None)
    if hook is not None:
        hook.remove()
        setattr(model, _CHANNELS_LAST_HOOK, None)
    model.to(memory_format=torch.channels_last_3d if fast.channels_last else torch.contiguous_format)
    if fast.channels_last:
        setattr(model, _CHANNELS_LAST_HOOK, _first_conv(model).register_forward_pre_hook(_to_channels_last))
    return model


def fast_path_of(model: Backbone) -> FastPath:
    """The switches currently on for ``model``."""
    adapters = list_adapters(model)
    return FastPath(
        channels_last=getattr(model, _CHANNELS_LAST_HOOK, None) is not None,
        fused_adapters=bool(adapters) and all(a.fused for a in adapters.values()),
    )
