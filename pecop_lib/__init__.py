"""pecop: parameter-efficient continual pretraining (PECoP, WACV 2024) for action quality assessment.

The package follows the data from disk to a score (see ``README.md`` and ``docs/architecture.md``):
settings -> ``data`` (the datasets, the synthetic world) -> ``models`` (backbones, 3D-Adapters,
strategies) -> ``ssl`` (VSPP and the other pretexts) -> ``train`` (stage 1, stage 2, fine-tuning,
the studies) -> ``heads`` (USDL/MUSDL, CoRe, TSA) -> ``eval`` -> figures and the notebook runner.
This module re-exports the names a reader needs along that path, in that order; everything else
lives in its subpackage.
"""
# ruff: noqa: I001, RUF022  (imports and names follow the data's path, not the alphabet)

# settings: presets, device, cache
from pecop_lib.config import (
    COURSE_NOTICE,
    PRESET_NAMES,
    SMOKE_NOTICE,
    Config,
    ConfigError,
    auto_preset,
    cache_dir,
    config_keys,
    resolve,
    resolve_device,
)

# data: the target datasets in their official formats, the synthetic world, the transforms
from pecop_lib.data import (
    JIGSAWS,
    MTLAQA,
    PD4T,
    DataFormatError,
    FineDiving,
    KineticsActions,
    official_transform,
    synthetic_world,
)
from pecop_lib.data.registry import DATASETS, dataset_record

# models: backbones, the 3D-Adapter, which parameters learn, checkpoints
from pecop_lib.models import (
    STRATEGIES,
    Adapter3D,
    AdapterConfig,
    build_backbone,
    inject_adapters,
    load_adapter_checkpoint,
    load_weights,
    mark_trainable,
    save_adapter_checkpoint,
)

# the pretext: VSPP (speed and position of a re-paced segment)
from pecop_lib.ssl import VSPPSampler, vspp_official_indices

# training: stage 1 (the domain-general stand-in), stage 2 (continual pretraining), fine-tuning, studies
from pecop_lib.finetune import FinetuneOptions, finetune, load_exported, run_settings, score
from pecop_lib.pretrain import (
    continual_pretrain,
    domain_general_pretrain,
    pretrained_backbone,
    stage1_backbone,
    stage2_backbone,
    target_videos,
)
from pecop_lib.studies import ablation_plan, run_ablation
from pecop_lib.train import NonFiniteLossError, RunContext, seed_everything

# AQA heads: score distributions (USDL/MUSDL), contrastive regression (CoRe), step-aware TSA
from pecop_lib.heads import TSA, USDL, CoRe, usdl_spec

# evaluation: Spearman with bootstrap intervals, the official and the honest protocol
from pecop_lib.eval import bootstrap_ci, spearman

# outputs and the notebook runner
from pecop_lib.notebooks import run_notebooks
from pecop_lib.outputs import prepare_out_dir, progress, save_figure, titled, write_metrics

__version__ = "0.1.0"

__all__ = [
    # settings
    "PRESET_NAMES", "COURSE_NOTICE", "SMOKE_NOTICE", "Config", "ConfigError", "auto_preset", "cache_dir",
    "config_keys", "resolve", "resolve_device",
    # data
    "DATASETS", "dataset_record", "MTLAQA", "FineDiving", "JIGSAWS", "PD4T", "KineticsActions", "DataFormatError",
    "official_transform", "synthetic_world",
    # models
    "build_backbone", "Adapter3D", "AdapterConfig", "inject_adapters", "STRATEGIES", "mark_trainable",
    "load_weights", "load_adapter_checkpoint", "save_adapter_checkpoint",
    # pretext
    "VSPPSampler", "vspp_official_indices",
    # training
    "RunContext", "domain_general_pretrain", "stage1_backbone", "target_videos", "continual_pretrain", "stage2_backbone",
    "pretrained_backbone", "FinetuneOptions", "finetune", "run_settings", "load_exported", "score", "ablation_plan",
    "run_ablation",
    "NonFiniteLossError", "seed_everything",
    # heads
    "USDL", "usdl_spec", "CoRe", "TSA",
    # evaluation
    "spearman", "bootstrap_ci",
    # outputs and runner
    "prepare_out_dir", "progress", "save_figure", "titled", "write_metrics", "run_notebooks",
    "__version__",
]  # fmt: skip
