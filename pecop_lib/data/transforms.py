"""Clip transforms: uint8 frames -> normalised float clip ``(3, T, H, W)``, per official convention.

One :class:`ClipTransform` covers every official pipeline: optional resize, random or centre
crop, whole-clip horizontal flip, ImageNet normalisation. :func:`official_transform` builds the
settings of each reference repository, scaled to any crop size (the synthetic presets use crops
smaller than 224). Randomness comes from an explicit ``numpy.random.Generator``, so a sample is
a pure function of ``(seed, epoch, index)``.

:func:`color_jitter` is the per-frame colour jitter of the original VSPP / VideoPace pipelines
(PECoP's code builds it but never applies it; ``pretrain_color_jitter`` switches it on).

Resizing and the centre crop come in two flavours (``resize`` of :func:`official_transform`,
docs/fidelity.md): the package's (``"bilinear"``: bilinear with antialiasing, centre crop at
``(H - c) // 2``) and the official code's (``"official"``: nearest neighbour as each reader does it,
OpenCV's for PECoP's stage 2 (frames read with cv2), PIL's for CoRe and TSA (frames read with PIL);
centre crop at ``round((H - c) / 2)``, Python's rounding, as torch_videovision and torchvision do).
MUSDL draws a random PIL interpolation per frame, also at test time; that is not reproduced (its
official flavour keeps bilinear), so evaluation stays deterministic.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from pecop_lib.data.errors import DataFormatError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Convention = Literal["musdl_mtl", "core_mtl", "pecop_stage2", "musdl_jigsaws", "tsa_finediving", "plain"]
Interpolation = Literal["bilinear", "nearest", "nearest-exact"]
RESIZES: tuple[str, ...] = ("bilinear", "official")
"""Resize flavours of :func:`official_transform`: the package's and the official code's."""
OFFICIAL_INTERPOLATION: dict[str, Interpolation] = {
    "core_mtl": "nearest-exact",  # torch_videovision Resize on PIL frames: PIL NEAREST (pixel centres)
    "tsa_finediving": "nearest-exact",  # the same, FineDiving's loader
    "pecop_stage2": "nearest",  # torch_videovision Resize on cv2 frames: cv2.INTER_NEAREST (floor)
    "musdl_mtl": "bilinear",  # a random PIL interpolation per frame in the official code: not reproduced
}
"""How the official code of each convention resizes (``torch.nn.functional.interpolate`` modes)."""


class FramesSmallerThanCropError(ValueError):
    """The (resized) frames are smaller than the transform's crop (the loaders name the video: :func:`frames_of`)."""


@contextlib.contextmanager
def frames_of(video: str) -> Iterator[None]:
    """Name the video in the error of a transform whose frames are smaller than its crop.

    The transform sees pixels, not files; every loader applies it inside this block.

    Args:
        video: The video as the message should name it (its path, and the record where there is one).

    Raises:
        DataFormatError: ``"<video>: frames of HxW are smaller than the crop C; ..."``.
    """
    try:
        yield
    except FramesSmallerThanCropError as exc:
        raise DataFormatError(f"{video}: {exc}") from exc


@dataclass(frozen=True)
class ClipTransform:
    """Resize, crop, flip and normalise a clip.

    Attributes:
        resize: ``(height, width)`` to resize every frame to first, or ``None`` to keep the size.
        crop: Side of the square crop, or ``None`` for no crop.
        random_crop: Random crop position (training) instead of the centre.
        flip: Whole-clip horizontal flip with probability 1/2 (training).
        normalize: Subtract the ImageNet mean and divide by its std after scaling to ``[0, 1]``.
        interpolation: ``"bilinear"`` (with antialiasing; the package's), ``"nearest"`` (OpenCV's
            ``INTER_NEAREST``: source pixel ``floor(i * in / out)``) or ``"nearest-exact"`` (PIL's
            ``NEAREST``: ``floor((i + 0.5) * in / out)``).
        round_centre: Centre crop at ``round((H - c) / 2)`` (official: torch_videovision,
            torchvision) instead of ``(H - c) // 2``; they differ when ``H - c`` is odd.
    """

    resize: tuple[int, int] | None = None
    crop: int | None = None
    random_crop: bool = False
    flip: bool = False
    normalize: bool = True
    interpolation: Interpolation = "bilinear"
    round_centre: bool = False

    @property
    def is_random(self) -> bool:
        """True when the transform draws from its rng (random crop or flip)."""
        return self.random_crop or self.flip

    def evaluation(self) -> ClipTransform:
        """The same geometry for evaluation: centre crop, no flip."""
        return dataclasses.replace(self, random_crop=False, flip=False)

    def draw(self, frame_size: tuple[int, int], rng: np.random.Generator | None = None) -> tuple[int, int, bool]:
        """The crop offset and flip of one clip: the only random draws of :meth:`__call__`, in its order.

        Args:
            frame_size: ``(height, width)`` of the decoded frames (before the resize).
            rng: Source of the draws (required when :attr:`is_random`).

        Returns:
            ``(top, left, flip)`` in the resized frame (``(0, 0)`` without a crop).

        Raises:
            ValueError: If the (resized) frames are smaller than the crop, or a random transform gets no rng.
        """
        if self.is_random and rng is None:
            raise ValueError("a random ClipTransform (random_crop or flip) needs an rng")
        height, width = self.resize if self.resize is not None else frame_size
        top = left = 0
        if self.crop is not None:
            if height < self.crop or width < self.crop:
                raise FramesSmallerThanCropError(
                    f"frames of {height}x{width} are smaller than the crop {self.crop}; "
                    "set a resize or a smaller crop size"
                )
            if self.random_crop:
                top = int(rng.integers(0, height - self.crop + 1))
                left = int(rng.integers(0, width - self.crop + 1))
            elif self.round_centre:
                top, left = int(round((height - self.crop) / 2)), int(round((width - self.crop) / 2))
            else:
                top, left = (height - self.crop) // 2, (width - self.crop) // 2
        flip = bool(self.flip and rng.random() < 0.5)
        return top, left, flip

    def resize_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Resize float frames ``(N, 3, H, W)`` to :attr:`resize` with :attr:`interpolation` (unchanged without one)."""
        if self.resize is None or tuple(frames.shape[-2:]) == tuple(self.resize):
            return frames
        if self.interpolation == "bilinear":
            return F.interpolate(frames, size=self.resize, mode="bilinear", align_corners=False, antialias=True)
        return F.interpolate(frames, size=self.resize, mode=self.interpolation)

    def __call__(self, frames: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
        """Transform ``(T, H, W, 3)`` uint8 RGB frames into a float32 ``(3, T, H', W')`` clip.

        Args:
            frames: Decoded frames.
            rng: Source of the crop offset and the flip coin (required when :attr:`is_random`).

        Raises:
            ValueError: If the frames are smaller than the crop, or a random transform gets no rng.
        """
        top, left, flip = self.draw(frames.shape[1:3], rng)
        clip = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)  # T,3,H,W
        clip = self.resize_frames(clip)
        if self.crop is not None:
            clip = clip[..., top : top + self.crop, left : left + self.crop]
        if flip:
            clip = clip.flip(-1)
        out = torch.empty(clip.shape[1], *clip.shape[:1], *clip.shape[2:])  # (3, T, H', W'): one write, no copies
        if self.normalize:
            mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
            torch.sub(clip, mean, out=out.permute(1, 0, 2, 3))
            return out.div_(std.view(3, 1, 1, 1))
        return out.copy_(clip.permute(1, 0, 2, 3))


def official_transform(convention: Convention, *, train: bool, crop: int = 224,
                       resize: str = "bilinear") -> ClipTransform:
    """The pipeline of a reference repository, with sizes scaled from 224 (or 112) to ``crop``.

    Args:
        convention: ``musdl_mtl`` (resize 455 W x 256 H, crop 224, flip in training),
            ``core_mtl`` (torch_videovision quirk: 256 W x 455 H, crop 224, flip),
            ``pecop_stage2`` (``core_mtl``'s geometry on frames read with cv2),
            ``musdl_jigsaws`` (centre crop 224 only, no resize, no flip),
            ``tsa_finediving`` (112 W x 200 H, crop 112, flip), ``plain`` (centre/random crop,
            flip, no resize).
        train: Training pipeline (random crop where the repo has one, flip) or evaluation (centre crop).
        crop: Output side; official values are 224 (112 for ``tsa_finediving``).
        resize: ``"bilinear"`` (the package's resize and centre crop) or ``"official"`` (the
            convention's own interpolation, :data:`OFFICIAL_INTERPOLATION`, and rounded centre crop).

    Returns:
        The :class:`ClipTransform`.

    Raises:
        ValueError: On an unknown convention or resize.
    """
    if resize not in RESIZES:
        raise ValueError(f"unknown resize {resize!r}; choose one of {RESIZES}")
    official = {"interpolation": OFFICIAL_INTERPOLATION.get(convention, "bilinear"), "round_centre": True}
    flavour = official if resize == "official" else {}

    def scaled(height: int, width: int, base: int) -> tuple[int, int]:
        return round(height * crop / base), round(width * crop / base)

    if convention == "musdl_mtl":
        # MUSDL crops at the centre in training too (CenterCrop in its transform); flip only.
        return ClipTransform(resize=scaled(256, 455, 224), crop=crop, random_crop=False, flip=train, **flavour)
    if convention in ("core_mtl", "pecop_stage2"):
        return ClipTransform(resize=scaled(455, 256, 224), crop=crop, random_crop=train, flip=train, **flavour)
    if convention == "musdl_jigsaws":
        return ClipTransform(resize=None, crop=crop, **flavour)
    if convention == "tsa_finediving":
        return ClipTransform(resize=scaled(200, 112, 112), crop=crop, random_crop=train, flip=train, **flavour)
    if convention == "plain":
        return ClipTransform(resize=None, crop=crop, random_crop=train, flip=train, **flavour)
    raise ValueError(
        f"unknown transform convention {convention!r}; choose musdl_mtl, core_mtl, pecop_stage2, musdl_jigsaws, "
        "tsa_finediving or plain"
    )


def color_jitter(frames: np.ndarray, rng: np.random.Generator, *, strength: float = 0.8, hue: float = 0.2,
                 p: float = 0.8) -> np.ndarray:
    """Per-frame colour jitter of the original VSPP / VideoPace pipelines (PECoP builds it, never applies it).

    Each frame, with probability ``p``, gets brightness, contrast and saturation factors uniform in
    ``[1 - strength, 1 + strength]`` and a hue shift uniform in ``[-hue, hue]``, in a random order
    (torchvision ``RandomApply(ColorJitter(0.8, 0.8, 0.8, 0.2), p=0.8)`` per frame), drawn from ``rng``.

    Args:
        frames: uint8 ``(T, H, W, 3)`` RGB.
        rng: Source of every draw.

    Returns:
        uint8 ``(T, H, W, 3)``.
    """
    from torchvision.transforms.v2 import functional as TF

    out = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).clone()  # T,3,H,W uint8
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for t in range(out.shape[0]):
        if rng.random() >= p:
            continue
        factors = [*rng.uniform(max(0.0, 1 - strength), 1 + strength, 3), rng.uniform(-hue, hue)]
        for op_index in rng.permutation(4):
            out[t] = ops[op_index](out[t], float(factors[op_index]))
    return out.permute(0, 2, 3, 1).numpy()
