"""Backbone + head as one module whose forward is the training loss (so DDP sees the whole step), its
step function for the :class:`~pecop_lib.train.loop.Trainer`, and the two-rate Adam of the recipes."""

from __future__ import annotations

import torch
from torch import nn

from pecop_lib.heads import (
    HeadKind,
    WindowFeatures,
    Windowing,
    encode_windows,
)
from pecop_lib.models.backbone import Backbone
from pecop_lib.train.loop import StepOutput


class AQAModel(nn.Module):
    """Backbone + head; ``forward(batch) -> (loss, metrics)`` so that DDP sees the whole step.

    Args:
        backbone: The (adapted) backbone.
        head: The head module (:meth:`~pecop_lib.heads.HeadKind.build`).
        kind: The head's interface: its loss, and whether it learns from pairs and needs maps.
        windowing: Clip windowing.
    """

    def __init__(self, backbone: Backbone, head: nn.Module, kind: HeadKind, windowing: Windowing) -> None:
        super().__init__()
        self.backbone, self.head, self.kind, self.windowing = backbone, head, kind, windowing

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss of a batch (see :class:`ScoreSamples` / :class:`PairSamples` for its keys).

        Batches with ``"feats"`` (``"feats_a"``/``"feats_b"``) carry stored features: the backbone is not run.
        """
        if not self.kind.pairs:
            if "feats" in batch:
                feats = WindowFeatures(batch["feats"])
            else:
                feats = encode_windows(self.backbone, batch["clip"], self.windowing)
            return self.kind.loss(self.head, batch, feats), {}
        if "feats_a" in batch:
            fa = WindowFeatures(batch["feats_a"], batch.get("maps_a"))
            fb = WindowFeatures(batch["feats_b"], batch.get("maps_b"))
        else:
            n = batch["clip_a"].shape[0]
            feats = encode_windows(self.backbone, torch.cat([batch["clip_a"], batch["clip_b"]]), self.windowing,
                                   maps=self.kind.maps)  # query and partner in one batch, as the official code
            fa, fb = feats.select(slice(0, n)), feats.select(slice(n, None))
        return self.kind.loss(self.head, batch, fa, fb), {}


def aqa_step(model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
    loss, metrics = model(batch)
    count = batch["value_a"].shape[0] if "value_a" in batch else batch["target"].shape[0]
    return StepOutput(loss, metrics, count=count)


def adam_two_rates(model: AQAModel, *, lr_backbone: float, lr_head: float, weight_decay: float) -> torch.optim.Adam:
    """Adam with one parameter group for the trainable backbone and one for the head (official recipes)."""
    groups = [{"params": [p for p in model.backbone.parameters() if p.requires_grad], "lr": lr_backbone},
              {"params": list(model.head.parameters()), "lr": lr_head}]
    return torch.optim.Adam([g for g in groups if g["params"]], weight_decay=weight_decay)

