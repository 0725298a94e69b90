"""Reading ablation runs: per-seed values, summaries, our numbers next to the paper's, and a plain
statement, computed from the numbers, of where they agree and why they may not.

Values are Spearman's rho (0-1; tables print rho x 100 like the paper). One *cell* is a (label,
task) pair; a *seed value* is the test rho of one seed, for JIGSAWS the arithmetic mean over the
folds run (as published per task). The paper's numbers come from :mod:`pecop_lib.paper`:

* Fig. 5 draws its bars without printing them, but its Dom-G, HPT and PECoP cells (CoRe on the I3D)
  are the ``CoRe``, ``CoRe + HPT`` and ``CoRe + PECoP`` rows of Tables 1 and 4; its text states
  orderings (:data:`FIG5_STATEMENTS`) that are checked as claims without a margin;
* Table 5 (pretexts, JIGSAWS) and Table 6 (R3D-18, PD4T) are compared cell by cell;
* Table 2 (costs) is compared as ratios of PECoP to HPT;
* the official-vs-paper switches have no published numbers: their text reports the measured effect
  against the seed spread only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from pecop_lib.atomic import read_json
from pecop_lib.data.registry import dataset_record
from pecop_lib.eval import fisher_z_mean, seed_summary
from pecop_lib.heads import head_kind
from pecop_lib.paper import paper_table
from pecop_lib.train.ablations import FIG5_TARGETS, STUDY_HEAD, SWITCHES, AblationResult, AblationRun
from pecop_lib.train.finetune import FinetuneResult, Setting, open_finetune_data
from pecop_lib.train.finetune_report import official_protocol
from pecop_lib.train.finetune_runs import RESULT_FILE, result_from_json

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


@dataclass(frozen=True)
class Statement:
    """An ordering the paper's Fig. 5 text states: ``better`` above ``worse`` on ``tasks``.

    Attributes:
        text: The statement as the paper makes it.
        better, worse: Strategy labels.
        tasks: Tasks it covers.
        quantifier: ``all`` (every task) or ``most`` ("nearly all").
    """

    text: str
    better: str
    worse: str
    tasks: tuple[str, ...]
    quantifier: str = "all"


_ALL = tuple(FIG5_TARGETS)
FIG5_STATEMENTS: tuple[Statement, ...] = (
    Statement("PECoP is the best strategy on every task", "PECoP", "Dom-G", _ALL),
    Statement("PECoP is the best strategy on every task", "PECoP", "Dom-S", _ALL),
    Statement("PECoP is the best strategy on every task", "PECoP", "HPT+BN", _ALL),
    Statement("HPT+BN is worse than Dom-G on all three JIGSAWS tasks", "Dom-G", "HPT+BN", JIGSAWS_COLUMNS),
    Statement("Dom-S is worse than Dom-G on MTL-AQA", "Dom-G", "Dom-S", ("MTL-AQA",)),
    Statement("Dom-S is better than Dom-G on nearly all PD4T tasks", "Dom-S", "Dom-G", PD4T_COLUMNS, "most"),
    Statement("Dom-S is poor on JIGSAWS", "Dom-G", "Dom-S", JIGSAWS_COLUMNS),
)
"""The orderings stated in the paper's text about Fig. 5 (``reference/paper-results.md``)."""


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


# ------------------------------------------------------------------------------------------ claims
@dataclass(frozen=True)
class Verdict:
    """One ordering claimed by the paper, checked on our runs.

    Attributes:
        source: Where the paper makes it (``"Fig. 5 text"``, ``"Table 1"``, ...).
        task: The task.
        better, worse: The paper's order (``better`` above ``worse``).
        paper_margin: The paper's difference in rho (``None``: stated, not printed).
        ours_margin: Our difference of the seed means (``better - worse``; nan if not measured).
        spread: Pooled seed standard deviation of the two cells (nan with one seed).
        statement: The paper's sentence, for Fig. 5 text claims.
    """

    source: str
    task: str
    better: str
    worse: str
    paper_margin: float | None
    ours_margin: float
    spread: float
    statement: str = ""

    @property
    def status(self) -> str:
        """``agrees`` (same order), ``tie`` (our two cells are equal), ``disagrees`` or ``not measured``."""
        if not np.isfinite(self.ours_margin):
            return "not measured"
        if abs(self.ours_margin) < 1e-9:
            return "tie"
        return "agrees" if self.ours_margin > 0 else "disagrees"

    @property
    def clear(self) -> bool:
        """Whether our difference is larger than the seed spread (``False`` when no spread is known)."""
        return bool(np.isfinite(self.spread) and np.isfinite(self.ours_margin) and abs(self.ours_margin) > self.spread)

    def describe(self) -> str:
        """One line: the order, both margins in rho x 100, and how sure ours is."""
        paper = "stated" if self.paper_margin is None else f"paper {100 * self.paper_margin:+.1f}"
        if self.status == "not measured":
            return f"{self.task}: {self.better} > {self.worse} ({paper}); not measured (a cell is missing or nan)"
        sure = ("larger than the seed spread" if self.clear else
                "within the seed spread" if np.isfinite(self.spread) else "one seed, spread unknown")
        return (f"{self.task}: {self.better} > {self.worse} ({paper}; ours {100 * self.ours_margin:+.1f}, "
                f"{sure})")


def _cell(summary: pd.DataFrame, study: str, label: str, task: str) -> tuple[float, float]:
    hit = summary[(summary["study"] == study) & (summary["label"] == label) & (summary["task"] == task)]
    if hit.empty:
        return float("nan"), float("nan")
    return float(hit["mean"].iloc[0]), float(hit["std"].iloc[0])


def _verdict(summary: pd.DataFrame, study: str, source: str, task: str, better: str, worse: str,
             paper_margin: float | None, statement: str = "") -> Verdict:
    (mb, sb), (mw, sw) = _cell(summary, study, better, task), _cell(summary, study, worse, task)
    spread = float(np.sqrt((sb**2 + sw**2) / 2)) if np.isfinite(sb) and np.isfinite(sw) else float("nan")
    return Verdict(source, task, better, worse, paper_margin, mb - mw, spread, statement)


def _table_source(study: str, task: str) -> str:
    if study == "table5":
        return "Table 5"
    if study == "table6":
        return "Table 6"
    return "Table 4" if task in PD4T_COLUMNS else "Table 1"


def check_paper(summary: pd.DataFrame, study: str) -> list[Verdict]:
    """Every ordering the paper gives for the measured tasks of a study, checked on our seed means.

    Printed tables: each pair of rows the paper prints for a measured task (its order and margin).
    ``fig5`` adds the statements of :data:`FIG5_STATEMENTS` for the measured tasks.

    Returns:
        The verdicts (``status`` ``not measured`` where one of our two cells is missing or nan).
    """
    part = summary[summary["study"] == study]
    tasks = list(dict.fromkeys(part["task"]))
    labels = list(dict.fromkeys(part["label"]))
    out = []
    for task in tasks:
        published = {label: paper_value(study, label, task) for label in labels}
        published = {k: v for k, v in published.items() if v is not None}
        names = list(published)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                if published[a] == published[b]:
                    continue
                better, worse = (a, b) if published[a] > published[b] else (b, a)
                out.append(_verdict(summary, study, _table_source(study, task), task, better, worse,
                                    published[better] - published[worse]))
    if study == "fig5":
        for statement in FIG5_STATEMENTS:
            for task in statement.tasks:
                if task in tasks:
                    out.append(_verdict(summary, study, "Fig. 5 text", task, statement.better, statement.worse,
                                        None, statement.text))
    return out


@dataclass(frozen=True)
class RunFacts:
    """What the reasons of a verdict text depend on, read from the runs and the config.

    Attributes:
        preset: The preset name.
        synthetic: Whether the data is the synthetic world.
        seeds: Fine-tuning seeds per cell.
        epochs: Fine-tuning epochs run; ``official_epochs``: the recipe's.
        folds: JIGSAWS folds run per task (``None`` without JIGSAWS tasks).
        test_videos: Median number of test videos per run.
        ci_half_width: Median half-width of a single run's 95 % bootstrap interval of rho (nan if none).
        diverged: Labels of runs that diverged.
    """

    preset: str
    synthetic: bool
    seeds: int
    epochs: int
    official_epochs: int
    folds: int | None
    test_videos: int
    ci_half_width: float
    diverged: tuple[str, ...] = ()


def run_facts(results: Sequence[AblationResult], *, preset: str, synthetic: bool) -> RunFacts:
    """Collect :class:`RunFacts` from finished runs (``results`` must hold at least one finished run)."""
    done = [r for r in results if r.result is not None]
    if not done:
        raise ValueError("run_facts needs at least one finished run (all runs diverged or none were given)")
    widths = []
    for r in done:
        rep = r.result.reported.get(official_protocol(r.result))
        if rep is not None and rep.ci is not None and np.isfinite(rep.ci.low) and np.isfinite(rep.ci.high):
            widths.append((rep.ci.high - rep.ci.low) / 2)
    jigsaws = {(r.run.task, r.run.setting.fold) for r in results if dataset_record(r.run.setting.dataset).folds}
    per_task = {}
    for task, fold in jigsaws:
        per_task.setdefault(task, set()).add(fold)
    return RunFacts(
        preset=preset, synthetic=synthetic, seeds=len({r.run.seed for r in results}),
        epochs=int(np.median([r.result.hyper["epochs"] for r in done])),
        official_epochs=int(done[0].result.setting.recipe.epochs),
        folds=min(len(f) for f in per_task.values()) if per_task else None,
        test_videos=int(np.median([len(r.result.test_true) for r in done])),
        ci_half_width=float(np.median(widths)) if widths else float("nan"),
        diverged=tuple(sorted({f"{r.run.label} ({r.run.setting.label}, seed {r.run.seed})"
                               for r in results if r.error is not None})),
    )


def reasons(facts: RunFacts, verdicts: Sequence[Verdict] = ()) -> list[str]:
    """Why our numbers may differ from the paper's, each reason chosen by a measured fact."""
    out = []
    if facts.preset == "smoke":
        out.append("This is a **smoke** run (tiny clips, one short epoch): it checks the "
                   "plumbing, and neither agreement nor disagreement below means anything.")
    if facts.synthetic:
        out.append("The tasks are **synthetic**: scores follow a few motion factors of rendered figures, and the "
                   "backbone was pretrained on a small synthetic action set instead of Kinetics-400. The domain gap "
                   "PECoP is meant to close (Kinetics to diving, surgery, clinical video) is not the gap here.")
    if facts.seeds == 1:
        out.append("Each cell has **one seed**: there is no spread to compare a difference with.")
    close = [v for v in verdicts if v.status != "not measured" and not v.clear and np.isfinite(v.spread)]
    if close:
        out.append(f"{len(close)} of the compared differences are **smaller than the seed-to-seed standard "
                   "deviation**: the runs cannot order those cells.")
    if facts.test_videos:
        width = (f"; a single run's 95 % bootstrap interval of rho is about +/-{facts.ci_half_width:.2f} wide"
                 if np.isfinite(facts.ci_half_width) else "")
        out.append(f"A test split holds about **{facts.test_videos} videos**{width}.")
    if facts.epochs < facts.official_epochs:
        out.append(f"Fine-tuning ran **{facts.epochs} epoch{'s' if facts.epochs != 1 else ''}**; the official recipe "
                   f"runs {facts.official_epochs}.")
    if facts.folds is not None and facts.folds < 4:
        out.append(f"JIGSAWS used **{facts.folds} of the 4** cross-validation folds per task.")
    if facts.diverged:
        out.append(f"{len(facts.diverged)} run(s) **diverged** (non-finite loss) and count as not measured: "
                   + "; ".join(facts.diverged) + ".")
    return out


def verdict_text(verdicts: Sequence[Verdict], facts: RunFacts, *, title: str = "") -> str:
    """Markdown: where our runs agree with the paper's orderings, where not, and why that can be.

    Every sentence about a result is computed from ``verdicts``; the reasons come from :func:`reasons`.
    """
    statuses = ("agrees", "disagrees", "tie", "not measured")
    counts = {s: sum(v.status == s for v in verdicts) for s in statuses}
    clear = {s: sum(v.status == s and v.clear for v in verdicts) for s in ("agrees", "disagrees")}
    lines = [f"**{title}**" if title else ""]
    measured = counts["agrees"] + counts["disagrees"] + counts["tie"]
    if measured:
        lines.append(f"Of {measured} orderings the paper gives for the measured tasks, our runs **agree with "
                     f"{counts['agrees']}** ({clear['agrees']} by more than the seed spread), **disagree with "
                     f"{counts['disagrees']}** ({clear['disagrees']} by more than the seed spread)"
                     f" and tie on {counts['tie']}"
                     + (f"; {counts['not measured']} could not be checked." if counts["not measured"] else "."))
    else:
        lines.append("None of the paper's orderings could be checked: no measured pair of cells.")
    for status, heading in (("agrees", "Agrees"), ("disagrees", "Disagrees"), ("tie", "Tie (our two cells are equal)"),
                            ("not measured", "Not measured")):
        chosen = [v for v in verdicts if v.status == status]
        if chosen:
            lines.append(f"\n{heading}:")
            lines.extend(f"- {v.source}: {v.describe()}" + (f" [\"{v.statement}\"]" if v.statement else "")
                         for v in chosen)
    why = reasons(facts, verdicts)
    if why:
        lines.append("\nWhy our numbers can differ from the paper's:")
        lines.extend(f"- {r}" for r in why)
    return "\n".join(line for line in lines if line is not None).strip()


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
    published = paper_table("table2")
    rows = []
    for label, cost in chosen.items():
        paper = published.row(label) if label in [row[0] for row in published.rows] else {}
        rows.append({"strategy": label, "trainable_params": cost["trainable_params"], "epochs": cost["epochs"],
                     "seconds": cost["seconds"], "seconds_per_epoch": cost["seconds_per_epoch"],
                     "clips_per_s": cost["clips_per_s"], "stored_bytes": cost["stored_bytes"],
                     "stored_MB": cost["stored_bytes"] / 1e6,
                     "peak_memory_GB": None if cost["peak_memory_bytes"] is None else cost["peak_memory_bytes"] / 1e9,
                     "device_name": cost["device_name"],
                     "paper_trainable_params": paper.get("trainable parameters"), "paper_epochs": paper.get("epochs"),
                     "paper_stored_MB": paper.get("stored size (MB)")})
    return pd.DataFrame(rows)


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


def switch_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The switch ablation: each variant's rho x 100 and its difference from ``official``.

    Returns:
        Columns ``variant, task, settings, ours, std, seeds, minus official`` (``settings``: the
        switch values that differ from the released code's).
    """
    part = summary[summary["study"] == "switches"]
    official_values = {key: value for key, value, _ in SWITCHES.values()}
    paper_values = {key: value for key, _, value in SWITCHES.values()}
    rows = []
    for _, cell in part.iterrows():
        base, _ = _cell(summary, "switches", "official", cell["task"])
        if cell["label"] == "official":
            changed = "released code: " + ", ".join(f"{k.removeprefix('pretrain_')}={v}"
                                                    for k, v in official_values.items())
        elif cell["label"] == "all paper":
            changed = "paper text: " + ", ".join(f"{k.removeprefix('pretrain_')}={v}" for k, v in paper_values.items())
        else:
            name = cell["label"].removeprefix("paper ")
            key, _, paper = SWITCHES[name]
            changed = f"{key.removeprefix('pretrain_')}={paper}"
        rows.append({"variant": cell["label"], "task": cell["task"], "settings": changed,
                     "ours": 100 * cell["mean"], "std": 100 * cell["std"],
                     "seeds": f"{cell['n']}" + (f" (+{cell['missing']} nan)" if cell["missing"] else ""),
                     "minus official": 100 * (cell["mean"] - base)})
    return pd.DataFrame(rows, columns=["variant", "task", "settings", "ours", "std", "seeds", "minus official"])


def switch_text(summary: pd.DataFrame) -> str:
    """Markdown: what each switch did to rho, against the seed spread (the paper prints no such ablation)."""
    part = summary[summary["study"] == "switches"]
    if part.empty:
        return "No switch ablation was run (`ablation_switches = \"none\"`)."
    lines = [("The paper prints no numbers for these switches: it describes the paper-text values, the released "
              "code uses the official ones. Measured here:")]
    for _, cell in part[part["label"] != "official"].iterrows():
        verdict = _verdict(summary, "switches", "switches", cell["task"], cell["label"], "official", None)
        if verdict.status == "not measured":
            lines.append(f"- {cell['label']} ({cell['task']}): not measured (diverged or constant predictions in "
                         f"{cell['missing']} seed(s)).")
            continue
        size = ("larger than the seed spread" if verdict.clear else
                "within the seed spread" if np.isfinite(verdict.spread) else "one seed, spread unknown")
        direction = "raises" if verdict.ours_margin > 0 else "lowers"
        lines.append(f"- {cell['label']} ({cell['task']}) {direction} rho by {100 * abs(verdict.ours_margin):.1f} "
                     f"points against the official settings ({size}).")
    return "\n".join(lines)


# --------------------------------------------------------------------------------- predictions (08)
def _protocol(result: FinetuneResult, protocol: str) -> str:
    """``official`` -> the result's official protocol (``official`` or ``official_last10``); else as given."""
    return official_protocol(result) if protocol == "official" else protocol


def prediction_frame(results: Iterable[AblationResult], protocol: str = "official") -> pd.DataFrame:
    """Every test prediction of finished runs, one row per video and run.

    Args:
        results: Runs.
        protocol: ``official`` (the recipe's official protocol; the last epoch for averaged
            protocols) or ``honest``.

    Returns:
        Columns ``study, label, task, head, seed, fold, video, true, pred``.
    """
    rows = []
    for r in results:
        if r.result is None:
            continue
        name = _protocol(r.result, protocol)
        pred = r.result.predictions(name)
        for video, true, p in zip(r.result.test_ids, r.result.test_true, pred, strict=True):
            rows.append({"study": r.run.study, "label": r.run.label, "task": r.run.task, "head": r.run.setting.head,
                         "seed": r.run.seed, "fold": r.run.setting.fold, "video": video, "true": float(true),
                         "pred": float(p)})
    return pd.DataFrame(rows, columns=["study", "label", "task", "head", "seed", "fold", "video", "true", "pred"])


def spread_table(frame: pd.DataFrame) -> pd.DataFrame:
    """How predicted scores spread compared with the true ones, per (task, label): std ratio, bias, rho.

    Returns:
        Columns ``task, label, videos, true_std, pred_std, std_ratio, bias, rho`` (bias: mean
        predicted minus mean true).
    """
    from pecop_lib.eval import spearman

    rows = []
    for (task, label), group in frame.groupby(["task", "label"], sort=False):
        t, p = group["true"].to_numpy(), group["pred"].to_numpy()
        rows.append({"task": task, "label": label, "videos": len(group), "true_std": float(t.std()),
                     "pred_std": float(p.std()), "std_ratio": float(p.std() / t.std()) if t.std() > 0 else np.nan,
                     "bias": float(p.mean() - t.mean()), "rho": spearman(p, t)})
    return pd.DataFrame(rows)


def distribution_of(result: AblationResult, video: str, protocol: str = "official") -> tuple[Any, Any] | None:
    """A (M)USDL run's predicted distribution of one test video and the scores its paths were trained towards.

    Only the first few test videos keep their distributions
    (:data:`pecop_lib.train.finetune.DISTRIBUTION_SAMPLES`).

    Returns:
        ``(predicted (paths, bins), targets (paths,))``, or ``None`` if the run kept none for ``video``.
    """
    r = result.result
    if r is None or r.distribution_targets is None:
        return None
    name = _protocol(r, protocol)
    kept = r.record(name).get("distributions")
    index = r.test_ids.index(video) if video in r.test_ids else None
    if kept is None or index is None or index >= len(kept):
        return None
    return np.asarray(kept[index], dtype=np.float64), np.asarray(r.distribution_targets[index], dtype=np.float64)


def score_spec(result: AblationResult) -> Any:
    """The :class:`~pecop_lib.heads.usdl.USDLSpec` (bins, sigma, paths) of a USDL or MUSDL run.

    Raises:
        ValueError: For a run of another head.
    """
    setting = result.run.setting
    if not setting.kind.distributions:
        raise ValueError(f"{setting.label} is not a USDL/MUSDL run: it predicts no score distribution")
    return setting.kind.distribution_spec(dataset_record(setting.dataset).key)


def judge_table(result: AblationResult, protocol: str = "official") -> pd.DataFrame:
    """MUSDL per judge (or sub-score) over the test videos whose distributions were kept: the true
    mean, the predicted mean (expectation of the judge's distribution) and the mean absolute error.

    Raises:
        ValueError: For a run that is not MUSDL or kept no distributions.
    """
    r = result.result
    if not result.run.setting.kind.distributions or score_spec(result).num_paths == 1 or r is None \
            or r.distribution_targets is None:
        raise ValueError(f"{result.run.setting.label}: judge_table needs a finished MUSDL run")
    name = _protocol(r, protocol)
    dist = np.asarray(r.record(name)["distributions"], dtype=np.float64)
    truth = np.asarray(r.distribution_targets, dtype=np.float64)[: len(dist)]
    predicted = (dist * score_spec(result).bins.values().numpy()).sum(-1)
    return pd.DataFrame({"judge": np.arange(1, truth.shape[1] + 1), "videos": len(truth),
                         "true mean": truth.mean(0), "predicted mean": predicted.mean(0),
                         "mean abs error": np.abs(predicted - truth).mean(0)})


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


def verdict_metrics(verdicts: Sequence[Verdict]) -> list[dict[str, Any]]:
    """The verdicts as JSON-ready rows."""
    return [{"source": v.source, "task": v.task, "better": v.better, "worse": v.worse,
             "paper_margin": v.paper_margin, "ours_margin": v.ours_margin, "spread": v.spread, "status": v.status,
             "clear": v.clear} for v in verdicts]


# ------------------------------------------------------------------------------------ one study
@dataclass
class StudyReport:
    """Everything a notebook shows about one study.

    Attributes:
        study: ``fig5``, ``table5``, ``table6`` or ``switches``.
        values: Per-seed values (:func:`seed_values`).
        summary: Per-cell summary (:func:`summarize`).
        table: Ours next to the paper (:func:`comparison_table`; :func:`switch_table` for switches).
        verdicts: The paper's orderings checked (none for switches).
        text: Markdown: agreement and reasons (:func:`verdict_text`; :func:`switch_text` for switches).
    """

    study: str
    values: pd.DataFrame
    summary: pd.DataFrame
    table: pd.DataFrame
    verdicts: list[Verdict] = field(default_factory=list)
    text: str = ""


def study_report(results: Sequence[AblationResult], study: str, *, preset: str, synthetic: bool,
                 protocol: str = "official", order: Sequence[str] | None = None, title: str = "",
                 metric: str = "final") -> StudyReport:
    """Summarise one study's runs and compare them with the paper (see the module docstring).

    ``metric="execution"`` measures diving tasks on the execution score (the paper's numbers are
    final-score rho: the comparison with them is then only about orderings).
    """
    mine = [r for r in results if r.run.study == study]
    values = seed_values(mine, protocol, metric)
    summary = summarize(values)
    if study == "switches":
        return StudyReport(study, values, summary, switch_table(summary), [], switch_text(summary))
    verdicts = check_paper(summary, study)
    facts = run_facts(mine, preset=preset, synthetic=synthetic) if any(r.result is not None for r in mine) else None
    text = (verdict_text(verdicts, facts, title=title) if facts is not None else
            f"**{title}**\n\nEvery run of this study diverged: nothing to compare.")
    return StudyReport(study, values, summary, comparison_table(summary, study, order=order), verdicts, text)


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


# ------------------------------------------------------------------------------ video explorer
@dataclass
class VideoCard:
    """What :func:`pecop_lib.viz.distributions.plot_video_card` draws for one video.

    Attributes:
        caption: One line: task, video, true score, each prediction.
        frames: ``(T, H, W, 3)`` uint8 frames.
        true: True score.
        predictions: ``{label: mean prediction over seeds}``.
        distribution, targets, bins, sigma, path_names: The (M)USDL distribution of the chosen
            strategy, when one was kept for this video.
    """

    caption: str
    frames: np.ndarray
    true: float
    predictions: dict[str, float]
    distribution: np.ndarray | None = None
    targets: np.ndarray | None = None
    bins: Any = None
    sigma: float = 1.0
    path_names: list[str] | None = None

    def plot_args(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~pecop_lib.viz.distributions.plot_video_card` (without ``title``)."""
        return {"frames": self.frames, "true": self.true, "predictions": self.predictions,
                "distribution": self.distribution, "targets": self.targets, "bins": self.bins, "sigma": self.sigma,
                "path_names": self.path_names}


class VideoBrowser:
    """Test videos of finished runs: the choices of the notebook-08 explorer and one card per choice.

    Args:
        results: Runs (Fig. 5 CoRe runs, USDL/MUSDL runs, notebooks 04-06's).
        data_root: Folder holding the datasets.
        crop, clip_frames: Clip size (as the runs read them).
        frames: Frames shown per video.
    """

    def __init__(self, results: Sequence[AblationResult], data_root: str | os.PathLike[str], *, crop: int,
                 clip_frames: int | None, frames: int = 6) -> None:
        self.results = [r for r in results if r.result is not None]
        self.data_root, self.crop, self.clip_frames, self.frames = Path(data_root), crop, clip_frames, frames
        self.table = prediction_frame(self.results)
        self._datasets: dict[Setting, Any] = {}

    def choices(self) -> list[str]:
        """``"<task> | <video>"`` for every test video, in run order."""
        return list(dict.fromkeys(f"{t} | {v}" for t, v in zip(self.table["task"], self.table["video"], strict=True)))

    def labels(self) -> list[str]:
        """Strategy labels with (M)USDL distributions or predictions."""
        return list(dict.fromkeys(self.table["label"]))

    def _frames(self, task: str, video: str) -> np.ndarray:
        from pecop_lib.data.explore import raw_frames

        setting = next(r.run.setting for r in self.results if r.run.task == task and video in r.result.test_ids)
        if setting not in self._datasets:
            self._datasets[setting] = open_finetune_data(self.data_root / setting.dataset, setting, crop=self.crop,
                                                         clip_frames=self.clip_frames).test
        dataset = self._datasets[setting]
        index = [r.id for r in dataset.records].index(video)
        return raw_frames(dataset, index, self.frames)

    def card(self, choice: str, label: str) -> VideoCard:
        """The card of one test video, with ``label``'s predicted distribution when a (M)USDL run kept it.

        Raises:
            KeyError: If ``choice`` is not one of :meth:`choices`.
        """
        task, _, video = choice.partition(" | ")
        rows = self.table[(self.table["task"] == task) & (self.table["video"] == video)]
        if rows.empty:
            raise KeyError(f"no test video {choice!r}; choose one of browser.choices()")
        true = float(rows["true"].iloc[0])
        names = rows["head"].map(lambda h: "" if h == STUDY_HEAD else f"{head_kind(h).display} ") + rows["label"]
        predictions = rows.assign(name=names).groupby("name", sort=False)["pred"].mean().to_dict()
        card = VideoCard("", self._frames(task, video), true, {k: float(v) for k, v in predictions.items()})
        runs = [r for r in self.results if r.run.setting.kind.distributions and r.run.label == label
                and r.run.task == task and distribution_of(r, video) is not None]
        runs.sort(key=lambda r: -score_spec(r).num_paths)  # MUSDL's judges before USDL's one distribution
        if runs:
            card.distribution, card.targets = distribution_of(runs[0], video)
            spec = score_spec(runs[0])
            card.bins, card.sigma = spec.bins, spec.sigma
            card.path_names = ([f"judge {j + 1}" for j in range(len(card.targets))] if spec.num_paths > 1
                               else ["final score"])
        shown = ", ".join(f"{k} {v:.2f}" for k, v in card.predictions.items())
        card.caption = f"{task} video {video}: true {true:.2f}; predicted: {shown}"
        return card
