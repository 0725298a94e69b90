"""Stage 1, domain-general (:func:`domain_general_pretrain`): supervised action classification of the
whole backbone on the synthetic Kinetics-style action set, standing in for Kinetics-400 weights when
none are available (skipped when real weights are loaded)."""

from __future__ import annotations

import os
import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from pecop_lib.config import OPTIMIZERS, resolve_device
from pecop_lib.data.workers import worker_context
from pecop_lib.models.backbone import Backbone
from pecop_lib.pretrain.continual import PretrainResult, cosine_optimizer
from pecop_lib.train.context import RunContext
from pecop_lib.train.data import epoch_loader
from pecop_lib.train.loop import StepOutput, Trainer


class _ActionClassifier(nn.Module):
    """``forward`` = the backbone's Kinetics-style classifier (so DDP sees the call)."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_logits(clips)


def _classification_step(model: nn.Module, batch: dict[str, Any]) -> StepOutput:
    logits = model(batch["clip"])
    labels = batch["label"]
    loss = nn.functional.cross_entropy(logits, labels)
    return StepOutput(loss, {"acc": (logits.argmax(1) == labels).float().mean()}, count=len(labels))


def _collate_actions(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"clip": torch.stack([i["clip"] for i in items]), "label": torch.stack([i["label"] for i in items])}




def domain_general_pretrain(
    backbone: Backbone,
    dataset: Dataset,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    optimizer: str = "sgd",
    run_dir: str | os.PathLike[str] | None = None,
    run: RunContext = RunContext(),
) -> PretrainResult:
    """Stage 1: supervised action classification of the whole backbone (and its classifier).

    Stands in for Kinetics-400 pretraining on the synthetic action set
    (:class:`~pecop_lib.data.formats.kinetics.KineticsActions`, items ``{"clip", "label"}``). SGD
    (momentum) or Adam, cosine annealing to 0 over ``epochs`` (stepped per epoch), BatchNorm in
    training mode. Its recipe is ours to choose (it stands in for Kinetics): Adam learns the
    synthetic actions from scratch in far fewer steps on a CPU (docs/course.md).

    Args:
        backbone: Built with ``num_classes`` = the number of action classes.
        dataset: Items with ``"clip"`` ``(3, T, H, W)`` and ``"label"`` (class index).
        epochs, batch_size, lr, momentum, weight_decay: The optimisation (``momentum``: SGD only).
        optimizer: ``"sgd"`` or ``"adam"``.
        run_dir, run: As in :func:`~pecop_lib.pretrain.continual.continual_pretrain` (stage 1 never
            accumulates gradients: ``run.grad_accum_steps`` does not apply).

    Raises:
        RuntimeError: If the backbone has no classifier.
    """
    if not backbone.has_classifier:
        raise RuntimeError(f"{backbone.name} has no classifier; build it with num_classes=<number of action classes>")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown stage-1 optimizer {optimizer!r}; choose one of {OPTIMIZERS}")
    backbone.requires_grad_(True)
    backbone.bn_mode = "train"
    context = run.process
    if batch_size % context.world_size:
        raise ValueError(f"batch_size {batch_size} is not divisible by the {context.world_size} processes")
    model = _ActionClassifier(backbone)
    opt, scheduler = cosine_optimizer(model.parameters(), kind=optimizer, lr=lr, momentum=momentum,
                                      weight_decay=weight_decay, t_max=epochs, eta_min=0.0)
    data = epoch_loader(dataset, batch_size // context.world_size, seed=run.seed, drop_last=True,
                        num_workers=run.num_workers,
                        rank=context.rank, world_size=context.world_size, collate_fn=_collate_actions,
                        pin_memory=context.device.type == "cuda")
    trainer = Trainer(model, _classification_step, opt, scheduler, run_dir=run_dir, desc="domain-general",
                      **run.but(grad_accum_steps=0).trainer_options())
    started = time.perf_counter()
    history = trainer.fit(data, epochs, resume=run.resume)
    return PretrainResult(model, history, [n for n, _ in backbone.named_parameters()], time.perf_counter() - started)


@torch.no_grad()
def action_accuracy(
    backbone: Backbone, dataset: Dataset, *, batch_size: int = 8, device: str | torch.device = "auto",
    num_workers: int = 0,
) -> float:
    """Top-1 accuracy of the backbone's action classifier on a dataset (evaluation mode).

    Args:
        backbone: Built with ``num_classes`` = the number of action classes.
        dataset: Items with ``"clip"`` ``(3, T, H, W)`` and ``"label"`` (e.g. the ``val`` split of
            :class:`~pecop_lib.data.formats.kinetics.KineticsActions`).
        batch_size, device, num_workers: Evaluation settings.

    Returns:
        The fraction of clips whose arg-max class is the label (chance: 1 / number of classes).

    Raises:
        RuntimeError: If the backbone has no classifier.
        ValueError: If the dataset is empty.
    """
    if not backbone.has_classifier:
        raise RuntimeError(f"{backbone.name} has no classifier; build it with num_classes=<number of action classes>")
    if len(dataset) == 0:
        raise ValueError("the evaluation dataset is empty")
    target = resolve_device(device)
    was_training = backbone.training
    backbone.to(target).eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         multiprocessing_context=worker_context(num_workers),
                                         collate_fn=_collate_actions)
    correct = 0
    try:
        for batch in loader:
            logits = backbone.forward_logits(batch["clip"].to(target))
            correct += int((logits.argmax(1).cpu() == batch["label"]).sum())
    finally:
        backbone.train(was_training)
    return correct / len(dataset)
