"""The bad-input catalogue: each case feeds one bad input to a public loader or command and checks its error.

Every case asserts the *exact* error type, that the message names the offending file, key or value,
and that it contains the fix (:attr:`Case.fix`, a literal fragment of the message). The table in
``docs/troubleshooting.md`` is rendered from :data:`CASES`; ``test_troubleshooting_doc_is_current``
fails when the two differ. Regenerate the page after changing a case with::

    .venv/bin/python tests/reliability/test_reliability_catalogue.py

Conditions a test cannot create for real are simulated and say so: a CPU-only machine (CUDA
reported absent), a read-only folder when the tests run as root (who may write anywhere), a full
disk (the checkpoint writer fails with ``ENOSPC`` half-way, as the kernel would report it).
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _reliability_support import REPO_ROOT, hold_folder, read_json, reliability_world, tiny_data, tiny_trainer

from pecop_lib.atomic import CorruptFileError, atomic_write_json
from pecop_lib.config import ConfigError, resolve, resolve_device
from pecop_lib.data import (
    JIGSAWS,
    MTLAQA,
    PD4T,
    DataFormatError,
    FineDiving,
    KineticsActions,
    UnsafePickleError,
    VideoDecodeError,
)
from pecop_lib.data.safe_pickle import dump_pickle, safe_load
from pecop_lib.data.sampling import clamp
from pecop_lib.data.synthetic import WorldSpec, generate_world
from pecop_lib.finetune import Setting
from pecop_lib.finetune.runs import check_backbone_split, finetune_command, run_folder
from pecop_lib.models import build_backbone, load_adapter_checkpoint, load_weights, save_adapter_checkpoint
from pecop_lib.models.loading import WeightsMismatchError
from pecop_lib.notebooks import NotebookParameterError, NotebookRunError, run_notebooks
from pecop_lib.outputs import prepare_out_dir
from pecop_lib.pretrain.artifacts import STAGE2_RECORD, scratch_source
from pecop_lib.pretrain.pipeline import pretrain_run
from pecop_lib.pretrain.stage2_artifact import Stage2Spec
from pecop_lib.pretrain.targets import pretraining_videos
from pecop_lib.run_lock import RunFolderLockedError
from pecop_lib.train import NonFiniteLossError
from pecop_lib.train.checkpoint import LATEST_FILE, load_checkpoint
from pecop_lib.train.context import RunContext

DOC = REPO_ROOT / "docs" / "troubleshooting.md"


@dataclass
class Ctx:
    """What a case may use: a scratch folder, the suite's tiny world, pytest's monkeypatch."""

    tmp: Path
    world_root: Path
    monkeypatch: pytest.MonkeyPatch

    def copy(self, dataset: str) -> Path:
        """A private copy of one dataset of the world (cases modify it)."""
        target = self.tmp / dataset
        shutil.copytree(self.world_root / dataset, target)
        return target


@dataclass(frozen=True)
class Triggered:
    """A prepared bad input: ``call()`` must raise; ``named`` must all appear in the message."""

    call: Callable[[], Any]
    named: list[str]
    after: Callable[[], None] | None = None  # checks once the error was raised (e.g. nothing was lost)


@dataclass(frozen=True)
class Case:
    """One row of the catalogue.

    Attributes:
        id: Test id.
        situation: What went wrong (the "symptom" column).
        error: The exact exception type raised.
        names: What the message names (documentation of ``Triggered.named``).
        fix: A literal fragment of the message that tells the user what to do.
        trigger: ``ctx -> Triggered``.
        note: Extra text for the error column (e.g. the errno).
    """

    id: str
    situation: str
    error: type[BaseException]
    names: str
    fix: str
    trigger: Callable[[Ctx], Triggered] = field(repr=False)
    note: str = ""


CASES: list[Case] = []


def case(id: str, situation: str, error: type[BaseException], names: str, fix: str, note: str = "") -> Callable:
    """Register the decorated ``ctx -> Triggered`` function as a catalogue case."""
    def register(trigger: Callable[[Ctx], Triggered]) -> Callable[[Ctx], Triggered]:
        CASES.append(Case(id, situation, error, names, fix, trigger, note))
        return trigger

    return register


# ------------------------------------------------------------------------------------- helpers
def write_empty_mp4(path: Path) -> None:
    """An mp4 container with a video stream header and no frame (what an aborted recording leaves)."""
    import av

    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()


def write_mp4_of_width(path: Path, width: int) -> None:
    """A valid 8-frame H.264 mp4, ``width`` x 32 px, written with PyAV (``write_mp4`` refuses widths decord misreads)."""
    import av

    frames = np.random.default_rng(width).integers(0, 256, (8, 32, width, 3), dtype=np.uint8)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, 32, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def read_only(ctx: Ctx, folder: Path) -> None:
    """Make ``folder`` read-only; as root (who writes anyway) simulate it: creating files or folders there fails."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)  # stays empty: pytest can still remove it
    try:
        probe = tempfile.mkstemp(dir=folder)
    except PermissionError:
        return  # really read-only
    os.close(probe[0])
    os.unlink(probe[1])
    inside = str(folder)
    real_mkdir, real_mkstemp = os.mkdir, tempfile.mkstemp

    def mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        if str(path).startswith(inside):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        real_mkdir(path, *args, **kwargs)

    def mkstemp(*args: Any, dir: Any = None, **kwargs: Any) -> tuple[int, str]:
        if dir is not None and str(dir).startswith(inside):
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    ctx.monkeypatch.setattr(os, "mkdir", mkdir)
    ctx.monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


# ---------------------------------------------------------------------------------- videos
def _pd4t(ctx: Ctx) -> PD4T:
    return PD4T(ctx.copy("PD4T"), "Gait", "train", crop=32)


@case("corrupt-mp4", "a video file is corrupt (garbage bytes)", VideoDecodeError, "the video file",
      "copy it again or re-encode it")
def _corrupt_mp4(ctx: Ctx) -> Triggered:
    ds = _pd4t(ctx)
    ds.video_path(0).write_bytes(b"\x00\x00\x00\x18ftypisom" + os.urandom(4000))
    return Triggered(lambda: ds[0], [str(ds.video_path(0))])


@case("truncated-mp4", "a video file is truncated (interrupted copy)", VideoDecodeError, "the video file",
      "copy it again or re-encode it")
def _truncated_mp4(ctx: Ctx) -> Triggered:
    ds = _pd4t(ctx)
    path = ds.video_path(1)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return Triggered(lambda: ds[1], [str(path)])


@case("zero-frame-mp4", "a video container holds no frame", VideoDecodeError, "the video file",
      "copy it again or re-encode it")
def _zero_frame_mp4(ctx: Ctx) -> Triggered:
    ds = _pd4t(ctx)
    write_empty_mp4(ds.video_path(2))
    return Triggered(lambda: ds[2], [str(ds.video_path(2))])


@case("empty-video-file", "a video file is empty (0 bytes)", VideoDecodeError, "the video file",
      "re-download or re-encode it")
def _empty_video(ctx: Ctx) -> Triggered:
    ds = _pd4t(ctx)
    ds.video_path(0).write_bytes(b"")
    return Triggered(lambda: ds[0], [str(ds.video_path(0)), "0 bytes"])


@case("mp4-width-decord-misreads", "an mp4 video is 48 px wide (decord misreads the frames of widths 16, 24, 48 "
      "and 72 px)", VideoDecodeError, "the video file and its size", "re-encode it to a width that is a multiple of 32")
def _narrow_mp4(ctx: Ctx) -> Triggered:
    ds = _pd4t(ctx)
    write_mp4_of_width(ds.video_path(0), 48)
    return Triggered(lambda: ds[0], [str(ds.video_path(0)), "48x32 px"])


@case("synthetic-size-decord-misreads", "a synthetic world size whose mp4 videos decord would misread "
      "(data_synthetic_size=48)", ValueError, "the size and the config key",
      "use another even width (a multiple of 32, or at least 96 px, is always safe)")
def _narrow_world(ctx: Ctx) -> Triggered:
    spec = WorldSpec(size=48, aqa_videos=8, jigsaws_trials=1, action_videos=2, action_frames=8)
    root = ctx.tmp / "world"

    def nothing_written() -> None:
        assert not root.exists(), f"{root} was created before the size was refused"

    return Triggered(lambda: generate_world(root, spec), ["synthetic world size 48", "data_synthetic_size"],
                     after=nothing_written)


@case("video-shorter-than-clip", "a video has fewer frames than one clip needs", VideoDecodeError,
      "the video file, its frame count and the frames needed", "re-extract or re-encode this video, or drop it")
def _short_video(ctx: Ctx) -> Triggered:
    root = ctx.copy("Kinetics-synth")
    ds = KineticsActions(root, "train", clip_len=64, crop=32)  # the world's action videos have 16 frames
    return Triggered(lambda: ds[0], [str(root / ds.entries[0].relative_path()), "only 16 decodable", "at least 64"])


# ---------------------------------------------------------------------------------- frames
@case("missing-frame-finediving", "a frame file is missing from a FineDiving clip folder", VideoDecodeError,
      "the missing frame file", "re-extract the frames of this video")
def _missing_frame_finediving(ctx: Ctx) -> Triggered:
    root = ctx.copy("FineDiving")
    key = FineDiving(root, "train", crop=32).keys[0]
    folder = root / "FINADiving_MTL_256s" / str(key[0]) / str(key[1])
    missing = sorted(folder.glob("*.jpg"))[3]
    missing.unlink()
    return Triggered(lambda: FineDiving(root, "train", crop=32), [str(missing)])


@case("missing-frame-mtl-aqa", "a frame file is missing from an MTL-AQA event folder (later frames would shift)",
      VideoDecodeError, "the missing frame file", "re-extract the frames of this video")
def _missing_frame_mtl(ctx: Ctx) -> Triggered:
    root = ctx.copy("MTL-AQA")
    folder = MTLAQA(root, "train", crop=32).folder(0)
    missing = sorted(folder.glob("*.jpg"))[5]
    missing.unlink()
    return Triggered(lambda: MTLAQA(root, "train", crop=32)[0], [str(missing)])


@case("frames-smaller-than-crop", "a dataset's frames are smaller than the crop (e.g. 32 px frames read at 224 px)",
      DataFormatError, "the video, the record and both sizes", "set a resize or a smaller crop size")
def _smaller_than_crop(ctx: Ctx) -> Triggered:
    ds = PD4T(ctx.copy("PD4T"), "Gait", "train", crop=224)
    return Triggered(lambda: ds[0], [str(ds.video_path(0)), ds.records[0].id, "smaller than the crop 224"])


@case("corrupt-jpeg", "a frame JPEG is corrupt", VideoDecodeError, "the frame file", "re-extract this frame")
def _corrupt_jpeg(ctx: Ctx) -> Triggered:
    ds = MTLAQA(ctx.copy("MTL-AQA"), "test", crop=32)
    source = ds.source(0)
    positions = clamp(ds.sample_positions(0, source, ds.rng(0)), len(source))
    frame = source.files[int(positions[len(positions) // 2])]
    frame.write_bytes(b"not a jpeg")
    return Triggered(lambda: ds[0], [str(frame)])


# ------------------------------------------------------------------------------ annotations
def _mtl_annotations(ctx: Ctx, edit: Callable[[dict], None]) -> tuple[Path, Path, Any]:
    """A copy of MTL-AQA whose first annotation record was changed by ``edit``: (root, file, key)."""
    root = ctx.copy("MTL-AQA")
    path = MTLAQA(root, "train", crop=32).annotation_file
    data = safe_load(path)
    key = next(iter(data))
    edit(data[key])
    dump_pickle(data, path)
    return root, path, key


@case("annotation-missing-key", "an annotation record lacks a key (MTL-AQA final_score)", DataFormatError,
      "the annotation file, the record and the missing key",
      "use the released final_annotations_dict_with_dive_number.pkl or augmented_final_annotations_dict.pkl")
def _missing_key(ctx: Ctx) -> Triggered:
    root, path, key = _mtl_annotations(ctx, lambda rec: rec.pop("final_score"))
    return Triggered(lambda: MTLAQA(root, "train", crop=32), [str(path), repr(key), "'final_score'"])


def _mtl_splits(ctx: Ctx, edit: Callable[[list, list], None]) -> tuple[Path, Path, Path]:
    """A copy of MTL-AQA whose split files were changed by ``edit(train, test)``: (root, train file, test file)."""
    root = ctx.copy("MTL-AQA")
    info = MTLAQA(root, "train", crop=32).annotation_file.parent
    train_path, test_path = info / "train_split_0.pkl", info / "test_split_0.pkl"
    train, test = safe_load(train_path), safe_load(test_path)
    edit(train, test)
    dump_pickle(train, train_path)
    dump_pickle(test, test_path)
    return root, train_path, test_path


@case("split-lists-a-video-twice", "a split file lists a video twice (the training set silently doubled)",
      DataFormatError, "the split file, the key and how many repeat", "remove the repeats")
def _split_twice(ctx: Ctx) -> Triggered:
    root, train_path, _ = _mtl_splits(ctx, lambda train, test: train.append(train[0]))
    key = tuple(safe_load(train_path)[0])
    return Triggered(lambda: MTLAQA(root, "test", crop=32), [str(train_path), repr(key), "listed 2 times"])


@case("test-video-in-training", "a test video also appears in the training split (leakage)", DataFormatError,
      "both split files, a shared key and their number", "a video is in training or in test, never both")
def _leak(ctx: Ctx) -> Triggered:
    root, train_path, test_path = _mtl_splits(ctx, lambda train, test: train.append(test[0]))
    key = tuple(safe_load(test_path)[0])
    return Triggered(lambda: MTLAQA(root, "train", crop=32), [str(train_path), str(test_path), repr(key), "1 key(s)"])


@case("empty-split", "a split file lists no video", DataFormatError, "the split file",
      "use the dataset's official split files")
def _empty_split(ctx: Ctx) -> Triggered:
    root, _, test_path = _mtl_splits(ctx, lambda train, test: test.clear())
    return Triggered(lambda: MTLAQA(root, "train", crop=32), [str(test_path), "empty"])


@case("score-out-of-range", "a score is outside its valid range (MTL-AQA final score > 30 x difficulty)",
      DataFormatError, "the annotation file, the record and the value", "correct the record")
def _score_range(ctx: Ctx) -> Triggered:
    def edit(rec: dict) -> None:
        rec["final_score"] = 31.0 * rec["difficulty"]

    root, path, key = _mtl_annotations(ctx, edit)
    return Triggered(lambda: MTLAQA(root, "train", crop=32), [str(path), repr(key), "final_score"])


@case("annotation-not-finite", "a score is NaN or infinite (here: one MTL-AQA judge score is NaN)", DataFormatError,
      "the annotation file, the record, the field and the value", "correct the record")
def _not_finite(ctx: Ctx) -> Triggered:
    def edit(rec: dict) -> None:
        rec["judge_scores"] = np.where(np.arange(7) == 2, np.nan, np.asarray(rec["judge_scores"], dtype=np.float64))

    root, path, key = _mtl_annotations(ctx, edit)
    return Triggered(lambda: MTLAQA(root, "train", crop=32), [str(path), repr(key), "judge_scores[2] is nan"])


@case("annotation-not-a-whole-number", "a whole-number field holds a fraction (a JIGSAWS sub-score of 3.5, once "
      "truncated to 3)", DataFormatError, "the annotation file, the record, the field and the value",
      "correct the record")
def _not_whole(ctx: Ctx) -> Triggered:
    root = ctx.copy("JIGSAWS")
    path = root / "info" / "label.pkl"
    labels = safe_load(path)
    trial = sorted(labels)[0]
    labels[trial] = [2, 3, 3.5, 2, 4, 3]
    dump_pickle(labels, path)
    return Triggered(lambda: JIGSAWS(root, "Suturing", 0, crop=32), [str(path), repr(trial), "sub-scores[2] 3.5"])


@case("annotation-csv-not-utf8", "an annotation CSV is not UTF-8 (here Latin-1; a UTF-8 byte order mark is accepted)",
      DataFormatError, "the file, the byte and its offset", "save it again as UTF-8")
def _not_utf8(ctx: Ctx) -> Triggered:
    root = ctx.copy("PD4T")
    path = root / "Annotations" / "Gait" / "train.csv"
    path.write_bytes(path.read_bytes() + "caf\u00e9_001,90,1\n".encode("latin-1"))
    return Triggered(lambda: PD4T(root, "Gait", "train", crop=32), [str(path), "byte 0xe9"])


@case("special-file-in-data-root", "a FIFO (named pipe), socket or device stands where an annotation file, video or "
      "frame should be (reading it would block `pecop doctor` forever)", DataFormatError, "the path and what it is",
      "replace it with the real file")
def _fifo(ctx: Ctx) -> Triggered:
    root = ctx.copy("MTL-AQA")
    path = MTLAQA(root, "train", crop=32).annotation_file
    path.unlink()
    os.mkfifo(path)
    return Triggered(lambda: MTLAQA(root, "train", crop=32), [str(path), "a FIFO (named pipe)"])


@case("declared-frame-count-differs", "a video has another number of frames than its annotation declares (a "
      "truncated copy; PD4T num_frames)", DataFormatError, "the video, both counts and the record",
      "copy it again, or correct num_frames")
def _frame_count(ctx: Ctx) -> Triggered:
    root = ctx.copy("PD4T")
    path = root / "Annotations" / "Gait" / "train.csv"
    rows = path.read_text().splitlines()
    video_id, frames, score = rows[0].split(",")
    path.write_text("\n".join([f"{video_id},{int(frames) + 30},{score}"] + rows[1:]) + "\n")
    ds = PD4T(root, "Gait", "train", crop=32)
    return Triggered(lambda: ds[0], [str(ds.video_path(0)), f"declares {int(frames) + 30}", video_id])


@case("finediving-label-count", "FineDiving frame labels and frame files differ in number (FineDiving issue #1)",
      DataFormatError, "the annotation file, the record and the frame folder",
      "use the re-released annotations or re-extract the clip")
def _label_mismatch(ctx: Ctx) -> Triggered:
    root = ctx.copy("FineDiving")
    path = root / "Annotations" / "fine-grained_annotation_aqa.pkl"
    data = safe_load(path)
    key = FineDiving(root, "train", crop=32).keys[0]
    data[key][4] = np.asarray(data[key][4])[:-5]
    dump_pickle(data, path)
    return Triggered(lambda: FineDiving(root, "train", crop=32), [str(path), repr(key), "FINADiving_MTL_256s"])


@case("unsafe-annotation-pickle", "an annotation pickle would run code when loaded", UnsafePickleError,
      "the file and the global it asked for", "convert it to plain data")
def _unsafe_pickle(ctx: Ctx) -> Triggered:
    root = ctx.copy("MTL-AQA")
    path = MTLAQA(root, "train", crop=32).annotation_file
    path.write_bytes(b"cos\nsystem\n(S'echo hacked'\ntR.")  # os.system("echo hacked"), protocol 0
    return Triggered(lambda: MTLAQA(root, "train", crop=32), [str(path), "os.system"])


# ------------------------------------------------------------------------------- names
@case("unknown-dataset", "an unknown dataset name", ValueError, "the name and the valid names", "choose one of")
def _unknown_dataset(ctx: Ctx) -> Triggered:
    return Triggered(lambda: pretraining_videos(ctx.world_root / "MTL_AQA", "MTL_AQA"), ["'MTL_AQA'", "'MTL-AQA'"])


@case("unknown-task", "an unknown task name (PD4T, JIGSAWS)", ValueError, "the dataset, the task and the valid tasks",
      "needs a task, one of")
def _unknown_task(ctx: Ctx) -> Triggered:
    return Triggered(lambda: Setting("usdl", "PD4T", "gait"), ["'gait'", "'Gait'"])


@case("jigsaws-pretraining-without-fold", "JIGSAWS continual pretraining without the test fold it is for",
      ValueError, "the dataset, the value and the valid folds", "one of (0, 1, 2, 3)")
def _jigsaws_no_fold(ctx: Ctx) -> Triggered:
    return Triggered(lambda: pretraining_videos(ctx.world_root / "JIGSAWS", "JIGSAWS", task="Suturing"),
                     ["JIGSAWS", "fold=None"])


@case("backbone-pretrained-for-another-fold", "fine-tuning a JIGSAWS fold on a backbone continually pretrained for "
      "another fold (its pretraining videos include this fold's test trials)", ValueError,
      "the task, both folds and the command for the right backbone", "pecop pretrain --fold 0")
def _other_fold(ctx: Ctx) -> Triggered:
    folder = ctx.tmp / "stage2-fold2"
    folder.mkdir()
    spec = asdict(Stage2Spec(dataset="JIGSAWS", task="Suturing", fold=2))
    atomic_write_json(folder / STAGE2_RECORD, {"spec": spec, "source": scratch_source().to_dict(), "weights": None})
    setting = Setting("musdl", "JIGSAWS", "Suturing", 0)
    return Triggered(lambda: check_backbone_split(folder, [setting]), ["Suturing", "fold 2", "fold 0"])


# -------------------------------------------------------------------------------- weights
@case("checkpoint-other-architecture", "a weights file of another backbone (R3D-18 weights into I3D)",
      WeightsMismatchError, "the file, its layout and both architectures", "build it with build_backbone('r3d18')")
def _other_architecture(ctx: Ctx) -> Triggered:
    path = ctx.tmp / "r3d_18.pth"
    torch.save(build_backbone("r3d18", seed=0).state_dict(), path)
    model = build_backbone("i3d", seed=0)
    return Triggered(lambda: load_weights(model, path), [str(path), "torchvision_r3d18", "i3d"])


@case("adapter-checkpoint-missing-keys", "an adapter checkpoint lacks adapter tensors", WeightsMismatchError,
      "the file and the missing keys", "re-save it with save_adapter_checkpoint")
def _missing_adapter_keys(ctx: Ctx) -> Triggered:
    from safetensors import safe_open
    from safetensors.torch import save_file

    folder = save_adapter_checkpoint(build_backbone("i3d", adapters=True, seed=0), ctx.tmp / "adapters")
    path = folder / "adapter_model.safetensors"
    with safe_open(str(path), "pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        metadata = handle.metadata()
    dropped = min(tensors)
    del tensors[dropped]
    save_file(tensors, str(path), metadata=metadata)
    model = build_backbone("i3d", adapters=True, seed=0)
    return Triggered(lambda: load_adapter_checkpoint(model, folder), [str(path), dropped])


@case("truncated-weights-file", "a weights file is truncated (interrupted copy)", ValueError, "the file",
      "copy it again or re-save it")
def _truncated_weights(ctx: Ctx) -> Triggered:
    from safetensors.torch import save_file

    path = ctx.tmp / "model.safetensors"
    model = build_backbone("i3d", seed=0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    path.write_bytes(path.read_bytes()[:100_000])
    return Triggered(lambda: load_weights(model, path), [str(path)])


# ------------------------------------------------------------------------------- training
@case("non-finite-loss", "the loss becomes NaN or infinite (here: NaN in the input)", NonFiniteLossError,
      "the loss value, epoch, step, batch and the last good checkpoint", "Usual causes: a learning rate too high")
def _non_finite(ctx: Ctx) -> Triggered:
    trainer = tiny_trainer(ctx.tmp / "run")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    def unchanged() -> None:
        assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in before.items())  # stopped before the update

    return Triggered(lambda: trainer.fit(lambda epoch: tiny_data(epoch, nan=True), 1),
                     ["non-finite loss nan", "epoch 1/1", "batch 0", "none written yet"], unchanged)


@case("resume-without-checkpoint", "--resume on a run folder without checkpoints", FileNotFoundError,
      "the checkpoint folder", "start without --resume")
def _resume_nothing(ctx: Ctx) -> Triggered:
    out = ctx.tmp / "fresh"
    cfg = resolve("smoke")
    return Triggered(lambda: pretrain_run(cfg, out, run=RunContext.from_config(cfg, resume=True)),
                     [str(out / "checkpoints")])


@case("run-folder-taken", "a new run is started in a folder that holds a run", FileExistsError, "the run folder",
      "pass --resume to continue it or choose another --out")
def _folder_taken(ctx: Ctx) -> Triggered:
    out = ctx.tmp / "taken"
    out.mkdir()
    (out / "stage2.json").write_text("{}")
    return Triggered(lambda: pretrain_run(resolve("smoke"), out), [str(out)])


@case("run-folder-in-use", "a second run is started in an output folder another live run is writing into",
      RunFolderLockedError, "the folder, the holder's pid, host and command", "choose another output folder")
def _folder_in_use(ctx: Ctx) -> Triggered:
    out = ctx.tmp / "busy"
    holder = hold_folder(out)

    def release() -> None:
        holder.kill()
        holder.wait(timeout=60)

    def call() -> None:
        try:
            pretrain_run(resolve("smoke"), out)
        except BaseException:
            release()
            raise

    return Triggered(call, [str(out), f"pid {holder.pid}", socket.gethostname(), "the holder test run"])


@case("output-path-is-a-file", "the output folder given is an existing file (or lies under one)", NotADirectoryError,
      "the folder and the file", "choose another output folder")
def _out_is_file(ctx: Ctx) -> Triggered:
    taken = ctx.tmp / "results.txt"
    taken.write_text("not a folder")

    def unchanged() -> None:
        assert taken.read_text() == "not a folder"

    return Triggered(lambda: pretrain_run(resolve("smoke"), taken / "run"), [str(taken / "run"), str(taken)], unchanged)


@case("notebook-output-is-a-file", "a notebook's OUT_DIR is an existing file", NotADirectoryError, "the file",
      "set OUT_DIR elsewhere")
def _notebook_out_is_file(ctx: Ctx) -> Triggered:
    taken = ctx.tmp / "02_adapter_architecture"
    taken.write_text("")
    return Triggered(lambda: prepare_out_dir(taken), [str(taken)])


@case("resume-another-configuration", "--resume with another configuration than the run's (e.g. another seed)",
      ValueError, "each differing key with both values", "start a new run in another --out")
def _resume_other_config(ctx: Ctx) -> Triggered:
    out = ctx.tmp / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "latest.json").write_text('{"latest": "epoch_001.pt", "files": ["epoch_001.pt"]}')
    atomic_write_json(out / "config.json", {"config": resolve("smoke", seed=0).to_dict(), "dataset": "MTL-AQA",
                                            "task": None, "fold": None})
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def nothing_written() -> None:
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before

    return Triggered(lambda: pretrain_run(resolve("smoke", seed=1), out,
                                          run=RunContext.from_config(resolve("smoke", seed=1), resume=True)),
                     [str(out), "seed: 0 in the run, 1 requested"], nothing_written)


@case("finetune-folder-holds-a-run", "pecop finetune into an output folder that holds a finished run",
      FileExistsError, "the run folder", "--overwrite to replace it")
def _finetune_folder_taken(ctx: Ctx) -> Triggered:
    out = ctx.tmp / "finetune"
    setting = Setting("usdl", "MTL-AQA")
    folder = run_folder(out, "random-init", setting)
    folder.mkdir(parents=True)
    atomic_write_json(folder / "result.json", {"request": {}})
    return Triggered(lambda: finetune_command(resolve("smoke", device="cpu"), head="usdl", dataset="MTL-AQA",
                                              task=None, fold=None, backbone_checkpoint="none", out=out,
                                              data_root=ctx.world_root,
                                              run=RunContext.from_config(resolve("smoke", device="cpu"),
                                                                         show_progress=False)),
                     [str(folder), "result.json"])


@case("latest-names-missing-checkpoint", "checkpoints/latest.json names a deleted checkpoint", FileNotFoundError,
      "latest.json and the missing file", "pass the checkpoint file explicitly")
def _latest_missing(ctx: Ctx) -> Triggered:
    run = ctx.tmp / "run"
    tiny_trainer(run).fit(tiny_data, 1)
    (run / "checkpoints" / "epoch_001.pt").unlink()
    return Triggered(lambda: tiny_trainer(run).fit(tiny_data, 2, resume=True),
                     [str(run / "checkpoints" / LATEST_FILE), "epoch_001.pt"])


@case("corrupt-training-checkpoint", "the newest training checkpoint is truncated or corrupt", ValueError,
      "the checkpoint file", "resume from another checkpoint file of the run or start again")
def _corrupt_checkpoint(ctx: Ctx) -> Triggered:
    run = ctx.tmp / "run"
    tiny_trainer(run).fit(tiny_data, 1)
    path = run / "checkpoints" / "epoch_001.pt"
    path.write_bytes(path.read_bytes()[:300])
    return Triggered(lambda: tiny_trainer(run).fit(tiny_data, 2, resume=True), [str(path)])


@case("disk-full-checkpoint", "the disk fills up while a checkpoint is written (simulated ENOSPC)", OSError,
      "the checkpoint file; says it was not written (the previous checkpoints are kept)", "Free disk space",
      note="errno ENOSPC")
def _disk_full(ctx: Ctx) -> Triggered:
    run = ctx.tmp / "run"
    tiny_trainer(run).fit(tiny_data, 1)
    checkpoints = run / "checkpoints"
    kept = (checkpoints / "epoch_001.pt").read_bytes()
    real_save = torch.save

    def full_disk(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[:64])  # part of the file fits, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    ctx.monkeypatch.setattr(torch, "save", full_disk)

    def old_checkpoint_survives() -> None:
        assert (checkpoints / "epoch_001.pt").read_bytes() == kept
        assert read_json(checkpoints / LATEST_FILE)["latest"] == "epoch_001.pt"
        assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch_001.pt", LATEST_FILE]  # no partial file left
        ctx.monkeypatch.setattr(torch, "save", real_save)  # space freed: the run resumes from epoch 1
        history = tiny_trainer(run).fit(tiny_data, 2, resume=True)
        assert [e["epoch"] for e in history.epochs] == [1, 2]
        assert load_checkpoint(checkpoints / "epoch_002.pt")["position"]["epoch"] == 2

    return Triggered(lambda: tiny_trainer(run).fit(tiny_data, 2, resume=True),
                     [str(checkpoints / "epoch_002.pt"), "No space left on device", "no epoch_002.pt was written"],
                     old_checkpoint_survives)


@case("corrupt-sidecar-json", "a truncated JSON sidecar (checkpoint index, stage record, result, manifest)",
      CorruptFileError, "the file, its size and the JSON error", "start the run again")
def _corrupt_index(ctx: Ctx) -> Triggered:
    run = ctx.tmp / "run"
    tiny_trainer(run).fit(tiny_data, 1)
    index = run / "checkpoints" / LATEST_FILE
    text = index.read_text()
    index.write_text(text[: len(text) // 2])  # what a copy that stopped half-way leaves

    def index_untouched() -> None:
        assert index.read_text() == text[: len(text) // 2]

    return Triggered(lambda: tiny_trainer(run).fit(tiny_data, 2, resume=True),
                     [str(index), "is corrupt or truncated"], index_untouched)


# --------------------------------------------------------------------------- configuration
@case("unknown-config-key", "a misspelled config key (preset override, --set, notebook)", ConfigError,
      "the key and the closest valid key", "did you mean 'pretrain_lr'?")
def _unknown_key(ctx: Ctx) -> Triggered:
    return Triggered(lambda: resolve("smoke", pretrain_lrr=0.1), ["'pretrain_lrr'"])


@case("config-wrong-type", "a config value of the wrong type", ConfigError, "the key, the value and its type",
      "expects int")
def _wrong_type(ctx: Ctx) -> Triggered:
    return Triggered(lambda: resolve("smoke", pretrain_epochs="two"), ["'pretrain_epochs'", "'two'"])


@case("config-out-of-range", "a number outside its key's range (--epochs -3, --set pretrain_dropout=1.5)", ConfigError,
      "the key, the value and the accepted range", "accepted: 1 <= value")
def _out_of_range(ctx: Ctx) -> Triggered:
    return Triggered(lambda: resolve("smoke", pretrain_epochs=-3), ["'pretrain_epochs'", "-3"])


@case("config-not-finite", "a learning rate or other number that is NaN or infinite", ConfigError, "the key and the value",
      "must be a finite number")
def _not_finite(ctx: Ctx) -> Triggered:
    return Triggered(lambda: resolve("smoke", pretrain_lr=float("nan")), ["'pretrain_lr'", "nan"])


@case("misspelled-notebook-parameter", "a misspelled notebook parameter (-p SEDE=1)", NotebookParameterError,
      "the parameter, the notebook and the declared parameters", "did you mean 'SEED'?")
def _notebook_parameter(ctx: Ctx) -> Triggered:
    out = ctx.tmp / "out"

    def nothing_ran() -> None:
        assert not out.exists()

    return Triggered(lambda: run_notebooks("smoke", only=["00"], device="cpu", out=out, parameters={"SEDE": 1},
                                           progress=False), ["'SEDE'", "00_overview.ipynb"], nothing_ran)


@case("notebook-kernel-died", "a notebook's kernel is killed (e.g. by the system when memory runs out)",
      NotebookRunError, "the notebook, the kernel's log and its last lines",
      "killed by the system for lack of memory")
def _kernel_died(ctx: Ctx) -> Triggered:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    params = 'PRESET = "smoke"\nDEVICE = "auto"\nOUT_DIR = "x"\nINTERACTIVE = True'
    cells = [new_code_cell(params, metadata={"tags": ["parameters"]}),
             new_code_cell("import os, time\nos.write(2, b'last words\\n')\ntime.sleep(1)"),
             new_code_cell("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")]
    folder = ctx.tmp / "nbs"
    folder.mkdir()
    nbformat.write(new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                      "language": "python"}}), folder / "00_dies.ipynb")
    out = ctx.tmp / "out"
    return Triggered(lambda: run_notebooks("smoke", device="cpu", out=out, notebooks_dir=folder, progress=False),
                     ["notebook 00_dies: its kernel died", str(out / "00_dies.kernel.log"), "last words"])


@case("cuda-without-gpu", "CUDA requested on a machine without a usable GPU (simulated)", ConfigError,
      "the requested device", "use device='auto' or 'cpu'")
def _cuda_on_cpu(ctx: Ctx) -> Triggered:
    ctx.monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return Triggered(lambda: resolve_device("cuda"), ["'cuda'", "CUDA is not available"])


@case("output-folder-not-writable",
      "the notebook output folder cannot be created (read-only location; simulated when running as root)",
      PermissionError, "the folder", "set OUT_DIR elsewhere")
def _out_dir_read_only(ctx: Ctx) -> Triggered:
    parent = ctx.tmp / "read-only"
    read_only(ctx, parent)
    return Triggered(lambda: prepare_out_dir(parent / "02_adapter_architecture"), [str(parent / "02_adapter_architecture")])


@case("run-folder-not-writable",
      "a training run folder is not writable (checkpoints, metrics; simulated when running as root)", PermissionError,
      "the file and the folder", "choose another output folder")
def _run_dir_read_only(ctx: Ctx) -> Triggered:
    run = ctx.tmp / "run"
    read_only(ctx, run)
    return Triggered(lambda: tiny_trainer(run).fit(tiny_data, 1), [str(run / "metrics.json")])


@case("read-only-file-system", "the output folder lies on a read-only file system (a read-only mount, or a disk the "
      "kernel remounted read-only; simulated here, real in test_reliability_real_filesystems.py)", OSError,
      "the folder", "choose another output folder", note="errno EROFS")
def _read_only_fs(ctx: Ctx) -> Triggered:
    run = ctx.tmp / "mounted-read-only" / "run"
    inside, real_mkdir = str(run.parent), os.mkdir

    def mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        if str(path).startswith(inside):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        real_mkdir(path, *args, **kwargs)

    ctx.monkeypatch.setattr(os, "mkdir", mkdir)
    return Triggered(lambda: tiny_trainer(run).fit(tiny_data, 1), [str(run), "read-only file system"])


# -------------------------------------------------------------------------------- the tests
@pytest.fixture(scope="module")
def world_root(tmp_path_factory) -> Path:
    return reliability_world(tmp_path_factory.getbasetemp()).root


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_a_clear_error(case: Case, world_root: Path, tmp_path: Path, monkeypatch) -> None:
    triggered = case.trigger(Ctx(tmp_path, world_root, monkeypatch))
    with pytest.raises(BaseException) as info:  # the exact type is checked below
        triggered.call()
    assert type(info.value) is case.error, f"{case.id}: raised {type(info.value).__name__}: {info.value}"
    message = str(info.value)
    for fragment in triggered.named:
        assert fragment in message, f"{case.id}: the message does not name {fragment!r}: {message}"
    assert case.fix in message, f"{case.id}: the message does not give the fix {case.fix!r}: {message}"
    if triggered.after is not None:
        triggered.after()


def test_catalogue_covers_the_issue() -> None:
    ids = {c.id for c in CASES}
    assert len(CASES) >= 15 and len(ids) == len(CASES)
    for required in ("corrupt-mp4", "truncated-mp4", "zero-frame-mp4", "video-shorter-than-clip",
                     "missing-frame-finediving", "annotation-missing-key", "score-out-of-range",
                     "finediving-label-count", "unknown-dataset", "unknown-task", "checkpoint-other-architecture",
                     "adapter-checkpoint-missing-keys", "non-finite-loss", "unknown-config-key",
                     "misspelled-notebook-parameter", "cuda-without-gpu", "output-folder-not-writable",
                     "disk-full-checkpoint", "run-folder-in-use", "resume-another-configuration",
                     "finetune-folder-holds-a-run"):
        assert required in ids


# ------------------------------------------------------------------------- the documentation
def _error_label(c: Case) -> str:
    chain = [k.__name__ for k in c.error.__mro__ if k not in (BaseException, Exception, object)]
    label = f"`{chain[0]}`" + (f" ({', '.join(chain[1:])})" if len(chain) > 1 else "")
    return label + (f", {c.note}" if c.note else "")


def render_troubleshooting() -> str:
    """The Markdown page of the catalogue (``docs/troubleshooting.md``)."""
    lines = [
        "# Troubleshooting: errors and their fixes",
        "",
        "<!-- generated from tests/reliability/test_reliability_catalogue.py; do not edit by hand: run",
        "     .venv/bin/python tests/reliability/test_reliability_catalogue.py -->",
        "",
        "pecop refuses bad input with an error that names the file, key or value and says what to do. Each row",
        "below is a test case (`tests/reliability/test_reliability_catalogue.py`): the test feeds the bad input to",
        "the public loader or command, and checks the exact error type, that the message names what the third",
        "column says, and that it contains the fix quoted in the last column. Cases marked *simulated* create the",
        "condition artificially (a CPU-only machine, a read-only folder when running as root, a full disk).",
        "",
        "Errors of the data loaders are `DataFormatError` (a `ValueError`). `pecop pretrain` and `pecop finetune`",
        "print configuration, data and weights errors as `pecop: error: ...` and exit with status 2, a non-finite",
        "loss as `pecop: FAILED: ...` with status 1.",
        "",
        "| # | what went wrong | error | the message names | the fix it gives |",
        "|---|---|---|---|---|",
    ]
    for number, c in enumerate(CASES, 1):
        lines.append(f"| {number} | {c.situation} | {_error_label(c)} | {c.names} | \"{c.fix}\" |")
    lines += [
        "",
        "Related checks: `pecop doctor` inspects the machine (packages, the `python3` kernel, video decoding,",
        "device, disk space, dataset roots in their official formats) and prints a fix for each problem.",
        "Interrupted runs resume with `--resume` (`pecop pretrain`, `pecop finetune`): checkpoints are written",
        "atomically, so a crash or a full disk never leaves a truncated checkpoint under its real name, and Ctrl-C",
        "prints the command that continues the run. One run at a time writes into an output folder: it holds",
        "`<folder>/.pecop-lock` (pid, host, command); the lock of a run that was killed is taken over with a warning.",
        "",
    ]
    return "\n".join(lines)


def test_troubleshooting_doc_is_current() -> None:
    assert DOC.is_file(), f"{DOC} is missing; run: .venv/bin/python {Path(__file__).relative_to(REPO_ROOT)}"
    assert DOC.read_text() == render_troubleshooting(), (
        f"{DOC} is out of date with the catalogue; run: .venv/bin/python {Path(__file__).relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(render_troubleshooting())
    print(f"wrote {DOC} ({len(CASES)} cases)", file=sys.stderr)
