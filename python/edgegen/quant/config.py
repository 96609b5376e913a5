"""Quantization configs: the ``kind``s ``quantize_`` accepts. They hold settings only (data such
as calibration batches is passed to the call), so every one round-trips through plain data."""

from __future__ import annotations

import math
from dataclasses import InitVar, dataclass, field
from typing import ClassVar, Literal, Optional

import torch

from edgegen.config import Config


@dataclass
class QuantConfig(Config, family=True):
    """Base of the quantization configs (a field annotated with it takes any of them by ``kind``)."""


@dataclass
class Int8DynamicConfig(QuantConfig):
    """Linear and (groups=1) convolution layers -> integer modules: int8 weights (symmetric, per
    output feature), activations quantized per call (per tensor, 7-bit). With ``embeddings``,
    embedding tables are stored as int8 rows too (a tied output head then shares them)."""

    embeddings: bool = True


@dataclass
class Int8StaticConfig(QuantConfig):
    """Linear and (groups=1) convolution layers -> integer modules with calibrated activation
    parameters: observers on every selected layer's input record ``batches`` batches of the
    ``calibration`` data given to ``quantize_`` (an iterable of model inputs: a tensor, or a tuple
    of positional arguments), then activations are quantized with the resulting fixed
    (scale, zero point) to [0, 127]. ``batches=None`` means 8 for ``quantize_``; a training run
    calibrating on its validation batches then uses all of them. ``observer``: 'minmax',
    'moving_average', 'percentile' or 'mse'."""

    batches: Optional[int] = None
    observer: str = "minmax"
    calibration: InitVar[object] = None

    DEFAULT_BATCHES = 8

    def __post_init__(self, calibration=None):
        if calibration is not None:
            raise TypeError("calibration: calibration data is passed to the call, quantize_(model, config, "
                            "calibration=batches), not stored in Int8StaticConfig")
        if self.batches is not None and (isinstance(self.batches, bool) or not isinstance(self.batches, int)
                                         or self.batches < 1):
            hint = ("; calibration data is passed to quantize_(model, config, calibration=...)"
                    if hasattr(self.batches, "__iter__") else "")
            raise ValueError(f"batches: expected a positive int or None, got {self.batches!r}{hint}")
        if self.observer not in ("minmax", "moving_average", "percentile", "mse"):
            raise ValueError(f"observer: expected 'minmax', 'moving_average', 'percentile' or 'mse', got "
                             f"{self.observer!r}")


@dataclass
class _Int4Config(QuantConfig, family=True):
    """The settings both INT4 configs share: the weights' group size, and whether embedding tables
    are stored in 4 bits too (:class:`Int4Embedding`; a tied output head then shares them, and
    ``filter_fn`` sees the ``nn.Embedding`` modules as well)."""

    group_size: int = 64
    embeddings: bool = True

    def __post_init__(self):
        if self.group_size not in (32, 64, 128):
            raise ValueError(f"group_size: expected 32, 64 or 128, got {self.group_size!r}")


@dataclass
class Int4WeightOnlyConfig(_Int4Config):
    """Linear layers -> :class:`Int4Linear`: 4-bit weights, two per byte, one scale and zero point
    per ``group_size`` consecutive input features; activations stay floating point. With
    ``embeddings``, embedding tables are stored as 4-bit rows too (:class:`Int4Embedding`; a tied
    output head then shares them), and ``filter_fn`` sees the ``nn.Embedding`` modules as well.
    Version 2 added ``embeddings``; version-1 data (tables left in floating point) reads as
    ``embeddings=False``."""

    version: ClassVar[int] = 2

    @classmethod
    def migrate(cls, data: dict, version: int) -> dict:
        if version != 1:
            return super().migrate(data, version)
        return {**data, "embeddings": False}


@dataclass
class Int4DynamicConfig(_Int4Config):
    """Linear layers -> :class:`Int4Linear` with ``activations='int8'`` (W4A8): the 4-bit weights of
    :class:`Int4WeightOnlyConfig`, and each call quantizes the layer's input per row and group of
    ``group_size`` features to symmetric int8 (scale max|x| / 127), so the dot products run in
    integers (AVX-512 VNNI / AVX2); inputs must be finite. ``embeddings`` as in
    :class:`Int4WeightOnlyConfig`."""


@dataclass
class Fp16Config(QuantConfig):
    """Selected layers store and compute in float16 (inputs cast in, outputs cast back)."""


@dataclass
class Bf16Config(QuantConfig):
    """Selected layers store and compute in bfloat16 (inputs cast in, outputs cast back)."""


@dataclass
class QATConfig(QuantConfig):
    """Quantization-aware training in two calls of ``quantize_``: ``step='prepare'`` wraps every
    selected Linear / Conv2d / ConvTranspose2d (groups=1) in a fake-quantizing ``QATModule``;
    after training, ``step='convert'`` replaces them by the integer modules. Weights: learned
    scales (``'lsq'``) or max|w| per channel (``'ste'``); activations: learned (``'lsq'``) or
    moving averages of the batch range (``'ema'``, ``averaging_constant``)."""

    weight: str = "lsq"
    activation: str = "lsq"
    averaging_constant: float = 0.01
    step: Literal["prepare", "convert"] = "prepare"

    def __post_init__(self):
        if self.step not in ("prepare", "convert"):
            raise ValueError(f"step: expected 'prepare' or 'convert', got {self.step!r}")
        if self.weight not in ("lsq", "ste"):
            raise ValueError(f"weight: expected 'lsq' or 'ste', got {self.weight!r}")
        if self.activation not in ("lsq", "ema"):
            raise ValueError(f"activation: expected 'lsq' or 'ema', got {self.activation!r}")
        if isinstance(self.averaging_constant, bool) or not 0.0 < self.averaging_constant <= 1.0:
            raise ValueError(f"averaging_constant: expected a value in (0, 1], got {self.averaging_constant!r}")


def _default_low() -> QuantConfig:
    return Int8DynamicConfig()


@dataclass
class DynamicPrecisionConfig(QuantConfig):
    """Dynamic precision scaling: ``quantize_`` keeps every candidate layer both in full precision
    and quantized by ``low`` (packed, switchable per call); generation then runs each step in
    low precision when the model's previous next-token distribution was confident, in full
    precision otherwise (``edgegen.models.generate_dynamic``). ``rule``: ``'top1'`` (confident:
    the top-1 probability >= ``threshold``) or ``'entropy'`` (confident: the entropy over log V
    <= ``threshold``); ``threshold`` in [0, 1]. With a threshold that makes every distribution
    confident (top1 0, entropy 1) every step, the first included, runs ``low``."""

    low: QuantConfig = field(default_factory=_default_low)
    rule: Literal["top1", "entropy"] = "top1"
    threshold: float = 0.5

    def __post_init__(self):
        if not isinstance(self.low, (Int8DynamicConfig, _Int4Config, Fp16Config, Bf16Config)):
            raise ValueError(f"low: expected Int8DynamicConfig, Int4WeightOnlyConfig, Int4DynamicConfig, Fp16Config or "
                             f"Bf16Config, got {type(self.low).__name__}")
        if self.rule not in ("top1", "entropy"):
            raise ValueError(f"rule: expected 'top1' or 'entropy', got {self.rule!r}")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) or not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold: expected a value in [0, 1], got {self.threshold!r}")

    @property
    def always_low(self) -> bool:
        """Every distribution counts as confident."""
        return self.threshold <= 0.0 if self.rule == "top1" else self.threshold >= 1.0

    def confident(self, logits) -> bool:
        """Whether next-token logits [B, V] are confident by the rule (every row of the batch)."""
        if self.always_low:
            return True
        logits = logits.float()
        lse = torch.logsumexp(logits, -1)
        if self.rule == "top1":  # p_max = exp(max - logsumexp): no [B, V] softmax
            return bool(((logits.max(-1).values - lse).exp() >= self.threshold).all())
        logp = logits - lse[:, None]
        entropy = -(logp.exp() * logp).sum(-1) / math.log(logits.shape[-1])
        return bool((entropy <= self.threshold).all())


def config_from_dict(d: dict) -> QuantConfig:
    """Any quantization config from its ``to_dict()`` (or YAML)."""
    return QuantConfig.from_dict(d)
