"""R3D-18 (torchvision ``r3d_18``) as a :class:`~pecop_lib.models.backbone.Backbone` with adapter sites.

The modules are taken from ``torchvision.models.video.r3d_18(weights=None)`` unchanged, so keys are
torchvision's (``stem.0.weight``, ``layer1.0.conv1.0.weight``, ``layer2.0.downsample.0.weight``,
``fc.weight``) and the Kinetics file ``r3d_18-b3b3357e.pth`` loads from a local path with
:func:`pecop_lib.models.load_weights` (nothing is ever downloaded). Expected input: RGB in [0, 1]
normalised with the Kinetics mean/std, 112 px crops; 16x112x112 gives a ``(B, 512, 2, 7, 7)`` map.

**Where the adapters go (paper Fig. 6).** The paper puts one 3D-Adapter in each 3D residual block
but no code was released. Here the adapter sits on the **output of every BasicBlock**
(``layer1.0`` ... ``layer4.1``, 8 sites), after the residual sum and its ReLU:
``h = relu(conv2(conv1(x)) + shortcut(x)); h_out = h + alpha * up(relu(down(h)))``. Reasons: it is
the same place as in PECoP's I3D, where the adapter acts on the output of a composite block after its
paths merge (the concatenation of an inception block); it keeps the I3D formula and parameter
count (230,240 for the 8 sites at lambda 4); and it leaves torchvision's block untouched, so
Kinetics weights load unchanged and disabling the adapters gives back the exact torchvision model.
"""

from __future__ import annotations

import torch
import torchvision

from pecop_lib.models.backbone import Backbone, check_clip

R3D18_ADAPTER_SITES: tuple[str, ...] = tuple(f"layer{i}.{j}" for i in range(1, 5) for j in range(2))
"""One adapter after each of the 8 residual blocks."""


class R3D18(Backbone):
    """torchvision R3D-18 up to ``layer4``.

    Args:
        num_classes: ``None`` (default): no classifier. An int keeps an ``fc`` layer
            (``400`` for the Kinetics file), never trained by the strategies.
        pool: See :func:`pecop_lib.models.backbone.pool_features`; torchvision's own head is
            ``"adaptive"``.
        bn_mode: ``"train"`` or ``"frozen"``.
    """

    name = "r3d18"
    feature_dim = 512
    adapter_sites = R3D18_ADAPTER_SITES
    classifier_prefix = "fc"

    def __init__(self, num_classes: int | None = None, *, pool: str = "adaptive", bn_mode: str = "train") -> None:
        super().__init__(pool=pool, bn_mode=bn_mode)
        net = torchvision.models.video.r3d_18(weights=None, num_classes=num_classes or 400)
        self.stem = net.stem
        self.layer1 = net.layer1
        self.layer2 = net.layer2
        self.layer3 = net.layer3
        self.layer4 = net.layer4
        if num_classes is not None:
            self.fc = net.fc

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``layer4`` map: ``(B, 3, T, H, W)`` -> ``(B, 512, T/8, H/16, W/16)`` (sizes rounded up)."""
        check_clip(x)
        x = self.stem(x)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
        return x

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Kinetics logits ``(B, num_classes)`` as torchvision computes them (global mean, then ``fc``).

        Raises:
            RuntimeError: If the model was built without a classifier.
        """
        if not self.has_classifier:
            raise RuntimeError("this R3D-18 has no classifier; build it with num_classes=400")
        return self.fc(self.forward_features(x).mean(dim=(2, 3, 4)))

    def site_channels(self) -> dict[str, int]:
        """Output channels of each residual block (the adapter sites)."""
        return {name: self.get_submodule(name).conv2[0].out_channels for name in R3D18_ADAPTER_SITES}

