"""``pecop`` (the real command line) with one file write stalled, so that a test can SIGKILL it there.

``RELIABILITY_STALL`` picks the write:

* ``before:<checkpoint file>``: stall when the trainer starts writing that checkpoint (e.g.
  ``step_0000003.pt``: the work since the previous checkpoint is then lost by the kill);
* ``during:<checkpoint file>``: write the first half of its bytes to the temporary file, then stall
  (the kill leaves a truncated temporary file behind, as a crash during the write would);
* ``before:<json file>#<n>``: stall before the fine-tuning ``evaluation.json`` holding ``n``
  evaluated epochs is written (after that epoch's checkpoint).

On stalling it creates the file ``RELIABILITY_STALL_MARKER`` and sleeps; without ``RELIABILITY_STALL``
it is plain ``pecop``. Used by ``test_reliability_kill_resume.py`` only.
"""

from __future__ import annotations

import importlib
import io
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch

from pecop_lib.cli import main

finetune_module = importlib.import_module("pecop_lib.finetune.run")  # where evaluation.json is written

MODE, _, TARGET = os.environ.get("RELIABILITY_STALL", "").partition(":")
FILE, _, COUNT = TARGET.partition("#")


def _stall() -> None:
    Path(os.environ["RELIABILITY_STALL_MARKER"]).write_text(str(os.getpid()))
    time.sleep(600)
    raise SystemExit("stalled write was not killed within 600 s")


_torch_save = torch.save


def _save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
    name = Path(getattr(f, "name", f)).name  # atomic_path's temporary file: .<target>.<random>.tmp
    if FILE and name.startswith(f".{FILE}.") and name.endswith(".tmp"):
        if MODE == "during":
            buffer = io.BytesIO()
            _torch_save(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
        _stall()
    _torch_save(obj, f, *args, **kwargs)


_write_json = finetune_module.atomic_write_json


def _write_json_stalled(target: Any, obj: Any) -> Path:
    if COUNT and Path(target).name == FILE and len(obj.get("epochs", ())) == int(COUNT):
        _stall()
    return _write_json(target, obj)


torch.save = _save
finetune_module.atomic_write_json = _write_json_stalled

if __name__ == "__main__":
    # Ctrl-C as at a terminal, whatever the test process inherited: a shell without job control starts background
    # jobs with SIGINT ignored, their children inherit that, and Python then installs no KeyboardInterrupt handler
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main(sys.argv[1:]))
