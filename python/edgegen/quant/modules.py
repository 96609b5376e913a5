"""Quantized modules that run edgegen's integer kernels."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edgegen.ops import quant as ops
from edgegen.quant.functional import quantize_per_channel


def symmetric_weight_scales(w: Tensor, qmax: int = 127) -> Tensor:
    """Per-output-row scales max|w| / qmax (float32); an all-zero row gets scale 1."""
    amax = w.detach().abs().amax(dim=tuple(range(1, w.dim()))).to(torch.float32)
    return torch.where(amax > 0, amax / qmax, torch.ones_like(amax))


class Int8Linear(nn.Module):
    """Linear with int8 weights (symmetric per output feature, range [-127, 127]) and dynamically
    quantized activations (per tensor, per call, 7-bit unsigned: exact on AVX2 without VNNI,
    like PyTorch's x86 reduce_range). The weights are packed once for the GEMM kernel; the state
    dict holds the plain int8 weights and scales, and the packing is rebuilt on load."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=torch.float32))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.register_buffer("packed_weight", torch.empty(0, dtype=torch.int8), persistent=False)
        self.register_buffer("weight_row_sum", torch.empty(0, dtype=torch.int32), persistent=False)
        self.repack()

    @classmethod
    @torch.no_grad()
    def from_float(cls, linear: nn.Linear) -> "Int8Linear":
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear: expected an nn.Linear, got {type(linear).__name__}")
        w = linear.weight.detach().float().cpu()
        q = cls(linear.in_features, linear.out_features, bias=linear.bias is not None)
        scales = symmetric_weight_scales(w)
        q.weight_int8.copy_(quantize_per_channel(w, scales, torch.zeros(len(scales), dtype=torch.int64), 0,
                                                 torch.int8, -127, 127))
        q.weight_scale.copy_(scales)
        if linear.bias is not None:
            q.bias.copy_(linear.bias.detach().float())
        q.repack()
        return q

    def repack(self) -> None:
        if self.weight_int8.device.type == "cpu":
            self.packed_weight, self.weight_row_sum = ops.int8_pack_weight(self.weight_int8)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.repack()

    def dequantized_weight(self) -> Tensor:
        return self.weight_int8.float() * self.weight_scale[:, None]

    def forward(self, x: Tensor) -> Tensor:
        return ops.int8_linear_dynamic(x, self.weight_int8, self.packed_weight if self.packed_weight.numel() else None,
                                       self.weight_row_sum, self.weight_scale, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Int4Linear(nn.Module):
    """Linear with 4-bit weights (asymmetric, one float32 scale and one 4-bit zero point per
    ``group_size`` input features, two weights per byte) and floating-point activations; the
    weights are dequantised inside the dot products (small batches) or block by block (large).
    ``in_features`` must be a multiple of 64 and of ``group_size``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, group_size: int = 64):
        super().__init__()
        if group_size not in (32, 64, 128):
            raise ValueError(f"group_size: expected 32, 64 or 128, got {group_size!r}")
        if in_features % 64 or in_features % group_size:
            raise ValueError(f"in_features: {in_features} must be a multiple of 64 and of group_size {group_size}")
        self.in_features, self.out_features, self.group_size = int(in_features), int(out_features), int(group_size)
        groups = in_features // group_size
        self.register_buffer("packed_weight", torch.zeros(out_features, in_features // 2, dtype=torch.uint8))
        self.register_buffer("scale", torch.ones(out_features, groups, dtype=torch.float32))
        self.register_buffer("zero_point", torch.zeros(out_features, groups, dtype=torch.uint8))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    @torch.no_grad()
    def from_float(cls, linear: nn.Linear, group_size: int = 64) -> "Int4Linear":
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear: expected an nn.Linear, got {type(linear).__name__}")
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, group_size)
        n, k = linear.out_features, linear.in_features
        w = linear.weight.detach().float().cpu().reshape(n * (k // group_size), group_size)
        lo, hi = w.amin(dim=1), w.amax(dim=1)
        scale = torch.where(hi > lo, (hi - lo) / 15.0, torch.ones_like(hi))
        zero = torch.round(-lo / scale).clamp(0, 15).to(torch.int64)
        codes = quantize_per_channel(w, scale, zero, 0, torch.uint8, 0, 15).reshape(n, k)
        q.packed_weight.copy_(ops.int4_pack(codes))
        q.scale.copy_(scale.reshape(n, -1))
        q.zero_point.copy_(zero.reshape(n, -1).to(torch.uint8))
        if linear.bias is not None:
            q.bias.copy_(linear.bias.detach().float())
        return q

    def dequantized_weight(self) -> Tensor:
        from edgegen.ops._reference import int4_dequantize_reference

        return int4_dequantize_reference(self.packed_weight, self.scale, self.zero_point, self.group_size)

    def forward(self, x: Tensor) -> Tensor:
        return ops.int4_linear(x, self.packed_weight, self.scale, self.zero_point, self.bias, self.group_size)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"group_size={self.group_size}")
