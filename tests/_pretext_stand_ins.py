"""Tiny stand-ins for the models room's backbones (``forward_pooled`` + ``feature_dim``), for ssl/train tests."""

from __future__ import annotations

import torch
from torch import nn


class TinyBackbone(nn.Module):
    """Conv3d -> ReLU -> global average pool: clips (B, 3, T, H, W) -> features (B, feature_dim)."""

    def __init__(self, feature_dim: int = 8) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.conv = nn.Conv3d(3, feature_dim, kernel_size=(3, 3, 3), padding=1)

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3, 4))
