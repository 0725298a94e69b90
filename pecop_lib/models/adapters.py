"""The 3D-Adapter (paper Eq. 1) and how adapters are injected into, listed in and removed from a backbone.

Eq. 1: ``h_out = h + alpha * theta_up(f(theta_down(h)))`` with

* ``theta_down``: 3x3x3 convolution ``C -> C/lambda`` with ``groups = C/lambda`` (each output
  channel sees ``lambda`` input channels; this is what the official ``ConvAdapter.conv1`` does, the
  paper calls it "depth-wise"). ``groups="depthwise"`` builds a true depthwise variant instead:
  a 3x3x3 depthwise conv (``groups = C``, no bias) followed by a 1x1x1 ``C -> C/lambda`` conv;
* ``f``: ReLU; ``theta_up``: 1x1x1 convolution ``C/lambda -> C`` with bias;
* ``alpha``: per-channel scale in ``R^C``, initialised to ones (official ``se``, stored there as
  ``(1, C, 1, 1, 1)``).

Two initialisations:

* ``"official"``: PyTorch's default init for both convolutions and ``alpha = 1``, exactly as PECoP.
  The adapter is *not* an identity at step 0: every adapted block's output is perturbed, so the
  adapted network does not start as the Kinetics model.
* ``"zero_up"``: ``theta_up`` weight and bias set to zero (as in houlsby/MAM adapters, ST-Adapter,
  AIM), so ``h_out = h`` at step 0 and the adapted network starts exactly as the backbone;
  gradients still reach ``theta_up`` (its input is non-zero), and ``theta_down`` starts learning
  one step later.

Injection follows peft's spirit without depending on it: :func:`inject_adapters` validates the
targets (an error if one matches nothing) before touching the model, attaches an ``adapter``
submodule to each target block and a forward hook that applies it to the block's output. Backbone
keys are unchanged; adapter keys read ``<block>.adapter.{down,up}.{weight,bias}`` and
``<block>.adapter.alpha``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pecop_lib.models.backbone import Backbone, seeded

ADAPTER_INITS: tuple[str, ...] = ("official", "zero_up")
ADAPTER_GROUPS: tuple[str, ...] = ("width", "depthwise")
ADAPTER_ATTR = "adapter"
"""Name of the adapter submodule on an adapted block (so adapter keys contain ``.adapter.``)."""


class AdapterTargetError(ValueError):
    """An adapter target matched no module, or names a module that cannot carry an adapter."""


@dataclass(frozen=True)
class AdapterConfig:
    """How to build and where to put the 3D-Adapters (JSON-serialisable with :meth:`to_dict`).

    Attributes:
        reduction: ``lambda``: the bottleneck has ``C / lambda`` channels (PECoP: 4).
        groups: ``"width"`` (official: ``groups = C / lambda``) or ``"depthwise"`` (see module doc).
        init: ``"official"`` or ``"zero_up"`` (see module doc).
        targets: ``None`` for the backbone's default sites (I3D: the 9 Mixed blocks; R3D-18: the
            8 residual blocks), a tuple of exact module names, or one regular expression matched
            in full against module names.
    """

    reduction: int = 4
    groups: str = "width"
    init: str = "official"
    targets: tuple[str, ...] | str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.targets, list):
            object.__setattr__(self, "targets", tuple(self.targets))
        if not isinstance(self.reduction, int) or isinstance(self.reduction, bool) or self.reduction < 1:
            raise ValueError(f"adapter reduction (lambda) must be a positive int, got {self.reduction!r}")
        if self.groups not in ADAPTER_GROUPS:
            raise ValueError(f"unknown adapter groups {self.groups!r}; choose one of {ADAPTER_GROUPS}")
        if self.init not in ADAPTER_INITS:
            raise ValueError(f"unknown adapter init {self.init!r}; choose one of {ADAPTER_INITS}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON (targets as a list or a string)."""
        out = dataclasses.asdict(self)
        if isinstance(self.targets, tuple):
            out["targets"] = list(self.targets)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AdapterConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise a ``ValueError`` naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown adapter config keys {unknown}; known keys are {sorted(known)}")
        return cls(**values)


class Adapter3D(nn.Module):
    """PECoP's 3D-Adapter (Eq. 1), including the residual connection.

    Args:
        channels: ``C``, channels of the adapted block's output.
        reduction: ``lambda``; ``C`` must be divisible by it.
        groups: ``"width"`` or ``"depthwise"``.
        init: ``"official"`` or ``"zero_up"``.

    Shapes:
        ``(B, C, T, H, W)`` -> ``(B, C, T, H, W)``.
    """

    def __init__(self, channels: int, reduction: int = 4, groups: str = "width", init: str = "official") -> None:
        super().__init__()
        if channels % reduction:
            raise ValueError(f"adapter channels {channels} are not divisible by the reduction lambda={reduction}")
        width = channels // reduction
        if groups == "width":
            self.down: nn.Module = nn.Conv3d(channels, width, 3, padding=1, groups=width, bias=True)
        elif groups == "depthwise":
            self.down = nn.Sequential(
                nn.Conv3d(channels, channels, 3, padding=1, groups=channels, bias=False),
                nn.Conv3d(channels, width, 1, bias=True),
            )
        else:
            raise ValueError(f"unknown adapter groups {groups!r}; choose one of {ADAPTER_GROUPS}")
        self.act = nn.ReLU()
        self.up = nn.Conv3d(width, channels, 1, bias=True)
        self.alpha = nn.Parameter(torch.ones(channels))
        if init == "zero_up":
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)
        elif init != "official":
            raise ValueError(f"unknown adapter init {init!r}; choose one of {ADAPTER_INITS}")
        self.channels = channels
        self.enabled = True
        self.fused = False

    def delta(self, h: torch.Tensor) -> torch.Tensor:
        """The adapter branch ``alpha * up(relu(down(h)))``, without the residual."""
        return self.alpha.view(1, -1, 1, 1, 1) * self.up(self.act(self.down(h)))

    def fused_forward(self, h: torch.Tensor) -> torch.Tensor:
        """``h + delta(h)`` with ``theta_up``, ``alpha`` and the residual in one matrix product.

        ``alpha`` is folded into the 1x1x1 ``theta_up`` (weight ``alpha * W``, bias ``alpha * b``),
        and the residual is the accumulator of the product (``addmm`` on a channels-last ``h``,
        ``baddbmm`` on a contiguous one): one ``C``-channel tensor is written (then the bias added
        in place) instead of three (``up`` output, scaled, sum). Same parameters, same maths as :meth:`forward`
        (rounding differs: fp32 outputs agree to ~1e-6 relative); under autocast the result keeps
        the autocast dtype.
        """
        r = torch.relu_(self.down(h))  # (B, C/lambda, T, H, W)
        weight = self.alpha[:, None] * self.up.weight.flatten(1)  # (C, C/lambda)
        bias = self.alpha * self.up.bias
        b, c, t, height, width = h.shape
        if h.is_contiguous():
            out = torch.baddbmm(h.view(b, c, -1), weight.expand(b, -1, -1), r.reshape(b, r.shape[1], -1))
            return out.add_(bias[:, None]).view(b, c, t, height, width)
        h_last, r_last = h.permute(0, 2, 3, 4, 1), r.permute(0, 2, 3, 4, 1)  # views for channels_last_3d
        out = torch.addmm(h_last.reshape(-1, c), r_last.reshape(-1, r.shape[1]), weight.t())
        return out.add_(bias).view(b, t, height, width, c).permute(0, 4, 1, 2, 3)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``h + delta(h)`` when enabled (:meth:`fused_forward` when :attr:`fused`), ``h`` unchanged when disabled."""
        if not self.enabled:
            return h
        return self.fused_forward(h) if self.fused else h + self.delta(h)


def _apply_adapter(module: nn.Module, _inputs: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
    """Forward hook: pass the block's output through its adapter."""
    return getattr(module, ADAPTER_ATTR)(output)


def resolve_targets(model: Backbone, targets: tuple[str, ...] | str | None) -> list[str]:
    """Turn an :class:`AdapterConfig` ``targets`` value into a list of module names.

    Raises:
        AdapterTargetError: If a name is not a module of the model, a regular expression matches
            nothing, or a module has no known output width (the message lists the valid sites).
    """
    sites = model.site_channels()
    if targets is None:
        names = list(model.adapter_sites)
    elif isinstance(targets, str):
        pattern = re.compile(targets)
        names = [n for n, _ in model.named_modules() if n and pattern.fullmatch(n)]
        if not names:
            raise AdapterTargetError(
                f"adapter target pattern {targets!r} matches no module of {model.name}; "
                f"adapter sites are {list(sites)}"
            )
    else:
        modules = dict(model.named_modules())
        absent = [n for n in targets if n not in modules]
        if absent:
            raise AdapterTargetError(
                f"adapter targets {absent} match no module of {model.name}; adapter sites are {list(sites)}"
            )
        names = list(targets)
    if not names:
        raise AdapterTargetError("the adapter target list is empty; give at least one module name")
    unusable = [n for n in names if n not in sites]
    if unusable:
        raise AdapterTargetError(
            f"modules {unusable} of {model.name} cannot carry an adapter (unknown output width); "
            f"adapter sites are {list(sites)}"
        )
    return names


def inject_adapters(model: Backbone, config: AdapterConfig | None = None, *, seed: int | None = None) -> list[str]:
    """Attach one :class:`Adapter3D` to the output of each target block.

    All targets are validated before the model is changed. The model remembers the config (with
    the targets resolved to names) in ``model.adapter_config``.

    Args:
        model: The backbone.
        config: Adapter settings; ``None`` means ``AdapterConfig()`` (PECoP's).
        seed: Seed for the adapters' initialisation (``None``: the global RNG).

    Returns:
        The adapted module names.

    Raises:
        AdapterTargetError: See :func:`resolve_targets`; also if the model already has adapters.
    """
    config = config or AdapterConfig()
    if list_adapters(model):
        raise AdapterTargetError(
            f"{model.name} already has adapters at {list(list_adapters(model))}; call remove_adapters() first"
        )
    names = resolve_targets(model, config.targets)
    channels = model.site_channels()
    for name in names:
        if channels[name] % config.reduction:
            raise ValueError(
                f"{name} has {channels[name]} channels, not divisible by the adapter reduction {config.reduction}"
            )
    with seeded(seed):
        device = next(model.parameters()).device
        for name in names:
            block = model.get_submodule(name)
            adapter = Adapter3D(channels[name], config.reduction, config.groups, config.init).to(device)
            block.add_module(ADAPTER_ATTR, adapter)
            model._adapter_hooks[name] = block.register_forward_hook(_apply_adapter)
    model.adapter_config = dataclasses.replace(config, targets=tuple(names))
    return names


def list_adapters(model: nn.Module) -> dict[str, Adapter3D]:
    """``{block name: adapter}`` for every adapted block, in module order."""
    return {
        name: getattr(module, ADAPTER_ATTR)
        for name, module in model.named_modules()
        if isinstance(getattr(module, ADAPTER_ATTR, None), Adapter3D)
    }


def set_adapters_enabled(model: nn.Module, enabled: bool) -> None:
    """Switch every adapter on or off (off: the blocks' outputs pass through unchanged)."""
    for adapter in list_adapters(model).values():
        adapter.enabled = enabled


@contextlib.contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    """Context in which the model behaves as its plain backbone; restores each adapter's state after."""
    before = {name: a.enabled for name, a in list_adapters(model).items()}
    set_adapters_enabled(model, False)
    try:
        yield
    finally:
        for name, adapter in list_adapters(model).items():
            adapter.enabled = before.get(name, True)


def remove_adapters(model: Backbone) -> list[str]:
    """Detach every adapter and its hook; return the block names that had one."""
    names = list(list_adapters(model))
    for name in names:
        model._adapter_hooks.pop(name).remove()
        delattr(model.get_submodule(name), ADAPTER_ATTR)
    model.adapter_config = None
    return names


def adapter_drift(model: Backbone, x: torch.Tensor) -> dict[str, float]:
    """How much each adapter changes its block's output on a clip: ``||delta(h)|| / ||h||``.

    ``0`` everywhere for ``zero_up`` adapters at initialisation; clearly positive for the official
    initialisation. Runs one forward pass without gradients.

    Args:
        model: An adapted backbone.
        x: Clip batch ``(B, 3, T, H, W)``.

    Returns:
        ``{site: relative norm}`` in module order.
    """
    drift: dict[str, float] = {}

    def record(site: str) -> Any:
        def hook(adapter: Adapter3D, inputs: tuple[torch.Tensor], _output: torch.Tensor) -> None:
            (h,) = inputs
            drift[site] = float(adapter.delta(h).norm() / h.norm().clamp_min(1e-12))

        return hook

    handles = [a.register_forward_hook(record(site)) for site, a in list_adapters(model).items()]
    try:
        with torch.no_grad():
            model.forward_features(x)
    finally:
        for handle in handles:
            handle.remove()
    return drift


def is_adapter_key(key: str) -> bool:
    """Whether a state-dict key belongs to an adapter."""
    return f".{ADAPTER_ATTR}." in f".{key}"
