"""What the pretext tasks need from a backbone, and the backbone + head pairing they share.

A pretext task (VSPP, VideoPace, RSPNet) only needs a backbone that turns a clip batch
``(B, 3, T, H, W)`` into pooled features ``(B, C)``. The models room provides that interface on
every backbone (I3D with or without 3D-Adapters, R3D-18): a ``forward_pooled`` method and a
``feature_dim`` attribute. Tests use a tiny stand-in with the same two members.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class PooledBackbone(Protocol):
    """A video backbone that returns one pooled feature vector per clip."""

    feature_dim: int

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Map clips ``(B, 3, T, H, W)`` to pooled features ``(B, feature_dim)``."""
        ...


def check_backbone(backbone: nn.Module) -> int:
    """Check that ``backbone`` offers the pooled-feature interface and return its feature width.

    Raises:
        TypeError: If ``forward_pooled`` or an integer ``feature_dim`` is missing.
    """
    if not callable(getattr(backbone, "forward_pooled", None)):
        raise TypeError(
            f"{type(backbone).__name__} has no forward_pooled(x) -> (B, C) method; pretext tasks need a "
            "backbone from pecop_lib.models (or any module with forward_pooled and feature_dim)"
        )
    feature_dim = getattr(backbone, "feature_dim", None)
    if not isinstance(feature_dim, int) or feature_dim <= 0:
        raise TypeError(
            f"{type(backbone).__name__}.feature_dim must be a positive int (the width of forward_pooled's "
            f"output), got {feature_dim!r}"
        )
    return feature_dim


class PretextModel(nn.Module):
    """A backbone followed by a pretext head on its pooled features.

    Args:
        backbone: Module with ``forward_pooled(x) -> (B, C)`` and ``feature_dim == C``.
        head: Module mapping ``(B, C)`` features to the task's logits.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.feature_dim = check_backbone(backbone)
        self.backbone = backbone
        self.head = head

    def forward(self, clips: torch.Tensor):
        """Run ``head(backbone.forward_pooled(clips))``; clips are ``(B, 3, T, H, W)``."""
        return self.head(self.backbone.forward_pooled(clips))


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of rows whose arg-max equals the label, as a 0-d float tensor (no host sync).

    Args:
        logits: ``(B, K)``.
        labels: ``(B,)`` integer class indices.
    """
    return (logits.argmax(dim=1) == labels).float().mean()
