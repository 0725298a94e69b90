"""VSPP: official sampler vs hand-traced frame lists, paper-mode bounds, labels, head and loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _heads_stand_ins import TinyBackbone

from pecop_lib.ssl import (
    PretextModel,
    VSPPHead,
    VSPPSampler,
    segment_positions,
    vspp_loss,
    vspp_official_indices,
    vspp_paper_indices,
)

# Each case was traced by hand from the official loop (datasets/ucf101.py, loop_load_rgb) with
# N' = num_frames - 3: segment frames advance by `speed` and jump to frame 1 when the next one would
# pass N'; normal frames advance by `fr`, start at (last segment frame + 1) and jump to frame 1 when
# the current frame + 4 passes N'.
OFFICIAL_CASES = [
    pytest.param(
        {"num_frames": 200, "start": 10, "speed": 5, "segment": 2, "normal_pace": 3},
        [10, 13, 16, 19, 22, 25, 28, 31,  # positions 0-7, normal pace 3
         36, 41, 46, 51, 56, 61, 66, 71, 76,  # positions 8-16 (inclusive bounds: 9 frames), +5
         77, 80, 83, 86, 89, 92, 95, 98, 101, 104, 107, 110, 113, 116, 119],  # exit +1, then +3
        id="reference-worked-example-fr3-seg2",
    ),
    pytest.param(
        {"num_frames": 100, "start": 5, "speed": 4, "segment": 1, "normal_pace": 1},
        [5, 9, 13, 17, 21, 25, 29, 33, 37,  # segment 1 starts at `start`, positions 0-8
         38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60],
        id="segment1-fr1",
    ),
    pytest.param(
        {"num_frames": 50, "start": 3, "speed": 2, "segment": 4, "normal_pace": 1},
        [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26,
         28, 30, 32, 34, 36, 38, 40, 42],  # segment 4 = positions 24-31 (8 frames)
        id="segment4-last-8-positions",
    ),
    pytest.param(
        {"num_frames": 60, "start": 20, "speed": 2, "segment": 1, "normal_pace": 3},
        [20, 22, 24, 26, 28, 30, 32, 34, 36,
         37, 40, 43, 46, 49, 52, 55,  # 55 + 4 > 57 = N': the next frame is 1
         1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31, 34, 37, 40, 43, 46],
        id="wrap-in-normal-region",
    ),
    pytest.param(
        {"num_frames": 50, "start": 12, "speed": 5, "segment": 2, "normal_pace": 1},
        [12, 13, 14, 15, 16, 17, 18, 19,
         24, 29, 34, 39, 44,  # next would be 49 > 47 = N': jump to frame 1 inside the segment
         1, 6, 11, 16,
         17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31],
        id="wrap-inside-segment",
    ),
    pytest.param(
        {"num_frames": 48, "start": 3, "speed": 5, "segment": 1, "normal_pace": 1},
        [3, 8, 13, 18, 23, 28, 33, 38, 43,  # next would be 48 > 45: the normal region restarts at 1
         1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23],
        id="wrap-at-segment-end",
    ),
    pytest.param(
        {"num_frames": 100, "start": 1, "speed": 3, "segment": 2, "normal_pace": 1, "max_segment": 3},
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
         13, 16, 19, 22, 25, 28, 31, 34, 37, 40, 43, 46,  # int(32/3)=10 .. int(64/3)=21: 12 positions
         47, 48, 49, 50, 51, 52, 53, 54, 55, 56],
        id="three-segments",
    ),
    pytest.param(
        {"num_frames": 20, "start": 2, "speed": 4, "segment": 3, "normal_pace": 2, "clip_len": 8},
        [2, 4, 6, 8, 12, 16, 1, 2],  # positions 4-6; 8+3*4=20 > 17 -> frame 1; exit step +1
        id="short-clip-wrap-and-repeat",
    ),
]


@pytest.mark.parametrize(("kwargs", "expected"), OFFICIAL_CASES)
def test_official_indices_equal_hand_traced_reference(kwargs: dict, expected: list[int]) -> None:
    assert vspp_official_indices(**kwargs) == expected


def test_official_indices_defaults_match_the_public_signature() -> None:
    # normal_pace defaults to 1, clip_len to 32, max_segment to 4
    assert vspp_official_indices(100, 5, 4, 1) == OFFICIAL_CASES[1].values[1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_frames": 40, "start": 6, "speed": 2, "segment": 1}, "outside 1..5"),
        ({"num_frames": 40, "start": 0, "speed": 2, "segment": 1}, "outside 1..5"),
        ({"num_frames": 100, "start": 5, "speed": 1, "segment": 1}, "equals the normal pace"),
        ({"num_frames": 100, "start": 5, "speed": 2, "segment": 5}, "segment must be in 1..4"),
    ],
)
def test_official_indices_reject_values_the_official_sampler_never_draws(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        vspp_official_indices(**kwargs)


def test_official_segment_bounds_are_inclusive_9_9_9_8() -> None:
    sizes = [len(segment_positions(s, mode="official")) for s in (1, 2, 3, 4)]
    assert sizes == [9, 9, 9, 8]
    assert list(segment_positions(2, mode="official")) == list(range(8, 17))
    assert [len(segment_positions(s, num_segments=3, mode="official")) for s in (1, 2, 3)] == [11, 12, 11]


def test_paper_segment_bounds_are_equal_and_disjoint() -> None:
    for zeta in (3, 4):
        parts = [list(segment_positions(s, num_segments=zeta, mode="paper")) for s in range(1, zeta + 1)]
        assert [p for part in parts for p in part] == list(range(32))  # a partition of the clip
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert [len(segment_positions(s, mode="paper")) for s in (1, 2, 3, 4)] == [8, 8, 8, 8]


def test_paper_indices_hand_traced() -> None:
    # L=8, zeta=4: segment 2 = positions 2, 3, one step of speed 3 between them; pace 1 elsewhere
    assert vspp_paper_indices(100, 5, 3, 2, clip_len=8) == [5, 6, 7, 10, 11, 12, 13, 14]
    # normal pace 3: segment 1 = positions 0, 1 (one step of 5); the exit step is the normal pace
    # (the official code would step +1)
    assert vspp_paper_indices(100, 1, 5, 1, clip_len=8, normal_pace=3) == [1, 6, 9, 12, 15, 18, 21, 24]
    # zeta=2, segment 2 = positions 4-7 at speed 2; a video shorter than the span (12 frames)
    # loops modulo N instead of jumping to frame 1
    assert vspp_paper_indices(10, 7, 2, 2, clip_len=8, num_segments=2) == [7, 8, 9, 10, 1, 3, 5, 7]


@pytest.mark.parametrize("normal_pace", [1, 3])
def test_official_sampler_draws_stay_in_video_and_labels_fit_the_heads(normal_pace: int) -> None:
    sampler = VSPPSampler(mode="official", normal_pace=normal_pace)
    rng = np.random.default_rng(0)
    seen_speed, seen_segment = set(), set()
    for _ in range(2000):
        num_frames = int(rng.integers(sampler.min_frames, 300))
        sample = sampler.sample(num_frames, rng)
        assert len(sample.frames) == 32
        assert 1 <= min(sample.frames) and max(sample.frames) <= num_frames
        assert 1 <= sample.draw.start <= num_frames - 3 - 32
        seen_speed.add(sample.speed_label)
        seen_segment.add(sample.segment_label)
    assert seen_speed == {0, 1, 2, 3, 4} - {normal_pace - 1}  # 5-way head, one dead class
    assert seen_segment == {0, 1, 2, 3}
    assert sampler.num_speed_classes == 5 and sampler.num_segment_classes == 4


def test_paper_sampler_bounds_labels_and_clean_pace() -> None:
    sampler = VSPPSampler(mode="paper", normal_pace=1)
    assert sampler.speeds == (2, 3, 4, 5) and sampler.num_speed_classes == 4
    rng = np.random.default_rng(1)
    labels = set()
    for _ in range(1000):
        num_frames = int(rng.integers(20, 300))
        sample = sampler.sample(num_frames, rng)
        frames = sample.frames
        assert 1 <= min(frames) and max(frames) <= num_frames
        span = sampler.span(sample.draw.speed, sample.draw.segment)
        if num_frames >= span:  # fits: no loop, exact paces everywhere
            steps = np.diff(frames)
            inside = segment_positions(sample.draw.segment, mode="paper")
            expected = [sample.draw.speed if i in inside and i - 1 in inside else 1 for i in range(1, 32)]
            assert steps.tolist().count(sample.draw.speed) == len(inside) - 1
            assert steps.tolist() == expected
        labels.add((sample.speed_label, sample.segment_label))
    assert {s for s, _ in labels} == {0, 1, 2, 3} and {g for _, g in labels} == {0, 1, 2, 3}


def test_sampler_is_a_pure_function_of_its_generator() -> None:
    sampler = VSPPSampler()
    a = [sampler.sample(120, np.random.default_rng(7)) for _ in range(3)]
    b = [sampler.sample(120, np.random.default_rng(7)) for _ in range(3)]
    assert a == b
    t1 = sampler.sample(120, torch.Generator().manual_seed(3))
    t2 = sampler.sample(120, torch.Generator().manual_seed(3))
    assert t1 == t2


def test_sampler_rejects_short_video_and_bad_settings() -> None:
    with pytest.raises(ValueError, match="at least 36 frames"):
        VSPPSampler().sample(35, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown VSPP mode"):
        VSPPSampler(mode="papers")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no speed left"):
        VSPPSampler(max_speed=1)


def test_head_shapes_and_loss_matches_two_cross_entropies() -> None:
    torch.manual_seed(0)
    head = VSPPHead(8, 5, 4, dropout=0.0)
    features = torch.randn(6, 8)
    logits = head(features)
    assert logits.speed.shape == (6, 5) and logits.segment.shape == (6, 4)
    labels = torch.tensor([[0, 0], [1, 3], [3, 2], [4, 1], [2, 0], [1, 1]])
    loss, metrics = vspp_loss(logits, labels)
    expected = torch.nn.functional.cross_entropy(logits.speed, labels[:, 0]) + torch.nn.functional.cross_entropy(
        logits.segment, labels[:, 1]
    )
    torch.testing.assert_close(loss, expected)
    speed_acc = (logits.speed.argmax(1) == labels[:, 0]).float().mean()
    torch.testing.assert_close(metrics["speed_acc"], speed_acc)
    torch.testing.assert_close(metrics["acc"], (speed_acc + metrics["segment_acc"]) / 2)


def test_head_dropout_uses_two_independent_masks() -> None:
    torch.manual_seed(0)
    head = VSPPHead(64, 5, 5, dropout=0.5).train()
    head.segment.load_state_dict(head.speed.state_dict())  # same weights: only the masks differ
    out = head(torch.ones(4, 64))
    assert not torch.equal(out.speed, out.segment)
    head.eval()
    out = head(torch.ones(4, 64))
    assert torch.equal(out.speed, out.segment)


def test_loss_rejects_labels_outside_the_heads() -> None:
    logits = VSPPHead(8, 5, 4)(torch.randn(2, 8))
    with pytest.raises(ValueError, match="segment labels .* outside the 4-way head"):
        vspp_loss(logits, torch.tensor([[0, 4], [1, 1]]))
    with pytest.raises(ValueError, match=r"shape \(B, 2\)"):
        vspp_loss(logits, torch.tensor([0, 1]))


def test_pretext_model_learns_a_fixed_batch() -> None:
    torch.manual_seed(0)
    model = PretextModel(TinyBackbone(8), VSPPHead(8, 5, 4, dropout=0.0))
    clips = torch.randn(8, 3, 4, 6, 6)
    labels = torch.stack([torch.arange(8) % 5, torch.arange(8) % 4], 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    first = None
    for _ in range(60):
        loss, metrics = vspp_loss(model(clips), labels)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5 * first
    assert metrics["acc"].item() > 0.6


def test_pretext_model_requires_the_pooled_interface() -> None:
    with pytest.raises(TypeError, match="forward_pooled"):
        PretextModel(torch.nn.Linear(3, 3), VSPPHead(3, 5, 4))
