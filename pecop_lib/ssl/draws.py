"""Random draws for the pretext samplers, from an explicit numpy or torch generator.

The samplers in :mod:`pecop_lib.ssl` are pure functions of (number of frames, random draws). The
draws come from a generator passed by the caller (never from global random state), so a data
pipeline can give every sample its own generator seeded by (seed, epoch, index) and a run is
reproducible regardless of worker processes or resumption.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch

RandomSource = np.random.Generator | torch.Generator
"""A ``numpy.random.Generator`` (e.g. ``np.random.default_rng(seed)``) or a ``torch.Generator``."""

T = TypeVar("T")


def randint(rng: RandomSource, low: int, high: int) -> int:
    """Draw an integer uniformly from ``low..high`` (both inclusive, like Python's ``random.randint``).

    Args:
        rng: The generator to draw from.
        low: Smallest value.
        high: Largest value (inclusive).

    Returns:
        The drawn integer.

    Raises:
        ValueError: If ``high < low``.
        TypeError: If ``rng`` is neither a numpy nor a torch generator.
    """
    if high < low:
        raise ValueError(f"cannot draw an integer from the empty range {low}..{high}")
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(low, high + 1))
    if isinstance(rng, torch.Generator):
        return int(torch.randint(low, high + 1, (), generator=rng).item())
    raise TypeError(
        f"expected a numpy.random.Generator or torch.Generator, got {type(rng).__name__}; "
        "create one with numpy.random.default_rng(seed)"
    )


def choice(rng: RandomSource, options: Sequence[T]) -> T:
    """Draw one element of ``options`` uniformly.

    Raises:
        ValueError: If ``options`` is empty.
    """
    if not options:
        raise ValueError("cannot choose from an empty sequence")
    return options[randint(rng, 0, len(options) - 1)]
