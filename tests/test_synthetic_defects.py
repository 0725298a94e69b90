"""The known defects the synthetic world records (:mod:`pecop_lib.data.synthetic.defects`): valid positions of
each loader's frame source, pointing at the event in the frames, and videos unchanged by recording them."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _worlds import FINETUNE_SPEC, finetune_world
from conftest import REPO_ROOT

from pecop_lib.data import JIGSAWS, MTLAQA, PD4T, FineDiving
from pecop_lib.data.errors import DataFormatError
from pecop_lib.data.synthetic import Defect, defect_intervals, diving, motor, surgery
from pecop_lib.data.synthetic.common import LATENTS_FILE, MANIFEST, video_rng
from pecop_lib.data.synthetic.defects import KINDS
from pecop_lib.data.synthetic.world import sub_action_table

BASELINE = "1eb468377843f2cffac6700e3016956f3e669397"
"""The last commit before the world recorded defects (generator version 5): its videos are the reference."""
AQA = ("MTL-AQA", "FineDiving", "JIGSAWS", "PD4T")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return finetune_world(tmp_path_factory.getbasetemp())


def _latents(world, name: str) -> dict:
    return json.loads((world[name] / LATENTS_FILE).read_text())


def _datasets(root: Path, name: str) -> list:
    """Every split (and task) of dataset ``name``, in evaluation mode (no temporal jitter)."""
    if name == "MTL-AQA":
        return [MTLAQA(root, s, crop=32, train=False) for s in ("train", "test")]
    if name == "FineDiving":
        return [FineDiving(root, s, crop=32, train=False) for s in ("train", "test")]
    if name == "JIGSAWS":
        return [JIGSAWS(root, t, 0, s, crop=32, train=False) for t in surgery.TASKS
                for s in ("train", "test")]
    return [PD4T(root, t, s, crop=32, train=False) for t in motor.TASKS for s in ("train", "test")]


def _key(ds, index: int) -> str:
    """The latents key of record ``index`` (PD4T's is ``<task>/<video_id>``)."""
    record = ds.records[index]
    return f"{ds.task}/{record.id}" if isinstance(ds, PD4T) else record.id


# ----------------------------------------------------------------- bounds, kinds, rules
@pytest.mark.parametrize("name", AQA)
def test_defects_are_sorted_positions_of_the_loaders_frame_sources(world, name):
    table = defect_intervals(world[name])
    seen, kinds = set(), set()
    for ds in _datasets(world[name], name):
        for i in range(len(ds)):
            key = _key(ds, i)
            seen.add(key)
            source = ds.source(i)
            defects = table[key]
            assert defects == defect_intervals(world[name], key)
            assert [d.start for d in defects] == sorted(d.start for d in defects)
            for d in defects:
                assert d.kind in KINDS[name] and 0 <= d.start < d.end <= len(source), (key, d, len(source))
                kinds.add(d.kind)
            if name == "MTL-AQA":  # inside the 103-frame clip the loader reads, ending with the dive
                window = ds.positions(i, source, np.random.default_rng(0))
                end_frame = ds.annotations[ds.keys[i]]["end_frame"]
                for d in defects:
                    assert window[0] <= d.start and d.end == window[-1] + 1 == end_frame
                    assert int(source.files[d.end - 1].stem) == end_frame  # position p: frame file p + 1
                    assert 14 <= d.end - d.start <= 21  # the entry phase of render_dive
            if name == "FineDiving":  # exactly the frames labelled "Entry", to the end of the clip
                entry = [k for k, v in sub_action_table().items() if v == "Entry"][0]
                labels = ds.labels(i)
                for d in defects:
                    assert d.end == len(source) and (labels[d.start:] == entry).all()
                    assert labels[d.start - 1] != entry
    assert seen == set(_latents(world, name))  # every record is reached through its loader
    assert kinds == set(KINDS[name]), f"{name}: no video with a defect of kind {set(KINDS[name]) - kinds}"


def test_defects_follow_the_latent_factors(world):
    for name in ("MTL-AQA", "FineDiving"):
        clean = faulty = 0
        for lat in _latents(world, name).values():
            quality = diving.DiveQuality(lat["rotation_error"], lat["rip"], lat["form"], lat["height"])
            bad = quality.entry_deduction >= diving.ENTRY_FAULT
            assert [d["kind"] for d in lat["defects"]] == (["bad_entry"] if bad else [])
            clean, faulty = clean + (not bad), faulty + bad
        assert clean and faulty  # a clean dive has no defect
    for lat in _latents(world, "JIGSAWS").values():
        counts = {k: sum(d["kind"] == k for d in lat["defects"]) for k in KINDS["JIGSAWS"]}
        assert counts == {"tissue_hit": lat["tissue_hits"], "needle_drop": lat["drops"],
                          "hesitation": lat["hesitations"]}
    for lat in _latents(world, "PD4T").values():
        kinds = [d["kind"] for d in lat["defects"]]
        assert kinds.count("hesitation") <= lat["measured_hesitations"]
        decrement = [(d["start"], d["end"]) for d in lat["defects"] if d["kind"] == "amplitude_decrement"]
        frames = lat["frames"]
        assert decrement == ([((frames + 1) // 2, frames)] if lat["grade_amplitude_decrement"] >= 1 else [])


# ----------------------------------------------------------------- the positions show the event
def _pd4t_replay(spec, key: str) -> tuple[np.random.Generator, str, str]:
    """The generator of PD4T record ``key`` after its severity draw, its task and side."""
    task, video_id = key.split("/", 1)
    index = int(video_id.split("_")[0].split("-")[1])
    rng = video_rng(spec, "PD4T", motor.TASKS.index(task), index)
    rng.normal(0, 0.12)  # the severity draw (the severity is in the latents)
    return rng, task, "l" if index % 2 else "r"


def test_pd4t_defects_show_in_the_frames(world):
    latents, checked = _latents(world, "PD4T"), 0
    for key, lat in latents.items():
        if not lat["defects"]:
            continue
        rng, task, side = _pd4t_replay(FINETUNE_SPEC, key)
        frames, replayed = motor.render_task(rng, task, FINETUNE_SPEC.size, lat["severity"], side)
        assert json.loads(json.dumps(replayed)) == {k: v for k, v in lat.items() if k != "task"}
        still = np.array([np.array_equal(a, b) for a, b in zip(frames[:-1], frames[1:])])
        paused = np.zeros(len(frames), bool)
        for d in lat["defects"]:
            if d["kind"] == "hesitation":
                assert still[d["start"]:d["end"] - 1].all(), (key, d)  # the limb rests: identical frames
                paused[d["start"]:d["end"]] = True
        moving = ~paused[:-1] & ~paused[1:]
        assert still[moving].mean() < 0.5, key  # elsewhere it moves
        rng, _, _ = _pd4t_replay(FINETUNE_SPEC, key)
        x, realized, _, _ = motor.draw_movement(rng, task, lat["severity"])
        for d in lat["defects"]:
            if d["kind"] == "hesitation":  # exactly the frames at rest (x = 0) between two cycles
                assert (x[d["start"]:d["end"]] == 0).all() and x[d["start"] - 1] > 0, (key, d)
                assert d["end"] == len(x) or x[d["end"]] > 0, (key, d)
            if d["kind"] == "amplitude_decrement":  # below 1 - d/2 there, above it before
                half = 1 - realized["amplitude_decrement"] / 2
                assert x[d["start"]:].max() < half < x[:d["start"]].max(), key
        checked += 1
    assert checked


def test_pd4t_hesitations_are_still_in_the_decoded_video(world):
    """Through the loader (mp4 positions), a hesitation's frames barely change: H.264 noise at 32 px only."""
    paused_diffs, moving_diffs = [], []
    for ds in _datasets(world["PD4T"], "PD4T"):
        for i in range(len(ds)):
            source = ds.source(i)
            frames = source.read(np.arange(len(source))).astype(np.float32)
            diff = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))
            paused = np.zeros(len(frames), bool)
            for d in defect_intervals(world["PD4T"], _key(ds, i)):
                if d.kind == "hesitation" and d.end - d.start > 1:
                    paused_diffs.append(diff[d.start:d.end - 1])
                    paused[d.start:d.end] = True
            moving_diffs += list(diff[~paused[:-1] & ~paused[1:]])
    moving = np.median(moving_diffs)
    assert paused_diffs and max(p.mean() for p in paused_diffs) < moving
    assert np.concatenate(paused_diffs).mean() < moving / 3


def _jigsaws_replay(spec, name: str) -> np.random.Generator:
    """The generator of JIGSAWS trial ``name`` after its trial-skill draw (the skill is in the latents)."""
    task, rest = name.rsplit("_", 1)
    subject, trial = surgery.SUBJECTS.index(rest[0]), int(rest[1:])
    rng = video_rng(spec, "JIGSAWS", surgery.TASKS.index(task), subject, trial)
    rng.normal(0, 0.08)
    return rng


def test_jigsaws_defects_show_in_the_frames(world):
    """The tremor-free tip stands still in a hesitation; re-rendered at 160 px (no draw depends on the
    size), a hit's red flash and a drop's missing needle show exactly in their frames."""
    size, paused, rendered = 160, 0, 0
    for name, lat in _latents(world, "JIGSAWS").items():
        task = name.rsplit("_", 1)[0]
        motion = surgery.draw_motion(_jigsaws_replay(FINETUNE_SPEC, name), task, lat["skill"])
        assert motion.defects() == lat["defects"]
        for d in lat["defects"]:
            if d["kind"] == "hesitation":
                path = np.stack([motion.xs[d["start"]:d["end"]], motion.ys[d["start"]:d["end"]]], 1)
                assert (path == path[0]).all(), (name, d)
                paused += 1
        if not any(d["kind"] in ("tissue_hit", "needle_drop") for d in lat["defects"]) or rendered >= 6:
            continue
        rng = _jigsaws_replay(FINETUNE_SPEC, name)
        frames, replayed = surgery.render_trial(rng, task, size, lat["skill"])
        assert json.loads(json.dumps(replayed)) == lat
        frames = frames.astype(np.int32)
        red = ((frames[..., 0] > 180) & (frames[..., 1] < 60) & (frames[..., 2] < 60)).sum(axis=(1, 2))
        needle = (frames.min(axis=-1) > 200).sum(axis=(1, 2))
        flash, dropped = np.zeros(len(frames), bool), np.zeros(len(frames), bool)
        for d in lat["defects"]:
            if d["kind"] == "tissue_hit":
                flash[d["start"]:d["end"]] = True
            elif d["kind"] == "needle_drop":
                dropped[d["start"]:d["end"]] = True
        assert (red[flash] >= 3).all() and (red[~flash] == 0).all(), name
        assert (needle[dropped] == 0).all() and (needle[~dropped] > 0).all(), name
        rendered += 1
    assert paused and rendered


def test_a_bad_entry_covers_the_splash_and_a_clean_one_has_none():
    arena = diving.draw_arena(np.random.default_rng(1))
    dive = diving.parse_dive("107B")
    faulty = diving.DiveQuality(rotation_error=0.5, rip=0.2, form=0.3, height=0.6)
    clean = diving.DiveQuality(rotation_error=0.0, rip=1.0, form=0.0, height=1.0)
    assert clean.entry_deduction < diving.ENTRY_FAULT <= faulty.entry_deduction
    for seed in range(3):
        _, steps = diving.render_dive(np.random.default_rng(seed), dive, clean, arena, 32)
        assert diving.entry_defects(clean, steps) == []
        canvas, steps = diving.render_dive(np.random.default_rng(seed), dive, faulty, arena, 96)
        [bad] = diving.entry_defects(faulty, steps, offset=5)
        assert bad["kind"] == "bad_entry" and bad["end"] - 5 == len(canvas)
        start = bad["start"] - 5
        assert (steps[start:] == 3).all() and steps[start - 1] != 3
        splash = (canvas.min(axis=-1) > 0.9).sum(axis=(1, 2))  # white droplets thrown up at entry
        assert (splash[:start + 1] == 0).all() and (splash[start + 1:len(canvas) - 1] > 0).all()


# ----------------------------------------------------------------- reading back
def test_defect_intervals_refuses_folders_without_recorded_defects(world, tmp_path):
    with pytest.raises(DataFormatError, match=rf"{LATENTS_FILE} does not exist: .* not a dataset folder"):
        defect_intervals(tmp_path)
    with pytest.raises(DataFormatError, match="action set records no defects"):
        defect_intervals(world["Kinetics-synth"])
    with pytest.raises(DataFormatError, match=r"no record 'nope' \(PD4T's keys are '<task>/<video_id>'\)"):
        defect_intervals(world["PD4T"], "nope")
    old = tmp_path / "old-world"
    (old / "JIGSAWS").mkdir(parents=True)
    stale = {k: _without_defects(lat) for k, lat in _latents(world, "JIGSAWS").items()}
    (old / "JIGSAWS" / LATENTS_FILE).write_text(json.dumps(stale))
    (old / MANIFEST).write_text(json.dumps({"generator_version": 5}))
    with pytest.raises(DataFormatError, match=r"no 'defects': the world was written by generator version 5, "
                                              r".*delete the cached world .*old-world and generate it again"):
        defect_intervals(old / "JIGSAWS")
    with pytest.raises(ValueError, match="0 <= start < end"):
        Defect("hesitation", 4, 4)


# ----------------------------------------------------------------- the videos are those of the baseline
def _baseline(relpath: str, tmp_path: Path):
    """Module ``relpath`` as committed at :data:`BASELINE`, imported from a temporary file."""
    try:
        text = subprocess.run(["git", "show", f"{BASELINE}:{relpath}"], cwd=REPO_ROOT, capture_output=True,
                              text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"baseline commit {BASELINE[:10]} not available (no git checkout, or a shallow one)")
    name = f"_baseline_{Path(relpath).stem}"
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _without_defects(latents: dict) -> dict:
    return {k: v for k, v in latents.items() if k != "defects"}


def test_renderers_draw_the_frames_of_the_baseline(tmp_path):
    old_motor = _baseline("pecop_lib/data/synthetic/motor.py", tmp_path)
    for task in motor.TASKS:
        for severity in range(5):
            seed, side = [11, motor.TASKS.index(task), severity], "l" if severity % 2 else "r"
            new, new_lat = motor.render_task(np.random.default_rng(seed), task, 32, severity, side)
            old, old_lat = old_motor.render_task(np.random.default_rng(seed), task, 32, severity, side)
            assert np.array_equal(new, old) and _without_defects(new_lat) == old_lat
    old_surgery = _baseline("pecop_lib/data/synthetic/surgery.py", tmp_path)
    for task in surgery.TASKS:
        for skill in (0.05, 0.5, 0.95):
            seed = [12, surgery.TASKS.index(task), int(100 * skill)]
            new, new_lat = surgery.render_trial(np.random.default_rng(seed), task, 32, skill)
            old, old_lat = old_surgery.render_trial(np.random.default_rng(seed), task, 32, skill)
            assert np.array_equal(new, old) and _without_defects(new_lat) == old_lat
    old_diving = _baseline("pecop_lib/data/synthetic/diving.py", tmp_path)
    for seed in range(4):
        rng = np.random.default_rng([13, seed])
        arena, dive = diving.draw_arena(rng), diving.parse_dive(list(diving.DIVE_TABLE)[seed * 5])
        quality = diving.draw_quality(rng, diving.draw_skill(rng))
        new, new_steps = diving.render_dive(np.random.default_rng(seed), dive, quality, arena, 32)
        old, old_steps = old_diving.render_dive(np.random.default_rng(seed), dive, quality, arena, 32)
        assert np.array_equal(new, old) and np.array_equal(new_steps, old_steps)


@pytest.mark.slow
def test_world_files_are_those_of_the_baseline(world, tmp_path):
    """Every file the four AQA generators write is the baseline's, byte for byte (latents: bar defects)."""
    old_world = _baseline("pecop_lib/data/synthetic/world.py", tmp_path)
    old = old_world.generate_world(tmp_path / "baseline", FINETUNE_SPEC, datasets=AQA)
    for name in AQA:
        files = sorted(p.relative_to(world[name]) for p in world[name].rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(old[name]) for p in old[name].rglob("*") if p.is_file())
        for rel in files:
            if rel.name != LATENTS_FILE:
                assert (world[name] / rel).read_bytes() == (old[name] / rel).read_bytes(), f"{name}/{rel}"
        new_lat, old_lat = _latents(world, name), _latents(old, name)
        assert {k: _without_defects(v) for k, v in new_lat.items()} == {
            k: _without_defects(v) for k, v in old_lat.items()}


def test_a_task_keys_the_defects_by_record_id(tmp_path_factory):
    world = finetune_world(tmp_path_factory.getbasetemp())
    every = defect_intervals(world["PD4T"])
    gait = defect_intervals(world["PD4T"], task="Gait")
    assert gait and all(every[f"Gait/{vid}"] == found for vid, found in gait.items())
    assert defect_intervals(world["JIGSAWS"], task="Suturing") == defect_intervals(world["JIGSAWS"])
