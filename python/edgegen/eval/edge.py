"""Projection of a measured profile onto an edge device by a roofline: latency is the larger of
the compute time (FLOPs / peak at the precision) and the memory time (bytes / bandwidth), divided
by an efficiency factor; energy is that latency times the device's typical power.

Device figures are data (``devices.yaml`` beside this file), each with its source and whether it is
a vendor specification, derived from one, or an assumption. Every projection is labelled
"projected": it is an estimate from public figures and stated assumptions (the label names which
kinds of figure it used, the efficiency's included), not a measurement on the device.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

__all__ = ["DeviceProfile", "Projection", "device_profiles", "project", "PRECISIONS"]

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Figure:
    value: float
    kind: str
    source: str


@dataclass(frozen=True)
class DeviceProfile:
    """An edge device's sourced figures (each a value, its kind -- spec, derived or assumption --
    and its source): peak GFLOP/s per precision, memory bandwidth, power and efficiency, from
    ``devices.yaml``."""

    key: str
    name: str
    peak_gflops: dict  # precision -> Figure
    memory_gbps: Figure
    power_w: Figure
    efficiency: Figure


def _figure(raw, where: str) -> Figure:
    try:
        value, kind, source = float(raw["value"]), str(raw["kind"]), str(raw["source"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{where}: expected value, kind and source") from None
    if kind not in ("spec", "derived", "assumption") or not (math.isfinite(value) and value > 0) or not source:
        raise ValueError(f"{where}: expected a positive value, kind spec/derived/assumption and a source")
    return Figure(value, kind, source)


@lru_cache(maxsize=None)
def _load(path: str) -> dict[str, DeviceProfile]:
    import yaml

    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    out = {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of device keys to profiles")
    for key, d in raw.items():
        try:
            peaks = {p: _figure(d["peak_gflops"][p], f"{path}: {key}.peak_gflops.{p}") for p in PRECISIONS}
            out[key] = DeviceProfile(key, str(d["name"]), peaks,
                                     *(_figure(d[f], f"{path}: {key}.{f}")
                                       for f in ("memory_gbps", "power_w", "efficiency")))
            if out[key].efficiency.value > 1:
                raise ValueError(f"{path}: {key}.efficiency: expected a fraction of the roofline in (0, 1], got "
                                 f"{out[key].efficiency.value}")
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path}: device {key!r} lacks {exc} (expected name, peak_gflops for "
                             f"{PRECISIONS}, memory_gbps, power_w, efficiency)") from None
    return out


def device_profiles(path: str | Path | None = None) -> dict[str, DeviceProfile]:
    """The device profiles shipped with edgegen (or read from ``path``), by key."""
    return _load(str(path or Path(__file__).with_name("devices.yaml")))


@dataclass
class Projection:
    """A roofline projection; every field is an estimate (``label`` says so)."""

    device: str
    precision: str
    latency_ms_projected: float
    compute_ms_projected: float
    memory_ms_projected: float
    bound: str  # "compute" or "memory"
    energy_j_projected: float
    efficiency: float
    label: str

    def as_dict(self, prefix: str = "") -> dict:
        return {prefix + k: v for k, v in asdict(self).items()}


def _infer_precision(record) -> tuple[str, str, bool]:
    """(precision to project at, what it rests on, whether that is an assumption) from the
    record's ``compute_precision`` (set by :func:`~edgegen.eval.profile` from the layer types; a
    record without one is assumed fp32). The device figures have no bf16 rate: bf16 layers are
    projected at the fp16 rate, an assumption the label states."""
    found = getattr(record, "compute_precision", None)
    if found is None:
        return "fp32", "fp32 assumed: the record states no compute precision", True
    basis = f"inferred from the model's layers: {getattr(record, 'compute_precision_basis', '') or found}"
    if found == "bf16":
        return "fp16", f"fp16 {basis}; bf16 assumed to run at the device's fp16 rate (no bf16 figure)", True
    if found not in PRECISIONS:
        raise ValueError(f"record: expected compute_precision one of {PRECISIONS + ('bf16',)}, got {found!r}")
    return found, f"{found} {basis}", False


def project(record, device: str, precision: str | None = None, efficiency: float | None = None,
            bytes_moved: int | None = None) -> Projection:
    """Project ``record`` (a :class:`~edgegen.eval.ProfileRecord`: its ``flops`` per call and
    ``bytes_on_disk``) onto ``device`` (a key of :func:`device_profiles`: rpi4, jetson-nano, pixel6).

    ``precision``: fp32, fp16 or int8 (default: the record's ``compute_precision``, inferred from
    the layer types: int8 for INT8 and INT4 W4A8 layers, fp32 for INT4 weight-only layers, whose
    arithmetic is float, fp16 for fp16 layers and, an assumption stated in the label, for bf16
    ones; fp32 without quantized layers, and, assumed, for a record without a compute precision).
    The label says what the precision rests on.
    ``bytes_moved``: memory traffic per call (default: the model's bytes on disk, i.e. every weight
    read once; activations not counted, so memory-bound layers are projected optimistically).
    ``efficiency``: the fraction of the roofline reached (default: the device profile's stated one).
    """
    profiles = device_profiles()
    if device not in profiles:
        raise ValueError(f"device: expected one of {sorted(profiles)}, got {device!r}")
    dev = profiles[device]
    if precision is None:
        precision, basis, assumed = _infer_precision(record)
    else:
        basis, assumed = f"{precision} given by the caller", False
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    flops = getattr(record, "flops", None)
    if not isinstance(flops, int) or flops < 0:
        raise ValueError(f"record: expected a profile record with integer flops >= 0, got {flops!r}")
    if bytes_moved is None:
        moved = getattr(record, "bytes_on_disk", None)
        if not isinstance(moved, int) or moved < 0:
            raise ValueError(f"record: expected a profile record with integer bytes_on_disk >= 0 (or bytes_moved "
                             f"given), got {moved!r}")
    else:
        moved = bytes_moved
        if not isinstance(moved, int) or moved < 0:
            raise ValueError(f"bytes_moved: expected an int >= 0, got {moved!r}")
    eff = dev.efficiency.value if efficiency is None else efficiency
    if not (isinstance(eff, (int, float)) and 0 < eff <= 1):
        raise ValueError(f"efficiency: expected a value in (0, 1], got {efficiency!r}")
    compute_ms = flops / (dev.peak_gflops[precision].value * 1e9 * eff) * 1e3
    memory_ms = moved / (dev.memory_gbps.value * 1e9 * eff) * 1e3
    latency = max(compute_ms, memory_ms)
    energy = latency * 1e-3 * dev.power_w.value
    figures = [dev.peak_gflops[precision], dev.memory_gbps, dev.power_w]
    if efficiency is None:  # the device profile's efficiency is a figure too (an assumption, so far)
        figures.append(dev.efficiency)
    kinds = sorted({f.kind for f in figures} | ({"assumption"} if assumed else set()))
    eff_kind = dev.efficiency.kind if efficiency is None else "given by the caller"
    label = (f"projected for {dev.name} ({basis}): roofline at {eff:g} of peak (efficiency: {eff_kind}) from "
             f"sourced figures ({', '.join(kinds)}); not measured on the device")
    return Projection(device, precision, latency, compute_ms, memory_ms,
                      "compute" if compute_ms >= memory_ms else "memory", energy, float(eff), label)
