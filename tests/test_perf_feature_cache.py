"""Frozen-backbone features: cached == recomputed, keys follow every input, TSA encodes each query once."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from _heads_stand_ins import TinyBackbone, single_thread  # noqa: F401 (autouse fixture)
from _worlds import finetune_world as shared_finetune_world
from _worlds import tiny_world

from pecop_lib.data import MTLAQA, official_transform
from pecop_lib.heads import TSA, Windowing
from pecop_lib.heads.exemplars import FeatureCache, draw_exemplars, predict_with_exemplars
from pecop_lib.heads.feature_store import FeatureStore
from pecop_lib.models import build_backbone
from pecop_lib.store import state_sha256
from pecop_lib.train.context import RunContext


@pytest.fixture(scope="module")
def mtl_root(tmp_path_factory) -> Path:
    return tiny_world(tmp_path_factory.getbasetemp())["MTL-AQA"]


def _split(root: Path, **options) -> MTLAQA:
    transform = options.pop("transform", official_transform("core_mtl", train=False, crop=24))
    return MTLAQA(root, "test", transform=transform, train=False, clip_frames=16, **options)


def test_cached_features_equal_recomputed_ones_and_are_read_back(mtl_root: Path, tmp_path: Path) -> None:
    backbone = build_backbone("i3d", adapters=True, seed=0).eval()
    split = _split(mtl_root)
    windowing = Windowing(16, 8, (0, 8))
    store = FeatureStore(tmp_path / "features")
    first = store.window_features(backbone, split, windowing, batch_size=3)
    files = list((tmp_path / "features").glob("*.safetensors"))
    assert len(files) == 1 and first.pooled.shape == (len(split), 2, 1024) and first.maps is None
    recomputed = FeatureStore.compute(backbone, split, windowing, batch_size=2)
    torch.testing.assert_close(first.pooled, recomputed.pooled, rtol=0, atol=0)  # same batches or not: eval BN
    backbone.forward_features = None  # a cache hit must not touch the backbone
    again = store.window_features(backbone, split, windowing)
    assert torch.equal(again.pooled, first.pooled)


def test_the_key_follows_weights_statistics_data_windowing_and_precision(mtl_root: Path, tmp_path: Path) -> None:
    backbone = build_backbone("i3d", adapters=True, seed=0).eval()
    store = FeatureStore(tmp_path)
    split, windowing = _split(mtl_root), Windowing(16, 8, (0, 8))
    base = store.key(backbone, split, windowing)
    assert store.key(copy.deepcopy(backbone), _split(mtl_root), Windowing(16, 8, (0, 8))) == base
    reseeded = _split(mtl_root, seed=5)  # a deterministic split draws nothing from its seed: seeds share features
    assert store.key(backbone, reseeded, windowing) == base and torch.equal(reseeded[0]["clip"], split[0]["clip"])
    changed_weight = copy.deepcopy(backbone)
    with torch.no_grad():
        changed_weight.mixed_5c.adapter.alpha[0] += 1e-3  # an adapter weight
    changed_stats = copy.deepcopy(backbone)
    changed_stats.mixed_3b.branch_0.batch3d.running_mean[0] += 1e-3  # a BatchNorm buffer
    others = {
        store.key(changed_weight, split, windowing),
        store.key(changed_stats, split, windowing),
        store.key(backbone, _split(mtl_root, transform=official_transform("core_mtl", train=False, crop=16)), windowing),
        store.key(backbone, MTLAQA(mtl_root, "train", transform=split.transform, train=False, clip_frames=16), windowing),
        store.key(backbone, split, Windowing(16, 8, (0, 4, 8))),
        store.key(backbone, split, windowing, maps=True),
        store.key(backbone, split, windowing, amp_dtype=torch.bfloat16),
    }
    assert base not in others and len(others) == 7
    assert state_sha256(backbone) != state_sha256(changed_stats)


def test_random_clips_are_refused(mtl_root: Path, tmp_path: Path) -> None:
    backbone = build_backbone("i3d", seed=0).eval()
    training = MTLAQA(mtl_root, "train", transform=official_transform("core_mtl", train=True, crop=24),
                      train=True, clip_frames=16)
    with pytest.raises(ValueError, match="deterministic split only"):
        FeatureStore(tmp_path).window_features(backbone, training, Windowing(16, 8, (0, 8)))
    with pytest.raises(ValueError, match=r"backbone\.eval\(\)"):
        FeatureStore(tmp_path).window_features(backbone.train(), _split(mtl_root), Windowing(16, 8, (0, 8)))


def test_tsa_evaluation_reuses_the_query_features_for_the_transitions() -> None:
    """TSA needs each query's features twice (exemplar votes, transitions): one encoding serves both."""
    torch.manual_seed(0)
    clips = torch.randn(7, 3, 16, 16, 16)
    backbone = TinyBackbone(64).eval()
    windowing = Windowing(16, 4, (0, 4, 8, 12))
    tsa = TSA(num_windows=4, num_frames=16, feature_dim=64, num_heads=2).eval()
    draw = draw_exemplars(["g"] * 3, ["g"] * 4, 4)
    queries = FeatureCache(backbone, windowing, lambda i: clips[4 + i], maps=True)
    kwargs = {"query_clip": lambda i: clips[4 + i], "num_queries": 3, "exemplar_clip": lambda i: clips[i],
              "draw": draw, "exemplar_scores": torch.arange(4.0), "maps": True}
    backbone.calls = 0
    votes = predict_with_exemplars(tsa.relative_to, backbone, windowing, query_cache=queries, **kwargs)
    transitions = tsa.transitions(queries.features(range(3)))
    assert backbone.calls == 2  # one batch of queries, one of exemplars; the transitions encoded nothing
    assert transitions.shape == (3, 2)
    torch.testing.assert_close(votes, predict_with_exemplars(tsa.relative_to, backbone, windowing, cached=False,
                                                             **kwargs), rtol=0, atol=1e-4)


def test_a_filled_cache_serves_stored_features_and_refuses_unknown_videos() -> None:
    torch.manual_seed(1)
    clips = torch.randn(6, 3, 16, 16, 16)
    backbone = TinyBackbone(32).eval()
    windowing = Windowing(16, 8, (0, 8))
    with torch.inference_mode():
        from pecop_lib.heads.windows import encode_windows

        stored = encode_windows(backbone, clips, windowing)
    cache = FeatureCache.filled(stored, windowing)
    assert len(cache) == 6 and torch.equal(cache.features([4, 1]).pooled, stored.pooled[[4, 1]])
    with pytest.raises(KeyError, match="not in this precomputed feature cache"):
        cache.features([6])
    scores = np.arange(6.0)
    draw = draw_exemplars(["g"] * 2, ["g"] * 4, 3)

    def relative(q, e, s):
        return (q.video() - e.video()).mean(dim=1)

    backbone.calls = 0
    out = predict_with_exemplars(relative, backbone, windowing, query_clip=lambda i: clips[4 + i], num_queries=2,
                                 exemplar_clip=lambda i: clips[i], draw=draw, exemplar_scores=scores[:4],
                                 exemplar_cache=cache)
    assert backbone.calls == 1  # only the queries were encoded
    assert out.shape == (2,)


@pytest.fixture(scope="module")
def finetune_world(tmp_path_factory):
    return shared_finetune_world(tmp_path_factory.getbasetemp())


@pytest.mark.parametrize("head, dataset", [("core", "MTL-AQA"), ("tsa", "FineDiving"), ("usdl", "MTL-AQA")])
def test_frozen_backbone_fine_tuning_evaluates_from_stored_features(finetune_world, tmp_path, head, dataset) -> None:
    from pecop_lib.finetune import FinetuneOptions, Setting, finetune, open_finetune_data

    setting = Setting(head, dataset)
    options = FinetuneOptions(epochs=2, batch_size=2, decode="expectation", exemplars=2, exemplar_missing="any",
                              val_fraction=0.25, eval_batch_size=4, bootstrap=0, train_backbone="frozen")
    results = {}
    for name, store in (("encoded", False), ("stored", FeatureStore(tmp_path / "features"))):
        data = open_finetune_data(finetune_world[dataset], setting, crop=32, clip_frames=16, seed=0)
        torch.manual_seed(0)
        results[name] = finetune(TinyBackbone(128), setting, data, options,
                                 feature_store=store, run=RunContext(device="cpu", seed=0, show_progress=False))
    files = list((tmp_path / "features").glob("*.safetensors"))
    if setting.recipe.bn_mode == "frozen":  # CoRe, TSA: the backbone is fixed, test and training splits stored once
        assert len(files) == 2
    else:  # USDL trains BatchNorm statistics: the features change every epoch, nothing is stored
        assert files == []
    for a, b in zip(results["stored"].epochs, results["encoded"].epochs, strict=True):
        np.testing.assert_allclose(a["test_pred"], b["test_pred"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(a["val_pred"], b["val_pred"], rtol=1e-5, atol=1e-5)
    if head == "tsa":
        np.testing.assert_array_equal(results["stored"].epochs[-1]["test_transitions"],
                                      results["encoded"].epochs[-1]["test_transitions"])
