"""What a fine-tuning run reports: the per-epoch records, the number each protocol selects (official:
best or last-10 test epochs; honest: the best validation epoch) with a paired bootstrap interval, and the
no-video difficulty baseline."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from pecop_lib.eval import (
    Interval,
    Selection,
    bootstrap_ci,
    honest,
    official_best,
    official_last_mean,
    spearman,
)
from pecop_lib.finetune.evaluation import finite_or_none, nan_if_none
from pecop_lib.finetune.recipes import Setting
from pecop_lib.heads.interface import Protocol
from pecop_lib.train.loop import TrainHistory


@dataclass(frozen=True)
class Reported:
    """The number a protocol reports, with its bootstrap interval.

    Attributes:
        protocol: ``official``, ``official_last10`` or ``honest``.
        rho: Test Spearman (``nan`` if predictions were constant at every epoch considered).
        epoch: Selected epoch (1-based), ``None`` for averaged protocols.
        description: How it was chosen.
        ci: Paired bootstrap interval over the test videos (``None`` without bootstrap).
        l2: Test L2 at the selected epoch.
        rl2: Test R-l2 (x100) at the selected epoch.
    """

    protocol: str
    rho: float
    epoch: int | None
    description: str
    ci: Interval | None = None
    l2: float | None = None
    rl2: float | None = None


@dataclass
class FinetuneResult:
    """Everything a fine-tuning run measured.

    Attributes:
        setting: What was trained.
        backbone_label: Free label of the backbone (e.g. ``"Dom-G"``, ``"PECoP"``).
        epochs: One :func:`epoch_record` per epoch.
        test_true: True test scores; ``test_ids`` their record ids.
        val_true: True validation scores (empty without validation).
        reported: Protocol name -> :class:`Reported`.
        hyper: The resolved hyperparameters.
        history: The trainer's records.
        seconds: Wall time (training and evaluation).
        test_transitions: TSA: true transitions of the test videos ``(N, 2)``.
        distribution_targets: (M)USDL: the per-path scores of the first test videos, whose
            predicted distributions every epoch record keeps ``(k, paths)``.
        difficulty_baseline: Diving: the test rho of :func:`difficulty_baseline` (no video seen).
        test_difficulty: Diving: the degree of difficulty of every test video (``None`` elsewhere);
            see :meth:`execution_rho`.
    """

    setting: Setting
    backbone_label: str
    epochs: list[dict[str, Any]]
    test_true: np.ndarray
    test_ids: list[str]
    val_true: np.ndarray
    reported: dict[str, Reported]
    hyper: dict[str, Any]
    history: TrainHistory = field(default_factory=TrainHistory)
    seconds: float = 0.0
    test_transitions: np.ndarray | None = None
    distribution_targets: np.ndarray | None = None
    difficulty_baseline: float | None = None
    test_difficulty: np.ndarray | None = None

    def execution_rho(self, protocol: str = "official") -> float:
        """Diving: test Spearman of the *execution* score at the protocol's epoch.

        The execution score is the final score divided by the degree of difficulty (the judges'
        middle-three sum, before the difficulty factor); predictions are divided the same way. On
        the synthetic dives the difficulty alone ranks the final scores at rho ~0.9, which hides what
        the backbone saw; the execution score does not contain it. ``nan`` without difficulties.
        """
        if self.test_difficulty is None:
            return float("nan")
        return float(spearman(self.predictions(protocol) / self.test_difficulty, self.test_true / self.test_difficulty))

    def curve(self, key: str) -> np.ndarray:
        """Per-epoch values of a record key (e.g. ``"test_rho"``), float ``(epochs,)``."""
        return np.array([np.nan if r.get(key) is None else r[key] for r in self.epochs], dtype=np.float64)

    def predictions(self, protocol: str = "official") -> np.ndarray:
        """Test predictions at the protocol's epoch (last epoch for averaged protocols)."""
        return np.asarray(self.record(protocol)["test_pred"], dtype=np.float64)

    def record(self, protocol: str = "official") -> dict[str, Any]:
        """The epoch record at the protocol's epoch (the last epoch for averaged protocols)."""
        rep = self.reported.get(protocol)
        return self.epochs[((rep.epoch if rep is not None else None) or len(self.epochs)) - 1]

    def best_over_epochs(self) -> dict[str, float | None]:
        """The official runners' other numbers: the lowest test L2 and R-l2 and (TSA) the highest tIoU
        accuracies over **all** epochs, each from whichever epoch reached it.

        CoRe's and FineDiving's runners print these minima and maxima beside the best rho, tracked
        independently of it, so they may come from other epochs than the reported rho (and each
        profits from selection on the test split). The package's at-epoch values
        (``<protocol>_l2``, ``<protocol>_rl2``, ``<protocol>_tiou_*``) belong to the selected epoch.

        Returns:
            ``{"l2", "rl2"}`` (and ``"tiou_0.5"``, ``"tiou_0.75"`` for heads with steps); ``None``
            where no epoch has a finite value.
        """
        def extreme(key: str, pick: Callable[[np.ndarray], float]) -> float | None:
            values = self.curve(key)
            return None if np.isnan(values).all() else float(pick(values[~np.isnan(values)]))

        out = {"l2": extreme("test_l2", np.min), "rl2": extreme("test_rl2", np.min)}
        if self.setting.kind.steps:
            out.update({f"tiou_{t}": extreme(f"test_tiou_{t}", np.max) for t in ("0.5", "0.75")})
        return out

    def summary(self) -> dict[str, Any]:
        """Flat JSON-ready summary: setting, hyperparameters, each protocol's rho, epoch, CI, L2, R-l2 (and
        tIoU) at its epoch, and the official runners' best-over-epochs L2, R-l2 (and tIoU): :meth:`best_over_epochs`."""
        out: dict[str, Any] = {"setting": self.setting.label, "backbone": self.backbone_label, **self.hyper,
                               "seconds": self.seconds, "test_videos": len(self.test_true),
                               "val_videos": len(self.val_true), "difficulty_baseline_rho": self.difficulty_baseline}
        if self.test_difficulty is not None:
            out.update({f"{name}_execution_rho": finite_or_none(self.execution_rho(name)) for name in self.reported})
        for name, rep in self.reported.items():
            out[f"{name}_rho"] = finite_or_none(rep.rho)
            out[f"{name}_epoch"] = rep.epoch
            out[f"{name}_ci"] = None if rep.ci is None else [finite_or_none(rep.ci.low), finite_or_none(rep.ci.high)]
            out[f"{name}_l2"] = rep.l2
            out[f"{name}_rl2"] = rep.rl2
            if self.setting.kind.steps and rep.epoch is not None:
                out.update({f"{name}_tiou_{t}": self.epochs[rep.epoch - 1].get(f"test_tiou_{t}") for t in ("0.5", "0.75")})
        if self.setting.kind.steps:
            out["final_tiou_0.5"] = self.epochs[-1].get("test_tiou_0.5")
            out["final_tiou_0.75"] = self.epochs[-1].get("test_tiou_0.75")
        out.update({f"best_over_epochs_{k}": v for k, v in self.best_over_epochs().items()})
        return out


def _interval(pred_by_epoch: Sequence[np.ndarray], true: np.ndarray, resamples: int, seed: int) -> Interval | None:
    """Paired bootstrap over test videos of the (mean over the given epochs of the) test rho."""
    if resamples == 0 or len(true) < 3:
        return None
    preds = np.stack(pred_by_epoch)

    def metric(index: np.ndarray, t: np.ndarray) -> float:
        rhos = [spearman(p[index.astype(np.int64)], t) for p in preds]
        return float(np.nanmean(rhos)) if not np.isnan(rhos).all() else float("nan")

    with warnings.catch_warnings():  # degenerate resamples (constant predictions) give nan and warn
        warnings.simplefilter("ignore")
        return bootstrap_ci(np.arange(len(true), dtype=np.float64), true, metric, n_resamples=resamples, seed=seed)


def select_epochs(epochs: list[dict[str, Any]], test_true: np.ndarray, protocol: Protocol, *, validation: bool,
                  bootstrap: int = 1000, seed: int = 0) -> dict[str, Reported]:
    """Apply the official protocol (and the honest one with a validation split) to per-epoch records.

    With fewer than 10 epochs the ``official_last10`` protocol averages all epochs (and says so).
    A protocol whose rho is ``nan`` at every epoch (constant predictions) reports ``nan``.
    """
    test_rhos = [nan_if_none(r["test_rho"]) for r in epochs]
    preds = [np.asarray(r["test_pred"]) for r in epochs]
    out: dict[str, Reported] = {}

    def reported(sel: Selection | None, name: str, description: str, use: list[int]) -> Reported:
        ci = _interval([preds[i] for i in use], test_true, bootstrap, seed)
        if sel is None:
            return Reported(name, float("nan"), None, description + " (predictions constant at every epoch)", ci)
        one = sel.epoch is not None
        return Reported(name, sel.test_rho, sel.epoch + 1 if one else None, sel.description, ci,
                        epochs[sel.epoch]["test_l2"] if one else None, epochs[sel.epoch]["test_rl2"] if one else None)

    def safe(fn: Callable[[], Selection]) -> Selection | None:
        try:
            return fn()
        except ValueError as exc:
            if "NaN at every epoch" in str(exc):
                return None
            raise

    if protocol == "official_last10":
        last = min(10, len(epochs))
        sel = safe(lambda: official_last_mean(test_rhos, last=last))
        desc = f"mean test rho of the last {last} epochs" + ("" if last == 10 else " (10 in the official protocol)")
        rep = reported(sel, "official_last10", desc, list(range(len(epochs) - last, len(epochs))))
        out["official_last10"] = replace(rep, description=desc)
    else:
        sel = safe(lambda: official_best(test_rhos))
        out["official"] = reported(sel, "official", "best epoch on the test split (optimistic)",
                                   [sel.epoch] if sel else [len(epochs) - 1])
    if validation:
        val_rhos = [nan_if_none(r["val_rho"]) for r in epochs]
        sel = safe(lambda: honest(val_rhos, test_rhos))
        out["honest"] = reported(sel, "honest", "epoch chosen on the validation split",
                                 [sel.epoch] if sel else [len(epochs) - 1])
    return out



def difficulty_baseline(train: Sequence[Any], test: Sequence[Any]) -> float | None:
    """Test rho of a "model" that never looks at the video: difficulty x mean training completeness.

    On diving (final score = execution x difficulty, difficulty known) this is what a head gets
    for free; a head has learned something about execution only where it beats this number.

    Args:
        train, test: Records (:class:`~pecop_lib.data.dataset.AQARecord`).

    Returns:
        rho, or ``None`` for datasets without difficulty.
    """
    if any(r.difficulty is None for r in (*train, *test)):
        return None
    completeness = float(np.mean([r.score / r.difficulty for r in train]))
    return finite_or_none(spearman([r.difficulty * completeness for r in test], [r.score for r in test]))

