"""The dataset registry: one record per target dataset answers what code elsewhere used to ask by name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from _worlds import TINY_SPEC, tiny_jigsaws, tiny_world

from pecop_lib.data import JIGSAWS, MTLAQA, PD4T, FineDiving
from pecop_lib.data.formats.jigsaws import TASKS as JIGSAWS_TASKS
from pecop_lib.data.formats.pd4t import TASKS as PD4T_TASKS
from pecop_lib.data.registry import DATASETS, HOLDOUT_RULES, dataset_record, find_dataset, first_fold
from pecop_lib.data.synthetic import generate_world

PACKAGE = Path(__file__).resolve().parent.parent / "pecop_lib"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    others = generate_world(base / "registry-world", TINY_SPEC, datasets=("FineDiving", "PD4T"))
    return {"MTL-AQA": tiny_world(base)["MTL-AQA"], "JIGSAWS": tiny_jigsaws(base)["JIGSAWS"],
            "FineDiving": others["FineDiving"], "PD4T": others["PD4T"]}


def test_records_hold_each_datasets_facts() -> None:
    assert list(DATASETS) == ["MTL-AQA", "FineDiving", "JIGSAWS", "PD4T"]
    assert {n: (r.key, r.card) for n, r in DATASETS.items()} == {
        "MTL-AQA": ("mtl_aqa", "mtl-aqa"), "FineDiving": ("finediving", "finediving"),
        "JIGSAWS": ("jigsaws", "jigsaws"), "PD4T": ("pd4t", "pd4t"),
    }  # fmt: skip
    assert DATASETS["JIGSAWS"].tasks == JIGSAWS_TASKS and DATASETS["PD4T"].tasks == PD4T_TASKS
    assert DATASETS["JIGSAWS"].folds == (0, 1, 2, 3)
    assert [n for n, r in DATASETS.items() if r.folds] == ["JIGSAWS"]
    assert {n: r.holdout for n, r in DATASETS.items()} == {
        "MTL-AQA": "group", "FineDiving": "group", "JIGSAWS": "subject", "PD4T": "subject"}
    assert all(r.holdout in HOLDOUT_RULES for r in DATASETS.values())
    assert [n for n, r in DATASETS.items() if r.annotated_span] == ["MTL-AQA"]
    assert [n for n, r in DATASETS.items() if r.judges] == ["MTL-AQA"]
    # official fr: 3 for gait, 1 for every other task
    assert DATASETS["PD4T"].pace("Gait") == 3 and DATASETS["PD4T"].pace("Leg agility") == 1
    assert DATASETS["MTL-AQA"].pace(None) == 1
    assert DATASETS["JIGSAWS"].first_fold == 0 and DATASETS["PD4T"].first_fold is None
    assert first_fold("JIGSAWS") == 0 and first_fold("MTL-AQA") is None and first_fold(None) is None
    for record in DATASETS.values():
        assert (PACKAGE.parent / "data_cards" / f"{record.card}.md").is_file(), record.card


def test_lookups_by_name_and_by_any_spelling() -> None:
    assert dataset_record("PD4T") is DATASETS["PD4T"]
    for spelling in ("MTL-AQA", "mtl_aqa", "mtl-aqa", "Mtl-Aqa"):
        assert find_dataset(spelling) is DATASETS["MTL-AQA"]
    with pytest.raises(ValueError, match=re.escape("unknown target dataset 'mtl_aqa'; choose one of ('MTL-AQA',")):
        dataset_record("mtl_aqa")  # exact names only where a name is a folder name
    with pytest.raises(ValueError, match="unknown dataset 'AQA-7'; choose one of"):
        find_dataset("AQA-7")


def test_checks_name_the_valid_choices() -> None:
    jigsaws, pd4t = DATASETS["JIGSAWS"], DATASETS["PD4T"]
    jigsaws.check("Suturing", 3)
    with pytest.raises(ValueError, match=r"JIGSAWS needs a task, one of \('Suturing'"):
        jigsaws.check(None, 0)
    with pytest.raises(ValueError, match=r"other three folds\); got fold=4"):
        jigsaws.check_fold(4)
    with pytest.raises(ValueError, match="got fold=True"):
        jigsaws.check_fold(True)
    with pytest.raises(ValueError, match=r"PD4T has a single train/test split; do not pass fold=0 \(only JIGSAWS has"):
        pd4t.check("Gait", 0)
    with pytest.raises(ValueError, match="MTL-AQA has a single task; do not pass task='Gait'"):
        DATASETS["MTL-AQA"].check_task("Gait")
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'val'"):
        pd4t.open("/nonexistent", "val", task="Gait")


def test_open_builds_each_datasets_own_loader(world) -> None:
    cases = [
        ("MTL-AQA", None, None, lambda: MTLAQA(world["MTL-AQA"], "test", crop=32)),
        ("FineDiving", None, None, lambda: FineDiving(world["FineDiving"], "test", crop=32)),
        ("JIGSAWS", "Suturing", 1, lambda: JIGSAWS(world["JIGSAWS"], "Suturing", 1, "test", crop=32)),
        ("PD4T", "Gait", None, lambda: PD4T(world["PD4T"], "Gait", "test", crop=32)),
    ]
    for name, task, fold, direct in cases:
        opened = DATASETS[name].open(world[name], "test", task=task, fold=fold, crop=32)
        expected = direct()
        assert type(opened) is type(expected), name
        assert [r.id for r in opened.records] == [r.id for r in expected.records], name


def test_mtl_aqa_finetune_options_follow_the_folder(world) -> None:
    options = DATASETS["MTL-AQA"].finetune_options(Path(world["MTL-AQA"]))
    assert options["layout"] == "core"  # the synthetic world keeps CoRe's whole-event frames
    assert DATASETS["PD4T"].finetune_options(Path(world["PD4T"])) == {}


def test_no_dataset_name_branches_outside_data_and_heads() -> None:
    """Code outside ``data/`` (the registry) and ``heads/`` (their per-dataset tables) asks the record."""
    names = "MTL-AQA|FineDiving|JIGSAWS|PD4T|mtl_aqa|mtl-aqa|jigsaws|finediving|pd4t"
    pattern = re.compile(rf"""(==|!=|\bin)\s*\(?["']({names})["']|["']({names})["']\s*(==|!=)""")
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] in ("data", "heads"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                found.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
