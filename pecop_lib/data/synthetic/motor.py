"""PD4T-style motor tasks: repetitive movements scored 0-4 by rules on *how* they unfold in time.

A movement is a repeated open/close cycle ``x(t) = a(t) * (1 - cos phi(t)) / 2``. Four impairment
signs, as in the MDS-UPDRS motor items, shape it:

* **hesitations**: the movement freezes for 0.3-0.7 s between cycles (count ``h``);
* **amplitude decrement**: ``a(t)`` falls linearly to ``1 - d`` of its start by the end (``d``);
* **slowing**: the cycle frequency falls to ``1 - s`` of its start (``s``);
* **rhythm irregularity**: cycle durations vary by a coefficient of variation ``c`` (measured on
  the rendered cycles, trend removed).

Each sign gets a grade by fixed thresholds (:data:`GRADE_EDGES`) and the **score is the highest
grade** (UPDRS rates the most affected feature). The start amplitude and frequency, the body's
position, skin tone, side and background vary independently of the score: no single frame
reveals it, only the dynamics do. The latents record where the hesitations and the decrement lie
in the video (:func:`video_defects`).
"""

from __future__ import annotations

import numpy as np

from pecop_lib.data.synthetic import render
from pecop_lib.data.synthetic.defects import defect_list

TASKS = ("Gait", "Finger tapping", "Hand movement", "Leg agility")
FPS = 30
GRADE_EDGES: dict[str, tuple[float, ...]] = {
    "hesitations": (0.5, 2.5, 5.5),  # 0 | 1-2 | 3-5 | 6+
    "amplitude_decrement": (0.15, 0.35, 0.55, 0.8),
    "slowing": (0.12, 0.25, 0.4),
    "irregularity": (0.06, 0.14, 0.25),
}
"""Upper edges of grades 0, 1, 2, ... for each sign (values at or above the last edge get the top grade)."""
_TOP = {"hesitations": 8.0, "amplitude_decrement": 0.92, "slowing": 0.5, "irregularity": 0.32}
SEVERITY_PRIOR = {
    "Gait": (0.45, 0.35, 0.15, 0.05, 0.0),
    "Finger tapping": (0.2, 0.33, 0.27, 0.15, 0.05),
    "Hand movement": (0.22, 0.35, 0.25, 0.14, 0.04),
    "Leg agility": (0.3, 0.35, 0.22, 0.1, 0.03),
}
"""Probability of each latent severity 0-4 (gait skewed low, like the real gait histogram)."""
_FREQ = {"Gait": (0.9, 1.3), "Finger tapping": (2.2, 3.2), "Hand movement": (1.6, 2.4), "Leg agility": (1.1, 1.7)}
_SECONDS = {"Gait": (6.0, 8.0), "Finger tapping": (4.0, 5.0), "Hand movement": (4.0, 5.0), "Leg agility": (4.5, 5.5)}


def grade(sign: str, value: float) -> int:
    """The grade (0..len(edges)) of one impairment sign's measured value."""
    return int(np.searchsorted(np.asarray(GRADE_EDGES[sign]), value, side="right"))


def updrs_score(factors: dict[str, float]) -> int:
    """The rule: the highest grade among the four signs (0..4)."""
    return max(grade(sign, factors[sign]) for sign in GRADE_EDGES)


def _draw_value(rng: np.random.Generator, sign: str, g: int) -> float:
    edges = (0.0,) + GRADE_EDGES[sign] + (_TOP[sign],)
    if sign == "hesitations":
        return float(rng.integers(int(np.ceil(edges[g])), int(np.floor(edges[g + 1] - 1e-9)) + 1))
    return float(rng.uniform(edges[g], edges[g + 1] - 1e-3))


def draw_factors(rng: np.random.Generator, severity: int) -> dict[str, float]:
    """Impairment signs whose grades are at most ``severity``, one of them exactly at it."""
    signs = list(GRADE_EDGES)
    capable = [s for s in signs if len(GRADE_EDGES[s]) >= severity]
    forced = "amplitude_decrement" if severity == 4 else capable[int(rng.integers(len(capable)))]
    factors = {}
    for sign in signs:
        top = min(severity, len(GRADE_EDGES[sign]))
        g = severity if sign == forced else int(rng.integers(0, top + 1))
        factors[sign] = _draw_value(rng, sign, g)
    return factors


def movement(
    rng: np.random.Generator, frames: int, freq: float, factors: dict[str, float]
) -> tuple[np.ndarray, dict, list[tuple[int, int]]]:
    """The cycle signal ``x(t)`` in ``[0, 1]`` (T,), its realized (measured) factors and its pauses.

    Cycle durations follow the slowing trend times irregular noise; hesitations are pauses
    inserted at cycle boundaries (closed position: ``x = 0``); amplitude decays linearly over the video.

    Returns:
        ``x``, the measured factors and, per pause, the frames ``(start, end)`` (end exclusive) whose
        time lies in it (a pause that starts after the last frame's time has none and is left out).
    """
    seconds = frames / FPS
    durations, starts, t = [], [], 0.0
    expected_cycles = max(3, int(seconds * freq * (1.0 - factors["slowing"] / 2)) - 1)
    candidates = np.arange(1, expected_cycles)
    count = min(int(factors["hesitations"]), len(candidates))
    pauses = set(rng.choice(candidates, size=count, replace=False).tolist())
    k = 0
    pause_windows = []
    while t < seconds:
        trend = 1.0 / (freq * (1.0 - factors["slowing"] * t / seconds))
        d = trend * float(np.clip(1.0 + factors["irregularity"] * rng.standard_normal(), 0.4, 1.8))
        if k in pauses:
            pause = float(rng.uniform(0.3, 0.7))
            pause_windows.append((t, t + pause))
            t += pause
        starts.append(t)
        durations.append((d, trend))
        t += d
        k += 1
    time = np.arange(frames, dtype=np.float64) / FPS
    phase = np.zeros(frames)
    for (d, _), s in zip(durations, starts):
        inside = (time >= s) & (time < s + d)
        phase[inside] = 2 * np.pi * (time[inside] - s) / d
    amp = 1.0 - factors["amplitude_decrement"] * time / seconds
    x = amp * (1 - np.cos(phase)) / 2
    complete = [(d, tr) for (d, tr), s in zip(durations, starts) if s + d <= seconds]
    ratios = np.array([d / tr for d, tr in complete]) if len(complete) > 1 else np.array([1.0])
    realized = dict(factors)
    realized["irregularity"] = float(ratios.std() / ratios.mean())
    realized["hesitations"] = float(sum(1 for a, _ in pause_windows if a < seconds))
    realized["amplitude_decrement"] = float(factors["amplitude_decrement"] * min(1.0, time[-1] / seconds))
    realized["cycles"] = float(len(complete))
    paused = [np.flatnonzero((time >= a) & (time < b)) for a, b in pause_windows]
    pauses = [(int(f[0]), int(f[-1]) + 1) for f in paused if f.size]
    return x.astype(np.float32), realized, pauses


def draw_movement(
    rng: np.random.Generator, task: str, severity: int
) -> tuple[np.ndarray, dict, list[tuple[int, int]], float]:
    """The first draws of :func:`render_task`: length, start frequency, factors and :func:`movement`.

    Returns:
        ``x`` (T,), the measured factors, the pause frames (as :func:`movement`) and the start frequency.
    """
    frames = int(rng.uniform(*_SECONDS[task]) * FPS)
    freq = float(rng.uniform(*_FREQ[task]))
    factors = draw_factors(rng, severity)
    x, realized, pauses = movement(rng, frames, freq, factors)
    return x, realized, pauses, freq


def video_defects(frames: int, pauses: list[tuple[int, int]], decrement: float) -> list[dict]:
    """The defects of a ``frames``-frame video (latents-file form, :mod:`~pecop_lib.data.synthetic.defects`).

    * ``hesitation``: each pause's frames (the movement rests at ``x = 0``: the frames are still).
    * ``amplitude_decrement``, when the measured decrement ``d`` reaches the first grade edge
      (``GRADE_EDGES["amplitude_decrement"][0]``, grade 1 or worse): the frames ``i`` whose amplitude
      envelope ``1 - d_f i / T`` (``d_f`` the drawn factor, ``d = d_f (T - 1) / T`` its measured
      drop from the first to the last frame) is below ``1 - d/2``, i.e. ``i > (T - 1) / 2``: frames
      ``(T + 1) // 2 .. T - 1``, the second half of the video.

    Args:
        frames: The video's frame count ``T``.
        pauses: The pause frames of :func:`movement`.
        decrement: The measured amplitude decrement ``d``.
    """
    found = [("hesitation", a, b) for a, b in pauses]
    if decrement >= GRADE_EDGES["amplitude_decrement"][0]:
        found.append(("amplitude_decrement", (frames + 1) // 2, frames))
    return defect_list(found)


_SKIN = np.array([[0.96, 0.8, 0.69], [0.87, 0.67, 0.52], [0.68, 0.49, 0.36], [0.45, 0.3, 0.22]], np.float32)


def _scene(rng: np.random.Generator, size: int) -> np.ndarray:
    wall = np.array([0.85, 0.82, 0.74]) + rng.uniform(-0.08, 0.08, 3)
    bg = render.gradient(size, wall, wall * 0.85)
    floor = np.array([0.55, 0.52, 0.5]) + rng.uniform(-0.08, 0.08, 3)
    cut = int(size * rng.uniform(0.72, 0.8))
    bg[cut:] = floor
    return bg


def render_task(rng: np.random.Generator, task: str, size: int, severity: int, side: str) -> tuple[np.ndarray, dict]:
    """Render one video of ``task`` at latent ``severity``; ``side`` 'l' mirrors the scene.

    Returns:
        uint8 frames ``(T, size, size, 3)`` and the latents: severity, the measured factors, the
        rule's score, start frequency and amplitude, appearance nuisances and the defects
        (:func:`video_defects`).
    """
    x, realized, pauses, freq = draw_movement(rng, task, severity)
    frames = len(x)
    amp0 = float(rng.uniform(0.75, 1.0))
    x = x * amp0
    skin = _SKIN[rng.integers(len(_SKIN))] + rng.uniform(-0.04, 0.04, 3)
    cloth = rng.uniform(0.1, 0.6, 3)
    canvas = render.canvas(_scene(rng, size), frames)
    ox, oy = rng.uniform(-0.06, 0.06, 2)
    if task == "Finger tapping":
        px, py = 0.55 + ox, 0.62 + oy
        render.paint_disc(canvas, px, py, 0.14, skin * 0.92)
        render.paint_segment(canvas, px - 0.1, py - 0.06, px - 0.2, py - 0.2, 0.035, skin * 0.85)  # thumb
        ang = 0.35 + 0.9 * x  # index finger opens away from the thumb tip
        render.paint_segment(canvas, px - 0.05, py - 0.1, px - 0.05 - 0.26 * np.sin(ang), py - 0.1 - 0.26 * np.cos(ang) * 0.9,
                             0.03, skin)
    elif task == "Hand movement":
        px, py = 0.5 + ox, 0.55 + oy
        render.paint_segment(canvas, px, py + 0.12, px + 0.05, 1.0, 0.09, cloth)  # forearm
        render.paint_disc(canvas, px, py, 0.13, skin * 0.92)
        for i, a in enumerate(np.linspace(-0.6, 0.6, 4)):
            length = 0.05 + 0.2 * x
            render.paint_segment(canvas, px + 0.06 * np.sin(a), py - 0.1, px + (0.1 + length) * np.sin(a) * 1.2,
                                 py - 0.1 - length * np.cos(a), 0.025, skin)
    elif task == "Leg agility":
        hx, hy = 0.3 + ox, 0.55 + oy  # hip of a seated patient, facing right
        render.paint_box(canvas, hx - 0.05, hy - 0.25, 0.2, 0.08, 0.0, cloth)  # torso
        render.paint_disc(canvas, hx - 0.05, hy - 0.5, 0.07, skin)
        lift = 0.7 * x
        kx, ky = hx + 0.25 * np.cos(lift), hy - 0.25 * np.sin(lift)
        render.paint_segment(canvas, hx, hy, kx, ky, 0.05, cloth * 0.8)
        render.paint_segment(canvas, kx, ky, kx + 0.02, ky + 0.25, 0.04, cloth * 0.8)
        render.paint_box(canvas, kx + 0.06, ky + 0.28, 0.025, 0.06, np.pi / 2, np.array([0.15, 0.12, 0.1]))
    else:  # Gait: walking across the room; step progress follows the swing signal
        stride = np.abs(np.diff(x, prepend=x[0]))
        progress = 0.7 * np.cumsum(stride) / (2.0 * freq * frames / FPS)  # unimpaired: crosses 0.7
        cx = 0.12 + ox + np.minimum(progress, 0.78)
        hip = 0.5 + oy
        swing = 0.45 * (x - 0.5 * amp0)
        for sign in (1.0, -1.0):
            render.paint_segment(canvas, cx, hip, cx + sign * 0.22 * np.sin(swing), hip + 0.24, 0.03, cloth * 0.7)
        render.paint_box(canvas, cx, hip - 0.13, 0.14, 0.06, 0.0, cloth)
        render.paint_disc(canvas, cx, hip - 0.33, 0.06, skin)
    video = render.to_uint8(canvas)
    if side == "l":
        video = video[:, :, ::-1].copy()
    score = updrs_score(realized)
    latents = {"severity": severity, "score": score, "freq0": freq, "amp0": amp0, "side": side, "frames": frames,
               **{f"measured_{k}": v for k, v in realized.items()},
               **{f"grade_{s}": grade(s, realized[s]) for s in GRADE_EDGES},
               "defects": video_defects(frames, pauses, realized["amplitude_decrement"])}
    return video, latents
