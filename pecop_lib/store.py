"""The artifact store: one key, one folder name and one load-or-run rule for every load-or-train cache.

Five things take long enough to make that they are made once and reused; each is an *artifact* of an
:class:`ArtifactStore`, a folder (``cache_dir()/<kind>`` unless the caller gives a root):

| artifact | store | name | finished when |
|---|---|---|---|
| synthetic world | ``synthetic/`` | generator version, seed, sizes | ``world.json`` of the current versions and spec |
| stage 1 | ``pretrain/`` | ``stage1-<backbone>-<label>-seed<S>-<key>`` | ``stage1.json`` exists |
| stage 2 | ``pretrain/`` | ``stage2-<strategy>-<pretext>-<target>-<label>-seed<S>-<key>`` | ``stage2.json`` exists |
| window features | ``features/`` | ``<key>.safetensors`` | the file exists |
| fine-tuning runs | the run's ``--out`` (ablations: ``ablations/<stage 2>/ft-<key>/seed<S>``) | ``<backbone>/<setting>`` | ``result.json`` of the same request |

One rule (:meth:`ArtifactStore.load_or_run`): a finished artifact is loaded; otherwise it is made, under
the folder's lock (:func:`~pecop_lib.run_lock.run_lock`: one run per folder) where the artifact is a
run folder, resuming from the checkpoints the caller finds in it. Under ``torchrun`` rank 0's view of
the folder decides for every process (:func:`agreed`). A folder made elsewhere and moved in whole (a
generated world, a shipped checkpoint) arrives atomically (:func:`replace_folder`).

Keys are :func:`digest`\\ s: the SHA-256 prefix of everything that decides the artifact's content as
sorted JSON; names join readable parts (:func:`artifact_name`) and are made folder-safe by :func:`slug`.
The identities that enter keys are :func:`file_sha256` (a weights file) and :func:`tensors_sha256` (a
module's weights).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch

from pecop_lib.config import cache_dir
from pecop_lib.run_lock import run_lock

KEY_LENGTH = 12
"""Hex digits of a key (48 bits): a folder name stays readable, collisions stay out of reach."""

T = TypeVar("T")


def digest(value: Any, length: int = KEY_LENGTH) -> str:
    """A key: the first ``length`` hex digits of the SHA-256 of ``value`` as sorted JSON (``str`` for the rest).

    A tuple and a list of the same items give the same key.
    """
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def tensors_sha256(tensors: Iterable[tuple[str, torch.Tensor]], *, as_float32: bool = False) -> str:
    """SHA-256 over named tensors, in the order given: each name, shape and value bytes.

    Args:
        tensors: ``(name, tensor)`` pairs (e.g. ``sorted(module.state_dict().items())``).
        as_float32: Hash every tensor cast to float32 (the dtype is then not part of the hash);
            ``False`` hashes each tensor's own bytes and names its dtype.
    """
    sha = hashlib.sha256()
    for name, tensor in tensors:
        if as_float32:
            value = tensor.detach().to("cpu", torch.float32).contiguous()
            sha.update(f"{name}:{tuple(value.shape)};".encode())
            sha.update(value.numpy().tobytes())
        else:
            value = tensor.detach().to("cpu").contiguous().reshape(-1)  # 1-D: 0-d counters can be viewed as bytes too
            sha.update(f"{name}:{value.dtype}:{tuple(tensor.shape)};".encode())
            sha.update(value.view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()


def state_sha256(module: torch.nn.Module) -> str:
    """SHA-256 over a module's whole state dict (names, dtypes, shapes, values of parameters and buffers)."""
    return tensors_sha256(sorted(module.state_dict().items()))


def slug(text: str) -> str:
    """A folder-safe version of a label (``"musdl/JIGSAWS/Suturing/fold0"`` -> ``"musdl-JIGSAWS-Suturing-fold0"``)."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text).strip("-")


def without_added(settings: Mapping[str, Any], added: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` without the entries of settings added after their key existed that hold the value they had
    implicitly before (``added``: name -> that value), so that keys and records made before stay valid.

    ``without_added({"lr": 0.1, "resize": "bilinear"}, {"resize": "bilinear"})`` -> ``{"lr": 0.1}``.
    """
    return {k: v for k, v in settings.items() if not (k in added and v == added[k])}


def artifact_name(*parts: str) -> str:
    """A folder name: the non-empty parts joined by ``-``, folder-safe (``("stage1", "i3d", "", "seed0")`` -> ``stage1-i3d-seed0``)."""
    return slug("-".join(p for p in parts if p))


class ProcessGroup(Protocol):
    """What the store needs of the processes of a run (:class:`~pecop_lib.train.distributed.DistributedContext`)."""

    @property
    def is_main(self) -> bool: ...

    def all_gather_object(self, obj: Any) -> list[Any]: ...


def agreed(flag: bool, context: ProcessGroup | None = None) -> bool:
    """Rank 0's answer, shared by every process (``flag`` itself without a process group)."""
    return bool(flag) if context is None else bool(context.all_gather_object(bool(flag))[0])


def replace_folder(folder: str | os.PathLike[str], fill: Callable[[Path], Any]) -> Path:
    """Make ``folder`` anew, atomically: ``fill`` writes a temporary sibling, which then replaces the folder.

    A reader sees the old folder or the whole new one, never a half-written one; a ``fill`` that raises
    leaves the old folder as it was.

    Args:
        folder: The folder to (re)place.
        fill: Called with the temporary path (which does not exist yet) to create and write it.

    Returns:
        ``folder``.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def _never(_path: Path) -> bool:
    return False


@dataclass(frozen=True)
class ArtifactStore:
    """A folder of artifacts, each made once and then loaded (see the module docstring).

    Attributes:
        root: The folder holding the artifacts.
    """

    root: Path

    @classmethod
    def at(cls, kind: str, root: str | os.PathLike[str] | None = None) -> ArtifactStore:
        """The store of one kind of artifact: ``root`` if given, else ``cache_dir()/<kind>``."""
        return cls(Path(root) if root is not None else cache_dir() / kind)

    def folder(self, *names: str) -> Path:
        """The folder ``<root>/<name>/<name>...``, each name folder-safe (:func:`slug`)."""
        return self.root.joinpath(*(slug(n) for n in names))

    def load_or_run(
        self,
        path: Path,
        *,
        finished: Callable[[Path], bool],
        load: Callable[[Path], T],
        run: Callable[[bool], T],
        resumable: Callable[[Path], bool] = _never,
        context: ProcessGroup | None = None,
        force: bool = False,
        lock: bool = True,
    ) -> T:
        """Load the artifact at ``path`` if it is finished, else make it.

        Args:
            path: The artifact's folder or file (inside :attr:`root`).
            finished: Whether ``path`` holds a finished artifact.
            load: Opens a finished artifact.
            run: Makes it; called with ``resume``: whether ``resumable(path)`` found a run to continue.
            resumable: Whether ``path`` holds an unfinished run to continue (e.g. trainer checkpoints).
            context: The run's processes; rank 0 decides for all (``None``: one process).
            force: Make it anew even if finished (and do not resume).
            lock: Hold ``path``'s lock while making it (a run folder); ``False`` for a single file or
                a folder replaced whole.

        Returns:
            What ``load`` or ``run`` returned.

        Raises:
            RunFolderLockedError: If another live run makes the same artifact.
        """
        if not force and agreed(finished(path), context):
            return load(path)
        is_main = context is None or context.is_main
        with run_lock(path, enabled=is_main) if lock else nullcontext():
            return run(not force and agreed(resumable(path), context))
