"""Vectorised drawing of the synthetic world: soft discs and rotated boxes over textured backgrounds.

All coordinates are normalised: ``x`` runs over the width and ``y`` down the height, both in
``[0, 1]``; sizes are fractions of the frame side. Every shape parameter may be a scalar or a
per-frame array of shape ``(T,)``, so one call paints a whole trajectory. Canvases are float32
``(T, H, W, 3)`` in ``[0, 1]``; :func:`to_uint8` converts for writing.
"""

from __future__ import annotations

import numpy as np

ArrayLike = float | np.ndarray


def _per_frame(value: ArrayLike, frames: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, dtype=np.float32), (frames,)).reshape(frames, 1, 1)


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(y (1, H, 1), x (1, 1, W))`` of a square frame, in ``[0, 1]``."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size
    return axis.reshape(1, size, 1), axis.reshape(1, 1, size)


def canvas(background: np.ndarray, frames: int) -> np.ndarray:
    """A ``(T, H, W, 3)`` canvas holding ``background`` (H, W, 3) in every frame."""
    return np.repeat(background[None].astype(np.float32), frames, axis=0)


def _blend(canvas_: np.ndarray, alpha: np.ndarray, color: np.ndarray) -> None:
    canvas_ += alpha[..., None] * (np.asarray(color, dtype=np.float32) - canvas_)


def paint_disc(canvas_: np.ndarray, cx: ArrayLike, cy: ArrayLike, radius: ArrayLike, color, opacity: ArrayLike = 1.0) -> None:
    """Paint a soft-edged disc (one pixel of antialiasing) into ``canvas_`` in place."""
    frames, size = canvas_.shape[0], canvas_.shape[1]
    yy, xx = grid(size)
    dist = np.sqrt((xx - _per_frame(cx, frames)) ** 2 + (yy - _per_frame(cy, frames)) ** 2)
    alpha = np.clip((_per_frame(radius, frames) - dist) * size + 0.5, 0.0, 1.0) * _per_frame(opacity, frames)
    _blend(canvas_, alpha, color)


def paint_box(
    canvas_: np.ndarray,
    cx: ArrayLike,
    cy: ArrayLike,
    half_length: ArrayLike,
    half_width: ArrayLike,
    angle: ArrayLike,
    color,
    opacity: ArrayLike = 1.0,
) -> None:
    """Paint a soft-edged rotated rectangle in place.

    ``angle`` is in radians from the vertical: 0 puts the long side (``half_length``) upright.
    """
    frames, size = canvas_.shape[0], canvas_.shape[1]
    yy, xx = grid(size)
    dx, dy = xx - _per_frame(cx, frames), yy - _per_frame(cy, frames)
    a = _per_frame(angle, frames)
    along = np.abs(dx * np.sin(a) + dy * np.cos(a))
    across = np.abs(dx * np.cos(a) - dy * np.sin(a))
    inside = np.minimum(_per_frame(half_length, frames) - along, _per_frame(half_width, frames) - across)
    alpha = np.clip(inside * size + 0.5, 0.0, 1.0) * _per_frame(opacity, frames)
    _blend(canvas_, alpha, color)


def paint_segment(canvas_: np.ndarray, x0: ArrayLike, y0: ArrayLike, x1: ArrayLike, y1: ArrayLike, half_width: float, color) -> None:
    """Paint a bar from ``(x0, y0)`` to ``(x1, y1)`` (e.g. a limb or an instrument shaft)."""
    frames = canvas_.shape[0]
    x0, y0, x1, y1 = (np.broadcast_to(np.asarray(v, dtype=np.float32), (frames,)) for v in (x0, y0, x1, y1))
    length = np.hypot(x1 - x0, y1 - y0)
    angle = np.arctan2(x1 - x0, y1 - y0)
    paint_box(canvas_, (x0 + x1) / 2, (y0 + y1) / 2, length / 2 + half_width, half_width, angle, color)


def gradient(size: int, top, bottom) -> np.ndarray:
    """A vertical colour gradient (H, W, 3) from ``top`` to ``bottom``."""
    t = np.linspace(0, 1, size, dtype=np.float32).reshape(size, 1, 1)
    img = (1 - t) * np.asarray(top, np.float32) + t * np.asarray(bottom, np.float32)
    return np.repeat(img, size, axis=1)


def smooth_noise(rng: np.random.Generator, size: int, cells: int = 6) -> np.ndarray:
    """Smooth value noise (H, W) in ``[0, 1]``: a coarse random grid, bilinearly upsampled."""
    coarse = rng.random((cells + 1, cells + 1)).astype(np.float32)
    pos = np.linspace(0, cells, size, dtype=np.float32)
    i = np.minimum(pos.astype(int), cells - 1)
    f = pos - i
    rows = coarse[i] * (1 - f)[:, None] + coarse[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def stripes(size: int, angle: float, period: float, phase: float = 0.0) -> np.ndarray:
    """Sinusoidal stripes (H, W) in ``[0, 1]`` at ``angle`` with ``period`` (fraction of the side)."""
    yy, xx = grid(size)
    u = xx[0] * np.cos(angle) + yy[0] * np.sin(angle)
    return 0.5 + 0.5 * np.sin(2 * np.pi * u / period + phase)


def mix(pattern: np.ndarray, color_a, color_b) -> np.ndarray:
    """Map a (H, W) pattern in ``[0, 1]`` to colours between ``color_a`` and ``color_b``."""
    p = pattern[..., None]
    return (1 - p) * np.asarray(color_a, np.float32) + p * np.asarray(color_b, np.float32)


def to_uint8(canvas_: np.ndarray) -> np.ndarray:
    """Convert a float canvas in ``[0, 1]`` to uint8 frames."""
    return (np.clip(canvas_, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def min_jerk(t: np.ndarray) -> np.ndarray:
    """Minimum-jerk easing ``10t^3 - 15t^4 + 6t^5`` of ``t`` in ``[0, 1]`` (smooth reaching)."""
    t = np.clip(t, 0.0, 1.0)
    return t**3 * (10 - 15 * t + 6 * t**2)
