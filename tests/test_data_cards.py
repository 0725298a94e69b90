"""Every dataset, real and synthetic, has a data card covering what a card must say."""

from __future__ import annotations

import pytest
from conftest import REPO_ROOT

CARDS = ["mtl-aqa", "jigsaws", "finediving", "pd4t", "synthetic-actions", "synthetic-mtl-aqa",
         "synthetic-finediving", "synthetic-jigsaws", "synthetic-pd4t"]
REQUIRED = ["licen", "size", "split", "known issues", "intended use"]


@pytest.mark.parametrize("name", CARDS)
def test_card_exists_and_covers_required_topics(name):
    text = (REPO_ROOT / "data_cards" / f"{name}.md").read_text().lower()
    missing = [topic for topic in REQUIRED if topic not in text]
    assert not missing, f"data_cards/{name}.md does not cover {missing}"


def test_pd4t_card_states_access_conditions():
    text = (REPO_ROOT / "data_cards" / "pd4t.md").read_text().lower()
    assert "patient" in text and "request" in text


@pytest.mark.parametrize("name, schema", [("mtl-aqa", "MTL_AQA_FIELDS"), ("finediving", "FINEDIVING_FIELDS"),
                                          ("jigsaws", "JIGSAWS_FIELDS"), ("pd4t", "PD4T_FIELDS")])
def test_card_states_every_field_its_loader_checks(name, schema):
    from pecop_lib.data.formats import fields, finediving, jigsaws, mtl_aqa, pd4t

    module = {"mtl-aqa": mtl_aqa, "finediving": finediving, "jigsaws": jigsaws, "pd4t": pd4t}[name]
    declared: tuple[fields.Field, ...] = getattr(module, schema)
    text = (REPO_ROOT / "data_cards" / f"{name}.md").read_text()
    assert f"## What the loader checks (`{schema}`)" in text
    section = text.split(f"(`{schema}`)", 1)[1].split("\n## ", 1)[0]
    shown = {"sub-scores": "sub-scores", "GRS": "GRS"}
    missing = [f.name for f in declared if shown.get(f.name, f"`{f.name}`") not in section]
    assert not missing, f"data_cards/{name}.md does not state the checks of {missing}"
