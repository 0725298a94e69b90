"""Atomic file writes: write to a temporary file in the same folder, then rename over the target.

A reader (or a resumed run after a crash) therefore sees either the old file or the complete new
one, never a truncated file. Every checkpoint, metrics file and manifest in pecop goes through here.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DISK_FULL_ERRNOS: frozenset[int] = frozenset({errno.ENOSPC, errno.EDQUOT})
"""``errno`` values of a full disk or quota: reported as such by :func:`atomic_path`."""
NO_PERMISSION_ERRNOS: frozenset[int] = frozenset({errno.EACCES, errno.EPERM})
"""``errno`` values of a folder this user may not write."""


def not_writable(exc: OSError, folder: Path, what: str, fix: str) -> OSError:
    """The error that says why ``what`` cannot be written in ``folder``: no permission or a read-only file system.

    Args:
        exc: The error the system call raised.
        folder: The folder written to.
        what: What was being written (``"output folder x"``, ``"x.json"``), for the message.
        fix: What to do, e.g. ``"choose another output folder"``.

    Returns:
        :class:`PermissionError` (permissions), ``OSError(EROFS)`` (a read-only file system: a read-only mount, a
        full or damaged disk the kernel turned read-only), or ``exc`` itself for any other error.
    """
    if exc.errno == errno.EROFS:
        return OSError(errno.EROFS, f"cannot write {what}: {folder} lies on a read-only file system; {fix}")
    if isinstance(exc, PermissionError) or exc.errno in NO_PERMISSION_ERRNOS:
        return PermissionError(f"cannot write {what}: folder {folder} is not writable; {fix}")
    return exc


def writable_folder(folder: str | os.PathLike[str], fix: str) -> Path:
    """Create ``folder`` (and its parents) or say in one message why it cannot be written.

    Raises:
        NotADirectoryError: If its path runs through a file (:func:`check_folder_path`).
        PermissionError: If this user may not write there.
        OSError: ``EROFS`` if it lies on a read-only file system.
    """
    folder = Path(folder)
    check_folder_path(folder, fix)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise not_writable(exc, folder, f"output folder {folder}", fix) from exc
    return folder


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success rename it onto ``target``.

    Use it with writers that want a path (``torch.save``, ``safetensors.torch.save_file``,
    ``fig.savefig``). On any exception the temporary file is removed and ``target`` is untouched.

    Args:
        target: Final file path. Its folder is created if missing.

    Yields:
        The temporary path to write to.

    Raises:
        PermissionError: If the folder is not writable (the message names it).
        OSError: ``EROFS`` on a read-only file system (:func:`not_writable`); with ``errno.ENOSPC`` / ``errno.EDQUOT`` when the disk or quota is full; the
            message names the file and says that the previous version is untouched.
    """
    target = Path(target)
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise not_writable(exc, folder, str(target), "choose another output folder") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in DISK_FULL_ERRNOS:
            kept = f"the previous {target.name} is untouched" if target.exists() else f"no {target.name} was written"
            raise OSError(
                exc.errno,
                f"no space left while writing {target} ({os.strerror(exc.errno)}); {kept}. Free disk space in "
                f"{folder} (or raise the quota), or write to another folder (output folder, PECOP_CACHE_DIR), "
                "then run again (training resumes from the last checkpoint)",
            ) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically and return the target path."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``target`` atomically and return the target path."""
    return atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON (non-finite floats refused) atomically; return the path."""
    return atomic_write_text(target, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


class CorruptFileError(ValueError):
    """A sidecar JSON file (record, index, manifest, configuration) cannot be read; the message names it and the fix."""


def read_json(path: str | os.PathLike[str], *, fix: str) -> Any:
    """Read a JSON file that pecop wrote, or raise :class:`CorruptFileError` naming it and ``fix``.

    Writes go through :func:`atomic_write_json`, so a truncated or garbled file means it was
    damaged afterwards (a copy that stopped half-way, a disk error, an edit by hand).

    Args:
        path: The file.
        fix: What to do about it (e.g. ``"delete the folder <F> to train it again"``).

    Raises:
        FileNotFoundError: If the file does not exist.
        CorruptFileError: If it is not valid UTF-8 JSON.
    """
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        size = path.stat().st_size
        raise CorruptFileError(f"{path} is corrupt or truncated ({size} bytes, {exc}); {fix}") from exc


def check_folder_path(folder: Path, fix: str) -> None:
    """Refuse an output folder whose path is (or runs through) a file, naming that file and ``fix``.

    Raises:
        NotADirectoryError: If ``folder`` or one of its parents exists and is not a folder.
    """
    for path in (folder, *folder.parents):
        if path.exists():
            if not path.is_dir():
                raise NotADirectoryError(f"output folder {folder}: {path} is a file, not a folder; {fix}")
            return
