"""Exemplars of contrastive regression (CoRe, TSA): partner choice and cached test-time features.

CoRe and TSA predict a score *relative* to an exemplar whose score is known: in training each
video is paired with another training video of the same group (CoRe on MTL-AQA: same difficulty;
TSA on FineDiving: same action type; datasets without such a key: same task), and at test time a
query is compared with up to ``M`` = 10 training exemplars of its group and the
``M`` predictions ``relative + exemplar score`` are averaged.

The official test loops re-encode the query with every exemplar (query and exemplar go through
the backbone as one batch of two): ``2 x M x windows`` backbone windows per query. With the
backbone in eval mode (BatchNorm statistics fixed) a video's features do not depend on its batch
partner, so :func:`predict_with_exemplars` encodes every query once and every exemplar once for
the whole test set (:class:`FeatureCache`) and gives the same predictions; ``cached=False`` runs
the official per-pair loop for comparison.

Exemplar draws: the official datasets reshuffle the group's training list in place with Python's
``random`` (seed 0) for every test item at every epoch, so the draw depends on the order items are
read and changes from one epoch to the next. :func:`draw_exemplars` draws each query's exemplars from
its own generator, ``default_rng([seed, query])`` once for the run (``fixed``, the package's) or
``default_rng([seed, epoch, query])`` anew at every epoch (``per_epoch``, the official code's
variety; the fine-tuning option ``exemplar_draws``): reproducible and independent of loading order
either way.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from pecop_lib.heads.windows import WindowFeatures, Windowing, encode_windows
from pecop_lib.models.backbone import Backbone

MissingGroup = Literal["error", "any"]

RelativeFn = Callable[[WindowFeatures, WindowFeatures, torch.Tensor], torch.Tensor]
"""``(query features, exemplar features, exemplar scores (P,)) -> predicted query - exemplar (P,)``."""

ClipFn = Callable[[int], torch.Tensor]
"""``index -> clip (3, T, H, W)`` (e.g. ``lambda i: dataset[i]["clip"]``)."""

PAIR_CHUNK = 256
"""(query, exemplar) pairs per head call on the cached path."""


def group_members(groups: Sequence[Hashable]) -> dict[Hashable, np.ndarray]:
    """Indices of each group's members, in input order."""
    members: dict[Hashable, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    return {g: np.asarray(ix, dtype=np.int64) for g, ix in members.items()}


def training_partners(groups: Sequence[Hashable], rng: np.random.Generator) -> np.ndarray:
    """For each training video, a random *other* training video of the same group.

    As the official training pairs: uniform among the group's other members; a video alone in
    its group is paired with itself.

    Args:
        groups: Group key of every training video.
        rng: Source of the draw (e.g. ``np.random.default_rng([seed, epoch])``).

    Returns:
        int64 ``(N,)`` partner indices.
    """
    members = group_members(groups)
    partners = np.empty(len(groups), dtype=np.int64)
    for i, g in enumerate(groups):
        others = members[g][members[g] != i]
        partners[i] = i if len(others) == 0 else others[rng.integers(len(others))]
    return partners


@dataclass(frozen=True)
class ExemplarDraw:
    """Test exemplars of every query.

    Attributes:
        indices: int64 ``(Q, M)`` indices into the training set; ``-1`` where a query's group has
            fewer than ``M`` training videos (MTL-AQA split 0: difficulty 1.5 has one).
    """

    indices: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """bool ``(Q, M)``: which entries are real exemplars."""
        return self.indices >= 0

    def used(self) -> np.ndarray:
        """The distinct training indices drawn, sorted."""
        return np.unique(self.indices[self.mask])

    def videos_to_encode(self, cached: bool) -> int:
        """Backbone video encodings of one test pass over all queries.

        ``cached=False`` (official loop): 2 per (query, exemplar) pair; ``cached=True``: every
        query once plus every distinct exemplar once. Multiply by the windows per clip for
        backbone windows.
        """
        if cached:
            return int(self.indices.shape[0] + len(self.used()))
        return int(2 * self.mask.sum())


def draw_exemplars(
    query_groups: Sequence[Hashable],
    train_groups: Sequence[Hashable],
    count: int = 10,
    *,
    seed: int = 0,
    missing: MissingGroup = "error",
    shared: bool = False,
    epoch: int | None = None,
) -> ExemplarDraw:
    """Up to ``count`` training exemplars of the query's group, in random order, for every query.

    Args:
        query_groups: Group key of every query (test video).
        train_groups: Group key of every training video.
        count: ``M`` (``voter_number``, 10 officially).
        seed: Each query draws from ``np.random.default_rng([seed, query index])``.
        missing: What to do for a query whose group has no training video: ``"error"`` (the
            official code fails with a KeyError) or ``"any"`` (draw from the whole training set).
        shared: ``False`` (official): every query draws its own exemplars. ``True``: one draw
            per group (from ``default_rng([seed, first query of the group])``) shared by all
            its queries, a fixed exemplar bank of at most ``count`` videos per group: far fewer
            exemplar videos to encode, less exemplar variety across queries. Label results.
        epoch: Draw anew for this epoch (``default_rng([seed, epoch, query])``, the official
            code's redraw at every epoch); ``None``: one draw for the whole run.

    Raises:
        ValueError: For a group without training videos when ``missing="error"`` (naming it).
    """
    if count < 1:
        raise ValueError(f"exemplar count must be >= 1, got {count}")
    if epoch is not None and epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    members = group_members(train_groups)
    everyone = np.arange(len(train_groups), dtype=np.int64)
    out = np.full((len(query_groups), count), -1, dtype=np.int64)
    first_query: dict[Hashable, int] = {}
    for q, g in enumerate(query_groups):
        if shared and g in first_query:
            out[q] = out[first_query[g]]
            continue
        first_query.setdefault(g, q)
        pool = members.get(g)
        if pool is None:
            if missing != "any":
                raise ValueError(
                    f"query {q} has group {g!r} but no training video does (groups: {sorted(map(str, members))}); "
                    "pass missing='any' to draw from the whole training set"
                )
            pool = everyone
        entropy = [seed, q] if epoch is None else [seed, epoch, q]
        chosen = np.random.default_rng(entropy).permutation(pool)[:count]
        out[q, : len(chosen)] = chosen
    return ExemplarDraw(out)


def _device(backbone: Backbone) -> torch.device:
    return next(backbone.parameters()).device


def _stack(clip: ClipFn, keys: Sequence[int], device: torch.device) -> torch.Tensor:
    return torch.stack([clip(int(k)) for k in keys]).to(device)


class FeatureCache:
    """Window features of videos, each computed once (in batches) and reused.

    Args:
        backbone: The backbone, in eval mode (see :func:`predict_with_exemplars`).
        windowing: Clip windowing.
        clip: ``index -> clip (3, T, H, W)``; ``None`` for a cache filled by :meth:`filled` only.
        maps: Also keep the feature maps (TSA).
        batch_size: Videos per backbone call.
    """

    def __init__(
        self,
        backbone: Backbone | None,
        windowing: Windowing,
        clip: ClipFn | None,
        *,
        maps: bool = False,
        batch_size: int = 8,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.backbone, self.windowing, self.clip = backbone, windowing, clip
        self.maps, self.batch_size = maps, batch_size
        self._store: dict[int, WindowFeatures] = {}

    @classmethod
    def filled(cls, features: WindowFeatures, windowing: Windowing) -> FeatureCache:
        """A cache holding precomputed features of videos ``0..N-1`` (e.g. from a
        :class:`~pecop_lib.heads.feature_store.FeatureStore`); asking for another index raises."""
        cache = cls(None, windowing, None, maps=features.maps is not None)
        cache._store = {i: features.select(slice(i, i + 1)) for i in range(features.pooled.shape[0])}
        return cache

    def __len__(self) -> int:
        return len(self._store)

    def features(self, keys: Sequence[int] | np.ndarray) -> WindowFeatures:
        """Features of ``keys`` (batch axis in key order); encodes the keys not seen yet.

        Raises:
            KeyError: For an index a :meth:`filled` cache does not hold.
        """
        keys = [int(k) for k in keys]
        todo = [k for k in dict.fromkeys(keys) if k not in self._store]
        if todo and (self.clip is None or self.backbone is None):
            raise KeyError(f"videos {todo[:5]} are not in this precomputed feature cache ({len(self)} videos)")
        device = _device(self.backbone) if todo else torch.device("cpu")
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            feats = encode_windows(
                self.backbone, _stack(self.clip, chunk, device), self.windowing, maps=self.maps
            )
            for i, k in enumerate(chunk):
                self._store[k] = feats.select(slice(i, i + 1))
        return WindowFeatures.cat([self._store[k] for k in keys])


def exemplar_votes(
    relative: RelativeFn,
    backbone: Backbone,
    windowing: Windowing,
    *,
    query_clip: ClipFn,
    num_queries: int,
    exemplar_clip: ClipFn,
    draw: ExemplarDraw,
    exemplar_scores: Sequence[float] | np.ndarray | torch.Tensor,
    cached: bool = True,
    maps: bool = False,
    batch_size: int = 8,
    query_cache: FeatureCache | None = None,
    exemplar_cache: FeatureCache | None = None,
) -> tuple[np.ndarray, torch.Tensor]:
    """Test-time votes: ``relative + exemplar score`` of every (query, exemplar) pair of the draw.

    Args:
        relative: The head's pair prediction (e.g. :meth:`pecop_lib.heads.core.CoRe.relative_to`).
        backbone: The backbone; must be in eval mode (``backbone.eval()``) so that a video's
            features do not depend on the batch it is encoded in.
        windowing: Clip windowing.
        query_clip: ``query index -> clip`` (test split, test transform).
        num_queries: ``Q``.
        exemplar_clip: ``training index -> clip`` (training split read with the *test* transform).
        draw: Exemplars per query (:func:`draw_exemplars`).
        exemplar_scores: Score of every training video on the scale the head regresses.
        cached: ``True``: every query and every drawn exemplar is encoded once
            (``Q + len(draw.used())`` videos); ``False``: the official loop, one backbone call on
            (query, exemplar) per pair (``2 x valid pairs`` videos).
        maps: Encode feature maps too (TSA).
        batch_size: Videos per backbone call on the cached path.
        query_cache: On the cached path, the :class:`FeatureCache` of the queries to use (and
            fill), so that the caller reuses the query features afterwards (TSA's transitions)
            or brings precomputed ones (:meth:`FeatureCache.filled`); ``None`` builds one.
        exemplar_cache: The same for the exemplars (training videos).

    Returns:
        ``(query_of_pair, votes)``: the query index of every valid pair ``(P,)`` (query-major, in draw order)
        and its float32 vote ``(P,)`` on the head's score scale.

    Raises:
        ValueError: If the backbone is in training mode, or a query has no exemplar.
    """
    if backbone.training:
        raise ValueError(
            "predict_with_exemplars needs backbone.eval(): cached features are exact only with fixed BatchNorm statistics"
        )
    if draw.indices.shape[0] != num_queries:
        raise ValueError(
            f"the exemplar draw has {draw.indices.shape[0]} rows but num_queries is {num_queries}"
        )
    if not draw.mask.any(axis=1).all():
        raise ValueError(f"queries {np.flatnonzero(~draw.mask.any(axis=1)).tolist()} have no exemplar")
    device = _device(backbone)
    scores = torch.as_tensor(exemplar_scores, dtype=torch.float32).to(device)
    q_idx, slot = np.nonzero(draw.mask)
    e_idx = draw.indices[q_idx, slot]
    pair_scores = scores[torch.as_tensor(e_idx, device=device)]  # (pairs,)
    with torch.inference_mode():
        if cached:
            queries, exemplars = (
                given if given is not None else FeatureCache(backbone, windowing, clip, maps=maps, batch_size=batch_size)
                for given, clip in ((query_cache, query_clip), (exemplar_cache, exemplar_clip))
            )
            if queries.maps != maps or exemplars.maps != maps:
                raise ValueError(f"maps={maps} but a given feature cache was built with maps={not maps}")
            deltas = torch.cat(
                [
                    relative(
                        queries.features(q_idx[s : s + PAIR_CHUNK]),
                        exemplars.features(e_idx[s : s + PAIR_CHUNK]),
                        pair_scores[s : s + PAIR_CHUNK],
                    )
                    for s in range(0, len(q_idx), PAIR_CHUNK)
                ]
            )
        else:
            parts = []
            for p, (q, e) in enumerate(zip(q_idx, e_idx)):
                pair = torch.stack([query_clip(int(q)), exemplar_clip(int(e))]).to(device)
                feats = encode_windows(backbone, pair, windowing, maps=maps)
                parts.append(
                    relative(feats.select(slice(0, 1)), feats.select(slice(1, 2)), pair_scores[p : p + 1])
                )
            deltas = torch.cat(parts)
        votes = deltas.float() + pair_scores
    return q_idx, votes


def predict_with_exemplars(
    relative: RelativeFn,
    backbone: Backbone,
    windowing: Windowing,
    *,
    query_clip: ClipFn,
    num_queries: int,
    exemplar_clip: ClipFn,
    draw: ExemplarDraw,
    exemplar_scores: Sequence[float] | np.ndarray | torch.Tensor,
    cached: bool = True,
    maps: bool = False,
    batch_size: int = 8,
    query_cache: FeatureCache | None = None,
    exemplar_cache: FeatureCache | None = None,
) -> torch.Tensor:
    """Test-time prediction: mean over a query's exemplars of ``relative + exemplar score``.

    Takes :func:`exemplar_votes`' arguments and averages its votes per query.

    Returns:
        float32 ``(Q,)`` predictions on the head's score scale (CoRe on MTL-AQA: completeness;
        multiply by the difficulty).
    """
    q_idx, votes = exemplar_votes(
        relative, backbone, windowing, query_clip=query_clip, num_queries=num_queries, exemplar_clip=exemplar_clip,
        draw=draw, exemplar_scores=exemplar_scores, cached=cached, maps=maps, batch_size=batch_size,
        query_cache=query_cache, exemplar_cache=exemplar_cache)
    return vote_means(q_idx, votes, num_queries)


def vote_means(query_of_pair: np.ndarray, votes: torch.Tensor, num_queries: int) -> torch.Tensor:
    """The mean vote per query ``(Q,)`` from :func:`exemplar_votes`' pairs (every query needs one vote)."""
    q_t = torch.as_tensor(query_of_pair, device=votes.device)
    total = torch.zeros(num_queries, device=votes.device).index_add_(0, q_t, votes)
    count = torch.zeros(num_queries, device=votes.device).index_add_(0, q_t, torch.ones_like(votes))
    return total / count
