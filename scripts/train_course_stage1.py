"""Train the ``course`` preset's domain-general (stage-1) backbone and ship it with the package.

The ``course`` preset stands in for Kinetics-400 with the synthetic action set, on a narrow I3D
(``model_width`` 0.25). Training it from scratch takes about half an hour on a 2-core CPU, longer
than the whole course sequence may, so, like teaching notebooks that ship pretrained weights, the
package ships this one checkpoint (about 3.6 MB) in ``pecop_lib/assets/stage1/``. Its key is the
stage-1 settings plus the action set's content (:func:`pecop_lib.pretrain.stage1_artifact.stage1_key`), so
``stage1_backbone`` uses it on any machine whose course world has the same action set, and trains
otherwise (another seed, other sizes).

Usage (repository root; the record inside the shipped folder states machine, time and accuracy)::

    python scripts/train_course_stage1.py            # seed 0, the course preset, CPU
    python scripts/train_course_stage1.py --check    # verify the shipped checkpoint matches the preset's key
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from pecop_lib.atomic import atomic_write_json  # noqa: E402
from pecop_lib.config import resolve  # noqa: E402
from pecop_lib.data.synthetic.world import synthetic_world  # noqa: E402
from pecop_lib.pretrain.artifacts import SHIPPED_STAGE1, STAGE1_RECORD, WEIGHTS_FILE  # noqa: E402
from pecop_lib.pretrain.stage1_artifact import (
    load_stage1,
    shipped_stage1,
    stage1_backbone,
    stage1_key,
    stage1_spec,
)
from pecop_lib.train.context import RunContext  # noqa: E402

MAX_BYTES = 10 * 1024 * 1024
"""A shipped checkpoint may take at most 10 MB of the repository."""


def main(argv: list[str] | None = None) -> int:
    """Train (or ``--check``) the shipped course stage-1 backbone; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check", action="store_true", help="only check that the shipped artifact matches the key")
    args = parser.parse_args(argv)
    cfg = resolve("course", seed=args.seed, device="cpu")
    world = synthetic_world(cfg, seed=cfg.seed, workers=os.cpu_count() or 1)
    actions = world["Kinetics-synth"]
    key = stage1_key(stage1_spec(cfg), actions)
    if args.check:
        found = shipped_stage1(key)
        print(f"stage-1 key {key}: {'shipped at ' + str(found) if found else 'no shipped artifact matches'}")
        return 0 if found else 1
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        artifact = stage1_backbone(stage1_spec(cfg), actions, label="course", root=tmp, force=True,
                                   run=RunContext(device="cpu", seed=cfg.seed))
        target = SHIPPED_STAGE1 / artifact.folder.name
        for old in SHIPPED_STAGE1.glob("stage1-*"):
            shutil.rmtree(old)
        target.mkdir(parents=True)
        shutil.copy2(artifact.folder / WEIGHTS_FILE, target / WEIGHTS_FILE)
        record = dict(artifact.record)
        record["data"] = {**record["data"], "actions_root": "<the course world's Kinetics-synth>"}
        record["shipped"] = {
            "command": "python scripts/train_course_stage1.py" + (f" --seed {args.seed}" if args.seed else ""),
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {"host": platform.node(), "cpus": os.cpu_count(), "platform": platform.platform(),
                        "load_average_end": list(os.getloadavg())},
            "wall_s": round(time.perf_counter() - started, 1),
        }
        atomic_write_json(target / STAGE1_RECORD, record)
    size = sum(p.stat().st_size for p in target.iterdir())
    if size > MAX_BYTES:
        raise SystemExit(f"{target} holds {size / 1e6:.1f} MB, more than the {MAX_BYTES / 1e6:.0f} MB a shipped "
                         "checkpoint may take")
    shipped = load_stage1(target)
    print(f"shipped {target} ({size / 1e6:.1f} MB): validation accuracy {shipped.record['val_acc']:.3f} "
          f"(chance {shipped.record['chance_acc']:.3f}), {shipped.record['seconds']:.0f} s of training")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
