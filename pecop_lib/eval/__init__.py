"""Evaluation: AQA metrics, model-selection protocols, uncertainty of reported numbers."""

from pecop_lib.eval.metrics import (
    fisher_z_mean,
    jigsaws_average,
    l2,
    relative_l2,
    segment_iou,
    spearman,
    tiou_accuracy,
)
from pecop_lib.eval.protocols import (
    PROTOCOLS,
    Selection,
    holdout_split,
    honest,
    official_best,
    official_last_mean,
)
from pecop_lib.eval.uncertainty import Interval, bootstrap_ci, seed_summary

__all__ = [
    "PROTOCOLS",
    "Interval",
    "Selection",
    "bootstrap_ci",
    "fisher_z_mean",
    "holdout_split",
    "honest",
    "jigsaws_average",
    "l2",
    "official_best",
    "official_last_mean",
    "relative_l2",
    "seed_summary",
    "segment_iou",
    "spearman",
    "tiou_accuracy",
]
