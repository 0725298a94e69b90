"""RSPNet: triplet sampler, momentum encoder, queue, and the loss against a hand computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _heads_stand_ins import TinyBackbone

from pecop_lib.ssl import RSPNet, RSPNetOutput, RSPNetSampler, looped_indices, rspnet_loss


def test_sampler_triplets_share_the_key_window_at_two_speeds() -> None:
    sampler = RSPNetSampler(clip_len=4, speeds=(2, 3))
    rng = np.random.default_rng(0)
    fast_seen = set()
    for _ in range(300):
        sample = sampler.sample(50, rng)
        same, other = (sample.speed, 1) if sample.query_fast else (1, sample.speed)
        assert np.diff(sample.query).tolist() == [same] * 3
        assert np.diff(sample.key).tolist() == [same] * 3
        assert np.diff(sample.key_other_speed).tolist() == [other] * 3
        assert sample.key[0] == sample.key_other_speed[0]
        assert max(sample.query + sample.key + sample.key_other_speed) <= 50
        fast_seen.add((sample.query_fast, sample.speed))
    assert fast_seen == {(True, 2), (True, 3), (False, 2), (False, 3)}


def test_looped_indices_wrap_modulo_the_video() -> None:
    assert looped_indices(5, 4, 2, 4) == [4, 1, 3, 5]
    with pytest.raises(ValueError, match="outside 1..5"):
        looped_indices(5, 6, 1, 2)
    with pytest.raises(ValueError, match="factors >= 2"):
        RSPNetSampler(speeds=(1,))


def _model(queue_size: int = 6) -> RSPNet:
    torch.manual_seed(0)
    return RSPNet(TinyBackbone(8), proj_dim=4, queue_size=queue_size, momentum=0.9, temperature=0.5)


def test_momentum_encoder_gets_no_gradients_and_follows_the_ema() -> None:
    model = _model()
    clips = [torch.randn(2, 3, 4, 6, 6) for _ in range(3)]
    out = model(*clips)
    loss, _ = rspnet_loss(out)
    loss.backward()
    assert all(p.grad is None for p in model.encoder_k.parameters())
    assert all(p.grad is not None for p in model.encoder_q.parameters())
    before_k = [p.detach().clone() for p in model.encoder_k.parameters()]
    with torch.no_grad():
        for p in model.encoder_q.parameters():
            p.add_(1.0)
    model(*clips)  # training forward: EMA update first
    for k_before, q, k in zip(before_k, model.encoder_q.parameters(), model.encoder_k.parameters(), strict=True):
        torch.testing.assert_close(k, 0.9 * k_before + 0.1 * q)
    model.eval()
    frozen = [p.detach().clone() for p in model.encoder_k.parameters()]
    model(*clips)
    assert all(torch.equal(a, b) for a, b in zip(frozen, model.encoder_k.parameters(), strict=True))


def test_queue_receives_the_other_speed_keys_and_wraps() -> None:
    model = _model(queue_size=3)
    clips = [torch.randn(2, 3, 4, 6, 6) for _ in range(3)]
    model(*clips)
    assert int(model.queue_ptr) == 2
    model.eval()
    keys, _ = model.encoder_k(clips[2])
    model.enqueue(keys)  # slots 2 and 0 (wrap)
    torch.testing.assert_close(model.queue[:, 2], keys[0])
    torch.testing.assert_close(model.queue[:, 0], keys[1])
    assert int(model.queue_ptr) == 1


def test_loss_matches_hand_computation() -> None:
    same = torch.tensor([[2.0, 0.0, 1.0], [0.5, 1.0, 0.0]])
    other = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    out = RSPNetOutput(same, other, torch.tensor([1.5, 0.2]), torch.tensor([1.0, 0.4]))
    loss, metrics = rspnet_loss(out, margin=1.0, weight_appearance=2.0, weight_speed=0.5)
    target = torch.zeros(2, dtype=torch.long)
    ce = F.cross_entropy(same, target) + F.cross_entropy(other, target)
    ranking = (max(0.0, -(1.5 - 1.0) + 1.0) + max(0.0, -(0.2 - 0.4) + 1.0)) / 2  # = (0.5 + 1.2) / 2
    torch.testing.assert_close(loss, 2.0 * ce + 0.5 * torch.tensor(ranking))
    assert metrics["rsp_acc"].item() == 0.5  # 1.5 > 1.0 yes, 0.2 > 0.4 no
    assert metrics["avid_acc"].item() == 0.5  # row 0 positive wins, row 1 loses to a negative
