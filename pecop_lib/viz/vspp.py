"""VSPP and continual-pretraining figures (notebook 03): timelines, clip frames, curves, adapters, cost.

Pure functions from numbers to matplotlib figures; they never sample, train or read video.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pecop_lib.viz.pipeline import FROZEN, HEAD, TRAINED

SEGMENT_COLOR = "#e15759"


def plot_vspp_timelines(
    timelines: Mapping[str, tuple[Sequence[int], Sequence[int]]], title: str, *, num_frames: int | None = None
) -> Any:
    """Which frame each clip position reads, one panel per clip, the re-paced segment in red.

    Args:
        timelines: ``{panel title: (frame numbers, clip positions inside the segment)}``; frame
            numbers are 1-based, as the samplers return them.
        title: Figure title.
        num_frames: Draw the video's last frame as a dashed line in panels that come near it or wrap
            around (where the official sampler jumps back to frame 1).

    Returns:
        The figure: frame number (y) against clip position (x); segment steps in red.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(timelines), figsize=(4.6 * len(timelines), 3.6), squeeze=False)
    for ax, (name, (frames, segment)) in zip(axes[0], timelines.items(), strict=True):
        frames = np.asarray(frames)
        positions = np.arange(len(frames))
        inside = np.isin(positions, list(segment))
        ax.plot(positions, frames, color="#888888", lw=1, zorder=1)
        ax.scatter(positions[~inside], frames[~inside], s=14, color=HEAD, label="normal pace", zorder=2)
        ax.scatter(positions[inside], frames[inside], s=18, color=SEGMENT_COLOR, label="re-paced segment", zorder=3)
        if len(segment):
            ax.axvspan(min(segment) - 0.5, max(segment) + 0.5, color=SEGMENT_COLOR, alpha=0.08)
        if num_frames is not None and (np.any(np.diff(frames) < 0) or frames.max() > 0.8 * num_frames):
            ax.axhline(num_frames, color="#333333", ls="--", lw=0.8)
            ax.text(0, num_frames, " last frame", va="top", fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("position in the clip")
    axes[0][0].set_ylabel("frame number read (1-based)")
    axes[0][0].legend(frameon=False, fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_clip_frames(frames: np.ndarray, numbers: Sequence[int], segment: Sequence[int], title: str, *,
                     columns: int = 8) -> Any:
    """The decoded frames of one clip in reading order, frames of the re-paced segment framed in red.

    Args:
        frames: uint8 ``(T, H, W, 3)``.
        numbers: The 1-based frame number of each frame (captions).
        segment: Clip positions inside the segment.
        title: Figure title.
        columns: Frames per row.
    """
    import matplotlib.pyplot as plt

    count = len(frames)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.3 * columns, 1.45 * rows + 0.5), squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if index >= count:
            ax.axis("off")
            continue
        ax.imshow(frames[index])
        inside = index in set(segment)
        for spine in ax.spines.values():
            spine.set_color(SEGMENT_COLOR if inside else "#bbbbbb")
            spine.set_linewidth(3 if inside else 0.5)
        ax.set_title(f"#{numbers[index]}", fontsize=7, color=SEGMENT_COLOR if inside else "#333333", pad=2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_label_histograms(labels: Mapping[str, Sequence[int]], widths: Mapping[str, int], title: str) -> Any:
    """How often each class of a head is a target, one panel per sampler (dead classes show as empty bars).

    Args:
        labels: ``{panel title: drawn labels}``.
        widths: ``{panel title: number of classes of the head}``.
        title: Figure title.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(labels), figsize=(3.6 * len(labels), 2.8), squeeze=False)
    for ax, (name, values) in zip(axes[0], labels.items(), strict=True):
        counts = np.bincount(np.asarray(values, dtype=int), minlength=widths[name])
        ax.bar(range(widths[name]), counts / max(counts.sum(), 1), color=[HEAD if c else "#dddddd" for c in counts])
        for k, c in enumerate(counts):
            if not c:
                ax.text(k, 0.01, "never\na target", ha="center", fontsize=7)
        ax.set_xticks(range(widths[name]))
        ax.set(title=name, xlabel="class (head output)", ylabel="fraction of clips")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(values) < window:
        return values
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


def plot_pretext_curves(
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    metrics: Sequence[str],
    title: str,
    *,
    chance: Mapping[str, float] | None = None,
    window: int = 1,
) -> Any:
    """Per-step training curves of one or more runs, one panel per metric.

    Args:
        histories: ``{run label: step records}`` (``history["steps"]`` of a training record; each
            record has ``"step"`` and the metrics).
        metrics: Metric names to plot, e.g. ``("loss", "speed_acc", "segment_acc")``.
        title: Figure title.
        chance: ``{metric: chance level}`` drawn as dashed lines.
        window: Moving-average window over steps (1: raw).
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for label, steps in histories.items():
            points = [(s["step"], s[metric]) for s in steps if metric in s]
            if not points:
                continue
            x, y = map(np.asarray, zip(*points, strict=True))
            smooth = _smooth(y, window)
            ax.plot(x[len(x) - len(smooth):], smooth, label=label)
        if chance and metric in chance:
            ax.axhline(chance[metric], color="#333333", ls="--", lw=0.9, label="chance")
        ax.set(title=metric, xlabel="optimizer step")
    axes[0][0].legend(frameon=False, fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_heldout_curves(
    runs: Mapping[str, tuple[Sequence[Mapping[str, float]], Sequence[Mapping[str, float]]]],
    metrics: Sequence[str],
    title: str,
    *,
    chance: Mapping[str, float] | None = None,
) -> Any:
    """Per-epoch pretext accuracy on held-out videos (solid) beside the training average (dashed).

    Args:
        runs: ``{run label: (training epoch records, held-out epoch records)}``: the stage-2
            record's ``history["epochs"]`` (``"epoch"``, metrics averaged over the epoch's training
            batches) and ``heldout["epochs"]`` (``"epoch"`` from 0, before training; metrics on
            fixed clips of test-split videos).
        metrics: Metric names, e.g. ``("segment_acc", "speed_acc")``.
        title: Figure title.
        chance: ``{metric: chance level}`` drawn as grey lines.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes[0], metrics, strict=True):
        for (label, (train, heldout)), color in zip(runs.items(), colors):
            held = [(r["epoch"], r[metric]) for r in heldout if metric in r]
            if held:
                ax.plot(*zip(*held, strict=True), marker="o", ms=3, color=color, label=f"{label}: held-out videos")
            seen = [(r["epoch"], r[metric]) for r in train if metric in r]
            if seen:
                ax.plot(*zip(*seen, strict=True), ls="--", color=color, alpha=0.7, label=f"{label}: training batches")
        if chance and metric in chance:
            ax.axhline(chance[metric], color="#333333", ls=":", lw=1.0, label="chance")
        ax.set(title=metric, xlabel="epoch", ylim=(0, 1))
    axes[0][0].legend(frameon=False, fontsize=7)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_adapter_alphas(alphas: Mapping[str, np.ndarray], title: str) -> Any:
    """Distribution of each adapter's per-channel scale ``alpha`` (initialised to 1), as ``alpha - 1``.

    Args:
        alphas: ``{site: alpha values (C,)}``.
        title: Figure title.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.4))
    sites = list(alphas)
    ax.boxplot([np.asarray(alphas[s], dtype=float) - 1.0 for s in sites], showfliers=False)
    ax.axhline(0, color="#333333", lw=0.8, ls="--")
    ax.set_xticks(range(1, len(sites) + 1), sites, fontsize=7)
    ax.set_ylabel("alpha - 1 (per channel)")
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_cost_comparison(measured: Sequence[Mapping[str, Any]], paper: Mapping[str, Mapping[str, float]],
                         title: str) -> Any:
    """Paper Table 2 as bars: trainable parameters, stored size and wall time, measured and published.

    Args:
        measured: Rows with ``"strategy"`` (``"HPT"``, ``"PECoP"``), ``"trainable_params"``,
            ``"stored_bytes"`` and ``"seconds_per_epoch"`` (from :func:`pecop_lib.pretrain.stage2_artifact.stage2_costs`).
        paper: ``{strategy: {"trainable parameters": ..., "stored size (MB)": ...}}`` (the paper's table2 rows).
        title: Figure title.
    """
    import matplotlib.pyplot as plt

    panels = (("trainable parameters", "trainable_params", 1.0, "trainable parameters"),
              ("stored size (MB)", "stored_bytes", 1e6, "stored size (MB)"),
              ("seconds per epoch", "seconds_per_epoch", 1.0, None))
    strategies = [row["strategy"] for row in measured]
    fig, axes = plt.subplots(1, len(panels), figsize=(12, 3.3))
    xs = np.arange(len(strategies))
    for ax, (label, key, scale, paper_key) in zip(axes, panels, strict=True):
        ours = [row[key] / scale for row in measured]
        if paper_key is None:
            ax.bar(xs, ours, 0.5, color=TRAINED, label="this run")
        else:
            ax.bar(xs - 0.2, ours, 0.4, color=TRAINED, label="this run")
            theirs = [paper.get(s, {}).get(paper_key, np.nan) for s in strategies]
            ax.bar(xs + 0.2, theirs, 0.4, color=FROZEN, hatch="//", edgecolor="#333333", label="paper (approx.)")
        ax.set_xticks(xs, strategies)
        ax.set_title(label, fontsize=10)
        if key != "seconds_per_epoch":
            ax.set_yscale("log")
    axes[0].legend(frameon=False, fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
