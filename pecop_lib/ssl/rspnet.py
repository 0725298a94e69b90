"""RSPNet: relative speed perception + appearance contrast (Chen et al., AAAI 2021), for PECoP's Table 5.

Two clips of one video, a *query* and a *key*, are read at the same speed (normal, or ``s`` times
faster); a third clip, the *other-speed key*, re-reads the key's frames at the other speed. An encoder
maps each clip to two L2-normalised projections of its pooled backbone features:

* **RSP** (relative speed perception, projection ``M``): the query must be more similar to the
  same-speed key than to the other-speed key, by a margin (``MarginRankingLoss`` on
  similarity / temperature).
* **A-VID** (appearance-focused video instance discrimination, projection ``A``): InfoNCE where
  both keys of the same video are positives (one cross-entropy each) and a queue of keys from other
  videos supplies the negatives.

Keys come from a *momentum encoder*: an exponential moving average (``momentum`` 0.999) of the query
encoder, updated at every training forward, never by gradients. Loss
``weight_appearance * (CE_same + CE_other) + weight_speed * ranking``; official weights 1, 1, margin 1,
temperature 0.07, projection width 128, queue 16384, speeds ``[2]`` on 16-frame clips.

Differences from the official code (PeihaoChen/RSPNet, ``moco/builder_diffspeed_diffloss.py``,
``MoCoDiffLossTwoFc`` with ``fc_type='linear'``):

* Speed assignment: official splits each batch into two exact halves (normal / fast) and draws the
  speed factor once per batch; here each sample draws both (equal in distribution, not per batch).
  The sampler returns frame numbers for all three clips, so the speed selection happens when
  frames are read instead of by sub-sampling 32-frame windows inside the model (the same frames:
  the first ``T`` frames vs every ``s``-th frame of one window).
* Clips loop modulo the video length when the video is shorter than the fast clip's span.
* No shuffled BN across GPUs (official ``_batch_shuffle_ddp``); under DDP the keys are still
  gathered from all processes before they enter the queue.
* The queue accepts any batch size (wrapping write position); official asserts ``K % batch == 0``.
* The projection heads act on the pooled features of :meth:`forward_pooled` (official: adaptive
  average pool of the last feature map, then linear), i.e. the same map.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from pecop_lib.ssl.draws import RandomSource, choice, randint
from pecop_lib.ssl.pretext import check_backbone


def looped_indices(num_frames: int, start: int, step: int, clip_len: int) -> list[int]:
    """``clip_len`` 1-based frames ``start, start + step, ...``, looping modulo ``num_frames``."""
    if not 1 <= start <= num_frames:
        raise ValueError(f"start {start} is outside 1..{num_frames} (the video's frames)")
    return [(start - 1 + k * step) % num_frames + 1 for k in range(clip_len)]


class RSPNetSample(NamedTuple):
    """Frames of the three clips of one RSPNet example (1-based frame numbers)."""

    query: list[int]
    key: list[int]
    key_other_speed: list[int]
    speed: int  # the fast speed factor s
    query_fast: bool  # True: query and key at speed s, the other key at 1; False: the reverse


@dataclass(frozen=True)
class RSPNetSampler:
    """Draws RSPNet clip triplets: a pure function of (number of frames, random generator).

    Args:
        clip_len: Frames per clip (official 16).
        speeds: Fast speed factors to choose from (official ``diff_speed`` = ``(2,)``).
    """

    clip_len: int = 16
    speeds: tuple[int, ...] = (2,)

    def __post_init__(self) -> None:
        if not self.speeds or any(s < 2 for s in self.speeds):
            raise ValueError(f"speeds must be a non-empty tuple of factors >= 2, got {self.speeds}")

    def sample(self, num_frames: int, rng: RandomSource) -> RSPNetSample:
        """Draw the speed factor, which pair is fast, and independent query/key starts.

        Starts are uniform over the positions where the fast clip fits (``1`` if it never fits).
        """
        if num_frames < 1:
            raise ValueError(f"a video needs at least one frame, got num_frames={num_frames}")
        speed = choice(rng, self.speeds)
        query_fast = randint(rng, 0, 1) == 1
        last_start = max(1, num_frames - (self.clip_len - 1) * speed)
        start_q, start_k = randint(rng, 1, last_start), randint(rng, 1, last_start)
        same, other = (speed, 1) if query_fast else (1, speed)
        return RSPNetSample(
            query=looped_indices(num_frames, start_q, same, self.clip_len),
            key=looped_indices(num_frames, start_k, same, self.clip_len),
            key_other_speed=looped_indices(num_frames, start_k, other, self.clip_len),
            speed=speed,
            query_fast=query_fast,
        )


class RSPNetEncoder(nn.Module):
    """Backbone + two linear projections (appearance ``A``, speed ``M``), each L2-normalised.

    Args:
        backbone: Module with ``forward_pooled(x) -> (B, C)`` and ``feature_dim``.
        proj_dim: Projection width (official 128).
    """

    def __init__(self, backbone: nn.Module, proj_dim: int = 128) -> None:
        super().__init__()
        feature_dim = check_backbone(backbone)
        self.backbone = backbone
        self.appearance = nn.Linear(feature_dim, proj_dim)
        self.speed = nn.Linear(feature_dim, proj_dim)

    def forward(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clips ``(B, 3, T, H, W)`` -> (appearance ``(B, D)``, speed ``(B, D)``), unit rows."""
        features = self.backbone.forward_pooled(clips)
        return F.normalize(self.appearance(features), dim=1), F.normalize(self.speed(features), dim=1)


class RSPNetOutput(NamedTuple):
    """Logits of one RSPNet forward (temperature already applied)."""

    appearance_same: torch.Tensor  # (B, 1 + K): positive = same-speed key, then the queue
    appearance_other: torch.Tensor  # (B, 1 + K): positive = other-speed key, then the queue
    speed_same: torch.Tensor  # (B,): query . same-speed key (speed projection)
    speed_other: torch.Tensor  # (B,): query . other-speed key (speed projection)


class RSPNet(nn.Module):
    """Query encoder, momentum key encoder and negative queue.

    Only the query encoder's trainable parameters receive gradients; build this module after the
    backbone's weights are loaded and its trainable parameters chosen, because the key encoder
    starts as a copy.

    Args:
        backbone: Module with ``forward_pooled`` and ``feature_dim`` (adapters already injected).
        proj_dim: Projection width D (official 128).
        queue_size: Number K of queued negative keys (official 16384).
        momentum: Key-encoder EMA momentum (official 0.999).
        temperature: Softmax temperature (official 0.07).
        generator: Optional generator for the random initial queue.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        proj_dim: int = 128,
        queue_size: int = 16384,
        momentum: float = 0.999,
        temperature: float = 0.07,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.momentum = momentum
        self.temperature = temperature
        self.encoder_q = RSPNetEncoder(backbone, proj_dim)
        self.encoder_k = copy.deepcopy(self.encoder_q)
        self.encoder_k.requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(proj_dim, queue_size, generator=generator), dim=0))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def momentum_update(self) -> None:
        """``k <- momentum * k + (1 - momentum) * q`` for every key-encoder parameter."""
        for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters(), strict=True):
            param_k.lerp_(param_q.detach(), 1.0 - self.momentum)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write keys ``(B, D)`` (gathered from all processes under DDP) into the queue, oldest first."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered = [torch.empty_like(keys) for _ in range(dist.get_world_size())]
            dist.all_gather(gathered, keys.contiguous())
            keys = torch.cat(gathered)
        size = self.queue.shape[1]
        keys = keys[-size:]
        slots = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue[:, slots] = keys.T.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % size)

    def forward(self, query: torch.Tensor, key: torch.Tensor, key_other_speed: torch.Tensor) -> RSPNetOutput:
        """Score a batch of clip triplets; in training mode also update the key encoder and the queue.

        Args:
            query: ``(B, 3, T, H, W)`` query clips.
            key: ``(B, 3, T, H, W)`` same-speed key clips (another window of the same video).
            key_other_speed: ``(B, 3, T, H, W)`` the key window read at the other speed.
        """
        with torch.no_grad():
            if self.training:
                self.momentum_update()
            key_a, key_m = self.encoder_k(key)
            other_a, other_m = self.encoder_k(key_other_speed)
        query_a, query_m = self.encoder_q(query)
        negatives = query_a @ self.queue.clone().detach().to(query_a.dtype)
        out = RSPNetOutput(
            appearance_same=torch.cat([(query_a * key_a).sum(1, keepdim=True), negatives], 1) / self.temperature,
            appearance_other=torch.cat([(query_a * other_a).sum(1, keepdim=True), negatives], 1) / self.temperature,
            speed_same=(query_m * key_m).sum(1) / self.temperature,
            speed_other=(query_m * other_m).sum(1) / self.temperature,
        )
        if self.training:
            self.enqueue(other_a)
        return out


def rspnet_loss(
    out: RSPNetOutput, *, margin: float = 1.0, weight_appearance: float = 1.0, weight_speed: float = 1.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """RSPNet loss ``weight_appearance * (CE_same + CE_other) + weight_speed * ranking``, with metrics.

    Returns:
        The scalar loss and 0-d tensors ``avid_loss``, ``rsp_loss``, ``avid_acc`` (the same-speed
        key scores above every queued negative) and ``rsp_acc`` (same-speed similarity above
        other-speed similarity).
    """
    targets = torch.zeros(out.appearance_same.shape[0], dtype=torch.long, device=out.appearance_same.device)
    avid = F.cross_entropy(out.appearance_same, targets) + F.cross_entropy(out.appearance_other, targets)
    rsp = F.margin_ranking_loss(out.speed_same, out.speed_other, torch.ones_like(out.speed_same), margin=margin)
    metrics = {
        "avid_loss": avid.detach(),
        "rsp_loss": rsp.detach(),
        "avid_acc": (out.appearance_same.argmax(1) == 0).float().mean(),
        "rsp_acc": (out.speed_same > out.speed_other).float().mean(),
    }
    return weight_appearance * avid + weight_speed * rsp, metrics
