"""Reading ablation runs as numbers: per-seed values, summaries per cell, Fig. 5's cells and verdicts
computed from them, our numbers next to the paper's, cost tables, the metrics notebook 07 writes, and
the finished runs collected from a study's folder.

Values are Spearman's rho (0-1; tables print rho x 100 like the paper). One *cell* is a (label,
task) pair; a *seed value* is the test rho of one seed, for JIGSAWS the arithmetic mean over the
folds run (as published per task). The paper's numbers come from :mod:`pecop_lib.paper`: Fig. 5
draws its bars without printing them, but its Dom-G, HPT and PECoP cells (CoRe on the I3D) are the
``CoRe``, ``CoRe + HPT`` and ``CoRe + PECoP`` rows of Tables 1 and 4; Table 5 (pretexts, JIGSAWS) and
Table 6 (R3D-18, PD4T) are compared cell by cell; Table 2 (costs) as ratios of PECoP to HPT.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from pecop_lib.atomic import read_json
from pecop_lib.eval import fisher_z_mean, seed_summary
from pecop_lib.finetune import FinetuneResult, Setting
from pecop_lib.finetune.report import official_protocol
from pecop_lib.finetune.runs import RESULT_FILE, result_from_json
from pecop_lib.paper import paper_table, table2_beside_paper
from pecop_lib.studies.plans import FIG5_TARGETS, AblationResult, AblationRun

PAPER_ROWS: dict[str, dict[str, str]] = {
    "fig5": {"Dom-G": "CoRe", "HPT": "CoRe + HPT", "PECoP": "CoRe + PECoP"},
    "table5": {"VSPP": "VSPP", "VideoPace": "VideoPace", "RSPNet": "RSPNet"},
    "table6": {"Dom-G": "CoRe", "PECoP": "CoRe + PECoP"},
}
"""Our label -> the paper's row, per study (CoRe as the head)."""

FIG5_PAPER_ORDER: tuple[str, ...] = ("Dom-G", "Dom-S", "HPT+BN", "PECoP")
"""The four strategies the paper's Fig. 5 draws (HPT is ours in addition)."""

JIGSAWS_COLUMNS = ("S", "NP", "KT")
PD4T_COLUMNS = ("Gait", "Finger tapping", "Hand movement", "Leg agility")


# ----------------------------------------------------------------------------- values and summaries
def seed_values(results: Iterable[AblationResult], protocol: str = "official", metric: str = "final") -> pd.DataFrame:
    """One row per (study, label, task, seed): the test rho, averaged over the JIGSAWS folds run.

    ``metric``: ``final`` or ``execution`` (diving tasks, :meth:`AblationResult.rho`).

    Returns:
        Columns ``study, label, task, seed, rho, folds, diverged`` (``rho`` nan when every fold of
        that seed diverged or predicted a constant).
    """
    rows = [{"study": r.run.study, "label": r.run.label, "task": r.run.task, "seed": r.run.seed,
             "fold": r.run.setting.fold, "rho": r.rho(protocol, metric), "diverged": r.error is not None}
            for r in results]
    if not rows:
        return pd.DataFrame(columns=["study", "label", "task", "seed", "rho", "folds", "diverged"])
    frame = pd.DataFrame(rows)
    keys = ["study", "label", "task", "seed"]
    grouped = frame.groupby(keys, sort=False)
    return grouped.agg(rho=("rho", "mean"), folds=("fold", "size"), diverged=("diverged", "sum")).reset_index()


def summarize(values: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation and count over seeds of every (study, label, task) cell of :func:`seed_values`.

    Seeds whose value is nan (diverged or constant predictions) are left out of the mean and counted
    in ``missing``.

    Returns:
        Columns ``study, label, task, mean, std, n, ci_low, ci_high, missing, values`` (``ci_*``: the
        95 % t-interval of the mean over seeds, nan with fewer than two seeds).
    """
    columns = ["study", "label", "task", "mean", "std", "n", "ci_low", "ci_high", "missing", "values"]
    rows = []
    nan = float("nan")
    for (study, label, task), group in values.groupby(["study", "label", "task"], sort=False):
        finite = group["rho"][np.isfinite(group["rho"])].tolist()
        stats = seed_summary(finite) if finite else {"mean": nan, "std": nan, "n": 0, "ci_low": nan, "ci_high": nan}
        rows.append({"study": study, "label": label, "task": task, "mean": stats["mean"], "std": stats["std"],
                     "n": int(stats["n"]), "ci_low": stats["ci_low"], "ci_high": stats["ci_high"],
                     "missing": len(group) - len(finite), "values": group["rho"].tolist()})
    return pd.DataFrame(rows, columns=columns)


FIG5_COMPARISONS: tuple[str, ...] = ("Dom-G", "HPT+BN", "HPT")
"""What PECoP is compared with in the Fig. 5 verdicts (the issue's three questions)."""


def fig5_cells(summary: pd.DataFrame) -> dict[str, dict[str, dict[str, Any]]]:
    """Fig. 5 cells for ``metrics.json``: ``{task: {strategy: {"mean", "ci_low", "ci_high", "n", "values"}}}``."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for _, cell in summary[summary["study"] == "fig5"].iterrows():
        out.setdefault(cell["task"], {})[cell["label"]] = {
            "mean": cell["mean"], "ci_low": cell["ci_low"], "ci_high": cell["ci_high"], "n": int(cell["n"]),
            "values": list(cell["values"])}
    return out


def compare_cells(a: Sequence[float], b: Sequence[float], *, names: tuple[str, str] = ("PECoP", "other"),
                  confidence: float = 0.95) -> str:
    """A verdict in words on two cells' seed values, computed from the numbers (Welch's t-interval).

    Returns:
        ``"<a> above <b>: +d (95 % CI [lo, hi], n = .. and ..)"`` when the interval of the
        difference of means lies above 0, ``"below"`` when below, ``"no clear difference"`` when it
        contains 0, and ``"not measured"`` with fewer than two finite seeds on either side.
    """
    x = np.asarray([v for v in a if np.isfinite(v)], dtype=np.float64)
    y = np.asarray([v for v in b if np.isfinite(v)], dtype=np.float64)
    if x.size < 2 or y.size < 2:
        return f"not measured ({names[0]} {x.size} finite seed(s), {names[1]} {y.size})"
    diff = float(x.mean() - y.mean())
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se = float(np.sqrt(vx + vy))
    if se == 0:
        low = high = diff
    else:
        dof = (vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1))
        half = float(stats.t.ppf(0.5 + confidence / 2, dof)) * se
        low, high = diff - half, diff + half
    word = (f"{names[0]} above {names[1]}" if low > 0 else f"{names[0]} below {names[1]}" if high < 0 else
            f"no clear difference between {names[0]} and {names[1]}")
    return (f"{word}: {diff:+.3f} rho ({100 * confidence:.0f} % CI [{low:+.3f}, {high:+.3f}], "
            f"n = {x.size} and {y.size} seeds)")


def fig5_verdicts(summary: pd.DataFrame) -> dict[str, dict[str, str]]:
    """Per Fig. 5 task, PECoP against each of :data:`FIG5_COMPARISONS`, in words (:func:`compare_cells`)."""
    part = summary[summary["study"] == "fig5"]
    out: dict[str, dict[str, str]] = {}
    for task in dict.fromkeys(part["task"]):
        cells = {row["label"]: row["values"] for _, row in part[part["task"] == task].iterrows()}
        out[task] = {f"PECoP vs {other}": compare_cells(cells.get("PECoP", []), cells.get(other, []),
                                                        names=("PECoP", other))
                     for other in FIG5_COMPARISONS}
    return out


def paper_value(study: str, label: str, task: str, *, backbone: str = "i3d") -> float | None:
    """The paper's rho (0-1) of a cell, or ``None`` where the paper prints none.

    Args:
        study: ``fig5`` (Tables 1 and 4), ``table5`` or ``table6``.
        label: Our label (``"PECoP"``, ``"VideoPace"``, ...).
        task: Fig. 5 task name.
        backbone: ``i3d`` or ``r3d18`` (``table6`` is R3D-18).
    """
    row = PAPER_ROWS.get(study, {}).get(label)
    if row is None:
        return None
    if study == "table5":
        key = "table5"
    elif study == "table6" or backbone == "r3d18":
        key = "table6"
    else:
        key = "table4" if task in PD4T_COLUMNS else "table1"
    table = paper_table(key)
    if task not in table.columns:
        return None
    try:
        value = table.row(row)[task]
    except KeyError:
        return None
    return None if value is None else float(value) / 100.0


def _average(tasks: Sequence[str], means: Sequence[float]) -> float:
    """The paper's average over tasks: Fisher-z for JIGSAWS tasks, arithmetic otherwise (nan if undefined)."""
    m = np.asarray(means, dtype=np.float64)
    if not len(m) or not np.isfinite(m).all():
        return float("nan")
    if set(tasks) <= set(JIGSAWS_COLUMNS):
        return fisher_z_mean(m) if np.all(np.abs(m) < 1) else float("nan")
    return float(m.mean())


def comparison_table(summary: pd.DataFrame, study: str, *, order: Sequence[str] | None = None) -> pd.DataFrame:
    """Our cells next to the paper's, rho x 100, one row per (label, task), plus an ``Avg`` per label.

    ``Avg`` averages the tasks measured (Fisher-z over JIGSAWS tasks, arithmetic otherwise) for us
    and for the paper alike, so both columns cover the same tasks.

    Returns:
        Columns ``label, task, ours, std, seeds, paper, ours - paper``.
    """
    part = summary[summary["study"] == study]
    labels = list(order) if order is not None else list(dict.fromkeys(part["label"]))
    tasks = list(dict.fromkeys(part["task"]))
    rows = []
    for label in labels:
        cells = part[part["label"] == label].set_index("task")
        if cells.empty:
            continue
        ours, theirs = [], []
        for task in tasks:
            if task not in cells.index:
                continue
            cell = cells.loc[task]
            paper = paper_value(study, label, task)
            ours.append(cell["mean"])
            theirs.append(np.nan if paper is None else paper)
            rows.append({"label": label, "task": task, "ours": 100 * cell["mean"], "std": 100 * cell["std"],
                         "seeds": f"{cell['n']}" + (f" (+{cell['missing']} nan)" if cell["missing"] else ""),
                         "paper": np.nan if paper is None else 100 * paper})
        if len(ours) > 1:
            rows.append({"label": label, "task": "Avg", "ours": 100 * _average(tasks, ours), "std": np.nan,
                         "seeds": "", "paper": 100 * _average(tasks, theirs)})
    table = pd.DataFrame(rows, columns=["label", "task", "ours", "std", "seeds", "paper"])
    table["ours - paper"] = table["ours"] - table["paper"]
    return table


# ---------------------------------------------------------------------------------- Table 2, switches
def cost_table(results: Iterable[AblationResult], *, task: str | None = None) -> pd.DataFrame:
    """Table 2 measured: what each strategy's pretraining cost on one task, next to the paper.

    Args:
        results: Runs (the first finished run per strategy label of ``task`` is used).
        task: The task; default: the first task of ``results``.

    Returns:
        One row per strategy: ``strategy, trainable_params, epochs, seconds, seconds_per_epoch,
        clips_per_s, stored_bytes, stored_MB, peak_memory_GB, device_name`` and ``paper_*`` columns for HPT and PECoP.
    """
    chosen: dict[str, dict[str, Any]] = {}
    for r in results:
        task = task or r.run.task
        if r.run.task == task and r.pretrain and r.run.label not in chosen:
            chosen[r.run.label] = r.pretrain
    return table2_beside_paper(
        {"strategy": label, "trainable_params": cost["trainable_params"], "epochs": cost["epochs"],
         "seconds": cost["seconds"], "seconds_per_epoch": cost["seconds_per_epoch"], "clips_per_s": cost["clips_per_s"],
         "stored_bytes": cost["stored_bytes"],
         "peak_memory_GB": None if cost["peak_memory_bytes"] is None else cost["peak_memory_bytes"] / 1e9,
         "device_name": cost["device_name"]}
        for label, cost in chosen.items()
    )


def cost_ratios(table: pd.DataFrame) -> dict[str, float]:
    """HPT over PECoP in trainable parameters and stored bytes, from :func:`cost_table` (nan if one is missing)."""
    rows = table.set_index("strategy") if len(table) else table
    if not {"HPT", "PECoP"} <= set(rows.index):
        return {"trainable_params": float("nan"), "stored_bytes": float("nan")}
    return {key: float(rows.loc["HPT", key] / rows.loc["PECoP", key]) for key in ("trainable_params", "stored_bytes")}


def cost_text(table: pd.DataFrame) -> str:
    """Markdown: PECoP's savings over HPT, ours against the paper's, from :func:`cost_table`."""
    rows = table.set_index("strategy")
    if not {"HPT", "PECoP"} <= set(rows.index):
        return "Table 2 needs both an HPT and a PECoP run of the same task; one of them is missing."
    hpt, pecop = rows.loc["HPT"], rows.loc["PECoP"]
    lines = []
    for name, ours_key, paper_key, unit in (("trainable parameters", "trainable_params", "paper_trainable_params", ""),
                                            ("stored size", "stored_MB", "paper_stored_MB", " MB")):
        ours = hpt[ours_key] / pecop[ours_key]
        paper = hpt[paper_key] / pecop[paper_key]
        verdict = "agrees with" if abs(np.log(ours / paper)) < np.log(2) else "differs from"
        lines.append(f"- {name}: HPT {hpt[ours_key]:,.4g}{unit} vs PECoP {pecop[ours_key]:,.4g}{unit}, "
                     f"**{ours:.1f}x** less for PECoP; the paper's ~{hpt[paper_key]:,.4g}{unit} vs "
                     f"~{pecop[paper_key]:,.4g}{unit} is {paper:.1f}x: ours {verdict} the paper (within a factor 2). "
                     "Counts and sizes depend on the architecture only, not on the data.")
    lines.append(f"- epochs: HPT {hpt['epochs']:.0f}, PECoP {pecop['epochs']:.0f} here (the presets' "
                 f"`pretrain_full_epochs` and `pretrain_epochs`); the paper: {hpt['paper_epochs']:.0f} and "
                 f"{pecop['paper_epochs']:.0f}"
                 + (": same." if (hpt["epochs"], pecop["epochs"]) == (hpt["paper_epochs"], pecop["paper_epochs"])
                    else ": a configuration choice, not a measurement."))
    lines.append(f"- time per epoch on {pecop['device_name']}: HPT {hpt['seconds_per_epoch']:.2f} s, PECoP "
                 f"{pecop['seconds_per_epoch']:.2f} s ({hpt['seconds_per_epoch'] / pecop['seconds_per_epoch']:.2f}x); "
                 "PECoP still runs the whole backbone forward and backward to reach the adapters, so the saving is "
                 "in storage and optimiser state more than in time. The paper prints no time.")
    return "\n".join(lines)


# --------------------------------------------------------------------------------- predictions (08)
def reported_protocol(result: FinetuneResult, protocol: str) -> str:
    """``official`` -> the result's official protocol (``official`` or ``official_last10``); else as given."""
    return official_protocol(result) if protocol == "official" else protocol


def results_metrics(results: Sequence[AblationResult]) -> list[dict[str, Any]]:
    """Per run, what ``metrics.json`` keeps: the run, both protocols' rho, times, error."""
    return [{"study": r.run.study, "label": r.run.label, "task": r.run.task, "setting": r.run.setting.label,
             "seed": r.run.seed, "backbone": r.run.backbone, "official_rho": r.rho("official"),
             "honest_rho": r.rho("honest"), "finetune_seconds": None if r.result is None else r.result.seconds,
             "pretrain_seconds": r.pretrain.get("seconds"), "cached": r.cached, "error": r.error}
            for r in results]


def summary_metrics(summary: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """``{study: {"label | task": {"mean", "std", "n", "values"}}}`` for ``metrics.json``."""
    out: dict[str, dict[str, Any]] = {}
    for _, cell in summary.iterrows():
        out.setdefault(cell["study"], {})[f"{cell['label']} | {cell['task']}"] = {
            "mean": cell["mean"], "std": cell["std"], "n": int(cell["n"]), "values": list(cell["values"])}
    return out


# ------------------------------------------------------------------- results of notebooks 04-06
def task_name(setting: Setting) -> str:
    """The Fig. 5 / table column name of a setting's task (``"S"``, ``"Gait"``, ``"MTL-AQA"``), else the dataset."""
    for name, (dataset, task) in FIG5_TARGETS.items():
        if (dataset, task) == (setting.dataset, setting.task):
            return name
    return setting.dataset


def collect_results(folder: str | os.PathLike[str], study: str) -> list[AblationResult]:
    """Every finished fine-tuning run (``result.json``) under ``folder``, as ablation results.

    Notebooks 04-06 keep their runs under ``<OUT_DIR>/runs``; notebook 08 reads them when it runs
    after them in the same runner folder. The label is the run's backbone label (``Dom-G``, ``PECoP``).

    Raises:
        ValueError: If a ``result.json`` is not a fine-tuning result, or is corrupt (``CorruptFileError``), naming the file.
    """
    out = []
    for path in sorted(Path(folder).rglob(RESULT_FILE)):
        data = read_json(path, fix=f"delete {path.parent} and run the notebook that made it again")
        try:
            result = result_from_json(data)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
        run = AblationRun(study, result.backbone_label, task_name(result.setting), result.setting,
                          int(data["request"]["seed"]))
        out.append(AblationResult(run, result, {}, path.parent, cached=True))
    return out
