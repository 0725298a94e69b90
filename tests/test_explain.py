"""Temporal attribution: on a constructed score that reads known frames only, occlusion and Integrated Gradients
put the attribution exactly there; the localisation statistic against random windows; ``pecop explain`` on an
exported model writes its figure and values."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pecop_lib.cli import main
from pecop_lib.explain import Attribution, integrated_gradients, localisation, occlusion, time_windows
from pecop_lib.finetune import FinetuneOptions, Setting, finetune, open_finetune_data
from pecop_lib.models import AdapterConfig, build_backbone
from pecop_lib.train.context import RunContext
from tests._heads_stand_ins import single_thread  # noqa: F401 (autouse fixture)
from tests._worlds import finetune_world

READ = slice(20, 24)  # the only frames the constructed score looks at


def _clip() -> torch.Tensor:
    clip = torch.rand(3, 32, 6, 6, generator=torch.Generator().manual_seed(0))
    clip[:, READ] += 2.0  # bright frames: above the clip's mean image, so they lower the score below
    return clip


def _score(clips: torch.Tensor) -> torch.Tensor:
    """Minus the brightness of frames 20-23: a model whose score depends on those frames alone."""
    return -clips[:, :, READ].sum(dim=(1, 2, 3, 4))


def test_occlusion_finds_the_frames_the_score_reads():
    clip = _clip()
    windows = time_windows(32, 4)
    full, values = occlusion(_score, clip, windows, batch_size=3)
    mean = clip.mean(dim=1, keepdim=True).expand_as(clip)
    assert full == pytest.approx(float(-clip[:, READ].sum()))
    expected = float(-clip[:, READ].sum() + mean[:, READ].sum())  # score - score with frames 20-23 replaced
    assert int(np.argmin(values)) == windows.index((20, 24)) and values.min() == pytest.approx(expected, rel=1e-5)
    assert np.count_nonzero(values) == 1  # every other window leaves the score exactly as it was


def test_integrated_gradients_finds_the_frames_the_score_reads():
    clip = _clip()
    full, frames = integrated_gradients(_score, clip, steps=16, batch_size=4)
    mean = clip.mean(dim=1, keepdim=True).expand_as(clip)
    # a linear score: IG is (input - baseline) x gradient, per frame, exactly
    expected = -(clip - mean).sum(dim=(0, 2, 3)).numpy()
    expected[:READ.start], expected[READ.stop:] = 0, 0
    np.testing.assert_allclose(frames, expected, rtol=1e-4, atol=1e-5)
    assert frames.sum() == pytest.approx(full - float(_score(mean[None])[0]), rel=1e-4)  # completeness


def test_time_windows_cover_the_clip():
    assert time_windows(10, 4) == [(0, 4), (4, 8), (6, 10)]  # the last window ends at the last frame
    assert time_windows(8, 4, 2) == [(0, 4), (2, 6), (4, 8)]
    with pytest.raises(ValueError, match="window <= 8"):
        time_windows(8, 9)


def _attribution(values: list[float], positions: np.ndarray) -> Attribution:
    windows = [(i * 2, i * 2 + 2) for i in range(len(values))]
    return Attribution("v", "occlusion", 0.0, windows, np.array(values), np.zeros(len(positions)), positions)


def test_the_worst_window_follows_the_score_direction():
    quality = _attribution([0.1, -1.0, 0.9, 0.0], np.arange(0, 80, 10))
    assert quality.worst_window() == 1  # a higher score is better: the window that lowered it most
    quality.higher_is_better = False  # PD4T: a higher score is more severe, a defect raises it
    assert quality.worst_window() == 2


def test_localisation_against_random_windows():
    positions = np.arange(0, 80, 10)  # 8 clip frames read from an 80-frame video: 4 windows of 20 video frames
    hit = _attribution([0.1, -1.0, 0.2, 0.0], positions)  # worst (most negative): window 1, frames 20-30
    miss = _attribution([-1.0, 0.1, 0.2, 0.0], positions)
    defects = [[(25, 28)], [(25, 28)], []]  # one defect inside window 1; the third video has none: a clean control
    result = localisation([hit, miss, hit], defects, permutations=2000)
    assert result["videos"] == 2 and result["rate"] == 0.5
    assert result["random_rate"] == pytest.approx(0.25)  # one window of four overlaps the defect
    assert result["clean_videos"] == 1 and result["clean_rate"] == 1.0  # the clean video's worst window is window 1
    many = localisation([hit] * 12, [[(25, 28)]] * 12, permutations=2000)
    assert many["rate"] == 1.0 and many["p_value"] < 0.001  # 12 hits where chance gives 3
    assert np.isnan(many["clean_rate"]) and np.isnan(many["clean_p_value"])  # no clean video, no control
    assert localisation([miss] * 12, [[(25, 28)]] * 12, permutations=2000)["p_value"] == 1.0
    with pytest.raises(ValueError, match="defect lists"):
        localisation([hit], [])


def test_localisation_against_clean_videos_at_the_same_positions():
    positions = np.arange(0, 80, 10)
    hit = _attribution([0.1, -1.0, 0.2, 0.0], positions)  # worst: window 1
    first = _attribution([-1.0, 0.1, 0.2, 0.0], positions)  # worst: window 0
    third = _attribution([0.1, 0.2, -1.0, 0.0], positions)  # worst: window 2
    faulty = [[(25, 28)]] * 6
    # a model that always points at window 1: every defect there is hit, and so is the same place of clean videos
    always = localisation([hit] * 12, faulty + [[]] * 6, permutations=2000)
    assert always["rate"] == 1.0 and always["p_value"] < 0.01  # the random-window null calls it significant
    assert always["clean_rate"] == 1.0 and always["clean_p_value"] == 1.0  # the clean null does not
    # clean videos point elsewhere: the faulty videos' hits are specific to the defect
    specific = localisation([hit] * 6 + [first] * 6, faulty + [[]] * 6, permutations=2000)
    assert specific["clean_rate"] == 0.0
    assert specific["clean_p_value"] < 0.01  # one deal in C(12, 6) = 924 gives the faulty videos six hits
    # by hand: a clean worst window on windows 1, 0 and 2 lands on the faulty video's defect once in three
    mixed = localisation([hit, hit, first, third], [[(25, 28)], [], [], []], permutations=500)
    assert mixed["clean_videos"] == 3 and mixed["clean_rate"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="different window counts"):
        localisation([hit, _attribution([0.0, -1.0], positions[:4])], [[(25, 28)], []])


@pytest.mark.slow
def test_pecop_explain_writes_the_timeline_and_the_values(tmp_path_factory, tmp_path):
    world = finetune_world(tmp_path_factory.getbasetemp())
    setting = Setting("usdl", "PD4T", "Gait")
    data = open_finetune_data(world[setting.dataset], setting, crop=32, clip_frames=16, seed=0)
    options = FinetuneOptions(epochs=1, batch_size=2, decode="expectation", val_fraction=0.25, eval_batch_size=4,
                              bootstrap=10)
    finetune(build_backbone("i3d", AdapterConfig(), seed=0, width=0.25), setting, data, options,
             run_dir=tmp_path / "run", run=RunContext(device="cpu", seed=0, show_progress=False))
    video = data.test.media_path(0)
    status = main(["explain", "--model", str(tmp_path / "run"), "--video", str(video), "--window", "4",
                   "--steps", "8", "--out", str(tmp_path / "explain"), "--device", "cpu"])
    assert status == 0
    values = json.loads((tmp_path / "explain" / f"{video.stem}-attribution.json").read_text())
    for method in ("occlusion", "integrated_gradients"):
        entry = values["methods"][method]
        assert len(entry["window_values"]) == len(entry["windows"]) == 4 and len(entry["frame_values"]) == 16
        assert np.isfinite(entry["window_values"]).all() and entry["spans"][0][0] == entry["positions"][0]
    assert (tmp_path / "explain" / "figures" / f"{video.stem}-attribution.png").is_file()
    # the same video named by its record id, read as the run read it: the same values
    record = data.test.records[0].id
    common = ["--model", str(tmp_path / "run"), "--data-root", str(world[setting.dataset]), "--window", "4",
              "--steps", "8", "--out", str(tmp_path / "by-record"), "--device", "cpu"]
    assert main(["explain", "--record", record, *common]) == 0
    by_record = json.loads((tmp_path / "by-record" / f"{record.replace('/', '_')}-attribution.json").read_text())
    for method in ("occlusion", "integrated_gradients"):
        np.testing.assert_allclose(by_record["methods"][method]["window_values"],
                                   values["methods"][method]["window_values"], rtol=1e-4, atol=1e-6)
    assert main(["explain", "--record", "no-such-record", *common]) == 2
