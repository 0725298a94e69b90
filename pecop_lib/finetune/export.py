"""Exported fine-tuned models: the model a protocol selects, as safetensors plus a JSON card, and its loader.

Every fine-tuning run with a run folder writes ``<run>/export/<protocol>/`` while it trains:

* ``model.safetensors``: the whole scoring model (``backbone.*`` and ``head.*``) of the epoch the protocol
  selects, ``honest`` (the best validation epoch) and, where it is another epoch, ``official`` (the best test
  epoch, the official code's optimistic choice; protocols that average epochs select no single model);
* ``card.json``: what scoring needs besides the weights: the backbone's construction and the SHA-256 of its
  state, the head and its score scale, the clip frames, windows and transform, and for the pair heads (CoRe,
  TSA) the exemplar bank (ids, regressed values, groups, difficulties) whose features are stored in the
  safetensors file (``bank.pooled``, ``bank.maps``), with the exemplars each test video was scored against.

:func:`load_exported` rebuilds the model from these two files alone and refuses a card whose backbone hash or
model-file hash does not match the weights. :mod:`pecop_lib.finetune.scoring` scores new videos with it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from pecop_lib.atomic import atomic_path, atomic_write_json, read_json
from pecop_lib.data.registry import dataset_record
from pecop_lib.data.transforms import ClipTransform
from pecop_lib.eval.protocols import honest, official_best
from pecop_lib.finetune.evaluation import nan_if_none
from pecop_lib.finetune.model import AQAModel
from pecop_lib.finetune.recipes import Setting
from pecop_lib.heads import WindowFeatures, Windowing
from pecop_lib.models.adapters import AdapterConfig
from pecop_lib.models.backbone import Backbone
from pecop_lib.models.build import BACKBONES, build_backbone
from pecop_lib.store import file_sha256, state_sha256

EXPORT_DIR = "export"
MODEL_FILE = "model.safetensors"
CARD_FILE = "card.json"
CARD_FORMAT = "pecop_lib.model_card/1"
EXPORT_PROTOCOLS: tuple[str, ...] = ("honest", "official")
BANK_PREFIX = "bank."


class ModelCardError(ValueError):
    """An exported model whose card and weights do not belong together (or a card of another format)."""


# ------------------------------------------------------------------------------------ the backbone's recipe
def backbone_recipe(backbone: Backbone) -> dict[str, Any]:
    """How to rebuild ``backbone``'s modules (not its weights): name, constructor options, adapters.

    Returns:
        ``{"name", "options", "adapters"}`` for :func:`build_from_recipe`.

    Raises:
        ValueError: For a backbone class :func:`~pecop_lib.models.build_backbone` does not build.
    """
    names = [name for name, cls in BACKBONES.items() if type(backbone) is cls]
    if not names:
        raise ValueError(f"cannot export a {type(backbone).__name__}: known backbones are {list(BACKBONES)}")
    options: dict[str, Any] = {"pool": backbone.pool, "bn_mode": backbone.bn_mode}
    if hasattr(backbone, "width"):  # I3D
        options.update(bn_eps=backbone.bn_eps, width=backbone.width)
    if backbone.has_classifier:  # kept for weight fidelity: its size decides the state's shapes
        classifier = getattr(backbone, backbone.classifier_prefix)
        options["num_classes"] = int(next(p for n, p in classifier.named_parameters() if n.endswith("bias")).numel())
    config = backbone.adapter_config
    return {"name": names[0], "options": options,
            "adapters": None if config is None else config.to_dict()}  # type: ignore[attr-defined]


def build_from_recipe(recipe: Mapping[str, Any]) -> Backbone:
    """The backbone :func:`backbone_recipe` describes, with initial weights (load the exported ones after)."""
    adapters = recipe["adapters"]
    return build_backbone(recipe["name"], AdapterConfig.from_dict(dict(adapters)) if adapters else False, seed=0,
                          **dict(recipe["options"]))


# ----------------------------------------------------------------------------------------- selection
def selected_epoch(records: Sequence[Mapping[str, Any]], protocol: str) -> int:
    """Index (0-based) of the epoch ``protocol`` selects among ``records`` so far.

    ``honest``: the best validation rho; ``official``: the best test rho (first best, as
    :func:`~pecop_lib.finetune.results.select_epochs`); the last epoch where every rho is undefined
    (constant predictions), the epoch whose predictions the reported interval then uses.
    """
    test = [nan_if_none(r["test_rho"]) for r in records]
    try:
        if protocol == "honest":
            return honest([nan_if_none(r["val_rho"]) for r in records], test).epoch  # type: ignore[return-value]
        if protocol == "official":
            return official_best(test).epoch  # type: ignore[return-value]
    except ValueError as exc:
        if "NaN at every epoch" in str(exc):
            return len(records) - 1
        raise
    raise ValueError(f"unknown export protocol {protocol!r}; choose one of {EXPORT_PROTOCOLS}")


def export_protocols(official_protocol: str, validation: bool) -> tuple[str, ...]:
    """The protocols a run exports a model for: ``honest`` with a validation split, ``official`` when it
    selects one epoch (``official_last10`` averages ten)."""
    return tuple(p for p, on in (("honest", validation), ("official", official_protocol == "official")) if on)


# ------------------------------------------------------------------------------------------- export
@dataclass
class ExemplarBank:
    """The training videos a pair head scores against (the training split after the validation hold-out).

    Attributes:
        ids, values, groups, difficulty: Per exemplar: record id, the value the head regresses, exemplar group,
            degree of difficulty (``None`` where the dataset has none).
        features: ``() -> WindowFeatures`` of the exemplars under the current backbone (test transform).
        draw: ``() -> (Q, M)`` exemplar indices the evaluator drew for each test video at this epoch (-1: none).
    """

    ids: list[str]
    values: list[float]
    groups: list[str]
    difficulty: list[float | None]
    features: Callable[[], WindowFeatures]
    draw: Callable[[], np.ndarray]


@dataclass
class Exporter:
    """Writes the model each protocol selects, as the run evaluates its epochs (see the module docstring).

    Attributes:
        folder: ``<run>/export``.
        model: The run's model (its state is written when selected).
        protocols: :func:`export_protocols`.
        card: The static part of the card (setting, head build, frames, transform, options, ...).
        test_ids: The run's test videos, in order.
        bank: The exemplar bank of a pair head, else ``None``.
    """

    folder: Path
    model: AQAModel
    protocols: tuple[str, ...]
    card: dict[str, Any]
    test_ids: list[str]
    bank: ExemplarBank | None = None

    def update(self, records: Sequence[Mapping[str, Any]]) -> None:
        """After an epoch's evaluation: write the exports whose protocol now selects this epoch."""
        last = len(records) - 1
        for protocol in self.protocols:
            if selected_epoch(records, protocol) == last:
                self._write(protocol, records[last])

    def _write(self, protocol: str, record: Mapping[str, Any]) -> None:
        folder = self.folder / protocol
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous().clone() for k, v in self.model.state_dict().items()}
        card = {**self.card, "protocol": protocol, "epoch": int(record["epoch"]),
                "test_rho": record["test_rho"], "val_rho": record["val_rho"],
                "backbone": {**self.card["backbone"], "sha256": state_sha256(self.model.backbone)},
                "test_predictions": dict(zip(self.test_ids, record["test_pred"], strict=True))}
        if self.bank is not None:
            feats = self.bank.features()
            state[BANK_PREFIX + "pooled"] = feats.pooled.detach().cpu().contiguous()
            if feats.maps is not None:
                state[BANK_PREFIX + "maps"] = feats.maps.detach().cpu().contiguous()
            draw = self.bank.draw()
            card["exemplars"] = {
                **card["exemplars"], "ids": self.bank.ids, "values": self.bank.values, "groups": self.bank.groups,
                "difficulty": self.bank.difficulty,
                "test_draw": {vid: [int(i) for i in row if i >= 0] for vid, row in zip(self.test_ids, draw, strict=False)},
            }
        with atomic_path(folder / MODEL_FILE) as tmp:  # one metadata key: safetensors orders several at random,
            save_file(state, str(tmp), metadata={"format": CARD_FORMAT})  # and the same run must give the same bytes
        card["files"] = {MODEL_FILE: file_sha256(folder / MODEL_FILE)}
        atomic_write_json(folder / CARD_FILE, card)  # last: a card always describes the weights beside it

    def finish(self, reported: Mapping[str, Any]) -> dict[str, Path]:
        """Check each export against the run's reported epoch; drop ``official`` where it is ``honest``'s epoch.

        Args:
            reported: :attr:`~pecop_lib.finetune.FinetuneResult.reported` (protocol -> ``Reported``).

        Returns:
            ``{protocol: export folder}`` of the exports kept.

        Raises:
            RuntimeError: If an export holds another epoch than the protocol reports (a bug, not bad input).
        """
        kept: dict[str, Path] = {}
        epochs: dict[str, int] = {}
        for protocol in self.protocols:
            if not (self.folder / protocol / CARD_FILE).is_file():  # resumed from a run made before exports existed
                warnings.warn(f"{self.folder / protocol}: no {protocol} export (the selected epoch was trained before "
                              "this run wrote exports); run it again in a fresh folder to export it", stacklevel=2)
                continue
            card = read_json(self.folder / protocol / CARD_FILE, fix="delete the export folder and run again")
            rep = reported[protocol]
            expected = rep.epoch if rep.epoch is not None else card["epoch"]
            if card["epoch"] != expected:
                raise RuntimeError(f"{self.folder / protocol}: exported epoch {card['epoch']} but the {protocol} "
                                   f"protocol reports epoch {rep.epoch}")
            epochs[protocol] = card["epoch"]
            kept[protocol] = self.folder / protocol
        if "official" in kept and epochs.get("honest") == epochs["official"]:
            shutil.rmtree(kept.pop("official"))
        return kept


# --------------------------------------------------------------------------------------------- load
@dataclass
class ExportedModel:
    """A loaded export: the scoring model and what its card says.

    Attributes:
        folder: The export folder (``.../export/<protocol>``).
        card: ``card.json``.
        setting: The run's setting (head, dataset, task, fold).
        model: Backbone + head, in evaluation mode, on the CPU.
        windowing, transform: How clips are cut into windows and transformed.
        bank: The exemplar features of a pair head (``WindowFeatures``), else ``None``.
    """

    folder: Path
    card: dict[str, Any]
    setting: Setting
    model: AQAModel
    windowing: Windowing
    transform: ClipTransform
    bank: WindowFeatures | None


def find_export(path: str | os.PathLike[str], protocol: str = "honest") -> Path:
    """The export folder of ``path``: an export folder itself, or a run folder (its ``export/<protocol>``).

    Raises:
        FileNotFoundError: If neither holds a card (naming what was looked for and how to make one).
    """
    path = Path(path)
    for folder in (path, path / protocol, path / EXPORT_DIR / protocol):
        if (folder / CARD_FILE).is_file():
            return folder
    raise FileNotFoundError(
        f"{path} holds no exported model ({CARD_FILE} in it, in {protocol}/ or in {EXPORT_DIR}/{protocol}/); "
        "fine-tuning runs write one when they have a run folder (pecop finetune, notebooks 04-07)")


def load_exported(path: str | os.PathLike[str], *, protocol: str = "honest") -> ExportedModel:
    """Rebuild an exported model from its card and safetensors file alone.

    Args:
        path: An export folder, or a run folder (then ``export/<protocol>``).
        protocol: Which export of a run folder.

    Raises:
        FileNotFoundError: See :func:`find_export`.
        ModelCardError: A card of another format, a model file whose SHA-256 is not the card's, or weights whose
            backbone hash differs from the card's ``backbone.sha256`` (the card belongs to another model).
        WeightsMismatchError-like ``RuntimeError`` from strict loading: tensors missing or unexpected.
    """
    from pecop_lib.heads import head_kind  # the registry imports every head

    folder = find_export(path, protocol)
    card = read_json(folder / CARD_FILE, fix="export the run again (delete the export folder and re-run it)")
    if card.get("format") != CARD_FORMAT:
        raise ModelCardError(f"{folder / CARD_FILE}: format {card.get('format')!r}, expected {CARD_FORMAT!r}")
    model_file = folder / MODEL_FILE
    if not model_file.is_file():
        raise FileNotFoundError(f"{model_file} is missing: the card needs its weights beside it")
    digest = file_sha256(model_file)
    if digest != card["files"][MODEL_FILE]:
        raise ModelCardError(f"{model_file}: SHA-256 {digest[:12]}... but {CARD_FILE} says "
                             f"{card['files'][MODEL_FILE][:12]}...: the weights were replaced; export the run again")
    setting = Setting(**card["setting"])
    kind = head_kind(setting.head)
    windowing = Windowing(**{**card["windowing"], "starts": tuple(card["windowing"]["starts"])})
    transform = ClipTransform(**{**card["transform"], "resize": None if card["transform"]["resize"] is None
                                 else tuple(card["transform"]["resize"])})
    backbone = build_from_recipe(card["backbone"])
    build = card["head"]["build"]
    head = kind.build(backbone.feature_dim, windowing, build["dataset_key"], decode=build["decode"],
                      values=np.asarray(build["values"], dtype=np.float64), groups=list(build["groups"]),
                      segment_pairs=build["segment_pairs"])
    model = AQAModel(backbone, head, kind, windowing)
    tensors = load_file(model_file)
    bank_tensors = {k.removeprefix(BANK_PREFIX): tensors.pop(k) for k in list(tensors) if k.startswith(BANK_PREFIX)}
    model.load_state_dict(tensors, strict=True)
    actual = state_sha256(backbone)
    if actual != card["backbone"]["sha256"]:
        raise ModelCardError(
            f"{folder / CARD_FILE}: backbone SHA-256 {card['backbone']['sha256'][:12]}... but the weights in "
            f"{MODEL_FILE} hash to {actual[:12]}...: this card describes another backbone; use the card exported "
            "with these weights")
    model.eval()
    bank = WindowFeatures(bank_tensors["pooled"], bank_tensors.get("maps")) if bank_tensors else None
    if kind.pairs and bank is None:
        raise ModelCardError(f"{model_file}: a {kind.display} export needs its exemplar bank ({BANK_PREFIX}pooled)")
    return ExportedModel(folder, card, setting, model, windowing, transform, bank)


def static_card(setting: Setting, *, backbone: Backbone, backbone_label: str, windowing: Windowing,
                transform: ClipTransform, frames: int, clip_frames: int | None, crop: int, resize: str,
                dataset_key: str, decode: str, segment_pairs: str, values: np.ndarray, groups: Sequence[str],
                options: Mapping[str, Any], seed: int, amp_dtype: torch.dtype | None) -> dict[str, Any]:
    """The part of a model card that does not change between epochs (see :class:`Exporter`)."""
    kind = setting.kind
    spec = kind.distribution_spec(dataset_key)
    return {
        "format": CARD_FORMAT,
        "setting": dataclasses.asdict(setting),
        "backbone": {"label": backbone_label, **backbone_recipe(backbone)},
        "head": {"name": kind.name, "display": kind.display, "pairs": kind.pairs, "steps": kind.steps,
                 "distributions": kind.distributions,
                 "score_scale": None if spec is None else {"bins": dataclasses.asdict(spec.bins), "sigma": spec.sigma,
                                                          "paths": spec.num_paths, "combination": spec.combination},
                 "build": {"dataset_key": dataset_key, "decode": decode, "segment_pairs": segment_pairs,
                           "values": [float(v) for v in values], "groups": list(groups)}},
        "higher_is_better": dataset_record(setting.dataset).higher_is_better,
        "clips": {"frames": int(frames), "clip_frames": clip_frames, "crop": crop, "resize": resize},
        "windowing": {**dataclasses.asdict(windowing), "starts": list(windowing.starts)},
        "transform": {**dataclasses.asdict(transform),
                      "resize": None if transform.resize is None else list(transform.resize)},
        "exemplars": {"count": options["exemplars"], "missing": options["exemplar_missing"],
                      "draws": options["exemplar_draws"]} if kind.pairs else None,
        "eval_batch_size": options["eval_batch_size"],
        "seed": seed,
        "amp_dtype": None if amp_dtype is None else str(amp_dtype).removeprefix("torch."),
    }


def run_exporter(folder: Path, model: AQAModel, setting: Setting, data: Any, options: Any, train_idx: Sequence[int],
                 values: np.ndarray, evaluator: Any, *, backbone_label: str, seed: int,
                 amp_dtype: torch.dtype | None, validation: bool) -> Exporter | None:
    """The :class:`Exporter` of one fine-tuning run (:func:`~pecop_lib.finetune.finetune` calls it).

    Args:
        folder: ``<run>/export``.
        model, setting, data, options: The run's model, setting, :class:`~pecop_lib.finetune.FinetuneData` and
            :class:`~pecop_lib.finetune.FinetuneOptions`.
        train_idx, values: The training videos after the validation hold-out, and every training video's value.
        evaluator: The run's :class:`~pecop_lib.finetune.evaluation.Evaluator` (its exemplar draw and features).
        backbone_label, seed, amp_dtype: Recorded in the card.
        validation: Whether the run has a validation split (the honest protocol).

    Returns:
        ``None`` when no protocol selects a single epoch (``official_last10`` without validation), or (with a
        warning) for a backbone class :func:`~pecop_lib.models.build_backbone` does not build (a test stand-in).
    """
    protocols = export_protocols(setting.recipe.official_protocol, validation)
    if not protocols:
        return None
    if type(model.backbone) not in BACKBONES.values():
        warnings.warn(f"{setting.label}: a {type(model.backbone).__name__} backbone cannot be rebuilt from a model card "
                      f"(exports support {sorted(BACKBONES)}); this run exports no model", stacklevel=3)
        return None
    kind, test = setting.kind, data.test
    train_idx = list(train_idx)
    card = static_card(
        setting, backbone=model.backbone, backbone_label=backbone_label, windowing=model.windowing,
        transform=test.transform, frames=test.official_frames, clip_frames=test.clip_frames,
        crop=int(test.transform.crop), resize=options.resize, dataset_key=kind_dataset_key(setting),
        decode=options.decode, segment_pairs=options.segment_pairs, values=values[train_idx],
        groups=[data.train.records[i].group for i in train_idx], options=dataclasses.asdict(options), seed=seed,
        amp_dtype=amp_dtype)
    card["inputs"] = video_inputs([*data.train.records, *test.records])
    bank = None
    if kind.pairs:
        reference = data.reference

        def features() -> WindowFeatures:  # the exemplars' features the evaluation of this epoch scored against
            return evaluator.exemplars.features(range(len(train_idx)))

        records = [reference.records[i] for i in train_idx]
        bank = ExemplarBank([r.id for r in records], [float(v) for v in values[train_idx]], [r.group for r in records],
                            [r.difficulty for r in records], features,
                            lambda: evaluator.draw.indices[: len(test)])
    return Exporter(folder, model, protocols, card, [r.id for r in test.records], bank)


def kind_dataset_key(setting: Setting) -> str:
    """The dataset's registry key (``mtl_aqa``), which heads use for their score scales."""
    return dataset_record(setting.dataset).key


def video_inputs(records: Sequence[Any]) -> dict[str, Any]:
    """What scoring needs to know about a video besides its frames, read from the run's records.

    Returns:
        ``{"difficulty": bool, "group": rule}``: whether the dataset's scores need the degree of difficulty, and
        how a new video's exemplar group is found: ``{"rule": "constant", "value": g}`` (one group: the task),
        ``{"rule": "difficulty"}`` (MTL-AQA: the difficulty to one decimal) or ``{"rule": "given"}`` (FineDiving's
        dive number: the user names it).
    """
    groups = {r.group for r in records}
    if len(groups) == 1:
        rule: dict[str, Any] = {"rule": "constant", "value": next(iter(groups))}
    elif all(r.difficulty is not None and r.group == f"{r.difficulty:.1f}" for r in records):
        rule = {"rule": "difficulty"}
    else:
        rule = {"rule": "given"}
    return {"difficulty": any(r.difficulty is not None for r in records), "group": rule}
