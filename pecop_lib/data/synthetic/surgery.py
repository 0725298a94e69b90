"""JIGSAWS-style surgical tasks: two instruments working on a tissue pad, rated by six sub-scores.

Three tasks (Suturing, Knot_Tying, Needle_Passing) differ in the pad's markings and in the
sequence of targets the instrument tips visit. A surgeon's skill shapes measurable factors of the
motion, and each of the six GRS items (1-5) is graded from one of them:

=============================  ======================================================
item                           factor (worse -> lower grade)
=============================  ======================================================
respect for tissue             ``tissue_hits``: tips stabbing the pad (red flash)
suture/needle handling         ``drops``: the needle falls and must be picked up again
time and motion                ``time_ratio``: duration / an expert's duration
flow of operation              ``hesitations``: pauses between movements
overall performance            rounded mean of the other five grades
quality of final product       ``placement_error``: scatter of the placed stitches/marks
=============================  ======================================================

GRS = sum of the six (6..30). Everything is read off the video's dynamics and its last frames.
The latents record the frames of every hit, needle drop and pause (``"defects"``,
:mod:`~pecop_lib.data.synthetic.defects`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pecop_lib.data.synthetic import render
from pecop_lib.data.synthetic.defects import defect_list

TASKS = ("Suturing", "Knot_Tying", "Needle_Passing")
SUBJECTS = "BCDEFGHI"
"""Surgeon letters as in JIGSAWS."""
_COUNT_GRADES = (0.5, 1.5, 2.5, 4.5)  # 0 -> 5, 1 -> 4, 2 -> 3, 3-4 -> 2, 5+ -> 1
_EDGES = {
    "tissue_hits": _COUNT_GRADES,
    "drops": (0.5, 1.5, 2.5, 3.5),
    "time_ratio": (1.15, 1.35, 1.6, 1.9),
    "hesitations": (0.5, 1.5, 3.5, 5.5),
    "placement_error": (0.01, 0.02, 0.035, 0.05),
}
_ITEM_FACTOR = ("tissue_hits", "drops", "time_ratio", "hesitations", None, "placement_error")
FPS = 10


def item_grades(factors: dict[str, float]) -> tuple[int, ...]:
    """Six sub-scores 1..5 from the measured factors (overall = rounded mean of the other five)."""
    grades = [5 - int(np.searchsorted(np.asarray(_EDGES[f]), factors[f], side="right")) if f else 0 for f in _ITEM_FACTOR]
    others = [g for g, f in zip(grades, _ITEM_FACTOR) if f]
    grades[4] = int(np.clip(np.floor(np.mean(others) + 0.5), 1, 5))
    return tuple(grades)


def skill_level(skill: float) -> str:
    """Self-reported level N/I/E from a surgeon's base skill."""
    return "N" if skill < 0.4 else ("I" if skill < 0.7 else "E")


def _targets(rng: np.random.Generator, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Ideal target points of the working (left) tip and where marks are left."""
    if task == "Suturing":
        ys = np.linspace(0.3, 0.65, 4)
        pts = np.concatenate([[[0.42, y], [0.58, y + 0.02]] for y in ys])
        marks = pts.copy()
    elif task == "Needle_Passing":
        xs = np.linspace(0.25, 0.75, 4)
        pts = np.stack([xs, np.full(4, 0.45)], 1)
        pts = np.concatenate([[p - [0.05, 0], p + [0.05, 0]] for p in pts])
        marks = pts[1::2]
    else:  # Knot_Tying: loops around the other tip
        ang = np.linspace(0, 6 * np.pi, 9)
        pts = np.stack([0.5 + 0.12 * np.cos(ang), 0.5 + 0.08 * np.sin(ang)], 1)
        marks = np.array([[0.5, 0.5]])
    return pts.astype(np.float32), marks.astype(np.float32)


def draw_factors(rng: np.random.Generator, skill: float) -> dict[str, float]:
    """Factors of one trial by a surgeon of ``skill`` in ``[0, 1]``."""
    novice = 1.0 - skill
    return {
        "tissue_hits": float(rng.poisson(3.5 * novice**1.5)),
        "drops": float(rng.poisson(2.5 * novice**1.5)),
        "time_ratio": float(1.0 + 1.1 * novice * rng.uniform(0.6, 1.2)),
        "hesitations": float(rng.poisson(5.0 * novice**1.5)),
        "placement_error": float(0.004 + 0.06 * novice * rng.uniform(0.4, 1.2)),
        "tremor": float(0.002 + 0.012 * novice),
    }


@dataclass(frozen=True, eq=False)
class Motion:
    """The working tip's ideal path (before tremor) through one trial, and the frames of its events.

    Attributes:
        factors: The trial's factors (:func:`draw_factors`).
        marks: Where the placed stitches/marks land, ``(M, 2)``.
        xs, ys: The ideal tip position per frame (its length is the trial's frame count).
        hit_at: First frame of each tissue hit's three-frame red flash.
        needle_off: ``(start, end)`` frames of each needle drop (the needle is not drawn).
        pauses: ``(start, end)`` frames of each pause (the ideal tip stands still).
        mark_time: The frame each target is reached (its mark appears).
    """

    factors: dict[str, float]
    marks: np.ndarray
    xs: list[float]
    ys: list[float]
    hit_at: list[int]
    needle_off: list[tuple[int, int]]
    pauses: list[tuple[int, int]]
    mark_time: list[int]

    def defects(self) -> list[dict]:
        """The trial's defects in the latents-file form: ``tissue_hit`` (the flash frames, cut at the
        trial's end), ``needle_drop`` (the frames without needle), ``hesitation`` (each pause)."""
        frames = len(self.xs)
        return defect_list([("tissue_hit", w, min(w + 3, frames)) for w in self.hit_at]
                           + [("needle_drop", a, b) for a, b in self.needle_off]
                           + [("hesitation", a, b) for a, b in self.pauses])


def draw_motion(rng: np.random.Generator, task: str, skill: float) -> Motion:
    """The first draws of :func:`render_trial`: factors, marks, the tip's path and its events."""
    factors = draw_factors(rng, skill)
    pts, marks = _targets(rng, task)
    marks = marks + rng.normal(0, factors["placement_error"], marks.shape).astype(np.float32)
    seg_frames = max(4, int(round(6 * factors["time_ratio"])))
    path = [np.array([0.3, 0.75], np.float32)]
    events = []  # (kind, segment index)
    for kind, count in (("hit", factors["tissue_hits"]), ("drop", factors["drops"]), ("pause", factors["hesitations"])):
        events += [(kind, int(i)) for i in rng.integers(0, len(pts), int(count))]
    xs, ys, hit_at, needle_off, mark_time, pauses = [], [], [], [], [], []
    pos = path[0]
    for i, target in enumerate(pts):
        for kind, at in events:
            if at != i:
                continue
            if kind == "pause":
                n = int(rng.integers(4, 9))
                xs += [pos[0]] * n
                ys += [pos[1]] * n
                pauses.append((len(xs) - n, len(xs)))
            elif kind == "drop":  # needle falls; the tip goes down to fetch it
                down = pos + np.array([0.0, 0.15], np.float32)
                for p0, p1 in ((pos, down), (down, pos)):
                    e = render.min_jerk(np.linspace(0, 1, seg_frames))
                    xs += list(p0[0] + (p1[0] - p0[0]) * e)
                    ys += list(p0[1] + (p1[1] - p0[1]) * e)
                needle_off.append((len(xs) - 2 * seg_frames, len(xs)))
            else:
                hit_at.append(len(xs))
        e = render.min_jerk(np.linspace(0, 1, seg_frames))
        detour = rng.normal(0, 0.04 * (factors["time_ratio"] - 1), 2)
        mid = (pos + target) / 2 + detour
        xs += list(np.where(e < 0.5, pos[0] + (mid[0] - pos[0]) * 2 * e, mid[0] + (target[0] - mid[0]) * (2 * e - 1)))
        ys += list(np.where(e < 0.5, pos[1] + (mid[1] - pos[1]) * 2 * e, mid[1] + (target[1] - mid[1]) * (2 * e - 1)))
        mark_time.append(len(xs))
        pos = target
    return Motion(factors, marks, xs, ys, hit_at, needle_off, pauses, mark_time)


def render_trial(rng: np.random.Generator, task: str, size: int, skill: float) -> tuple[np.ndarray, dict]:
    """Render one trial; returns uint8 frames and latents (skill, factors, sub-scores, GRS, defects)."""
    motion = draw_motion(rng, task, skill)
    factors, marks, xs, ys, hit_at = motion.factors, motion.marks, motion.xs, motion.ys, motion.hit_at
    needle_off, mark_time = motion.needle_off, motion.mark_time
    frames = len(xs)
    x = np.asarray(xs, np.float32) + rng.normal(0, factors["tremor"], frames).astype(np.float32)
    y = np.asarray(ys, np.float32) + rng.normal(0, factors["tremor"], frames).astype(np.float32)
    tissue = render.mix(render.smooth_noise(rng, size, 8), np.array([0.85, 0.55, 0.55]), np.array([0.95, 0.7, 0.68]))
    canvas = render.canvas(tissue, frames)
    t = np.arange(frames)
    if task == "Suturing":
        render.paint_box(canvas, 0.5, 0.48, 0.25, 0.006, 0.0, np.array([0.55, 0.1, 0.12]))
    elif task == "Needle_Passing":
        for rx in np.linspace(0.25, 0.75, 4):
            render.paint_disc(canvas, rx, 0.45, 0.045, np.array([0.5, 0.5, 0.55]))
            render.paint_disc(canvas, rx, 0.45, 0.03, tissue[int(0.45 * size), int(rx * size)])
    else:
        render.paint_box(canvas, 0.5, 0.5, 0.3, 0.008, np.pi / 2, np.array([0.9, 0.85, 0.3]))
    mark_list = marks if len(marks) == len(mark_time) else np.repeat(marks, len(mark_time), 0)[: len(mark_time)]
    for (mx, my), when in zip(mark_list, mark_time):
        render.paint_disc(canvas, mx, my, 0.012, np.array([0.2, 0.1, 0.3]), (t >= when).astype(np.float32))
    for when in hit_at:
        flash = ((t >= when) & (t < when + 3)).astype(np.float32)
        render.paint_disc(canvas, x[min(when, frames - 1)], y[min(when, frames - 1)] + 0.03, 0.05, np.array([0.8, 0.05, 0.05]), flash)
    # right tool: holds the pad near the work, moves a little
    rx, ry = 0.62 + 0.03 * np.sin(t / 7.0), 0.62 + 0.02 * np.cos(t / 5.0)
    render.paint_segment(canvas, 1.05, 1.05, rx, ry, 0.018, np.array([0.3, 0.3, 0.32]))
    render.paint_segment(canvas, -0.05, 1.05, x, y, 0.018, np.array([0.25, 0.25, 0.28]))
    held = np.ones(frames, np.float32)
    for a, b in needle_off:
        held[a:b] = 0.0
    render.paint_box(canvas, x + 0.02, y - 0.01, 0.03, 0.005, 1.1, np.array([0.92, 0.92, 0.95]), held)
    render.paint_disc(canvas, x, y, 0.015, np.array([0.6, 0.6, 0.65]))
    subs = item_grades(factors)
    latents = {"skill": skill, "frames": frames, **factors, "subscores": list(subs), "grs": int(sum(subs)),
               "defects": motion.defects()}
    return render.to_uint8(canvas), latents
