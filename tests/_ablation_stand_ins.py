"""Hand-made ablation results (no training) for the report, figure and explorer tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pecop_lib.eval import Interval
from pecop_lib.finetune import FinetuneResult, Reported, Setting
from pecop_lib.studies.plans import AblationResult, AblationRun, task_settings


def finetune_result(setting: Setting, rho: float, *, label: str = "x", true=(1.0, 2.0, 3.0, 4.0),
                    pred=(1.0, 2.0, 3.0, 4.0), ids=("a", "b", "c", "d"), honest: float | None = None,
                    distributions=None, targets=None, ci: tuple[float, float] | None = None,
                    epochs: int = 2) -> FinetuneResult:
    """A finished run whose official protocol reports ``rho`` at its last epoch, predicting ``pred``."""
    protocol = setting.recipe.official_protocol
    interval = None if ci is None else Interval(rho, ci[0], ci[1], 0.95)
    reported = {protocol: Reported(protocol, rho, epochs if protocol == "official" else None, "best", interval)}
    if honest is not None:
        reported["honest"] = Reported("honest", honest, epochs, "val")
    record = {"epoch": epochs, "test_pred": list(pred), "test_rho": rho}
    if distributions is not None:
        record["distributions"] = np.asarray(distributions).tolist()
    records = [{"epoch": e + 1, "test_pred": list(pred), "test_rho": rho} for e in range(epochs - 1)] + [record]
    return FinetuneResult(setting, label, records, np.asarray(true, dtype=np.float64), list(ids),
                          np.zeros(0), reported, {"epochs": epochs}, seconds=1.5,
                          distribution_targets=None if targets is None else np.asarray(targets, dtype=np.float64))


def ablation_result(study: str, label: str, task: str, seed: int, rho: float, *, fold: int = 0, strategy: str = "pecop",
                    costs: dict | None = None, error: str | None = None, head: str = "core",
                    **kwargs) -> AblationResult:
    """An ablation result of a ``head`` run on ``task`` (JIGSAWS: test fold ``fold``)."""
    settings = task_settings(task, folds=4, head=head)
    setting = settings[fold] if len(settings) > 1 else settings[0]
    run = AblationRun(study, label, task, setting, seed, strategy=strategy)
    result = None if error else finetune_result(setting, rho, label=label, **kwargs)
    return AblationResult(run, result, costs or {}, Path("/nonexistent"), cached=True, error=error)


def cost(label: str, params: int, stored: int, epochs: int = 8, seconds_per_epoch: float = 2.0) -> dict:
    """What :func:`pecop_lib.pretrain.stage2_artifact.stage2_costs` returns, for a strategy label."""
    return {"strategy": label, "trainable_params": params, "head_params": 10, "epochs": epochs,
            "seconds": epochs * seconds_per_epoch, "seconds_per_epoch": seconds_per_epoch, "clips_per_s": 4.0,
            "stored_bytes": stored, "peak_memory_bytes": None, "device_name": "cpu", "folder": "/x"}
