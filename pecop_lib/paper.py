"""The numbers the PECoP paper publishes, as data, so that runs can print "paper vs this run".

Source: Dadashzadeh, Duan, Whone, Mirmehdi, "PECoP: Parameter Efficient Continual Pretraining for
Action Quality Assessment", WACV 2024. Correlations are Spearman's rho in percent (rho x 100).
Rows hold ``None`` where the paper leaves a cell empty.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class PaperTable:
    """One published table.

    Attributes:
        key: Short identifier, e.g. ``"table1"``.
        caption: What the table shows, with units.
        columns: Column names; the first names the row label.
        rows: One tuple per row: the label, then one value per remaining column.
    """

    key: str
    caption: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str | float | None, ...], ...]

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"{self.key}: row {row[0]!r} has {len(row)} cells, expected {len(self.columns)}")

    def row(self, label: str) -> dict[str, str | float | None]:
        """Return one row as ``{column: value}``.

        Raises:
            KeyError: If no row has that label (the message lists the labels).
        """
        for row in self.rows:
            if row[0] == label:
                return dict(zip(self.columns, row))
        raise KeyError(f"{self.key} has no row {label!r}; rows are {[r[0] for r in self.rows]}")

    def format(self) -> str:
        """Render as an aligned plain-text table (title line first)."""
        cells = [list(self.columns)] + [[_cell(v) for v in r] for r in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        lines = [f"{self.key}: {self.caption}"]
        for n, row in enumerate(cells):
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)


def _cell(value: str | float | None) -> str:
    """Text of one cell: blanks for ``None``, thousands separators for counts, 2 decimals otherwise."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.2f}"


_JIG = ("Method", "S", "NP", "KT", "Avg")
_PD4T = ("Method", "Gait", "Finger tapping", "Hand movement", "Leg agility", "Avg")

PAPER_TABLES: dict[str, PaperTable] = {
    t.key: t
    for t in (
        PaperTable(
            "table1",
            "MTL-AQA and JIGSAWS (Spearman rho x 100; JIGSAWS: Suturing, Needle Passing, Knot Tying)",
            ("Method", "MTL-AQA", "S", "NP", "KT", "Avg"),
            (
                ("I3D+MLP", 89.21, 61.0, 68.0, 66.0, 65.0),
                ("USDL", 90.66, 64.0, 63.0, 61.0, 63.0),
                ("MUSDL", 92.73, 71.0, 69.0, 71.0, 70.0),
                ("MUSDL + HPT", 93.49, 69.0, 75.0, 72.0, 72.0),
                ("MUSDL + PECoP", 93.72, 77.0, 76.0, 76.0, 76.0),
                ("CoRe", 95.12, 84.0, 86.0, 86.0, 85.0),
                ("CoRe + HPT", 94.26, 80.0, 81.0, 80.0, 80.0),
                ("CoRe + PECoP", 95.20, 88.0, 90.0, 88.0, 89.0),
            ),
        ),
        PaperTable(
            "table2",
            "Cost of continual pretraining, I3D backbone (the paper gives approximate values: ~13M, ~1M, ~54 MB, ~4 MB)",
            ("Strategy", "trainable parameters", "epochs", "stored size (MB)"),
            (
                ("HPT", 13e6, 16.0, 54.0),
                ("PECoP", 1e6, 8.0, 4.0),
            ),
        ),
        PaperTable(
            "table3",
            "FineDiving (Spearman rho x 100)",
            ("Method", "FineDiving"),
            (("CoRe", 90.61), ("CoRe + PECoP", 93.15), ("TSA", 92.03), ("TSA + PECoP", 93.13)),
        ),
        PaperTable(
            "table4",
            "PD4T, I3D backbone (Spearman rho x 100). As published; note that the paper's Avg for USDL + PECoP "
            "(60.06) is not the mean of its four task values (60.60), probably a typo in the paper",
            _PD4T,
            (
                ("USDL", 79.14, 42.58, 53.93, 56.47, 58.03),
                ("USDL + HPT", 81.93, 46.38, 54.15, 58.54, 60.25),
                ("USDL + PECoP", 80.68, 47.44, 56.19, 58.09, 60.06),
                ("CoRe", 78.87, 45.93, 54.10, 62.34, 60.31),
                ("CoRe + HPT", 81.42, 49.73, 57.06, 63.98, 63.05),
                ("CoRe + PECoP", 82.33, 49.40, 59.46, 64.27, 63.87),
            ),
        ),
        PaperTable(
            "table5",
            "Pretext task for PECoP, CoRe on JIGSAWS (Spearman rho x 100)",
            _JIG,
            (
                ("RSPNet", 83.0, 86.0, 84.0, 84.0),
                ("VideoPace", 86.0, 87.0, 87.0, 87.0),
                ("VSPP", 88.0, 90.0, 88.0, 89.0),
            ),
        ),
        PaperTable(
            "table6",
            "PD4T with an R3D-18 backbone in CoRe (Spearman rho x 100)",
            _PD4T,
            (
                ("CoRe", 76.16, 35.35, 50.53, 49.96, 53.0),
                ("CoRe + PECoP", 79.11, 39.71, 55.37, 52.56, 56.69),
            ),
        ),
    )
}
"""All published tables by key (``table1`` ... ``table6``)."""

FIG5_TASKS: tuple[str, ...] = ("MTL-AQA", "Gait", "Finger tapping", "Hand movement", "Leg agility", "S", "NP", "KT")
"""The eight AQA tasks of the paper's Fig. 5 (values are only drawn there, not tabulated)."""

FIG5_STRATEGIES: tuple[str, ...] = ("Dom-G", "Dom-S", "HPT+BN", "PECoP")
"""The pretraining strategies compared in Fig. 5, CoRe as the AQA head."""


def table2_beside_paper(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Paper Table 2 (the cost of continual pretraining) next to this package's rows, counted or measured.

    The one place where the comparison is built: notebook 02 (parameter counts and sizes of freshly
    built models), notebook 03 (one stage-2 run per strategy) and notebook 07
    (:func:`~pecop_lib.studies.tables.cost_table`).

    Args:
        rows: One per strategy, each with ``"strategy"`` (the paper's label: ``HPT``, ``PECoP``, ...) and
            any of ``"trainable_params"``, ``"epochs"``, ``"stored_bytes"`` and further measured columns.

    Returns:
        The rows in order, with ``stored_MB`` after ``stored_bytes`` (where given) and the paper's
        ``paper_trainable_params``, ``paper_epochs`` and ``paper_stored_MB`` last (missing, NaN, for a
        strategy the paper does not list).
    """
    import pandas as pd

    published = paper_table("table2")
    listed = {row[0] for row in published.rows}
    out = []
    for row in rows:
        paper = published.row(str(row["strategy"])) if row["strategy"] in listed else {}
        cells: dict[str, Any] = {}
        for key, value in row.items():
            cells[key] = value
            if key == "stored_bytes":
                cells["stored_MB"] = value / 1e6
        cells.update(paper_trainable_params=paper.get("trainable parameters"), paper_epochs=paper.get("epochs"),
                     paper_stored_MB=paper.get("stored size (MB)"))
        out.append(cells)
    return pd.DataFrame(out)


def paper_table(key: str) -> PaperTable:
    """Return one published table.

    Raises:
        KeyError: On an unknown key, listing the known ones.
    """
    try:
        return PAPER_TABLES[key]
    except KeyError:
        raise KeyError(f"unknown paper table {key!r}; known: {', '.join(PAPER_TABLES)}") from None
