"""Score videos with an exported fine-tuned model: ``pecop score`` and :func:`score`.

A video is an mp4 (or any file decord reads) or a folder of frame images. Its clip is cut as the run's
loader cuts a test video: the format's official frame count spread evenly over the whole video, shortened to
the run's clip length, then the run's test transform (centre crop, no flip). A video that is a record of the
run's dataset (``data_root`` given) is read exactly as the run read it (its annotated span), with its
annotated difficulty and exemplar group; a test video of the run is scored against the exemplars it was
evaluated with, so the run's own test predictions are reproduced.

Score heads (USDL, MUSDL, MLP) give the expected score and, with a predicted distribution, its central 90 %
interval (:func:`~pecop_lib.heads.distribution_interval`); pair heads (CoRe, TSA) give the mean vote over
their exemplars, the exemplars' ids and the spread (standard deviation) of their votes.
"""

from __future__ import annotations

import csv
import io
import os
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from pecop_lib.atomic import atomic_write_text
from pecop_lib.config import resolve_device
from pecop_lib.data.sampling import linspace_positions, subsample
from pecop_lib.data.transforms import frames_of
from pecop_lib.data.video import open_source
from pecop_lib.finetune.data import open_finetune_data
from pecop_lib.finetune.export import ExportedModel, load_exported
from pecop_lib.heads import (
    ExemplarDraw,
    FeatureCache,
    USDLSpec,
    WindowFeatures,
    distribution_interval,
    encode_windows,
    exemplar_votes,
    group_members,
    vote_means,
)
from pecop_lib.outputs import progress
from pecop_lib.train.precision import autocast

VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp")
INTERVAL_COVERAGE = 0.9
CSV_COLUMNS: tuple[str, ...] = ("video", "score", "interval_low", "interval_high", "difficulty", "group",
                                "exemplars", "vote_spread")


@dataclass
class VideoScore:
    """One scored video (a row of the CSV).

    Attributes:
        video: The video as given.
        score: Predicted final score.
        interval: USDL/MUSDL: the central 90 % interval of the predicted distribution's final score.
        difficulty, group: What the prediction used (``None`` where the dataset has none).
        exemplars: CoRe/TSA: ids of the training videos voted with; ``vote_spread``: standard deviation of
            their votes (final-score scale).
    """

    video: str
    score: float
    interval: tuple[float, float] | None = None
    difficulty: float | None = None
    group: str | None = None
    exemplars: list[str] | None = None
    vote_spread: float | None = None


@dataclass
class ScoreReport:
    """What :func:`score` returns: the scored videos, and the ones that could not be scored, with why."""

    scores: list[VideoScore] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)

    def to_csv(self) -> str:
        """The scores as CSV text (:data:`CSV_COLUMNS`; ids of exemplars joined by ``;``)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for s in self.scores:
            low, high = s.interval if s.interval is not None else ("", "")
            writer.writerow([s.video, repr(s.score), low, high, "" if s.difficulty is None else s.difficulty,
                             s.group or "", ";".join(s.exemplars or []),
                             "" if s.vote_spread is None else s.vote_spread])
        return out.getvalue()


def find_videos(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The videos of ``paths``: a video file or a frame folder is one video; any other folder holds videos.

    Raises:
        FileNotFoundError: For a path that does not exist, or a folder holding no video.
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    found: list[Path] = []
    for item in map(Path, items):
        if not item.exists():
            raise FileNotFoundError(f"{item} does not exist")
        if item.is_file() or _is_frame_folder(item):
            found.append(item)
            continue
        inside = [p for p in sorted(item.iterdir())
                  if (p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES) or (p.is_dir() and _is_frame_folder(p))]
        if not inside:
            raise FileNotFoundError(f"{item} holds no video: expected {'/'.join(VIDEO_SUFFIXES)} files or folders "
                                    f"of {'/'.join(IMAGE_SUFFIXES)} frames")
        found.extend(inside)
    return found


def _is_frame_folder(path: Path) -> bool:
    return path.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir())


@dataclass
class VideoQuery:
    """A video ready to score: its name, test clip ``(3, T, H, W)``, difficulty, group and, for a record of the
    run's dataset, its id and the source positions the clip's frames come from."""

    name: str
    clip: torch.Tensor
    difficulty: float | None
    group: str | None
    record_id: str | None
    positions: np.ndarray


def run_splits(exported: ExportedModel, data_root: str | os.PathLike[str]) -> Any:
    """The run's dataset splits, read with its test transform (``FinetuneData``: ``reference`` and ``test``)."""
    clips = exported.card["clips"]
    return open_finetune_data(data_root, exported.setting, crop=clips["crop"], clip_frames=clips["clip_frames"],
                              seed=exported.card["seed"], resize=clips["resize"])


def records_by_path(exported: ExportedModel, data_root: str | os.PathLike[str], *,
                    data: Any = None) -> dict[Path, list[tuple[Any, int]]]:
    """``media path -> [(split dataset, index), ...]`` of the run's dataset (several where records are spans of one
    video, as MTL-AQA's dives of one event); ``data``: :func:`run_splits` already opened."""
    data = run_splits(exported, data_root) if data is None else data
    found: dict[Path, list[tuple[Any, int]]] = {}
    for dataset in (data.test, data.reference):  # a path in both splits is read as the test reads it
        for i in range(len(dataset)):
            found.setdefault(Path(dataset.media_path(i)).resolve(), []).append((dataset, i))
    return found


def _record_query(dataset: Any, index: int, name: str) -> VideoQuery:
    record = dataset.records[index]
    positions = dataset.sample_positions(index, dataset.source(index), dataset.rng(index))
    return VideoQuery(name, dataset[index]["clip"], record.difficulty, record.group, record.id, positions)


def split_queries(exported: ExportedModel, data_root: str | os.PathLike[str], split: str, *,
                  data: Any = None) -> list[VideoQuery]:
    """Every record of a split of the run's dataset (``"test"`` or ``"train"``), named by record id, in split order.

    Raises:
        ValueError: On another split name.
    """
    if split not in ("test", "train"):
        raise ValueError(f"split must be 'test' or 'train', got {split!r}")
    data = run_splits(exported, data_root) if data is None else data
    dataset = data.test if split == "test" else data.reference
    return [_record_query(dataset, i, dataset.records[i].id) for i in range(len(dataset))]


def record_query(exported: ExportedModel, data_root: str | os.PathLike[str], record_id: str) -> VideoQuery:
    """One record of the run's dataset by id (its test split first, then its training split), read as the run
    read it; only that record's clip is decoded.

    Raises:
        ValueError: If neither split has the record.
    """
    data = run_splits(exported, data_root)
    for dataset in (data.test, data.reference):
        for i, record in enumerate(dataset.records):
            if record.id == record_id:
                return _record_query(dataset, i, record_id)
    raise ValueError(f"{data_root} has no record {record_id!r} for {exported.setting.label}")


def _raw_clip(exported: ExportedModel, path: Path) -> tuple[torch.Tensor, np.ndarray]:
    clips = exported.card["clips"]
    length = clips["clip_frames"] or clips["frames"]
    source = open_source(path)
    if len(source) < length:
        raise ValueError(f"{path}: {len(source)} decodable frames, but the model's clips take {length} distinct "
                         "frames; a shorter video would repeat frames and change the pace the model saw")
    positions = linspace_positions(len(source), clips["frames"])
    if clips["clip_frames"]:
        positions = subsample(positions, clips["clip_frames"])
    with frames_of(str(path)):
        return exported.transform(source.read(positions), None), positions


def _inputs(exported: ExportedModel, name: str, given: Mapping[str, Any]) -> tuple[float | None, str | None]:
    """The difficulty and exemplar group of a video that is not a record of the run's dataset."""
    inputs = exported.card["inputs"]
    difficulty = given.get("difficulty")
    if inputs["difficulty"] and difficulty is None:
        raise ValueError(f"{name}: {exported.setting.dataset} scores need the dive's degree of difficulty; give it "
                         "(pecop score --difficulty D, or a --info CSV with a difficulty column)")
    difficulty = None if difficulty is None else float(difficulty)
    rule = inputs["group"]
    group = given.get("group")
    if group is None and rule["rule"] == "constant":
        group = rule["value"]
    elif group is None and rule["rule"] == "difficulty" and difficulty is not None:
        group = f"{difficulty:.1f}"
    if group is None and exported.setting.kind.pairs:
        raise ValueError(f"{name}: {exported.setting.kind.display} compares a video with training videos of its "
                         "exemplar group; name it (pecop score --group G, or a --info CSV with a group column)")
    return difficulty, None if group is None else str(group)


def video_query(exported: ExportedModel, path: str | os.PathLike[str], *,
                info: Mapping[str, Mapping[str, Any]] | None = None, defaults: Mapping[str, Any] | None = None,
                records: Mapping[Path, list[tuple[Any, int]]] | None = None) -> VideoQuery:
    """Read one video as the export's run would (see the module docstring and :func:`score`'s arguments).

    Args:
        exported: The model.
        path: A video file or frame folder.
        info, defaults: Difficulty and group of a video that is not a record (:func:`score`).
        records: :func:`records_by_path` of the run's dataset, or ``None``.

    Raises:
        ValueError, DataFormatError, OSError: An unreadable or too short video, missing difficulty or group, or a
            video several records of the dataset are spans of.
    """
    path = Path(path)
    record_of = (records or {}).get(path.resolve(), [])
    if len(record_of) > 1:
        ids = [dataset.records[i].id for dataset, i in record_of]
        raise ValueError(f"{path} holds {len(ids)} records of the dataset ({', '.join(ids[:5])}...): name the split "
                         "instead (pecop score --split test, or score(..., split='test'))")
    if record_of:
        dataset, index = record_of[0]
        return _record_query(dataset, index, str(path))
    info = info or {}
    given = {**(defaults or {}), **(info.get(str(path)) or info.get(path.name) or info.get(path.stem) or {})}
    difficulty, group = _inputs(exported, str(path), given)
    clip, positions = _raw_clip(exported, path)
    return VideoQuery(str(path), clip, difficulty, group, None, positions)


def exemplar_draw(exported: ExportedModel, queries: Sequence[VideoQuery]) -> ExemplarDraw:
    """Exemplars per query: a run's test video keeps its own; another draws from its group, seeded by its name."""
    bank = exported.card["exemplars"]
    members = group_members(bank["groups"])
    out = np.full((len(queries), bank["count"]), -1, dtype=np.int64)
    for q, query in enumerate(queries):
        own = bank["test_draw"].get(query.record_id) if query.record_id is not None else None
        if own is not None:
            out[q, : len(own)] = own
            continue
        pool = members.get(query.group)
        if pool is None:
            if bank["missing"] != "any":
                raise ValueError(f"{query.name}: no training video of group {query.group!r} to compare with (groups: "
                                 f"{sorted(members)})")
            pool = np.arange(len(bank["groups"]), dtype=np.int64)
        rng = np.random.default_rng([exported.card["seed"], zlib.crc32(Path(query.name).name.encode())])
        chosen = rng.permutation(pool)[: bank["count"]]
        out[q, : len(chosen)] = chosen
    return ExemplarDraw(out)


def _encode(exported: ExportedModel, queries: Sequence[VideoQuery], device: torch.device, amp: Any,
            show_progress: bool) -> WindowFeatures:
    model, size = exported.model, exported.card["eval_batch_size"]
    parts = []
    starts = range(0, len(queries), size)
    for start in progress(starts, desc="scoring", total=len(starts), disable=not show_progress):
        clips = torch.stack([q.clip for q in queries[start : start + size]]).to(device)
        with torch.inference_mode(), autocast(device, amp):
            parts.append(encode_windows(model.backbone, clips, exported.windowing, maps=model.kind.maps))
    feats = WindowFeatures.cat(parts)
    return WindowFeatures(feats.pooled.float(), None if feats.maps is None else feats.maps.float())


def _score_heads(exported: ExportedModel, queries: Sequence[VideoQuery], feats: WindowFeatures,
                 device: torch.device) -> list[VideoScore]:
    kind, head, card = exported.model.kind, exported.model.head, exported.card
    size = card["eval_batch_size"]
    spec = kind.distribution_spec(card["head"]["build"]["dataset_key"])
    out: list[VideoScore] = []
    video = feats.video()
    for start in range(0, len(queries), size):
        chunk = queries[start : start + size]
        difficulty = torch.tensor([1.0 if q.difficulty is None else q.difficulty for q in chunk], device=device)
        with torch.inference_mode():
            pred, dist = kind.score(head, video[start : start + size].to(device), difficulty)
            interval = None
            if dist is not None and isinstance(spec, USDLSpec):
                interval = distribution_interval(dist, spec, difficulty, coverage=INTERVAL_COVERAGE,
                                                 seed=card["seed"]).cpu().tolist()
        for i, (q, p) in enumerate(zip(chunk, pred.tolist(), strict=True)):
            out.append(VideoScore(q.name, float(p), None if interval is None else tuple(interval[i]), q.difficulty,
                                  q.group))
    return out


def _pair_heads(exported: ExportedModel, queries: Sequence[VideoQuery], feats: WindowFeatures,
                device: torch.device) -> list[VideoScore]:
    model, card = exported.model, exported.card
    kind, bank = model.kind, card["exemplars"]

    def relative(query: WindowFeatures, exemplar: WindowFeatures, s_exemplar: torch.Tensor) -> torch.Tensor:
        return kind.relative(model.head, query, exemplar, s_exemplar.float())

    def no_clip(_index: int) -> torch.Tensor:
        raise KeyError("every feature is precomputed")

    def to(f: WindowFeatures) -> WindowFeatures:
        return WindowFeatures(f.pooled.to(device), None if f.maps is None else f.maps.to(device))

    draw = exemplar_draw(exported, queries)
    q_idx, votes = exemplar_votes(
        relative, model.backbone, exported.windowing, query_clip=no_clip, num_queries=len(queries),
        exemplar_clip=no_clip, draw=draw, exemplar_scores=bank["values"], maps=kind.maps,
        query_cache=FeatureCache.filled(to(feats), exported.windowing),
        exemplar_cache=FeatureCache.filled(to(exported.bank), exported.windowing))  # type: ignore[arg-type]
    records = [SimpleNamespace(difficulty=q.difficulty) for q in queries]
    dataset_key = card["head"]["build"]["dataset_key"]
    final = kind.final_scores(vote_means(q_idx, votes, len(queries)).cpu().numpy(), records, dataset_key)
    votes_np, out = votes.cpu().numpy(), []
    for q, query in enumerate(queries):
        mine = votes_np[q_idx == q]
        scale = kind.final_scores(mine.astype(np.float64), [records[q]] * len(mine), dataset_key)
        ids = [bank["ids"][i] for i in draw.indices[q] if i >= 0]
        out.append(VideoScore(query.name, float(final[q]), None, query.difficulty, query.group, ids,
                              float(np.std(scale))))
    return out


def score(model: str | os.PathLike[str] | ExportedModel, videos: str | os.PathLike[str] | Iterable[Any] = (), *,
          info: Mapping[str, Mapping[str, Any]] | None = None, defaults: Mapping[str, Any] | None = None,
          data_root: str | os.PathLike[str] | None = None, split: str | None = None,
          device: str | torch.device = "auto", protocol: str = "honest", show_progress: bool = True) -> ScoreReport:
    """Score videos with an exported model (see the module docstring).

    Args:
        model: An export folder, a run folder (its ``export/<protocol>``) or a loaded :class:`ExportedModel`.
        videos: Video files, frame folders, or folders holding them (:func:`find_videos`).
        info: Per video (its path, file name or stem): ``{"difficulty": D, "group": G}`` for videos that are not
            records of ``data_root`` (diving needs the difficulty; FineDiving's pair heads the dive number).
        defaults: The same keys, for every video ``info`` does not name (``pecop score --difficulty/--group``).
        data_root: The run's dataset folder (e.g. ``world["PD4T"]``): its records are read as the run read them.
        split: With ``data_root``: score every record of this split (``"test"``: the run's test videos, in order,
            named by record id) before ``videos``.
        device: Where to run (``"auto"``).
        protocol: Which export of a run folder.
        show_progress: Progress bar over the batches.

    Returns:
        The :class:`ScoreReport`; a video that cannot be read or scored is in ``failures`` with the reason, and the
        others are scored.

    Raises:
        FileNotFoundError: No export at ``model``, or a video path that does not exist.
        ModelCardError: An export whose card does not match its weights (:func:`load_exported`).
    """
    exported = model if isinstance(model, ExportedModel) else load_exported(model, protocol=protocol)
    target = resolve_device(device)
    exported.model.to(target).eval()
    if split is not None and data_root is None:
        raise ValueError(f"split={split!r} needs data_root, the run's dataset folder")
    data = run_splits(exported, data_root) if data_root is not None else None
    records = records_by_path(exported, data_root, data=data) if data is not None else {}
    report = ScoreReport()
    queries: list[VideoQuery] = split_queries(exported, data_root, split, data=data) if split is not None else []
    for path in find_videos(videos) if videos else []:
        try:
            queries.append(video_query(exported, path, info=info, defaults=defaults, records=records))
        except Exception as exc:  # noqa: BLE001 (any unreadable video is reported by name; the others are scored)
            report.failures.append((str(path), f"{type(exc).__name__}: {exc}"))
    if not queries:
        return report
    amp = getattr(torch, exported.card["amp_dtype"]) if exported.card["amp_dtype"] else None
    feats = _encode(exported, queries, target, amp, show_progress)
    scorer = _pair_heads if exported.model.kind.pairs else _score_heads
    report.scores = scorer(exported, queries, feats, target)
    return report


def write_scores(report: ScoreReport, path: str | os.PathLike[str]) -> Path:
    """Write :meth:`ScoreReport.to_csv` atomically; return the path."""
    path = Path(path)
    atomic_write_text(path, report.to_csv())
    return path


def read_info(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """A ``--info`` CSV: a ``video`` column (path, file name or stem) and ``difficulty`` and/or ``group`` columns.

    Raises:
        ValueError: Without a ``video`` column, with an unknown column, or a difficulty that is not a number
            (naming the file and the row).
    """
    path = Path(path)
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = set(rows[0]) if rows else set()
    unknown = sorted(columns - {"video", "difficulty", "group"})
    if "video" not in columns or unknown:
        raise ValueError(f"{path}: expected the columns video, difficulty, group (video required); got "
                         f"{sorted(columns)}")
    info: dict[str, dict[str, Any]] = {}
    for number, row in enumerate(rows, start=2):
        entry: dict[str, Any] = {}
        if row.get("difficulty"):
            try:
                entry["difficulty"] = float(row["difficulty"])
            except ValueError:
                raise ValueError(f"{path}, row {number}: difficulty {row['difficulty']!r} is not a number") from None
        if row.get("group"):
            entry["group"] = row["group"]
        info[row["video"]] = entry
    return info
