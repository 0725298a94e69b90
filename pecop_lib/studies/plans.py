"""The paper's ablations as runs of this package: Fig. 5, Table 5, Table 6 and the official-vs-paper switches.

An :class:`AblationRun` is one fine-tuning of an AQA head (CoRe, as in the paper's ablations) on one
task (and JIGSAWS fold) with one seed, on the backbone that one pretraining choice produced:

* **Fig. 5** (:func:`strategy_runs`): the pretraining *strategy*: Dom-G (the domain-general backbone
  as it is), Dom-S (self-supervised from scratch on the target), HPT+BN (BatchNorm affine only),
  HPT (the whole backbone; Tables 1 and 4) and PECoP (3D-Adapters only);
* **Table 5** (:func:`pretext_runs`): PECoP with VSPP, VideoPace or RSPNet as the pretext;
* **Table 6** (:func:`backbone_runs`): R3D-18 instead of I3D, Dom-G and PECoP;
* **switches** (:func:`switch_runs`): PECoP with the released code's settings (``official``) against
  the paper text's: VSPP sampler bounds, BatchNorm mode, learning rate, colour jitter.

:func:`run_ablation` is load-or-train at both levels. The pretrained backbone comes from the
pretraining artifact cache (:func:`pecop_lib.pretrain.pipeline.pretrained_backbone`, trained on first
use) and the fine-tuning result from the result cache ``cache_dir()/ablations/``::

    ablations/<stage-2 artifact folder>/ft-<key>/seed<S>/<strategy>/<setting>/result.json

``<key>`` hashes the fine-tuning options, the clip size and the data folder; the stage-2 folder name
carries the pretraining key (a JIGSAWS run pretrains on its own fold's training trials, so each fold
has its own stage-2 artifact). A finished run is loaded, an unfinished one resumes from its checkpoints,
a missing one trains; notebooks 07 and 08 (and every rerun) therefore share runs.

Seeds: the *fine-tuning* seed varies over ``cfg.seed, cfg.seed + 1, ...`` (head initialisation, pair
draws, data order, validation split); each pretraining is one run with ``cfg.seed``, as the paper
pretrains each strategy once. :func:`ablation_plan` reads the ``ablation_*`` keys of a config.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pecop_lib.config import Config, resolve
from pecop_lib.data.registry import DATASETS, dataset_record
from pecop_lib.finetune import FinetuneOptions, FinetuneResult, Setting
from pecop_lib.finetune.report import official_protocol
from pecop_lib.finetune.runs import RESULT_FILE, run_folder, run_settings
from pecop_lib.heads import HEAD_KINDS
from pecop_lib.models.strategies import get_strategy
from pecop_lib.paper import FIG5_TASKS
from pecop_lib.pretrain.pipeline import data_roots, pretrained_backbone
from pecop_lib.pretrain.stage2_artifact import Stage2Artifact, stage2_costs
from pecop_lib.store import ArtifactStore, digest
from pecop_lib.train.context import RunContext, run_context
from pecop_lib.train.loop import NonFiniteLossError

ABLATION_ROOT = "ablations"
"""Sub-folder of ``cache_dir()`` holding the fine-tuning results of ablation runs."""

FIG5_TARGETS: dict[str, tuple[str, str | None]] = {
    "MTL-AQA": ("MTL-AQA", None),
    "Gait": ("PD4T", "Gait"),
    "Finger tapping": ("PD4T", "Finger tapping"),
    "Hand movement": ("PD4T", "Hand movement"),
    "Leg agility": ("PD4T", "Leg agility"),
    "S": ("JIGSAWS", "Suturing"),
    "NP": ("JIGSAWS", "Needle_Passing"),
    "KT": ("JIGSAWS", "Knot_Tying"),
}
"""Fig. 5 task name (the paper's panel and table column) -> (dataset, task)."""

ABLATION_STRATEGIES: tuple[str, ...] = ("dom_g", "dom_s", "hpt_bn", "hpt", "pecop")
"""The strategies of notebook 07's Fig. 5, in bar order: the paper's four plus HPT (its Tables 1 and 4)."""

PRETEXTS: dict[str, str] = {"rspnet": "RSPNet", "pace": "VideoPace", "vspp": "VSPP"}
"""Pretext -> its row in the paper's Table 5."""

SWITCHES: dict[str, tuple[str, Any, Any]] = {
    "sampler": ("pretrain_vspp_mode", "official", "paper"),
    "BatchNorm": ("pretrain_bn_mode", "train", "frozen"),
    "learning rate": ("pretrain_lr", 0.01, 1e-3),
    "colour jitter": ("pretrain_color_jitter", False, True),
}
"""Switch -> (config key, the released code's value, the paper text's value)."""

SWITCH_MODES: tuple[str, ...] = ("each", "combined", "none")
METRICS: tuple[str, ...] = ("final", "execution")
"""What an ablation cell measures: the final score's rho, or for diving the execution score's."""
STUDIES: tuple[str, ...] = ("fig5", "table5", "table6", "switches")

Log = Callable[[str], None]


STUDY_HEAD = "core"
"""The head of the strategy studies (Fig. 5, Tables 5 and 6 use CoRe, as the paper does)."""
DISTRIBUTION_HEADS: tuple[str, ...] = tuple(name for name, kind in HEAD_KINDS.items() if kind.distributions)
"""The heads that predict score distributions (notebook 08): USDL and MUSDL."""

def parse_tasks(text: str, *, allowed: Sequence[str] = FIG5_TASKS, optional: bool = False) -> tuple[str, ...]:
    """Task names from a comma-separated config value (``"all"``: every allowed task, in order).

    Args:
        text: The config value.
        allowed: The valid task names.
        optional: Whether ``"none"`` (the study is off: no task) is accepted.

    Raises:
        ValueError: On an empty list, ``"none"`` where the study is not optional, or a name outside
            ``allowed``, listing the valid names.
    """
    if text.strip().lower() == "all":
        return tuple(allowed)
    if optional and text.strip().lower() == "none":
        return ()
    names = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise ValueError(f"unknown or missing task(s) {unknown or text!r}; choose from {list(allowed)} or 'all'")
    return names


def task_settings(task: str, *, folds: int = 1, head: str = STUDY_HEAD) -> list[Setting]:
    """The fine-tuning settings of a Fig. 5 task: one, or the first ``folds`` JIGSAWS test folds.

    Raises:
        ValueError: On an unknown task or ``folds`` outside ``1..4``.
    """
    if task not in FIG5_TARGETS:
        raise ValueError(f"unknown task {task!r}; choose one of {list(FIG5_TARGETS)}")
    most = max(len(record.folds) for record in DATASETS.values())
    if not 1 <= folds <= most:
        raise ValueError(f"folds must be in 1..{most}, got {folds}")
    dataset, name = FIG5_TARGETS[task]
    return [Setting(head, dataset, name, fold) for fold in dataset_record(dataset).folds[:folds] or (None,)]


@dataclass(frozen=True)
class AblationRun:
    """One fine-tuning run of an ablation.

    Attributes:
        study: ``fig5``, ``table5``, ``table6``, ``switches`` (or a notebook's own name).
        label: The bar or row it belongs to (``"PECoP"``, ``"VideoPace"``, ``"paper sampler"``).
        task: Fig. 5 task name (:data:`FIG5_TARGETS`).
        setting: Head, dataset, task, fold.
        seed: Fine-tuning seed.
        strategy: Pretraining strategy (:data:`pecop_lib.models.strategies.STRATEGIES`).
        pretext: ``vspp``, ``pace`` or ``rspnet``.
        backbone: ``i3d`` or ``r3d18``.
        switches: Stage-2 config overrides, ``((key, value), ...)``.
    """

    study: str
    label: str
    task: str
    setting: Setting
    seed: int
    strategy: str = "pecop"
    pretext: str = "vspp"
    backbone: str = "i3d"
    switches: tuple[tuple[str, Any], ...] = ()

    def config(self, cfg: Config) -> Config:
        """``cfg`` with this run's backbone and switches (validated by :func:`pecop_lib.config.resolve`)."""
        values = {k: v for k, v in cfg.to_dict().items() if k != "preset"}
        values.update(model_backbone=self.backbone, **dict(self.switches))
        return resolve(cfg.preset, **values)


def strategy_runs(tasks: Sequence[str], seeds: Sequence[int], *, folds: int = 1, head: str = STUDY_HEAD,
                  strategies: Sequence[str] = ABLATION_STRATEGIES, study: str = "fig5") -> list[AblationRun]:
    """Fig. 5: every strategy on every task, fold and seed (labels: the paper's strategy names)."""
    for strategy in strategies:
        get_strategy(strategy)
    return [AblationRun(study, get_strategy(strategy).label, task, setting, seed, strategy=strategy)
            for task in tasks for setting in task_settings(task, folds=folds, head=head)
            for strategy in strategies for seed in seeds]


def pretext_runs(tasks: Sequence[str], seeds: Sequence[int], *, folds: int = 1) -> list[AblationRun]:
    """Table 5: PECoP + CoRe with each pretext (labels: the paper's rows)."""
    return [AblationRun("table5", label, task, setting, seed, pretext=pretext)
            for task in tasks for setting in task_settings(task, folds=folds)
            for pretext, label in PRETEXTS.items() for seed in seeds]


def backbone_runs(tasks: Sequence[str], seeds: Sequence[int], *, folds: int = 1) -> list[AblationRun]:
    """Table 6: CoRe on R3D-18 without (Dom-G) and with PECoP."""
    return [AblationRun("table6", get_strategy(strategy).label, task, setting, seed, strategy=strategy,
                        backbone="r3d18")
            for task in tasks for setting in task_settings(task, folds=folds)
            for strategy in ("dom_g", "pecop") for seed in seeds]


def switch_variants(mode: str) -> dict[str, tuple[tuple[str, Any], ...]]:
    """The switch settings compared: ``official`` first, then one per switch (``each``) and ``all paper``.

    Raises:
        ValueError: On an unknown mode.
    """
    if mode not in SWITCH_MODES:
        raise ValueError(f"unknown switch mode {mode!r}; choose one of {SWITCH_MODES}")
    if mode == "none":
        return {}
    official = {key: value for key, value, _ in SWITCHES.values()}
    variants = {"official": tuple(official.items())}
    if mode == "each":
        for name, (key, _, paper) in SWITCHES.items():
            variants[f"paper {name}"] = tuple({**official, key: paper}.items())
    variants["all paper"] = tuple({key: paper for key, _, paper in SWITCHES.values()}.items())
    return variants


def switch_runs(task: str, seeds: Sequence[int], *, mode: str = "each", folds: int = 1) -> list[AblationRun]:
    """Official-vs-paper switches: PECoP + CoRe on one task under each variant of :func:`switch_variants`."""
    return [AblationRun("switches", label, task, setting, seed, switches=switches)
            for label, switches in switch_variants(mode).items()
            for setting in task_settings(task, folds=folds) for seed in seeds]


def distribution_runs(seeds: Sequence[int], *, strategies: Sequence[str] = ("dom_g", "pecop"),
                      task: str = "MTL-AQA") -> list[AblationRun]:
    """Notebook 08: USDL and MUSDL (the heads that predict score distributions) on one task, per strategy.

    Their study names are the heads (``usdl``, ``musdl``); MUSDL needs per-judge scores (MTL-AQA) or
    sub-scores (JIGSAWS).
    """
    return [AblationRun(head, get_strategy(strategy).label, task, setting, seed, strategy=strategy)
            for head in DISTRIBUTION_HEADS for setting in task_settings(task, head=head)
            for strategy in strategies for seed in seeds]


def ablation_seeds(cfg: Config) -> list[int]:
    """Fine-tuning seeds of the ablations: ``cfg.seed, cfg.seed + 1, ...`` (``ablation_seeds`` of them, >= 1 by
    :data:`~pecop_lib.config.RANGES`)."""
    return [cfg.seed + k for k in range(cfg.ablation_seeds)]


def ablation_plan(cfg: Config) -> dict[str, list[AblationRun]]:
    """Every run of notebook 07, by study, from the ``ablation_*`` keys of a config.

    Returns:
        ``{"fig5": [...], "table5": [...], "table6": [...], "switches": [...]}``; a study that is off
        (``ablation_table5_tasks`` / ``ablation_table6_tasks`` = ``"none"``, ``ablation_switches`` =
        ``"none"``) has no runs.
    """
    seeds, folds = ablation_seeds(cfg), cfg.ablation_folds
    return {
        "fig5": strategy_runs(parse_tasks(cfg.ablation_fig5_tasks), seeds, folds=folds),
        "table5": pretext_runs(parse_tasks(cfg.ablation_table5_tasks, optional=True), seeds, folds=folds),
        "table6": backbone_runs(parse_tasks(cfg.ablation_table6_tasks, optional=True), seeds, folds=folds),
        "switches": switch_runs(parse_tasks(cfg.ablation_switch_task)[0], seeds, mode=cfg.ablation_switches,
                                folds=folds),
    }


def finetune_options(cfg: Config) -> FinetuneOptions:
    """The fine-tuning options of ablation runs (:meth:`FinetuneOptions.from_config`), with ``ablation_finetune_epochs`` when set."""
    options = FinetuneOptions.from_config(cfg)
    return replace(options, epochs=cfg.ablation_finetune_epochs) if cfg.ablation_finetune_epochs else options


@dataclass
class AblationResult:
    """A finished ablation run, or one whose training diverged.

    Attributes:
        run: What was run.
        result: The fine-tuning result (test predictions per epoch, both protocols); ``None`` if
            training diverged.
        pretrain: What its pretraining cost (:func:`~pecop_lib.pretrain.stage2_artifact.stage2_costs`) plus
            ``"folder"`` and, where a pretext was trained, ``"pretext_acc"`` of the last epoch
            (empty if pretraining diverged).
        run_dir: The run's folder in the result cache (``None`` if pretraining diverged).
        cached: ``True`` if the result was loaded rather than trained by this call.
        error: Why training stopped (a non-finite loss in pretraining or fine-tuning), else ``None``.
    """

    run: AblationRun
    result: FinetuneResult | None
    pretrain: dict[str, Any]
    run_dir: Path | None
    cached: bool
    error: str | None = None

    def rho(self, protocol: str = "official", metric: str = "final") -> float:
        """Test Spearman of a protocol (``official``: the recipe's official protocol; ``honest``);
        ``nan`` for a diverged run.

        Args:
            protocol: ``official`` or ``honest``.
            metric: ``final`` (the final score) or ``execution`` (diving: the score before the
                difficulty factor, :meth:`~pecop_lib.finetune.FinetuneResult.execution_rho`;
                the final score where a dataset has no difficulty).
        """
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")
        if self.result is None:
            return float("nan")
        name = official_protocol(self.result) if protocol == "official" else protocol
        rep = self.result.reported.get(name)
        if rep is None:
            return float("nan")
        if metric == "execution" and self.result.test_difficulty is not None:
            return self.result.execution_rho(name)
        return float(rep.rho)


def result_folder(artifact: Stage2Artifact, options: FinetuneOptions, *, crop: int, clip_frames: int | None,
                  data_root: str | os.PathLike[str], seed: int, root: str | os.PathLike[str] | None = None) -> Path:
    """Where :func:`run_ablation` keeps a run's fine-tuning (see the module docstring)."""
    # what decides the result: checkpointing never does; accumulation only when it is not the recipe's (0)
    decisive = {k: v for k, v in options.keyed().items()
                if k != "checkpoint_every_steps" and not (k == "grad_accum_steps" and v == 0)}
    key = digest((decisive, crop, clip_frames or None, str(Path(data_root).resolve())))
    return ArtifactStore.at(ABLATION_ROOT, root).folder(artifact.folder.name, f"ft-{key}", f"seed{seed}")


def _pretrain_record(artifact: Stage2Artifact) -> dict[str, Any]:
    record = {**stage2_costs(artifact), "folder": str(artifact.folder)}
    epochs = artifact.record["history"]["epochs"]
    if epochs and "acc" in epochs[-1]:
        record["pretext_acc"] = epochs[-1]["acc"]
    return record


def _run_one(cfg: Config, run: AblationRun, options: FinetuneOptions, targets: Path, *,
             data_root: str | os.PathLike[str] | None, root: str | os.PathLike[str] | None,
             execution: RunContext) -> AblationResult:
    """One run: its stage-2 artifact, then its fine-tuning (loaded, resumed or trained)."""
    clip_frames = cfg.data_clip_frames or None
    try:
        artifact = pretrained_backbone(run.config(cfg), strategy=run.strategy, pretext=run.pretext,
                                       dataset=run.setting.dataset, task=run.setting.task, fold=run.setting.fold,
                                       data_root=data_root, run=execution)
    except NonFiniteLossError as exc:
        return AblationResult(run, None, {}, None, False, f"pretraining: {exc}")
    folder = result_folder(artifact, options, crop=cfg.data_crop_size, clip_frames=clip_frames, data_root=targets,
                           seed=run.seed, root=root)
    run_dir = run_folder(folder, run.strategy, run.setting)
    cached = (run_dir / RESULT_FILE).is_file()
    try:
        result = run_settings(
            [run.setting], {run.strategy: lambda _s: artifact.build()}, targets, options, out=folder,
            crop=cfg.data_crop_size, clip_frames=clip_frames, run=execution.but(seed=run.seed, resume=True),
            keep_checkpoints=False, export=False,  # a grid of dozens of runs: exports would be most of the cache
        )[run.strategy][0]
    except NonFiniteLossError as exc:
        return AblationResult(run, None, _pretrain_record(artifact), run_dir, False, f"fine-tuning: {exc}")
    return AblationResult(run, result, _pretrain_record(artifact), run_dir, cached)


def run_ablation(
    cfg: Config,
    runs: Sequence[AblationRun],
    *,
    data_root: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    execution: RunContext | None = None,
    log: Log | None = print,
) -> list[AblationResult]:
    """Load or train every run (see the module docstring), in order.

    Args:
        cfg: Resolved config (``model_*``, ``pretrain_*``, ``finetune_*``, ``data_*``, ``train_*``,
            ``ablation_finetune_epochs``, ``device``).
        runs: The runs (e.g. ``ablation_plan(cfg)["fig5"]``).
        data_root: Folder with the datasets in their official layouts; ``None``: the preset's synthetic world.
        root: Result cache folder instead of ``cache_dir()/ablations``.
        execution: How each training executes (:class:`~pecop_lib.train.context.RunContext`; default:
            the config's; each run's seed replaces its seed, finished runs are loaded and unfinished
            ones resume).
        log: Called with one line per run (``None``: silent).

    Returns:
        One :class:`AblationResult` per run, in the order given. A run whose pretraining or
        fine-tuning stopped on a non-finite loss is returned with ``error`` set and ``rho`` nan (and
        retried by the next call), so one diverging setting does not hide the others.
    """
    targets, _ = data_roots(cfg, data_root=data_root)
    options = finetune_options(cfg)
    execution = run_context(cfg, execution)
    out: list[AblationResult] = []
    for run in runs:
        done = _run_one(cfg, run, options, targets, data_root=data_root, root=root, execution=execution)
        out.append(done)
        if log is not None:
            status = (f"diverged: {done.error.split(';')[0]}" if done.error else
                      "cached" if done.cached else f"trained in {done.result.seconds:.0f} s")
            log(f"{run.study:<9} {run.label:<14} {run.backbone:<5} {run.setting.label:<28} seed {run.seed}: "
                f"rho {done.rho():+.3f} ({status})")
    return out
