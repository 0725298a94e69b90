"""House rules of the package's layout (docs/architecture.md)."""

from __future__ import annotations

from pathlib import Path


def test_no_module_of_the_package_over_500_lines() -> None:
    """The house rule of issue 13: a module that grows past 500 lines holds more than one concept."""
    package = Path(__file__).resolve().parent.parent / "pecop_lib"
    long = {str(p.relative_to(package)): n for p in sorted(package.rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500}
    assert not long, f"split these modules: {long}"
