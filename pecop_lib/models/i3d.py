"""I3D (Inflated Inception-V1) in the module and key layout of the hassony2 port used by PECoP and CoRe.

The layout (``conv3d_1a_7x7``, ``mixed_3b.branch_1.1``, ``.conv3d``, ``.batch3d``, ``conv3d_0c_1x1``)
and the numerics follow the version of hassony2/kinetics_i3d_pytorch copied by CoRe, PECoP and
FineDiving/TSA (facts in ``reference/pecop-method.md`` Sec. 1-3):

* **static TF-SAME padding**: per dimension the total padding is ``max(k - s, 0)``, split as
  ``front = total // 2``, ``back = total - front``, from kernel and stride only, never from the
  input size; a symmetric pad is the convolution's own ``padding``, an asymmetric one a zero
  ``ConstantPad3d`` before an unpadded convolution;
* **max-pools**: always a zero ``ConstantPad3d`` with the same rule, then
  ``MaxPool3d(kernel, stride, ceil_mode=True)`` (zero borders can win when inputs are negative,
  which happens after an adapter; kept for fidelity);
* **BatchNorm** eps ``1e-5``, momentum ``0.1`` by default (the CoRe/PECoP values; the DeepMind
  weights were trained with TF's ``1e-3``, which piergiaj uses: pass ``bn_eps=1e-3,
  bn_momentum=0.01`` to build that variant).

Unlike the official class it takes any clip size: it stops at the Mixed_5c map and pools as
:attr:`Backbone.pool` says (``"official"`` is the CoRe/PECoP ``AvgPool3d((2, 7, 7))``).
"""

from __future__ import annotations

import torch
from torch import nn

from pecop_lib.models.backbone import Backbone, check_clip

Triple = tuple[int, int, int]

MIXED_SPECS: dict[str, tuple[int, tuple[int, int, int, int, int, int]]] = {
    "mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}
"""Inception blocks: input channels and branch widths ``(b0, b1a, b1b, b2a, b2b, b3b)``."""

I3D_ADAPTER_SITES: tuple[str, ...] = tuple(MIXED_SPECS)
"""PECoP places one 3D-Adapter after the branch concatenation of each of the 9 Mixed blocks."""

KINETICS_CLASSES = 400


def tf_same_padding(kernel: Triple, stride: Triple) -> tuple[int, int, int, int, int, int]:
    """Static TF-SAME padding of the hassony2 port, in ``F.pad`` order ``(W0, W1, H0, H1, T0, T1)``.

    Args:
        kernel: ``(kT, kH, kW)``.
        stride: ``(sT, sH, sW)``.

    Returns:
        Front/back zero padding per dimension, last dimension first.
    """
    pads: list[int] = []
    for k, s in reversed(list(zip(kernel, stride))):
        total = max(k - s, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)  # type: ignore[return-value]


class Unit3D(nn.Module):
    """Conv3d (TF-SAME) -> BatchNorm3d -> ReLU; the hassony2 ``Unit3Dpy`` (keys ``conv3d``, ``batch3d``).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel: Kernel ``(kT, kH, kW)``.
        stride: Stride ``(sT, sH, sW)``.
        relu: Apply ReLU at the end.
        bias: Give the convolution a bias (only the classifier has one).
        batch_norm: Add the BatchNorm layer.
        bn_eps: BatchNorm epsilon.
        bn_momentum: BatchNorm momentum.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: Triple = (1, 1, 1),
        stride: Triple = (1, 1, 1),
        *,
        relu: bool = True,
        bias: bool = False,
        batch_norm: bool = True,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        pads = tf_same_padding(kernel, stride)
        symmetric = len(set(pads)) == 1
        self.pad = None if symmetric else nn.ConstantPad3d(pads, 0.0)
        self.conv3d = nn.Conv3d(
            in_channels, out_channels, kernel, stride=stride, padding=pads[0] if symmetric else 0, bias=bias
        )
        self.batch3d = nn.BatchNorm3d(out_channels, eps=bn_eps, momentum=bn_momentum) if batch_norm else None
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, T, H, W)`` -> ``(B, C_out, T_out, H_out, W_out)``."""
        if self.pad is not None:
            x = self.pad(x)
        x = self.conv3d(x)
        if self.batch3d is not None:
            x = self.batch3d(x)
        return torch.relu(x) if self.relu else x


class TFMaxPool3d(nn.Module):
    """Zero TF-SAME padding, then ``MaxPool3d(kernel, stride, ceil_mode=True)`` (hassony2 ``MaxPool3dTFPadding``)."""

    def __init__(self, kernel: Triple, stride: Triple) -> None:
        super().__init__()
        self.pad = nn.ConstantPad3d(tf_same_padding(kernel, stride), 0.0)
        self.pool = nn.MaxPool3d(kernel, stride, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` -> pooled ``(B, C, T_out, H_out, W_out)``."""
        return self.pool(self.pad(x))


class Mixed(nn.Module):
    """Inception block: four branches concatenated along channels.

    ``branch_0``: 1x1x1; ``branch_1``: 1x1x1 -> 3x3x3; ``branch_2``: 1x1x1 -> 3x3x3;
    ``branch_3``: 3x3x3 stride-1 max-pool -> 1x1x1. A PECoP adapter is attached after the
    concatenation by :func:`pecop_lib.models.adapters.inject_adapters`.

    Args:
        in_channels: Input channels.
        widths: ``(b0, b1a, b1b, b2a, b2b, b3b)``.
        bn_eps: BatchNorm epsilon.
        bn_momentum: BatchNorm momentum.
    """

    def __init__(
        self, in_channels: int, widths: tuple[int, int, int, int, int, int], *, bn_eps: float, bn_momentum: float
    ) -> None:
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3b = widths
        bn = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        self.branch_0 = Unit3D(in_channels, b0, **bn)
        self.branch_1 = nn.Sequential(Unit3D(in_channels, b1a, **bn), Unit3D(b1a, b1b, (3, 3, 3), **bn))
        self.branch_2 = nn.Sequential(Unit3D(in_channels, b2a, **bn), Unit3D(b2a, b2b, (3, 3, 3), **bn))
        self.branch_3 = nn.Sequential(TFMaxPool3d((3, 3, 3), (1, 1, 1)), Unit3D(in_channels, b3b, **bn))
        self.out_channels = b0 + b1b + b2b + b3b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, T, H, W)`` -> ``(B, out_channels, T, H, W)``."""
        return torch.cat([self.branch_0(x), self.branch_1(x), self.branch_2(x), self.branch_3(x)], dim=1)


def _channel_scaler(width: float):
    """``channels -> channels * width`` as an int; raises if ``width`` does not give whole channel counts."""
    if not 0 < width <= 1:
        raise ValueError(f"I3D width must be in (0, 1], got {width}")

    def scaled(channels: int) -> int:
        value = channels * width
        if abs(value - round(value)) > 1e-9 or round(value) < 1:
            raise ValueError(
                f"I3D width {width} gives {value:g} channels for a {channels}-channel layer; use a width such as "
                "1, 0.5 or 0.25 that divides every channel count (16 is the smallest)"
            )
        return int(round(value))

    return scaled


class I3D(Backbone):
    """Kinetics I3D up to Mixed_5c, in the hassony2/CoRe/PECoP layout.

    At 32x224x224 the Mixed_5c map is ``(B, 1024, 4, 7, 7)``; at 16x112x112 it is ``(B, 1024, 2, 4, 4)``.

    Args:
        num_classes: ``None`` (default): no classifier. An int builds ``conv3d_0c_1x1`` (1x1x1 conv
            with bias on the pooled feature), kept so that checkpoints round-trip with the
            official layout; :func:`pecop_lib.models.mark_trainable` never trains it.
        bn_eps: BatchNorm epsilon (CoRe/PECoP ``1e-5``; piergiaj/TF ``1e-3``).
        bn_momentum: BatchNorm momentum (CoRe/PECoP ``0.1``; piergiaj ``0.01``).
        pool: See :func:`pecop_lib.models.backbone.pool_features`.
        bn_mode: ``"train"`` or ``"frozen"``.
        width: Channel multiplier of every layer (1.0: Kinetics I3D, the only width real
            checkpoints have). The ``course`` preset uses a narrower I3D (same blocks, same
            adapter sites, every channel count times ``width``) so that a 2-core CPU can train it;
            the product of each channel count and ``width`` must be a whole number.
    """

    name = "i3d"
    feature_dim = 1024
    adapter_sites = I3D_ADAPTER_SITES
    classifier_prefix = "conv3d_0c_1x1"

    def __init__(
        self,
        num_classes: int | None = None,
        *,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        pool: str = "adaptive",
        bn_mode: str = "train",
        width: float = 1.0,
    ) -> None:
        super().__init__(pool=pool, bn_mode=bn_mode)
        bn = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        self.bn_eps, self.width = bn_eps, float(width)
        c = _channel_scaler(self.width)
        self.feature_dim = c(1024)
        self.conv3d_1a_7x7 = Unit3D(3, c(64), (7, 7, 7), (2, 2, 2), **bn)
        self.maxPool3d_2a_3x3 = TFMaxPool3d((1, 3, 3), (1, 2, 2))
        self.conv3d_2b_1x1 = Unit3D(c(64), c(64), **bn)
        self.conv3d_2c_3x3 = Unit3D(c(64), c(192), (3, 3, 3), **bn)
        self.maxPool3d_3a_3x3 = TFMaxPool3d((1, 3, 3), (1, 2, 2))
        for name in ("mixed_3b", "mixed_3c", "maxPool3d_4a_3x3", "mixed_4b", "mixed_4c", "mixed_4d", "mixed_4e",
                     "mixed_4f", "maxPool3d_5a_2x2", "mixed_5b", "mixed_5c"):
            if name.startswith("maxPool"):
                kernel = (3, 3, 3) if name == "maxPool3d_4a_3x3" else (2, 2, 2)
                setattr(self, name, TFMaxPool3d(kernel, (2, 2, 2)))
            else:
                channels, widths = MIXED_SPECS[name]
                setattr(self, name, Mixed(c(channels), tuple(c(w) for w in widths), **bn))  # type: ignore[arg-type]
        if num_classes is not None:
            self.conv3d_0c_1x1 = Unit3D(self.feature_dim, num_classes, relu=False, bias=True, batch_norm=False)
        self._stages = (
            "conv3d_1a_7x7", "maxPool3d_2a_3x3", "conv3d_2b_1x1", "conv3d_2c_3x3", "maxPool3d_3a_3x3",
            "mixed_3b", "mixed_3c", "maxPool3d_4a_3x3", "mixed_4b", "mixed_4c", "mixed_4d", "mixed_4e",
            "mixed_4f", "maxPool3d_5a_2x2", "mixed_5b", "mixed_5c",
        )  # fmt: skip

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Mixed_5c map: ``(B, 3, T, H, W)`` -> ``(B, 1024, T', H', W')`` (``T' ~ T/8``, ``H' ~ H/32``)."""
        check_clip(x)
        for stage in self._stages:
            x = getattr(self, stage)(x)
        return x

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Kinetics logits ``(B, num_classes)``: classifier on the pooled windows, averaged over time.

        Raises:
            RuntimeError: If the model was built without a classifier.
        """
        if not self.has_classifier:
            raise RuntimeError("this I3D has no classifier; build it with num_classes=400")
        pooled = self.forward_pooled(x, keep_time=True)  # (B, C, T'')
        return self.conv3d_0c_1x1(pooled[..., None, None]).mean(dim=(2, 3, 4))

    def site_channels(self) -> dict[str, int]:
        """Output channels of every Mixed block (the adapter sites)."""
        return {name: getattr(self, name).out_channels for name in MIXED_SPECS}
