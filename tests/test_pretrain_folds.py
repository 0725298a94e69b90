"""Stage 2 per JIGSAWS fold: a fold's backbone never pretrains on that fold's test trials.

Stage 2 for JIGSAWS test fold ``k`` reads the trials of the other three folds; the artifact key and
folder carry the fold (other datasets' keys are those cached before folds existed); every caller
(``pretrained_backbone``, the comparison backbones of notebooks 04-06, the ablations, ``pecop
pretrain --fold``) passes the fold, and ``pecop finetune`` refuses a backbone pretrained for another fold.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
from _worlds import tiny_jigsaws
from safetensors.torch import save_file

import pecop_lib
from pecop_lib.cli import main
from pecop_lib.finetune import Setting
from pecop_lib.finetune.runs import check_backbone_split, comparison_backbones
from pecop_lib.models import build_backbone
from pecop_lib.models.adapter_checkpoint import CONFIG_FILE, FORMAT
from pecop_lib.pretrain import stage2_artifact as artifacts  # where stage 2 lists its videos
from pecop_lib.pretrain.artifacts import STAGE2_RECORD, BackboneSource, backbone_options
from pecop_lib.pretrain.pipeline import pretrained_backbone
from pecop_lib.pretrain.stage2_artifact import Stage2Spec, load_stage2, stage2_folder, stage2_key, stage2_spec
from pecop_lib.studies import plans as ablations
from pecop_lib.train.context import RunContext
from pecop_lib.train.loop import NonFiniteLossError

SMOKE = pecop_lib.resolve("smoke", device="cpu")
SOURCE = BackboneSource("stage1", "i3d", backbone_options("i3d"), "/x/model.safetensors", "abc")
SUTURING = {"dataset": "JIGSAWS", "task": "Suturing"}


@pytest.fixture(scope="module")
def world_root(tmp_path_factory) -> Path:
    return tiny_jigsaws(tmp_path_factory.getbasetemp()).root


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """An I3D weights file standing in for real Kinetics weights (stage 1 is then skipped)."""
    path = tmp_path_factory.mktemp("weights") / "i3d.safetensors"
    save_file({k: v.contiguous() for k, v in build_backbone("i3d", seed=0).state_dict().items()}, str(path))
    return path


def test_the_fold_is_part_of_the_spec_key_and_folder() -> None:
    specs = [stage2_spec(SMOKE, **SUTURING, fold=k) for k in range(4)]
    assert [s.fold for s in specs] == [0, 1, 2, 3]
    assert len({stage2_key(s, SOURCE, "/data/JIGSAWS") for s in specs}) == 4
    folders = [stage2_folder(s, SOURCE, "/data/JIGSAWS", label="smoke", root="/r").name for s in specs]
    for fold, folder in enumerate(folders):
        assert folder.startswith(f"stage2-pecop-vspp-JIGSAWS-Suturing-fold{fold}-smoke-seed0-")
    # single-split targets keep the key of the artifacts cached before stage 2 had a fold (pinned: change it only
    # together with a deliberate invalidation of every cached stage-2 artifact)
    assert stage2_key(Stage2Spec(), SOURCE, "/data/T") == "225fb97d627b"
    assert stage2_folder(Stage2Spec(), SOURCE, "/data/T", label="smoke", root="/r").name == (
        "stage2-pecop-vspp-MTL-AQA-smoke-seed0-225fb97d627b")


@pytest.mark.parametrize(("values", "message"), [
    (SUTURING, r"JIGSAWS needs the test fold being evaluated, one of \(0, 1, 2, 3\) .*got fold=None"),
    ({**SUTURING, "fold": 4}, r"JIGSAWS needs the test fold being evaluated, one of \(0, 1, 2, 3\) .*got fold=4"),
    ({"dataset": "PD4T", "task": "Gait", "fold": 0}, r"PD4T has a single train/test split; do not pass fold=0"),
    ({"fold": 1}, r"MTL-AQA has a single train/test split; do not pass fold=1"),
])
def test_bad_folds_are_clear_errors(values, message) -> None:
    with pytest.raises(ValueError, match=message):
        stage2_spec(SMOKE, **values)
    with pytest.raises(ValueError, match=message):
        Stage2Spec(**values)


def test_an_artifact_from_before_folds_reads_as_fold_0(tmp_path: Path) -> None:
    """JIGSAWS stage 2 used to read fold 0's training split, whatever fold was evaluated."""
    for dataset, task, fold in (("JIGSAWS", "Suturing", 0), ("MTL-AQA", None, None)):
        folder = tmp_path / dataset
        folder.mkdir()
        spec = {k: v for k, v in asdict(Stage2Spec(dataset=dataset, task=task, fold=fold)).items() if k != "fold"}
        (folder / STAGE2_RECORD).write_text(json.dumps({"spec": spec, "source": SOURCE.to_dict(), "weights": None}))
        assert load_stage2(folder).spec == Stage2Spec(dataset=dataset, task=task, fold=fold)
    check_backbone_split(tmp_path / "JIGSAWS", [Setting("musdl", "JIGSAWS", "Suturing", 0)])
    with pytest.raises(ValueError, match="include the test videos of fold 2"):
        check_backbone_split(tmp_path / "JIGSAWS", [Setting("musdl", "JIGSAWS", "Suturing", 2)])


def test_pretrained_backbone_of_a_fold_reads_that_folds_training_trials(world_root, weights, tmp_path, monkeypatch):
    monkeypatch.setenv("PECOP_CACHE_DIR", str(tmp_path / "cache"))
    read: list[tuple[str, int | None, list[str]]] = []
    listing = artifacts.pretraining_videos

    def spy(root, dataset, *, task=None, fold=None):
        videos = listing(root, dataset, task=task, fold=fold)
        read.append((task, fold, sorted(v.path.name for v in videos)))
        return videos

    monkeypatch.setattr(artifacts, "pretraining_videos", spy)
    cfg = pecop_lib.resolve("smoke", device="cpu", model_weights=str(weights))
    one = pretrained_backbone(cfg, strategy="dom_g", **SUTURING, fold=1, data_root=world_root,
                              run=RunContext.from_config(cfg, show_progress=False))
    three = pretrained_backbone(cfg, strategy="dom_g", **SUTURING, fold=3, data_root=world_root,
                                run=RunContext.from_config(cfg, show_progress=False))
    assert one.trained and three.trained and one.folder != three.folder
    assert (one.spec.fold, three.spec.fold) == (1, 3) and "JIGSAWS-Suturing-fold1-" in one.folder.name
    splits = pecop_lib.data.safe_load(world_root / "JIGSAWS" / "info" / "splits.pkl")["Suturing"]
    for (task, fold, names), artifact in zip(read, (one, three), strict=True):
        assert (task, fold) == ("Suturing", artifact.spec.fold)
        assert names == sorted(f"{t}_capture1" for k, f in enumerate(splits) if k != fold for t in f)
        assert artifact.record["data"]["videos"] == len(names) == 6
    again = pretrained_backbone(cfg, strategy="dom_g", **SUTURING, fold=1, data_root=world_root,
                                run=RunContext.from_config(cfg, show_progress=False))
    assert again.folder == one.folder  # loaded, not retrained
    assert len(read) == 2


def test_fine_tuning_each_fold_requests_its_own_stage2_artifact(monkeypatch) -> None:
    requested: list[tuple[str, str, str | None, int | None]] = []

    class StandIn:
        def __init__(self, key: tuple[str, str, str | None, int | None]) -> None:
            self.key = key

        def build(self) -> tuple[str, str, str | None, int | None]:
            return self.key

    def pretrained(cfg, *, strategy, dataset, task, fold, data_root, run):
        requested.append((strategy, dataset, task, fold))
        return StandIn((strategy, dataset, task, fold))

    monkeypatch.setattr("pecop_lib.pretrain.pipeline.pretrained_backbone", pretrained)
    settings = [Setting("musdl", "JIGSAWS", "Suturing", 1), Setting("musdl", "JIGSAWS", "Suturing", 3),
                Setting("usdl", "MTL-AQA")]
    factories = comparison_backbones(SMOKE, settings)
    assert sorted(requested) == sorted((strategy, s.dataset, s.task, s.fold)
                                       for s in settings for strategy in ("dom_g", "pecop"))
    assert factories["PECoP"](settings[0]) == ("pecop", "JIGSAWS", "Suturing", 1)
    assert factories["PECoP"](settings[1]) == ("pecop", "JIGSAWS", "Suturing", 3)
    assert factories["Dom-G"](settings[2]) == ("dom_g", "MTL-AQA", None, None)


def test_ablations_pretrain_for_each_jigsaws_fold(monkeypatch) -> None:
    requested: list[tuple[str | None, int | None]] = []

    def pretrained(cfg, *, strategy, pretext, dataset, task, fold, data_root, run):
        requested.append((task, fold))
        raise NonFiniteLossError("stand-in: stop after the request")

    monkeypatch.setattr(ablations, "pretrained_backbone", pretrained)
    monkeypatch.setattr(ablations, "data_roots", lambda cfg, data_root=None: (data_root, None))
    runs = ablations.strategy_runs(["S", "MTL-AQA"], [0], folds=3, strategies=["pecop"])
    ablations.run_ablation(SMOKE, runs, data_root="/nowhere", log=None)
    assert requested == [("Suturing", 0), ("Suturing", 1), ("Suturing", 2), (None, None)]


def test_pecop_pretrain_fold_then_finetune_only_that_fold(world_root, weights, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PECOP_CACHE_DIR", str(tmp_path / "cache"))
    code = main(["pretrain", "--preset", "smoke", "--strategy", "dom_g", "--dataset", "JIGSAWS", "--task", "Suturing",
                 "--fold", "2", "--data-root", str(world_root), "--kinetics-weights", str(weights), "--device", "cpu",
                 "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert "pecop: stage 2 dom_g/vspp on JIGSAWS Suturing fold 2:" in capsys.readouterr().out
    out = tmp_path / "runs" / "smoke" / "pretrain" / "dom_g-vspp-JIGSAWS-Suturing-fold2"
    record = json.loads((out / STAGE2_RECORD).read_text())
    assert record["spec"]["fold"] == 2 and record["data"]["videos"] == 6
    assert json.loads((out / "config.json").read_text())["fold"] == 2

    def finetune(*extra: str) -> int:
        return main(["finetune", "--head", "musdl", "--dataset", "JIGSAWS", "--task", "Suturing", "--preset", "smoke",
                     "--device", "cpu", "--out", str(tmp_path / "ft"), "--data-root", str(world_root), *extra])

    assert finetune("--backbone-checkpoint", str(out)) == 2  # all four folds: three would test on pretraining videos
    message = ("pretrained for JIGSAWS Suturing fold 2: its training videos include the test videos of fold 0; use the "
               "fold-0 stage-2 backbone (pecop pretrain --fold 0) or evaluate fold 2 only (--fold 2)")
    assert message in capsys.readouterr().err
    assert finetune("--backbone-checkpoint", str(out), "--fold", "1") == 2
    assert "include the test videos of fold 1" in capsys.readouterr().err
    assert not (tmp_path / "ft").exists()  # refused before anything ran
    check_backbone_split(out, [Setting("musdl", "JIGSAWS", "Suturing", 2), Setting("core", "JIGSAWS", "Knot_Tying", 0)])


def test_adapter_folders_of_stage2_are_checked_too(tmp_path: Path) -> None:
    def adapters(name: str, **metadata: object) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / CONFIG_FILE).write_text(json.dumps({"format": FORMAT, "metadata": metadata}))
        return folder

    fold1 = adapters("fold1", stage2_key="k", dataset="JIGSAWS", task="Suturing", fold=1)
    legacy = adapters("legacy", stage2_key="k", dataset="JIGSAWS", task="Suturing")  # before folds: fold 0
    other = adapters("other", dataset="JIGSAWS", task="Suturing")  # not written by stage 2: no target recorded
    check_backbone_split(fold1, [Setting("core", "JIGSAWS", "Suturing", 1)])
    check_backbone_split(legacy, [Setting("core", "JIGSAWS", "Suturing", 0)])
    check_backbone_split(other, [Setting("core", "JIGSAWS", "Suturing", 3)])
    with pytest.raises(ValueError, match="fold 1: its training videos include the test videos of fold 0"):
        check_backbone_split(fold1, [Setting("core", "JIGSAWS", "Suturing", 0)])
    with pytest.raises(ValueError, match="fold 0: its training videos include the test videos of fold 3"):
        check_backbone_split(legacy, [Setting("core", "JIGSAWS", "Suturing", 3)])
