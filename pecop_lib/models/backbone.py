"""The backbone contract: a clip goes in, a feature map and a pooled feature come out.

Every backbone (:class:`~pecop_lib.models.i3d.I3D`, :class:`~pecop_lib.models.r3d.R3D18`) derives
from :class:`Backbone`, which fixes what the pretext heads (VSPP) and the AQA heads rely on:

* ``forward_features(x)``: ``(B, 3, T, H, W)`` -> last feature map ``(B, C, T', H', W')``;
* ``forward_pooled(x)``: ``(B, C)`` (or ``(B, C, T'')`` with ``keep_time=True``), pooled as
  chosen by :attr:`Backbone.pool` (see :func:`pool_features`);
* ``feature_dim``: ``C``;
* ``bn_mode``: ``"train"`` (PECoP's behaviour: the frozen backbone's BatchNorm layers use batch
  statistics and re-estimate their running statistics on the target data) or ``"frozen"``
  (BatchNorm always in eval mode, whatever ``model.train()`` says).
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

POOL_MODES: tuple[str, ...] = ("adaptive", "official", "window2")
"""How :meth:`Backbone.forward_pooled` pools the feature map (see :func:`pool_features`)."""

BN_MODES: tuple[str, ...] = ("train", "frozen")
"""Backbone BatchNorm behaviour under ``model.train()``."""

OFFICIAL_POOL_KERNEL: tuple[int, int, int] = (2, 7, 7)
"""``AvgPool3d`` kernel of the CoRe/PECoP I3D (stride 1) on the Mixed_5c map."""


def pool_features(fmap: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool a feature map over space, and over time as the chosen convention does.

    Args:
        fmap: Feature map ``(B, C, T', H', W')``.
        mode: ``"adaptive"``: mean over time and space, ``(B, C, 1)``; works for every size.
            ``"official"``: the CoRe/PECoP ``AvgPool3d((2, 7, 7), stride=1)``; needs a 7x7 map
            (224 px input for I3D) and returns ``(B, C, T'-1)``. ``"window2"``: mean over space,
            then a temporal mean of window 2, stride 1, ``(B, C, T'-1)``; equals ``"official"`` at
            224 px and FineDiving/TSA's ``AvgPool3d((2, 4, 4))`` at 112 px, and works at any size.

    Returns:
        ``(B, C, T'')``; average over the last axis to get one vector per clip.

    Raises:
        ValueError: On an unknown mode, or a map too small for the chosen window (the message
            names the map shape and the mode to use instead).
    """
    if mode == "adaptive":
        return fmap.mean(dim=(2, 3, 4)).unsqueeze(-1)
    if mode not in POOL_MODES:
        raise ValueError(f"unknown pool mode {mode!r}; choose one of {POOL_MODES}")
    t, h, w = fmap.shape[2:]
    if t < 2:
        raise ValueError(
            f"pool mode {mode!r} averages 2 time steps but the feature map {tuple(fmap.shape)} has T'={t}; "
            "use longer clips (I3D: >= 16 frames) or pool='adaptive'"
        )
    if mode == "official":
        if (h, w) != OFFICIAL_POOL_KERNEL[1:]:
            raise ValueError(
                f"pool mode 'official' is AvgPool3d{OFFICIAL_POOL_KERNEL} and needs a 7x7 map (224 px I3D input), "
                f"got {tuple(fmap.shape)}; use pool='window2' (same numbers at 224 px, works at any size)"
            )
        return F.avg_pool3d(fmap, OFFICIAL_POOL_KERNEL, stride=1).flatten(2)
    return F.avg_pool1d(fmap.mean(dim=(3, 4)), kernel_size=2, stride=1)


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run the block with the CPU RNG seeded by ``seed`` and restore the RNG after; no-op for ``None``."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def check_clip(x: torch.Tensor) -> None:
    """Raise a clear error unless ``x`` is a clip batch ``(B, 3, T, H, W)``."""
    if x.dim() != 5 or x.shape[1] != 3:
        raise ValueError(
            f"expected a clip batch of shape (B, 3, T, H, W), got {tuple(x.shape)}; "
            "channels come before time (use x.permute(0, 2, 1, 3, 4) for (B, T, C, H, W) input)"
        )


class Backbone(nn.Module, abc.ABC):
    """Base class of the video backbones: feature map, pooled features, BatchNorm mode.

    Subclasses set :attr:`name`, :attr:`feature_dim`, :attr:`adapter_sites` and :attr:`classifier_prefix`,
    and implement :meth:`forward_features` and :meth:`site_channels`.

    Args:
        pool: Pooling of :meth:`forward_pooled`, one of :data:`POOL_MODES`.
        bn_mode: One of :data:`BN_MODES`.
    """

    name: str = ""
    feature_dim: int = 0
    adapter_sites: tuple[str, ...] = ()
    classifier_prefix: str = ""

    def __init__(self, *, pool: str = "adaptive", bn_mode: str = "train") -> None:
        super().__init__()
        if pool not in POOL_MODES:
            raise ValueError(f"unknown pool mode {pool!r}; choose one of {POOL_MODES}")
        self.pool = pool
        self.adapter_config: object | None = None  # set by pecop_lib.models.adapters.inject_adapters
        self._adapter_hooks: dict[str, object] = {}
        self._bn_mode = "train"
        self.bn_mode = bn_mode

    @abc.abstractmethod
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the last feature map ``(B, C, T', H', W')`` of a clip batch ``(B, 3, T, H, W)``."""

    @abc.abstractmethod
    def site_channels(self) -> dict[str, int]:
        """Map each module that may carry an adapter to the channel count of its output."""

    def forward_pooled(self, x: torch.Tensor, *, keep_time: bool = False) -> torch.Tensor:
        """Pooled clip features.

        Args:
            x: Clip batch ``(B, 3, T, H, W)``.
            keep_time: Return the temporal windows of the pooling instead of their mean.

        Returns:
            ``(B, C)``, or ``(B, C, T'')`` with ``keep_time``.
        """
        pooled = pool_features(self.forward_features(x), self.pool)
        return pooled if keep_time else pooled.mean(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`forward_pooled`: ``(B, 3, T, H, W)`` -> ``(B, C)``."""
        return self.forward_pooled(x)

    @property
    def bn_mode(self) -> str:
        """``"train"`` (batch statistics in training, running statistics updated) or ``"frozen"``."""
        return self._bn_mode

    @bn_mode.setter
    def bn_mode(self, mode: str) -> None:
        if mode not in BN_MODES:
            raise ValueError(f"unknown BatchNorm mode {mode!r}; choose one of {BN_MODES}")
        self._bn_mode = mode
        self.train(self.training)

    def train(self, mode: bool = True) -> Backbone:
        """Set training mode; with ``bn_mode == "frozen"`` every BatchNorm layer stays in eval mode."""
        super().train(mode)
        if self._bn_mode == "frozen":
            for _, bn in self.batchnorm_layers():
                bn.eval()
        return self

    def batchnorm_layers(self) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
        """``(name, layer)`` of every BatchNorm layer of the backbone."""
        return [(n, m) for n, m in self.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    @property
    def has_classifier(self) -> bool:
        """Whether the Kinetics classifier (kept for weight fidelity only) is built."""
        return self.classifier_prefix in dict(self.named_children())
