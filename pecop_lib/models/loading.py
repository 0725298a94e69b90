"""What loading weights reports: the strict-loading error, the load report, the one safe file reader.

Shared by both checkpoint formats, :mod:`pecop_lib.models.weights` (whole state dicts in any
layout) and :mod:`pecop_lib.models.adapter_checkpoint` (adapter-only folders), so that neither
imports the other's internals.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch


class WeightsMismatchError(ValueError):
    """A checkpoint does not fit the model; ``missing``, ``unexpected`` and ``mismatched`` hold the keys."""

    def __init__(self, message: str, missing: list[str], unexpected: list[str], mismatched: list[str]) -> None:
        super().__init__(message)
        self.missing = missing
        self.unexpected = unexpected
        self.mismatched = mismatched


@dataclass
class LoadReport:
    """What :func:`load_weights` did.

    Attributes:
        source: Path or ``"<state dict>"``.
        layout: Detected (or given) layout.
        converted: ``{checkpoint key: model key}`` for every loaded tensor.
        missing: Model keys not loaded: only adapter keys kept at their initialisation because
            the checkpoint holds no adapters (anything else raises).
        unexpected: Checkpoint keys not loaded: only those moved to :attr:`extras` (anything else
            raises).
        extras: Tensors the backbone does not hold: pretext heads (``logits_p.*``,
            ``logits_s.*``), a Kinetics classifier when the model has none, or heads stored in an
            adapter checkpoint; named in ``pecop_lib`` terms.
        filled: Model keys filled with defaults (``num_batches_tracked`` absent from old files).
        notes: Human-readable remarks (BatchNorm eps, unwrapped containers, ...).
    """

    source: str
    layout: str
    converted: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    filled: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One paragraph for printing in a notebook."""
        lines = [
            f"{self.source}: layout {self.layout}, {len(self.converted)} tensors loaded",
            f"  kept at init (not in checkpoint): {len(self.missing)}",
            f"  not loaded (returned in extras): {sorted(self.extras)}",
            f"  filled with defaults: {len(self.filled)}",
        ]
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file (no code can run: the format holds tensors and a JSON header only).

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it is truncated, corrupt or not a safetensors file, naming it and the fix.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist; check the path or re-save the checkpoint")
    try:
        return load_file(str(path))
    except SafetensorError as exc:
        raise ValueError(
            f"cannot read {path} as safetensors ({exc}): the file is truncated, corrupt or not a safetensors file; "
            "copy it again or re-save it"
        ) from exc
