"""VideoPace: hand-traced official frame lists, label range, head and loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pecop_lib.ssl import PaceHead, PaceSampler, pace_indices, pace_loss


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # official loop (laura-wang/video-pace, loop_load_rgb): next frame > N -> restart at frame 1
        ((20, 15, 3, 8), [15, 18, 1, 4, 7, 10, 13, 16]),
        ((100, 10, 4, 6), [10, 14, 18, 22, 26, 30]),
        ((5, 5, 1, 7), [5, 1, 2, 3, 4, 5, 1]),
        ((9, 2, 4, 5), [2, 6, 1, 5, 9]),
    ],
)
def test_pace_indices_hand_traced(args: tuple[int, int, int, int], expected: list[int]) -> None:
    num_frames, start, pace, clip_len = args
    assert pace_indices(num_frames, start, pace, clip_len=clip_len) == expected


def test_pace_sampler_labels_and_bounds() -> None:
    sampler = PaceSampler(clip_len=16, max_pace=4)
    rng = np.random.default_rng(0)
    labels = set()
    for _ in range(500):
        num_frames = int(rng.integers(1, 200))
        sample = sampler.sample(num_frames, rng)
        assert len(sample.frames) == 16
        assert 1 <= min(sample.frames) and max(sample.frames) <= num_frames
        assert sample.label == sample.pace - 1
        labels.add(sample.label)
    assert labels == {0, 1, 2, 3} == set(range(sampler.num_classes))


def test_pace_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="outside 1..10"):
        pace_indices(10, 11, 2)
    with pytest.raises(ValueError, match="max_pace must be >= 2"):
        PaceSampler(max_pace=1)


def test_pace_head_and_loss() -> None:
    torch.manual_seed(0)
    head = PaceHead(8, 4)
    logits = head(torch.randn(5, 8))
    labels = torch.tensor([0, 1, 2, 3, 0])
    loss, metrics = pace_loss(logits, labels)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, labels))
    torch.testing.assert_close(metrics["acc"], (logits.argmax(1) == labels).float().mean())
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        pace_loss(logits, labels[:3])
