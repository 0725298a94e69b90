"""Per-epoch evaluation: every test and validation video scored (one video at a time for score heads,
against training exemplars of its group for pair heads), sharded over processes, into one epoch record."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pecop_lib.data.dataset import AQADataset
from pecop_lib.data.registry import dataset_record
from pecop_lib.eval import (
    l2,
    relative_l2,
    spearman,
    tiou_accuracy,
)
from pecop_lib.finetune.model import AQAModel
from pecop_lib.finetune.recipes import FinetuneOptions, Setting
from pecop_lib.heads import (
    ExemplarDraw,
    FeatureCache,
    FeatureStore,
    WindowFeatures,
    draw_exemplars,
    encode_windows,
    predict_with_exemplars,
)
from pecop_lib.train.distributed import DistributedContext
from pecop_lib.train.precision import autocast

DISTRIBUTION_SAMPLES = 4
"""Test videos whose predicted (M)USDL distributions are kept at every epoch (for plots)."""


@dataclass
class SplitPrediction:
    """Predictions of one evaluation pass.

    Attributes:
        pred: Predicted final scores ``(N,)``.
        transitions: TSA's predicted transitions ``(N, 2)``, else ``None``.
        distributions: (M)USDL predicted distributions of the first queries ``(k, paths, bins)``.
    """

    pred: np.ndarray
    transitions: np.ndarray | None = None
    distributions: np.ndarray | None = None


@dataclass
class Evaluator:
    """Evaluates the model on a list of queries (test then validation videos), sharded over processes."""

    model: AQAModel
    setting: Setting
    queries: list[tuple[AQADataset, int]]
    exemplar_set: AQADataset
    exemplar_indices: list[int]
    exemplar_values: np.ndarray
    options: FinetuneOptions
    seed: int
    context: DistributedContext
    amp_dtype: torch.dtype | None
    keep_distributions: int = DISTRIBUTION_SAMPLES
    draw: ExemplarDraw | None = None
    store: FeatureStore | None = None  # set when the backbone cannot change: features computed once, on disk
    split_at: int | None = None  # queries before it (the test videos) never share a batch with those after it
    exemplars: FeatureCache | None = None  # pair heads: every exemplar's features at the last evaluation

    def __post_init__(self) -> None:
        self._redraw(None)

    def _redraw(self, epoch: int | None) -> None:
        """The exemplars of every query (pair heads): one draw for the run, or one per ``epoch``."""
        if self.setting.kind.pairs:
            exemplar_groups = [self.exemplar_set.records[i].group for i in self.exemplar_indices]
            self.draw = draw_exemplars([ds.records[i].group for ds, i in self.queries], exemplar_groups,
                                       self.options.exemplars, seed=self.seed, missing=self.options.exemplar_missing,
                                       shared=self.options.shared_exemplars, epoch=epoch)  # type: ignore[arg-type]

    def _mine(self) -> list[int]:
        return list(range(self.context.rank, len(self.queries), self.context.world_size))

    def _clip(self, q: int) -> torch.Tensor:
        dataset, index = self.queries[q]
        return dataset[index]["clip"]

    def _stored(self, items: list[tuple[AQADataset, int]]) -> WindowFeatures:
        """Frozen-backbone features of dataset items, from :attr:`store`, on the model's device."""
        device = next(self.model.parameters()).device
        loaded: dict[int, WindowFeatures] = {}
        for dataset, _ in items:
            if id(dataset) not in loaded:
                loaded[id(dataset)] = self.store.window_features(  # type: ignore[union-attr]
                    self.model.backbone, dataset, self.model.windowing, maps=self.setting.kind.maps,
                    amp_dtype=self.amp_dtype, batch_size=self.options.eval_batch_size)
        feats = WindowFeatures.cat([loaded[id(dataset)].select(slice(i, i + 1)) for dataset, i in items])
        return WindowFeatures(feats.pooled.to(device), None if feats.maps is None else feats.maps.to(device))

    def _score_heads(self, mine: list[int]) -> dict[int, tuple[float, np.ndarray | None]]:
        backbone, head = self.model.backbone, self.model.head
        device = next(self.model.parameters()).device
        out: dict[int, tuple[float, np.ndarray | None]] = {}
        size = self.options.eval_batch_size
        stored = self._stored([self.queries[q] for q in mine]).video() if self.store is not None else None
        for start in range(0, len(mine), size):
            chunk = mine[start : start + size]
            if stored is not None:
                feats = stored[start : start + size]
                records = [self.queries[q][0].records[self.queries[q][1]] for q in chunk]
                difficulty = torch.tensor([1.0 if r.difficulty is None else r.difficulty for r in records], device=device)
            else:
                samples = [self.queries[q][0][self.queries[q][1]] for q in chunk]
                clips = torch.stack([s["clip"] for s in samples]).to(device)
                with autocast(device, self.amp_dtype):
                    feats = encode_windows(backbone, clips, self.model.windowing).video()
                difficulty = torch.stack([s.get("difficulty", torch.tensor(1.0)) for s in samples]).to(device)
            pred, dist = self.setting.kind.score(head, feats.float(), difficulty)
            dists = [None] * len(chunk) if dist is None else list(dist.cpu().numpy())
            for q, p, d in zip(chunk, pred.tolist(), dists, strict=True):
                out[q] = (p, d if q < self.keep_distributions else None)
        return out

    def _exemplar_cache(self) -> FeatureCache:
        """Every training exemplar's features, encoded in their order in batches of ``eval_batch_size`` (from the
        store when the backbone is fixed): the same batches whichever queries draw them, as an export's bank."""
        windowing = self.model.windowing
        if self.store is not None:
            return FeatureCache.filled(self._stored([(self.exemplar_set, i) for i in self.exemplar_indices]), windowing)
        cache = FeatureCache(self.model.backbone, windowing,
                             lambda k: self.exemplar_set[self.exemplar_indices[k]]["clip"],
                             maps=self.setting.kind.maps, batch_size=self.options.eval_batch_size)
        with autocast(next(self.model.parameters()).device, self.amp_dtype):
            cache.features(range(len(self.exemplar_indices)))
        return cache

    def _pair_heads(self, mine: list[int], exemplars: FeatureCache) -> dict[int, tuple[float, np.ndarray | None]]:
        backbone, head = self.model.backbone, self.model.head
        device = next(self.model.parameters()).device
        kind = self.setting.kind

        def relative(query: WindowFeatures, exemplar: WindowFeatures, s_exemplar: torch.Tensor) -> torch.Tensor:
            def f32(x: WindowFeatures) -> WindowFeatures:
                return WindowFeatures(x.pooled.float(), None if x.maps is None else x.maps.float())

            with torch.autocast(device.type, enabled=False):  # the head decodes in fp32 (group edges)
                return kind.relative(head, f32(query), f32(exemplar), s_exemplar.float())

        draw = ExemplarDraw(self.draw.indices[mine])
        size, windowing = self.options.eval_batch_size, self.model.windowing
        if self.store is not None:  # fixed backbone: every video encoded once per run (or read from disk)
            queries = FeatureCache.filled(self._stored([self.queries[q] for q in mine]), windowing)
        else:  # each query encoded once per evaluation; TSA's transitions reuse the queries
            queries = FeatureCache(backbone, windowing, lambda k: self._clip(mine[k]), maps=kind.maps,
                                   batch_size=size)
        with autocast(device, self.amp_dtype):
            values = predict_with_exemplars(
                relative, backbone, windowing, query_clip=lambda k: self._clip(mine[k]),
                num_queries=len(mine), exemplar_clip=lambda k: self.exemplar_set[self.exemplar_indices[k]]["clip"],
                draw=draw, exemplar_scores=self.exemplar_values, cached=True, maps=kind.maps, batch_size=size,
                query_cache=queries, exemplar_cache=exemplars,
            ).cpu().numpy()
        records = [self.queries[q][0].records[self.queries[q][1]] for q in mine]
        values = kind.final_scores(values, records, dataset_record(self.setting.dataset).key)
        out: dict[int, tuple[float, np.ndarray | None]] = {
            q: (float(v), None) for q, v in zip(mine, values, strict=True)}
        if kind.steps:  # predicted transitions of the queries (tIoU), from the features already encoded
            with torch.inference_mode():
                for start in range(0, len(mine), size):
                    chunk = mine[start : start + size]
                    feats = queries.features(range(start, start + len(chunk)))
                    trans = head.transitions(WindowFeatures(feats.pooled.float())).cpu().numpy()
                    for q, t in zip(chunk, trans, strict=True):
                        out[q] = (out[q][0], t)
        return out

    def __call__(self, epoch: int | None = None) -> SplitPrediction:
        """Predict every query (each process its shard, gathered on all).

        Args:
            epoch: The epoch evaluated; with ``options.exemplar_draws == "per_epoch"`` the pair heads'
                exemplars are drawn anew for it (the official code's redraw), else the run's draw is kept.
        """
        if self.options.exemplar_draws == "per_epoch" and epoch is not None:
            self._redraw(epoch)
        mine = self._mine()
        split = len(self.queries) if self.split_at is None else self.split_at
        parts = [p for p in ([q for q in mine if q < split], [q for q in mine if q >= split]) if p]
        was_training = self.model.training
        self.model.eval()
        local: dict[int, tuple[float, np.ndarray | None]] = {}
        try:
            with torch.inference_mode():
                if self.setting.kind.pairs:
                    exemplars = self.exemplars = self._exemplar_cache()
                    for part in parts:  # test and validation videos never share a batch: a test prediction is
                        local.update(self._pair_heads(part, exemplars))  # what an export of the model gives
                else:
                    for part in parts:
                        local.update(self._score_heads(part))
        finally:
            self.model.train(was_training)
        merged: dict[int, tuple[float, np.ndarray | None]] = {}
        for part in self.context.all_gather_object(local):
            merged.update(part)
        pred = np.array([merged[q][0] for q in range(len(self.queries))], dtype=np.float64)
        extra = [merged[q][1] for q in range(len(self.queries))]
        if self.setting.kind.steps:
            return SplitPrediction(pred, transitions=np.stack(extra))
        dists = [e for e in extra if e is not None]
        return SplitPrediction(pred, distributions=np.stack(dists) if dists else None)


def finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def nan_if_none(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def epoch_record(
    epoch: int, train_loss: float, test: SplitPrediction, test_true: np.ndarray, val_pred: np.ndarray | None,
    val_true: np.ndarray | None, test_transitions: np.ndarray | None,
) -> dict[str, Any]:
    """One epoch's evaluation: rho / L2 / R-l2 (x100) on test, rho on validation, tIoU (TSA), predictions.

    Undefined values (a rho of constant predictions) are stored as ``None``.
    """
    record: dict[str, Any] = {
        "epoch": epoch,
        "train_loss": train_loss,
        "test_rho": spearman(test.pred, test_true),
        "test_l2": l2(test.pred, test_true),
        "test_rl2": relative_l2(test.pred, test_true) if np.ptp(test_true) > 0 else float("nan"),
        "val_rho": spearman(val_pred, val_true) if val_pred is not None else float("nan"),
        "test_pred": test.pred.tolist(),
        "val_pred": val_pred.tolist() if val_pred is not None else [],
    }
    if test.transitions is not None and test_transitions is not None:
        accuracy = tiou_accuracy(test.transitions, test_transitions)
        record.update({f"test_tiou_{th:g}": acc for th, acc in accuracy.items()})
        record["test_transitions"] = test.transitions.tolist()
    if test.distributions is not None:
        record["distributions"] = test.distributions.tolist()
    return {k: finite_or_none(v) if isinstance(v, float) else v for k, v in record.items()}  # JSON: nan -> None

