"""How a run executes, built once: the run context.

Every stage (stage 1, stage 2, fine-tuning, the ablation cells) executes the same way: on one device,
in one precision, with the same loader workers, seed, checkpoint cadence, process group, resume rule
and progress bars. :class:`RunContext` holds these settings, so the recipes pass one object down
instead of threading a dozen keywords through every layer. It says nothing about *what* is trained
(that is each stage's spec or recipe).

Build it once from the config (:meth:`RunContext.from_config`) or directly
(``RunContext(device="cpu", precision="fp32")``), and derive a variant with
:meth:`RunContext.but` (``run.but(resume=False)``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from pecop_lib.config import Config, resolve_device
from pecop_lib.train.distributed import DistributedContext


@dataclass(frozen=True)
class RunContext:
    """The execution settings every stage shares.

    Attributes:
        device: Training device (``"auto"`` and strings are resolved on construction).
        precision: ``auto`` (bf16/fp16 on GPU, fp32 on CPU) | ``fp32`` | ``bf16`` | ``fp16``.
        compile: ``torch.compile`` the model (``True`` or a mode name).
        num_workers: Loader worker processes.
        seed: Seed of initialisation, data order and every draw.
        grad_accum_steps: Micro-batches per optimiser step; 0: the stage's own value (stage 2: 1,
            fine-tuning: the recipe's).
        checkpoint_every_steps: Checkpoint every N optimiser steps as well as at epoch ends; 0: at
            epoch ends only.
        keep_last: Newest checkpoint files kept; ``None`` or 0 keeps all.
        distributed: This process's place in a ``torchrun`` job; ``None``: one process on ``device``.
        resume: Continue from the newest checkpoint of a run folder.
        show_progress: Show progress bars (rank 0 only).
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "auto"
    compile: bool | str = False
    num_workers: int = 0
    seed: int = 0
    grad_accum_steps: int = 0
    checkpoint_every_steps: int = 0
    keep_last: int | None = None
    distributed: DistributedContext | None = None
    resume: bool = False
    show_progress: bool = True

    def __post_init__(self) -> None:
        device = self.distributed.device if self.distributed is not None else resolve_device(self.device)
        object.__setattr__(self, "device", device)
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.grad_accum_steps < 0:
            raise ValueError(f"grad_accum_steps must be >= 0 (0: the stage's own value), got {self.grad_accum_steps}")
        if self.checkpoint_every_steps < 0:
            raise ValueError(f"checkpoint_every_steps must be >= 0 (0: at epoch ends only), "
                             f"got {self.checkpoint_every_steps}")

    @classmethod
    def from_config(cls, cfg: Config, *, distributed: DistributedContext | None = None, resume: bool = False,
                    show_progress: bool = True, **overrides: Any) -> RunContext:
        """The context of a resolved config: ``device``, ``seed``, ``data_num_workers`` and the ``train_*`` keys.

        Args:
            cfg: The config.
            distributed: The process group (its device wins over ``cfg.device``).
            resume: Continue from checkpoints.
            show_progress: Progress bars.
            **overrides: Any other field, e.g. ``num_workers=0``.
        """
        values: dict[str, Any] = dict(
            device=cfg.device, precision=cfg.train_precision, compile=cfg.train_compile,
            num_workers=cfg.data_num_workers, seed=cfg.seed, grad_accum_steps=cfg.train_grad_accum_steps,
            checkpoint_every_steps=cfg.train_checkpoint_every_steps, keep_last=cfg.train_keep_checkpoints or None,
            distributed=distributed, resume=resume, show_progress=show_progress,
        )
        values.update(overrides)
        return cls(**values)

    def but(self, **changes: Any) -> RunContext:
        """A copy with ``changes`` (e.g. ``run.but(resume=False)``)."""
        return dataclasses.replace(self, **changes)

    @property
    def process(self) -> DistributedContext:
        """This process's context: ``distributed``, or one process on ``device``."""
        return self.distributed or DistributedContext(device=self.device)

    @property
    def checkpoint_every(self) -> int | None:
        """``checkpoint_every_steps`` as the trainer takes it (``None``: at epoch ends only)."""
        return self.checkpoint_every_steps or None

    def accum_steps(self, own: int) -> int:
        """Micro-batches per step: ``grad_accum_steps``, or the stage's ``own`` value when it is 0."""
        return self.grad_accum_steps or own

    def trainer_options(self, own_accum_steps: int = 1, *, seed_globals: bool = True) -> dict[str, Any]:
        """The keywords of :class:`~pecop_lib.train.loop.Trainer` this context decides.

        Args:
            own_accum_steps: The stage's micro-batches per step, used when ``grad_accum_steps`` is 0.
            seed_globals: Let the trainer seed the global generators with ``seed`` (else it leaves them).
        """
        return dict(device=self.device, precision=self.precision, compile=self.compile,
                    grad_accum_steps=self.accum_steps(own_accum_steps), checkpoint_every_steps=self.checkpoint_every,
                    keep_last=self.keep_last or None, distributed=self.distributed, show_progress=self.show_progress,
                    seed=self.seed if seed_globals else None, loader_workers=self.num_workers)


def run_context(cfg: Config, run: RunContext | None = None) -> RunContext:
    """``run``, or the config's own :class:`RunContext` (:meth:`RunContext.from_config`) when ``None``."""
    return run if run is not None else RunContext.from_config(cfg)
