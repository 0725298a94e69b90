"""One run per output folder: a lock file that a second run finds and refuses, and a killed run leaves stale.

:func:`run_lock` creates ``<folder>/.pecop-lock`` with ``O_CREAT | O_EXCL`` (atomic on every local file
system) holding the holder's pid, host, start time and command. A second process that wants the folder
reads it and refuses at once, naming the holder. A lock whose holder ran on this host and no longer
exists (a run killed with SIGKILL, a crashed kernel) is *stale*: it is taken over with a warning. A lock
of another host cannot be checked from here; the message says how to remove it by hand. The holder
itself may enter the lock again (a command that locks its ``--out`` and then trains a stage into it).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pecop_lib.atomic import not_writable, writable_folder

LOCK_FILE = ".pecop-lock"


class RunFolderLockedError(RuntimeError):
    """Another live run holds the output folder."""


def changed_keys(stored: Mapping[str, Any], requested: Mapping[str, Any]) -> list[str]:
    """What resuming a run with ``requested`` would change in it: ``"key: <stored> in the run, <requested>
    requested"`` per differing key, sorted (the resume checks of ``pecop pretrain`` and ``pecop finetune``)."""
    return [f"{key}: {stored.get(key)!r} in the run, {requested.get(key)!r} requested"
            for key in sorted(set(stored) | set(requested)) if stored.get(key) != requested.get(key)]


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (another user's process counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder(lock: Path) -> dict[str, Any] | None:
    """The lock's JSON, or ``None`` when it is unreadable (a holder killed between creating and writing it)."""
    try:
        value = json.loads(lock.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) and isinstance(value.get("pid"), int) else None


def _mine(holder: dict[str, Any] | None) -> bool:
    return holder is not None and holder["pid"] == os.getpid() and holder.get("host") == socket.gethostname()


def _describe(holder: dict[str, Any]) -> str:
    return (f"pid {holder['pid']} on host {holder.get('host', '?')}, started {holder.get('started', '?')}"
            f" ({holder.get('command', 'unknown command')})")


@contextmanager
def run_lock(folder: str | os.PathLike[str], *, command: str | None = None, enabled: bool = True) -> Iterator[Path]:
    """Hold ``folder`` for this process while the block runs (the folder is created if needed).

    Args:
        folder: The run's output folder.
        command: What the holder runs, shown to whoever finds the lock (default: this process's argv).
        enabled: ``False`` takes no lock (e.g. on every process but rank 0 under ``torchrun``).

    Yields:
        The lock file's path.

    Raises:
        RunFolderLockedError: If a live process (or one on another host) holds the folder, naming it.
        NotADirectoryError, PermissionError, OSError: If the folder cannot be written (:func:`writable_folder`).
    """
    folder = Path(folder)
    lock = folder / LOCK_FILE
    if not enabled:
        yield lock
        return
    writable_folder(folder, "choose another output folder")
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "command": command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
    while True:
        try:
            handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(lock)
            if _mine(holder):  # this process holds it already: nested use
                yield lock
                return
            if holder is not None and (holder.get("host") != socket.gethostname() or _alive(holder["pid"])):
                raise RunFolderLockedError(
                    f"{folder} is in use by another run: {_describe(holder)}. Wait for it to finish or choose "
                    f"another output folder; if that run is gone (its machine restarted), delete {lock}"
                ) from None
            warnings.warn(f"{folder}: taking over the stale lock of a run that no longer exists "
                          f"({_describe(holder) if holder else 'unreadable lock file'})", stacklevel=3)
            lock.unlink(missing_ok=True)
            continue  # create it anew; another process may win the race, then it is live and we refuse
        except OSError as exc:  # an existing folder on a read-only file system, or not this user's to write
            raise not_writable(exc, folder, str(lock), "choose another output folder") from exc
        with os.fdopen(handle, "w") as out:
            json.dump(record, out)
        break
    try:
        yield lock
    finally:
        if _mine(_holder(lock)):
            lock.unlink(missing_ok=True)
