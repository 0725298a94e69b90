"""The pretrain_* / train_* config keys: the paper preset is the official recipe, every preset is usable."""

from __future__ import annotations

import json

import pytest
import torch

from pecop_lib.config import PRESET_NAMES, resolve
from pecop_lib.models.strategies import STRATEGIES
from pecop_lib.pretrain.pretext import CHANNEL_ORDERS
from pecop_lib.pretrain.stage2_artifact import stage2_spec
from pecop_lib.ssl import VSPP_MODES, VSPPSampler
from pecop_lib.train import PRECISIONS, autocast_dtype


def test_paper_preset_is_the_official_pecop_recipe() -> None:
    cfg = resolve("paper")
    assert cfg.pretrain_lr == 0.01  # hard-coded in train.py (README says 1e-3)
    assert (cfg.pretrain_momentum, cfg.pretrain_weight_decay) == (0.9, 1e-4)
    assert (cfg.pretrain_cosine_t_max, cfg.pretrain_eta_min) == (22, 1e-6)
    assert (cfg.pretrain_epochs, cfg.pretrain_full_epochs) == (8, 16)
    assert (cfg.pretrain_batch_size, cfg.pretrain_clip_len, cfg.data_crop_size) == (16, 32, 224)
    assert cfg.pretrain_list_repeat == 20 and not cfg.pretrain_color_jitter and cfg.pretrain_bn_mode == "train"
    assert (cfg.pretrain_vspp_mode, cfg.pretrain_max_speed, cfg.pretrain_num_segments) == ("official", 5, 4)
    assert cfg.pretrain_dropout == 0.5 and cfg.pretrain_channel_order == "bgr"
    # the paper's variant is a set of switches
    variant = resolve("paper", pretrain_lr=1e-3, pretrain_list_repeat=10, pretrain_color_jitter=True,
                      pretrain_vspp_mode="paper")
    assert VSPPSampler(mode=variant.pretrain_vspp_mode).num_speed_classes == 4


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_every_preset_builds_the_pretext_and_loop_settings(preset: str) -> None:
    cfg = resolve(preset)
    assert cfg.pretrain_strategy in STRATEGIES
    assert cfg.pretrain_pretext in ("vspp", "pace", "rspnet")
    assert cfg.pretrain_vspp_mode in VSPP_MODES and cfg.pretrain_bn_mode in ("train", "frozen")
    assert cfg.pretrain_channel_order in CHANNEL_ORDERS and cfg.pretrain_general_epochs >= 1
    sampler = stage2_spec(cfg).sampler()
    assert sampler.num_speed_classes >= 2 and sampler.normal_pace == 1  # 0 in the config: the target's official fr
    assert stage2_spec(cfg, dataset="PD4T", task="Gait").sampler().normal_pace == 3
    assert cfg.train_precision in PRECISIONS
    autocast_dtype(cfg.train_precision, torch.device("cpu"))
    assert cfg.train_grad_accum_steps >= 0 and cfg.train_checkpoint_every_steps >= 0 and cfg.train_keep_checkpoints >= 0


def test_synthetic_world_follows_config_overrides(tmp_path, monkeypatch) -> None:
    """``--set data_synthetic_size=...`` must reach the world: a preset name alone would ignore it."""
    from pecop_lib.data.synthetic import world_spec
    from pecop_lib.data.synthetic.world import MANIFEST
    from pecop_lib.pretrain.pipeline import synthetic_root

    cfg = resolve("tutorial", seed=3, data_synthetic_size=32, data_synthetic_aqa_videos=8, data_synthetic_jigsaws_trials=1,
                  data_synthetic_action_videos=2, data_synthetic_action_frames=16)
    spec = world_spec(cfg, cfg.seed)
    assert (spec.size, spec.aqa_videos, spec.action_videos, spec.seed) == (32, 8, 2, 3)
    assert world_spec("tutorial").size == resolve("tutorial").data_synthetic_size != 32
    monkeypatch.setenv("PECOP_CACHE_DIR", str(tmp_path))
    root = synthetic_root(cfg)
    assert root == tmp_path / "synthetic" / spec.key()
    assert json.loads((root / MANIFEST).read_text())["spec"]["size"] == 32
