"""Pretraining strategies compared in the paper (Fig. 5, Table 2): which backbone parameters learn.

============  ==========================================================  ==============
strategy      trains                                                      starts from
============  ==========================================================  ==============
``pecop``     the 3D-Adapters only; the backbone is frozen                 Kinetics
``hpt``       every backbone parameter (and adapters, if any)              Kinetics
``hpt_bn``    the BatchNorm affine parameters (gamma, beta) only           Kinetics
``dom_s``     every parameter                                              random init
``dom_g``     nothing: frozen Kinetics features (domain-general)           Kinetics
============  ==========================================================  ==============

The Kinetics classifier (``conv3d_0c_1x1`` / ``fc``), kept only so that checkpoints round-trip, is
never trained: it is not part of the features and would otherwise be an unused parameter under DDP.
Heads (VSPP, AQA) live outside the backbone and set their own ``requires_grad``.

BatchNorm *statistics* are a separate choice: ``model.bn_mode`` (``"train"``: PECoP's behaviour,
batch statistics and re-estimated running statistics; ``"frozen"``: eval-mode BatchNorm).
Freeze before wrapping a model in DDP: DDP registers hooks only for parameters that require
gradients when it is built.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from pecop_lib.models.adapters import is_adapter_key, list_adapters
from pecop_lib.models.backbone import Backbone


@dataclass(frozen=True)
class Strategy:
    """One pretraining strategy.

    Attributes:
        name: Key in :data:`STRATEGIES`.
        trains: ``"adapters"``, ``"all"``, ``"bn_affine"`` or ``"none"``.
        init: ``"kinetics"`` (load Kinetics weights first) or ``"scratch"`` (random init).
        uses_adapters: Whether the strategy is meant to run with adapters injected.
        label: Name used in the paper's figures.
    """

    name: str
    trains: str
    init: str
    uses_adapters: bool
    label: str


STRATEGIES: dict[str, Strategy] = {
    "pecop": Strategy("pecop", "adapters", "kinetics", True, "PECoP"),
    "hpt": Strategy("hpt", "all", "kinetics", False, "HPT"),
    "hpt_bn": Strategy("hpt_bn", "bn_affine", "kinetics", False, "HPT+BN"),
    "dom_s": Strategy("dom_s", "all", "scratch", False, "Dom-S"),
    "dom_g": Strategy("dom_g", "none", "kinetics", False, "Dom-G"),
}


def get_strategy(name: str) -> Strategy:
    """Look a strategy up by name; unknown names raise a ``ValueError`` listing the valid ones."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {list(STRATEGIES)}")
    return STRATEGIES[name]


def _bn_affine_names(model: nn.Module) -> set[str]:
    return {
        f"{module_name}.{param_name}"
        for module_name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
        for param_name, _ in module.named_parameters(recurse=False)
    }


TRAINS: tuple[str, ...] = ("adapters", "all", "bn_affine", "none")
"""Which backbone parameters learn: a strategy's :attr:`Strategy.trains`, also fine-tuning's
``train_backbone`` (``all``, ``adapters``, and ``frozen`` as ``none``)."""


def parameter_names(model: Backbone, trains: str, *, who: str | None = None) -> list[str]:
    """Names of the backbone parameters that ``trains`` selects, in parameter order (nothing is changed).

    The one rule of what learns, shared by pretraining strategies and fine-tuning; the Kinetics
    classifier never does.

    Args:
        model: The backbone.
        trains: One of :data:`TRAINS`.
        who: What asked, for the error message (e.g. ``"strategy 'pecop'"``).

    Raises:
        ValueError: On an unknown ``trains``, or ``adapters`` on a model without adapters.
    """
    if trains not in TRAINS:
        raise ValueError(f"unknown trainable set {trains!r}; choose one of {TRAINS}")
    if trains == "adapters" and not list_adapters(model):
        raise ValueError(
            f"{who or 'training the adapters'} needs a backbone with adapters, but {model.name} has none; "
            "build it with build_backbone(..., adapters=True), call inject_adapters() or load a PECoP checkpoint"
        )
    classifier = f"{model.classifier_prefix}."
    bn_affine = _bn_affine_names(model) if trains == "bn_affine" else set()
    return [
        name
        for name, _ in model.named_parameters()
        if not name.startswith(classifier)
        and (trains == "all" or (trains == "adapters" and is_adapter_key(name)) or name in bn_affine)
    ]


def mark_parameters(model: Backbone, trains: str, *, who: str | None = None) -> list[str]:
    """Set ``requires_grad`` on every backbone parameter as ``trains`` says; returns the trainable names.

    Raises:
        ValueError: See :func:`parameter_names`.
    """
    selected = set(parameter_names(model, trains, who=who))
    for name, param in model.named_parameters():
        param.requires_grad_(name in selected)
    return [n for n, _ in model.named_parameters() if n in selected]


def trainable_names(model: Backbone, strategy: str) -> list[str]:
    """Names of the parameters that ``strategy`` trains, in parameter order (nothing is changed).

    Raises:
        ValueError: On an unknown strategy, or ``pecop`` on a model without adapters.
    """
    return parameter_names(model, get_strategy(strategy).trains, who=f"strategy {strategy!r}")


def mark_trainable(model: Backbone, strategy: str) -> list[str]:
    """Set ``requires_grad`` on every backbone parameter as ``strategy`` says.

    Args:
        model: The backbone (adapters injected for ``pecop``).
        strategy: A key of :data:`STRATEGIES`.

    Returns:
        The names of the trainable parameters.

    Raises:
        ValueError: See :func:`trainable_names`.
    """
    return mark_parameters(model, get_strategy(strategy).trains, who=f"strategy {strategy!r}")
