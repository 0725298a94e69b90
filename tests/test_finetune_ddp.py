"""Fine-tuning under DDP: two gloo processes train and evaluate (sharded) like one process on the doubled batch."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from pecop_lib.data.synthetic import WorldSpec, generate_world
from pecop_lib.finetune import FinetuneOptions, Setting, finetune, open_finetune_data
from pecop_lib.models.backbone import Backbone
from pecop_lib.train import init_distributed, shutdown_distributed
from pecop_lib.train.context import RunContext
from tests._network import free_port

SETTING = Setting("usdl", "MTL-AQA")
PER_PROCESS_BATCH = 2
OPTIONS = dict(epochs=2, decode="expectation", val_fraction=0.0, eval_batch_size=3, bootstrap=0)


class PlainBackbone(Backbone):
    """Conv3d-ReLU-Conv3d-ReLU without BatchNorm, so per-process batch statistics cannot differ."""

    name = "plain"
    feature_dim = 16

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv3d(3, 8, 3, stride=(1, 2, 2), padding=1), nn.ReLU(),
                                 nn.Conv3d(8, 16, 3, stride=2, padding=1), nn.ReLU())

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def site_channels(self) -> dict[str, int]:
        return {}


def _run(root: Path, run_dir: Path, batch: int, distributed=None):
    torch.manual_seed(0)
    data = open_finetune_data(root, SETTING, crop=32, clip_frames=16)
    return finetune(PlainBackbone(), SETTING, data, FinetuneOptions(batch_size=batch, **OPTIONS), run_dir=run_dir,
                    run=RunContext(device="cpu", distributed=distributed, show_progress=False))


def _worker(rank: int, world_size: int, port: int, root: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    context = init_distributed("cpu")
    try:
        result = _run(Path(root), Path(out) / "ddp", world_size * PER_PROCESS_BATCH, context)
        (Path(out) / f"records_rank{rank}.json").write_text(json.dumps(result.epochs))
    finally:
        shutdown_distributed()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ddp_finetune_matches_one_process(tmp_path: Path) -> None:
    world = generate_world(tmp_path / "world", WorldSpec(size=32, aqa_videos=16, jigsaws_trials=1, action_videos=2,
                                                         action_frames=16, seed=7), datasets=("MTL-AQA",))
    mp.spawn(_worker, args=(2, free_port(), str(world["MTL-AQA"]), str(tmp_path)), nprocs=2, join=True)
    rank0 = json.loads((tmp_path / "records_rank0.json").read_text())
    rank1 = json.loads((tmp_path / "records_rank1.json").read_text())
    assert rank0 == rank1  # the sharded evaluation is gathered on every process
    assert json.loads((tmp_path / "ddp" / "evaluation.json").read_text())["epochs"] == rank0  # written by rank 0
    torch.set_num_threads(1)
    single = _run(world["MTL-AQA"], tmp_path / "single", 2 * PER_PROCESS_BATCH)
    assert len(single.test_true) == len(rank0[0]["test_pred"]) == 4
    for ddp_epoch, epoch in zip(rank0, single.epochs, strict=True):
        assert ddp_epoch["test_pred"] == pytest.approx(epoch["test_pred"], rel=1e-4, abs=1e-4)
        assert ddp_epoch["train_loss"] == pytest.approx(epoch["train_loss"], rel=1e-5)
