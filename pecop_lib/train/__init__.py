"""The training engine: one loop (autocast, accumulation, atomic checkpoints, exact resume, progress, DDP)
and its helpers. It knows no stage and no head: the recipes live in :mod:`pecop_lib.pretrain` (stages 1
and 2), :mod:`pecop_lib.finetune` (stage 3) and :mod:`pecop_lib.studies` (the paper's ablations); each
builds a model, a step function and per-epoch data and hands them to :class:`~pecop_lib.train.loop.Trainer`.
"""


from pecop_lib.train.checkpoint import (
    CHECKPOINT_FORMAT,
    latest_checkpoint,
    load_checkpoint,
    record_checkpoint,
    save_checkpoint,
)
from pecop_lib.train.context import RunContext
from pecop_lib.train.data import epoch_loader
from pecop_lib.train.distributed import DistributedContext, init_distributed, shutdown_distributed
from pecop_lib.train.loop import NonFiniteLossError, StepOutput, Trainer, TrainHistory, move_to_device
from pecop_lib.train.precision import PRECISIONS, Precision, autocast, autocast_dtype, grad_scaler
from pecop_lib.train.rng import capture_rng_state, restore_rng_state, seed_everything

__all__ = [
    "CHECKPOINT_FORMAT",
    "PRECISIONS",
    "DistributedContext",
    "RunContext",
    "NonFiniteLossError",
    "Precision",
    "StepOutput",
    "TrainHistory",
    "Trainer",
    "autocast",
    "autocast_dtype",
    "capture_rng_state",
    "epoch_loader",
    "grad_scaler",
    "init_distributed",
    "latest_checkpoint",
    "load_checkpoint",
    "move_to_device",
    "record_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
    "seed_everything",
    "shutdown_distributed",
]
