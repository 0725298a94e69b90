"""The run context: built once from the config, handed to the trainer as its keywords."""

import pytest
import torch

import pecop_lib
from pecop_lib.train import DistributedContext, RunContext


def test_from_config_reads_the_run_keys_of_a_preset():
    cfg = pecop_lib.resolve("course", device="cpu", seed=7, train_precision="fp32", train_grad_accum_steps=3,
                            train_checkpoint_every_steps=50, train_keep_checkpoints=0, data_num_workers=1)
    run = RunContext.from_config(cfg, resume=True, show_progress=False)
    assert run.device == torch.device("cpu") and run.seed == 7 and run.precision == "fp32"
    assert (run.grad_accum_steps, run.checkpoint_every_steps, run.num_workers) == (3, 50, 1)
    assert run.keep_last is None  # train_keep_checkpoints 0 keeps all
    assert run.resume and not run.show_progress and run.distributed is None
    assert RunContext.from_config(cfg, num_workers=0).num_workers == 0  # any field can be overridden


def test_trainer_options_fill_the_stage_defaults():
    run = RunContext(device="cpu", seed=3, num_workers=2, keep_last=2, show_progress=False)
    options = run.trainer_options(own_accum_steps=2)
    assert options == {"device": torch.device("cpu"), "precision": "auto", "compile": False, "grad_accum_steps": 2,
                       "checkpoint_every_steps": None, "keep_last": 2, "distributed": None, "show_progress": False,
                       "seed": 3, "loader_workers": 2}
    assert run.but(grad_accum_steps=4).trainer_options(own_accum_steps=2)["grad_accum_steps"] == 4
    assert run.but(checkpoint_every_steps=10).trainer_options()["checkpoint_every_steps"] == 10
    assert run.trainer_options(seed_globals=False)["seed"] is None


def test_the_process_group_decides_the_device():
    group = DistributedContext(rank=1, world_size=2, local_rank=1, device=torch.device("cpu"))
    run = RunContext(device="auto", distributed=group)
    assert run.device == torch.device("cpu") and run.process is group
    alone = RunContext(device="cpu")
    assert alone.process.world_size == 1 and alone.process.device == torch.device("cpu")


@pytest.mark.parametrize(("field", "value", "message"), [
    ("num_workers", -1, "num_workers must be >= 0"),
    ("grad_accum_steps", -1, "grad_accum_steps must be >= 0"),
    ("checkpoint_every_steps", -2, "checkpoint_every_steps must be >= 0"),
])
def test_bad_values_are_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        RunContext(device="cpu", **{field: value})
