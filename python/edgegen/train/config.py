"""Experiment configs: one dataclass tree per run, built from YAML with every key checked
(edgegen.config.from_dict), and the presets: the full-scale recipe and its scaled-down CPU versions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from edgegen.config import Config, apply_overrides, from_dict, load_yaml, merge
from edgegen.models import DCGANConfig, GPT2Config  # importing edgegen.models registers every model kind
from edgegen.models.config import ModelConfig
from edgegen.prune.config import PruneConfig
from edgegen.quant.config import QATConfig, QuantConfig


def _positive(obj, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        if v is not None and v <= 0:
            raise ValueError(f"{n}: expected a value > 0, got {v!r}")


@dataclass
class DataConfig:
    """``name`` (required): an image set (cifar10, celeba; 64x64 in [-1, 1]), a token stream
    (openwebtext, wikitext2; GPT-2 BPE), or ``synthetic-images`` / ``synthetic-tokens`` (random
    data of the same shapes, for smoke runs and tests; runs on it are tagged ``synthetic_data``). ``root`` defaults to $EDGEGEN_DATA_DIR. ``limit`` caps the
    training examples (images) or tokens (text) used.

    Validation: ``val_split: official`` (the default) validates on the dataset's own held-out
    split, the same examples whatever the batch size or ``limit``: CIFAR-10 test, CelebA's
    official valid partition (training then uses its train partition), WikiText-2 valid;
    ``val_limit`` takes a fixed prefix of it (images, or tokens; a labelled subset for smoke
    runs). OpenWebText and the synthetic sets have no official split: they, and ``val_split:
    holdout``, hold out the last ``val_batches`` batches of the training stream."""

    name: Literal["cifar10", "celeba", "openwebtext", "wikitext2", "synthetic-images", "synthetic-tokens"]
    root: Optional[str] = None
    limit: Optional[int] = None
    seq_len: int = 128
    val_batches: int = 4
    synthetic_size: int = 512
    val_split: Literal["official", "holdout"] = "official"
    val_limit: Optional[int] = None

    def __post_init__(self):
        _positive(self, "limit", "seq_len", "val_batches", "synthetic_size", "val_limit")

    @property
    def official_validation(self) -> bool:
        return self.val_split == "official" and self.name in ("cifar10", "celeba", "wikitext2")

    @property
    def is_text(self) -> bool:
        return self.name in ("openwebtext", "wikitext2", "synthetic-tokens")


@dataclass
class OptimConfig:
    """Adam (images) or AdamW (GPT-2); ``schedule`` constant or warm-up + cosine to
    ``min_lr_ratio * lr``; gradients clipped to ``grad_clip`` (0: off) and accumulated over
    ``grad_accum`` micro-batches per optimizer step."""

    name: Literal["adam", "adamw"] = "adam"
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    grad_clip: float = 0.0
    grad_accum: int = 1

    def __post_init__(self):
        _positive(self, "lr", "grad_accum")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas: expected two values in [0, 1), got {self.betas!r}")
        if self.warmup_steps < 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise ValueError("warmup_steps, grad_clip, weight_decay: expected values >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio: expected a value in [0, 1], got {self.min_lr_ratio!r}")


@dataclass
class TrainConfig:
    """``epochs`` passes over the data (``steps_per_epoch`` optimizer steps each when given,
    else the whole training set), stopping early at ``max_steps``. Checkpoints: every epoch and
    every ``checkpoint_every`` steps (0: epochs only), plus ``best.pt`` by validation loss."""

    epochs: int = 1
    batch_size: int = 32
    steps_per_epoch: Optional[int] = None
    max_steps: Optional[int] = None
    checkpoint_every: int = 0
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    threads: Optional[int] = None

    def __post_init__(self):
        _positive(self, "epochs", "batch_size", "steps_per_epoch", "max_steps", "log_every", "threads")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every: expected >= 0, got {self.checkpoint_every}")
        if not -(2**63) <= self.seed < 2**63:
            raise ValueError(f"seed: expected a 64-bit integer, got {self.seed}")


@dataclass
class DistillConfig:
    """Knowledge distillation into the ``model`` (the student) from frozen ``teachers`` (model
    sections, usually with ``init_from`` a trained checkpoint), mixed with ``teacher_weights``.
    ``fused``: the loss from hidden states and head weights (never the [N, V] logits).
    ``feature_weight`` > 0 adds hidden-state matching (MSE) through learned linear projections:
    the final hidden states, or the block outputs listed in ``feature_layers`` as
    [student_block, teacher_block] pairs. ``stages``: progressive distillation through
    intermediate students (model sections, e.g. a 9-layer GPT-2 between a 12-layer teacher and a
    6-layer student): each stage is distilled from the previous one, the final ``model`` from
    the last stage."""

    teachers: list[ModelConfig] = field(default_factory=list)
    teacher_weights: list[float] = field(default_factory=list)
    temperature: float = 2.0
    alpha: float = 0.5
    fused: bool = True
    feature_weight: float = 0.0
    feature_layers: list[list[int]] = field(default_factory=list)
    stages: list[ModelConfig] = field(default_factory=list)

    def __post_init__(self):
        _positive(self, "temperature")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha: expected a value in [0, 1], got {self.alpha!r}")
        if self.teacher_weights and len(self.teacher_weights) != len(self.teachers):
            raise ValueError(f"teacher_weights: expected one weight per teacher ({len(self.teachers)}), "
                             f"got {len(self.teacher_weights)}")
        if self.feature_weight < 0:
            raise ValueError(f"feature_weight: expected >= 0, got {self.feature_weight!r}")
        if any(len(pair) != 2 or min(pair) < 0 for pair in self.feature_layers):
            raise ValueError(f"feature_layers: expected [student_block, teacher_block] pairs of block indices, got "
                             f"{self.feature_layers!r}")
        if self.stages and len(self.teachers) != 1:
            raise ValueError("stages: progressive distillation starts from exactly one teacher")
        for key in ("teachers", "stages"):
            for i, m in enumerate(getattr(self, key)):
                if not isinstance(m, GPT2Config):
                    raise ValueError(f"{key}[{i}].kind: distillation teachers and stages are GPT-2s (kind: gpt2), "
                                     f"got {m.kind!r}")


@dataclass
class CompressConfig:
    """Compression during training: ``prune`` (a pruning config, e.g. {kind: MagnitudeConfig,
    amount: 0.5}) ramped along a cubic schedule over ``prune_begin``..``prune_end`` steps (by
    default the first three quarters of the run, so the schedule scales with the preset; a
    schedule that would end after the run's last step is an error, not an under-pruned model); ``qat``
    (fake quantization throughout training, LSQ, converted to integer modules at the end); ``ptq``
    (post-training quantization of the trained model, after pruning: a quantization config, e.g.
    {kind: Int8DynamicConfig}; static INT8 calibrates on the validation batches, a DCGAN generator
    on seeded latents). The run's final metrics are those of the quantized model (the float
    model's are kept as ``final_float``)."""

    prune: Optional[PruneConfig] = None
    prune_begin: int = 0
    prune_end: Optional[int] = None  # default: 3/4 of the run's optimizer steps
    prune_frequency: Optional[int] = None  # default: (prune_end - prune_begin) / 20, at least 1
    qat: bool = False
    ptq: Optional[QuantConfig] = None

    def __post_init__(self):
        if self.prune is not None and not hasattr(self.prune, "amount"):
            raise ValueError(f"prune: training ramps the pruned amount along a schedule; {self.prune.kind} has no "
                             "amount (use MagnitudeConfig, ChannelConfig or HeadConfig, or prune once with "
                             "edgegen.prune.prune_)")
        if self.ptq is not None:
            if isinstance(self.ptq, QATConfig):
                raise ValueError("ptq: QATConfig is training, not post-training quantization; use qat: true")
            if self.qat:
                raise ValueError("ptq: a QAT run is already converted to integer modules; use qat or ptq, not both")
        if self.prune_begin < 0:
            raise ValueError(f"prune_begin: expected >= 0, got {self.prune_begin}")
        if self.prune_end is not None and self.prune_end <= self.prune_begin:
            raise ValueError(f"prune_end ({self.prune_end}) must be after prune_begin ({self.prune_begin})")
        if self.prune_frequency is not None and self.prune_frequency < 1:
            raise ValueError(f"prune_frequency: expected >= 1, got {self.prune_frequency}")


@dataclass
class TrackingConfig:
    """MLflow tracking: ``uri`` (default: $MLFLOW_TRACKING_URI, else SQLite ``mlflow.db`` in the
    working directory), ``experiment`` name; ``enabled: false`` logs nothing."""

    enabled: bool = True
    uri: Optional[str] = None
    experiment: str = "edgegen"


_MODEL_KIND = {"gan": "dcgan", "vae": "vae", "lm": "gpt2", "distill": "gpt2"}
# The fields of the version-1 model section (one flat section for every model kind), by kind.
_V1_MODEL_FIELDS = {"dcgan": ("nz", "ngf", "ndf"), "vae": ("latent_dim", "beta"),
                    "gpt2": ("n_layer", "n_embd", "n_head", "vocab_size", "n_positions", "dropout")}


# The version-1 section's defaults (a GPT-2 left at them was the 6-layer student).
_V1_DEFAULTS = {"nz": 100, "ngf": 64, "ndf": 64, "latent_dim": 32, "beta": 4.0, "n_layer": 6, "n_embd": 384,
                "n_head": 6, "vocab_size": 50257, "n_positions": 1024, "dropout": 0.0}


def _v1_model(section: dict, kind: str | None = None) -> dict:
    """A version-1 model section in the current form: the fields of its kind (``kind`` forces
    one: teachers and stages were always GPT-2s, whatever their section said). With
    ``init_from`` the architecture was the checkpoint's, so fields left at the version-1
    defaults are dropped rather than stated."""
    kind = kind or section.get("kind", "dcgan")
    fields = _V1_MODEL_FIELDS.get(kind, ())
    out = {"kind": kind, **{k: v for k, v in section.items() if k in fields or k == "init_from"}}
    if section.get("init_from"):
        out = {k: v for k, v in out.items() if k not in fields or v != _V1_DEFAULTS.get(k)}
    return out


def _looks_like_v1(section) -> bool:
    """A flat version-1 model section: fields of more than one model kind."""
    return isinstance(section, dict) and sum(any(k in section for k in f) for f in _V1_MODEL_FIELDS.values()) > 1


@dataclass
class ExperimentConfig(Config, kind="experiment"):
    """One training run. ``model`` is a model config (``kind: dcgan | vae | gpt2``, the one the
    task trains; it may be left out of a file and follows from ``task``); ``data`` must name its
    dataset (random data only when asked for: ``synthetic-images`` / ``synthetic-tokens``).

    Version 2 made the model sections the models' own configs; version-1 data (checkpoints
    written before) had one flat section with the fields of every model kind and is migrated."""

    version = 2

    name: str = "experiment"
    task: Literal["gan", "vae", "lm", "distill"] = "gan"
    model: ModelConfig = field(default_factory=DCGANConfig)
    data: DataConfig = field(kw_only=True)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: Optional[DistillConfig] = None
    compress: Optional[CompressConfig] = None
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    output_dir: str = "runs"

    @classmethod
    def migrate(cls, data: dict, version: int) -> dict:
        if version != 1:
            return super().migrate(data, version)
        data = dict(data)
        if isinstance(data.get("model"), dict):
            data["model"] = _v1_model(data["model"])
        distill = data.get("distill")
        if isinstance(distill, dict):
            distill = data["distill"] = dict(distill)
            for key in ("teachers", "stages"):
                if isinstance(distill.get(key), list):
                    distill[key] = [_v1_model(m, "gpt2") if isinstance(m, dict) else m for m in distill[key]]
        return data

    @classmethod
    def prepare(cls, data: dict) -> dict:
        """The model kind follows from the task when a section leaves it out (teachers and
        intermediate stages are GPT-2s)."""
        model = data.get("model")
        task = data.get("task", "gan")
        if _looks_like_v1(model):
            raise ValueError("model: one flat section with the fields of several model kinds is the form written "
                             "before versioned configs; add `version: 1` at the top level to read it (it is "
                             "migrated), or keep only the fields of the model's kind")
        if (model is None or (isinstance(model, dict) and "kind" not in model)) and task in _MODEL_KIND:
            data = {**data, "model": {"kind": _MODEL_KIND[task], **(model or {})}}
        distill = data.get("distill")
        if isinstance(distill, dict):
            distill = dict(distill)
            for key in ("teachers", "stages"):
                if isinstance(distill.get(key), list):
                    distill[key] = [{"kind": "gpt2", **m} if isinstance(m, dict) and "kind" not in m else m
                                    for m in distill[key]]
            data = {**data, "distill": distill}
        return data

    def __post_init__(self):
        kinds = _MODEL_KIND
        if self.model.kind != kinds[self.task]:
            raise ValueError(f"model.kind: task {self.task!r} trains a {kinds[self.task]!r} model, "
                             f"got {self.model.kind!r}")
        text = self.task in ("lm", "distill")
        if self.data.is_text != text:
            raise ValueError(f"data.name: task {self.task!r} needs {'a token' if text else 'an image'} dataset, "
                             f"got {self.data.name!r}")
        if self.task == "distill" and (self.distill is None or not self.distill.teachers):
            raise ValueError("distill.teachers: the distill task needs at least one teacher")


# Presets: overrides applied before the user's --set. 'paper': the published settings (batch sizes,
# lr 2e-4, epochs, T = 2) with edgegen's choices where the paper says nothing (betas, AdamW, schedules,
# clipping); the CPU
# presets shrink widths, data and steps (cpu-smoke: the whole set of runs in minutes).
PRESETS: dict[str, dict[str, dict]] = {
    "paper": {
        "gan": {"train": {"batch_size": 32, "epochs": 100}, "optim": {"name": "adam", "lr": 2e-4, "betas": [0.5, 0.999]}},
        "vae": {"train": {"batch_size": 32, "epochs": 100}, "optim": {"name": "adam", "lr": 2e-4, "betas": [0.9, 0.999]}},
        "lm": {"train": {"batch_size": 8, "epochs": 3}, "optim": {"name": "adamw", "lr": 2e-4, "betas": [0.9, 0.95],
                                                                   "schedule": "cosine", "warmup_steps": 500,
                                                                   "grad_clip": 1.0, "weight_decay": 0.1}},
        "distill": {"train": {"batch_size": 8, "epochs": 3}, "optim": {"name": "adamw", "lr": 2e-4,
                                                                        "betas": [0.9, 0.95], "schedule": "cosine",
                                                                        "warmup_steps": 500, "grad_clip": 1.0},
                    "distill": {"temperature": 2.0}},
    },
    "cpu-small": {
        "gan": {"model": {"ngf": 32, "ndf": 32}, "data": {"limit": 4096, "val_limit": 1000},
                "train": {"batch_size": 32, "epochs": 2}},
        "vae": {"data": {"limit": 4096, "val_limit": 1000}, "train": {"batch_size": 32, "epochs": 2}},
        "lm": {"model": {"n_layer": 2, "n_embd": 128, "n_head": 4, "n_positions": 256},
               "data": {"seq_len": 128, "limit": 2_000_000}, "optim": {"warmup_steps": 20},
               "train": {"batch_size": 8, "epochs": 1, "steps_per_epoch": 200}},
        "distill": {"model": {"n_layer": 2, "n_embd": 128, "n_head": 4, "n_positions": 256},
                    "data": {"seq_len": 128, "limit": 2_000_000}, "optim": {"warmup_steps": 20},
                    "train": {"batch_size": 8, "epochs": 1, "steps_per_epoch": 200}},
    },
    "cpu-smoke": {
        "gan": {"model": {"nz": 16, "ngf": 8, "ndf": 8}, "data": {"limit": 64, "val_batches": 1, "val_limit": 64},
                "train": {"batch_size": 8, "epochs": 1, "steps_per_epoch": 4, "log_every": 1}},
        "vae": {"model": {"latent_dim": 8}, "data": {"limit": 64, "val_batches": 1, "val_limit": 64},
                "train": {"batch_size": 8, "epochs": 1, "steps_per_epoch": 4, "log_every": 1}},
        "lm": {"model": {"n_layer": 1, "n_embd": 64, "n_head": 2, "n_positions": 64},
               "data": {"seq_len": 32, "limit": 50_000, "val_batches": 1}, "optim": {"warmup_steps": 1},
               "train": {"batch_size": 4, "epochs": 1, "steps_per_epoch": 4, "log_every": 1}},
        "distill": {"model": {"n_layer": 1, "n_embd": 64, "n_head": 2, "n_positions": 64},
                    "data": {"seq_len": 32, "limit": 50_000, "val_batches": 1}, "optim": {"warmup_steps": 1},
                    "train": {"batch_size": 4, "epochs": 1, "steps_per_epoch": 4, "log_every": 1}},
    },
}


def preset_changes(data: dict, preset: str) -> tuple[dict, list[str]]:
    """``data`` with ``preset`` applied, and the values written in ``data`` that the preset
    replaced (as ``'train.epochs: 100 -> 1'``), so callers can say so."""
    if preset not in PRESETS:
        raise ValueError(f"--preset: expected one of {sorted(PRESETS)}, got {preset!r}")
    layer = PRESETS[preset].get(data.get("task", "gan"), {})
    replaced = []

    def walk(written, new, prefix):
        for k, v in new.items():
            if isinstance(v, dict) and isinstance(written.get(k), dict):
                walk(written[k], v, f"{prefix}{k}.")
            elif k in written and written[k] != v:
                replaced.append(f"{prefix}{k}: {written[k]!r} -> {v!r}")
    walk(data, layer, "")
    out = merge(data, layer)
    stages = (data.get("distill") or {}).get("stages") if isinstance(data.get("distill"), dict) else None
    sizes = {k: v for k, v in layer.get("model", {}).items() if k in ("n_layer", "n_embd", "n_head", "n_positions")}
    if sizes and isinstance(stages, list):
        # An intermediate student keeps the recipe's place in the chain at the preset's scale: a
        # full-size stage between a shrunk teacher and a shrunk student would be larger than both.
        scaled = []
        for i, stage in enumerate(stages):
            if not isinstance(stage, dict):
                scaled.append(stage)
                continue
            for k, v in sizes.items():
                if k in stage and stage[k] != v:
                    replaced.append(f"distill.stages[{i}].{k}: {stage[k]!r} -> {v!r}")
            scaled.append({**stage, **sizes})
        out["distill"]["stages"] = scaled
    return out, replaced


def load_experiment(source: str | dict, preset: str | None = None, overrides=(), *,
                    report=None) -> ExperimentConfig:
    """YAML file (or dict) -> preset -> ``key=value`` overrides -> validated ExperimentConfig.

    Precedence: file < preset < ``--set``. A preset is a scale profile asked for on the command
    line (``cpu-smoke`` shrinks a full recipe), so it replaces what the file says about sizes and
    steps; every value it replaces is passed to ``report`` (a callable taking one line; the CLI
    prints them). ``--set`` wins over both.

    Examples:
        >>> cfg = load_experiment({"task": "vae", "data": {"name": "synthetic-images"}}, "cpu-smoke",
        ...                       ["train.batch_size=4"])
        >>> cfg.model.kind, cfg.train.epochs, cfg.train.batch_size
        ('vae', 1, 4)
    """
    where = "config" if isinstance(source, dict) else str(source)
    data = load_yaml(source) if not isinstance(source, dict) else dict(source)
    if not data:
        raise ValueError(f"{where}: the config is empty (an experiment needs at least its task, model and data)")
    if "base" in data or "variants" in data:
        raise ValueError(f"{where}: this is a sweep file (base / variants); run it with `edgegen sweep`")
    if preset is not None:
        data, replaced = preset_changes(data, preset)
        if report is not None:
            for line in replaced:
                report(f"preset {preset} replaces {line}")
    data = apply_overrides(data, overrides)
    cfg = from_dict(ExperimentConfig, data)
    _check_sections_used(cfg)
    return cfg


def _check_sections_used(cfg: "ExperimentConfig") -> None:
    """A section the task would ignore is a mistake in what the user wrote (checked when a config
    is loaded for a run, not when a checkpoint's config is read back)."""
    if cfg.task != "distill" and cfg.distill is not None:
        raise ValueError(f"distill: task {cfg.task!r} does not distill; set task: distill or remove the section")
    c = cfg.compress
    if c is not None and c.prune is None and not c.qat and c.ptq is None:
        raise ValueError("compress: expected prune, qat: true and/or ptq; without them the section does nothing")
    t = cfg.train
    # The run's optimizer steps where the train section fixes them (at most max_steps; the whole
    # data per epoch is counted when the Trainer reads it, which checks again).
    steps = t.epochs * t.steps_per_epoch if t.steps_per_epoch else None
    if t.max_steps:
        steps = min(steps, t.max_steps) if steps else t.max_steps
    if c is not None and steps is not None:
        check_prune_steps(c, steps)


def check_prune_steps(cc: CompressConfig, total_steps: int) -> None:
    """A ValueError naming ``compress.prune_begin`` / ``compress.prune_end`` when the pruning
    schedule would not end within the run's ``total_steps`` optimizer steps: the model would ship
    short of its ``prune.amount``."""
    if cc.prune is None:
        return
    if cc.prune_begin >= total_steps:
        raise ValueError(f"compress.prune_begin: {cc.prune_begin} is not before the run's last optimizer step "
                         f"({total_steps} in all): nothing would be pruned; expected a step < {total_steps}")
    if cc.prune_end is not None and cc.prune_end > total_steps:
        raise ValueError(f"compress.prune_end: {cc.prune_end} is after the run's last optimizer step ({total_steps} "
                         f"in all): the model would ship short of prune.amount {cc.prune.amount}; expected a step "
                         f"<= {total_steps} (or leave it out: 3/4 of the run)")
