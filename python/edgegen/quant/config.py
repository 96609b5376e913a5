"""Quantization configs (dataclasses that round-trip through dicts)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


class _Config:
    def to_dict(self) -> dict:
        return {"kind": type(self).__name__, **asdict(self)}


@dataclass
class Int8DynamicConfig(_Config):
    """Linear and (groups=1) convolution layers -> integer modules: int8 weights (symmetric, per
    output feature), activations quantized per call (per tensor, 7-bit). With ``embeddings``,
    embedding tables are stored as int8 rows too (a tied output head then shares them)."""

    embeddings: bool = True


@dataclass
class Int8StaticConfig(_Config):
    """Linear and (groups=1) convolution layers -> integer modules with calibrated activation
    parameters: observers on every selected layer's input record ``batches`` batches of
    ``calibration`` (an iterable of model inputs: a tensor, or a tuple of positional arguments),
    then activations are quantized with the resulting fixed (scale, zero point) to [0, 127].
    ``observer``: 'minmax', 'moving_average', 'percentile' or 'mse'. ``calibration`` is not
    serialised."""

    calibration: object = None
    batches: int = 8
    observer: str = "minmax"

    def __post_init__(self):
        if self.calibration is None:
            raise ValueError("calibration: Int8StaticConfig needs an iterable of calibration inputs")
        if isinstance(self.batches, bool) or not isinstance(self.batches, int) or self.batches < 1:
            raise ValueError(f"batches: expected a positive int, got {self.batches!r}")
        if self.observer not in ("minmax", "moving_average", "percentile", "mse"):
            raise ValueError(f"observer: expected 'minmax', 'moving_average', 'percentile' or 'mse', got "
                             f"{self.observer!r}")

    def to_dict(self) -> dict:
        return {"kind": "Int8StaticConfig", "batches": self.batches, "observer": self.observer}


@dataclass
class Int4WeightOnlyConfig(_Config):
    """Linear layers -> :class:`Int4Linear`: 4-bit weights, two per byte, one scale and zero point
    per ``group_size`` consecutive input features; activations stay floating point."""

    group_size: int = 64

    def __post_init__(self):
        if self.group_size not in (32, 64, 128):
            raise ValueError(f"group_size: expected 32, 64 or 128, got {self.group_size!r}")


@dataclass
class Fp16Config(_Config):
    """Selected layers store and compute in float16 (inputs cast in, outputs cast back)."""


@dataclass
class Bf16Config(_Config):
    """Selected layers store and compute in bfloat16 (inputs cast in, outputs cast back)."""


CONFIGS = {c.__name__: c for c in (Int8DynamicConfig, Int4WeightOnlyConfig, Fp16Config, Bf16Config)}
# Int8StaticConfig is not rebuilt from a dict: its calibration data is not serialisable.


def config_from_dict(d: dict):
    d = dict(d)
    kind = d.pop("kind", None)
    if kind not in CONFIGS:
        raise ValueError(f"kind: expected one of {sorted(CONFIGS)}, got {kind!r}")
    return CONFIGS[kind](**d)
