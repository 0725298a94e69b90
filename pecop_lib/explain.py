"""Why this score: per-time attribution of an exported model's score of one video, and its check against
known defects.

Two methods, both over the clip's frames:

* **window occlusion**: each temporal window of the clip is replaced by the clip's temporal mean image (its
  motion removed) and the clip re-scored; a window's value is ``score(clip) - score(occluded)``, negative where
  the window's content lowered the score. It assumes the model reads that window's motion, and that a still
  average image is a neutral stand-in (it is not for a model that scores stillness).
* **Integrated Gradients** (captum's :class:`~captum.attr.IntegratedGradients`): the gradient of the score along
  the straight path from the same mean-image clip to the video, times the difference, summed over channels and
  pixels per frame. Its values add up to ``score(clip) - score(baseline)`` (completeness); it assumes the path
  between the two clips is meaningful to the model.

The score is what the head predicts, made differentiable where it decodes: USDL/MUSDL's *expected* score (the
distribution's mean, combined over judges with the dive's difficulty), CoRe/TSA's mean vote over the exemplars
the video is scored against (relative to them). Attribution is not causation: a window can matter to the model
because it correlates with quality in the training videos.

TSA has a third account, its own (:func:`step_attribution`, method ``"steps"``): its score difference to an
exemplar is a mean over the decoded tokens of its three steps (take-off, flight, entry, cut at the transitions it
predicts), so each step's share of the mean vote is read off the head, no input is changed.

:func:`localisation` measures, over videos with known defects (the synthetic world's, see
:func:`~pecop_lib.data.synthetic.defect_intervals`), how often the worst window (the most negative value; the most
positive where a higher score is worse, as PD4T's severity) overlaps a defect, against two nulls: a random window of
the same video, and the worst windows of *clean* videos (no defect) at the same clip positions. The second is the
one that counts: a model that always points at the entry of a dive hits every bad entry, and every clean entry too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pecop_lib.config import resolve_device
from pecop_lib.data.synthetic import Defect, defect_intervals
from pecop_lib.data.synthetic.common import LATENTS_FILE
from pecop_lib.finetune.export import ExportedModel, load_exported
from pecop_lib.finetune.scoring import (
    VideoQuery,
    exemplar_draw,
    record_query,
    records_by_path,
    video_query,
)
from pecop_lib.heads import USDLSpec, WindowFeatures, combine_paths, encode_windows

METHODS: tuple[str, ...] = ("occlusion", "integrated_gradients")
"""The input-attribution methods, for every head."""
STEPS = "steps"
"""TSA's per-step account of its score (:func:`step_attribution`), for heads that segment steps."""
ScoreFn = Callable[[torch.Tensor], torch.Tensor]
"""``clips (B, 3, T, H, W) -> scores (B,)``, differentiable."""


@dataclass
class Attribution:
    """One method's attribution of one video's score.

    Attributes:
        video: The video.
        method: One of :data:`METHODS` or :data:`STEPS`.
        score: The attributed score of the whole clip (see the module docstring).
        windows: Clip-frame windows ``[start, end)`` (for :data:`STEPS`: the three steps).
        window_values: Per window ``(W,)``: occlusion's ``score - score(occluded)``, the sum of IG's frame values
            over the window, or a step's share of the score's difference to the exemplars; negative where the
            window lowered the score.
        frame_values: Per clip frame ``(T,)``: IG's values, for occlusion the mean value of the windows holding
            the frame, for steps the step's share spread evenly over its frames.
        positions: Per clip frame ``(T,)``: the frame of the video it was read from.
        higher_is_better: Whether a higher score is a better performance (the dataset's; PD4T: no, a defect
            raises its severity score).
    """

    video: str
    method: str
    score: float
    windows: list[tuple[int, int]]
    window_values: np.ndarray
    frame_values: np.ndarray
    positions: np.ndarray
    higher_is_better: bool = True

    def span(self, window: int) -> tuple[int, int]:
        """The video frames ``[first, last + 1)`` window ``window`` covers."""
        start, end = self.windows[window]
        return int(self.positions[start]), int(self.positions[end - 1]) + 1

    def worst_window(self) -> int:
        """The index of the window that made the performance look worst: the most negative value where a higher
        score is better, the most positive where a higher score is worse (PD4T's severity)."""
        return int(np.argmin(self.window_values) if self.higher_is_better else np.argmax(self.window_values))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (``pecop explain``'s output)."""
        return {"video": self.video, "method": self.method, "score": self.score,
                "windows": [list(w) for w in self.windows], "spans": [list(self.span(i)) for i in range(len(self.windows))],
                "window_values": self.window_values.tolist(), "frame_values": self.frame_values.tolist(),
                "positions": self.positions.tolist(), "higher_is_better": self.higher_is_better,
                "worst_window": self.worst_window()}


def time_windows(frames: int, window: int, stride: int | None = None) -> list[tuple[int, int]]:
    """Windows ``[start, end)`` of ``window`` frames every ``stride`` (default ``window``) covering ``frames``.

    The last window ends at the last frame (it may overlap its neighbour).

    Raises:
        ValueError: If ``window`` is not in ``1..frames`` or ``stride < 1``.
    """
    stride = window if stride is None else stride
    if not 1 <= window <= frames or stride < 1:
        raise ValueError(f"need 1 <= window <= {frames} clip frames and stride >= 1, got window {window}, stride {stride}")
    starts = list(range(0, frames - window + 1, stride))
    if starts[-1] + window < frames:
        starts.append(frames - window)
    return [(s, s + window) for s in starts]


def methods_for(exported: ExportedModel) -> tuple[str, ...]:
    """The methods that apply to an exported model: :data:`METHODS`, and :data:`STEPS` for TSA."""
    return METHODS + ((STEPS,) if exported.model.kind.steps else ())


def _final_scale(exported: ExportedModel, query: VideoQuery) -> float:
    """The factor from the head's regressed value to its final score for ``query`` (CoRe: the difficulty, else 1)."""
    kind = exported.model.kind
    return float(kind.final_scores(np.ones(1), [query], exported.card["head"]["build"]["dataset_key"])[0])


def _exemplar_bank(exported: ExportedModel, query: VideoQuery,
                   device: torch.device) -> tuple[WindowFeatures, torch.Tensor]:
    """The exemplars ``query`` is scored against (the card's draw): features ``(E, ...)`` and scores ``(E,)``."""
    chosen = [int(i) for i in exemplar_draw(exported, [query]).indices[0] if i >= 0]
    bank = exported.bank.select(torch.as_tensor(chosen))  # type: ignore[union-attr]
    bank = WindowFeatures(bank.pooled.to(device), None if bank.maps is None else bank.maps.to(device))
    values = exported.card["exemplars"]["values"]
    return bank, torch.tensor([values[i] for i in chosen], dtype=torch.float32, device=device)


def _against(feats: WindowFeatures, bank: WindowFeatures) -> tuple[WindowFeatures, WindowFeatures]:
    """Every query of ``feats`` (``B``) paired with every exemplar of ``bank`` (``E``): two ``B E`` batches,
    query-major."""
    count, e = feats.pooled.shape[0], bank.pooled.shape[0]
    queries = WindowFeatures(feats.pooled.repeat_interleave(e, 0),
                             None if feats.maps is None else feats.maps.repeat_interleave(e, 0))
    exemplars = WindowFeatures(bank.pooled.repeat(count, *[1] * (bank.pooled.dim() - 1)),
                               None if bank.maps is None else bank.maps.repeat(count, *[1] * (bank.maps.dim() - 1)))
    return queries, exemplars


def score_function(exported: ExportedModel, query: VideoQuery) -> ScoreFn:
    """The differentiable score of clips of ``query``'s video (its difficulty, group and exemplars).

    Returns:
        ``clips (B, 3, T, H, W) -> (B,)`` on the model's device.
    """
    model, card = exported.model, exported.card
    kind, head, windowing = model.kind, model.head, exported.windowing
    key = card["head"]["build"]["dataset_key"]
    device = next(model.parameters()).device
    difficulty = 1.0 if query.difficulty is None else float(query.difficulty)
    scale = _final_scale(exported, query)
    if not kind.pairs:
        spec = kind.distribution_spec(key)

        def score_heads(clips: torch.Tensor) -> torch.Tensor:
            feats = encode_windows(model.backbone, clips, windowing).video()
            d = torch.full((clips.shape[0],), difficulty, device=clips.device)
            pred, dist = kind.score(head, feats, d)
            if dist is None or not isinstance(spec, USDLSpec):
                return pred
            expected = dist @ spec.bins.values(clips.device)  # (B, paths)
            return expected[:, 0] if spec.num_paths == 1 else combine_paths(expected, spec.combination, d)  # type: ignore[arg-type]

        return score_heads
    bank, s_bank = _exemplar_bank(exported, query, device)

    def pair_heads(clips: torch.Tensor) -> torch.Tensor:
        count = clips.shape[0]
        queries, exemplars = _against(encode_windows(model.backbone, clips, windowing, maps=kind.maps), bank)
        votes = kind.relative(head, queries, exemplars, s_bank.repeat(count)) + s_bank.repeat(count)
        return votes.reshape(count, -1).mean(dim=1) * scale

    return pair_heads


def _baseline(clip: torch.Tensor) -> torch.Tensor:
    """The clip's temporal mean image at every frame ``(3, T, H, W)``: the motion removed."""
    return clip.mean(dim=1, keepdim=True).expand_as(clip).contiguous()


def occlusion(fn: ScoreFn, clip: torch.Tensor, windows: Sequence[tuple[int, int]], *,
              batch_size: int = 8) -> tuple[float, np.ndarray]:
    """Window occlusion (see the module docstring): the clip's score and each window's value ``(W,)``."""
    baseline = _baseline(clip)
    with torch.no_grad():
        full = float(fn(clip[None])[0])
        values = []
        for start in range(0, len(windows), batch_size):
            batch = []
            for a, b in windows[start : start + batch_size]:
                occluded = clip.clone()
                occluded[:, a:b] = baseline[:, a:b]
                batch.append(occluded)
            values.append(fn(torch.stack(batch)).detach().cpu())
    return full, full - torch.cat(values).double().numpy()


def integrated_gradients(fn: ScoreFn, clip: torch.Tensor, *, steps: int = 32,
                         batch_size: int = 8) -> tuple[float, np.ndarray]:
    """captum's Integrated Gradients from the mean-image clip: the clip's score and per-frame values ``(T,)``."""
    from captum.attr import IntegratedGradients

    with torch.no_grad():
        full = float(fn(clip[None])[0])
    attributions = IntegratedGradients(fn).attribute(clip[None], baselines=_baseline(clip)[None], n_steps=steps,
                                                     internal_batch_size=batch_size)
    return full, attributions[0].sum(dim=(0, 2, 3)).detach().cpu().double().numpy()


def step_attribution(exported: ExportedModel, query: VideoQuery) -> Attribution:
    """TSA's own per-step account of one video's score (method :data:`STEPS`).

    Against each exemplar the video is scored against, :meth:`~pecop_lib.heads.tsa.TSA.step_contributions` splits
    the score difference over the video's three predicted steps; a step's value is its share averaged over the
    exemplars. The score is the mean vote, so ``score = mean exemplar score + sum of the step values``.

    Raises:
        ValueError: If the head does not segment steps (every head but TSA).
    """
    model, kind = exported.model, exported.model.kind
    if not kind.steps:
        raise ValueError(f"{kind.display} does not segment steps: per-step attribution is TSA's; use {METHODS}")
    device = next(model.parameters()).device
    model.eval()
    scale = _final_scale(exported, query)
    bank, s_bank = _exemplar_bank(exported, query, device)
    with torch.no_grad():
        feats = encode_windows(model.backbone, query.clip[None].to(device), exported.windowing, maps=True)
        shares, transitions = model.head.step_contributions(*_against(feats, bank))  # type: ignore[operator]
    values = shares.double().mean(dim=0).cpu().numpy() * scale
    t1, t2 = (int(t) for t in transitions[0])
    windows = [(0, t1), (t1, t2), (t2, query.clip.shape[1])]
    frames = np.concatenate([np.full(b - a, v / (b - a)) for (a, b), v in zip(windows, values, strict=True)])
    score = float(s_bank.double().mean()) * scale + float(values.sum())
    return Attribution(query.name, STEPS, score, windows, values, frames, query.positions,
                       bool(exported.card["higher_is_better"]))


def attribute(exported: ExportedModel, query: VideoQuery, *, methods: Sequence[str] | None = None, window: int = 8,
              stride: int | None = None, steps: int = 32, batch_size: int = 8) -> dict[str, Attribution]:
    """Attribute the score of one read video (:func:`~pecop_lib.finetune.scoring.video_query`) by each method.

    Args:
        methods: Any of :func:`methods_for` the model (``None``: all of them).

    Raises:
        ValueError: On a method that does not apply to the model or a window that does not fit the clip.
    """
    allowed = methods_for(exported)
    methods = allowed if methods is None else tuple(methods)
    unknown = sorted(set(methods) - set(allowed))
    if unknown:
        raise ValueError(f"attribution method(s) {unknown} do not apply to {exported.model.kind.display}; "
                         f"choose from {allowed}")
    device = next(exported.model.parameters()).device
    exported.model.eval()
    fn = score_function(exported, query)
    clip = query.clip.to(device)
    windows = time_windows(clip.shape[1], window, stride)
    better = bool(exported.card["higher_is_better"])
    out: dict[str, Attribution] = {}
    for method in methods:
        if method == "occlusion":
            full, values = occlusion(fn, clip, windows, batch_size=batch_size)
            frames = np.zeros(clip.shape[1])
            counts = np.zeros(clip.shape[1])
            for (a, b), v in zip(windows, values, strict=True):
                frames[a:b] += v
                counts[a:b] += 1
            out[method] = Attribution(query.name, method, full, list(windows), values, frames / counts, query.positions,
                                      better)
        elif method == STEPS:
            out[method] = step_attribution(exported, query)
        else:
            full, frames = integrated_gradients(fn, clip, steps=steps, batch_size=batch_size)
            values = np.array([frames[a:b].sum() for a, b in windows])
            out[method] = Attribution(query.name, method, full, list(windows), values, frames, query.positions, better)
    return out


def explain(model: str | os.PathLike[str] | ExportedModel, video: str | os.PathLike[str] | None = None, *,
            record: str | None = None, methods: Sequence[str] | None = None, window: int = 8, stride: int | None = None,
            steps: int = 32, info: Mapping[str, Mapping[str, Any]] | None = None,
            defaults: Mapping[str, Any] | None = None, data_root: str | os.PathLike[str] | None = None,
            device: str | torch.device = "auto", batch_size: int = 8) -> dict[str, Attribution]:
    """Attribute an exported model's score of one video over time by each method (see the module docstring).

    Args:
        model: An export folder, a run folder or a loaded :class:`~pecop_lib.finetune.ExportedModel`.
        video: A video file or frame folder, or ``None`` with ``record``.
        record: With ``data_root``: the id of a test (or training) record of the run's dataset, read as the run read
            it (needed where records are spans of one video, as MTL-AQA's).
        methods: Any of :func:`methods_for` the model (``None``: all of them).
        window, stride: Occlusion windows in clip frames (IG is summed over the same windows).
        steps: IG's path steps.
        info, defaults, data_root: How a video file is read (:func:`~pecop_lib.finetune.score`).
        device: Where to run.
        batch_size: Clips per forward pass.

    Returns:
        ``{method: Attribution}``.

    Raises:
        ValueError: Neither or both of ``video`` and ``record``, ``record`` without ``data_root`` or not a record.
    """
    if (video is None) == (record is None):
        raise ValueError("give a video or a record id (with data_root), not both")
    exported = model if isinstance(model, ExportedModel) else load_exported(model)
    exported.model.to(resolve_device(device))
    if record is not None:
        if data_root is None:
            raise ValueError(f"record {record!r} needs data_root, the run's dataset folder")
        query = record_query(exported, data_root, record)
    else:
        records = records_by_path(exported, data_root) if data_root is not None else None
        query = video_query(exported, video, info=info, defaults=defaults, records=records)  # type: ignore[arg-type]
    return attribute(exported, query, methods=methods, window=window, stride=stride, steps=steps,
                     batch_size=batch_size)


def known_defects(dataset_root: str | os.PathLike[str], task: str | None = None) -> dict[str, tuple[Defect, ...]]:
    """The synthetic world's defects of a dataset folder by record id (:func:`~pecop_lib.data.synthetic.defect_intervals`),
    or ``{}`` for a folder without the world's latents file (a real dataset: its defects are not known).

    Raises:
        DataFormatError: For a synthetic folder written before defects were recorded (regenerate it).
    """
    if not (Path(dataset_root) / LATENTS_FILE).is_file():
        return {}
    return defect_intervals(dataset_root, task=task)


def localisation(attributions: Sequence[Attribution], defects: Sequence[Sequence[tuple[int, int]]], *,
                 permutations: int = 10_000, seed: int = 0) -> dict[str, float]:
    """How often the worst window (:meth:`Attribution.worst_window`) overlaps a known defect, against two nulls.

    The videos with defect intervals are the *faulty* ones; those with none are the *clean* control. Let ``o_i[w]``
    say whether window ``w`` of faulty video ``i`` overlaps one of its defects and ``w_i`` be its worst window; the
    rate is the mean of ``o_i[w_i]``. The nulls:

    * **random window**: a window drawn uniformly from the same video, ``mean(o_i)``; its p-value draws one window
      per video ``permutations`` times.
    * **clean videos at the same positions**: the worst window ``w_j`` of a clean video ``j`` laid on faulty video
      ``i`` (the same window index: the same stretch of the clip, which spreads over the whole video),
      ``o_i[w_j]`` averaged over all pairs. Its p-value permutes the faulty and clean labels: the worst windows of
      all videos are shuffled and the first ones dealt to the faulty videos, ``permutations`` times. It answers
      whether the worst window falls on the defects *because they are there*, not because the model always points
      at that part of the action (as at the entry of every dive).

    Both p-values are one-sided: ``(1 + #draws with at least the observed hits) / (1 + permutations)``.

    Args:
        attributions: One attribution per video (one method), all with the same number of windows.
        defects: Per video, its defect intervals ``[start, end)`` in video frames (empty: a clean video).
        permutations: Draws of each null.
        seed: Seed of the draws.

    Returns:
        ``{"videos", "rate", "random_rate", "p_value", "clean_videos", "clean_rate", "clean_p_value"}``; rates and
        p-values are NaN without faulty videos, the clean ones without clean videos.

    Raises:
        ValueError: If the two sequences differ in length, or the attributions' window counts differ.
    """
    if len(attributions) != len(defects):
        raise ValueError(f"{len(attributions)} attributions but {len(defects)} defect lists")
    counts = {len(a.windows) for a in attributions}
    if len(counts) > 1:
        raise ValueError(f"attributions have different window counts {sorted(counts)}: the clean-video null lays one "
                         "video's windows on another's; attribute every video with the same window and clip length")
    overlaps, worst_faulty, worst_clean = [], [], []
    for attribution, intervals in zip(attributions, defects, strict=True):
        if not intervals:
            worst_clean.append(attribution.worst_window())
            continue
        overlaps.append([any(a < e and s < b for s, e in intervals)
                         for a, b in (attribution.span(w) for w in range(len(attribution.windows)))])
        worst_faulty.append(attribution.worst_window())
    nan = float("nan")
    out = {"videos": len(worst_faulty), "rate": nan, "random_rate": nan, "p_value": nan,
           "clean_videos": len(worst_clean), "clean_rate": nan, "clean_p_value": nan}
    if not worst_faulty:
        return out
    o = np.array(overlaps, dtype=bool)  # (faulty, windows)
    rows = np.arange(len(o))
    observed = int(o[rows, worst_faulty].sum())
    rng = np.random.default_rng(seed)
    chance = o.mean(axis=1)
    null = (rng.random((permutations, len(o))) < chance).sum(axis=1)  # one uniform window per video per draw
    out.update(rate=observed / len(o), random_rate=float(chance.mean()),
               p_value=float((1 + np.sum(null >= observed)) / (1 + permutations)))
    if worst_clean:
        pool = np.array(worst_faulty + worst_clean)
        dealt = pool[np.argsort(rng.random((permutations, len(pool))), axis=1)[:, : len(o)]]  # (draws, faulty)
        shuffled = o[rows, dealt].sum(axis=1)
        out.update(clean_rate=float(o[:, worst_clean].mean()),
                   clean_p_value=float((1 + np.sum(shuffled >= observed)) / (1 + permutations)))
    return out
