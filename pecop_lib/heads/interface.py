"""The one interface every AQA head offers fine-tuning and evaluation: :class:`HeadKind`.

Fine-tuning (:mod:`pecop_lib.finetune`) never names a head. It asks the head's *kind* (one
object per head name, :data:`pecop_lib.heads.registry.HEAD_KINDS`) for everything that differs
between heads:

================================  ==========================================================
what                              :class:`HeadKind` member
================================  ==========================================================
its recipes (paper datasets)      :attr:`~HeadKind.recipes`, :attr:`~HeadKind.main_datasets`
what data it needs                :attr:`~HeadKind.pairs`, :attr:`~HeadKind.maps`,
                                  :attr:`~HeadKind.steps`, :meth:`~HeadKind.lacking_targets`,
                                  :meth:`~HeadKind.target`, :meth:`~HeadKind.extras`
the value it regresses            :meth:`~HeadKind.values`
the module, sized for the data    :meth:`~HeadKind.build`
its training loss                 :meth:`~HeadKind.loss`
prediction from features          :meth:`~HeadKind.score` (one video) or
                                  :meth:`~HeadKind.relative` (against an exemplar)
score reconstruction and scale    :meth:`~HeadKind.final_scores`,
                                  :meth:`~HeadKind.distribution_spec`
================================  ==========================================================

Two families exist. *Score* heads (USDL, MUSDL, the MLP baseline) map one video's features to a
score. *Pair* heads (CoRe, TSA) learn from pairs of videos of one exemplar group and score a test
video relative to training exemplars of its group. Adding a head is one new file in ``heads/``
(its module and its kind) and one entry in :mod:`pecop_lib.heads.registry`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from pecop_lib.heads.windows import WindowFeatures, Windowing

Protocol = Literal["official", "official_last10"]


@dataclass(frozen=True)
class FinetuneRecipe:
    """One head on one dataset with its official (or closest official) hyperparameters.

    Attributes:
        head: The head's registry name (e.g. ``usdl``).
        dataset: The dataset's display name (e.g. ``MTL-AQA``).
        windowing: Clip windowing scheme (:data:`pecop_lib.heads.OFFICIAL_WINDOWINGS`).
        lr_backbone: Adam learning rate of the backbone (and its adapters).
        lr_head: Adam learning rate of the head.
        weight_decay: Adam weight decay (both groups).
        batch_size: Training videos (score heads) or pairs (pair heads) per step.
        grad_accum_steps: Micro-batches per optimiser step.
        epochs: Official epoch count.
        bn_mode: Backbone BatchNorm during training: ``train`` or ``frozen``.
        official_protocol: ``official`` (best test epoch) or ``official_last10``.
        transform: Clip transform convention, or ``None`` for the dataset's default.
        max_crop: Largest crop the official code uses (FineDiving: 112).
        source: Where the values come from.
    """

    head: str
    dataset: str
    windowing: str
    lr_backbone: float
    lr_head: float
    weight_decay: float
    batch_size: int
    grad_accum_steps: int
    epochs: int
    bn_mode: str
    official_protocol: Protocol
    transform: str | None = None
    max_crop: int = 224
    source: str = "official code"

    @property
    def name(self) -> str:
        """E.g. ``"musdl/MTL-AQA"``."""
        return f"{self.head}/{self.dataset}"


NO_CODE = "closest official recipe (no official code for this pairing)"


class HeadKind:
    """What fine-tuning and evaluation need to know about one head (subclass once per head).

    Class attributes:
        name: Registry name (``usdl``); ``display``: its name in tables (``USDL``).
        pairs: Learns from same-group pairs and scores against exemplars (CoRe, TSA).
        maps: Needs the backbone's un-pooled window maps besides the pooled features (TSA).
        steps: Trains on and predicts step transitions (TSA: items carry ``transitions``, the
            evaluation reports tIoU).
        distributions: Predicts a score distribution per path, kept for plots (USDL, MUSDL).
        recipes: Dataset display name -> :class:`FinetuneRecipe`, in the paper's table order.
        main_datasets: How many of :attr:`recipes` the ``main`` notebook scope runs (``minimal``: 1).
    """

    name: ClassVar[str]
    display: ClassVar[str]
    pairs: ClassVar[bool] = False
    maps: ClassVar[bool] = False
    steps: ClassVar[bool] = False
    distributions: ClassVar[bool] = False
    recipes: ClassVar[Mapping[str, FinetuneRecipe]]
    main_datasets: ClassVar[int] = 1

    # ------------------------------------------------------------------------------ data it needs
    def lacking_targets(self, records: Sequence[Any], *, judged: bool) -> list[str]:
        """Ids of records that lack what the head trains on (``judged``: the dataset has judges)."""
        return []

    def target(self, record: Any) -> torch.Tensor:
        """A score head's training target of one record (float32): the final score ``()`` by default."""
        return torch.tensor(record.score, dtype=torch.float32)

    def path_targets(self, record: Any) -> np.ndarray:
        """The score of every predicted path of one record, float64 ``(paths,)`` (default: the final score)."""
        return np.array([record.score], dtype=np.float64)

    def values(self, records: Sequence[Any], dataset_key: str) -> np.ndarray:
        """The value regressed per record, float64 ``(N,)``: the final score unless the head says otherwise."""
        return np.array([r.score for r in records], dtype=np.float64)

    def extras(self, epoch: int, epochs: int) -> dict[str, torch.Tensor]:
        """Per-epoch entries of a pair item besides clips, values and transitions (TSA: teacher forcing)."""
        return {}

    # ----------------------------------------------------------------------------------- the module
    def build(self, feature_dim: int, windowing: Windowing, dataset_key: str, *, decode: str,
              values: np.ndarray, groups: Sequence[str], segment_pairs: str = "separate") -> nn.Module:
        """The head module, sized for the backbone's feature width and the clip windowing.

        Args:
            feature_dim: Backbone feature width ``C``.
            windowing: Clip windowing (windows and frames).
            dataset_key: The dataset's registry key (``mtl_aqa``), for per-dataset score scales.
            decode: Distribution decoding (USDL/MUSDL).
            segment_pairs: How TSA segments the two videos of a training pair (:class:`~pecop_lib.heads.tsa.TSA`).
            values: :meth:`values` of the training videos (after the validation hold-out).
            groups: Their exemplar groups.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement build()")

    def loss(self, head: nn.Module, batch: dict[str, torch.Tensor], a: WindowFeatures,
             b: WindowFeatures | None = None) -> torch.Tensor:
        """Training loss of a batch: ``a`` holds the (query) videos' features, ``b`` the partners' (pair heads)."""
        raise NotImplementedError(f"{type(self).__name__} must implement loss()")

    # ----------------------------------------------------------------------------------- prediction
    def score(self, head: nn.Module, feats: torch.Tensor,
              difficulty: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Score heads: predicted final scores ``(B,)`` of video features ``(B, C)`` and, where
        :attr:`distributions`, the predicted distributions ``(B, paths, bins)``."""
        raise NotImplementedError(f"{self.display} scores relative to exemplars (pairs=True): use relative()")

    def relative(self, head: nn.Module, query: WindowFeatures, exemplar: WindowFeatures,
                 s_exemplar: torch.Tensor) -> torch.Tensor:
        """Pair heads: ``value(query) - value(exemplar)`` ``(P,)`` for ``P`` query-exemplar pairs."""
        raise NotImplementedError(f"{self.display} scores one video at a time (pairs=False): use score()")

    def final_scores(self, values: np.ndarray, records: Sequence[Any], dataset_key: str) -> np.ndarray:
        """Final scores from the regressed :meth:`values` (identity unless the head rescales)."""
        return values

    def distribution_spec(self, dataset_key: str) -> Any:
        """Where :attr:`distributions`: the bins, sigma and paths of the predicted distributions
        (a :class:`~pecop_lib.heads.usdl.USDLSpec`); ``None`` for heads that predict none."""
        return None
