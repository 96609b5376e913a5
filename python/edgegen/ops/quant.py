"""Python side of the quantization ops: fake kernels, autograd, and thin wrappers over the ops
(the dispatcher picks the C++ CPU kernel or the PyTorch kernel registered for other devices in
:mod:`edgegen.ops._fallback_quant`)."""

from __future__ import annotations

import torch
from torch import Tensor

from edgegen.ops._fake import register_fake


@register_fake("edgegen::mse_clip_range")
def _(input, lo, hi, quant_min, quant_max, steps):
    raise RuntimeError("edgegen::mse_clip_range: input: the clipping range depends on the values, so it cannot be "
                       "computed from meta or fake tensors (run the observer on real data)")


@register_fake("edgegen::quantize_affine")
def _(input, scale, zero_point, axis, quant_min, quant_max, dtype):
    return torch.empty(input.shape, dtype=dtype, device=input.device)


@register_fake("edgegen::dequantize_affine")
def _(input, scale, zero_point, axis, out_dtype):
    return torch.empty(input.shape, dtype=out_dtype, device=input.device)


@register_fake("edgegen::fake_quantize_affine")
def _(input, scale, zero_point, axis, quant_min, quant_max):
    return torch.empty_like(input, memory_format=torch.contiguous_format), \
        torch.empty(input.shape, dtype=torch.bool, device=input.device)


@register_fake("edgegen::fake_quantize_learnable_backward")
def _(grad, input, scale, zero_point, axis, quant_min, quant_max, grad_factor):
    c = 1 if axis is None else input.shape[axis]
    return (torch.empty_like(input, memory_format=torch.contiguous_format),
            input.new_empty((c,), dtype=torch.float32), input.new_empty((c,), dtype=torch.float32))


def _fq_setup(ctx, inputs, output):
    ctx.save_for_backward(output[1])


def _fq_backward(ctx, grad_out, grad_mask):
    (mask,) = ctx.saved_tensors
    return grad_out * mask, None, None, None, None, None


# Straight-through estimator: the gradient passes where the value was not clamped.
torch.library.register_autograd("edgegen::fake_quantize_affine", _fq_backward, setup_context=_fq_setup)


def quantize_affine(x, scale, zero_point, axis, quant_min, quant_max, dtype):
    return torch.ops.edgegen.quantize_affine(x.detach(), scale, zero_point, axis, quant_min, quant_max, dtype)


def dequantize_affine(q, scale, zero_point, axis, out_dtype):
    return torch.ops.edgegen.dequantize_affine(q, scale, zero_point, axis, out_dtype)


def fake_quantize_affine(x, scale, zero_point, axis, quant_min, quant_max):
    """Straight-through gradient (the op's registered autograd): x's gradient where not clamped."""
    return torch.ops.edgegen.fake_quantize_affine(x, scale, zero_point, axis, quant_min, quant_max)[0]


class _LearnableFakeQuantize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, zero_point, axis, quant_min, quant_max, grad_factor):
        zp = zero_point.detach().round().clamp(quant_min, quant_max).to(torch.int32)
        ctx.save_for_backward(x, scale, zp)
        ctx.args = (axis, quant_min, quant_max, grad_factor, scale.dtype, zero_point.dtype)
        return fake_quantize_affine(x.detach(), scale.detach(), zp, axis, quant_min, quant_max)

    @staticmethod
    def backward(ctx, grad):
        x, scale, zp = ctx.saved_tensors
        axis, qmin, qmax, gf, sdt, zdt = ctx.args
        dx, ds, dz = torch.ops.edgegen.fake_quantize_learnable_backward(
            grad.contiguous(), x.detach(), scale.detach(), zp, axis, qmin, qmax, gf)
        return dx, ds.to(sdt).view(scale.shape), dz.to(zdt).view(ctx.saved_tensors[2].shape), None, None, None, None


def fake_quantize_learnable(x, scale, zero_point, axis, quant_min, quant_max, grad_factor=1.0):
    return _LearnableFakeQuantize.apply(x, scale, zero_point, axis, quant_min, quant_max, grad_factor)


# --- INT8 GEMM -----------------------------------------------------------------------------------

_PANEL = 16


@register_fake("edgegen::int8_pack_weight")
def _(weight):
    n, k = weight.shape
    kp = (k + 3) // 4 * 4
    return (weight.new_empty(((n + _PANEL - 1) // _PANEL, kp // 4, _PANEL, 4), dtype=torch.int8),
            weight.new_empty((n,), dtype=torch.int32))


@register_fake("edgegen::int8_gemm")
def _(input, a_zero_point, packed_weight, weight_row_sum, n, k):
    return input.new_empty((input.shape[0], n), dtype=torch.int32)


@register_fake("edgegen::int8_linear_dynamic")
def _(input, packed_weight, weight_row_sum, weight_scale, bias, n, k):
    return input.new_empty((*input.shape[:-1], n))


def int8_pack_weight(weight: Tensor) -> tuple[Tensor, Tensor]:
    return torch.ops.edgegen.int8_pack_weight(weight)


@register_fake("edgegen::int8_linear_static")
def _(input, a_scale, a_zero_point, packed_weight, weight_row_sum, weight_scale, bias, n, k):
    return input.new_empty((*input.shape[:-1], n))


def int8_linear_static(x: Tensor, a_scale: float, a_zero_point: int, packed: Tensor, row_sum: Tensor,
                       weight_scale: Tensor, bias: Tensor | None, n: int, k: int) -> Tensor:
    return torch.ops.edgegen.int8_linear_static(x, a_scale, a_zero_point, packed, row_sum, weight_scale, bias, n, k)


def int8_linear_dynamic(x: Tensor, packed: Tensor, row_sum: Tensor, weight_scale: Tensor, bias: Tensor | None,
                        n: int, k: int) -> Tensor:
    return torch.ops.edgegen.int8_linear_dynamic(x, packed, row_sum, weight_scale, bias, n, k)


# --- INT4 weight-only ----------------------------------------------------------------------------


@register_fake("edgegen::int4_pack")
def _(weight):
    return weight.new_empty((weight.shape[0], weight.shape[1] // 2), dtype=torch.uint8)


@register_fake("edgegen::int4_dequantize")
def _(packed_weight, scale, zero_point, group_size):
    return scale.new_empty((packed_weight.shape[0], packed_weight.shape[1] * 2), dtype=torch.float32)


@register_fake("edgegen::int4_linear")
def _(input, packed_weight, scale, zero_point, bias, group_size):
    return input.new_empty((*input.shape[:-1], packed_weight.shape[0]))


@register_fake("edgegen::int4_linear_dynamic")
def _(input, packed_weight, scale, zero_point, bias, group_size):
    return input.new_empty((*input.shape[:-1], packed_weight.shape[0]))


def int4_pack(q: Tensor) -> Tensor:
    return torch.ops.edgegen.int4_pack(q)


def int4_linear(x: Tensor, packed: Tensor, scale: Tensor, zero_point: Tensor, bias: Tensor | None,
                group_size: int) -> Tensor:
    return torch.ops.edgegen.int4_linear(x, packed, scale, zero_point, bias, group_size)


def int4_linear_dynamic(x: Tensor, packed: Tensor, scale: Tensor, zero_point: Tensor, bias: Tensor | None,
                        group_size: int) -> Tensor:
    return torch.ops.edgegen.int4_linear_dynamic(x, packed, scale, zero_point, bias, group_size)


@register_fake("edgegen::observe_minmax")
def _(input, axis):
    c = 1 if axis is None else input.shape[axis]
    return input.new_empty((c,), dtype=torch.float32), input.new_empty((c,), dtype=torch.float32)


@register_fake("edgegen::observe_histogram")
def _(input, bins, lo, hi):
    return input.new_empty((bins,), dtype=torch.int64)


@register_fake("edgegen::int8_conv2d")
def _(input, packed_weight, weight_row_sum, weight_scale, bias, out_channels, kernel_size, stride, padding, dilation,
      a_scale, a_zero_point):
    b, _, h, w = input.shape
    ho = (h + 2 * padding[0] - dilation[0] * (kernel_size[0] - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kernel_size[1] - 1) - 1) // stride[1] + 1
    return input.new_empty((b, out_channels, ho, wo))


@register_fake("edgegen::int8_conv_transpose2d")
def _(input, packed_weights, weight_row_sums, weight_scale, bias, out_channels, phase_info, stride, padding,
      output_size, a_scale, a_zero_point):
    return input.new_empty((input.shape[0], out_channels, output_size[0], output_size[1]))
