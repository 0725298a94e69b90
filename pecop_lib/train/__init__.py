"""Training: the one loop (autocast, accumulation, checkpoints, exact resume, DDP) and its helpers.

Recipes build a model, a step function and per-epoch data and hand them to
:class:`~pecop_lib.train.loop.Trainer`: :mod:`pecop_lib.train.pretrain` holds stage 1 (domain-general)
and stage 2 (continual pretraining with VSPP / VideoPace / RSPNet under the five strategies);
:mod:`pecop_lib.train.artifacts` caches their results (load-or-train), :mod:`pecop_lib.train.targets`
picks the unlabeled target videos and :mod:`pecop_lib.train.pipeline` runs both stages from a config.
Stage 3, AQA fine-tuning: :mod:`pecop_lib.train.finetune` (recipes per head and dataset, the per-epoch
evaluation and both protocols), :mod:`pecop_lib.train.finetune_runs` (many runs, result files, the
command line) and :mod:`pecop_lib.train.finetune_report` (fold aggregation, seeds, ours vs the paper).
"""

from pecop_lib.train.ablations import AblationResult, AblationRun, ablation_plan, run_ablation
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
from pecop_lib.train.finetune import (
    RECIPES,
    FinetuneOptions,
    FinetuneRecipe,
    FinetuneResult,
    Setting,
    finetune,
    get_recipe,
    load_finetune_backbone,
    open_finetune_data,
    settings_for,
)
from pecop_lib.train.finetune_report import (
    aggregate_folds,
    comparison_table,
    paper_reference,
    summarize_seeds,
)
from pecop_lib.train.finetune_runs import comparison_backbones, finetune_command, load_result, run_settings
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
    cosine_optimizer,
    domain_general_pretrain,
    pretext_model,
    pretext_step,
    target_videos,
)
from pecop_lib.train.rng import capture_rng_state, restore_rng_state, seed_everything
from pecop_lib.train.targets import (
    JIGSAWS_FOLDS,
    TARGET_DATASETS,
    check_evaluation_split,
    check_fold,
    official_normal_pace,
    pretraining_videos,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "JIGSAWS_FOLDS",
    "PRECISIONS",
    "PRETEXTS",
    "RECIPES",
    "TARGET_DATASETS",
    "AblationResult",
    "AblationRun",
    "BackboneSource",
    "DistributedContext",
    "FinetuneOptions",
    "FinetuneRecipe",
    "FinetuneResult",
    "NonFiniteLossError",
    "Precision",
    "PretextClips",
    "PretrainResult",
    "Setting",
    "Stage1Artifact",
    "Stage1Spec",
    "Stage2Artifact",
    "Stage2Spec",
    "StepOutput",
    "TargetVideo",
    "TrainHistory",
    "Trainer",
    "ablation_plan",
    "action_accuracy",
    "aggregate_folds",
    "autocast",
    "autocast_dtype",
    "capture_rng_state",
    "check_evaluation_split",
    "check_fold",
    "comparison_backbones",
    "comparison_table",
    "continual_pretrain",
    "domain_general_pretrain",
    "epoch_loader",
    "finetune",
    "finetune_command",
    "get_recipe",
    "grad_scaler",
    "init_distributed",
    "kinetics_source",
    "latest_checkpoint",
    "load_checkpoint",
    "load_finetune_backbone",
    "load_result",
    "load_stage1",
    "load_stage2",
    "move_to_device",
    "official_normal_pace",
    "open_finetune_data",
    "paper_reference",
    "pretext_model",
    "pretext_step",
    "pretrain_run",
    "pretrained_backbone",
    "pretraining_videos",
    "record_checkpoint",
    "restore_rng_state",
    "run_ablation",
    "run_settings",
    "save_checkpoint",
    "scratch_source",
    "seed_everything",
    "settings_for",
    "cosine_optimizer",
    "shutdown_distributed",
    "stage1_backbone",
    "stage1_spec",
    "stage2_backbone",
    "stage2_costs",
    "stage2_spec",
    "starting_point",
    "summarize_seeds",
    "target_videos",
]
