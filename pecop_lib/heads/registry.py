"""The heads fine-tuning knows, by name: one :class:`~pecop_lib.heads.interface.HeadKind` each.

Adding a head: its module and kind in one new file of ``heads/``, one entry in :data:`HEAD_KINDS`
(see :mod:`pecop_lib.heads.mlp`, the I3D + MLP baseline, added that way).
"""

from __future__ import annotations

from pecop_lib.heads.core import CoReKind
from pecop_lib.heads.interface import FinetuneRecipe, HeadKind
from pecop_lib.heads.mlp import MLPKind
from pecop_lib.heads.tsa import TSAKind
from pecop_lib.heads.usdl import MUSDLKind, USDLKind

HEAD_KINDS: dict[str, HeadKind] = {kind.name: kind for kind in (USDLKind(), MUSDLKind(), CoReKind(), TSAKind(),
                                                                MLPKind())}
"""Head name -> its kind, in the order of the paper's tables (the baseline last)."""

HEADS: tuple[str, ...] = tuple(HEAD_KINDS)


def head_kind(name: str) -> HeadKind:
    """The kind of head ``name``.

    Raises:
        ValueError: On an unknown head (listing the known ones).
    """
    if name not in HEAD_KINDS:
        raise ValueError(f"unknown head {name!r}; choose one of {HEADS}")
    return HEAD_KINDS[name]


def recipes() -> dict[str, FinetuneRecipe]:
    """Every (head, dataset) pairing with a recipe, keyed ``"head/dataset"``."""
    return {r.name: r for kind in HEAD_KINDS.values() for r in kind.recipes.values()}
