"""What ``pecop notebooks run`` prints: one line per notebook start and end, the time left, where
things are at the end, no kernel start-up warning, and ``--preset auto``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
import torch
from conftest import REPO_ROOT
from nbformat.v4 import new_markdown_cell
from test_notebooks import WRITE_METRICS, write_notebook

from pecop_lib import notebooks
from pecop_lib.cli import build_parser, main
from pecop_lib.notebook_progress import (
    EXPECTED_SECONDS,
    MANIFEST_FILE,
    SequenceProgress,
    estimate_left,
    expected_seconds,
    format_estimate,
    notebook_stage,
    previous_wall_times,
)
from pecop_lib.notebooks import (
    discover_notebooks,
)

TCP_WARNING = "Kernel is running over TCP without encryption"
DURATION = r"(\d+ s|\d+ min \d+ s)"


def with_heading(path: Path, *markdown: str) -> Path:
    """Put markdown cells before the cells of a fixture notebook."""
    nb = nbformat.read(path, as_version=4)
    nb.cells[:0] = [new_markdown_cell(text) for text in markdown]
    nbformat.write(nb, path)
    return path


def write_manifest(folder: Path, preset: str, walls: dict[str, tuple[str, float]]) -> None:
    """A manifest as an earlier run leaves it: notebook name -> (status, wall seconds)."""
    folder.mkdir(parents=True, exist_ok=True)
    notebooks = [{"name": name, "status": status, "wall_s": wall} for name, (status, wall) in walls.items()]
    (folder / MANIFEST_FILE).write_text(json.dumps({"preset": preset, "notebooks": notebooks}))


# --- the estimate of the time left ----------------------------------------------------------------

def test_estimate_left_scales_by_finished_notebooks():
    expected = [100.0, 200.0, 300.0]
    assert estimate_left(expected, [], 0) == 600.0  # nothing finished: the expectation as it is
    assert estimate_left(expected, [150.0], 1) == pytest.approx(750.0)  # 1.5 x (200 + 300)
    assert estimate_left(expected, [150.0, 100.0], 2) == pytest.approx(250.0)  # 250/300 x 300
    assert estimate_left(expected, [150.0, 100.0, 300.0], 3) == 0.0
    assert estimate_left([100.0, None], [], 0) is None  # a notebook to come is unknown
    assert estimate_left([None, 100.0], [50.0], 1) == 100.0  # an unknown finished one does not scale


def test_expected_seconds_prefers_the_previous_manifest_of_the_same_preset(tmp_path):
    paths = [Path(f"{stem}.ipynb") for stem in ("00_a", "01_b", "07_c", "10_new")]
    write_manifest(tmp_path, "course", {"00_a": ("ok", 30.0), "01_b": ("failed", 5.0)})
    previous = previous_wall_times(tmp_path, "course")
    assert previous == {"00_a": 30.0}  # the failed notebook's time says nothing about a full run
    table = EXPECTED_SECONDS["course"]
    assert expected_seconds(paths, "course", previous) == [30.0, table["01"], table["07"], None]
    assert previous_wall_times(tmp_path, "smoke") == {}  # another preset's manifest is ignored
    smoke = EXPECTED_SECONDS["smoke"]
    assert expected_seconds(paths, "smoke", {}) == [smoke["00"], smoke["01"], smoke["07"], None]
    assert expected_seconds(paths, "tutorial", {}) == [None] * 4  # no table: no estimate
    assert previous_wall_times(tmp_path / "none", "course") == {}
    # 00_a took 45 s instead of 30: the rest (60 + 1200) scales by 1.5
    assert estimate_left([30.0, 60, 1200], [45.0], 1) == pytest.approx(1890.0)


def test_expected_seconds_tables_cover_the_committed_notebooks():
    numbers = [p.name[:2] for p in discover_notebooks(REPO_ROOT / "notebooks")]
    for preset in ("smoke", "course"):
        assert sorted(EXPECTED_SECONDS[preset]) == numbers


def test_format_estimate():
    assert [format_estimate(s) for s in (20, 29, 31, 360, 1890, 3900)] == [
        "under a minute", "under a minute", "about 1 min", "about 6 min", "about 32 min", "about 1 h 5 min"]


# --- the lines ------------------------------------------------------------------------------------

def test_progress_lines_with_an_estimate():
    lines = SequenceProgress(["00_a", "01_b", "02_c"], [60.0, 120.0, 360.0])
    assert lines.started("Warm-up", 0.0) == "[1/3] 00_a: Warm-up ... started, about 9 min left in the sequence"
    # 90 s instead of 60: scale 1.5, (120 + 360) x 1.5 = 720 s
    assert lines.ended(90.0, 90.0) == "[1/3] 00_a done in 1 min 30 s; about 12 min left"
    assert lines.started("", 90.0) == "[2/3] 01_b ... started, about 12 min left in the sequence"
    # 150 s for 180 expected: 360 x 150/180 = 300 s
    assert lines.ended(60.0, 150.0) == "[2/3] 01_b done in 1 min 0 s; about 5 min left"
    assert lines.started("Last", 150.0) == "[3/3] 02_c: Last ... started, about 5 min left in the sequence"
    assert lines.ended(200.0, 350.0, "failed in cell 3") == "[3/3] 02_c failed in cell 3 after 3 min 20 s"


def test_progress_lines_without_an_estimate_show_the_elapsed_time():
    lines = SequenceProgress(["00_a", "01_b"], [10.0, None])
    assert lines.started("", 0.0) == "[1/2] 00_a ... started, 0 s into the sequence"
    assert lines.ended(75.0, 75.0) == "[1/2] 00_a done in 1 min 15 s; 1 min 15 s elapsed"
    assert lines.started("Stage", 75.0) == "[2/2] 01_b: Stage ... started, 1 min 15 s into the sequence"
    assert lines.ended(3725.0, 3800.0) == "[2/2] 01_b done in 1 h 2 min; sequence done in 1 h 3 min"


def test_notebook_stage_is_the_first_heading_trimmed(tmp_path):
    plain = write_notebook(tmp_path, "00_plain.ipynb", "x = 1")
    assert notebook_stage(plain) == ""
    titled = with_heading(write_notebook(tmp_path, "03_t.ipynb", "x = 1"), "Some text, no heading.",
                          "# 03 · VSPP and **continual** pretraining\n\nPECoP adapts ...")
    assert notebook_stage(titled) == "VSPP and continual pretraining"
    subtitled = with_heading(write_notebook(tmp_path, "00_s.ipynb", "x = 1"), "# 00 · Overview: what PECoP is")
    assert notebook_stage(subtitled) == "Overview"
    long = with_heading(write_notebook(tmp_path, "01_l.ipynb", "x = 1"), "## " + "word " * 30)
    assert len(notebook_stage(long)) == 60 and notebook_stage(long).endswith("word…")


def test_committed_notebooks_have_short_stages():
    for path in discover_notebooks(REPO_ROOT / "notebooks"):
        stage = notebook_stage(path)
        assert stage and len(stage) <= 60 and not stage[0].isdigit(), (path.name, stage)


def test_cli_progress_flags_and_preset_help(capsys):
    parser = build_parser()
    assert parser.parse_args(["notebooks", "run"]).progress is None  # per-cell bar only on a terminal
    assert parser.parse_args(["notebooks", "run", "--progress"]).progress is True
    assert parser.parse_args(["notebooks", "run", "--no-progress"]).progress is False
    with pytest.raises(SystemExit):
        parser.parse_args(["notebooks", "run", "--help"])
    assert "auto = tutorial with a GPU, else course" in " ".join(capsys.readouterr().out.split())


# --- whole runs of fixture notebooks --------------------------------------------------------------

def test_cli_run_prints_one_line_per_notebook_start_and_end(tmp_path, monkeypatch, capfd):
    """Two fixture notebooks through ``pecop notebooks run --preset auto`` without CUDA: the preset is
    course, the time left comes from the previous course manifest, the summary says where things are,
    and the kernel's TCP warning is not printed."""
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    with_heading(write_notebook(nbs, "00_a.ipynb", WRITE_METRICS), "# 00 · Warm-up: a first notebook")
    figure = "from pathlib import Path\n(Path(OUT_DIR) / 'figures' / 'f.png').write_bytes(b'png')"
    with_heading(write_notebook(nbs, "01_b.ipynb", WRITE_METRICS, figure), "# 01 · Second notebook")
    write_manifest(tmp_path / "out", "course", {"00_a": ("ok", 6000.0), "01_b": ("ok", 60.0)})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)

    assert main(["notebooks", "run", "--preset", "auto", "--device", "cpu", "--notebooks-dir", str(nbs),
                 "--out", "out"]) == 0
    captured = capfd.readouterr()
    assert TCP_WARNING not in captured.out + captured.err
    assert captured.err == ""  # the kernels' own output (e.g. libzmq's shutdown noise) is in their logs
    for log in (tmp_path / "out").glob("*.kernel.log"):
        assert TCP_WARNING not in log.read_text()  # encrypted transport: the warning has no cause
    lines = captured.out.splitlines()
    expected = [
        r"\[1/2\] 00_a: Warm-up \.\.\. started, about 1 h 41 min left in the sequence",  # 6000 + 60 s
        rf"\[1/2\] 00_a done in {DURATION}; under a minute left",  # 60 s x (a few s / 6000 s)
        r"\[2/2\] 01_b: Second notebook \.\.\. started, under a minute left in the sequence",
        rf"\[2/2\] 01_b done in {DURATION}; sequence done in {DURATION}",
        rf"pecop: 2 notebook\(s\) ran with preset 'course' in {DURATION}",
        r"  output folder:      out/",
        r"  manifest:           out/manifest\.json",
        r"  executed notebooks: out/NN_\*\.ipynb",
        r"  figures:            out/\*/figures/ \(1 PNG file\)",
    ]
    assert len(lines) == len(expected), lines
    for line, pattern in zip(lines, expected):
        assert re.fullmatch(pattern, line), (line, pattern)
    manifest = json.loads((tmp_path / "out" / MANIFEST_FILE).read_text())
    assert manifest["preset"] == "course" and manifest["status"] == "ok"


def test_cli_failure_prints_the_line_of_the_failed_notebook_and_auto_is_tutorial_with_cuda(
        tmp_path, monkeypatch, capfd):
    """With CUDA (monkeypatched), ``--preset auto`` is tutorial, which has no table of expected times:
    the lines show the elapsed time. The failing notebook gets its line, then today's error (exit 1)."""
    write_notebook(tmp_path, "00_broken.ipynb", "raise RuntimeError('nope')")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    # the manifest's environment report would ask the faked CUDA for its cuDNN version
    monkeypatch.setattr(notebooks, "environment_report", lambda device: {"device": device})

    assert main(["notebooks", "run", "--preset", "auto", "--device", "cpu", "--notebooks-dir", str(tmp_path),
                 "--out", str(tmp_path / "out")]) == 1
    captured = capfd.readouterr()
    assert TCP_WARNING not in captured.out + captured.err
    lines = captured.out.splitlines()
    assert lines[0] == "[1/1] 00_broken ... started, 0 s into the sequence"
    assert re.fullmatch(rf"\[1/1\] 00_broken failed in cell 2 after {DURATION}", lines[1]), lines
    assert len(lines) == 2
    assert captured.err.startswith("pecop: FAILED: notebook 00_broken failed in cell 2")
    assert json.loads((tmp_path / "out" / MANIFEST_FILE).read_text())["preset"] == "tutorial"
