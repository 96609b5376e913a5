"""Quantization configs (dataclasses that round-trip through dicts)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


class _Config:
    def to_dict(self) -> dict:
        return {"kind": type(self).__name__, **asdict(self)}


@dataclass
class Int8DynamicConfig(_Config):
    """Linear layers -> :class:`Int8Linear`: int8 weights (symmetric, per output feature),
    activations quantized per call (per tensor, 7-bit)."""


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


def config_from_dict(d: dict):
    d = dict(d)
    kind = d.pop("kind", None)
    if kind not in CONFIGS:
        raise ValueError(f"kind: expected one of {sorted(CONFIGS)}, got {kind!r}")
    return CONFIGS[kind](**d)
