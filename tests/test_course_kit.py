"""The course kit: exercises in nbgrader's format, the student edition, and autograding.

The fast tests use a small notebook written here; the slow ones build the course from the committed
notebooks (smoke preset) and autograde three submissions of it: the instructor edition, the untouched
student edition, and a student edition with one exercise solved.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import nbformat
import pytest
from conftest import REPO_ROOT, cache_env
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from pecop_lib.course_kit import (
    GRADE_COLUMNS,
    HIDDEN_BEGIN,
    NOT_GRADED,
    SOLUTION_BEGIN,
    CourseKitError,
    build_course,
    exercises,
    grade_submissions,
    notebook_exercises,
)
from pecop_lib.notebooks import discover_notebooks

pytest.importorskip("nbgrader")

PARAMS = 'PRESET = "smoke"\nDEVICE = "auto"\nDATA_ROOT = None\nOUT_DIR = "runs/x"\nSEED = 0\nINTERACTIVE = True'


def _meta(grade_id: str, *, check: bool, points: int = 0) -> dict:
    return {"nbgrader": {"grade": check, "grade_id": grade_id, "locked": check, "schema_version": 3,
                         "solution": not check, "task": False, **({"points": points} if check else {})}}


def exercise_cells(number: int, rank: int, answer: str, hidden: str, *, points: int = 2, name: str = "x") -> list:
    """The three cells of one exercise: text, solution cell, check cell."""
    return [
        new_markdown_cell(f"### Exercise {number}.{rank} · Find {name} ({points} points)\nDefine `{name}`.\n"
                          f"*Learning goal:* practise {name}."),
        new_code_cell(f"### BEGIN SOLUTION\n{answer}\n### END SOLUTION",
                      metadata=_meta(f"ex{number:02d}-{rank}-answer", check=False)),
        new_code_cell(f"assert isinstance({name}, int), '{name} should be an int'\n"
                      f"### BEGIN HIDDEN TESTS\n{hidden}\n### END HIDDEN TESTS",
                      metadata=_meta(f"ex{number:02d}-{rank}-check", check=True, points=points)),
    ]


def write_course_notebook(folder: Path, cells: list, name: str = "01_toy.ipynb") -> Path:
    nb = new_notebook(cells=[new_code_cell(PARAMS, metadata={"tags": ["parameters"]}), *cells],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / name)
    return folder / name


def toy_notebook(folder: Path) -> Path:
    return write_course_notebook(folder, [
        *exercise_cells(1, 1, "x = 6 * 7", "assert x == 42, 'not the answer'", points=2),
        *exercise_cells(1, 2, "y = 2 ** 10", "assert y == 1024", points=3, name="y"),
        new_code_cell("after = 1  # the rest of the notebook runs without the answers"),
    ])


def read_grades(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --- exercises: format and errors ---------------------------------------------------------------

def test_notebook_exercises_reads_heading_goal_points_and_answer(tmp_path):
    found = notebook_exercises(toy_notebook(tmp_path))
    assert [(e.number, e.title, e.points, e.check_id) for e in found] == [
        ("1.1", "Find x", 2, "ex01-1-check"), ("1.2", "Find y", 3, "ex01-2-check")]
    assert found[0].goal == "practise x." and found[0].solution == "x = 6 * 7"


@pytest.mark.parametrize("mutate, message", [
    (lambda cells: cells.pop(2), "must be followed by its locked check cell 'ex01-1-check'"),
    (lambda cells: cells[2].metadata["nbgrader"].update(points=5), "heading says 2 points"),
    (lambda cells: cells[0].update(source="### Exercise 1.1 · Find x (2 points)\nno goal"), "Learning goal"),
    (lambda cells: cells[1].metadata["nbgrader"].update(grade_id="ex02-1-answer"), "is not 'ex01-K-answer'"),
    (lambda cells: cells[1].update(source="### BEGIN SOLUTION\nx = 1"), "do not pair up"),
])
def test_malformed_exercise_is_refused_naming_notebook_and_cell(tmp_path, mutate, message):
    cells = exercise_cells(1, 1, "x = 1", "assert x == 1")
    mutate(cells)
    path = write_course_notebook(tmp_path, cells)
    with pytest.raises(CourseKitError, match=message) as err:
        notebook_exercises(path)
    assert "01_toy.ipynb, cell" in str(err.value)


def test_exercises_must_be_numbered_in_order(tmp_path):
    path = write_course_notebook(tmp_path, exercise_cells(1, 2, "x = 1", "assert x == 1"))
    with pytest.raises(CourseKitError, match=r"numbered \[2\]"):
        notebook_exercises(path)


def test_build_refuses_a_folder_it_did_not_build(tmp_path):
    toy_notebook(tmp_path / "nbs")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("keep me")
    with pytest.raises(CourseKitError, match="not a course folder built by pecop"):
        build_course(tmp_path / "mine", preset="smoke", notebooks_dir=tmp_path / "nbs")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "keep me"


# --- build and grade a small course end to end ---------------------------------------------------

def test_toy_course_build_and_grade(tmp_path):
    toy_notebook(tmp_path / "nbs")
    build = build_course(tmp_path / "course", preset="course", notebooks_dir=tmp_path / "nbs")
    assert [p.relative_to(build.root).as_posix() for p in build.student] == ["release/01_toy/01_toy.ipynb"]
    student = build.student[0].read_text()
    assert SOLUTION_BEGIN not in student and HIDDEN_BEGIN not in student and "6 * 7" not in student
    assert "raise NotImplementedError()" in student and "x == 42" not in student
    params = nbformat.read(build.instructor[0], 4).cells[0].source
    assert 'PRESET = \'course\'' in params and "OUT_DIR = 'runs/course/01_toy'" in params

    subs = tmp_path / "subs"
    for who, source in (("teacher", build.instructor[0]), ("blank", build.student[0])):
        (subs / who).mkdir(parents=True)
        shutil.copy(source, subs / who / "01_toy.ipynb")
    wrong = nbformat.read(build.student[0], 4)  # the second exercise answered wrongly, the first right
    for cell in wrong.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        cell.source = {"ex01-1-answer": "x = 42", "ex01-2-answer": "y = 1000"}.get(gid, cell.source)
    (subs / "half").mkdir()
    nbformat.write(wrong, subs / "half" / "01_toy.ipynb")
    (subs / "zed").mkdir()
    (subs / "zed" / "01_toy.ipynb").write_text("my answers are in the email")

    rows = grade_submissions(build.root, subs)
    table = read_grades(build.root / "grades.csv")
    assert list(table[0]) == list(GRADE_COLUMNS) and len(table) == len(rows) == 8
    got = {(r["student"], r["exercise"]): (r["points"], r["max_points"], r["feedback"]) for r in rows}
    assert got[("teacher", "1.1")] == (2.0, 2, "passed") and got[("teacher", "1.2")] == (3.0, 3, "passed")
    assert got[("blank", "1.1")][:2] == (0.0, 2) and got[("blank", "1.1")][2].startswith("NameError")
    assert got[("half", "1.1")] == (2.0, 2, "passed")
    assert got[("half", "1.2")][0] == 0.0 and got[("half", "1.2")][2] == "AssertionError"
    assert (build.root / "feedback" / "half" / "01_toy" / "01_toy.html").is_file()
    for rank in ("1.1", "1.2"):  # an unreadable submission is not graded, and the others still are
        points, _, feedback = got[("zed", rank)]
        assert points == 0.0 and feedback.startswith(f"{NOT_GRADED}: 01_toy.ipynb is not a readable course notebook")
    graded_copy = nbformat.read(build.root / "submitted" / "teacher" / "01_toy" / "01_toy.ipynb", 4)
    assert "INTERACTIVE = False" in graded_copy.cells[0].source  # grading is headless
    assert nbformat.read(subs / "half" / "01_toy.ipynb", 4) == wrong  # the originals are not touched


def test_grading_refuses_unknown_notebooks_and_empty_folders(tmp_path):
    toy_notebook(tmp_path / "nbs")
    build = build_course(tmp_path / "course", preset="smoke", notebooks_dir=tmp_path / "nbs")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CourseKitError, match="no submitted notebooks"):
        grade_submissions(build.root, tmp_path / "empty")
    (tmp_path / "odd" / "ann").mkdir(parents=True)
    (tmp_path / "odd" / "ann" / "homework.ipynb").write_text("{}")
    with pytest.raises(CourseKitError, match="homework.ipynb: not a notebook of this course"):
        grade_submissions(build.root, tmp_path / "odd")
    with pytest.raises(CourseKitError, match="is not a course folder"):
        grade_submissions(tmp_path / "nbs", tmp_path / "odd")


# --- the committed notebooks ---------------------------------------------------------------------

NOTEBOOKS = discover_notebooks(REPO_ROOT / "notebooks")


def test_committed_notebooks_hold_the_course_exercises():
    found = exercises(REPO_ROOT / "notebooks")
    per_notebook = {p.stem: sum(e.notebook == p.stem for e in found) for p in NOTEBOOKS}
    assert len(found) >= 20
    # 01-09 are the course (issues 16 and 17); 00 is the overview
    assert all(2 <= n <= 4 for stem, n in per_notebook.items() if not stem.startswith("00")), per_notebook
    assert len({e.goal for e in found}) == len(found), "every exercise states its own learning goal"


def test_course_readme_lists_every_exercise():
    text = (REPO_ROOT / "course" / "README.md").read_text()
    missing = [f"{e.number} {e.title}" for e in exercises(REPO_ROOT / "notebooks") if f"| {e.number} | {e.title} |" not in text]
    assert not missing, f"course/README.md lacks the exercise rows {missing}"


@pytest.fixture(scope="module")
def graded_course(tmp_path_factory, notebook_cache_dir):
    """The committed notebooks built as a smoke course and autograded for three students.

    ``teacher`` submits the instructor edition, ``blank`` the untouched student edition, ``one``
    the student edition of the first notebook with its first exercise solved.
    """
    root = tmp_path_factory.mktemp("course-kit")
    with cache_env(notebook_cache_dir):
        build = build_course(root / "course", preset="smoke", notebooks_dir=REPO_ROOT / "notebooks")
        subs = root / "submissions"
        for who, editions in (("teacher", build.instructor), ("blank", build.student)):
            (subs / who).mkdir(parents=True)
            for path in editions:
                shutil.copy(path, subs / who / path.name)
        solved = build.exercises[0]
        nb = nbformat.read(next(p for p in build.student if p.parent.name == solved.notebook), 4)
        for cell in nb.cells:
            if cell.metadata.get("nbgrader", {}).get("grade_id") == solved.check_id.replace("-check", "-answer"):
                cell.source = solved.solution
        (subs / "one").mkdir()
        nbformat.write(nb, subs / "one" / f"{solved.notebook}.ipynb")
        rows = grade_submissions(build.root, subs)
    return build, rows, solved


@pytest.mark.slow
@pytest.mark.notebooks
@pytest.mark.timeout(2400)  # the first of these builds and autogrades the whole course
def test_student_edition_holds_no_answers(graded_course):
    build, _, _ = graded_course
    assert len(build.student) == len({e.notebook for e in build.exercises}) == len(NOTEBOOKS) - 1  # not 00
    for path, exercise_list in ((p, [e for e in build.exercises if e.notebook == p.parent.name]) for p in build.student):
        text = path.read_text()
        assert SOLUTION_BEGIN not in text and HIDDEN_BEGIN not in text, path.name
        cells = nbformat.reads(text, 4).cells
        for e in exercise_list:
            answer = next(c.source for c in cells if c.metadata.get("nbgrader", {}).get("grade_id")
                          == e.check_id.replace("-check", "-answer"))
            assert "raise NotImplementedError()" in answer
            assert not [ln for ln in e.solution.splitlines() if ln.strip() and ln in answer.splitlines()], e.number


@pytest.mark.slow
@pytest.mark.notebooks
@pytest.mark.timeout(2400)  # the first of these builds and autogrades the whole course
@pytest.mark.parametrize("student, full", [("teacher", True), ("blank", False)],
                         ids=["instructor edition: full marks", "untouched student edition: zero"])
def test_edition_grades(graded_course, student, full):
    build, rows, _ = graded_course
    graded = [r for r in rows if r["student"] == student]
    assert len(graded) == len(build.exercises)
    wrong = [(r["exercise"], r["points"], r["feedback"]) for r in graded
             if r["points"] != (r["max_points"] if full else 0)]
    assert not wrong


@pytest.mark.slow
@pytest.mark.notebooks
@pytest.mark.timeout(2400)  # the first of these builds and autogrades the whole course
def test_one_solved_exercise_gets_exactly_its_points(graded_course):
    _, rows, solved = graded_course
    one = {r["exercise"]: r["points"] for r in rows if r["student"] == "one"}
    assert one[solved.number] == solved.points
    assert sum(one.values()) == solved.points


def test_cli_reports_course_errors_with_exit_status_2(tmp_path, capsys):
    from pecop_lib.cli import main

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert main(["course", "build", "--out", str(tmp_path / "mine"), "--preset", "smoke"]) == 2
    assert "is not a course folder built by pecop" in capsys.readouterr().err
    assert main(["course", "grade", str(tmp_path), "--course", str(tmp_path / "mine")]) == 2
    assert "build it first with `pecop course build" in capsys.readouterr().err
