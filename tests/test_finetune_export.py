"""Exported fine-tuned models and ``pecop score``: every head's export reproduces its run's test predictions
from the card and the safetensors file alone, a card that does not match its weights is refused, and scoring
reports unreadable or too-short videos by name while scoring the others."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from pecop_lib.cli import main
from pecop_lib.data.video import write_frame_folder
from pecop_lib.explain import METHODS, STEPS, attribute, methods_for
from pecop_lib.finetune import (
    EXPORT_DIR,
    FinetuneOptions,
    ModelCardError,
    Setting,
    finetune,
    load_exported,
    open_finetune_data,
    score,
)
from pecop_lib.finetune.export import CARD_FILE, MODEL_FILE, export_protocols, selected_epoch
from pecop_lib.finetune.scoring import split_queries
from pecop_lib.heads import ScoreBins, USDLSpec, distribution_interval
from pecop_lib.models import AdapterConfig, build_backbone
from pecop_lib.train.context import RunContext
from pecop_lib.train.loop import CHECKPOINT_DIR
from tests._heads_stand_ins import TinyBackbone, single_thread  # noqa: F401 (autouse fixture)
from tests._worlds import finetune_world

OPTIONS = FinetuneOptions(epochs=3, batch_size=2, decode="expectation", exemplars=2, exemplar_missing="any",
                          val_fraction=0.25, eval_batch_size=4, bootstrap=20)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return finetune_world(tmp_path_factory.getbasetemp())


def _backbone() -> torch.nn.Module:
    return build_backbone("i3d", AdapterConfig(), seed=0, width=0.25)


def _run(world, setting: Setting, folder: Path, options: FinetuneOptions = OPTIONS):
    data = open_finetune_data(world[setting.dataset], setting, crop=32, clip_frames=16, seed=0)
    torch.manual_seed(0)
    result = finetune(_backbone(), setting, data, options, run_dir=folder,
                      run=RunContext(device="cpu", seed=0, show_progress=False))
    return result, data


@pytest.mark.slow
@pytest.mark.parametrize("setting", [
    Setting("usdl", "PD4T", "Gait"), Setting("musdl", "MTL-AQA"), Setting("core", "MTL-AQA"), Setting("tsa", "FineDiving"),
], ids=lambda s: s.label)
def test_export_reproduces_the_runs_test_predictions(world, tmp_path, setting):
    result, data = _run(world, setting, tmp_path / "run")
    shutil.rmtree(tmp_path / "run" / CHECKPOINT_DIR, ignore_errors=True)  # the export alone
    epoch = result.reported["honest"].epoch or len(result.epochs)  # undefined validation rho: the last epoch
    card = json.loads((tmp_path / "run" / EXPORT_DIR / "honest" / CARD_FILE).read_text())
    assert card["epoch"] == epoch and card["setting"]["head"] == setting.head
    assert card["higher_is_better"] == (setting.dataset != "PD4T")  # UPDRS: 0 normal, 4 severe
    expected = np.asarray(result.epochs[epoch - 1]["test_pred"])
    assert list(card["test_predictions"].values()) == expected.tolist()
    official = tmp_path / "run" / EXPORT_DIR / "official"
    official_epoch = result.reported["official"].epoch or len(result.epochs)
    assert official.is_dir() == (official_epoch != epoch)  # a second export only where it is another epoch

    report = score(tmp_path / "run", data_root=world[setting.dataset], split="test", device="cpu", show_progress=False)
    assert not report.failures and [s.video for s in report.scores] == [r.id for r in data.test.records]
    np.testing.assert_array_equal([s.score for s in report.scores], expected)  # exactly, from the export alone
    if setting.head in ("usdl", "musdl"):
        assert all(s.interval is not None and s.interval[0] <= s.interval[1] for s in report.scores)
    if setting.kind.pairs:
        assert all(s.exemplars and s.vote_spread is not None and s.vote_spread >= 0 for s in report.scores)

    model = load_exported(tmp_path / "run")
    query = split_queries(model, world[setting.dataset], "test")[0]
    assert query.record_id == data.test.records[0].id
    if not setting.kind.steps:
        with pytest.raises(ValueError, match="do not apply"):
            attribute(model, query, methods=[STEPS])
        return
    # TSA's own per-step account: three contiguous steps whose shares add up to the score the run gave
    assert methods_for(model) == (*METHODS, STEPS)
    found = attribute(model, query, methods=["occlusion", STEPS], window=4)
    steps = found[STEPS]
    assert steps.windows[0][0] == 0 and steps.windows[-1][1] == 16 and len(steps.windows) == 3
    assert all(a[1] == b[0] for a, b in zip(steps.windows, steps.windows[1:]))
    assert steps.score == pytest.approx(expected[0], rel=1e-5, abs=1e-5)
    assert found["occlusion"].score == pytest.approx(expected[0], rel=1e-5, abs=1e-5)
    assert steps.frame_values.sum() == pytest.approx(steps.window_values.sum(), rel=1e-9)


@pytest.mark.slow
def test_score_reads_raw_videos_refuses_foreign_cards_and_reports_failures(world, tmp_path):
    setting = Setting("usdl", "PD4T", "Gait")
    result, data = _run(world, setting, tmp_path / "run")
    expected = result.epochs[(result.reported["honest"].epoch or len(result.epochs)) - 1]["test_pred"]
    # PD4T's loader spreads its frames over the whole video: a video given as a plain file is read the same way
    videos = [data.test.media_path(i) for i in range(len(data.test))]
    raw = score(tmp_path / "run", videos, device="cpu", show_progress=False)
    np.testing.assert_array_equal([s.score for s in raw.scores], expected)

    short = write_frame_folder(np.zeros((5, 40, 40, 3), dtype=np.uint8), tmp_path / "bad" / "short")
    broken = tmp_path / "bad" / "broken.mp4"
    broken.write_text("not a video")
    out = tmp_path / "scores.csv"
    status = main(["score", "--model", str(tmp_path / "run"), str(videos[0]), str(short), str(broken),
                   "--out", str(out), "--no-progress", "--device", "cpu"])
    assert status == 1  # failures are listed, the good video is still scored
    rows = out.read_text().splitlines()
    assert rows[0].startswith("video,score,interval_low,interval_high") and len(rows) == 2
    assert float(rows[1].split(",")[1]) == expected[0]
    report = score(tmp_path / "run", [short, broken], device="cpu", show_progress=False)
    reasons = dict(report.failures)
    assert "5 decodable frames" in reasons[str(short)] and str(broken) in reasons

    export = tmp_path / "run" / EXPORT_DIR / "honest"
    foreign = tmp_path / "foreign"
    shutil.copytree(export, foreign)
    card = json.loads((foreign / CARD_FILE).read_text())
    card["backbone"]["sha256"] = "0" * 64
    (foreign / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelCardError, match="describes another backbone"):
        load_exported(foreign)
    assert main(["score", "--model", str(foreign), str(videos[0]), "--out", str(tmp_path / "x.csv"),
                 "--no-progress"]) == 2
    replaced = tmp_path / "replaced"
    shutil.copytree(export, replaced)
    with (replaced / MODEL_FILE).open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelCardError, match="weights were replaced"):
        load_exported(replaced)
    with pytest.raises(FileNotFoundError, match="holds no exported model"):
        load_exported(tmp_path / "bad")


def test_diving_videos_need_their_difficulty(world, tmp_path):
    setting = Setting("musdl", "MTL-AQA")
    _run(world, setting, tmp_path / "run", replace(OPTIONS, epochs=1))
    clip = write_frame_folder(np.full((40, 40, 40, 3), 128, dtype=np.uint8), tmp_path / "dive")
    report = score(tmp_path / "run", [clip], device="cpu", show_progress=False)
    assert "degree of difficulty" in report.failures[0][1] and not report.scores
    given = score(tmp_path / "run", [clip], defaults={"difficulty": 2.0}, device="cpu", show_progress=False)
    assert given.scores[0].difficulty == 2.0 and np.isfinite(given.scores[0].score)


def test_a_stand_in_backbone_exports_nothing_and_says_so(world, tmp_path):
    setting = Setting("usdl", "PD4T", "Gait")
    data = open_finetune_data(world[setting.dataset], setting, crop=32, clip_frames=16, seed=0)
    with pytest.warns(UserWarning, match="exports no model"):
        finetune(TinyBackbone(32), setting, data, replace(OPTIONS, epochs=1),
                 run_dir=tmp_path / "run", run=RunContext(device="cpu", seed=0, show_progress=False))
    assert not (tmp_path / "run" / EXPORT_DIR).exists()


def test_selection_follows_the_protocols():
    records = [{"test_rho": 0.1, "val_rho": 0.5}, {"test_rho": 0.9, "val_rho": 0.2}, {"test_rho": 0.3, "val_rho": 0.5}]
    assert selected_epoch(records, "honest") == 0 and selected_epoch(records, "official") == 1  # first best
    assert selected_epoch([{"test_rho": None, "val_rho": None}] * 3, "honest") == 2  # undefined: the last epoch
    assert export_protocols("official", True) == ("honest", "official")
    assert export_protocols("official_last10", True) == ("honest",)  # a mean of ten epochs is no single model
    assert export_protocols("official_last10", False) == ()


def test_distribution_interval_by_hand():
    bins = ScoreBins(0.0, 4.0, 5)
    probs = torch.tensor([[[0.0, 0.1, 0.8, 0.1, 0.0]]])
    # cdf 0, 0.1, 0.9, 1.0, 1.0: the 5th percentile is the first bin reaching 0.05 (score 1), the 95th score 3
    assert distribution_interval(probs, USDLSpec(bins, sigma=1.0)).tolist() == [[1.0, 3.0]]
    certain = torch.zeros(1, 6, 5)
    certain[0, :, 2] = 1.0  # six sub-scores of exactly 2: the sum is 12 in every draw
    spec = USDLSpec(bins, sigma=1.0, num_paths=6, combination="sum")
    assert distribution_interval(certain, spec).tolist() == [[12.0, 12.0]]
    with pytest.raises(ValueError, match="expected probabilities"):
        distribution_interval(probs, spec)
