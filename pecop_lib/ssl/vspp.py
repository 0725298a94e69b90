"""VSPP: video segment pace prediction, the pretext task PECoP trains its 3D-Adapters with.

A clip of ``clip_len`` frames is read at a *normal pace* (a frame step of ``normal_pace``) except
inside one of ``num_segments`` temporal segments, where it is read at another *speed* (frame step).
The network predicts both the speed and which segment was re-paced (two classifiers, summed
cross-entropies).

Two sampler modes:

``"official"``
    Reproduces the frame numbers that the official PECoP loader (``datasets/ucf101.py``,
    ``PECoP_SSL``) reads, index for index, including its quirks (see :func:`vspp_official_indices`).
``"paper"``
    Follows the paper's description with clean bounds (see :func:`vspp_paper_indices`).

Differences, official code vs paper text (every one is a switch here):

=================== ========================================== ==========================================
aspect              ``official``                               ``paper``
=================== ========================================== ==========================================
frame count         list-file count minus 3 is used as N       true frame count N
speeds              ``{1..max_speed} minus normal_pace``       same set (lambda = ``max_speed - 1`` paces)
speed label         ``speed - 1`` on a ``max_speed``-way head  rank of the speed on a lambda-way head
                    (class ``normal_pace - 1`` is never a      (no dead class)
                    target: one dead logit)
segment positions   ``int((s-1)*L/Z) .. int(s*L/Z)`` both      ``floor((s-1)*L/Z) .. floor(s*L/Z) - 1``:
                    inclusive: 9/9/9/8 frames for L=32, Z=4    equal segments, 8/8/8/8 for L=32, Z=4
step into segment   last normal frame + speed                  last normal frame + ``normal_pace``
step out of segment last segment frame + 1 (hard-coded; an     last segment frame + ``normal_pace``
                    artefact when ``normal_pace`` != 1)        (so every segment of k frames has exactly
                                                               k - 1 steps of ``speed``, segment 1 too)
end of video        jumps back to frame 1 and continues (the   start drawn so the clip fits; the clip
                    normal region tests ``frame + 4 > N``,     loops (modulo N) only if the video is
                    not ``frame + normal_pace``)               shorter than the clip's span
start frame         uniform in ``1..N-3-clip_len``             uniform over the starts where the clip fits
=================== ========================================== ==========================================

Further code-vs-paper facts that live outside the sampler (recipe and head):

* The official heads are 1x1x1 convolutions applied to ``Dropout(0.5)`` of the un-pooled features
  (one dropout module called twice: two independent masks) and then averaged over time;
  :class:`VSPPHead` applies dropout and a linear layer to the pooled features, which is the same
  map without dropout (a 1x1x1 convolution commutes with the time average) and equal in expectation
  with it.
* The official list is repeated x20 per epoch (the paper's VSPP description: x10), colour jitter
  is built but never applied, and the learning rate is hard-coded to 0.01 (README: 1e-3); those are
  recipe switches in :mod:`pecop_lib.config`.
* The paper's (lambda, zeta) = (4, 4) is ``max_speed=5, num_segments=4`` here; its alternative
  (4, 3) is ``num_segments=3`` (official inclusive bounds: 11/12/11 frames for L = 32).

Frame numbers are 1-based, as in the official ``img_%05d.jpg`` names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from pecop_lib.ssl.draws import RandomSource, choice, randint
from pecop_lib.ssl.pretext import accuracy

VSPPMode = Literal["official", "paper"]
VSPP_MODES: tuple[str, ...] = ("official", "paper")

OFFICIAL_FRAME_MARGIN = 3
"""The official loader subtracts 3 from the list file's frame count before sampling."""

OFFICIAL_END_LOOKAHEAD = 4
"""The official normal-pace region wraps to frame 1 when ``frame + 4`` exceeds the (reduced) count."""


def _check_common(clip_len: int, num_segments: int, segment: int, speed: int, normal_pace: int) -> None:
    if clip_len < 1:
        raise ValueError(f"clip_len must be >= 1, got {clip_len}")
    if not 1 <= num_segments <= clip_len:
        raise ValueError(f"num_segments must be in 1..clip_len={clip_len}, got {num_segments}")
    if not 1 <= segment <= num_segments:
        raise ValueError(f"segment must be in 1..{num_segments} (1-based), got {segment}")
    if speed < 1 or normal_pace < 1:
        raise ValueError(f"speed and normal_pace must be >= 1, got speed={speed}, normal_pace={normal_pace}")
    if speed == normal_pace:
        raise ValueError(
            f"speed {speed} equals the normal pace; VSPP never draws it (the re-paced segment would be invisible)"
        )


def segment_positions(segment: int, *, clip_len: int = 32, num_segments: int = 4, mode: VSPPMode = "official") -> range:
    """Output positions (0-based, within the clip) that are read at the segment's speed.

    Args:
        segment: 1-based segment number.
        clip_len: Frames per clip (L).
        num_segments: Number of segments (zeta, official ``max_segment``).
        mode: ``"official"``: ``int((s-1)*(L/Z)) .. int(s*(L/Z))`` inclusive, clipped to the clip (the
            official float expression, so 9/9/9/8 positions for L=32, Z=4). ``"paper"``: the half-open
            ``floor((s-1)*L/Z) .. floor(s*L/Z)``, equal segments.

    Returns:
        The positions as a ``range``.
    """
    if mode == "official":
        first = int((segment - 1) * (clip_len / num_segments))
        last = int(segment * (clip_len / num_segments))
        return range(first, min(last, clip_len - 1) + 1)
    if mode == "paper":
        return range((segment - 1) * clip_len // num_segments, segment * clip_len // num_segments)
    raise ValueError(f"unknown VSPP mode {mode!r}; choose one of {VSPP_MODES}")


def vspp_official_indices(
    num_frames: int,
    start: int,
    speed: int,
    segment: int,
    *,
    clip_len: int = 32,
    max_segment: int = 4,
    normal_pace: int = 1,
) -> list[int]:
    """Frame numbers the official PECoP loader reads for one VSPP clip.

    Reproduces ``PECoP_SSL.loop_load_rgb`` exactly:

    * Outside the segment the frame advances by ``normal_pace``; inside it by ``speed``.
    * Entering the segment, the first segment frame is the last normal frame + ``speed``
      (segment 1 starts at ``start`` itself).
    * Leaving the segment, the first normal frame is the last segment frame **+ 1**, then
      ``+ normal_pace`` per step.
    * Inside the segment, if the next segment frame would exceed ``N' = num_frames - 3``, the next
      frame read is frame 1; outside, if the current frame + 4 exceeds ``N'``, the next frame read is
      frame 1. Reading then continues from frame 1 with the same rules.

    Args:
        num_frames: The frame count written in the official list file (the function applies the
            official ``- 3`` itself).
        start: The official 1-based start frame, in ``1 .. num_frames - 3 - clip_len``.
        speed: The segment's frame step (official ``sample_rate``), ``!= normal_pace``.
        segment: The re-paced segment, 1-based, in ``1..max_segment``.
        clip_len: Frames per clip (official default 32).
        max_segment: Number of segments (official default 4).
        normal_pace: The normal frame step (official ``fr``: 3 for gait, 1 for other tasks).

    Returns:
        ``clip_len`` 1-based frame numbers (``img_%05d.jpg``), in reading order.

    Raises:
        ValueError: If a value is outside the ranges the official sampler draws from, naming it.

    Example:
        >>> vspp_official_indices(200, 10, 5, 2, normal_pace=3)[:10]
        [10, 13, 16, 19, 22, 25, 28, 31, 36, 41]
    """
    _check_common(clip_len, max_segment, segment, speed, normal_pace)
    usable = num_frames - OFFICIAL_FRAME_MARGIN
    if not 1 <= start <= usable - clip_len:
        raise ValueError(
            f"start {start} is outside 1..{usable - clip_len}, the official range for a video whose list "
            f"file says {num_frames} frames (it draws start in 1..num_frames-3-clip_len; a video needs at "
            f"least clip_len + 4 = {clip_len + OFFICIAL_FRAME_MARGIN + 1} frames)"
        )
    in_segment = segment_positions(segment, clip_len=clip_len, num_segments=max_segment, mode="official")

    frames: list[int] = []
    segment_origin, segment_steps = start, 0  # segment frames are segment_origin + k * speed
    normal_origin, normal_offset = start, 0  # normal frames are normal_origin + normal_offset
    for position in range(clip_len):
        if position in in_segment:
            frame = segment_origin + segment_steps * speed
            frames.append(frame)
            normal_origin, normal_offset = frame, 1  # leaving the segment continues at frame + 1
            if segment_origin + (segment_steps + 1) * speed > usable:
                segment_origin, segment_steps = 1, 0
                normal_origin, normal_offset = 1, 0
            else:
                segment_steps += 1
        else:
            frame = normal_origin + normal_offset
            frames.append(frame)
            segment_origin, segment_steps = frame, 1  # entering the segment continues at frame + speed
            if frame + OFFICIAL_END_LOOKAHEAD > usable:
                normal_origin, normal_offset = 1, 0
                segment_origin, segment_steps = 1, 0
            else:
                normal_offset += normal_pace
    return frames


def vspp_paper_offsets(speed: int, segment: int, *, clip_len: int = 32, num_segments: int = 4, normal_pace: int = 1) -> list[int]:
    """Frame offsets from the start frame of a paper-mode VSPP clip (first offset 0).

    Consecutive positions that both lie in the segment are ``speed`` frames apart; every other step
    (including the steps into and out of the segment) is ``normal_pace``.
    """
    _check_common(clip_len, num_segments, segment, speed, normal_pace)
    in_segment = segment_positions(segment, clip_len=clip_len, num_segments=num_segments, mode="paper")
    offsets = [0]
    for position in range(1, clip_len):
        inside = position in in_segment and position - 1 in in_segment
        offsets.append(offsets[-1] + (speed if inside else normal_pace))
    return offsets


def vspp_paper_indices(
    num_frames: int,
    start: int,
    speed: int,
    segment: int,
    *,
    clip_len: int = 32,
    num_segments: int = 4,
    normal_pace: int = 1,
) -> list[int]:
    """Frame numbers of a VSPP clip as the paper describes it (clean bounds).

    Equal segments (half-open bounds), ``speed`` between consecutive segment frames, ``normal_pace``
    for every other step (also into and out of the segment), the true frame count, and no jump to frame 1: if
    the clip's span exceeds the video, frame numbers loop modulo ``num_frames``.

    Args:
        num_frames: True number of frames N of the video.
        start: 1-based first frame, in ``1..N``.
        speed: Frame step inside the segment.
        segment: 1-based segment number.
        clip_len: Frames per clip.
        num_segments: Number of segments (zeta).
        normal_pace: Frame step outside the segment.

    Returns:
        ``clip_len`` 1-based frame numbers in ``1..N``.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not 1 <= start <= num_frames:
        raise ValueError(f"start {start} is outside 1..{num_frames} (the video's frames)")
    offsets = vspp_paper_offsets(speed, segment, clip_len=clip_len, num_segments=num_segments, normal_pace=normal_pace)
    return [(start - 1 + offset) % num_frames + 1 for offset in offsets]


class VSPPDraw(NamedTuple):
    """The random choices behind one VSPP clip (all 1-based, as in the official code)."""

    speed: int
    segment: int
    start: int


class VSPPSample(NamedTuple):
    """One VSPP training example before decoding: which frames to read and the two labels."""

    frames: list[int]
    speed_label: int
    segment_label: int
    draw: VSPPDraw


@dataclass(frozen=True)
class VSPPSampler:
    """Draws VSPP clips: a pure function of (number of frames, random generator).

    Args:
        mode: ``"official"`` or ``"paper"`` (see the module docstring for every difference).
        clip_len: Frames per clip (L; official 32).
        max_speed: Largest frame step (official ``max_sr`` = 5). Speeds are
            ``{1..max_speed} minus normal_pace``, i.e. lambda = ``max_speed - 1`` paces.
        num_segments: Number of segments (zeta; official ``max_segment`` = 4).
        normal_pace: Frame step outside the segment (official ``fr``: 3 for gait, 1 otherwise).

    Example:
        >>> import numpy as np
        >>> sampler = VSPPSampler(mode="official", normal_pace=3)
        >>> sample = sampler.sample(120, np.random.default_rng(0))
        >>> len(sample.frames), 0 <= sample.speed_label < sampler.num_speed_classes
        (32, True)
    """

    mode: VSPPMode = "official"
    clip_len: int = 32
    max_speed: int = 5
    num_segments: int = 4
    normal_pace: int = 1

    def __post_init__(self) -> None:
        if self.mode not in VSPP_MODES:
            raise ValueError(f"unknown VSPP mode {self.mode!r}; choose one of {VSPP_MODES}")
        if not 1 <= self.num_segments <= self.clip_len:
            raise ValueError(f"num_segments must be in 1..clip_len={self.clip_len}, got {self.num_segments}")
        if not self.speeds:
            raise ValueError(
                f"no speed left: max_speed={self.max_speed} with normal_pace={self.normal_pace}; "
                "use max_speed >= 2"
            )

    @property
    def speeds(self) -> tuple[int, ...]:
        """The speeds that can be drawn, ascending."""
        return tuple(s for s in range(1, self.max_speed + 1) if s != self.normal_pace)

    @property
    def num_speed_classes(self) -> int:
        """Width of the speed head: ``max_speed`` (official, one dead class) or lambda (paper)."""
        return self.max_speed if self.mode == "official" else len(self.speeds)

    @property
    def num_segment_classes(self) -> int:
        """Width of the segment head (zeta)."""
        return self.num_segments

    @property
    def min_frames(self) -> int:
        """Fewest frames a video needs: ``clip_len + 4`` (official start range), 1 in paper mode."""
        return self.clip_len + OFFICIAL_FRAME_MARGIN + 1 if self.mode == "official" else 1

    def span(self, speed: int, segment: int) -> int:
        """Frames covered (first to last, inclusive) by a paper-mode clip with this speed and segment."""
        return vspp_paper_offsets(
            speed, segment, clip_len=self.clip_len, num_segments=self.num_segments, normal_pace=self.normal_pace
        )[-1] + 1

    def draw(self, num_frames: int, rng: RandomSource) -> VSPPDraw:
        """Draw speed, segment and start for a video of ``num_frames`` frames.

        In official mode ``num_frames`` is the list-file count and the start is uniform in
        ``1..num_frames-3-clip_len``; in paper mode it is the true count and the start is uniform
        over the positions where the clip fits (``1`` if it never fits).

        Raises:
            ValueError: If the video is shorter than :attr:`min_frames`.
        """
        if num_frames < self.min_frames:
            raise ValueError(
                f"a video with {num_frames} frames is too short for {self.mode} VSPP with clip_len="
                f"{self.clip_len}: it needs at least {self.min_frames} frames"
            )
        speed = choice(rng, self.speeds)
        segment = randint(rng, 1, self.num_segments)
        if self.mode == "official":
            start = randint(rng, 1, num_frames - OFFICIAL_FRAME_MARGIN - self.clip_len)
        else:
            start = randint(rng, 1, max(1, num_frames - self.span(speed, segment) + 1))
        return VSPPDraw(speed=speed, segment=segment, start=start)

    def frames(self, num_frames: int, draw: VSPPDraw) -> list[int]:
        """1-based frame numbers for a drawn clip (see :func:`vspp_official_indices`, :func:`vspp_paper_indices`)."""
        if self.mode == "official":
            return vspp_official_indices(
                num_frames, draw.start, draw.speed, draw.segment,
                clip_len=self.clip_len, max_segment=self.num_segments, normal_pace=self.normal_pace,
            )
        return vspp_paper_indices(
            num_frames, draw.start, draw.speed, draw.segment,
            clip_len=self.clip_len, num_segments=self.num_segments, normal_pace=self.normal_pace,
        )

    def labels(self, draw: VSPPDraw) -> tuple[int, int]:
        """(speed label, segment label): official ``speed - 1``; paper the speed's rank. Segment ``- 1``."""
        if draw.speed not in self.speeds:
            raise ValueError(f"speed {draw.speed} is not one of this sampler's speeds {self.speeds}")
        speed_label = draw.speed - 1 if self.mode == "official" else self.speeds.index(draw.speed)
        return speed_label, draw.segment - 1

    def sample(self, num_frames: int, rng: RandomSource) -> VSPPSample:
        """Draw one clip: frame numbers plus labels."""
        draw = self.draw(num_frames, rng)
        speed_label, segment_label = self.labels(draw)
        return VSPPSample(self.frames(num_frames, draw), speed_label, segment_label, draw)


class VSPPLogits(NamedTuple):
    """Outputs of :class:`VSPPHead`."""

    speed: torch.Tensor  # (B, num_speed_classes)
    segment: torch.Tensor  # (B, num_segment_classes)


class VSPPHead(nn.Module):
    """Two linear classifiers on pooled features: the speed and the re-paced segment.

    Official: two 1x1x1 conv heads ``logits_p`` (``max_sr`` outputs, trained on the speed label) and
    ``logits_s`` (4 outputs, segment label), each on ``Dropout(0.5)`` of the features, averaged over
    time. Here: dropout then ``nn.Linear`` on the already pooled features (same map; see the module
    docstring).

    Args:
        feature_dim: Width C of the pooled features.
        num_speeds: Speed classes (:attr:`VSPPSampler.num_speed_classes`).
        num_segments: Segment classes.
        dropout: Dropout probability before each classifier (official 0.5; independent masks).
    """

    def __init__(self, feature_dim: int, num_speeds: int, num_segments: int, *, dropout: float = 0.5) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.speed = nn.Linear(feature_dim, num_speeds)
        self.segment = nn.Linear(feature_dim, num_segments)

    def forward(self, features: torch.Tensor) -> VSPPLogits:
        """Map pooled features ``(B, C)`` to speed logits ``(B, num_speeds)`` and segment logits ``(B, num_segments)``."""
        return VSPPLogits(self.speed(self.dropout(features)), self.segment(self.dropout(features)))


def vspp_loss(logits: VSPPLogits, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Official VSPP loss: ``CE(speed) + CE(segment)``, unweighted, with accuracies.

    Args:
        logits: Output of :class:`VSPPHead`.
        labels: ``(B, 2)`` integer tensor of ``[speed_label, segment_label]`` rows (the official
            label layout).

    Returns:
        The scalar loss and ``{"speed_acc", "segment_acc", "acc"}`` as 0-d tensors; ``acc`` is the mean
        of the two, the quantity the official script logs.

    Raises:
        ValueError: If ``labels`` is not ``(B, 2)`` or a label is outside its head.
    """
    if labels.ndim != 2 or labels.shape[1] != 2 or labels.shape[0] != logits.speed.shape[0]:
        raise ValueError(f"labels must have shape (B, 2) = ({logits.speed.shape[0]}, 2), got {tuple(labels.shape)}")
    speed, segment = labels[:, 0], labels[:, 1]
    for name, target, head in (("speed", speed, logits.speed), ("segment", segment, logits.segment)):
        if bool((target < 0).any()) or bool((target >= head.shape[1]).any()):
            raise ValueError(f"{name} labels {target.tolist()} are outside the {head.shape[1]}-way head")
    loss = F.cross_entropy(logits.speed, speed) + F.cross_entropy(logits.segment, segment)
    speed_acc, segment_acc = accuracy(logits.speed, speed), accuracy(logits.segment, segment)
    return loss, {"speed_acc": speed_acc, "segment_acc": segment_acc, "acc": (speed_acc + segment_acc) / 2}
