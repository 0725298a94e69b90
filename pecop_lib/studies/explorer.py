"""Notebook 08's explorer: every test prediction of the runs in one frame, how predictions spread
against the truth, (M)USDL's predicted distributions per video and judge, and the video browser's
model (a :class:`VideoCard` per test video: frames, truth, each run's prediction, a distribution).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pecop_lib.data.registry import dataset_record
from pecop_lib.finetune import Setting, open_finetune_data
from pecop_lib.heads import head_kind
from pecop_lib.studies.plans import STUDY_HEAD, AblationResult
from pecop_lib.studies.tables import reported_protocol


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
        name = reported_protocol(r.result, protocol)
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
    (:data:`pecop_lib.finetune.DISTRIBUTION_SAMPLES`).

    Returns:
        ``(predicted (paths, bins), targets (paths,))``, or ``None`` if the run kept none for ``video``.
    """
    r = result.result
    if r is None or r.distribution_targets is None:
        return None
    name = reported_protocol(r, protocol)
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
    name = reported_protocol(r, protocol)
    dist = np.asarray(r.record(name)["distributions"], dtype=np.float64)
    truth = np.asarray(r.distribution_targets, dtype=np.float64)[: len(dist)]
    predicted = (dist * score_spec(result).bins.values().numpy()).sum(-1)
    return pd.DataFrame({"judge": np.arange(1, truth.shape[1] + 1), "videos": len(truth),
                         "true mean": truth.mean(0), "predicted mean": predicted.mean(0),
                         "mean abs error": np.abs(predicted - truth).mean(0)})


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
