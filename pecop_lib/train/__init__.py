"""Training: the one loop (autocast, accumulation, checkpoints, exact resume, DDP) and its helpers.

Recipes build a model, a step function and per-epoch data and hand them to
:class:`~pecop_lib.train.loop.Trainer`: :mod:`pecop_lib.train.pretrain` holds stage 1 (domain-general)
and stage 2 (continual pretraining with VSPP / VideoPace / RSPNet under the five strategies).
"""

from pecop_lib.train.checkpoint import (
    CHECKPOINT_FORMAT,
    latest_checkpoint,
    load_checkpoint,
    record_checkpoint,
    save_checkpoint,
)
from pecop_lib.train.data import epoch_loader
from pecop_lib.train.distributed import DistributedContext, init_distributed, shutdown_distributed
from pecop_lib.train.loop import (
    NonFiniteLossError,
    StepOutput,
    Trainer,
    TrainHistory,
    move_to_device,
)
from pecop_lib.train.precision import PRECISIONS, Precision, autocast, autocast_dtype, grad_scaler
from pecop_lib.train.pretrain import (
    PRETEXTS,
    PretextClips,
    PretrainResult,
    TargetVideo,
    color_jitter,
    continual_pretrain,
    domain_general_pretrain,
    pretext_model,
    pretext_step,
    sgd_cosine,
    target_videos,
)
from pecop_lib.train.rng import capture_rng_state, restore_rng_state, seed_everything

__all__ = [
    "CHECKPOINT_FORMAT",
    "PRECISIONS",
    "PRETEXTS",
    "DistributedContext",
    "NonFiniteLossError",
    "Precision",
    "PretextClips",
    "PretrainResult",
    "StepOutput",
    "TargetVideo",
    "TrainHistory",
    "Trainer",
    "autocast",
    "autocast_dtype",
    "capture_rng_state",
    "color_jitter",
    "continual_pretrain",
    "domain_general_pretrain",
    "epoch_loader",
    "grad_scaler",
    "init_distributed",
    "latest_checkpoint",
    "load_checkpoint",
    "move_to_device",
    "pretext_model",
    "pretext_step",
    "record_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
    "seed_everything",
    "sgd_cosine",
    "shutdown_distributed",
    "target_videos",
]
