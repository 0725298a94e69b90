"""The data room: official dataset formats, frame sources, frame selection, transforms, synthetic world.

Samplers produce indices (:mod:`~pecop_lib.data.sampling`), sources produce frames
(:mod:`~pecop_lib.data.video`), transforms produce tensors (:mod:`~pecop_lib.data.transforms`);
each dataset class (``formats/``) ties them together and yields the common sample record of
:mod:`~pecop_lib.data.dataset`; :mod:`~pecop_lib.data.registry` holds one record per target dataset (tasks,
folds, hold-out rule, how to open a split) for the rest of the package. This room never imports models.
"""

from pecop_lib.data.dataset import AQADataset, AQARecord
from pecop_lib.data.errors import DataFormatError, UnsafePickleError, VideoDecodeError
from pecop_lib.data.formats.finediving import FineDiving
from pecop_lib.data.formats.jigsaws import JIGSAWS
from pecop_lib.data.formats.kinetics import KineticsActions
from pecop_lib.data.formats.mtl_aqa import MTLAQA
from pecop_lib.data.formats.pd4t import PD4T
from pecop_lib.data.gpu_augment import DeferredTransform, RawClip, augment_batch, collate_raw
from pecop_lib.data.safe_pickle import safe_load
from pecop_lib.data.synthetic import World, WorldSpec, generate_world, synthetic_world, world_spec
from pecop_lib.data.transforms import ClipTransform, color_jitter, official_transform
from pecop_lib.data.video import FrameFolder, FrameSource, VideoFile, open_source
from pecop_lib.data.workers import worker_context

__all__ = [
    "JIGSAWS",
    "MTLAQA",
    "PD4T",
    "AQADataset",
    "AQARecord",
    "ClipTransform",
    "DataFormatError",
    "DeferredTransform",
    "FineDiving",
    "FrameFolder",
    "FrameSource",
    "KineticsActions",
    "RawClip",
    "UnsafePickleError",
    "VideoDecodeError",
    "VideoFile",
    "World",
    "WorldSpec",
    "augment_batch",
    "collate_raw",
    "color_jitter",
    "generate_world",
    "official_transform",
    "open_source",
    "safe_load",
    "synthetic_world",
    "worker_context",
    "world_spec",
]
