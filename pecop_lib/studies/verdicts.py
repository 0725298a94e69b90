"""A plain statement, computed from the numbers, of where our ablations agree with the paper and why
they may not: the paper's stated orderings (:data:`FIG5_STATEMENTS`, checked as claims without a
margin) and cells, each a :class:`Verdict`; the facts of the run that explain a disagreement; and
the official-vs-paper switches, which have no published numbers (their text reports the measured
effect against the seed spread only). :func:`study_report` bundles a study's tables and text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pecop_lib.data.registry import dataset_record
from pecop_lib.finetune.report import official_protocol
from pecop_lib.studies.plans import FIG5_TARGETS, SWITCHES, AblationResult
from pecop_lib.studies.tables import (
    JIGSAWS_COLUMNS,
    PD4T_COLUMNS,
    comparison_table,
    paper_value,
    seed_values,
    summarize,
)


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
