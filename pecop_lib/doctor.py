"""``pecop doctor``: check that this machine can run pecop, and say how to fix what it cannot.

Each check returns :class:`Finding` records (``ok``, ``warn`` or ``error``) with a fix for anything
that is not ok. Checks: Python and package versions, the Jupyter kernel ``python3`` that papermill
will start, video decoding with decord (a tiny mp4 is written and read back), the device, free disk
space for the cache and outputs, and optional dataset roots in their official formats (their layout,
the first clip, and every video's frame size and rate against the rest of the dataset).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pecop_lib.config import ConfigError, cache_dir, resolve_device
from pecop_lib.environment import TRACKED_PACKAGES, package_versions

LEVELS: tuple[str, ...] = ("ok", "warn", "error")
MIN_FREE_GIB = 5.0
"""Free space below this on the cache or output disk is a warning (the tutorial world alone is ~0.3 GB)."""


@dataclass(frozen=True)
class Finding:
    """One result of a check.

    Attributes:
        level: ``"ok"``, ``"warn"`` or ``"error"``.
        check: Short name of the check (``"packages"``, ``"kernel"``, ...).
        message: What was found.
        fix: What to do about it (empty when ok).
    """

    level: str
    check: str
    message: str
    fix: str = ""

    def format(self) -> str:
        """One line (two with a fix) for the terminal."""
        line = f"[{self.level.upper():5}] {self.check}: {self.message}"
        return f"{line}\n        fix: {self.fix}" if self.fix else line


def check_python() -> list[Finding]:
    """Python 3.11 or newer."""
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info < (3, 11):
        return [Finding("error", "python", f"Python {version} is too old", "use Python 3.11 (make setup uses python3.11)")]
    return [Finding("ok", "python", f"Python {version} at {sys.executable}")]


def check_packages() -> list[Finding]:
    """Every dependency importable by metadata; torch >= 2.10 and not 2.9.x."""
    findings = []
    versions = package_versions(TRACKED_PACKAGES)
    missing = [name for name, version in versions.items() if version is None]
    if missing:
        findings.append(Finding("error", "packages", f"not installed: {', '.join(missing)}",
                                "run `make setup` or `pip install -e '.[test]'` in this environment"))
    torch_version = versions.get("torch")
    if torch_version:
        major, minor = (int(part) for part in torch_version.split(".")[:2])
        if (major, minor) < (2, 10):
            findings.append(Finding("error", "packages", f"torch {torch_version} is older than 2.10 "
                                    "(2.9.x has Conv3d AMP regressions and a bf16 correctness bug)",
                                    "pip install 'torch>=2.10' torchvision"))
    if not findings:
        findings.append(Finding("ok", "packages", ", ".join(f"{n} {v}" for n, v in versions.items() if n != "pecop")))
    return findings


def check_kernel() -> list[Finding]:
    """The ``python3`` kernel exists and runs this interpreter (papermill starts it by that name)."""
    try:
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    except ImportError:
        return [Finding("error", "kernel", "jupyter_client is not installed", "pip install ipykernel papermill")]
    try:
        spec = KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        return [Finding("error", "kernel", "no Jupyter kernel named 'python3'",
                        "pip install ipykernel in this environment (it provides the python3 kernel)")]
    interpreter = spec.argv[0]
    if interpreter in ("python", "python3", "{python}") or Path(interpreter).resolve() == Path(sys.executable).resolve():
        return [Finding("ok", "kernel", f"kernel 'python3' runs this interpreter ({sys.executable})")]
    return [Finding("warn", "kernel", f"kernel 'python3' runs {interpreter}, not this environment's {sys.executable}; "
                    "notebooks may not find pecop_lib",
                    f"remove or fix the kernelspec at {spec.resource_dir}, or `{sys.executable} -m ipykernel install "
                    "--user --name python3`")]


def check_video_decoding() -> list[Finding]:
    """Write an 8-frame 32x32 mp4 with PyAV and decode it with decord (smaller clips trip decord)."""
    import numpy as np

    from pecop_lib.data.video import VideoFile, write_mp4

    frames = np.zeros((8, 32, 32, 3), dtype=np.uint8)
    frames[:, :, :, 0] = np.arange(8, dtype=np.uint8)[:, None, None] * 30
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.mp4"
        try:
            write_mp4(frames, path)
            decoded = VideoFile(path).read(np.array([0, 6]))
        except Exception as exc:  # noqa: BLE001 (any failure here is the finding)
            return [Finding("error", "video", f"mp4 write/decode failed: {type(exc).__name__}: {exc}",
                            "reinstall decord (0.6.0) and av; on ARM use frame folders instead of mp4")]
    if decoded.shape[0] != 2 or abs(int(decoded[1, 16, 16, 0]) - 180) > 12:
        return [Finding("error", "video", f"decord decoded unexpected frames (shape {tuple(decoded.shape)})",
                        "reinstall decord 0.6.0")]
    return [Finding("ok", "video", "PyAV writes and decord decodes mp4")]


def check_device(device: str = "auto") -> list[Finding]:
    """The requested device resolves; a CUDA build without a GPU is reported."""
    import torch

    try:
        dev = resolve_device(device)
    except ConfigError as exc:
        return [Finding("error", "device", str(exc), "use --device auto or cpu")]
    if dev.type == "cuda":
        return [Finding("ok", "device", f"{dev}: {torch.cuda.get_device_name(dev)}")]
    note = "presets: smoke runs in minutes here; tutorial wants a GPU"
    return [Finding("ok", "device", f"CPU only ({torch.get_num_threads()} threads); {note}")]


def check_disk(paths: dict[str, Path] | None = None, min_free_gib: float = MIN_FREE_GIB) -> list[Finding]:
    """Free space where the cache and the outputs go."""
    paths = paths if paths is not None else {"cache": cache_dir(), "outputs": Path("runs")}
    findings = []
    for label, path in paths.items():
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        free = shutil.disk_usage(probe).free / 2**30
        if free < min_free_gib:
            findings.append(Finding("warn", "disk", f"{label} ({path}): only {free:.1f} GiB free",
                                    f"free space or set {'PECOP_CACHE_DIR' if label == 'cache' else '--out'} elsewhere"))
        else:
            findings.append(Finding("ok", "disk", f"{label} ({path}): {free:.1f} GiB free"))
    return findings


def _open_datasets(name: str, root: Path, crop: int | None = None) -> list[Any]:
    """Build the train and test datasets of one dataset root, every task at its first fold (validates the layout)."""
    from pecop_lib.data.registry import find_dataset

    record = find_dataset(name)
    kw = {} if crop is None else {"crop": crop}
    return [record.open(root, split, task=task, fold=record.first_fold, **kw) for task in record.tasks or (None,)
            for split in ("train", "test")]


def check_dataset(name: str, root: str | Path, crop: int | None = None) -> list[Finding]:
    """Read a dataset root in its official format and decode its first clip.

    Args:
        name: A dataset, as its data card names it (``mtl-aqa``, ``finediving``, ``jigsaws``, ``pd4t``) or any
            spelling :func:`~pecop_lib.data.registry.find_dataset` takes.
        root: The dataset's root folder.
        crop: Crop side of the transform; ``None`` uses the dataset's official size (224 or 112).
    """
    root = Path(root)
    if not root.is_dir():
        return [Finding("error", f"data:{name}", f"{root} is not a folder", f"pass the {name} root folder")]
    try:
        datasets = _open_datasets(name, root, crop)
        sample = datasets[0][0]
    except Exception as exc:  # noqa: BLE001 (the loaders raise specific errors; all are findings here)
        return [Finding("error", f"data:{name}", f"{type(exc).__name__}: {exc}",
                        f"compare {root} with data_cards/{name}.md (official layout)")]
    sizes = ", ".join(str(len(d)) for d in datasets)
    found = [Finding("ok", f"data:{name}", f"{root}: splits of {sizes} records; first clip {tuple(sample['clip'].shape)}")]
    try:
        return found + check_media(name, datasets)
    except Exception as exc:  # noqa: BLE001 (a video the first clip did not reach: a finding, as above)
        return found + [Finding("error", f"media:{name}", f"{type(exc).__name__}: {exc}",
                                f"compare {root} with data_cards/{name}.md (official layout)")]


MEDIA_LISTED = 10
"""How many differing videos a media finding names before it counts the rest."""


def _geometry(size: tuple[int, int], fps: float | None) -> str:
    text = f"{size[1]}x{size[0]} px"
    return text if fps is None else f"{text} at {fps:g} fps"


def check_media(name: str, datasets: list[Any]) -> list[Finding]:
    """Frame size and frame rate of every video of a dataset, against the dataset's usual ones.

    A video of another size is resized by the transform, but one of another frame rate changes what
    a clip's frame step means in time (VSPP's speeds, the official windows): both are warnings that
    name each such video (the first :data:`MEDIA_LISTED`), since a dataset may mix them on purpose.
    Frame folders store no rate: only their size is compared.

    Args:
        name: The dataset's name, for the finding.
        datasets: The dataset's splits (headers only: each video's container header, each frame folder's first JPEG).

    Returns:
        One ``ok`` finding, or one ``warn`` finding per differing property (size, rate).
    """
    from collections import Counter

    from tqdm.auto import tqdm

    from pecop_lib.data.video import media_geometry

    paths = {str(dataset.media_path(index)) for dataset in datasets for index in range(len(dataset))}
    media: dict[str, tuple[tuple[int, int], float | None]] = {}
    for path in tqdm(sorted(paths), desc=f"media of {name}", unit="video", leave=False, disable=None):
        size, fps = media_geometry(path)
        media[path] = (size, None if fps is None else round(fps, 3))
    findings = []
    for what, pick in (("frame size", lambda m: m[0]), ("frame rate", lambda m: m[1])):
        counts = Counter(pick(m) for m in media.values())
        usual, n_usual = counts.most_common(1)[0]
        odd = sorted(path for path, m in media.items() if pick(m) != usual)
        if not odd:
            continue
        shown = "; ".join(f"{path} ({_geometry(*media[path])})" for path in odd[:MEDIA_LISTED])
        more = f"; and {len(odd) - MEDIA_LISTED} more" if len(odd) > MEDIA_LISTED else ""
        usual_text = _geometry(usual, None) if what == "frame size" else ("no rate" if usual is None else f"{usual:g} fps")
        if what == "frame size":
            fix = f"re-encode or re-extract them at {usual_text} (e.g. ffmpeg -i <file> -vf scale={usual[1]}:{usual[0]} <new>)"
        elif usual is None:
            fix = "extract their frames into folders like the others'"
        else:
            fix = f"re-encode them at {usual_text} (e.g. ffmpeg -i <file> -r {usual:g} <new>.mp4)"
        findings.append(Finding(
            "warn", f"media:{name}",
            f"{len(odd)} of {len(media)} videos differ in {what} from the other {n_usual} ({usual_text}): {shown}{more}",
            f"{fix}, or check that they belong to this dataset",
        ))
    if findings:
        return findings
    (size, fps), = {m for m in media.values()}
    return [Finding("ok", f"media:{name}", f"all {len(media)} videos are {_geometry(size, fps)}")]


def run_doctor(device: str = "auto", data_roots: dict[str, str | Path] | None = None,
               crop: int | None = None) -> list[Finding]:
    """Run every check; data roots are optional ``{dataset name: root}`` (read at ``crop``).

    Returns:
        All findings, in check order.
    """
    checks: list[Callable[[], list[Finding]]] = [
        check_python, check_packages, check_kernel, check_video_decoding, lambda: check_device(device), check_disk,
    ]
    findings = [f for check in checks for f in check()]
    for name, root in (data_roots or {}).items():
        findings.extend(check_dataset(name, root, crop))
    return findings

