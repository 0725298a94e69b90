"""Presets and device resolution: the one place where run settings are decided.

A run is described by one flat, typed :class:`Config`. Every field has a stage prefix
(``data_``, ``model_``, ``pretrain_``, ``finetune_``, ...) so that the whole configuration
stays flat (one namespace, easy to override from a notebook's ``parameters`` cell or the
command line) while each stage can still take only its own values with :meth:`Config.stage`.

Four presets exist:

* ``smoke``: CPU, minutes for the whole notebook sequence. It checks the plumbing, not a
  result; every figure and ``metrics.json`` made with it says so (:data:`SMOKE_NOTICE`).
* ``course``: the synthetic world on a 2-core CPU, sized so that the whole sequence shows real
  held-out results in under 45 minutes (a narrower I3D, small frames, heads trained on stored
  frozen features); its figures and metrics say so (:data:`COURSE_NOTICE`). ``--preset auto``
  picks it when no CUDA GPU is usable.
* ``tutorial``: the synthetic world on one GPU, large enough for meaningful results.
* ``paper``: real data and the paper's hyperparameters.

Example:
    >>> from pecop_lib.config import resolve
    >>> cfg = resolve("smoke", seed=3)
    >>> cfg.seed, cfg.preset
    (3, 'smoke')
    >>> resolve("smoke", sed=3)
    Traceback (most recent call last):
    ...
    pecop_lib.config.ConfigError: unknown config key 'sed' (did you mean 'seed'?) ...
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, fields
from typing import Any

from pecop_lib.presets import PRESETS

PRESET_NAMES: tuple[str, ...] = ("smoke", "course", "tutorial", "paper")
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
"""Values of ``pretrain_optimizer`` and ``pretrain_general_optimizer``: ``sgd`` (official) or ``adam``."""

SMOKE_NOTICE = "smoke run: checks the plumbing, not a result"
COURSE_NOTICE = "course run (synthetic world, CPU scale)"
PRESET_NOTICES: dict[str, str] = {"smoke": SMOKE_NOTICE, "course": COURSE_NOTICE}
"""Presets whose figure titles and ``metrics.json`` must say what their numbers are."""


class ConfigError(ValueError):
    """A preset name, config key or value is invalid; the message says which and how to fix it."""


@dataclass(frozen=True)
class Config:
    """All settings of a run, flat, with stage prefixes.

    Field defaults are the ``tutorial`` values; :data:`~pecop_lib.presets.PRESETS` lists how ``smoke`` and
    ``paper`` differ. Create instances with :func:`resolve`, not directly.
    """

    preset: str = "tutorial"
    seed: int = 0
    device: str = "auto"

    # --- runner: headless execution of the notebook sequence ---
    runner_cell_timeout_s: int = 3600
    runner_kernel: str = "python3"

    # --- data: synthetic world sizes and loader settings (pecop_lib.data) ---
    data_synthetic_size: int = 112  # frame side of synthetic videos (px, even)
    data_synthetic_aqa_videos: int = 240  # dives per diving task; videos per PD4T task
    data_synthetic_finediving_test_dives: int = 0  # FineDiving test split (0: a quarter of the dives, as the real split)
    data_synthetic_jigsaws_trials: int = 5  # trials per surgeon (8 surgeons) per JIGSAWS task
    data_synthetic_action_videos: int = 40  # videos per class of the domain-general set
    data_synthetic_action_frames: int = 64
    data_crop_size: int = 112  # frame side of every clip, both stages (official 224; FineDiving's recipes cap it at 112)
    data_clip_frames: int = 0  # 0: the official frame count per dataset; else evenly subsampled to this
    data_num_workers: int = 2

    # --- model: backbone and 3D-Adapters (paper Sec. 3.1, Eq. 1) ---
    model_backbone: str = "i3d"  # i3d | r3d18 (pecop_lib.models.build_backbone)
    model_width: float = 1.0  # I3D channel multiplier: 1 = Kinetics I3D; course 0.25 (a CPU-sized I3D, same blocks)
    model_adapter_lambda: int = 4  # bottleneck C/lambda of the 3D-Adapter
    model_adapter_groups: str = "width"  # width (official: groups = C/lambda) | depthwise (groups = C)
    model_adapter_init: str = "official"  # official (PyTorch default, alpha = 1) | zero_up (identity at start)
    model_bn_eps: float = 1e-5  # I3D BatchNorm eps: CoRe/PECoP 1e-5, piergiaj/TF 1e-3
    model_weights: str = ""  # local Kinetics checkpoint (model_rgb.pth, rgb_imagenet.pt, r3d_18-*.pth); "" = none

    # --- pretrain: stage 2, continual pretraining with VSPP (paper Sec. 3.2) ---
    pretrain_clip_len: int = 32
    pretrain_batch_size: int = 16  # official 16
    pretrain_epochs: int = 8  # PECoP (adapters) epochs; official 8
    pretrain_full_epochs: int = 8  # epochs of the full-model strategies hpt / hpt_bn / dom_s; poster 16
    pretrain_lr: float = 0.01  # the official code hard-codes 0.01; README / paper text 1e-3
    pretrain_strategy: str = "pecop"  # pecop | hpt | hpt_bn | dom_s | dom_g (pecop_lib.models.strategies)
    pretrain_demo_task: str = "MTL-AQA"  # notebook 03's stage-2 target: a single-task dataset or a task (Leg agility)
    pretrain_demo_clip_len: int = 0  # notebook 03's demonstration run (PECoP); 0 = pretrain_clip_len
    pretrain_demo_epochs: int = 0  # its epochs; 0 = pretrain_epochs
    pretrain_heldout_check_clips: int = 16  # clips per test-split video of notebook 03's final held-out measurement
    pretrain_pretext: str = "vspp"  # vspp | pace | rspnet (pecop_lib.ssl; Table 5)
    pretrain_vspp_mode: str = "official"  # official (the released sampler) | paper (clean bounds)
    pretrain_normal_pace: int = 0  # VSPP normal frame step fr; 0 = the target's official value (3 PD4T gait, else 1)
    pretrain_max_speed: int = 5  # VSPP speeds {1..max_speed} minus fr (official max_sr)
    pretrain_num_segments: int = 4  # VSPP segments zeta (official max_segment)
    pretrain_list_repeat: int = 10  # clips per video per epoch: official x20, VSPP paper x10
    pretrain_optimizer: str = "sgd"  # sgd (official) | adam (course: learns VSPP in fewer CPU steps)
    pretrain_momentum: float = 0.9  # SGD momentum (official)
    pretrain_weight_decay: float = 1e-4  # official
    pretrain_cosine_t_max: int = 22  # official CosineAnnealingLR T_max (in epochs)
    pretrain_eta_min: float = 1e-6  # official: README lr / 1000
    # pretraining heads' pooling: window2 (the official AvgPool3d (2,7,7) stride 1 weighting over time, at any frame
    # size; docs/fidelity.md) | official (the AvgPool3d itself, 224 px only) | adaptive (equal weights over time)
    pretrain_pool: str = "window2"
    pretrain_dropout: float = 0.5  # before each VSPP head (official)
    pretrain_color_jitter: bool = False  # official: built but never applied
    pretrain_bn_mode: str = "train"  # train (official: batch stats, running stats re-estimated) | frozen
    pretrain_channel_order: str = "rgb"  # rgb | bgr (official: cv2 BGR frames with ImageNet RGB statistics)
    # stage-2 clips' resize and centre crop: official (cv2 nearest neighbour, centre rounded) | bilinear (antialiased,
    # centre floored); docs/fidelity.md
    pretrain_resize: str = "official"
    pretrain_general_epochs: int = 8  # stage 1: supervised epochs on the synthetic action set
    pretrain_general_curriculum_epochs: int = 0  # stage 1: epochs on the constant-pace classes first (0: none)
    pretrain_general_lr: float = 0.01  # stage 1: SGD learning rate (cosine to 0)
    pretrain_general_batch_size: int = 8  # stage 1: clips per step
    pretrain_general_optimizer: str = "sgd"  # stage 1: sgd (momentum pretrain_momentum) | adam
    pretrain_general_weight_decay: float = 1e-4  # stage 1 weight decay

    # --- finetune: AQA heads on the pretrained backbone (pecop_lib.finetune); 0 = the recipe's official value ---
    finetune_epochs: int = 30  # official: USDL/MUSDL 100 (JIGSAWS 80), CoRe/TSA 200
    finetune_batch_size: int = 8  # videos (USDL/MUSDL) or pairs (CoRe/TSA) per step; official 4 / 1 (accum 2) / 8
    finetune_lr_backbone: float = 0.0  # official 1e-4 (Adam)
    finetune_lr_head: float = 0.0  # official 1e-4 USDL/MUSDL, 1e-3 CoRe/TSA
    finetune_train_backbone: str = "all"  # all (official: backbone + adapters) | adapters | frozen
    finetune_features: str = "clips"  # clips (official) | stored: frozen backbone, features computed once (course)
    finetune_decode: str = "argmax"  # (M)USDL decoding: argmax (official) | expectation
    finetune_exemplars: int = 10  # CoRe/TSA test exemplars per query (voter_number)
    finetune_shared_exemplars: bool = False  # one exemplar bank per group instead of per-query draws
    finetune_exemplar_missing: str = "any"  # error (official) | any: test group without training videos
    # CoRe/TSA test exemplars: per_epoch (official: drawn anew for every query at every epoch) | fixed (one draw per
    # query for the run: the honest protocol then compares epochs on the same exemplars, and picks its epoch by the
    # model, not by a lucky draw); docs/fidelity.md
    finetune_exemplar_draws: str = "fixed"
    # TSA's segmentation of a training pair: joint (official: one PSNet call over both videos, BatchNorm over 2N) |
    # separate (one call per video); docs/fidelity.md
    finetune_segment_pairs: str = "joint"
    finetune_val_fraction: float = 0.2  # validation hold-out of the training split (honest protocol); 0: none
    finetune_eval_batch_size: int = 8
    finetune_bootstrap: int = 1000  # bootstrap resamples of the reported rho's 95 % interval
    finetune_scope: str = "main"  # notebooks: minimal (one dataset) | main (+ MUSDL JIGSAWS Suturing folds) | paper
    # clips' resize and centre crop: official (each head's reader: PIL nearest for CoRe/TSA, centre rounded; MUSDL's
    # random interpolation is not reproduced) | bilinear (antialiased, centre floored); docs/fidelity.md
    finetune_resize: str = "official"

    # --- train: the training loop shared by pretraining and fine-tuning (pecop_lib.train) ---
    train_precision: str = "auto"  # auto (bf16/fp16 on GPU, fp32 on CPU) | fp32 | bf16 | fp16
    train_compile: bool = False  # torch.compile the model
    train_grad_accum_steps: int = 0  # micro-batches per step, both stages; 0: official (stage 2 1, fine-tuning the recipe's)
    train_checkpoint_every_steps: int = 0  # both stages; 0: checkpoint at epoch ends only
    train_keep_checkpoints: int = 2  # newest checkpoint files kept; 0 keeps all

    # --- ablation: notebooks 07-08, the paper's ablations on our runs (pecop_lib.studies.plans) ---
    ablation_fig5_tasks: str = "all"  # Fig. 5 panels, comma-separated (MTL-AQA, Gait, ..., S, NP, KT) or "all"
    ablation_table5_tasks: str = "S,NP,KT"  # Table 5 (VSPP vs VideoPace vs RSPNet, CoRe): the paper's JIGSAWS tasks; none: off
    ablation_table6_tasks: str = "Gait,Finger tapping,Hand movement,Leg agility"  # Table 6 (R3D-18, CoRe); none: off
    ablation_switch_task: str = "MTL-AQA"  # task of the official-vs-paper switch ablation
    ablation_switches: str = "each"  # each (one switch at a time, then all) | combined (all at once) | none
    ablation_seeds: int = 3  # fine-tuning seeds per cell (seed, seed + 1, ...): Fig. 5 error bars
    ablation_protocol: str = "official"  # protocol of the ablation cells: official (best test epoch) | honest
    ablation_metric: str = "final"  # final score rho | execution (diving: the score before the difficulty factor)
    ablation_folds: int = 1  # JIGSAWS test folds per task (4: the full cross-validation)
    ablation_finetune_epochs: int = 10  # fine-tuning epochs of every ablation run; 0: finetune_epochs

    # --- explain: notebook 09's attribution of scores over time (pecop_lib.explain) ---
    explain_videos: int = 0  # test videos with a known defect attributed per head; 0: all of them
    explain_window: int = 0  # occlusion window in clip frames; 0: a twelfth of the clip (at least 2)
    explain_ig_steps: int = 32  # Integrated Gradients path steps

    def stage(self, prefix: str) -> dict[str, Any]:
        """Return the fields of one stage with the prefix stripped.

        Args:
            prefix: A stage prefix such as ``"pretrain"`` (without the trailing underscore).

        Returns:
            ``{name_without_prefix: value}`` for every field named ``<prefix>_*``.

        Raises:
            ConfigError: If no field carries that prefix.
        """
        head = prefix.rstrip("_") + "_"
        out = {f.name[len(head):]: getattr(self, f.name) for f in fields(self) if f.name.startswith(head)}
        if not out:
            stages = sorted({f.name.split("_", 1)[0] for f in fields(self) if "_" in f.name})
            raise ConfigError(f"no config stage {prefix!r}; known stages: {', '.join(stages)}")
        return out

    @property
    def is_smoke(self) -> bool:
        """True for the ``smoke`` preset, whose outputs must be labelled as plumbing checks."""
        return self.preset == "smoke"

    @property
    def notice(self) -> str | None:
        """What every figure title and ``metrics.json`` of this preset must say, or ``None``.

        ``smoke``: :data:`SMOKE_NOTICE`; ``course``: :data:`COURSE_NOTICE`; otherwise ``None``.
        """
        return PRESET_NOTICES.get(self.preset)

    def to_dict(self) -> dict[str, Any]:
        """All fields as a plain dict (JSON-serialisable)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Range:
    """The accepted values of a numeric key: ``low <= value`` (``<`` when ``low_open``), likewise ``high``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        """Whether ``value`` lies in the range."""
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def __str__(self) -> str:
        left = "" if self.low is None else f"{self.low:g} {'<' if self.low_open else '<='} "
        right = "" if self.high is None else f" {'<' if self.high_open else '<='} {self.high:g}"
        return f"{left}value{right}"


_AT_LEAST_0, _AT_LEAST_1, _POSITIVE = Range(0), Range(1), Range(0, low_open=True)
_FRACTION = Range(0, 1, high_open=True)
RANGES: dict[str, Range] = {
    "seed": _AT_LEAST_0,
    "runner_cell_timeout_s": _AT_LEAST_1,
    "data_synthetic_size": Range(8),
    "data_synthetic_aqa_videos": _AT_LEAST_1,
    "data_synthetic_finediving_test_dives": _AT_LEAST_0,
    "data_synthetic_jigsaws_trials": _AT_LEAST_1,
    "data_synthetic_action_videos": _AT_LEAST_1,
    "data_synthetic_action_frames": _AT_LEAST_1,
    "data_crop_size": _AT_LEAST_1,
    "data_clip_frames": _AT_LEAST_0,
    "data_num_workers": _AT_LEAST_0,
    "model_width": _POSITIVE,
    "model_adapter_lambda": _AT_LEAST_1,
    "model_bn_eps": _POSITIVE,
    "pretrain_clip_len": _AT_LEAST_1,
    "pretrain_demo_clip_len": _AT_LEAST_0,
    "pretrain_demo_epochs": _AT_LEAST_0,
    "pretrain_heldout_check_clips": _AT_LEAST_1,
    "pretrain_batch_size": _AT_LEAST_1,
    "pretrain_epochs": _AT_LEAST_1,
    "pretrain_full_epochs": _AT_LEAST_1,
    "pretrain_lr": _POSITIVE,
    "pretrain_normal_pace": _AT_LEAST_0,
    "pretrain_max_speed": _AT_LEAST_1,
    "pretrain_num_segments": _AT_LEAST_1,
    "pretrain_list_repeat": _AT_LEAST_1,
    "pretrain_momentum": _FRACTION,
    "pretrain_weight_decay": _AT_LEAST_0,
    "pretrain_cosine_t_max": _AT_LEAST_1,
    "pretrain_eta_min": _AT_LEAST_0,
    "pretrain_dropout": _FRACTION,
    "pretrain_general_epochs": _AT_LEAST_1,
    "pretrain_general_curriculum_epochs": _AT_LEAST_0,
    "pretrain_general_lr": _POSITIVE,
    "pretrain_general_batch_size": _AT_LEAST_1,
    "pretrain_general_weight_decay": _AT_LEAST_0,
    "finetune_epochs": _AT_LEAST_0,
    "finetune_batch_size": _AT_LEAST_0,
    "finetune_lr_backbone": _AT_LEAST_0,
    "finetune_lr_head": _AT_LEAST_0,
    "finetune_exemplars": _AT_LEAST_1,
    "finetune_val_fraction": _FRACTION,
    "finetune_eval_batch_size": _AT_LEAST_1,
    "finetune_bootstrap": _AT_LEAST_0,
    "train_grad_accum_steps": _AT_LEAST_0,
    "train_checkpoint_every_steps": _AT_LEAST_0,
    "train_keep_checkpoints": _AT_LEAST_0,
    "ablation_seeds": _AT_LEAST_1,
    "ablation_folds": Range(1, 4),
    "ablation_finetune_epochs": _AT_LEAST_0,
    "explain_videos": _AT_LEAST_0,
    "explain_window": _AT_LEAST_0,
    "explain_ig_steps": _AT_LEAST_1,
}
"""The accepted range of every numeric config key (0 means "the official value" where a key's comment says
so); :func:`resolve` checks each value, from presets, notebooks, ``--set`` and CLI flags alike."""


def _check_range(key: str, value: Any) -> None:
    """Raise unless a numeric value is finite and inside :data:`RANGES` (non-numeric values pass)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if not math.isfinite(value):
        raise ConfigError(f"config key {key!r} must be a finite number, got {value!r}")
    accepted = RANGES.get(key)
    if accepted is not None and not accepted.holds(value):
        raise ConfigError(f"config key {key!r} = {value!r} is out of range; accepted: {accepted}")


def config_keys() -> tuple[str, ...]:
    """Names of every config key, in declaration order."""
    return tuple(f.name for f in fields(Config))


def _check_type(key: str, value: Any, annotation: Any) -> Any:
    """Return ``value`` if it matches ``annotation`` (ints are accepted for floats), else raise."""
    expected = {"int": int, "float": float, "str": str, "bool": bool}.get(annotation, annotation)
    if typing.get_origin(expected) is typing.Literal:
        if value not in typing.get_args(expected):
            raise ConfigError(f"config key {key!r} must be one of {typing.get_args(expected)}, got {value!r}")
        return value
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, bool):
        raise ConfigError(f"config key {key!r} expects int, got bool {value!r}")
    if not isinstance(value, expected):
        raise ConfigError(
            f"config key {key!r} expects {expected.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def resolve(preset: str = "smoke", **overrides: Any) -> Config:
    """Build the configuration of a run from a preset plus explicit overrides.

    Args:
        preset: One of :data:`PRESET_NAMES`.
        **overrides: Flat config keys (see :func:`config_keys`) and their values.

    Returns:
        The frozen :class:`Config`.

    Raises:
        ConfigError: On an unknown preset, an unknown key (with a suggestion), a value of the
            wrong type, or a number that is not finite or outside its :data:`RANGES` entry.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESET_NAMES)}")
    annotations = {f.name: f.type for f in fields(Config)}
    values: dict[str, Any] = dict(PRESETS[preset])
    for key, value in overrides.items():
        if key not in annotations:
            close = difflib.get_close_matches(key, annotations, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"unknown config key {key!r}{hint}; valid keys are listed by pecop_lib.config.config_keys()"
            )
        values[key] = value
    checked = {key: _check_type(key, value, annotations[key]) for key, value in values.items()}
    for key, value in checked.items():
        _check_range(key, value)
    cfg = Config(preset=preset, **checked)
    for key in ("pretrain_clip_len", "pretrain_demo_clip_len"):
        if cfg.pretrain_pool != "adaptive" and 0 < getattr(cfg, key) < 16:
            raise ConfigError(
                f"pretrain_pool={cfg.pretrain_pool!r} averages two time steps of the backbone's feature map, but "
                f"{key}={getattr(cfg, key)} leaves one (I3D and R3D-18 divide time by 8); set "
                f"{key} >= 16 or pretrain_pool='adaptive'"
            )
    return cfg


def resolve_device(spec: "str | torch.device" = "auto") -> "torch.device":  # noqa: F821 (torch imported lazily)
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N"`` into a :class:`torch.device` (a device is returned as it is).

    Args:
        spec: ``"auto"`` picks the first CUDA GPU when one is usable, else the CPU.

    Returns:
        The device to put models and tensors on.

    Raises:
        ConfigError: If the spec is malformed, or CUDA (or GPU ``N``) is asked for and absent.
    """
    import torch

    if isinstance(spec, torch.device):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"device must be a string such as 'auto', 'cpu', 'cuda' or 'cuda:0', got {spec!r}")
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        index_text = spec.partition(":")[2] or "0"
        if not index_text.isdigit():
            raise ConfigError(f"device {spec!r} is malformed; use 'cuda' or 'cuda:N' with N a GPU index")
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {spec!r} was requested but CUDA is not available on this machine "
                "(no GPU or a CPU-only torch build); use device='auto' or 'cpu'"
            )
        count = torch.cuda.device_count()
        if int(index_text) >= count:
            raise ConfigError(f"device {spec!r} was requested but only {count} CUDA device(s) exist")
        return torch.device(f"cuda:{index_text}")
    raise ConfigError(f"unknown device {spec!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")


def cache_dir() -> "Path":  # noqa: F821 (pathlib imported lazily)
    """Folder for generated and cached artifacts (synthetic world, pretrained backbones, features).

    ``$PECOP_CACHE_DIR`` when set, else ``~/.cache/pecop``. Created on first use.
    """
    import os
    from pathlib import Path

    root = Path(os.environ.get("PECOP_CACHE_DIR") or Path.home() / ".cache" / "pecop").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def auto_preset() -> str:
    """``"tutorial"`` when a CUDA GPU is usable, else ``"course"`` (the runner's ``--preset auto``)."""
    import torch

    return "tutorial" if torch.cuda.is_available() else "course"
