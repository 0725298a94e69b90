"""Synthetic dives for the MTL-AQA- and FineDiving-format tasks.

A dive has three steps: **take-off** (standing, crouch, jump), **flight** (a parabola with
somersaults, optional twists, in the dive's position) and **entry** (the diver disappears into
the water with a splash). The dive number fixes the degree of difficulty (values from the real
MTL-AQA table) and what the flight looks like (number of half somersaults = rotation speed,
half twists, tuck/pike/free position = body length, rotation direction by dive group).

Execution quality is decided by four latent factors, each visible only in the dynamics:

* ``rotation_error`` (rad): under/over-rotation, the body's tilt from vertical at entry;
* ``rip`` in ``[0, 1]``: entry cleanliness; with the rotation error it sets the splash size;
* ``form`` in ``[0, 1]``: body wobble (length and angle jitter) during flight;
* ``height`` in ``[0, 1]``: jump apex above the platform.

``execution = 10 - 3.5 |err|/0.8 - 2.5 splash - 1.5 form - 1.5 (1 - height)`` (clipped to 0..10);
seven judges score ``execution + bias_j + noise`` rounded to 0.5; the final score is the sum of
the middle three judges times the difficulty (the official diving rule). The entry's share of the
deductions, ``3.5 |err|/0.8 + 2.5 splash`` (:attr:`DiveQuality.entry_deduction`), marks a faulty
entry when it reaches :data:`ENTRY_FAULT` points (:func:`entry_defects`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pecop_lib.data.synthetic import render
from pecop_lib.data.synthetic.defects import defect_list

DIVE_TABLE: dict[str, float] = {
    "107B": 3.1, "109C": 3.7, "205B": 3.0, "207C": 3.3, "305C": 2.8, "307C": 3.4, "403B": 2.0,
    "405B": 3.0, "407C": 3.2, "5152B": 3.0, "5154B": 3.4, "5253B": 3.2, "5255B": 3.6, "5331D": 2.1,
    "6243D": 3.2, "626C": 3.3, "200D": 1.8, "300D": 1.9, "612B": 1.9, "5231D": 2.0,
}
"""Dive number -> degree of difficulty (values as they occur in the real MTL-AQA annotations)."""
GROUP_NAMES = {1: "Forward", 2: "Back", 3: "Reverse", 4: "Inward"}
POSITION_NAMES = {"A": "Straight", "B": "Pike", "C": "Tuck", "D": "Free"}
MTL_POSITION = {"D": 0, "A": 0, "B": 1, "C": 2}
"""Dive position letter -> MTL-AQA ``position`` code (free 0, pike 1, tuck 2, as in the real file)."""
MTL_ROTATION_TYPE = {1: 1, 2: 0, 3: 3, 4: 2}
"""Rotation group -> MTL-AQA ``rotation_type`` code (as in the real file)."""
NUM_JUDGES = 7
PLATFORM_X = 0.3
"""Horizontal position of the take-off (the platform's edge); the entry is ``FLIGHT_X`` further right.
The whole dive stays inside the central band that the official centre crops keep (CoRe's resize to a
tall frame keeps about the middle half vertically, MUSDL's the middle half horizontally)."""
FLIGHT_X = 0.32
ENTRY_FAULT = 2.0
"""Execution points the entry must cost (:attr:`DiveQuality.entry_deduction`) to count as a faulty entry."""


@dataclass(frozen=True)
class Dive:
    """A parsed dive number (e.g. ``5253B``: twisting, back, 5 half somersaults, 3 half twists, pike)."""

    number: str
    difficulty: float
    group: int  # rotation group 1..4
    armstand: bool
    half_somersaults: int
    half_twists: int
    position: str

    @property
    def takeoff_name(self) -> str:
        """Sub-action name of the take-off step (e.g. ``"Back"``, ``"Arm.Back"``)."""
        return ("Arm." if self.armstand else "") + GROUP_NAMES[self.group]

    @property
    def somersault_name(self) -> str:
        """Sub-action name of the somersault part of the flight (e.g. ``"2.5 Soms.Pike"``)."""
        return f"{self.half_somersaults / 2:g} Soms.{POSITION_NAMES[self.position]}"

    @property
    def twist_name(self) -> str | None:
        """Sub-action name of the twist part of the flight, or ``None``."""
        return f"{self.half_twists / 2:g} Twists" if self.half_twists else None


def parse_dive(number: str) -> Dive:
    """Parse a FINA dive number of :data:`DIVE_TABLE`."""
    body, position = number[:-1], number[-1]
    if body[0] == "5":  # twisting: 5 <group> <half soms> <half twists>
        group, soms, twists, armstand = int(body[1]), int(body[2]), int(body[3]), False
    elif body[0] == "6":  # armstand: 6 <group> <half soms> [<half twists>]
        group, soms, armstand = int(body[1]), int(body[2]), True
        twists = int(body[3]) if len(body) == 4 else 0
    else:
        group, soms, twists, armstand = int(body[0]), int(body[2]), 0, False
    return Dive(number, DIVE_TABLE[number], group, armstand, soms, twists, position)


@dataclass(frozen=True)
class DiveQuality:
    """The latent execution factors of one dive (see module docstring)."""

    rotation_error: float
    rip: float
    form: float
    height: float

    @property
    def splash(self) -> float:
        """Splash size in ``[0, 1]`` from rotation error and entry cleanliness."""
        return float(np.clip(0.6 * abs(self.rotation_error) / 0.8 + 0.4 * (1 - self.rip), 0, 1))

    @property
    def entry_deduction(self) -> float:
        """Execution points the entry costs (tilt and splash): ``3.5 |rotation_error|/0.8 + 2.5 splash``."""
        return float(3.5 * abs(self.rotation_error) / 0.8 + 2.5 * self.splash)

    @property
    def execution(self) -> float:
        """Execution quality 0..10 the judges see."""
        q = 10 - 3.5 * abs(self.rotation_error) / 0.8 - 2.5 * self.splash - 1.5 * self.form - 1.5 * (1 - self.height)
        return float(np.clip(q, 0, 10))


def draw_skill(rng: np.random.Generator) -> float:
    """A diver's skill in ``[0, 1]``: ``Beta(1.2, 1.2)``.

    Calibrated (with the spread of :func:`draw_quality`) on the published MTL-AQA annotations
    (1,412 dives): there the execution sum (final score / difficulty) has 5/25/50/75/95th
    percentiles 12.5/19.5/22.5/24/27 and the difficulty alone ranks the final scores at Spearman
    0.62; this generator gives 10.5/17.5/21.5/24.5/27 and 0.62 (4,000 simulated dives). The first
    world (skill ``Beta(4, 2)``, narrower spread) gave 18/24/27.5 and 0.82: the difficulty masked
    the execution far more than on the real data.
    """
    return float(rng.beta(1.2, 1.2))


def draw_quality(rng: np.random.Generator, skill: float) -> DiveQuality:
    """Latent factors for a diver of ``skill`` in ``[0, 1]`` (higher: better dives on average)."""
    spread = 0.15 + 0.9 * (1 - skill)
    return DiveQuality(
        rotation_error=float(np.clip(rng.normal(0, spread * 0.6), -0.8, 0.8)),
        rip=float(np.clip(rng.beta(1 + 4 * skill, 1.5), 0, 1)),
        form=float(np.clip(rng.beta(1.2, 1 + 4 * skill), 0, 1)),
        height=float(np.clip(rng.beta(1 + 3 * skill, 1.5), 0, 1)),
    )


def judge(rng: np.random.Generator, execution: float, biases: np.ndarray) -> np.ndarray:
    """Seven judges' scores in 0..10, rounded to 0.5, in judge-seat order (unsorted)."""
    raw = execution + biases + rng.normal(0, 0.3, NUM_JUDGES)
    return np.clip(np.round(raw * 2) / 2, 0, 10).astype(np.float64)


def final_score(judges: np.ndarray, difficulty: float) -> float:
    """The diving rule: sum of the middle three of seven scores times the difficulty, 2 decimals."""
    return round(float(np.sort(judges)[2:5].sum()) * difficulty, 2)


@dataclass(frozen=True)
class Arena:
    """Per-competition appearance: colours, platform height, water line."""

    wall_top: np.ndarray
    wall_bottom: np.ndarray
    water: np.ndarray
    water_line: float
    platform_y: float
    skin: np.ndarray
    suit: np.ndarray


def draw_arena(rng: np.random.Generator) -> Arena:
    """A random arena (10 m platform or 3 m springboard, colours)."""
    platform = rng.random() < 0.7
    return Arena(
        wall_top=np.array([0.15, 0.18, 0.3]) + rng.uniform(-0.08, 0.08, 3),
        wall_bottom=np.array([0.35, 0.38, 0.5]) + rng.uniform(-0.08, 0.08, 3),
        water=np.array([0.1, 0.45, 0.75]) + rng.uniform(-0.08, 0.08, 3),
        water_line=float(rng.uniform(0.64, 0.68)),
        platform_y=float(rng.uniform(0.3, 0.34) if platform else rng.uniform(0.44, 0.48)),
        skin=np.array([0.9, 0.7, 0.55]) + rng.uniform(-0.1, 0.05, 3),
        suit=rng.uniform(0.0, 0.9, 3),
    )


def arena_background(arena: Arena, size: int) -> np.ndarray:
    """Wall gradient, water band and platform, (H, W, 3)."""
    bg = render.gradient(size, arena.wall_top, arena.wall_bottom)
    cut = int(size * arena.water_line)
    bg[cut:] = arena.water
    canvas = bg[None].copy()
    render.paint_box(canvas, PLATFORM_X - 0.05, arena.platform_y + 0.015, 0.13, 0.015, np.pi / 2,
                     np.array([0.75, 0.75, 0.72]))
    render.paint_box(canvas, PLATFORM_X - 0.11, (arena.platform_y + 0.04 + arena.water_line) / 2,
                     (arena.water_line - arena.platform_y) / 2, 0.03, 0.0, np.array([0.55, 0.55, 0.55]))
    return canvas[0]


def render_pool(arena: Arena, size: int, frames: int, rng: np.random.Generator) -> np.ndarray:
    """Frames of the empty pool between dives (ripples drift), float canvas (T, H, W, 3)."""
    canvas = render.canvas(arena_background(arena, size), frames)
    t = np.arange(frames, dtype=np.float32)
    for _ in range(3):
        x0, speed = rng.uniform(0.2, 0.9), rng.uniform(-0.004, 0.004)
        render.paint_box(canvas, x0 + speed * t, arena.water_line + rng.uniform(0.03, 0.15), 0.006, 0.06, np.pi / 2,
                         arena.water * 1.25)
    return canvas


def render_dive(
    rng: np.random.Generator, dive: Dive, quality: DiveQuality, arena: Arena, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Render one dive from standing to the end of the splash.

    Returns:
        Float canvas ``(L, H, W, 3)`` and the step of every frame (0 take-off, 1 somersaults,
        2 twists, 3 entry), shape ``(L,)``.
    """
    stand, takeoff = int(rng.integers(8, 20)), int(rng.integers(10, 15))
    drop = arena.water_line - arena.platform_y
    flight = int(round(25 + 55 * drop + 8 * quality.height + rng.integers(0, 6)))
    entry = int(rng.integers(14, 22))
    n1, n2 = stand + takeoff, flight
    length = n1 + n2 + entry
    canvas = render.canvas(arena_background(arena, size), length)
    t = np.arange(length, dtype=np.float32)
    cx = np.full(length, PLATFORM_X, np.float32)
    cy = np.full(length, arena.platform_y - 0.1, np.float32)
    half_len = np.full(length, 0.09, np.float32)
    angle = np.zeros(length, np.float32)
    width = np.full(length, 0.022, np.float32)
    # take-off: crouch then spring up
    crouch = np.sin(np.pi * np.clip((t - stand) / takeoff, 0, 1))
    half_len[:n1] -= 0.03 * crouch[:n1]
    cy[:n1] += 0.03 * crouch[:n1]
    # flight: parabola from the platform (apex = height) to the water line
    u = np.clip((t - n1) / max(n2 - 1, 1), 0, 1)
    apex = 0.03 + 0.1 * quality.height
    y_start, y_end = arena.platform_y - 0.1, arena.water_line - 0.02
    a = y_end - y_start + 4 * apex  # y(u) = y_start - 4 apex u + a u^2 ... reaches y_end at u=1
    fl = slice(n1, n1 + n2)
    cy[fl] = y_start - 4 * apex * u[fl] + a * u[fl] ** 2
    cx[fl] = PLATFORM_X + FLIGHT_X * u[fl]
    direction = 1.0 if dive.group in (1, 4) else -1.0
    total = direction * (np.pi * dive.half_somersaults + quality.rotation_error)
    angle[fl] = total * render.min_jerk(u[fl] * 1.05)
    tuck = {"A": 0.09, "B": 0.065, "C": 0.045, "D": 0.075}[dive.position]
    bend = np.sin(np.pi * u[fl])
    half_len[fl] = 0.09 - (0.09 - tuck) * bend
    wobble = quality.form * 0.35
    angle[fl] += wobble * np.sin(2 * np.pi * 3.3 * u[fl]) * bend
    half_len[fl] *= 1 + 0.25 * quality.form * np.sin(2 * np.pi * 5.1 * u[fl]) * bend
    steps = np.zeros(length, np.int64)
    steps[fl] = 1
    if dive.half_twists:
        twist_from = n1 + n2 // 2
        tw = np.clip((t - twist_from) / max(n1 + n2 - twist_from, 1), 0, 1)
        width = width * (0.45 + 0.55 * np.abs(np.cos(np.pi * dive.half_twists * tw)))
        steps[twist_from : n1 + n2] = 2
    # entry: keep the final tilt, slide under the water line
    en = slice(n1 + n2, length)
    angle[en] = angle[n1 + n2 - 1]
    cx[en] = cx[n1 + n2 - 1]
    cy[en] = y_end + 0.25 * (t[en] - n1 - n2 + 1) / entry
    steps[en] = 3
    # body and head; the water then covers whatever is below the water line
    render.paint_box(canvas, cx, cy, half_len, width, angle, arena.suit)
    render.paint_disc(canvas, cx - half_len * np.sin(angle), cy - half_len * np.cos(angle), 0.022, arena.skin)
    canvas[:, int(size * arena.water_line):] = arena.water
    # splash: droplets thrown up at entry, count and height grow with the splash factor
    splash = quality.splash
    tau = np.clip((t - n1 - n2) / entry, 0, 1)
    for k in range(3 + int(10 * splash)):
        dx = rng.uniform(-0.06, 0.06) * (0.5 + splash)
        up = (0.04 + 0.26 * splash) * rng.uniform(0.5, 1.0)
        yk = arena.water_line - up * 4 * tau * (1 - tau)
        opacity = ((tau > 0) & (tau < 1)).astype(np.float32)
        render.paint_disc(canvas, cx + dx * (1 + tau), yk, 0.01 + 0.025 * splash, np.array([0.95, 0.97, 1.0]), opacity)
    return canvas, steps


def entry_defects(quality: DiveQuality, steps: np.ndarray, offset: int = 0) -> list[dict]:
    """The dive's defects in the latents-file form (:mod:`~pecop_lib.data.synthetic.defects`).

    ``bad_entry`` covers the entry phase (the first frame of step 3 to the end of the dive) when
    :attr:`DiveQuality.entry_deduction` reaches :data:`ENTRY_FAULT`; a clean entry has no defect.

    Args:
        quality: The dive's latent factors.
        steps: :func:`render_dive`'s step of every frame.
        offset: The position of the dive's first frame in the record's frame source.
    """
    if quality.entry_deduction < ENTRY_FAULT:
        return []
    return defect_list([("bad_entry", int(np.argmax(steps == 3)), len(steps))], offset)
