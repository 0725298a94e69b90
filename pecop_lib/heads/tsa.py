"""TSA: temporal segmentation attention (FineDiving, Xu et al., CVPR 2022; xujinglin/FineDiving).

TSA compares a video with an exemplar step by step (facts: ``reference/aqa-heads.md`` Sec. 5):

1. **Procedure segmentation** (:class:`PSNet`): the ``W`` = 9 window features ``(W, C)`` are read
   as a ``W``-channel 1-D signal over the feature axis; a U-Net-style encoder (double 1-D
   convolutions, four max-pool halvings) turns them into ``T`` = 96 frame tokens of ``C/16`` = 64
   dimensions, and an MLP with a sigmoid gives, per frame, the probability of being transition 1
   or transition 2. Trained with BCE against one-hot transition targets
   (:func:`transition_targets`); the predicted transition ``i`` is the argmax of channel ``i`` in
   frames ``[iT/2, (i+1)T/2)`` (:func:`predict_transitions`). For the first 25 % of the epochs
   the ground-truth transitions drive the next stage (teacher forcing, :func:`teacher_forcing`),
   afterwards and at test time the predicted ones.
2. **Step resampling** (:func:`resample_steps`): the 3 steps ``[0, t1)``, ``[t1, t2)``, ``[t2, T)``
   (take-off, flight, entry) are each linearly resampled to ``fix_size`` = 5 positions, both
   for the 1-D tokens and for the time-averaged feature maps (which go through the same
   :class:`PSNet`, one spatial position at a time).
3. **Procedure-aware cross-attention** (:class:`CrossAttentionDecoder`, 3 pre-norm blocks): for
   each step, the 5 1-D tokens of video A attend to the ``5 x H' x W'`` map tokens of video B.
4. **Contrastive regression**: an MLP scores each of the 15 decoded tokens; their mean is the
   score difference ``s_A - s_B``. Loss: ``MSE(d_AB, s_A - s_B) + MSE(d_BA, s_B - s_A) + BCE``,
   unweighted; raw final scores (not completeness).

Fidelity notes:

* The feature maps ``(N, W, C, H', W')`` are reshaped to ``(N H' W', W, C)`` *without* a permute
  in the official code, which interleaves spatial positions and channels (and back after PSNet).
  ``map_layout="official"`` (default) does exactly that; ``"per_position"`` feeds each spatial
  position's own ``(W, C)`` sequence, which is what the description means.
* The official code only clamps a predicted transition of 0 to 1; :func:`usable_transitions`
  also keeps every step at least one frame long (``1 <= t1 < t2 <= T - 1``), so that resampling
  never sees an empty step (which would crash the official code); predicted transitions are
  unchanged by it whenever the official code would run.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pecop_lib.heads.interface import FinetuneRecipe, HeadKind
from pecop_lib.heads.windows import WindowFeatures, Windowing

NUM_STEPS = 3
"""Steps per dive (take-off | flight | entry): 2 transitions, even with 4-5 sub-action types."""
FIX_SIZE = 5
"""Positions per resampled step."""
TEACHER_FORCING_FRACTION = 0.25
"""``prob_tas_threshold``: ground-truth transitions while ``epoch / max_epoch <= 0.25``."""
PSNET_WIDTHS = (12, 24, 48, 96)
"""Channel widths of PSNet's first four stages; the fifth has one channel per frame."""
TOKEN_DOWNSAMPLE = 16
"""Four max-pool halvings: frame tokens have ``C / 16`` dimensions."""

MapLayout = Literal["official", "per_position"]
MAP_LAYOUTS: tuple[str, ...] = ("official", "per_position")
SEGMENT_PAIRS: tuple[str, ...] = ("joint", "separate")
"""How :class:`TSA` segments a training pair: one PSNet call over both videos (official) or one per side."""


def transition_targets(transitions: torch.Tensor, num_frames: int) -> torch.Tensor:
    """BCE targets: zeros ``(B, T, 2)`` with 1 at ``[t1, 0]`` and ``[t2, 1]``.

    Args:
        transitions: int ``(B, 2)``: first frame of step 2 and of step 3
            (:func:`pecop_lib.data.formats.finediving.transitions_from_labels`).
        num_frames: ``T``.

    Raises:
        ValueError: If a transition lies outside ``[0, T)``.
    """
    t = transitions.long()
    if t.dim() != 2 or t.shape[1] != 2 or (t < 0).any() or (t >= num_frames).any():
        raise ValueError(f"transitions must be (B, 2) frame indices in [0, {num_frames}), got {t.tolist()}")
    target = torch.zeros(t.shape[0], num_frames, 2, device=t.device)
    rows = torch.arange(t.shape[0], device=t.device)
    target[rows, t[:, 0], 0] = 1.0
    target[rows, t[:, 1], 1] = 1.0
    return target


def predict_transitions(probs: torch.Tensor) -> torch.Tensor:
    """Transition ``i`` = argmax of channel ``i`` within frames ``[i n, (i+1) n)``, ``n = round(T / 2)``.

    Args:
        probs: ``(B, T, 2)`` per-frame transition probabilities.

    Returns:
        int64 ``(B, 2)`` frame indices (not clamped; see :func:`usable_transitions`).
    """
    n = round(probs.shape[1] / probs.shape[2])
    return torch.stack(
        [probs[:, i * n : (i + 1) * n, i].argmax(dim=1) + i * n for i in range(probs.shape[2])], dim=1
    )


def usable_transitions(transitions: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Clamp to ``1 <= t1 < t2 <= T - 1`` so that each of the 3 steps has at least one frame."""
    if num_frames < NUM_STEPS:
        raise ValueError(f"TSA needs at least {NUM_STEPS} frames per clip, got {num_frames}")
    t1 = transitions[:, 0].long().clamp(1, num_frames - 2)
    t2 = torch.maximum(transitions[:, 1].long(), t1 + 1).clamp(max=num_frames - 1)
    return torch.stack([t1, t2], dim=1)


def teacher_forcing(epoch: int, max_epoch: int, fraction: float = TEACHER_FORCING_FRACTION) -> bool:
    """Whether epoch ``epoch`` (0-based) uses ground-truth transitions: ``epoch / max_epoch <= fraction``."""
    return epoch / max_epoch <= fraction


def resample_steps(x: torch.Tensor, transitions: torch.Tensor, fix_size: int = FIX_SIZE) -> torch.Tensor:
    """Linearly resample each step of a frame sequence to ``fix_size`` positions (``align_corners=True``).

    The official ``seg_pool_1d`` / ``seg_pool_3d``; the trilinear resampling of feature maps
    leaves the spatial axes untouched, so both are this 1-D resampling along time.

    Args:
        x: ``(B, D, T, *spatial)``.
        transitions: ``(B, 2)`` with ``1 <= t1 < t2 <= T - 1`` (:func:`usable_transitions`).
        fix_size: Positions per step.

    Returns:
        ``(B, D, 3 * fix_size, *spatial)``, steps in order.
    """
    batch, dim, frames = x.shape[:3]
    spatial = x.shape[3:]
    flat = x.movedim(2, -1).reshape(batch, -1, frames)  # (B, D * prod(spatial), T)
    out = []
    for b in range(batch):
        t1, t2 = int(transitions[b, 0]), int(transitions[b, 1])
        if not 1 <= t1 < t2 <= frames - 1:
            raise ValueError(
                f"sample {b}: transitions ({t1}, {t2}) leave an empty step in {frames} frames; use usable_transitions"
            )
        steps = [flat[b : b + 1, :, a:e] for a, e in ((0, t1), (t1, t2), (t2, frames))]
        out.append(
            torch.cat(
                [F.interpolate(s, size=fix_size, mode="linear", align_corners=True) for s in steps], dim=2
            )
        )
    res = torch.cat(out)  # (B, D * prod(spatial), 3 * fix)
    return res.reshape(batch, dim, *spatial, NUM_STEPS * fix_size).movedim(-1, 2)


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(cin, cout, 3, padding=1),
        nn.BatchNorm1d(cout),
        nn.ReLU(),
        nn.Conv1d(cout, cout, 3, padding=1),
        nn.BatchNorm1d(cout),
        nn.ReLU(),
    )


class PSNet(nn.Module):
    """Procedure segmentation network: window features -> frame tokens and transition probabilities.

    Args:
        num_windows: Input channels ``W`` (9 officially).
        num_frames: Frame tokens ``T`` (96): the last stage's channel count.
        feature_dim: Backbone feature width ``C`` (divisible by 16; tokens have ``C/16`` dims).
    """

    def __init__(self, num_windows: int = 9, num_frames: int = 96, feature_dim: int = 1024) -> None:
        super().__init__()
        if feature_dim % TOKEN_DOWNSAMPLE:
            raise ValueError(
                f"PSNet halves the feature axis 4 times: feature_dim must be divisible by 16, got {feature_dim}"
            )
        widths = (*PSNET_WIDTHS, num_frames)
        self.inc = _double_conv(num_windows, widths[0])
        self.downs = nn.ModuleList(
            nn.Sequential(nn.MaxPool1d(2), _double_conv(a, b)) for a, b in itertools.pairwise(widths)
        )
        token_dim = feature_dim // TOKEN_DOWNSAMPLE
        self.tas = nn.Sequential(
            nn.Linear(token_dim, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 2)
        )

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, W, C)`` -> frame tokens ``(B, T, C/16)``."""
        x = self.inc(x)
        for down in self.downs:
            x = down(x)
        return x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, W, C)`` -> frame tokens ``(B, T, C/16)`` and transition probabilities ``(B, T, 2)``."""
        tokens = self.tokens(x)
        return tokens, torch.sigmoid(self.tas(tokens))


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention (bias-free q/k/v maps, output projection) + GELU MLP, with residuals.

    Keys and values are the same (normalised) tokens, as in the official ``DecoderBlock``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"decoder width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.norm_q, self.norm_v, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q_map, self.k_map, self.v_map = (nn.Linear(dim, dim, bias=False) for _ in range(3))
        self.proj = nn.Linear(dim, dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], x.shape[1], self.num_heads, -1).transpose(1, 2)

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """Queries ``(B, Nq, dim)`` attend to ``(B, Nk, dim)``; returns ``(B, Nq, dim)``."""
        qn, kvn = self.norm_q(q), self.norm_v(kv)
        attn = F.scaled_dot_product_attention(
            self._heads(self.q_map(qn)), self._heads(self.k_map(kvn)), self._heads(self.v_map(kvn))
        )
        q = q + self.proj(attn.transpose(1, 2).reshape(q.shape))
        return q + self.mlp(self.norm2(q))


class CrossAttentionDecoder(nn.Module):
    """``decoder_fuser``: a stack of :class:`CrossAttentionBlock` s over the same key/value tokens."""

    def __init__(self, dim: int = 64, num_heads: int = 8, num_layers: int = 3) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(CrossAttentionBlock(dim, num_heads) for _ in range(num_layers))

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """``(B, Nq, dim)``, ``(B, Nk, dim)`` -> ``(B, Nq, dim)``."""
        for block in self.blocks:
            q = block(q, kv)
        return q


class Segmentation(NamedTuple):
    """PSNet outputs of a batch of videos.

    Attributes:
        tokens: 1-D frame tokens ``(B, T, D)``.
        maps: Frame-token maps ``(B, D, T, H', W')``.
        probs: Transition probabilities ``(B, T, 2)``.
    """

    tokens: torch.Tensor
    maps: torch.Tensor
    probs: torch.Tensor


class PairOutput(NamedTuple):
    """Both directions of a TSA pair: ``delta_ab`` ~ ``s_a - s_b``, ``delta_ba`` ~ ``s_b - s_a``, transition probabilities."""

    delta_ab: torch.Tensor
    delta_ba: torch.Tensor
    probs_a: torch.Tensor
    probs_b: torch.Tensor


class TSA(nn.Module):
    """TSA head: PSNet + step resampling + cross-attention decoder + score MLP.

    Args:
        num_windows: Backbone windows per clip (9).
        num_frames: Frames per clip (96); transition indices refer to these.
        feature_dim: Backbone feature width (1024; divisible by 16).
        fix_size: Positions per resampled step (5).
        num_heads, num_layers: Decoder shape (8, 3).
        map_layout: ``"official"`` or ``"per_position"`` (see the module docstring).
        segment_pairs: ``"joint"`` (official: PSNet segments both videos of a training pair in one
            call, so its BatchNorm normalises over 2N sequences and updates its running statistics
            once per step) or ``"separate"`` (one call per side: two N-batches, two updates). At
            test time (BatchNorm fixed) both give the same numbers.
    """

    def __init__(
        self,
        num_windows: int = 9,
        num_frames: int = 96,
        feature_dim: int = 1024,
        *,
        fix_size: int = FIX_SIZE,
        num_heads: int = 8,
        num_layers: int = 3,
        map_layout: MapLayout = "official",
        segment_pairs: str = "separate",
    ) -> None:
        super().__init__()
        if map_layout not in MAP_LAYOUTS:
            raise ValueError(f"unknown map_layout {map_layout!r}; choose one of {MAP_LAYOUTS}")
        if segment_pairs not in SEGMENT_PAIRS:
            raise ValueError(f"unknown segment_pairs {segment_pairs!r}; choose one of {SEGMENT_PAIRS}")
        self.num_frames, self.fix_size, self.map_layout = num_frames, fix_size, map_layout
        self.segment_pairs = segment_pairs
        dim = feature_dim // TOKEN_DOWNSAMPLE
        self.psnet = PSNet(num_windows, num_frames, feature_dim)
        self.decoder = CrossAttentionDecoder(dim, num_heads, num_layers)
        self.score = nn.Sequential(
            nn.Linear(dim, 256), nn.ReLU(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 1)
        )

    def segment(self, feats: WindowFeatures) -> Segmentation:
        """Run PSNet on the pooled window features and, position by position, on the maps."""
        if feats.maps is None:
            raise ValueError("TSA needs feature maps: encode with encode_windows(..., maps=True)")
        tokens, probs = self.psnet(feats.pooled)
        maps = feats.maps  # (B, W, C, H, W')
        b, w, c, h, ww = maps.shape
        if self.map_layout == "official":
            seq = self.psnet.tokens(maps.reshape(-1, w, c))
            out = seq.reshape(b, seq.shape[1], seq.shape[2], h, ww).transpose(1, 2)
        else:
            seq = self.psnet.tokens(maps.permute(0, 3, 4, 1, 2).reshape(-1, w, c))
            out = seq.reshape(b, h, ww, seq.shape[1], seq.shape[2]).permute(0, 4, 3, 1, 2)
        return Segmentation(tokens, out, probs)

    def _steps(self, seg: Segmentation, transitions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Step tokens ``(B, 3 fix, D)`` and step map tokens ``(B, 3 fix H' W', D)``, step-major."""
        t = usable_transitions(transitions, self.num_frames)
        tokens = resample_steps(seg.tokens.transpose(1, 2), t, self.fix_size).transpose(1, 2)
        maps = resample_steps(seg.maps, t, self.fix_size)  # (B, D, 3 fix, H, W)
        b, d = maps.shape[:2]
        return tokens, maps.reshape(b, d, maps.shape[2], -1).permute(0, 2, 3, 1).reshape(b, -1, d)

    def _decoded(self, tokens_a: torch.Tensor, maps_b: torch.Tensor) -> torch.Tensor:
        """Step-wise cross-attention of A's tokens to B's map tokens: decoded tokens ``(B, 3 fix, D)``, step-major."""
        per_step_q = tokens_a.shape[1] // NUM_STEPS
        per_step_kv = maps_b.shape[1] // NUM_STEPS
        return torch.cat(
            [
                self.decoder(
                    tokens_a[:, i * per_step_q : (i + 1) * per_step_q],
                    maps_b[:, i * per_step_kv : (i + 1) * per_step_kv],
                )
                for i in range(NUM_STEPS)
            ],
            dim=1,
        )

    def _delta(self, tokens_a: torch.Tensor, maps_b: torch.Tensor) -> torch.Tensor:
        """The score MLP's mean over A's decoded tokens (:meth:`_decoded`): ``s_A - s_B`` ``(B,)``."""
        return self.score(self._decoded(tokens_a, maps_b)).mean(dim=1)[:, 0]

    def pair(
        self,
        a: WindowFeatures,
        b: WindowFeatures,
        transitions_a: torch.Tensor | None = None,
        transitions_b: torch.Tensor | None = None,
    ) -> PairOutput:
        """Both directions of pairs ``(a, b)``.

        Args:
            a, b: Window features with maps (``B`` videos each).
            transitions_a, transitions_b: Ground-truth transitions ``(B, 2)`` to segment with
                (teacher forcing), or ``None`` to use the predicted ones.
        """
        if self.segment_pairs == "joint":  # one PSNet call over the 2B videos, as the official code
            both = self.segment(WindowFeatures.cat([a, b]))
            n = a.pooled.shape[0]
            seg_a, seg_b = (Segmentation(*(x[part] for x in both)) for part in (slice(0, n), slice(n, None)))
        else:
            seg_a, seg_b = self.segment(a), self.segment(b)
        ta = predict_transitions(seg_a.probs) if transitions_a is None else transitions_a
        tb = predict_transitions(seg_b.probs) if transitions_b is None else transitions_b
        tokens_a, maps_a = self._steps(seg_a, ta)
        tokens_b, maps_b = self._steps(seg_b, tb)
        return PairOutput(
            self._delta(tokens_a, maps_b), self._delta(tokens_b, maps_a), seg_a.probs, seg_b.probs
        )

    def pair_loss(
        self,
        out: PairOutput,
        s_a: torch.Tensor,
        s_b: torch.Tensor,
        transitions_a: torch.Tensor,
        transitions_b: torch.Tensor,
    ) -> torch.Tensor:
        """``MSE(d_ab, s_a - s_b) + MSE(d_ba, s_b - s_a) + BCE(transition probabilities of a and b)``."""
        probs = torch.cat([out.probs_a, out.probs_b]).float()
        targets = transition_targets(torch.cat([transitions_a, transitions_b]), self.num_frames)
        with torch.autocast(probs.device.type, enabled=False):  # BCE on probabilities refuses autocast
            bce = F.binary_cross_entropy(probs, targets)
        s_a, s_b = s_a.to(out.delta_ab.dtype), s_b.to(out.delta_ab.dtype)
        return F.mse_loss(out.delta_ab, s_a - s_b) + F.mse_loss(out.delta_ba, s_b - s_a) + bce

    def transitions(self, feats: WindowFeatures) -> torch.Tensor:
        """Predicted transitions ``(B, 2)`` of a batch of videos (for tIoU)."""
        return predict_transitions(self.psnet(feats.pooled)[1])

    def relative_to(
        self, query: WindowFeatures, exemplar: WindowFeatures, s_exemplar: torch.Tensor
    ) -> torch.Tensor:
        """:data:`~pecop_lib.heads.exemplars.RelativeFn` for test time: ``s_query - s_exemplar`` ``(P,)``."""
        seg_q, seg_e = self.segment(query), self.segment(exemplar)
        tokens_q, _ = self._steps(seg_q, predict_transitions(seg_q.probs))
        _, maps_e = self._steps(seg_e, predict_transitions(seg_e.probs))
        return self._delta(tokens_q, maps_e)

    def step_contributions(
        self, query: WindowFeatures, exemplar: WindowFeatures
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """TSA's own split of :meth:`relative_to` over the steps: each step's share of ``s_query - s_exemplar``.

        The score difference is the mean of the score MLP over the 3 x ``fix_size`` decoded tokens, so step ``i``'s
        share is the mean over its ``fix_size`` tokens divided by 3; the shares add up to :meth:`relative_to`'s value
        (up to rounding). Each step's tokens read the query's frames of that step *through* PSNet, whose
        convolutions run over the feature axis with the windows as channels, so a share is the head's account of
        the step, not a causal attribution to its frames.

        Returns:
            Shares ``(P, 3)`` (take-off, flight, entry) and the query's usable transitions ``(P, 2)`` (clip frames:
            the steps are ``[0, t1)``, ``[t1, t2)``, ``[t2, T)``).
        """
        seg_q, seg_e = self.segment(query), self.segment(exemplar)
        transitions = usable_transitions(predict_transitions(seg_q.probs), self.num_frames)
        tokens_q, _ = self._steps(seg_q, transitions)
        _, maps_e = self._steps(seg_e, predict_transitions(seg_e.probs))
        scores = self.score(self._decoded(tokens_q, maps_e))[..., 0]  # (P, 3 fix)
        return scores.reshape(scores.shape[0], NUM_STEPS, -1).mean(dim=2) / NUM_STEPS, transitions


# ------------------------------------------------------------------------------ the head's kind
class TSAKind(HeadKind):
    """TSA for fine-tuning (:class:`~pecop_lib.heads.interface.HeadKind`): pairs of step-segmented
    videos (feature maps, transitions, teacher forcing), raw scores."""

    name, display = "tsa", "TSA"
    pairs = maps = steps = True
    recipes = {"FineDiving": FinetuneRecipe(
        "tsa", "FineDiving", "tsa_finediving", lr_backbone=1e-4, lr_head=1e-3, weight_decay=0.0, batch_size=8,
        grad_accum_steps=1, epochs=200, bn_mode="frozen", official_protocol="official", max_crop=112)}

    def extras(self, epoch: int, epochs: int) -> dict[str, torch.Tensor]:
        """The epoch's teacher-forcing flag (:func:`teacher_forcing`)."""
        return {"teacher": torch.tensor(teacher_forcing(epoch, epochs))}

    def build(self, feature_dim: int, windowing: Windowing, dataset_key: str, *, decode: str,
              values: np.ndarray, groups: Sequence[str], segment_pairs: str = "separate") -> nn.Module:
        """:class:`TSA` for the windowing's windows and frames."""
        return TSA(windowing.num_windows, windowing.clip_frames, feature_dim, segment_pairs=segment_pairs)

    def loss(self, head: nn.Module, batch: dict[str, torch.Tensor], a: WindowFeatures,
             b: WindowFeatures | None = None) -> torch.Tensor:
        """:meth:`TSA.pair_loss`, segmenting with the true transitions when the batch says teacher forcing."""
        assert b is not None, "TSA learns from pairs"
        ta, tb = batch["transitions_a"], batch["transitions_b"]
        forced = bool(batch["teacher"][0])
        out = head.pair(a, b, ta if forced else None, tb if forced else None)  # type: ignore[operator]
        return head.pair_loss(out, batch["value_a"], batch["value_b"], ta, tb)  # type: ignore[operator]

    def relative(self, head: nn.Module, query: WindowFeatures, exemplar: WindowFeatures,
                 s_exemplar: torch.Tensor) -> torch.Tensor:
        """:meth:`TSA.relative_to`."""
        return head.relative_to(query, exemplar, s_exemplar)  # type: ignore[operator]
