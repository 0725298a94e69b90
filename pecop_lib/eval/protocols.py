"""Model-selection protocols: ``official`` (as every official AQA repository does it) and ``honest``.

The official repositories evaluate the test split after every epoch and report the *best* epoch's
Spearman (MUSDL on JIGSAWS: the mean of the last 10 epochs). Picking the maximum of many noisy test
values is optimistically biased and leaks test information into model selection, so pecop also
reports an ``honest`` number: the epoch is chosen on a validation split carved from the training set
(:func:`holdout_split`) and the test split is read once, at that epoch. Every reported number says which
protocol produced it.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

PROTOCOLS: tuple[str, ...] = ("official", "official_last10", "honest")


@dataclass(frozen=True)
class Selection:
    """The number a protocol reports.

    Attributes:
        protocol: One of :data:`PROTOCOLS`.
        test_rho: The test Spearman the protocol reports.
        epoch: The selected epoch (0-based), ``None`` for averaged protocols.
        description: One line saying how the number was chosen.
    """

    protocol: str
    test_rho: float
    epoch: int | None
    description: str


def _curve(values: Sequence[float], name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty list of per-epoch values")
    if np.isnan(arr).all():
        raise ValueError(f"{name} is NaN at every epoch (constant predictions?)")
    return arr


def official_best(test_rhos: Sequence[float]) -> Selection:
    """Best test epoch, as the official code reports it (optimistic)."""
    rhos = _curve(test_rhos, "test_rhos")
    epoch = int(np.nanargmax(rhos))
    return Selection("official", float(rhos[epoch]), epoch, "best epoch on the test split (official protocol; optimistic)")


def official_last_mean(test_rhos: Sequence[float], last: int = 10) -> Selection:
    """Mean test rho of the last ``last`` epochs (MUSDL's JIGSAWS protocol)."""
    rhos = _curve(test_rhos, "test_rhos")
    if rhos.size < last:
        raise ValueError(f"official_last_mean needs at least {last} epochs, got {rhos.size}")
    return Selection("official_last10", float(np.nanmean(rhos[-last:])), None,
                     f"mean test rho of the last {last} epochs (MUSDL JIGSAWS protocol)")


def honest(val_rhos: Sequence[float], test_rhos: Sequence[float]) -> Selection:
    """Epoch chosen on the validation split; the test rho at that epoch."""
    val = _curve(val_rhos, "val_rhos")
    test = _curve(test_rhos, "test_rhos")
    if val.shape != test.shape:
        raise ValueError(f"val_rhos ({val.size} epochs) and test_rhos ({test.size} epochs) differ in length")
    epoch = int(np.nanargmax(val))
    return Selection("honest", float(test[epoch]), epoch, "epoch chosen on a validation split carved from training")


def holdout_split(
    keys: Sequence[Hashable],
    fraction: float = 0.2,
    *,
    seed: int = 0,
    groups: Sequence[Hashable] | None = None,
    stratify: Sequence[Hashable] | None = None,
) -> tuple[list[int], list[int]]:
    """Carve a validation split out of a training split.

    Args:
        keys: Sample ids of the training split (only their count and order matter).
        fraction: Share of samples to hold out, in (0, 1).
        seed: Seed of the random choice.
        groups: Optional group per sample (e.g. surgeon or patient): validation and training are then
            group-disjoint, whole groups are held out until ``fraction`` is reached.
        stratify: Optional stratum per sample (e.g. difficulty or dive number): the fraction is taken
            within each stratum (at least one sample from every stratum with two or more).

    Returns:
        ``(train_indices, val_indices)``, sorted, disjoint, covering all samples.
    """
    n = len(keys)
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    if n < 2:
        raise ValueError(f"need at least 2 training samples to hold some out, got {n}")
    if groups is not None and stratify is not None:
        raise ValueError("use either groups (disjoint) or stratify, not both")
    rng = np.random.default_rng(seed)
    labels = groups if groups is not None else stratify
    if labels is not None and len(labels) != n:
        raise ValueError(f"{'groups' if groups is not None else 'stratify'} has {len(labels)} entries for {n} samples")
    val: list[int] = []
    if groups is not None:
        names = list(dict.fromkeys(groups))
        if len(names) < 2:
            raise ValueError("group-disjoint hold-out needs at least 2 groups")
        target = max(1, round(fraction * n))
        for taken, g in enumerate(rng.permutation(len(names))):
            if len(val) >= target or taken == len(names) - 1:  # always leave one group for training
                break
            val.extend(i for i in range(n) if groups[i] == names[g])
    elif stratify is not None:
        for stratum in dict.fromkeys(stratify):
            members = [i for i in range(n) if stratify[i] == stratum]
            if len(members) >= 2:
                take = max(1, round(fraction * len(members)))
                val.extend(int(i) for i in rng.choice(members, size=take, replace=False))
    else:
        val = [int(i) for i in rng.choice(n, size=max(1, round(fraction * n)), replace=False)]
    held = set(val)
    return [i for i in range(n) if i not in held], sorted(held)

