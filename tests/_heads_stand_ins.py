"""Small stand-ins shared by the tests: the one tiny Backbone (counts its calls), synthetic clip sets, a training loop."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
from torch import nn

from pecop_lib.eval import spearman
from pecop_lib.heads.exemplars import predict_with_exemplars
from pecop_lib.heads.windows import Windowing
from pecop_lib.models.backbone import Backbone


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """Run each heads test on one intra-op thread (restored after).

    The tensors here are tiny; on a shared 2-core machine several OpenMP threads per process
    fight each other and made these tests 10-15x slower (measured: 27 s vs 7 min for the suite).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class TinyBackbone(Backbone):
    """Conv3d-BN-ReLU-Conv3d-ReLU; ``(B, 3, T, H, W)`` -> ``(B, feature_dim, T/2, H/4, W/4)``; counts calls and windows."""

    name = "tiny"

    def __init__(self, feature_dim: int = 32, *, pool: str = "adaptive", bn_mode: str = "train") -> None:
        super().__init__(pool=pool, bn_mode=bn_mode)
        self.feature_dim = feature_dim
        self.net = nn.Sequential(
            nn.Conv3d(3, 8, 3, stride=(1, 2, 2), padding=1),
            nn.BatchNorm3d(8),
            nn.ReLU(),
            nn.Conv3d(8, feature_dim, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.calls = 0
        self.windows = 0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.windows += x.shape[0]
        return self.net(x)

    def site_channels(self) -> dict[str, int]:
        return {}


def brightness_clips(scores: np.ndarray, frames: int = 8, size: int = 8, seed: int = 0) -> torch.Tensor:
    """Clips whose mean brightness grows with the score (plus noise): ``(N, 3, frames, size, size)``."""
    gen = torch.Generator().manual_seed(seed)
    level = torch.as_tensor((scores - scores.min()) / (np.ptp(scores) + 1e-9), dtype=torch.float32)
    noise = 0.2 * torch.randn(len(scores), 3, frames, size, size, generator=gen)
    return level.view(-1, 1, 1, 1, 1) + noise


def train_and_rank(
    params: list[nn.Parameter],
    step: Callable[[], torch.Tensor],
    evaluate: Callable[[], np.ndarray],
    truth: np.ndarray,
    steps: int,
    lr: float = 1e-3,
) -> tuple[float, float, float, float]:
    """Adam on ``step()``'s loss; returns (first loss, last loss, rho before, rho after) with ``evaluate()`` predictions."""
    rho_before = float(np.nan_to_num(spearman(evaluate(), truth)))  # constant initial predictions: 0
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    for _ in range(steps):
        loss = step()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses[0], float(np.mean(losses[-5:])), rho_before, spearman(evaluate(), truth)


def predict_against_own_clips(
    relative_to: Callable[..., torch.Tensor],
    backbone: Backbone,
    windowing: Windowing,
    clips: torch.Tensor,
    draw: list[list[int]],
    scores: np.ndarray,
    *,
    maps: bool = False,
) -> np.ndarray:
    """Exemplar-based predictions of every clip in ``clips`` ``(N, 3, T, H, W)``, its exemplars drawn from the same clips.

    Returns:
        ``(N,)`` predicted scores.
    """
    return predict_with_exemplars(relative_to, backbone, windowing, query_clip=lambda i: clips[i], num_queries=len(clips),
                                  exemplar_clip=lambda i: clips[i], draw=draw, exemplar_scores=scores, maps=maps).numpy()
