"""Mixed precision: which autocast dtype a run uses and whether it needs a gradient scaler.

``"auto"`` picks bf16 autocast on GPUs that support it (Ampere and newer: no gradient scaler
needed), fp16 with a :class:`torch.amp.GradScaler` on older GPUs, and plain fp32 on the CPU.
Parameters and optimiser state stay fp32 in every mode.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; ``None`` means fp32 without autocast.

    Raises:
        ValueError: On an unknown precision, or fp16 requested on a CPU.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError(f"precision 'fp16' needs a CUDA device, got {device}; use 'bf16' or 'fp32' on the CPU")
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``dtype`` on ``device``, or a no-op context when ``dtype`` is ``None``."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16 autocast (``None`` for fp32 and bf16, which need none)."""
    return torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
