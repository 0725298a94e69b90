"""The paper's published numbers shipped as data."""

from __future__ import annotations

import math

import pytest

from pecop_lib.paper import (
    FIG5_STRATEGIES,
    FIG5_TASKS,
    PAPER_TABLES,
    PaperTable,
    paper_table,
    table2_beside_paper,
)


def test_all_tables_present():
    assert sorted(PAPER_TABLES) == [f"table{i}" for i in range(1, 7)]


def test_known_cells():
    assert paper_table("table1").row("CoRe + PECoP")["MTL-AQA"] == 95.20
    assert paper_table("table3").row("TSA + PECoP")["FineDiving"] == 93.13
    assert paper_table("table4").row("USDL + HPT")["Gait"] == 81.93
    assert paper_table("table5").row("VSPP")["Avg"] == 89


KNOWN_PAPER_INCONSISTENCIES = {("table4", "USDL + PECoP")}
"""Rows whose published Avg is not the mean of the published task values (documented in the caption)."""


def test_known_inconsistency_is_real_and_documented():
    row = paper_table("table4").row("USDL + PECoP")
    mean = (row["Gait"] + row["Finger tapping"] + row["Hand movement"] + row["Leg agility"]) / 4
    assert round(mean, 2) == 60.60 and row["Avg"] == 60.06
    assert "60.06" in paper_table("table4").caption and "60.60" in paper_table("table4").caption


@pytest.mark.parametrize(("key", "first", "ndigits"), [("table1", 2, 0), ("table4", 1, 2), ("table5", 1, 0), ("table6", 1, 2)])
def test_avg_columns_are_the_means_of_their_rows(key, first, ndigits):
    """A transcription check: each published Avg equals the mean of its task columns as rounded in the paper."""
    table = paper_table(key)
    for row in table.rows:
        if (key, row[0]) in KNOWN_PAPER_INCONSISTENCIES:
            continue
        tasks = [float(v) for v in row[first:-1]]
        assert abs(sum(tasks) / len(tasks) - row[-1]) <= 0.5 * 10**-ndigits + 1e-9, row[0]


def test_unknown_table_and_row():
    with pytest.raises(KeyError, match="unknown paper table 'table9'"):
        paper_table("table9")
    with pytest.raises(KeyError, match=r"has no row 'CoRe\+PECoP'"):
        paper_table("table1").row("CoRe+PECoP")


def test_ragged_rows_are_refused():
    with pytest.raises(ValueError, match="row 'x' has 2 cells, expected 3"):
        PaperTable("t", "c", ("a", "b", "c"), (("x", 1.0),))


def test_format_aligns_columns():
    lines = paper_table("table3").format().splitlines()
    assert lines[1].split() == ["Method", "FineDiving"]
    assert lines[3].split() == ["CoRe", "90.61"]
    assert len({len(line) for line in lines[1:]}) == 1


def test_fig5_description():
    assert len(FIG5_TASKS) == 8 and FIG5_STRATEGIES == ("Dom-G", "Dom-S", "HPT+BN", "PECoP")


def test_table2_beside_paper_adds_megabytes_and_the_published_cells():
    rows = [{"strategy": "HPT", "trainable_params": 12_300_000, "stored_bytes": 50_000_000, "epochs": 2},
            {"strategy": "PECoP", "trainable_params": 800_000, "stored_bytes": 3_500_000, "epochs": 2},
            {"strategy": "HPT+BN", "trainable_params": 40_000, "stored_bytes": 1_000_000}]
    table = table2_beside_paper(rows)
    assert list(table.columns) == ["strategy", "trainable_params", "stored_bytes", "stored_MB", "epochs",
                                   "paper_trainable_params", "paper_epochs", "paper_stored_MB"]
    assert table["stored_MB"].tolist() == [50.0, 3.5, 1.0]
    hpt, pecop, bn = table.to_dict("records")
    assert (hpt["paper_trainable_params"], hpt["paper_epochs"], hpt["paper_stored_MB"]) == (13e6, 16.0, 54.0)
    assert (pecop["paper_trainable_params"], pecop["paper_epochs"], pecop["paper_stored_MB"]) == (1e6, 8.0, 4.0)
    assert math.isnan(bn["paper_trainable_params"]) and math.isnan(bn["paper_stored_MB"])  # not in the paper's Table 2
