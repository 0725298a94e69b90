"""The synthetic world: five datasets written in the real datasets' on-disk formats.

:func:`generate_world` writes, under one folder::

    MTL-AQA/      info/*.pkl + new_total_frames_256s/<event>/%08d.jpg   (CoRe layout)
    FineDiving/   Annotations/*.pkl + FINADiving_MTL_256s/<video>/<clip>/%05d.jpg
    JIGSAWS/      info/label.pkl, info/splits.pkl, frames/<trial>_capture1/%05d.jpg, <Task>/meta_file_<Task>.txt
    PD4T/         Annotations/<Task>/{train,test}.csv + Videos/<Task>/<subject>/<stem>.mp4
    Kinetics-synth/  annotations/{train,val}.csv + {train,val}/<label>/<id>_<start>_<end>.mp4
    world.json    the spec, generator version, sizes and timings (written last: marks completion)

Each dataset folder also holds ``synthetic_latents.json`` (record id -> the latent factors that
decided its score, and for the AQA datasets the frame intervals of the video's known defects:
:mod:`~pecop_lib.data.synthetic.defects`), which no real dataset has and no loader needs. The
JIGSAWS and PD4T generators live in :mod:`~pecop_lib.data.synthetic.clinical`. Generation is deterministic:
every video draws from ``numpy.random.default_rng([seed, dataset, index])``, so the result does not
depend on the number of worker processes. :func:`synthetic_world` caches worlds under
``pecop_lib.config.cache_dir()``, keyed by spec and generator version.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pecop_lib.atomic import atomic_write_json, atomic_write_text, read_json
from pecop_lib.data.safe_pickle import dump_pickle
from pecop_lib.data.synthetic import actions, diving, render
from pecop_lib.data.synthetic.clinical import generate_jigsaws, generate_pd4t
from pecop_lib.data.synthetic.common import DATASETS, LATENTS_FILE, MANIFEST, MP4_DATASETS
from pecop_lib.data.synthetic.common import parallel_map as _map
from pecop_lib.data.synthetic.common import video_rng as _rng
from pecop_lib.data.video import check_mp4_width, write_frame_folder, write_mp4
from pecop_lib.store import ArtifactStore, replace_folder, without_added

if TYPE_CHECKING:
    from pecop_lib.config import Config

GENERATOR_VERSION = 6
"""Bump when generated content changes: cached worlds of other versions are not reused (6: the
latents record each AQA video's defects; the videos are those of version 5)."""
ACTIONS_VERSION = 3
"""Version of the domain-general action set's content alone (bump with any change to
:mod:`pecop_lib.data.synthetic.actions`): a stage-1 backbone depends on the action set only, so a
shipped stage-1 checkpoint stays valid when the AQA generators change (:func:`actions_identity`)."""
WORLD_ROOT = "synthetic"
"""Sub-folder of ``cache_dir()`` holding the generated worlds (one folder per :meth:`WorldSpec.key`)."""
MTL_EVENTS = (1, 2, 3, 4, 5, 6, 7, 9, 10, 13, 14, 17, 18, 22, 26)
"""The 15 event numbers of the real MTL-AQA."""


@dataclass(frozen=True)
class WorldSpec:
    """Sizes of a synthetic world.

    Attributes:
        size: Frame height = width in pixels (even).
        aqa_videos: Dives in each of MTL-AQA and FineDiving; videos per PD4T task.
        jigsaws_trials: Trials per surgeon (8 surgeons) per JIGSAWS task.
        action_videos: Videos per class of the domain-general set.
        action_frames: Frames per domain-general video.
        seed: Base seed.
        finediving_test_dives: FineDiving's test split size; 0: a quarter of ``aqa_videos``, the real
            split's 75/25. When set, the training split keeps its size (three quarters of ``aqa_videos``)
            and the test split has this many dives: a larger test split narrows the intervals of the test
            Spearman without making stage 2 or fine-tuning train longer.
    """

    size: int = 112
    aqa_videos: int = 240
    jigsaws_trials: int = 5
    action_videos: int = 40
    action_frames: int = 64
    seed: int = 0
    finediving_test_dives: int = 0

    def __post_init__(self) -> None:
        if self.size < 16 or self.size % 2:
            raise ValueError(f"WorldSpec.size must be an even number >= 16, got {self.size}")
        if (self.aqa_videos < 8 or self.jigsaws_trials < 1 or self.action_videos < 2 or self.action_frames < 8
                or self.finediving_test_dives < 0):
            raise ValueError(
                "WorldSpec needs aqa_videos >= 8, jigsaws_trials >= 1, action_videos >= 2, action_frames >= 8, "
                f"finediving_test_dives >= 0; got {self}"
            )

    def finediving_split(self) -> tuple[int, int]:
        """FineDiving's ``(train, test)`` dive counts (see ``finediving_test_dives``)."""
        train = int(round(0.75 * self.aqa_videos))
        if self.finediving_test_dives == 0:
            return train, self.aqa_videos - train
        return train, self.finediving_test_dives

    def key(self) -> str:
        """Cache folder name: generator version and every size."""
        return (f"v{GENERATOR_VERSION}-seed{self.seed}-{self.size}px-aqa{self.aqa_videos}-jig{self.jigsaws_trials}"
                f"-act{self.action_videos}x{self.action_frames}"
                + (f"-fdtest{self.finediving_test_dives}" if self.finediving_test_dives else ""))


@dataclass(frozen=True)
class World:
    """A generated world: its root and manifest; ``world[name]`` is a dataset root."""

    root: Path
    manifest: dict

    def __getitem__(self, name: str) -> Path:
        if name not in DATASETS:
            raise KeyError(f"no synthetic dataset {name!r}; choose one of {DATASETS}")
        return self.root / name

    def latents(self, name: str) -> "pandas.DataFrame":  # noqa: F821
        """The latent factors of dataset ``name``, one row per record id."""
        import pandas as pd

        data = read_json(self[name] / LATENTS_FILE, fix=f"delete {self.root} and the world is generated again")
        return pd.DataFrame.from_dict(data, orient="index").rename_axis("id").reset_index()


# ---------------------------------------------------------------- MTL-AQA (CoRe layout)
def _mtl_event(spec: WorldSpec, root: str, event: int, clips: int) -> tuple[dict, dict]:
    rng = _rng(spec, "MTL-AQA", event)
    arena = diving.draw_arena(rng)
    biases = rng.normal(0, 0.2, diving.NUM_JUDGES)
    folder = Path(root) / "new_total_frames_256s" / f"{event:02d}"
    numbers = list(diving.DIVE_TABLE)
    annotations, latents = {}, {}
    offset = 1
    for clip in range(1, clips + 1):
        gap = 110 if clip == 1 else int(rng.integers(12, 30))
        write_frame_folder(render.to_uint8(diving.render_pool(arena, spec.size, gap, rng)), folder, first=offset)
        offset += gap
        dive = diving.parse_dive(numbers[int(rng.integers(len(numbers)))])
        skill = diving.draw_skill(rng)
        quality = diving.draw_quality(rng, skill)
        canvas, steps = diving.render_dive(rng, dive, quality, arena, spec.size)
        write_frame_folder(render.to_uint8(canvas), folder, first=offset)
        judges = diving.judge(rng, quality.execution, biases)
        annotations[(event, clip)] = {
            "primary_view": 0, "start_frame": offset, "end_frame": offset + len(canvas) - 1,
            "position": diving.MTL_POSITION[dive.position], "difficulty": dive.difficulty,
            "armstand": int(dive.armstand), "rotation_type": diving.MTL_ROTATION_TYPE[dive.group],
            "ss_no": dive.half_somersaults, "tw_no": dive.half_twists,
            "final_score": diving.final_score(judges, dive.difficulty), "judge_scores": judges,
            "dive_number": dive.number,
        }
        latents[f"{event:02d}_{clip:02d}"] = {**asdict(quality), "splash": quality.splash,
                                              "execution": quality.execution, "skill": skill, "frames": len(canvas),
                                              "platform_10m": arena.platform_y < 0.4,
                                              # the event folder's position p is frame file p + 1
                                              "defects": diving.entry_defects(quality, steps, offset - 1)}
        offset += len(canvas)
    tail = 12  # room for the +3 train shift after the last dive
    write_frame_folder(render.to_uint8(diving.render_pool(arena, spec.size, tail, rng)), folder, first=offset)
    return annotations, latents


def _split(rng: np.random.Generator, keys: list, train_fraction: float = 0.75) -> tuple[list, list]:
    order = rng.permutation(len(keys))
    cut = int(round(train_fraction * len(keys)))
    return sorted(keys[i] for i in order[:cut]), sorted(keys[i] for i in order[cut:])


def generate_mtl_aqa(spec: WorldSpec, root: Path, workers: int = 0) -> None:
    """Write the MTL-AQA-format task (CoRe frame layout, both annotation pickles, split 0)."""
    events = MTL_EVENTS[: max(2, min(len(MTL_EVENTS), spec.aqa_videos // 8))]
    per_event = np.array_split(np.arange(spec.aqa_videos), len(events))
    results = _map(_mtl_event, [(spec, str(root), e, len(c)) for e, c in zip(events, per_event)], workers)
    annotations = {k: v for ann, _ in results for k, v in ann.items()}
    latents = {k: v for _, lat in results for k, v in lat.items()}
    info = root / "info"
    dump_pickle(annotations, info / "final_annotations_dict_with_dive_number.pkl")
    dump_pickle({k: {f: v for f, v in r.items() if f != "dive_number"} for k, r in annotations.items()},
                info / "augmented_final_annotations_dict.pkl")
    train, test = _split(_rng(spec, "MTL-AQA", 10**6), list(annotations))
    dump_pickle(train, info / "train_split_0.pkl")
    dump_pickle(test, info / "test_split_0.pkl")
    atomic_write_json(root / LATENTS_FILE, latents)


# ---------------------------------------------------------------- FineDiving
def sub_action_table() -> dict[int, str]:
    """Sub-action type id -> name for every dive of the table (take-offs, somersaults, twists, entry)."""
    names = set()
    for number in diving.DIVE_TABLE:
        d = diving.parse_dive(number)
        names |= {d.takeoff_name, d.somersault_name, "Entry"} | ({d.twist_name} if d.twist_name else set())
    return {i: name for i, name in enumerate(sorted(names))}


def _fd_competition(spec: WorldSpec, root: str, comp: int, clips: int) -> tuple[dict, dict, dict]:
    rng = _rng(spec, "FineDiving", comp)
    arena = diving.draw_arena(rng)
    video = (f"SynthDivingWorldCup{2019 + comp % 4}_{'Men' if comp % 2 == 0 else 'Women'}"
             f"{'10m' if arena.platform_y < 0.4 else '3m'}_final_r{1 + comp // 4}")
    ids = {name: i for i, name in sub_action_table().items()}
    biases = rng.normal(0, 0.2, diving.NUM_JUDGES)
    numbers = list(diving.DIVE_TABLE)
    frame = int(rng.integers(100, 600))
    aqa, fields, latents = {}, {}, {}
    for clip in range(clips):
        dive = diving.parse_dive(numbers[int(rng.integers(len(numbers)))])
        skill = diving.draw_skill(rng)
        quality = diving.draw_quality(rng, skill)
        canvas, steps = diving.render_dive(rng, dive, quality, arena, spec.size)
        write_frame_folder(render.to_uint8(canvas), Path(root) / "FINADiving_MTL_256s" / video / str(clip),
                           name_format="{:05d}.jpg", first=frame)
        names = [dive.takeoff_name, dive.somersault_name, dive.twist_name, "Entry"]
        labels = np.array([ids[names[s]] for s in steps], dtype=np.int64)
        transit = np.array([frame + int(np.argmax(steps >= 1)), frame + int(np.argmax(steps == 3))], dtype=np.int64)
        judges = diving.judge(rng, quality.execution, biases)
        score = diving.final_score(judges, dive.difficulty)
        key = (video, clip)
        aqa[key] = [dive.number, score, dive.difficulty, transit, labels]
        fields[key] = {
            "action_type": dive.number, "dive_score": score, "difficulty": dive.difficulty,
            "start_frame": frame, "end_frame": frame + len(canvas) - 1,
            "sub-action_types": {"take-off": dive.takeoff_name, "somersault": dive.somersault_name,
                                 "twist": dive.twist_name or "", "entry": "Entry"},
            "judge_scores": judges.tolist(), "frames_labels": labels, "steps_transit_frames": transit,
        }
        latents[f"{video}/{clip}"] = {**asdict(quality), "splash": quality.splash, "execution": quality.execution,
                                      "skill": skill, "frames": len(canvas),
                                      # the clip folder's position p is its frame p (number frame + p)
                                      "defects": diving.entry_defects(quality, steps)}
        frame += len(canvas) + int(rng.integers(200, 900))
    return aqa, fields, latents


def generate_finediving(spec: WorldSpec, root: Path, workers: int = 0) -> None:
    """Write the FineDiving-format task (absolute frame numbers, step labels, 6 annotation files)."""
    train_dives, test_dives = spec.finediving_split()
    dives = train_dives + test_dives
    comps = max(2, dives // 12)
    per_comp = np.array_split(np.arange(dives), comps)
    results = _map(_fd_competition, [(spec, str(root), c, len(n)) for c, n in enumerate(per_comp)], workers)
    aqa = {k: v for a, _, _ in results for k, v in a.items()}
    fields = {k: v for _, f, _ in results for k, v in f.items()}
    ann = root / "Annotations"
    dump_pickle(aqa, ann / "fine-grained_annotation_aqa.pkl")
    dump_pickle(fields, ann / "FineDiving_fine-grained_annotation.pkl")
    dump_pickle(fields, ann / "FineDiving_coarse_annotation.pkl")
    dump_pickle(sub_action_table(), ann / "Sub_action_Types_Table.pkl")
    train, test = _split(_rng(spec, "FineDiving", 10**6), list(aqa), train_fraction=train_dives / dives)
    dump_pickle(train, ann / "train_split.pkl")
    dump_pickle(test, ann / "test_split.pkl")
    atomic_write_json(root / LATENTS_FILE, {k: v for _, _, lat in results for k, v in lat.items()})


# ---------------------------------------------------------------- domain-general actions
_ID_ALPHABET = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"))


def _action_video(spec: WorldSpec, root: str, label: int, index: int, split: str) -> tuple:
    rng = _rng(spec, "Kinetics-synth", label, index)
    frames, latents = actions.render_action(rng, label, spec.size, spec.action_frames)
    youtube_id = "".join(rng.choice(_ID_ALPHABET, 11))
    start = int(rng.integers(0, 300))
    name = actions.ACTION_CLASSES[label]
    write_mp4(frames, Path(root) / split / name / f"{youtube_id}_{start:06d}_{start + 10:06d}.mp4")
    return split, f"{name},{youtube_id},{start},{start + 10},{split}", youtube_id, latents


def generate_actions(spec: WorldSpec, root: Path, workers: int = 0) -> None:
    """Write the domain-general action set in the Kinetics layout (80 % train, 20 % val per class)."""
    n_val = max(1, spec.action_videos // 5)
    items = [(spec, str(root), c, i, "val" if i < n_val else "train")
             for c in range(len(actions.ACTION_CLASSES)) for i in range(spec.action_videos)]
    results = _map(_action_video, items, workers)
    for split in ("train", "val"):
        rows = [row for s, row, _, _ in results if s == split]
        atomic_write_text(root / "annotations" / f"{split}.csv", "label,youtube_id,time_start,time_end,split\n"
                          + "\n".join(rows) + "\n")
    atomic_write_json(root / LATENTS_FILE, {vid: lat for _, _, vid, lat in results})


GENERATORS: dict[str, Callable[[WorldSpec, Path, int], None]] = {
    "MTL-AQA": generate_mtl_aqa,
    "FineDiving": generate_finediving,
    "JIGSAWS": generate_jigsaws,
    "PD4T": generate_pd4t,
    "Kinetics-synth": generate_actions,
}


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def generate_world(
    root: str | os.PathLike[str], spec: WorldSpec, *, datasets: Iterable[str] = DATASETS, workers: int = 0
) -> World:
    """Generate the synthetic world into ``root`` (created; existing dataset folders are replaced).

    Args:
        root: Output folder.
        spec: Sizes and seed.
        datasets: Which of :data:`DATASETS` to write.
        workers: Worker processes (0 or 1: in this process). The output does not depend on it.

    Returns:
        The :class:`World`; its manifest records per-dataset seconds and bytes.

    Raises:
        ValueError: On an unknown dataset, or a frame size decord cannot read back from the mp4
            datasets (:data:`MP4_DATASETS`; :func:`~pecop_lib.data.video.decord_misreads_width`),
            before anything is written.
    """
    root = Path(root)
    datasets = tuple(datasets)
    unknown = [d for d in datasets if d not in GENERATORS]
    if unknown:
        raise ValueError(f"unknown synthetic dataset(s) {unknown}; choose from {DATASETS}")
    mp4 = [d for d in datasets if d in MP4_DATASETS]
    if mp4:
        check_mp4_width(spec.size, f"synthetic world size {spec.size} (WorldSpec.size, config data_synthetic_size) "
                                   f"for the mp4 videos of {', '.join(mp4)}")
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST).unlink(missing_ok=True)
    report = {}
    for name in datasets:
        target = root / name
        if target.exists():
            shutil.rmtree(target)
        start = time.perf_counter()
        GENERATORS[name](spec, target, workers)
        report[name] = {"seconds": round(time.perf_counter() - start, 3), "bytes": _folder_bytes(target)}
    manifest = {"generator_version": GENERATOR_VERSION, "actions_version": ACTIONS_VERSION, "spec": asdict(spec),
                "datasets": report}
    atomic_write_json(root / MANIFEST, manifest)
    return World(root, manifest)


def load_world(root: str | os.PathLike[str]) -> World | None:
    """The world in ``root`` if its manifest exists and has the current generator and action-set versions, else None."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    manifest = read_json(path, fix=f"delete {Path(root)} and the world is generated again")
    if (manifest.get("generator_version"), manifest.get("actions_version")) != (GENERATOR_VERSION, ACTIONS_VERSION):
        return None
    return World(Path(root), manifest)


def actions_identity(actions_root: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What a synthetic action set's content depends on, independent of where it lies on disk.

    Args:
        actions_root: A ``Kinetics-synth`` folder.

    Returns:
        ``{"actions_version", "seed", "size", "action_videos", "action_frames"}`` when the folder is
        the action set of a generated world (its parent holds a ``world.json`` that records the
        action set's version), else ``None`` (a real or hand-made dataset: identify it by its path).
    """
    path = Path(actions_root).resolve().parent / MANIFEST
    if Path(actions_root).name != "Kinetics-synth" or not path.is_file():
        return None
    manifest = read_json(path, fix=f"delete {path.parent} and the world is generated again")
    if "actions_version" not in manifest or "spec" not in manifest:
        return None
    spec = manifest["spec"]
    return {"actions_version": manifest["actions_version"], "seed": spec["seed"], "size": spec["size"],
            "action_videos": spec["action_videos"], "action_frames": spec["action_frames"]}


def world_spec(preset: str | Config = "smoke", seed: int = 0) -> WorldSpec:
    """The :class:`WorldSpec` of a config preset or of a resolved config (its ``data_synthetic_*`` values).

    Pass the resolved :class:`~pecop_lib.config.Config` when it may carry overrides
    (``resolve("tutorial", data_synthetic_size=32)``): a preset name reads the preset's own values.
    """
    from pecop_lib.config import resolve

    cfg = resolve(preset) if isinstance(preset, str) else preset
    return WorldSpec(size=cfg.data_synthetic_size, aqa_videos=cfg.data_synthetic_aqa_videos,
                     jigsaws_trials=cfg.data_synthetic_jigsaws_trials, action_videos=cfg.data_synthetic_action_videos,
                     action_frames=cfg.data_synthetic_action_frames, seed=seed,
                     finediving_test_dives=cfg.data_synthetic_finediving_test_dives)


def synthetic_world(
    preset: str | Config = "smoke", seed: int = 0, *, spec: WorldSpec | None = None, root: str | os.PathLike[str] | None = None,
    workers: int = 0,
) -> World:
    """The synthetic world of a preset, generated once and cached.

    Args:
        preset: Config preset, or resolved config, whose ``data_synthetic_*`` sizes to use (ignored
            when ``spec`` is given); see :func:`world_spec`.
        seed: World seed.
        spec: Explicit sizes instead of the preset's.
        root: Folder to use instead of ``cache_dir()/synthetic/<spec key>``.
        workers: Worker processes for generation.

    Returns:
        The cached or freshly generated :class:`World` (all :data:`DATASETS`).
    """
    spec = spec or world_spec(preset, seed)
    folder = Path(root) if root is not None else ArtifactStore.at(WORLD_ROOT).folder(spec.key())

    def finished(path: Path) -> bool:
        world, added = load_world(path), {"finediving_test_dives": 0}  # worlds written before it existed: 0
        return (world is not None and set(world.manifest["datasets"]) == set(DATASETS)
                and without_added(world.manifest.get("spec", {}), added) == without_added(asdict(spec), added))

    def generate(_resume: bool) -> World:
        replace_folder(folder, lambda tmp: generate_world(tmp, spec, workers=workers))
        return load_world(folder)

    # replaced whole (replace_folder), so no lock: a reader sees the old world or the new one
    return ArtifactStore(folder.parent).load_or_run(folder, finished=finished, load=load_world, run=generate, lock=False)
