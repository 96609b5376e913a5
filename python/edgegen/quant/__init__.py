"""Quantization: exact affine quantize/dequantize/fake-quantize kernels (per tensor or per channel
on any axis), learnable fake quantization (LSQ)."""

from edgegen.quant.functional import (
    dequantize,
    fake_quantize,
    fake_quantize_learnable,
    quantize_per_channel,
    quantize_per_tensor,
)

__all__ = ["quantize_per_tensor", "quantize_per_channel", "dequantize", "fake_quantize", "fake_quantize_learnable"]
