"""The synthetic world: domain-general actions and four AQA tasks in the real datasets' formats."""

from pecop_lib.data.synthetic.defects import Defect, defect_intervals
from pecop_lib.data.synthetic.world import (
    DATASETS,
    GENERATOR_VERSION,
    World,
    WorldSpec,
    generate_world,
    load_world,
    synthetic_world,
    world_spec,
)

__all__ = [
    "DATASETS",
    "GENERATOR_VERSION",
    "Defect",
    "World",
    "WorldSpec",
    "defect_intervals",
    "generate_world",
    "load_world",
    "synthetic_world",
    "world_spec",
]
