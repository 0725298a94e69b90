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
