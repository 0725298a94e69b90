"""The course kit: nbgrader editions of the notebooks, and autograding of students' submissions.

The committed notebooks are the *instructor* (nbgrader "source") edition: each exercise is a
markdown cell (``### Exercise N.K · title (P points)`` and a ``*Learning goal:*`` line), a solution
cell whose answer sits between ``### BEGIN SOLUTION`` and ``### END SOLUTION``, and a locked check
cell (``grade: true``, its points) whose value checks sit between ``### BEGIN HIDDEN TESTS`` and
``### END HIDDEN TESTS``. Run as they are, the notebooks execute the solutions and pass their checks.

:func:`build_course` turns them, with nbgrader, into a course folder (nbgrader's layout, one
assignment per notebook, named after the notebook)::

    <course>/source/<stem>/<stem>.ipynb     instructor edition, parameters set to the course's preset
    <course>/release/<stem>/<stem>.ipynb    student edition: answers and hidden tests stripped
    <course>/gradebook.db, nbgrader_config.py

:func:`grade_submissions` autogrades a folder of submitted notebooks (``<student>/<stem>.ipynb`` or
nbgrader's ``<student>/<stem>/<stem>.ipynb``) into ``grades.csv`` (one row per student and exercise,
with the check's failure message as feedback) and nbgrader's HTML feedback per notebook.

nbgrader is an optional dependency: ``pip install -e '.[course]'``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from pecop_lib.atomic import atomic_write_text
from pecop_lib.config import PRESET_NAMES, resolve
from pecop_lib.environment import environ
from pecop_lib.notebooks import discover_notebooks, headless
from pecop_lib.outputs import progress

COURSE_ID = "pecop"
"""nbgrader's course id of the kit."""

COURSE_MARKER = ".pecop-course"
"""File that marks a folder as a course built by :func:`build_course` (a rebuild replaces its editions)."""

GRADES_FILE = "grades.csv"
"""The grade table :func:`grade_submissions` writes into the course folder."""

NOT_GRADED = "not graded"
"""How the feedback of a submission nbgrader could not grade begins (its points are 0)."""

GRADE_COLUMNS: tuple[str, ...] = ("student", "notebook", "exercise", "title", "points", "max_points", "feedback")
"""Columns of the grade table, one row per student and exercise."""

SOLUTION_BEGIN, SOLUTION_END = "### BEGIN SOLUTION", "### END SOLUTION"
HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"

_HEADING = re.compile(r"^### Exercise (\d+)\.(\d+) · (.+) \((\d+) points?\)\s*$", re.M)
_GOAL = re.compile(r"^\*Learning goal:\*\s*(.+)$", re.M)
_ANSWER_ID = re.compile(r"^ex(\d{2})-(\d+)-answer$")


class CourseKitError(ValueError):
    """A malformed exercise, course folder or submission; the message names the file and the fix."""


@dataclass(frozen=True)
class Exercise:
    """One autograded exercise of an instructor notebook.

    Attributes:
        notebook: The notebook's stem (also its nbgrader assignment id), e.g. ``03_vspp_pretraining``.
        number: ``"N.K"``: the notebook's number and the exercise's rank in it.
        title: The heading's title.
        goal: The learning goal (the ``*Learning goal:*`` line).
        points: Points of its check cell.
        check_id: nbgrader ``grade_id`` of the check cell (``exNN-K-check``).
        solution: The model answer (the text between the solution markers).
    """

    notebook: str
    number: str
    title: str
    goal: str
    points: int
    check_id: str
    solution: str


@dataclass(frozen=True)
class CourseBuild:
    """What :func:`build_course` made.

    Attributes:
        root: The course folder.
        preset: The preset the editions run with.
        instructor: Instructor-edition notebooks (``source/``).
        student: Student-edition notebooks (``release/``).
        exercises: The exercises of the built notebooks.
    """

    root: Path
    preset: str
    instructor: list[Path]
    student: list[Path]
    exercises: list[Exercise]


def _nbgrader(cell: Any) -> dict[str, Any]:
    return cell.get("metadata", {}).get("nbgrader", {})


def _between(text: str, begin: str, end: str) -> str:
    return text.split(begin, 1)[1].split(end, 1)[0].strip("\n") if begin in text else ""


def notebook_exercises(path: str | os.PathLike[str]) -> list[Exercise]:
    """Read and check the exercises of one instructor notebook.

    Args:
        path: An ``NN_topic.ipynb`` notebook.

    Returns:
        Its exercises in order (empty when it has none).

    Raises:
        CourseKitError: A solution cell without its heading, goal or check cell, an unbalanced marker,
            a duplicate or misnumbered id; the message names the notebook and the cell.
    """
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    number = int(path.name[:2])
    found: list[Exercise] = []
    for i, cell in enumerate(nb.cells):
        meta, where = _nbgrader(cell), f"{path.name}, cell {i}"
        for begin, end in ((SOLUTION_BEGIN, SOLUTION_END), (HIDDEN_BEGIN, HIDDEN_END)):
            if cell.source.count(begin) != cell.source.count(end):
                raise CourseKitError(f"{where}: {begin!r} and {end!r} do not pair up")
        if not meta.get("solution"):
            if SOLUTION_BEGIN in cell.source:
                raise CourseKitError(f"{where}: solution markers in a cell without nbgrader 'solution: true' metadata")
            continue
        match = _ANSWER_ID.match(meta.get("grade_id", ""))
        if not match or int(match[1]) != number:
            raise CourseKitError(f"{where}: solution grade_id {meta.get('grade_id')!r} is not 'ex{number:02d}-K-answer'")
        rank = int(match[2])
        if cell.source.count(SOLUTION_BEGIN) != 1:
            raise CourseKitError(f"{where}: a solution cell needs exactly one {SOLUTION_BEGIN!r} region")
        check = nb.cells[i + 1] if i + 1 < len(nb.cells) else None
        check_meta = _nbgrader(check) if check is not None else {}
        check_id = f"ex{number:02d}-{rank}-check"
        if not (check_meta.get("grade") and check_meta.get("locked") and check_meta.get("grade_id") == check_id
                and int(check_meta.get("points", 0)) > 0):
            raise CourseKitError(f"{where}: must be followed by its locked check cell {check_id!r} with points > 0")
        text = nb.cells[i - 1].source if i > 0 and nb.cells[i - 1].cell_type == "markdown" else ""
        heading, goal = _HEADING.search(text), _GOAL.search(text)
        if not heading or not goal or (int(heading[1]), int(heading[2])) != (number, rank):
            raise CourseKitError(f"{where}: the markdown cell above must hold '### Exercise {number}.{rank} · title "
                                 "(P points)' and a '*Learning goal:* ...' line")
        if int(heading[4]) != int(check_meta["points"]):
            raise CourseKitError(f"{where}: the heading says {heading[4]} points, check cell {check_id!r} gives "
                                 f"{check_meta['points']}")
        found.append(Exercise(notebook=path.stem, number=f"{number}.{rank}", title=heading[3].strip(),
                              goal=goal[1].strip(), points=int(check_meta["points"]), check_id=check_id,
                              solution=_between(cell.source, SOLUTION_BEGIN, SOLUTION_END)))
    ranks = [int(e.number.split(".")[1]) for e in found]
    if ranks != list(range(1, len(found) + 1)):
        raise CourseKitError(f"{path.name}: exercises are numbered {ranks}; number them 1, 2, ... in order")
    return found


def exercises(notebooks_dir: str | os.PathLike[str] | None = None) -> list[Exercise]:
    """All exercises of the numbered notebooks, in order (see :func:`notebook_exercises`)."""
    return [e for path in discover_notebooks(notebooks_dir) for e in notebook_exercises(path)]


@contextlib.contextmanager
def _nbgrader_session() -> Iterator[None]:
    """nbgrader's environment: the interpreter's scripts on PATH, headless kernels, quiet database warnings.

    nbgrader runs the ``alembic`` executable when it creates a gradebook, which a virtual environment
    only provides on PATH when activated.
    """
    scripts = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    with environ(PATH=scripts), headless(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"nbgrader\..*")  # SQLAlchemy 2.1 notices about nbgrader's ORM
        yield


def _api(root: Path, cell_timeout: int) -> Any:
    from nbgrader.apps import NbGraderAPI
    from traitlets.config import Config

    config = Config()
    config.CourseDirectory.root = str(root)
    config.CourseDirectory.course_id = COURSE_ID
    config.Execute.timeout = cell_timeout
    return NbGraderAPI(config=config)


def _require_nbgrader() -> None:
    try:
        import nbgrader  # noqa: F401
    except ImportError as exc:
        raise CourseKitError("the course kit needs nbgrader: pip install -e '.[course]'") from exc


def _check(result: dict[str, Any], what: str) -> None:
    if not result.get("success"):
        log = (result.get("error") or "") + (result.get("log") or "")
        raise CourseKitError(f"nbgrader failed to {what}:\n{log[-3000:]}")


def _set_parameters(nb: Any, **literals: object) -> None:
    """Set ``NAME = literal`` lines of the notebook's parameters cell (each name must be declared there)."""
    cell = next((c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        raise CourseKitError("the notebook has no cell tagged 'parameters'; restore it from the course's edition")
    for name, value in literals.items():
        cell.source, found = re.subn(rf"^{name} = .*$", f"{name} = {value!r}", cell.source, count=1, flags=re.M)
        if not found:
            raise CourseKitError(f"the parameters cell declares no {name}; restore it (`{name} = ...`)")


def build_course(out: str | os.PathLike[str], *, preset: str = "course",
                 notebooks_dir: str | os.PathLike[str] | None = None, only: Sequence[str] | None = None) -> CourseBuild:
    """Build the course folder: instructor and student editions of the notebooks with exercises.

    Args:
        out: The course folder; created, or a folder this function built before (its editions are
            replaced, its gradebook and graded submissions kept).
        preset: The preset written into the editions' parameters cell (``course``: the CPU preset the
            exercises' cached artifacts come from).
        notebooks_dir: Where the instructor notebooks live; defaults to the repository's ``notebooks/``.
        only: Notebook selectors (see :func:`pecop_lib.notebooks.discover_notebooks`); default: every
            notebook with exercises.

    Returns:
        The :class:`CourseBuild`.

    Raises:
        CourseKitError: nbgrader is missing, ``out`` is a folder this function did not build, an exercise
            is malformed, a student edition still holds answer text, or nbgrader failed.
    """
    _require_nbgrader()
    if preset not in PRESET_NAMES:
        raise CourseKitError(f"unknown preset {preset!r}; choose one of {list(PRESET_NAMES)}")
    root = Path(out).resolve()
    if root.exists() and any(root.iterdir()) and not (root / COURSE_MARKER).exists():
        raise CourseKitError(f"{root} is not empty and is not a course folder built by pecop; choose another --out")
    chosen = [(p, notebook_exercises(p)) for p in discover_notebooks(notebooks_dir, only)]
    chosen = [(p, ex) for p, ex in chosen if ex]
    if not chosen:
        raise CourseKitError("none of the selected notebooks has exercises")
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / COURSE_MARKER, f"preset = {preset}\n")
    cell_timeout = resolve(preset).runner_cell_timeout_s
    atomic_write_text(root / "nbgrader_config.py", (
        "# nbgrader's configuration of this course folder (written by `pecop course build`)\n"
        "c = get_config()  # noqa: F821\n"
        f"c.CourseDirectory.course_id = {COURSE_ID!r}\n"
        f"c.Execute.timeout = {cell_timeout}\n"))
    api = _api(root, cell_timeout)
    instructor, student = [], []
    with _nbgrader_session():
        for path, found in progress(chosen, desc="student editions"):
            nb = nbformat.read(path, as_version=4)
            _set_parameters(nb, PRESET=preset, OUT_DIR=f"runs/{preset}/{path.stem}")
            source = root / "source" / path.stem / path.name
            source.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(source, nbformat.writes(nb))
            _check(api.generate_assignment(path.stem), f"generate the student edition of {path.name}")
            release = root / "release" / path.stem / path.name
            _assert_stripped(release, found)
            instructor.append(source)
            student.append(release)
    return CourseBuild(root=root, preset=preset, instructor=instructor, student=student,
                       exercises=[e for _, found in chosen for e in found])


def _assert_stripped(release: Path, found: Sequence[Exercise]) -> None:
    """Refuse a student edition that still holds a marker, an answer line or a hidden test."""
    text = release.read_text(encoding="utf-8")
    for marker in (SOLUTION_BEGIN, HIDDEN_BEGIN, HIDDEN_END):
        if marker in text:
            raise CourseKitError(f"{release}: the student edition still holds {marker!r}")
    cells = nbformat.reads(text, as_version=4).cells
    answers = {_nbgrader(c).get("grade_id"): c.source for c in cells if _nbgrader(c).get("solution")}
    for exercise in found:
        shown = answers.get(exercise.check_id.replace("-check", "-answer"), "")
        leaked = [line for line in exercise.solution.splitlines() if line.strip() and line in shown.splitlines()]
        if leaked:
            raise CourseKitError(f"{release}: exercise {exercise.number} shows answer lines {leaked[:2]}")


def _submissions(folder: Path, assignments: dict[str, str]) -> list[tuple[str, str, Path]]:
    """``(student, assignment, notebook)`` for every notebook of ``folder`` (see :func:`grade_submissions`)."""
    if not folder.is_dir():
        raise CourseKitError(f"submissions folder {folder} does not exist")
    found = []
    for student in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for nb in sorted(student.rglob("*.ipynb")):
            if ".ipynb_checkpoints" in nb.parts:
                continue
            if nb.name not in assignments:
                raise CourseKitError(f"{nb}: not a notebook of this course (expected one of {sorted(assignments)})")
            found.append((student.name, assignments[nb.name], nb))
    if not found:
        raise CourseKitError(f"no submitted notebooks in {folder}: expected <student>/<NN_topic>.ipynb files")
    duplicates = {(s, a) for s, a, _ in found if sum(1 for s2, a2, _ in found if (s2, a2) == (s, a)) > 1}
    if duplicates:
        raise CourseKitError(f"{folder}: more than one notebook per student and assignment: {sorted(duplicates)}")
    return found


def _failure(notebook: Any, check_id: str) -> str:
    """The feedback of one check cell of an autograded notebook: its error's last line, or ``passed``."""
    cell = next((c for c in notebook.cells if _nbgrader(c).get("grade_id") == check_id), None)
    if cell is None:
        return "check cell missing from the autograded notebook"
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    if not errors:
        return "passed"
    return f"{errors[0].get('ename', 'Error')}: {errors[0].get('evalue', '')}".strip().rstrip(":")


def _autograde(api: Any, root: Path, student: str, assignment: str, path: Path) -> str | None:
    """Autograde one submission with its feedback; ``None`` when graded, else why not (a log is kept)."""
    try:
        nb = nbformat.read(path, as_version=4)
        _set_parameters(nb, INTERACTIVE=False)
    except (OSError, ValueError) as exc:  # not JSON, not UTF-8, not a notebook, no parameters cell (CourseKitError)
        return f"{NOT_GRADED}: {path.name} is not a readable course notebook ({type(exc).__name__}: {exc})"[:500]
    target = root / "submitted" / student / assignment / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, nbformat.writes(nb))
    for action, result in (("autograde", lambda: api.autograde(assignment, student)),
                           ("feedback", lambda: api.generate_feedback(assignment, student))):
        outcome = result()
        if not outcome.get("success"):
            log = root / "logs" / f"{student}-{assignment}-{action}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(log, (outcome.get("log") or "") + (outcome.get("error") or ""))
            return f"{NOT_GRADED}: nbgrader's {action} failed on {path} (log: {log})"
    return None


def grade_submissions(course: str | os.PathLike[str], submissions: str | os.PathLike[str], *,
                      out: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Autograde a folder of submitted notebooks into a grade table with per-exercise feedback.

    Each submitted notebook is copied into the course's ``submitted/<student>/<stem>/`` (the
    originals are not touched) with ``INTERACTIVE = False`` (grading is headless, as ``pecop
    notebooks run`` is: widgets are for exploring, they hold no answer; and nbclient has been seen to
    wait forever on notebook 02's ``interact`` widget with the ``course`` preset), run and graded by
    nbgrader (hidden tests restored, locked cells reset), and given nbgrader's HTML feedback in
    ``feedback/<student>/<stem>/``.

    Args:
        course: A folder made by :func:`build_course`.
        submissions: ``<student>/<NN_topic>.ipynb`` or ``<student>/<NN_topic>/<NN_topic>.ipynb``.
        out: The grade table; defaults to ``<course>/grades.csv``.

    A submission nbgrader cannot grade (not a notebook, a kernel that dies) does not stop the others:
    its rows get 0 points and feedback beginning with :data:`NOT_GRADED`, naming the file and the log.

    Returns:
        The table's rows (:data:`GRADE_COLUMNS`): one per student and exercise of the submitted notebooks.

    Raises:
        CourseKitError: Not a course folder, an unknown notebook name or no submissions.
    """
    _require_nbgrader()
    from nbgrader.api import Gradebook

    root = Path(course).resolve()
    if not (root / COURSE_MARKER).exists():
        raise CourseKitError(f"{root} is not a course folder: build it first with `pecop course build --out {course}`")
    preset = (root / COURSE_MARKER).read_text().split("=", 1)[1].strip()
    built = {p.parent.name: p for p in sorted((root / "source").glob("*/*.ipynb"))}
    catalogue = {stem: notebook_exercises(path) for stem, path in built.items()}
    found = _submissions(Path(submissions).resolve(), {path.name: stem for stem, path in built.items()})
    api = _api(root, resolve(preset).runner_cell_timeout_s)
    rows: list[dict[str, Any]] = []
    with _nbgrader_session():
        for student, assignment, path in progress(found, desc="autograding"):
            failure = _autograde(api, root, student, assignment, path)
            graded, scores = None, {}
            if failure is None:
                graded = nbformat.read(root / "autograded" / student / assignment / path.name, as_version=4)
                with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
                    scores = {g.name: g.score for g in gradebook.find_submission_notebook(
                        assignment, assignment, student).grades}
            for exercise in catalogue[assignment]:
                rows.append({"student": student, "notebook": assignment, "exercise": exercise.number,
                             "title": exercise.title, "points": float(scores.get(exercise.check_id, 0.0)),
                             "max_points": exercise.points,
                             "feedback": failure or _failure(graded, exercise.check_id)})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=GRADE_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(Path(out) if out is not None else root / GRADES_FILE, buffer.getvalue())
    return rows

