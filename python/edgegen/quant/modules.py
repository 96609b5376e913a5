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
