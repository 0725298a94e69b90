"""Self-supervised pretext tasks for continual pretraining: VSPP (PECoP's), VideoPace and RSPNet.

Each task is a *sampler* (a pure function of the number of frames and a random generator that
returns 1-based frame numbers and labels), a *head* on pooled backbone features and a *loss*.
Backbones plug in through ``forward_pooled(x) -> (B, C)`` and ``feature_dim``
(:class:`~pecop_lib.ssl.pretext.PooledBackbone`).
"""

from pecop_lib.ssl.draws import RandomSource, choice, randint
from pecop_lib.ssl.pace import PaceHead, PaceSample, PaceSampler, pace_indices, pace_loss
from pecop_lib.ssl.pretext import PooledBackbone, PretextModel, accuracy, check_backbone
from pecop_lib.ssl.rspnet import (
    RSPNet,
    RSPNetEncoder,
    RSPNetOutput,
    RSPNetSample,
    RSPNetSampler,
    looped_indices,
    rspnet_loss,
)
from pecop_lib.ssl.vspp import (
    VSPP_MODES,
    VSPPDraw,
    VSPPHead,
    VSPPLogits,
    VSPPMode,
    VSPPSample,
    VSPPSampler,
    segment_positions,
    vspp_loss,
    vspp_official_indices,
    vspp_paper_indices,
    vspp_paper_offsets,
)

__all__ = [
    "VSPP_MODES",
    "PaceHead",
    "PaceSample",
    "PaceSampler",
    "PooledBackbone",
    "PretextModel",
    "RSPNet",
    "RSPNetEncoder",
    "RSPNetOutput",
    "RSPNetSample",
    "RSPNetSampler",
    "RandomSource",
    "VSPPDraw",
    "VSPPHead",
    "VSPPLogits",
    "VSPPMode",
    "VSPPSample",
    "VSPPSampler",
    "accuracy",
    "check_backbone",
    "choice",
    "looped_indices",
    "pace_indices",
    "pace_loss",
    "randint",
    "rspnet_loss",
    "segment_positions",
    "vspp_loss",
    "vspp_official_indices",
    "vspp_paper_indices",
    "vspp_paper_offsets",
]
