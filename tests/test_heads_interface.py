"""The one head interface (HeadKind): registry, recipes, score scales, the MLP baseline added as one file."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from pecop_lib.data.dataset import AQARecord
from pecop_lib.finetune.report import paper_reference
from pecop_lib.heads import HEAD_KINDS, HEADS, ScoreMLP, head_kind, recipes
from pecop_lib.heads.windows import Windowing, encode_windows
from tests._heads_stand_ins import TinyBackbone, brightness_clips, single_thread, train_and_rank  # noqa: F401 (autouse fixture)

PACKAGE = Path(__file__).resolve().parents[1] / "pecop_lib"


def test_registry_names_every_head_once_with_its_recipes():
    assert HEADS == ("usdl", "musdl", "core", "tsa", "mlp")
    for name, kind in HEAD_KINDS.items():
        assert kind.name == name and kind.recipes
        assert all(r.head == name and r.dataset == dataset for dataset, r in kind.recipes.items())
    assert set(recipes()) == {f"{k.name}/{d}" for k in HEAD_KINDS.values() for d in k.recipes}
    assert [k.name for k in HEAD_KINDS.values() if k.pairs] == ["core", "tsa"]
    assert [k.name for k in HEAD_KINDS.values() if k.maps or k.steps] == ["tsa"]
    with pytest.raises(ValueError, match=r"unknown head 'nope'; choose one of \('usdl'"):
        head_kind("nope")


def test_score_scales_round_trip_by_hand():
    core = head_kind("core")
    dives = [AQARecord("a", "a", 60.0, "3.0", 3.0), AQARecord("b", "b", 45.0, "1.5", 1.5)]
    assert core.values(dives, "mtl_aqa").tolist() == [20.0, 30.0]  # completeness = score / difficulty
    assert core.final_scores(np.array([20.0, 30.0]), dives, "mtl_aqa").tolist() == [60.0, 45.0]
    trials = [AQARecord("c", "c", 18.0, "Suturing")]
    assert core.values(trials, "jigsaws").tolist() == [18.0]  # JIGSAWS regresses the raw score
    assert core.final_scores(np.array([17.5]), trials, "jigsaws").tolist() == [17.5]
    assert head_kind("tsa").values(dives, "finediving").tolist() == [60.0, 45.0]  # TSA: raw scores always


def test_score_and_pair_heads_refuse_the_other_familys_call():
    head = torch.nn.Identity()
    with pytest.raises(NotImplementedError, match="relative to exemplars"):
        head_kind("core").score(head, torch.zeros(1, 4), torch.ones(1))
    with pytest.raises(NotImplementedError, match="one video at a time"):
        head_kind("mlp").relative(head, None, None, torch.zeros(1))  # type: ignore[arg-type]


def test_score_mlp_standardises_by_hand():
    head = ScoreMLP(4, mean=50.0, std=10.0)
    z = torch.tensor([0.0, 1.5, -2.0])
    assert head.predict(z).tolist() == pytest.approx([50.0, 65.0, 30.0])
    assert float(head.loss(z, torch.tensor([50.0, 65.0, 30.0]))) == pytest.approx(0.0, abs=1e-12)
    assert float(head.loss(torch.zeros(2), torch.tensor([60.0, 40.0]))) == pytest.approx(1.0)  # (+-1 sd)^2
    assert float(ScoreMLP(4, mean=3.0, std=0.0).std) == 1.0  # constant training scores: unit scale
    assert head(torch.randn(5, 4)).shape == (5,)


def test_mlp_baseline_learns_a_score_through_the_interface():
    torch.manual_seed(0)
    kind = head_kind("mlp")
    scores = np.linspace(20.0, 90.0, 24)
    clips = brightness_clips(scores)
    backbone, windowing = TinyBackbone(), Windowing(8, 8, [0])
    head = kind.build(backbone.feature_dim, windowing, "mtl_aqa", decode="argmax", values=scores, groups=["g"] * 24)
    target = torch.as_tensor(scores, dtype=torch.float32)

    def step() -> torch.Tensor:
        return kind.loss(head, {"target": target}, encode_windows(backbone, clips, windowing))

    def evaluate() -> np.ndarray:
        with torch.no_grad():
            pred, dist = kind.score(head, encode_windows(backbone, clips, windowing).video(), torch.ones(24))
        assert dist is None  # the baseline predicts a score, no distribution
        return pred.numpy()

    first, last, rho0, rho1 = train_and_rank([*backbone.parameters(), *head.parameters()], step, evaluate, scores,
                                             steps=60, lr=3e-3)
    assert last < 0.5 * first and rho1 > max(rho0, 0.85)


def test_the_baseline_sits_next_to_the_papers_row():
    assert paper_reference("mlp", "MTL-AQA", pecop=False) == pytest.approx(0.8921)
    assert paper_reference("mlp", "JIGSAWS", "Needle_Passing", pecop=False) == pytest.approx(0.68)
    assert paper_reference("mlp", "MTL-AQA", pecop=True) is None  # the paper has no "+ PECoP" baseline


@pytest.mark.parametrize("module", sorted(str(p.relative_to(PACKAGE)) for room in ("finetune", "eval")
                                           for p in (PACKAGE / room).glob("*.py")))
def test_fine_tuning_and_evaluation_never_name_a_head(module):
    """Every difference between heads goes through HeadKind: no head name appears as a string in these modules."""
    tree = ast.parse((PACKAGE / module).read_text())
    named = sorted({node.value for node in ast.walk(tree)
                    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in HEADS})
    assert named == [], f"{module} names heads {named}; ask the head's kind (pecop_lib.heads.interface) instead"
