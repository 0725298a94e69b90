"""The domain-general action set: the stand-in for Kinetics-400.

Colourful textured backgrounds with one to three moving shapes. Thirteen classes are the kind of
motion at a constant pace (direction, rotation, oscillation, bouncing, zoom, rhythm); three more are
*when* the motion happens, whatever it is (:data:`TIMING_CLASSES`: it starts, it stops, it pauses
midway). Speeds, phases, shapes, colours and textures vary at random, so only the motion identifies
the class. Scenes look nothing like the AQA tasks (pool, clinic, surgical pad): the domain shift
PECoP's continual pretraining addresses.

Why timing classes (docs/course.md, section 3): a stand-in trained on constant-pace motions alone
gave features from which a linear probe read VSPP's segment and speed near chance (0.29 / 0.31),
while the pixels carry them (motion energy: 0.63 / 0.44). Kinetics holds many actions defined by
when something happens (a jump, a throw); the timing classes ask the stand-in for the same.
"""

from __future__ import annotations

import numpy as np

from pecop_lib.data.synthetic import render

ACTION_CLASSES: tuple[str, ...] = (
    "move_left",
    "move_right",
    "move_up",
    "move_down",
    "rotate_clockwise",
    "rotate_counterclockwise",
    "oscillate_horizontal",
    "oscillate_vertical",
    "bounce",
    "zoom_in",
    "zoom_out",
    "pulse_fast",
    "pulse_slow",
    "start_moving",
    "stop_moving",
    "pause_midway",
)
"""Class names in label order (the label is the index)."""
TIMING_CLASSES: tuple[str, ...] = ("start_moving", "stop_moving", "pause_midway")
"""Classes named by when the motion happens; each warps the time of one of :data:`TIMED_MOTIONS`."""
TIMED_MOTIONS: tuple[str, ...] = ACTION_CLASSES[:9]
"""The motions a timing class may carry: moves, rotations, oscillations and bouncing, whose
stillness is visible (a zoom or a pulse that stops looks like a smaller one)."""
PAUSE_WIDTH = 0.3
"""Fraction of the clip a ``pause_midway`` motion stands still."""


def timing_warp(kind: str, tau: float, t: np.ndarray) -> np.ndarray:
    """Warp a clip's time axis so that the motion starts, stops or pauses at ``tau``.

    Args:
        kind: One of :data:`TIMING_CLASSES`.
        tau: When it happens, as a fraction of the clip (the pause's centre for ``pause_midway``).
        t: Evenly spaced times in ``[0, 1]``, shape ``(frames,)``.

    Returns:
        Warped times, shape ``(frames,)``, non-decreasing from 0 to 1: constant where the motion
        stands still, so the motion covers the same path as at a constant pace, in less time.
    """
    if kind == "start_moving":
        return np.clip((t - tau) / (1.0 - tau), 0.0, 1.0)
    if kind == "stop_moving":
        return np.clip(t / tau, 0.0, 1.0)
    if kind == "pause_midway":
        a, b = tau - PAUSE_WIDTH / 2, tau + PAUSE_WIDTH / 2
        return np.where(t < a, t, np.where(t < b, a, t - (b - a))) / (1.0 - (b - a))
    raise ValueError(f"unknown timing class {kind!r}; expected one of {TIMING_CLASSES}")


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    a, b = rng.random(3), rng.random(3)
    kind = rng.integers(3)
    if kind == 0:
        pattern = render.stripes(size, rng.uniform(0, np.pi), rng.uniform(0.08, 0.4), rng.uniform(0, 6.3))
    elif kind == 1:
        pattern = render.smooth_noise(rng, size, int(rng.integers(3, 10)))
    else:
        pattern = render.stripes(size, 0.0, rng.uniform(0.1, 0.3)) * render.stripes(size, np.pi / 2, rng.uniform(0.1, 0.3))
    return render.mix(pattern, a * 0.7, b * 0.7 + 0.3)


def render_action(rng: np.random.Generator, label: int, size: int, frames: int) -> tuple[np.ndarray, dict]:
    """Render one clip of class ``ACTION_CLASSES[label]``.

    Returns:
        uint8 frames ``(frames, size, size, 3)`` and the latent parameters (speed, objects, ...).
    """
    name = ACTION_CLASSES[label]
    t = np.linspace(0.0, 1.0, frames, dtype=np.float32)
    timing: dict = {}
    if name in TIMING_CLASSES:
        motion = TIMED_MOTIONS[int(rng.integers(len(TIMED_MOTIONS)))]
        tau = float(rng.uniform(0.3, 0.7))
        t = timing_warp(name, tau, t).astype(np.float32)
        timing = {"motion": motion, "tau": tau}
        name = motion
    canvas = render.canvas(_background(rng, size), frames)
    n_objects = int(rng.integers(1, 4))
    speed = float(rng.uniform(0.5, 1.0))
    cycles = float(rng.uniform(6.0, 9.0) if name == "pulse_fast" else rng.uniform(1.5, 3.0))
    for _ in range(n_objects):
        color = rng.random(3)
        cx0, cy0 = rng.uniform(0.25, 0.75, 2)
        r = float(rng.uniform(0.06, 0.14))
        phase = float(rng.uniform(0, 2 * np.pi))
        cx, cy, scale, angle, opacity = cx0, cy0, np.ones_like(t), 0.0, 1.0
        travel = speed * 0.6 * (t - 0.5)
        if name == "move_left":
            cx = cx0 - travel
        elif name == "move_right":
            cx = cx0 + travel
        elif name == "move_up":
            cy = cy0 - travel
        elif name == "move_down":
            cy = cy0 + travel
        elif name in ("rotate_clockwise", "rotate_counterclockwise"):
            sign = 1.0 if name == "rotate_clockwise" else -1.0
            angle = phase + sign * 2 * np.pi * cycles * speed * t
        elif name == "oscillate_horizontal":
            cx = cx0 + 0.18 * np.sin(2 * np.pi * cycles * t + phase)
        elif name == "oscillate_vertical":
            cy = cy0 + 0.18 * np.sin(2 * np.pi * cycles * t + phase)
        elif name == "bounce":
            cy = 0.85 - r - 0.55 * np.abs(np.sin(np.pi * cycles * t + phase))
        elif name == "zoom_in":
            scale = 0.5 + 1.3 * t * speed
        elif name == "zoom_out":
            scale = 0.5 + 1.3 * (1 - t) * speed
        else:  # pulse_fast / pulse_slow
            opacity = 0.5 + 0.5 * np.sin(2 * np.pi * cycles * t + phase)
        if name.startswith("rotate") or rng.random() < 0.5:
            render.paint_box(canvas, cx, cy, r * 1.6 * scale, r * 0.45 * scale, angle, color, opacity)
        else:
            render.paint_disc(canvas, cx, cy, r * scale, color, opacity)
    return render.to_uint8(canvas), {"label": ACTION_CLASSES[label], "objects": n_objects, "speed": speed,
                                     "cycles": cycles, **timing}
