"""pecop: parameter-efficient continual pretraining (PECoP, WACV 2024) for action quality assessment.

The package follows the data from disk to figures (see ``README.md``): ``data`` -> ``models`` ->
``ssl`` / ``heads`` -> ``train`` -> ``eval`` -> ``viz``, with ``config`` (presets, device) and the
notebook runner beside the whole line. The public API is re-exported here.
"""

from pecop_lib.atomic import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text
from pecop_lib.config import (
    PRESET_NAMES,
    COURSE_NOTICE,
    SMOKE_NOTICE,
    Config,
    ConfigError,
    auto_preset,
    cache_dir,
    config_keys,
    resolve,
    resolve_device,
)
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
from pecop_lib.heads import TSA, USDL, CoRe, encode_windows, predict_with_exemplars, usdl_spec, windowing_for
from pecop_lib.models import (
    AdapterConfig,
    build_backbone,
    inject_adapters,
    load_adapter_checkpoint,
    load_weights,
    mark_trainable,
    save_adapter_checkpoint,
)
from pecop_lib.notebooks import run_notebooks
from pecop_lib.outputs import prepare_out_dir, progress, save_figure, titled, write_metrics
from pecop_lib.ssl import VSPPSampler, vspp_official_indices
from pecop_lib.train import (
    FinetuneOptions,
    NonFiniteLossError,
    StepOutput,
    Trainer,
    ablation_plan,
    continual_pretrain,
    domain_general_pretrain,
    epoch_loader,
    finetune,
    pretrained_backbone,
    run_ablation,
    run_settings,
    seed_everything,
    stage1_backbone,
    stage2_backbone,
    target_videos,
)

__version__ = "0.1.0"

__all__ = [
    "FinetuneOptions",
    "ablation_plan",
    "run_ablation",
    "finetune",
    "run_settings",
    "TSA",
    "USDL",
    "CoRe",
    "encode_windows",
    "predict_with_exemplars",
    "usdl_spec",
    "windowing_for",
    "JIGSAWS",
    "MTLAQA",
    "PD4T",
    "DataFormatError",
    "FineDiving",
    "KineticsActions",
    "official_transform",
    "synthetic_world",
    "PRESET_NAMES",
    "COURSE_NOTICE",
    "SMOKE_NOTICE",
    "AdapterConfig",
    "Config",
    "ConfigError",
    "NonFiniteLossError",
    "StepOutput",
    "Trainer",
    "VSPPSampler",
    "__version__",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "auto_preset",
    "build_backbone",
    "cache_dir",
    "config_keys",
    "continual_pretrain",
    "domain_general_pretrain",
    "epoch_loader",
    "inject_adapters",
    "load_adapter_checkpoint",
    "load_weights",
    "mark_trainable",
    "prepare_out_dir",
    "pretrained_backbone",
    "progress",
    "resolve",
    "resolve_device",
    "run_notebooks",
    "save_adapter_checkpoint",
    "save_figure",
    "seed_everything",
    "stage1_backbone",
    "stage2_backbone",
    "target_videos",
    "titled",
    "vspp_official_indices",
    "write_metrics",
]
