"""cuDNN autotuning during GPU training, unless the run asked PyTorch for determinism.

With ``torch.backends.cudnn.benchmark`` on, cuDNN times the convolution algorithms for each new input
shape once and keeps the fastest. Every training recipe of the package feeds clips of one fixed size
(the last batch of an epoch may be smaller: one more shape), so the search is paid once and the 3D
convolutions of I3D / R3D-18 run on the fastest algorithm afterwards. The chosen algorithm can differ
between runs, and with it the last bits of the results; a run that wants bit-for-bit repeatable GPU
results asks PyTorch for it with its own switches, ``torch.use_deterministic_algorithms(True)`` or
``torch.backends.cudnn.deterministic = True`` (see PyTorch's *Reproducibility* notes), and then
autotuning stays off. The package's seeds (:mod:`pecop_lib.train.rng`) fix the random draws, not the
kernels, so they do not request determinism by themselves. The CPU is not affected (no cuDNN).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def determinism_requested() -> bool:
    """True if PyTorch was asked for deterministic kernels (``use_deterministic_algorithms`` or cuDNN's flag)."""
    return torch.are_deterministic_algorithms_enabled() or bool(torch.backends.cudnn.deterministic)


def use_cudnn_benchmark(device: torch.device, requested: bool | None = None) -> bool:
    """Whether training on ``device`` should run with ``torch.backends.cudnn.benchmark`` on.

    Args:
        device: The training device.
        requested: ``True`` / ``False`` decides; ``None`` (automatic) turns autotuning on for CUDA
            devices unless :func:`determinism_requested`.

    Returns:
        ``False`` on any device other than CUDA; else the decision above.
    """
    if device.type != "cuda":
        return False
    if requested is not None:
        return requested
    return not determinism_requested()


@contextlib.contextmanager
def cudnn_autotuning(device: torch.device, requested: bool | None = None) -> Iterator[bool]:
    """Set ``torch.backends.cudnn.benchmark`` for a CUDA training run; restore the previous value after.

    Args:
        device: The training device; on anything but CUDA the flag is left as it is.
        requested: See :func:`use_cudnn_benchmark`.

    Yields:
        The value of ``torch.backends.cudnn.benchmark`` inside the body.
    """
    previous = torch.backends.cudnn.benchmark
    if device.type != "cuda":
        yield previous
        return
    torch.backends.cudnn.benchmark = use_cudnn_benchmark(device, requested)
    try:
        yield torch.backends.cudnn.benchmark
    finally:
        torch.backends.cudnn.benchmark = previous
