"""``pecop doctor``: each check reports ok on a working setup and an actionable error on a broken one."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from _worlds import TINY_SPEC

from pecop_lib import doctor
from pecop_lib.data.synthetic import generate_world, motor
from pecop_lib.data.video import VideoFile, write_mp4


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("doctor-world"), TINY_SPEC, datasets=("MTL-AQA", "JIGSAWS"))


def levels(findings):
    return [f.level for f in findings]


def test_environment_checks_pass_here():
    findings = [*doctor.check_python(), *doctor.check_packages(), *doctor.check_kernel(), *doctor.check_video_decoding()]
    assert levels(findings) == ["ok"] * len(findings), [f.format() for f in findings]


def test_missing_and_old_packages_are_errors(monkeypatch):
    monkeypatch.setattr(doctor, "package_versions", lambda names: {"torch": "2.9.1", "decord": None})
    findings = doctor.check_packages()
    assert levels(findings) == ["error", "error"]
    assert "not installed: decord" in findings[0].message and "make setup" in findings[0].fix
    assert "torch 2.9.1 is older than 2.10" in findings[1].message


def test_cuda_without_gpu_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (finding,) = doctor.check_device("cuda")
    assert finding.level == "error" and "CUDA is not available" in finding.message


def test_low_disk_is_a_warning(tmp_path):
    (finding,) = doctor.check_disk({"cache": tmp_path / "not" / "yet"}, min_free_gib=1e9)
    assert finding.level == "warn" and "PECOP_CACHE_DIR" in finding.fix


def test_dataset_roots_in_official_format(twin, tmp_path):
    ok, media = doctor.check_dataset("mtl-aqa", twin["MTL-AQA"])
    assert ok.level == "ok" and "first clip (3," in ok.message
    size = TINY_SPEC.size
    assert (media.level, media.check) == ("ok", "media:mtl-aqa")
    assert media.message.endswith(f"videos are {size}x{size} px"), media.message  # frame folders: no rate
    ok, media = doctor.check_dataset("jigsaws", twin["JIGSAWS"], crop=32)
    assert levels([ok, media]) == ["ok", "ok"], ok.format()
    (err,) = doctor.check_dataset("jigsaws", twin["JIGSAWS"])  # 32 px frames cannot give the official 224 crop
    assert err.level == "error" and "smaller than the crop 224" in err.message
    broken = shutil.copytree(twin["MTL-AQA"], tmp_path / "MTL-AQA")
    for pkl in (broken / "info").glob("test_split_*.pkl"):
        pkl.unlink()
    (err,) = doctor.check_dataset("mtl-aqa", broken)
    assert err.level == "error" and "test_split_0.pkl" in err.message and "data_cards/mtl-aqa.md" in err.fix
    (err,) = doctor.check_dataset("pd4t", tmp_path / "absent")
    assert err.level == "error" and "is not a folder" in err.message


def test_videos_of_another_size_or_frame_rate_are_warnings_that_name_them(tmp_path):
    world = generate_world(tmp_path / "world", TINY_SPEC, datasets=("PD4T",))
    videos = sorted((world["PD4T"] / "Videos").rglob("*.mp4"))
    big, slow = videos[3], videos[7]
    frames = VideoFile(big).read(np.arange(len(VideoFile(big))))
    write_mp4(frames.repeat(2, axis=1).repeat(2, axis=2), big, fps=motor.FPS)  # twice the size
    frames = VideoFile(slow).read(np.arange(len(VideoFile(slow))))
    write_mp4(frames, slow, fps=motor.FPS // 2)  # same frames, half the rate
    findings = doctor.check_dataset("pd4t", world["PD4T"], crop=32)
    assert levels(findings) == ["ok", "warn", "warn"], [f.format() for f in findings]
    n, size = len(videos), TINY_SPEC.size
    size_warning, rate_warning = findings[1:]
    assert size_warning.message.startswith(f"1 of {n} videos differ in frame size from the other {n - 1} "
                                           f"({size}x{size} px): {big} ({2 * size}x{2 * size} px at {motor.FPS} fps)")
    assert f"scale={size}:{size}" in size_warning.fix
    assert rate_warning.message.startswith(f"1 of {n} videos differ in frame rate from the other {n - 1} "
                                           f"({motor.FPS} fps): {slow} ({size}x{size} px at {motor.FPS // 2} fps)")
    assert f"-r {motor.FPS}" in rate_warning.fix


def test_cli_doctor_exit_status(twin, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "pecop_lib", "doctor", "--device", "cpu",
                         "--data", f"mtl-aqa={twin['MTL-AQA']}"], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "[OK   ] data:mtl-aqa" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "pecop_lib", "doctor", "--device", "cpu",
                          "--data", f"jigsaws={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "[ERROR] data:jigsaws" in bad.stdout
