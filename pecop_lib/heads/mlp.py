"""The I3D + MLP baseline of the paper's Table 1: the final score regressed from the pooled feature.

USDL's paper (Tang et al., CVPR 2020) reports this baseline (MTL-AQA rho 89.21; JIGSAWS 61 / 68 /
66 on Suturing / Needle passing / Knot tying), and PECoP's Table 1 repeats the row; no code was
published. Here: the window-averaged feature ``(B, C)`` goes through the hidden widths of USDL's
``MLP_block`` (C -> 256 -> 128, ReLU) to one number, trained with the mean squared error on the
*standardised* score (training mean and standard deviation, kept with the head as buffers), so that
one learning rate suits every score scale (diving 0..104.5, GRS 6..30, UPDRS 0..4). The recipes are
USDL's (same windows, Adam 1e-4, batch 4, epochs and protocol), the closest official recipe.

This file and one entry in :mod:`pecop_lib.heads.registry` are all it takes to add a head:
fine-tuning, evaluation, the protocols and the reports need no edit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pecop_lib.heads.interface import HeadKind
from pecop_lib.heads.usdl import HIDDEN, USDLKind
from pecop_lib.heads.windows import WindowFeatures, Windowing

BASELINE_SOURCE = "USDL's recipe (the I3D + MLP baseline of USDL's paper has no public code)"


class ScoreMLP(nn.Module):
    """Regress a score from video features: ``C -> 256 -> 128 -> 1`` on standardised scores.

    Args:
        in_dim: Feature width ``C``.
        mean: Training mean of the scores (the output's zero).
        std: Training standard deviation (the output's unit; 1 where the scores are constant).
    """

    def __init__(self, in_dim: int, mean: float, std: float) -> None:
        super().__init__()
        hidden = (in_dim, *HIDDEN)
        layers: list[nn.Module] = []
        for a, b in zip(hidden[:-1], hidden[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
        self.layers = nn.Sequential(*layers, nn.Linear(hidden[-1], 1))
        self.register_buffer("mean", torch.tensor(float(mean), dtype=torch.float64))
        self.register_buffer("std", torch.tensor(float(std) if std > 0 else 1.0, dtype=torch.float64))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Standardised predictions ``(B,)`` of video features ``(B, C)``."""
        return self.layers(features)[:, 0]

    def loss(self, z: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Mean squared error between standardised predictions ``z`` ``(B,)`` and the scores ``(B,)``."""
        target = ((scores.double() - self.mean) / self.std).to(z.dtype)
        return F.mse_loss(z, target)

    def predict(self, z: torch.Tensor) -> torch.Tensor:
        """Scores ``(B,)`` on the dataset's scale."""
        return (z.double() * self.std + self.mean).to(z.dtype)


class MLPKind(HeadKind):
    """The I3D + MLP baseline for fine-tuning (:class:`~pecop_lib.heads.interface.HeadKind`)."""

    name, display = "mlp", "I3D+MLP"
    recipes = {dataset: replace(USDLKind.recipes[dataset], head="mlp", source=BASELINE_SOURCE)
               for dataset in ("MTL-AQA", "JIGSAWS")}  # USDL's recipes: the closest official ones

    def build(self, feature_dim: int, windowing: Windowing, dataset_key: str, *, decode: str,
              values: np.ndarray, groups: Sequence[str], segment_pairs: str = "separate") -> nn.Module:
        """:class:`ScoreMLP` standardised by the training scores."""
        return ScoreMLP(feature_dim, float(np.mean(values)), float(np.std(values)))

    def loss(self, head: nn.Module, batch: dict[str, torch.Tensor], a: WindowFeatures,
             b: WindowFeatures | None = None) -> torch.Tensor:
        """Mean squared error on the standardised final score."""
        return head.loss(head(a.video()), batch["target"])  # type: ignore[operator]

    def score(self, head: nn.Module, feats: torch.Tensor,
              difficulty: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Predicted final scores; no distribution."""
        return head.predict(head(feats)), None  # type: ignore[operator]
