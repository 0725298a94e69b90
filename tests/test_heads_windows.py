"""Clip windowing of the AQA heads: official window starts, shortened clips, window features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pecop_lib.heads.windows import (
    OFFICIAL_WINDOWINGS,
    WindowFeatures,
    Windowing,
    encode_windows,
    evenly_spaced,
    windowing_for,
)
from tests._heads_stand_ins import TinyBackbone, single_thread  # noqa: F401 (autouse fixture)


def test_official_window_starts() -> None:
    musdl, core = OFFICIAL_WINDOWINGS["musdl_mtl_aqa"], OFFICIAL_WINDOWINGS["core_mtl_aqa"]
    assert musdl.starts == (0, 10, 20, 30, 40, 50, 60, 70, 80, 87) and not musdl.batched
    assert core.starts == (0, 10, 20, 30, 40, 50, 60, 70, 80, 86) and core.batched
    assert musdl.indices()[-1, -1] == 102 and musdl.indices().shape == (10, 16)  # the last 16 of 103 frames
    jig = OFFICIAL_WINDOWINGS["musdl_jigsaws"]
    assert jig.clip_frames == 160 and jig.starts == tuple(range(0, 160, 16))
    np.testing.assert_array_equal(np.sort(jig.indices().ravel()), np.arange(160))  # non-overlapping, covering
    tsa = OFFICIAL_WINDOWINGS["tsa_finediving"]
    assert tsa.clip_frames == 96 and tsa.num_windows == 9 and tsa.indices()[-1, -1] == 95


def test_windowing_for_short_clips_and_errors() -> None:
    assert windowing_for("core_mtl_aqa") is OFFICIAL_WINDOWINGS["core_mtl_aqa"]
    assert windowing_for("core_mtl_aqa", 103) is OFFICIAL_WINDOWINGS["core_mtl_aqa"]
    assert windowing_for("core_mtl_aqa", 16).starts == (0,)
    w = windowing_for("musdl_mtl_aqa", 40)
    assert w.num_windows == 10 and w.starts[0] == 0 and w.starts[-1] == 24 and not w.batched
    assert windowing_for("tsa_finediving", 20).starts == (
        0,
        1,
        2,
        3,
        4,
    )  # only 5 distinct 16-frame windows fit
    assert evenly_spaced(8, 8, 3).starts == (0,)
    with pytest.raises(ValueError, match="unknown windowing scheme"):
        windowing_for("usdl")
    with pytest.raises(ValueError, match="do not fit"):
        Windowing(20, 16, (0, 8))


def test_encode_windows_matches_per_window_backbone_calls() -> None:
    torch.manual_seed(0)
    backbone = TinyBackbone(16).eval()
    clips = torch.randn(3, 3, 12, 8, 8)
    windowing = Windowing(12, 8, (0, 2, 4))
    feats = encode_windows(backbone, clips, windowing, maps=True)
    assert feats.pooled.shape == (3, 3, 16) and feats.maps.shape == (3, 3, 16, 2, 2)
    for i, s in enumerate(windowing.starts):
        torch.testing.assert_close(feats.pooled[:, i], backbone.forward_pooled(clips[:, :, s : s + 8]))
        torch.testing.assert_close(
            feats.maps[:, i], backbone.forward_features(clips[:, :, s : s + 8]).mean(dim=2)
        )
    torch.testing.assert_close(feats.video(), feats.pooled.mean(dim=1))
    backbone.calls = 0
    one_by_one = encode_windows(backbone, clips, Windowing(12, 8, (0, 2, 4), batched=False))
    assert backbone.calls == 3
    torch.testing.assert_close(one_by_one.pooled, feats.pooled)  # eval mode: batching does not matter
    part = WindowFeatures.cat([feats.select(slice(0, 1)), feats.select(slice(1, 3))])
    torch.testing.assert_close(part.maps, feats.maps)
    with pytest.raises(ValueError, match="expects 12-frame clips"):
        encode_windows(backbone, torch.randn(1, 3, 10, 8, 8), windowing)


def test_batched_windows_share_batchnorm_statistics_in_training() -> None:
    """In training mode the official packing (one call) and MUSDL's per-window calls differ: the switch matters."""
    torch.manual_seed(0)
    backbone = TinyBackbone(16).train()
    clips = torch.randn(2, 3, 12, 8, 8) + torch.linspace(0, 3, 12).view(1, 1, 12, 1, 1)
    packed = encode_windows(backbone, clips, Windowing(12, 4, (0, 8)))
    single = encode_windows(backbone, clips, Windowing(12, 4, (0, 8), batched=False))
    assert not torch.allclose(packed.pooled, single.pooled)
