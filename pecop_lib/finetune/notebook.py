"""The cells notebooks 04-06 share: run every setting with both backbones and print one line per run; set
the best run of each dataset against the no-video baseline; the metrics every fine-tuning notebook writes.

A notebook explains its head and calls these three; what differs between the notebooks (the head's
algorithm, its figures) stays in the notebook.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from pecop_lib.config import Config
from pecop_lib.finetune.recipes import FinetuneOptions, Setting
from pecop_lib.finetune.report import beats_baseline, comparison_table, dataset_baselines, run_metrics
from pecop_lib.finetune.results import FinetuneResult
from pecop_lib.finetune.runs import BackboneFactory, run_settings
from pecop_lib.train.context import RunContext

Runs = dict[str, list[FinetuneResult]]


def run_and_print(cfg: Config, settings: Sequence[Setting], backbones: Mapping[str, BackboneFactory],
                  data_root: str | os.PathLike[str], options: FinetuneOptions, *, out: str | os.PathLike[str],
                  device: str | torch.device) -> Runs:
    """:func:`~pecop_lib.finetune.runs.run_settings` with the config's clip size, precision, workers and seed
    (finished runs loaded, checkpoints of finished runs deleted), then one line per run: each protocol's rho
    and epoch, and the wall time.

    Args:
        cfg: The notebook's config.
        settings: The runs' data.
        backbones: ``{label: factory}`` (:func:`~pecop_lib.finetune.runs.comparison_backbones`).
        data_root: Folder holding the datasets.
        options: Fine-tuning options (``FinetuneOptions.from_config(cfg)``).
        out: The notebook's output folder (runs go to ``<out>/runs``).
        device: The resolved device.

    Returns:
        ``{backbone label: [result per setting]}``.
    """
    runs = run_settings(settings, backbones, data_root, options, out=Path(out) / "runs",
                        crop=cfg.data_crop_size, clip_frames=cfg.data_clip_frames or None,
                        run=RunContext.from_config(cfg, device=device, resume=True), keep_checkpoints=False)
    for label, results in runs.items():
        for r in results:
            protocols = ", ".join(f"{name} rho {rep.rho:.3f} (epoch {rep.epoch})"
                                  for name, rep in r.reported.items())
            print(f"{label:<6} {r.setting.label:<32} {protocols}  [{r.seconds:.0f} s]")
    return runs


def against_baselines(runs: Mapping[str, Sequence[FinetuneResult]], settings: Sequence[Setting],
                      data_root: str | os.PathLike[str]) -> tuple[pd.DataFrame, dict[str, tuple[str, float]],
                                                                    dict[str, dict[str, Any]]]:
    """Ours next to the paper, and per dataset whether the best run's honest 95 % interval lies entirely above
    what the annotations alone reach (no video seen); prints one verdict line per dataset.

    Returns:
        ``(table, baselines, best)``: :func:`~pecop_lib.finetune.report.comparison_table`,
        :func:`~pecop_lib.finetune.report.dataset_baselines` and
        :func:`~pecop_lib.finetune.report.beats_baseline`.
    """
    table = comparison_table(runs)
    baselines = dataset_baselines(settings, data_root)
    best = beats_baseline(runs, baselines)
    for dataset, b in best.items():
        verdict = "entirely above" if b["margin"] > 0 else "not entirely above"
        print(f"{dataset}: best {b['backbone']} {b['head']} rho {b['rho']:.3f} (95 % CI [{b['ci_low']:.3f}, "
              f"{b['ci_high']:.3f}]) is {verdict} the no-video baseline ({b['baseline']}: "
              f"rho {b['baseline_rho']:.3f})")
    return table, baselines, best


def notebook_metrics(runs: Mapping[str, Sequence[FinetuneResult]], table: pd.DataFrame,
                     baselines: Mapping[str, tuple[str, float]], best: Mapping[str, Any],
                     options: FinetuneOptions, **extra: Any) -> dict[str, Any]:
    """What a fine-tuning notebook writes to ``metrics.json``: every run, the comparison table, the baselines,
    the verdicts, the options, and the notebook's own ``extra`` entries."""
    return {"runs": run_metrics(runs), "table": table.to_dict("records"),
            "baselines": {d: {"baseline": n, "rho": r} for d, (n, r) in baselines.items()},
            "beats_baseline": dict(best), **extra, "options": options.__dict__}
