"""The clinical tasks of the synthetic world: the JIGSAWS- and PD4T-format generators.

See :mod:`~pecop_lib.data.synthetic.world` for the whole world; the renderers are
:mod:`~pecop_lib.data.synthetic.surgery` and :mod:`~pecop_lib.data.synthetic.motor`. Both write
each video's known defects into the latents (:mod:`~pecop_lib.data.synthetic.defects`): the frame
indices of the renderers are the positions of the written frame folders and mp4 files.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pecop_lib.atomic import atomic_write_json, atomic_write_text
from pecop_lib.data.safe_pickle import dump_pickle
from pecop_lib.data.synthetic import motor, surgery
from pecop_lib.data.synthetic.common import LATENTS_FILE
from pecop_lib.data.synthetic.common import parallel_map as _map
from pecop_lib.data.synthetic.common import video_rng as _rng
from pecop_lib.data.video import write_frame_folder, write_mp4

if TYPE_CHECKING:
    from pecop_lib.data.synthetic.world import WorldSpec


# ---------------------------------------------------------------- JIGSAWS
def _jigsaws_trial(
    spec: WorldSpec, root: str, task_index: int, subject_index: int, trial: int, skill: float
) -> tuple:
    task = surgery.TASKS[task_index]
    rng = _rng(spec, "JIGSAWS", task_index, subject_index, trial)
    name = f"{task}_{surgery.SUBJECTS[subject_index]}{trial:03d}"
    trial_skill = float(np.clip(skill + 0.04 * trial + rng.normal(0, 0.08), 0, 1))
    frames, latents = surgery.render_trial(rng, task, spec.size, trial_skill)
    write_frame_folder(frames, Path(root) / "frames" / f"{name}_capture1", name_format="{:05d}.jpg")
    return name, latents


def generate_jigsaws(spec: WorldSpec, root: Path, workers: int = 0) -> None:
    """Write the JIGSAWS-format tasks (label.pkl, 4 random folds per task, meta files, frames)."""
    skills = _rng(spec, "JIGSAWS", 10**6).permutation(np.linspace(0.1, 0.9, len(surgery.SUBJECTS)))
    items = [(spec, str(root), t, s, trial, float(skills[s]))
             for t in range(len(surgery.TASKS)) for s in range(len(surgery.SUBJECTS))
             for trial in range(1, spec.jigsaws_trials + 1)]
    results = _map(_jigsaws_trial, items, workers)
    labels = {name: lat["subscores"] for name, lat in results}
    latents = {name: lat for name, lat in results}
    splits = {}
    for t, task in enumerate(surgery.TASKS):
        names = sorted(n for n in labels if n.startswith(task + "_"))
        order = _rng(spec, "JIGSAWS", 10**6 + t).permutation(len(names))
        splits[task] = [[names[i] for i in chunk] for chunk in np.array_split(order, 4)]
        level = {n: surgery.skill_level(float(skills[surgery.SUBJECTS.index(n.split("_")[-1][0])]))
                 for n in names}
        lines = [f"{n}\t\t{level[n]}\t\t{sum(labels[n])}\t\t" + "\t\t".join(str(s) for s in labels[n])
                 for n in names]
        atomic_write_text(root / task / f"meta_file_{task}.txt", "\n".join(lines) + "\n")
    dump_pickle(labels, root / "info" / "label.pkl")
    dump_pickle(splits, root / "info" / "splits.pkl")
    atomic_write_json(root / LATENTS_FILE, latents)


# ---------------------------------------------------------------- PD4T
PD4T_SUBJECTS = tuple(f"{i:03d}" for i in range(1, 31))
PD4T_TEST_SUBJECTS = 8


def _pd4t_video(spec: WorldSpec, root: str, task_index: int, index: int, subject: str, u: float) -> tuple:
    task = motor.TASKS[task_index]
    rng = _rng(spec, "PD4T", task_index, index)
    prior = np.cumsum(motor.SEVERITY_PRIOR[task])
    severity = int(np.searchsorted(prior, np.clip(u + rng.normal(0, 0.12), 0, 0.999), side="right"))
    side = "l" if index % 2 else "r"
    frames, latents = motor.render_task(rng, task, spec.size, severity, side)
    visit = f"{10 + index % 20:02d}-{index:06d}"
    stem = visit if task == "Gait" else f"{visit}_{side}"
    write_mp4(frames, Path(root) / "Videos" / task / subject / f"{stem}.mp4", fps=motor.FPS)
    return f"{stem}_{subject}", subject, len(frames), latents


def generate_pd4t(spec: WorldSpec, root: Path, workers: int = 0) -> None:
    """Write the PD4T-format tasks (header-less CSVs, subject-disjoint 22/8 split, mp4 videos)."""
    rng = _rng(spec, "PD4T", 10**6)
    subject_u = dict(zip(PD4T_SUBJECTS, rng.random(len(PD4T_SUBJECTS))))
    used = PD4T_SUBJECTS[: min(len(PD4T_SUBJECTS), spec.aqa_videos)]
    n_test = max(1, round(PD4T_TEST_SUBJECTS * len(used) / len(PD4T_SUBJECTS)))  # 8 of 30, as in PD4T
    test_subjects = set(rng.choice(used, n_test, replace=False).tolist())
    items = [(spec, str(root), t, i, PD4T_SUBJECTS[i % len(PD4T_SUBJECTS)],
              float(subject_u[PD4T_SUBJECTS[i % len(PD4T_SUBJECTS)]]))
             for t in range(len(motor.TASKS)) for i in range(spec.aqa_videos)]
    results = _map(_pd4t_video, items, workers)
    latents = {}
    for t, task in enumerate(motor.TASKS):
        rows = results[t * spec.aqa_videos : (t + 1) * spec.aqa_videos]
        for split, keep in (("train", False), ("test", True)):
            lines = [f"{vid},{n},{lat['score']}" for vid, subj, n, lat in rows
                     if (subj in test_subjects) == keep]
            atomic_write_text(root / "Annotations" / task / f"{split}.csv", "\n".join(lines) + "\n")
        latents.update({f"{task}/{vid}": {**lat, "task": task} for vid, _, _, lat in rows})
    atomic_write_json(root / LATENTS_FILE, latents)
