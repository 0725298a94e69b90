"""USDL / MUSDL: soft labels, KL loss, decoding, judge combination, parameter counts, real annotations, overfitting."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from pecop_lib.data.safe_pickle import safe_load
from pecop_lib.heads.usdl import (
    USDL,
    ScoreBins,
    USDLSpec,
    combine_paths,
    decode,
    gaussian_soft_labels,
    kl_loss,
    usdl_spec,
)
from pecop_lib.heads.windows import Windowing, encode_windows
from tests._heads_stand_ins import TinyBackbone, brightness_clips, single_thread, train_and_rank  # noqa: F401 (autouse fixture)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("dataset", "multi", "score", "peak"),
    [
        ("mtl_aqa", False, 52.25, 50),
        ("mtl_aqa", False, 104.5, 100),
        ("jigsaws", False, 17.0, 11),
        ("pd4t", False, 3.0, 3),
        ("mtl_aqa", True, 8.5, 17),
        ("jigsaws", True, 1.0, 0),
    ],
)
def test_soft_labels_sum_to_one_and_peak_at_the_score_bin(
    dataset: str, multi: bool, score: float, peak: int
) -> None:
    spec = usdl_spec(dataset, multi_path=multi)
    target = gaussian_soft_labels(torch.tensor([score]), spec.bins, spec.sigma)[0]
    assert target.shape == (spec.bins.num_bins,)
    assert abs(float(target.sum()) - 1.0) < 1e-6
    assert int(target.argmax()) == peak
    # the official formula: scipy normal pdf over the bin indices, renormalised
    pdf = stats.norm.pdf(
        np.arange(spec.bins.num_bins), loc=float(spec.bins.position(torch.tensor(score))), scale=spec.sigma
    )
    np.testing.assert_allclose(target.numpy(), pdf / pdf.sum(), rtol=1e-5, atol=1e-7)


def test_official_bins_and_sigmas() -> None:
    usdl_mtl, musdl_mtl = usdl_spec("mtl_aqa"), usdl_spec("mtl_aqa", multi_path=True)
    assert (usdl_mtl.bins.num_bins, usdl_mtl.sigma) == (101, 5.0)
    assert float(usdl_mtl.bins.position(torch.tensor(104.5))) == pytest.approx(100.0)
    assert (musdl_mtl.bins.num_bins, musdl_mtl.sigma, musdl_mtl.num_paths) == (21, 5.0, 7)
    assert musdl_mtl.bins.values()[:3].tolist() == [0.0, 0.5, 1.0]
    assert usdl_spec("jigsaws").bins.values().tolist() == list(range(6, 31))
    jig = usdl_spec("jigsaws", multi_path=True)
    assert (jig.bins.values().tolist(), jig.sigma, jig.num_paths, jig.combination) == (
        [1, 2, 3, 4, 5],
        1.0,
        6,
        "sum",
    )
    wide = gaussian_soft_labels(torch.tensor([50.0]), usdl_mtl.bins, 5.0)
    narrow = gaussian_soft_labels(torch.tensor([50.0]), usdl_mtl.bins, 1.0)
    assert float(narrow.max()) > float(wide.max())
    with pytest.raises(ValueError, match="no MUSDL spec"):
        usdl_spec("pd4t", multi_path=True)
    with pytest.raises(ValueError, match="needs 7 judges"):
        USDLSpec(ScoreBins(0, 10, 21), 5.0, num_paths=5, combination="middle_three_x_difficulty")
    with pytest.raises(ValueError, match="combination rule"):
        USDLSpec(ScoreBins(0, 10, 21), 5.0, num_paths=3)


def test_kl_loss_equals_torch_kldivloss_default() -> None:
    torch.manual_seed(0)
    log_p = torch.log_softmax(torch.randn(4, 21), dim=-1)
    target = gaussian_soft_labels(
        torch.tensor([0.0, 2.5, 7.0, 10.0]), ScoreBins(0, 10, 21), 0.5
    )  # far tails underflow to 0
    assert (target == 0).any()
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # torch warns that "mean" is not the true KL; the official code uses it
        expected = torch.nn.KLDivLoss()(log_p, target)
    torch.testing.assert_close(kl_loss(log_p, target), expected)
    assert float(kl_loss(torch.log(target.clamp_min(1e-30)), target)) == pytest.approx(0.0, abs=1e-7)


def test_decode_argmax_and_expectation() -> None:
    bins = ScoreBins(0.0, 10.0, 21)
    probs = torch.zeros(2, 21)
    probs[0, [4, 5, 6]] = torch.tensor([0.3, 0.4, 0.3])  # argmax bin 5 = 2.5; expectation 2.5
    probs[1, [2, 20]] = torch.tensor([0.6, 0.4])  # argmax 1.0; expectation 0.6*1 + 0.4*10 = 4.6
    log_p = torch.log(probs.clamp_min(1e-38))
    assert decode(log_p, bins).tolist() == [2.5, 1.0]
    torch.testing.assert_close(decode(log_p, bins, "expectation"), torch.tensor([2.5, 4.6]))
    with pytest.raises(ValueError, match="unknown decode mode"):
        decode(log_p, bins, "median")  # type: ignore[arg-type]


def test_middle_three_rule_on_hand_cases() -> None:
    judges = torch.tensor(
        [
            [
                9.5,
                9.0,
                9.5,
                9.0,
                8.5,
                9.5,
                8.5,
            ],  # MTL-AQA (1, 1): sorted 8.5 8.5 | 9 9 9.5 | 9.5 9.5 -> 27.5 x 3.2 = 88.0
            [0.0, 10.0, 5.0, 5.0, 5.0, 0.0, 10.0],  # extremes dropped: 15 x 2.0
            [7.0, 7.0, 7.0, 7.0, 7.0, 7.0, 7.0],  # all equal: 21 x 1.5
            [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],  # 3 + 4 + 5 = 12 x 3.0
        ]
    )
    difficulty = torch.tensor([3.2, 2.0, 1.5, 3.0])
    torch.testing.assert_close(
        combine_paths(judges, "middle_three_x_difficulty", difficulty), torch.tensor([88.0, 30.0, 31.5, 36.0])
    )
    torch.testing.assert_close(combine_paths(judges[:, :6], "sum"), judges[:, :6].sum(dim=1))
    with pytest.raises(ValueError, match="needs 7 judge scores"):
        combine_paths(judges[:, :6], "middle_three_x_difficulty", difficulty)
    with pytest.raises(ValueError, match="pass difficulty"):
        combine_paths(judges, "middle_three_x_difficulty")


def test_parameter_counts_match_the_reference() -> None:
    assert n_params(USDL(usdl_spec("mtl_aqa"))) == 308_325
    assert n_params(USDL(usdl_spec("jigsaws"))) == 298_521
    assert n_params(USDL(usdl_spec("mtl_aqa", multi_path=True))) == 2_086_035
    assert n_params(USDL(usdl_spec("jigsaws", multi_path=True))) == 1_775_646


def test_musdl_forward_loss_and_prediction_shapes() -> None:
    torch.manual_seed(0)
    head = USDL(usdl_spec("mtl_aqa", multi_path=True), in_dim=32)
    log_p = head(torch.randn(3, 32))
    assert log_p.shape == (3, 7, 21)
    torch.testing.assert_close(log_p.exp().sum(dim=-1), torch.ones(3, 7))
    judges = torch.full((3, 7), 8.0)
    targets = head.targets(judges)
    expected = sum(kl_loss(log_p[:, p], targets[:, p]) for p in range(7))
    torch.testing.assert_close(head.loss(log_p, judges), expected)
    assert head.predict(log_p, torch.tensor([2.0, 3.0, 3.5])).shape == (3,)
    with pytest.raises(ValueError, match="one per path"):
        head.loss(log_p, torch.full((3,), 80.0))


def test_real_mtl_aqa_rule_and_target_decoding(real_annotations) -> None:
    ann = safe_load(real_annotations / "mtl-aqa-musdl" / "augmented_final_annotations_dict.pkl")
    judges = torch.tensor(np.stack([rec["judge_scores"] for rec in ann.values()]), dtype=torch.float32)
    difficulty = torch.tensor([rec["difficulty"] for rec in ann.values()], dtype=torch.float32)
    final = torch.tensor([rec["final_score"] for rec in ann.values()], dtype=torch.float32)
    musdl = USDL(usdl_spec("mtl_aqa", multi_path=True))
    # one published judge score is out of range ((4, 49): 45.0, surely 4.5); its target piles up at the 10.0 bin
    assert (judges > 10).sum() == 1 and float(judges.max()) == 45.0
    # decoding the Gaussian targets recovers every judge score (multiples of 0.5) exactly, the outlier as 10.0 ...
    decoded_judges = musdl.path_scores(torch.log(musdl.targets(judges)))
    torch.testing.assert_close(decoded_judges, judges.clamp(0, 10))
    # ... and the middle-three rule reproduces the final score for 1,384 of the 1,412 dives (28 annotation deviations)
    combined = combine_paths(decoded_judges, "middle_three_x_difficulty", difficulty)
    assert len(final) == 1412 and int(((combined - final).abs() > 0.05).sum()) == 28
    # USDL's 101 bins are 1.045 points apart: argmax decoding of the target is within half a bin of the score
    usdl = USDL(usdl_spec("mtl_aqa"))
    err = (usdl.predict(torch.log(usdl.targets(final))) - final).abs()
    assert float(err.max()) <= usdl.spec.bins.step / 2 + 1e-4


def test_real_jigsaws_subscores_sum_to_grs(real_annotations) -> None:
    labels = safe_load(real_annotations / "jigsaws-musdl" / "label.pkl")
    sub = torch.tensor(np.array([np.asarray(v, dtype=np.float32) for v in labels.values()]))
    assert sub.shape == (103, 6)
    musdl = USDL(usdl_spec("jigsaws", multi_path=True))
    grs = musdl.predict(torch.log(musdl.targets(sub)))
    torch.testing.assert_close(grs, sub.sum(dim=1))
    usdl = USDL(usdl_spec("jigsaws"))
    torch.testing.assert_close(usdl.predict(torch.log(usdl.targets(grs))), grs)


@pytest.mark.parametrize("multi", [False, True])
def test_usdl_and_musdl_overfit_a_tiny_synthetic_set(multi: bool) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n = 12
    quality = rng.uniform(3.0, 9.5, n)
    judges = np.clip(np.round((quality[:, None] + rng.normal(0, 0.4, (n, 7))) * 2) / 2, 0, 10)
    difficulty = rng.choice([2.0, 3.0, 3.4], n)
    final = np.sort(judges, axis=1)[:, 2:5].sum(axis=1) * difficulty
    clips = brightness_clips(final)
    backbone = TinyBackbone(16)
    windowing = Windowing(8, 4, (0, 4))
    head = USDL(usdl_spec("mtl_aqa", multi_path=multi), in_dim=16)
    targets = torch.tensor(judges if multi else final, dtype=torch.float32)
    dd = torch.tensor(difficulty, dtype=torch.float32)

    def step() -> torch.Tensor:
        backbone.train(), head.train()
        return head.loss(head(encode_windows(backbone, clips, windowing).video()), targets)

    def evaluate() -> np.ndarray:
        backbone.eval(), head.eval()
        with torch.no_grad():
            return head.predict(head(encode_windows(backbone, clips, windowing).video()), dd).numpy()

    params = [*backbone.parameters(), *head.parameters()]
    first, last, rho0, rho1 = train_and_rank(params, step, evaluate, final, steps=60, lr=3e-3)
    assert last < 0.5 * first
    assert rho1 > max(rho0, 0.85)
