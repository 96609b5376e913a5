"""Affine quantization as functions on tensors (integer tensors in, integer tensors out).

q = clamp(round_half_even(x * (1.0f / scale)) + zero_point, quant_min, quant_max); the inverse
scale is taken in float32 and the zero point is added after rounding, as in
torch.fake_quantize_per_*_affine. (torch.quantize_per_tensor's vectorised CPU path adds the zero
point before rounding, which differs on exact half-way values when the zero point is odd: see
docs/quant.md.) x_hat = (q - zero_point) * scale.
"""

from __future__ import annotations

import torch
from torch import Tensor

from edgegen.ops import quant as ops
from edgegen.ops._args import as_int

_RANGES = {torch.int8: (-128, 127), torch.uint8: (0, 255)}


def _range(dtype: torch.dtype, quant_min: int | None, quant_max: int | None) -> tuple[int, int]:
    if dtype not in _RANGES:
        raise TypeError(f"dtype: expected torch.int8 or torch.uint8, got {dtype}")
    lo, hi = _RANGES[dtype]
    qmin = lo if quant_min is None else as_int(quant_min, "quant_min")
    qmax = hi if quant_max is None else as_int(quant_max, "quant_max")
    return qmin, qmax


def _as_tensor(v, dtype: torch.dtype, name: str, like=None) -> Tensor:
    """A number as a [1] tensor on the device of ``like`` (the data it quantizes); tensors pass."""
    if isinstance(v, Tensor):
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name}: expected a number or a tensor, got {type(v).__name__}")
    if not dtype.is_floating_point:
        v = as_int(v, name)  # a zero point of 1.5 is an error, never truncated to 1
    return torch.tensor([v], dtype=dtype, device=like.device if isinstance(like, Tensor) else None)


def quantize_per_tensor(x: Tensor, scale, zero_point, dtype: torch.dtype = torch.int8,
                        quant_min: int | None = None, quant_max: int | None = None) -> Tensor:
    """int8/uint8 tensor of quantized values. ``quant_min``/``quant_max`` default to the dtype's
    full range; pass -127 for the restricted symmetric convention."""
    qmin, qmax = _range(dtype, quant_min, quant_max)
    return ops.quantize_affine(x, _as_tensor(scale, torch.float64, "scale", x),
                               _as_tensor(zero_point, torch.int64, "zero_point", x), None, qmin, qmax, dtype)


def quantize_per_channel(x: Tensor, scales: Tensor, zero_points: Tensor, axis: int, dtype: torch.dtype = torch.int8,
                         quant_min: int | None = None, quant_max: int | None = None) -> Tensor:
    """Per-channel along ``axis`` (ConvTranspose2d weights: axis 1)."""
    qmin, qmax = _range(dtype, quant_min, quant_max)
    axis = as_int(axis, "axis")
    if isinstance(x, Tensor) and isinstance(scales, Tensor) and -x.dim() <= axis < x.dim() \
            and scales.numel() != x.shape[axis]:
        raise ValueError(f"scales: expected {x.shape[axis]} values (one per channel along axis {axis}), got shape "
                         f"{list(scales.shape)}")
    return ops.quantize_affine(x, scales, zero_points, axis, qmin, qmax, dtype)


def dequantize(q: Tensor, scale, zero_point, axis: int | None = None, out_dtype: torch.dtype = torch.float32) -> Tensor:
    """(q - zero_point) * scale, per tensor (axis None) or per channel along ``axis``."""
    return ops.dequantize_affine(q, _as_tensor(scale, torch.float64, "scale", q),
                                 _as_tensor(zero_point, torch.int64, "zero_point", q), axis, out_dtype)


def fake_quantize(x: Tensor, scale, zero_point, quant_min: int, quant_max: int, axis: int | None = None) -> Tensor:
    """Quantize-dequantize in x's dtype with the straight-through gradient (1 inside
    [quant_min, quant_max] before clamping, 0 outside)."""
    return ops.fake_quantize_affine(x, _as_tensor(scale, torch.float32, "scale", x),
                                    _as_tensor(zero_point, torch.int32, "zero_point", x),
                                    None if axis is None else as_int(axis, "axis"), as_int(quant_min, "quant_min"),
                                    as_int(quant_max, "quant_max"))


def fake_quantize_learnable(x: Tensor, scale: Tensor, zero_point: Tensor, quant_min: int, quant_max: int,
                            axis: int | None = None, grad_factor: float = 1.0) -> Tensor:
    """Fake quantization with learnable scale and zero point (LSQ, Esser et al. 2020; the
    gradients of torch._fake_quantize_learnable_per_*_affine). ``grad_factor`` scales the scale
    and zero-point gradients (LSQ uses 1 / sqrt(numel * quant_max)). The zero point is rounded
    and clamped to [quant_min, quant_max] in the forward pass."""
    if not isinstance(scale, Tensor) or not isinstance(zero_point, Tensor):
        raise TypeError("scale, zero_point: expected tensors (they are learned)")
    return ops.fake_quantize_learnable(x, scale, zero_point, None if axis is None else as_int(axis, "axis"),
                                       as_int(quant_min, "quant_min"), as_int(quant_max, "quant_max"),
                                       float(grad_factor))
