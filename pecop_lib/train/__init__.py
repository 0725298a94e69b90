"""Training: the one loop (autocast, accumulation, checkpoints, exact resume, DDP) and its helpers.

Recipes build a model, a step function and per-epoch data and hand them to
:class:`~pecop_lib.train.loop.Trainer`: :mod:`pecop_lib.train.pretrain` holds stage 1 (domain-general)
and stage 2 (continual pretraining with VSPP / VideoPace / RSPNet under the five strategies);
:mod:`pecop_lib.train.artifacts` caches their results (load-or-train), :mod:`pecop_lib.train.targets`
picks the unlabeled target videos and :mod:`pecop_lib.train.pipeline` runs both stages from a config.
"""

from pecop_lib.train.artifacts import (
    BackboneSource,
    Stage1Artifact,
    Stage1Spec,
    Stage2Artifact,
    Stage2Spec,
    kinetics_source,
    load_stage1,
    load_stage2,
    scratch_source,
    stage1_backbone,
    stage1_spec,
    stage2_backbone,
    stage2_costs,
    stage2_spec,
)
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
from pecop_lib.train.pipeline import pretrain_run, pretrained_backbone, starting_point
from pecop_lib.train.precision import PRECISIONS, Precision, autocast, autocast_dtype, grad_scaler
from pecop_lib.train.pretrain import (
    PRETEXTS,
    PretextClips,
    PretrainResult,
    TargetVideo,
    action_accuracy,
    continual_pretrain,
    domain_general_pretrain,
    pretext_model,
    pretext_step,
    sgd_cosine,
    target_videos,
)
from pecop_lib.train.rng import capture_rng_state, restore_rng_state, seed_everything
from pecop_lib.train.targets import TARGET_DATASETS, official_normal_pace, pretraining_videos

__all__ = [
    "CHECKPOINT_FORMAT",
    "PRECISIONS",
    "PRETEXTS",
    "TARGET_DATASETS",
    "BackboneSource",
    "DistributedContext",
    "NonFiniteLossError",
    "Precision",
    "PretextClips",
    "PretrainResult",
    "Stage1Artifact",
    "Stage1Spec",
    "Stage2Artifact",
    "Stage2Spec",
    "StepOutput",
    "TargetVideo",
    "TrainHistory",
    "Trainer",
    "action_accuracy",
    "autocast",
    "autocast_dtype",
    "capture_rng_state",
    "continual_pretrain",
    "domain_general_pretrain",
    "epoch_loader",
    "grad_scaler",
    "init_distributed",
    "kinetics_source",
    "latest_checkpoint",
    "load_checkpoint",
    "load_stage1",
    "load_stage2",
    "move_to_device",
    "official_normal_pace",
    "pretext_model",
    "pretext_step",
    "pretrain_run",
    "pretrained_backbone",
    "pretraining_videos",
    "record_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
    "scratch_source",
    "seed_everything",
    "sgd_cosine",
    "shutdown_distributed",
    "stage1_backbone",
    "stage1_spec",
    "stage2_backbone",
    "stage2_costs",
    "stage2_spec",
    "starting_point",
    "target_videos",
]
