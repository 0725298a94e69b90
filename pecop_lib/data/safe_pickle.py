"""Restricted unpickling of annotation files: builtins and numpy arrays only.

The official AQA annotations ship as pickles (dicts, lists, tuples, strings, numbers and numpy
arrays). ``pickle.load`` would run any callable a crafted file names; :func:`safe_load` refuses
every global outside a small allow-list, so a malicious pickle raises instead of executing.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

from pecop_lib.data.errors import DataFormatError, UnsafePickleError
from pecop_lib.data.files import regular_file

ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        # numpy array and scalar reconstruction (numpy 1.x and 2.x module paths)
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.core.numeric", "_frombuffer"),
        # plain data containers that pickle by reference to their type
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "complex"),
        ("builtins", "bytearray"),
        ("builtins", "slice"),
        ("builtins", "range"),
        ("collections", "OrderedDict"),
        # protocol-2 pickles spell bytes as _codecs.encode(str, "latin1"): pure data conversion
        ("_codecs", "encode"),
    }
)
"""``(module, name)`` pairs a pickle may reference; everything else raises."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if module == "__builtin__":  # protocol < 3 spells builtins the Python 2 way
            module = "builtins"
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"{self._source}: refuses to unpickle global {module}.{name}: annotation pickles may only "
                "hold builtins and numpy arrays; if this file is genuine, convert it to plain data first"
            )
        return super().find_class(module, name)


def safe_loads(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` allowing only :data:`ALLOWED_GLOBALS`.

    Args:
        data: Pickle bytes.
        source: Name used in error messages (usually the file path).

    Raises:
        UnsafePickleError: If the pickle references any other global.
        DataFormatError: If the bytes are not a valid pickle.
    """
    try:
        return _RestrictedUnpickler(io.BytesIO(data), source).load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # truncated or garbage pickles raise many types
        raise DataFormatError(f"{source}: not a readable pickle ({type(exc).__name__}: {exc})") from exc


def safe_load(path: str | os.PathLike[str]) -> Any:
    """Read an annotation pickle with :func:`safe_loads`.

    Raises:
        DataFormatError: If the file is missing (naming it) or unreadable.
        UnsafePickleError: If it references a disallowed global.
    """
    path = regular_file(path, "annotation file", missing_fix="check the dataset root")
    return safe_loads(path.read_bytes(), str(path))


def dump_pickle(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``obj`` as a protocol-4 pickle atomically (how the synthetic world writes annotations).

    The pickler runs without its memo (``fast`` mode), so the bytes depend only on the values and
    not on which objects happen to be shared in memory (e.g. after a trip through a worker process).
    """
    from pecop_lib.atomic import atomic_write_bytes

    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=4)
    pickler.fast = True
    pickler.dump(obj)
    return atomic_write_bytes(path, buffer.getvalue())
