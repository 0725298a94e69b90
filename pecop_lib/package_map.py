"""A map of the package: every module of ``pecop_lib`` with the first line of its docstring.

The overview notebook prints it, so the map is always the code's own account of itself.
"""

from __future__ import annotations

import importlib
import pkgutil

import pecop_lib


def package_map() -> list[tuple[str, str]]:
    """List ``(module name, one-line summary)`` for every module of ``pecop_lib``, sorted by name.

    Importing each module is part of the point: a module that fails to import raises here.
    """
    rows = [("pecop_lib", _summary(pecop_lib))]
    for info in pkgutil.walk_packages(pecop_lib.__path__, prefix="pecop_lib."):
        if info.name.endswith("__main__"):
            continue  # running it would execute the command line
        rows.append((info.name, _summary(importlib.import_module(info.name))))
    return sorted(rows)


def _summary(module: object) -> str:
    doc = (getattr(module, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else "(no docstring)"
