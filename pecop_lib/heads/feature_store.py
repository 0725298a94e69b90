"""Frozen-backbone features, extracted once and kept on disk.

When the backbone does not change (the ``dom_g`` backbone, or any backbone fine-tuned with
``train_backbone="frozen"`` and fixed BatchNorm statistics), the window features of a
deterministic split (test transform: centre crop, no flip, no temporal jitter) are the same at
every epoch, for every head and every seed. :class:`FeatureStore` computes them once, writes them
to ``<cache_dir>/features/<key>.safetensors`` (atomically) and loads them afterwards.

The key (:meth:`FeatureStore.key`) is a SHA-256 over everything the features depend on:

* the backbone's whole state (every parameter *and* buffer: weights, adapters, BatchNorm running
  statistics), its class and pooling;
* the data: dataset class, every simple attribute (root, frame folder, layout, clip frames, ...)
  but the seed, the transform, and the records' ids and keys. A deterministic split draws nothing
  from its seed (no temporal jitter, a fixed transform: the only splits accepted), so the runs of
  several seeds share one file (notebook 07's three fine-tuning seeds per backbone);
* the windowing, whether feature maps are kept (TSA), the autocast dtype and the device type
  (GPU and CPU kernels round differently).

A changed backbone (one training step, re-estimated BatchNorm statistics) gives another key, so a
stale file is never read. Files written by another run with the same key are reused: same inputs,
same computation, same numbers (tested bit-for-bit on the CPU).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset

from pecop_lib.atomic import atomic_path
from pecop_lib.data.workers import worker_context
from pecop_lib.heads.windows import WindowFeatures, Windowing, encode_windows
from pecop_lib.models.backbone import Backbone
from pecop_lib.outputs import progress
from pecop_lib.store import ArtifactStore, digest, state_sha256

FEATURES_DIR = "features"
FORMAT = "pecop_lib.frozen_features/1"


def _plain(value: Any) -> Any:
    """A JSON-ready description of a simple attribute value (paths resolved, dataclasses as dicts)."""
    if isinstance(value, Path):
        return str(value.resolve())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"type": type(value).__name__, **{k: _plain(v) for k, v in dataclasses.asdict(value).items()}}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def dataset_description(dataset: Dataset) -> dict[str, Any]:
    """What a deterministic dataset's clips depend on: class, simple attributes but the seed, transform, record ids and keys.

    Raises:
        ValueError: If the dataset's clips are random (a training split, or a random transform):
            their features differ at every read and cannot be cached.
    """
    transform = getattr(dataset, "transform", None)
    if getattr(dataset, "train", False) or getattr(transform, "is_random", False):
        raise ValueError(
            f"{type(dataset).__name__} draws random clips (train={getattr(dataset, 'train', None)}, transform "
            f"{transform}); cache features of a deterministic split only (train=False, the test transform)"
        )
    simple = (str, int, float, bool, Path, type(None))
    attributes = {k: _plain(v) for k, v in sorted(vars(dataset).items())
                  if not k.startswith("_") and k not in ("epoch", "seed", "records") and isinstance(v, simple)}
    records = getattr(dataset, "records", None)
    ids = [[str(r.id), repr(r.key)] for r in records] if records is not None else len(dataset)
    return {"class": type(dataset).__name__, "attributes": attributes, "transform": _plain(transform), "records": ids}


class _Clips(Dataset):
    """``dataset[i]["clip"]`` for selected indices (loader-friendly)."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.dataset[self.indices[i]]["clip"]


class FeatureStore:
    """Window features of whole deterministic splits under a fixed backbone, cached on disk.

    Args:
        root: Folder of the feature files; ``None``: ``cache_dir()/features``.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.store = ArtifactStore.at(FEATURES_DIR, root)
        self.root = self.store.root

    def key(self, backbone: Backbone, dataset: Dataset, windowing: Windowing, *, maps: bool = False,
            amp_dtype: torch.dtype | None = None) -> str:
        """The cache key of these features (see the module docstring)."""
        device = next(backbone.parameters()).device
        description = {
            "format": FORMAT,
            "backbone": {"class": type(backbone).__name__, "pool": backbone.pool, "state": state_sha256(backbone)},
            "data": dataset_description(dataset),
            "windowing": _plain(windowing),
            "maps": maps,
            "amp_dtype": str(amp_dtype),
            "device": device.type,
        }
        return digest(description, length=32)

    def path(self, key: str) -> Path:
        """The file of a key."""
        return self.root / f"{key}.safetensors"

    def window_features(
        self,
        backbone: Backbone,
        dataset: Dataset,
        windowing: Windowing,
        *,
        maps: bool = False,
        amp_dtype: torch.dtype | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        show_progress: bool = False,
    ) -> WindowFeatures:
        """Features of every item of ``dataset`` (in order): loaded if cached, else computed and saved.

        Args:
            backbone: In eval mode, on its device.
            dataset: A deterministic split whose items have a ``"clip"`` ``(3, T, H, W)``.
            windowing: Clip windowing.
            maps: Keep the time-averaged feature maps too (TSA).
            amp_dtype: Autocast dtype of the backbone pass (``None``: fp32).
            batch_size: Videos per backbone call.
            num_workers: Loader workers decoding the clips.
            show_progress: Progress bar while encoding.

        Returns:
            :class:`WindowFeatures` on the CPU: ``pooled`` ``(N, windows, C)`` (``maps`` ``(N, windows, C, H', W')``).

        Raises:
            ValueError: If the backbone is in training mode, or the dataset is random (see
                :func:`dataset_description`).
        """
        if backbone.training:
            raise ValueError("window_features needs backbone.eval(): cached features are exact only with fixed "
                             "BatchNorm statistics")
        key = self.key(backbone, dataset, windowing, maps=maps, amp_dtype=amp_dtype)

        def load(path: Path) -> WindowFeatures:
            tensors = load_file(path)
            return WindowFeatures(tensors["pooled"], tensors.get("maps"))

        def run(_resume: bool) -> WindowFeatures:
            features = self.compute(backbone, dataset, windowing, maps=maps, amp_dtype=amp_dtype,
                                    batch_size=batch_size, num_workers=num_workers, show_progress=show_progress)
            tensors = {"pooled": features.pooled.contiguous()}
            if features.maps is not None:
                tensors["maps"] = features.maps.contiguous()
            with atomic_path(self.path(key)) as tmp:
                save_file(tensors, str(tmp), metadata={"format": FORMAT, "key": key, "videos": str(len(dataset))})
            return features

        return self.store.load_or_run(self.path(key), finished=Path.is_file, load=load, run=run, lock=False)

    @staticmethod
    def compute(
        backbone: Backbone,
        dataset: Dataset,
        windowing: Windowing,
        *,
        maps: bool = False,
        amp_dtype: torch.dtype | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        indices: Sequence[int] | None = None,
        show_progress: bool = False,
    ) -> WindowFeatures:
        """Encode the items (all, or ``indices``) without the cache; what :meth:`window_features` stores."""
        device = next(backbone.parameters()).device
        chosen = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
        loader = DataLoader(_Clips(dataset, chosen), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            multiprocessing_context=worker_context(num_workers), pin_memory=device.type == "cuda")
        parts: list[WindowFeatures] = []
        autocast = torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)
        with torch.inference_mode(), autocast:
            for clips in progress(loader, desc="features", disable=not show_progress):
                feats = encode_windows(backbone, clips.to(device, non_blocking=True), windowing, maps=maps)
                parts.append(WindowFeatures(feats.pooled.float().cpu(),
                                            None if feats.maps is None else feats.maps.float().cpu()))
        if not parts:
            return WindowFeatures(torch.zeros(0, windowing.num_windows, backbone.feature_dim))
        return WindowFeatures.cat(parts)

