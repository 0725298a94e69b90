"""Presets, strict resolution and device resolution."""

from __future__ import annotations

import re
from dataclasses import fields

import pytest
import torch

from pecop_lib.config import (
    PRESETS,
    RANGES,
    SMOKE_NOTICE,
    Config,
    ConfigError,
    Range,
    config_keys,
    resolve,
    resolve_device,
)


def test_presets_only_override_known_keys():
    keys = set(config_keys())
    for name, overrides in PRESETS.items():
        assert set(overrides) <= keys, f"preset {name} sets unknown keys {set(overrides) - keys}"
        assert "preset" not in overrides


def test_resolve_applies_preset_then_overrides():
    smoke = resolve("smoke")
    assert smoke.preset == "smoke" and smoke.is_smoke
    assert smoke.pretrain_epochs == PRESETS["smoke"]["pretrain_epochs"]
    assert resolve("tutorial").pretrain_epochs == Config().pretrain_epochs
    assert resolve("paper", pretrain_epochs=16).pretrain_epochs == 16
    assert not resolve("paper").is_smoke


def test_unknown_key_is_refused_with_suggestion():
    with pytest.raises(ConfigError, match=r"unknown config key 'pretrain_epoch' \(did you mean 'pretrain_epochs'\?\)"):
        resolve("smoke", pretrain_epoch=2)


def test_unknown_preset_is_refused():
    with pytest.raises(ConfigError, match="unknown preset 'smok'.*smoke, course, tutorial, paper"):
        resolve("smok")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("pretrain_epochs", "3", "expects int, got str '3'"),
        ("pretrain_epochs", 2.5, "expects int, got float 2.5"),
        ("pretrain_epochs", True, "expects int, got bool True"),
        ("seed", None, "expects int, got NoneType None"),
        ("device", 0, "expects str, got int 0"),
        ("pretrain_lr", "0.1", "expects float, got str '0.1'"),
    ],
)
def test_wrong_types_are_refused(key, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve("smoke", **{key: value})


def test_int_is_accepted_for_float():
    cfg = resolve("smoke", pretrain_lr=1)
    assert cfg.pretrain_lr == 1.0 and isinstance(cfg.pretrain_lr, float)


def test_config_is_frozen_and_stage_strips_prefix():
    cfg = resolve("smoke")
    with pytest.raises(Exception):
        cfg.seed = 5  # type: ignore[misc]
    stage = cfg.stage("pretrain")
    assert stage["epochs"] == cfg.pretrain_epochs and "pretrain_epochs" not in stage
    assert all(not k.startswith("pretrain_") for k in stage)
    with pytest.raises(ConfigError, match="no config stage 'nosuch'"):
        cfg.stage("nosuch")


def test_smoke_notice_wording():
    assert SMOKE_NOTICE == "smoke run: checks the plumbing, not a result"


def test_device_cpu_and_auto_without_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")


def test_device_auto_with_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda:0")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ConfigError, match=r"'cuda:2' was requested but only 2 CUDA device\(s\) exist"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("spec", ["cuda", "cuda:0"])
def test_cuda_requested_without_gpu_raises(monkeypatch, spec):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=f"device '{spec}' was requested but CUDA is not available"):
        resolve_device(spec)


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "tpu", ""])
def test_malformed_device_specs(spec):
    with pytest.raises(ConfigError):
        resolve_device(spec)


def test_device_must_be_a_string():
    with pytest.raises(ConfigError, match="device must be a string"):
        resolve_device(0)  # type: ignore[arg-type]
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")  # an already resolved device passes through


def test_every_numeric_key_has_a_range_and_every_preset_respects_it():
    numeric = {f.name for f in fields(Config) if f.type in ("int", "float")}
    assert numeric == set(RANGES)
    for preset in PRESETS:
        cfg = resolve(preset)
        assert all(RANGES[k].holds(getattr(cfg, k)) for k in numeric)


def test_range_bounds_by_hand():
    assert Range(1).holds(1) and not Range(1).holds(0.999)
    assert not Range(0, low_open=True).holds(0) and Range(0, low_open=True).holds(1e-12)
    fraction = Range(0, 1, high_open=True)
    assert fraction.holds(0) and fraction.holds(0.999) and not fraction.holds(1)
    assert str(fraction) == "0 <= value < 1" and str(Range(1, 4)) == "1 <= value <= 4"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("pretrain_epochs", 0, "'pretrain_epochs' = 0 is out of range; accepted: 1 <= value"),
        ("pretrain_lr", 0.0, "'pretrain_lr' = 0.0 is out of range; accepted: 0 < value"),
        ("pretrain_lr", float("inf"), "'pretrain_lr' must be a finite number, got inf"),
        ("finetune_lr_head", float("nan"), "'finetune_lr_head' must be a finite number, got nan"),
        ("finetune_val_fraction", 1, "'finetune_val_fraction' = 1.0 is out of range; accepted: 0 <= value < 1"),
        ("seed", -1, "'seed' = -1 is out of range; accepted: 0 <= value"),
        ("ablation_folds", 5, "'ablation_folds' = 5 is out of range; accepted: 1 <= value <= 4"),
        ("data_num_workers", -2, "'data_num_workers' = -2 is out of range"),
    ],
)
def test_out_of_range_numbers_are_refused(key, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        resolve("smoke", **{key: value})


def test_zero_keeps_its_official_meaning_where_documented():
    cfg = resolve("smoke", finetune_epochs=0, finetune_lr_head=0, data_clip_frames=0, train_grad_accum_steps=0)
    assert cfg.finetune_epochs == 0 and cfg.finetune_lr_head == 0.0
