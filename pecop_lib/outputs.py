"""What a notebook leaves behind: its output folder, figures, ``metrics.json`` and progress bars.

Every notebook writes through these helpers so that the runner and the tests find the same files
in the same places, and so that ``smoke`` outputs are always labelled as plumbing checks.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from pecop_lib.atomic import atomic_path, atomic_write_json, writable_folder
from pecop_lib.config import PRESET_NOTICES

T = TypeVar("T")

HEADLESS_ENV = "PECOP_HEADLESS"
"""Environment variable the runner sets to ``1`` so that progress bars print as text lines."""

METRICS_FILE = "metrics.json"
FIGURES_DIR = "figures"


def prepare_out_dir(out_dir: str | os.PathLike[str]) -> Path:
    """Create ``out_dir`` and its ``figures/`` subfolder; return the folder as a :class:`Path`.

    Raises:
        PermissionError: If the folder cannot be created, naming it and the fix.
        OSError: ``EROFS`` if it lies on a read-only file system, naming it and the fix.
        NotADirectoryError: If its path is a file, naming the file and the fix.
    """
    path = Path(out_dir)
    writable_folder(path / FIGURES_DIR, "set OUT_DIR elsewhere")
    return path


def titled(title: str, preset: str) -> str:
    """Return a figure title with the preset's notice appended (``smoke``, ``course``; see ``PRESET_NOTICES``)."""
    notice = PRESET_NOTICES.get(preset)
    return f"{title}\n({notice})" if notice else title


def save_figure(fig: Any, out_dir: str | os.PathLike[str], name: str, *, formats: Iterable[str] = ("png",)) -> list[Path]:
    """Save a matplotlib figure as ``out_dir/figures/<name>.<fmt>`` (atomic writes).

    Args:
        fig: A :class:`matplotlib.figure.Figure`.
        out_dir: The notebook's output folder.
        name: File stem, e.g. ``"fig5_strategies"``.
        formats: File formats understood by ``fig.savefig``.

    Returns:
        The written paths.
    """
    folder = prepare_out_dir(out_dir) / FIGURES_DIR
    written = []
    for fmt in formats:
        target = folder / f"{name}.{fmt}"
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt, dpi=120, bbox_inches="tight")
        written.append(target)
    return written


def _json_safe(value: Any) -> Any:
    """Convert numpy/torch scalars and arrays to plain Python; non-finite floats become ``None``."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return _json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_metrics(out_dir: str | os.PathLike[str], metrics: dict[str, Any], *, preset: str) -> Path:
    """Write ``out_dir/metrics.json`` atomically.

    The file always records the preset; for ``smoke`` and ``course`` it also carries ``"notice"``
    (:data:`~pecop_lib.config.SMOKE_NOTICE`, :data:`~pecop_lib.config.COURSE_NOTICE`). Non-finite
    floats are stored as ``null``.

    Args:
        out_dir: The notebook's output folder.
        metrics: JSON-like values (numpy/torch scalars are converted).
        preset: The preset the numbers come from.

    Returns:
        The path of the written file.
    """
    record = {"preset": preset, **_json_safe(metrics)}
    if preset in PRESET_NOTICES:
        record["notice"] = PRESET_NOTICES[preset]
    return atomic_write_json(prepare_out_dir(out_dir) / METRICS_FILE, record)


def progress(iterable: Iterable[T], *, desc: str = "", total: int | None = None, **kwargs: Any) -> Any:
    """Wrap an iterable in a tqdm progress bar and return the bar (iterate it; ``set_postfix`` works).

    Interactive sessions get the notebook widget bar (``tqdm.auto``); headless runs (the runner
    sets ``PECOP_HEADLESS=1``) get plain text bars, which do not bloat executed notebooks with
    widget state.
    """
    if os.environ.get(HEADLESS_ENV) == "1":
        from tqdm.std import tqdm
    else:
        from tqdm.auto import tqdm
    return tqdm(iterable, desc=desc, total=total, **kwargs)
