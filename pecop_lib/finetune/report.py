"""Reporting fine-tuning results: JIGSAWS fold aggregation, multi-seed summaries, and a table of our
numbers (both protocols, with intervals) next to the paper's for the same setting.

The paper's numbers come from :mod:`pecop_lib.paper` (rho x 100 there; rho here). "Without PECoP"
is the head on the domain-general backbone (the paper's plain USDL / MUSDL / CoRe / TSA rows),
"with PECoP" the same head on the PECoP-adapted backbone (the "+ PECoP" rows).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pecop_lib.data.registry import dataset_record
from pecop_lib.eval import fisher_z_mean, seed_summary, spearman
from pecop_lib.finetune.data import open_finetune_data
from pecop_lib.finetune.recipes import Setting
from pecop_lib.finetune.results import FinetuneResult
from pecop_lib.heads import head_kind
from pecop_lib.paper import paper_table

JIGSAWS_COLUMNS: dict[str, str] = {"Suturing": "S", "Needle_Passing": "NP", "Knot_Tying": "KT"}
"""JIGSAWS task -> the paper's column."""
_PAPER_TABLES: dict[str, tuple[str, str | None]] = {
    "MTL-AQA": ("table1", None), "JIGSAWS": ("table1", None), "FineDiving": ("table3", None), "PD4T": ("table4", "table6"),
}  # fmt: skip
"""Dataset -> the paper's table of its results with I3D, and with R3D-18 (``None``: not in the paper)."""
_TASK_COLUMNS: dict[str, dict[str, str]] = {"JIGSAWS": JIGSAWS_COLUMNS}
"""Multi-task datasets whose paper columns are not the task names."""


def paper_reference(head: str, dataset: str, task: str | None = None, *, pecop: bool, backbone: str = "i3d") -> float | None:
    """The paper's Spearman rho (0-1) for a head on a dataset/task, with or without PECoP.

    Args:
        head: ``usdl``, ``musdl``, ``core`` or ``tsa``.
        dataset: ``MTL-AQA``, ``JIGSAWS``, ``FineDiving`` or ``PD4T``.
        task: JIGSAWS / PD4T task; ``None`` gives the dataset's average column.
        pecop: The "+ PECoP" row instead of the plain head's row.
        backbone: ``i3d``, or ``r3d18`` (PD4T CoRe only, Table 6).

    Returns:
        rho, or ``None`` where the paper has no such cell (e.g. USDL + PECoP on MTL-AQA).
    """
    name = head_kind(head).display + (" + PECoP" if pecop else "")
    if dataset not in _PAPER_TABLES:
        raise ValueError(f"unknown dataset {dataset!r}")
    key = _PAPER_TABLES[dataset][0 if backbone == "i3d" else 1]
    if key is None:
        return None
    if not dataset_record(dataset).tasks:
        column = dataset
    elif dataset in _TASK_COLUMNS:
        column = _TASK_COLUMNS[dataset].get(task or "", "Avg")
    else:
        column = task or "Avg"
    try:
        value = paper_table(key).row(name)[column]
    except KeyError:
        return None
    return None if value is None else float(value) / 100.0


def _rho(result: FinetuneResult, protocol: str) -> float:
    rep = result.reported.get(protocol)
    return float("nan") if rep is None else rep.rho


def official_protocol(result: FinetuneResult) -> str:
    """The official protocol name a result carries (``official`` or ``official_last10``)."""
    return next(p for p in result.reported if p.startswith("official"))


def aggregate_folds(results: Sequence[FinetuneResult]) -> dict[str, dict[str, float]]:
    """JIGSAWS as published: per task the arithmetic mean of the fold rhos, across tasks a Fisher-z mean.

    Args:
        results: Fold runs of one head and backbone (any tasks).

    Returns:
        ``{"official": {task: rho, ..., "avg": rho}, "honest": {...}}`` (``avg`` only with every
        task mean strictly inside (-1, 1); ``nan`` folds make their task ``nan``).
    """
    out: dict[str, dict[str, float]] = {}
    for protocol in ("official", "honest"):
        per_task: dict[str, list[float]] = {}
        for r in results:
            name = official_protocol(r) if protocol == "official" else protocol
            per_task.setdefault(r.setting.task or "", []).append(_rho(r, name))
        means = {task: float(np.mean(v)) for task, v in per_task.items()}
        finite = [m for m in means.values() if np.isfinite(m) and abs(m) < 1]
        avg = fisher_z_mean(finite) if len(finite) == len(means) and means else float("nan")
        out[protocol] = {**means, "avg": avg}
    return out


def summarize_seeds(results: Sequence[FinetuneResult]) -> dict[str, dict[str, float]]:
    """Mean, std and t-interval of each protocol's rho over runs that differ only in the seed.

    Raises:
        ValueError: If the runs are not of one setting.
    """
    settings = {r.setting for r in results}
    if len(settings) != 1:
        raise ValueError(f"summarize_seeds needs runs of one setting, got {sorted(s.label for s in settings)}")
    protocols = list(results[0].reported)
    return {p: seed_summary([_rho(r, p) for r in results]) for p in protocols}


def _fmt(value: float | None, ci: tuple[float | None, float | None] | None = None) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    text = f"{100 * value:.2f}"
    if ci is not None and ci[0] is not None and ci[1] is not None and np.isfinite(ci[0]) and np.isfinite(ci[1]):
        text += f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    return text


def comparison_rows(runs: Mapping[str, Sequence[FinetuneResult]], *, pecop_labels: Sequence[str] = ("PECoP",),
                    backbone: str = "i3d") -> list[dict[str, Any]]:
    """Rows of "ours vs paper": one per (head, dataset, task, backbone), JIGSAWS folds aggregated.

    Values are rho x 100 as text with the 95 % bootstrap interval (single runs) and ``n/a`` where
    undefined; the paper column is the same setting's published number; ``difficulty only`` (diving)
    is :func:`~pecop_lib.finetune.difficulty_baseline`, the rho a head gets without seeing the video.

    Args:
        runs: ``{backbone label: results}``, e.g. ``{"Dom-G": [...], "PECoP": [...]}``.
        pecop_labels: Labels whose runs compare to the paper's "+ PECoP" rows.
        backbone: Backbone architecture (selects Table 4 or 6 for PD4T).

    Returns:
        Dicts with keys ``head, dataset, task, backbone, official, protocol, honest, paper`` (and
        ``difficulty only`` for non-JIGSAWS rows).
    """
    rows: list[dict[str, Any]] = []
    for label, results in runs.items():
        pecop = label in pecop_labels
        groups: dict[tuple[str, str], list[FinetuneResult]] = {}
        for r in results:
            groups.setdefault((r.setting.head, r.setting.dataset), []).append(r)
        for (head, dataset), members in groups.items():
            if dataset_record(dataset).folds:
                agg = aggregate_folds(members)
                for task in [*dict.fromkeys(r.setting.task for r in members), "avg"]:
                    key = task or ""
                    rows.append({"head": head_kind(head).display, "dataset": dataset, "task": "Avg (Fisher-z)" if task == "avg"
                                 else f"{task} ({sum(r.setting.task == task for r in members)} folds)",
                                 "backbone": label, "official": _fmt(agg["official"].get(key)),
                                 "protocol": official_protocol(members[0]), "honest": _fmt(agg["honest"].get(key)),
                                 "paper": _fmt(paper_reference(head, dataset, None if task == "avg" else task,
                                                               pecop=pecop, backbone=backbone))})
                continue
            for r in members:
                proto = official_protocol(r)
                off, hon = r.reported[proto], r.reported.get("honest")
                rows.append({
                    "head": head_kind(head).display, "dataset": dataset, "task": r.setting.task or "", "backbone": label,
                    "official": _fmt(off.rho, None if off.ci is None else (off.ci.low, off.ci.high)),
                    "protocol": proto,
                    "honest": "n/a" if hon is None else _fmt(hon.rho, None if hon.ci is None else (hon.ci.low, hon.ci.high)),
                    "paper": _fmt(paper_reference(head, dataset, r.setting.task, pecop=pecop, backbone=backbone)),
                    "difficulty only": _fmt(r.difficulty_baseline),
                })
    return rows


def comparison_table(runs: Mapping[str, Sequence[FinetuneResult]], **kwargs: Any) -> pandas.DataFrame:  # noqa: F821
    """:func:`comparison_rows` as a :class:`pandas.DataFrame` (rho x 100)."""
    import pandas as pd

    return pd.DataFrame(comparison_rows(runs, **kwargs))


def run_label(label: str, result: FinetuneResult) -> str:
    """``"<backbone label> <setting label>"``, e.g. ``"PECoP musdl/MTL-AQA"``."""
    return f"{label} {result.setting.label}"


def epoch_curves(runs: Mapping[str, Sequence[FinetuneResult]]) -> dict[str, dict[str, Any]]:
    """Per run: test and validation rho per epoch and each protocol's epoch, for
    :func:`pecop_lib.viz.finetune.plot_epoch_curves`."""
    return {run_label(label, r): {"test": r.curve("test_rho"), "val": r.curve("val_rho") if len(r.val_true) else [],
                                  "selected": {p: rep.epoch for p, rep in r.reported.items()}}
            for label, results in runs.items() for r in results}


def test_scatter(runs: Mapping[str, Sequence[FinetuneResult]], protocol: str = "official") -> dict[str, tuple]:
    """Per run: (test predictions at the protocol's epoch, true test scores), for
    :func:`pecop_lib.viz.finetune.plot_pred_vs_true` (averaged protocols: the last epoch)."""
    return {run_label(label, r): (r.predictions(official_protocol(r) if protocol == "official" else protocol),
                                  r.test_true)
            for label, results in runs.items() for r in results}


def run_metrics(runs: Mapping[str, Sequence[FinetuneResult]]) -> dict[str, Any]:
    """Everything a notebook's ``metrics.json`` keeps: each run's summary, JIGSAWS fold aggregates."""
    out: dict[str, Any] = {}
    for label, results in runs.items():
        for r in results:
            out[run_label(label, r)] = r.summary()
        by_head: dict[tuple[str, str], list[FinetuneResult]] = {}
        for r in results:
            if dataset_record(r.setting.dataset).folds:
                by_head.setdefault((r.setting.head, r.setting.dataset), []).append(r)
        for (head, dataset), members in by_head.items():
            out[f"{label} {head}/{dataset} aggregate"] = aggregate_folds(members)
    return out


NO_VIDEO_FEATURES: dict[str, Callable[[Any], float | None]] = {
    "difficulty": lambda record: record.difficulty,
    "num_frames": lambda record: record.extras.get("num_frames"),
}
"""Annotation fields a score could be guessed from without looking at the video (diving: the
degree of difficulty; PD4T: the declared frame count). Nothing derived from the score itself."""


def no_video_baseline(train: Sequence[Any], test: Sequence[Any]) -> tuple[str, float]:
    """The best test Spearman reachable without the video: one annotation feature, or the training mean.

    Each feature of :data:`NO_VIDEO_FEATURES` that every record has is used as a ranking; its
    direction is chosen on the training split (the sign of its training rho), then its test rho is
    measured. The training mean predicts a constant (rho 0, the floor).

    Args:
        train: Training records (:class:`~pecop_lib.data.dataset.AQARecord`).
        test: Test records.

    Returns:
        ``(description, rho)`` of the best baseline.
    """
    best = ("training mean (a constant: rho 0)", 0.0)
    train_scores = [r.score for r in train]
    test_scores = [r.score for r in test]
    for name, get in NO_VIDEO_FEATURES.items():
        train_values, test_values = [get(r) for r in train], [get(r) for r in test]
        if any(v is None for v in train_values + test_values):
            continue
        direction = spearman(train_values, train_scores)
        if not np.isfinite(direction) or direction == 0:
            continue
        rho = float(np.sign(direction) * spearman(test_values, test_scores))
        if np.isfinite(rho) and rho > best[1]:
            best = (f"{name} alone", rho)
    return best


def beats_baseline(runs: Mapping[str, Sequence[FinetuneResult]], baselines: Mapping[str, tuple[str, float]], *,
                   protocol: str = "honest") -> dict[str, dict[str, Any]]:
    """Per dataset, the run whose test rho's bootstrap interval lies highest, against the no-video baseline.

    Args:
        runs: ``{backbone label: results}`` (e.g. from :func:`~pecop_lib.finetune.runs.run_settings`).
        baselines: ``{dataset: (description, rho)}`` (:func:`no_video_baseline` of its splits).
        protocol: Whose interval counts (``honest``: the epoch chosen on validation; the held-out claim).

    Returns:
        ``{dataset: {"head", "backbone", "rho", "ci_low", "ci_high", "baseline", "baseline_rho", "margin"}}``
        with ``margin = ci_low - baseline_rho`` (> 0: the whole 95 % interval is above the baseline).
    """
    out: dict[str, dict[str, Any]] = {}
    for label, results in runs.items():
        for r in results:
            rep = r.reported.get(protocol)
            if rep is None or rep.ci is None or not np.isfinite(rep.ci.low) or r.setting.dataset not in baselines:
                continue
            name, base = baselines[r.setting.dataset]
            entry = {"head": r.setting.kind.display, "backbone": label, "rho": float(rep.rho),
                     "ci_low": float(rep.ci.low), "ci_high": float(rep.ci.high), "baseline": name,
                     "baseline_rho": float(base), "margin": float(rep.ci.low) - float(base)}
            if r.setting.dataset not in out or entry["margin"] > out[r.setting.dataset]["margin"]:
                out[r.setting.dataset] = entry
    return out


def dataset_baselines(settings: Sequence[Setting], data_root: str | os.PathLike[str]) -> dict[str, tuple[str, float]]:
    """:func:`no_video_baseline` of each dataset's first setting (its training and test records; nothing decoded).

    Args:
        settings: The notebook's settings.
        data_root: Folder holding the datasets (``<data_root>/<dataset>``).

    Returns:
        ``{dataset: (description, rho)}``.
    """
    out: dict[str, tuple[str, float]] = {}
    for setting in settings:
        if setting.dataset not in out:
            data = open_finetune_data(Path(data_root) / setting.dataset, setting)
            out[setting.dataset] = no_video_baseline(data.train.records, data.test.records)
    return out
