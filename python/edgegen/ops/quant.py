"""Python side of the quantization ops: fake kernels, autograd, and thin wrappers over the ops
(the dispatcher picks the C++ CPU kernel or the PyTorch kernel registered for other devices in
:mod:`edgegen.ops._fallback_quant`)."""

from __future__ import annotations

import functools

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


# --- gradients of the INT8 / INT4 layers ----------------------------------------------------------
# A quantized layer is differentiable with respect to its input and its bias, so that what lies
# before it (embeddings, norms, adapters trained on a frozen quantized base) keeps learning. The
# weights are frozen codes: the input's gradient is taken through the dequantized weights, and
# through the activation quantization as the straight-through estimator has it (zero where a static
# activation range clamped the value, as fake_quantize_affine does). Scales get no gradient: asking
# for one is an error, not a silently missing gradient.


def _no_grad_for(ctx, op: str, **indices: int) -> None:
    for name, i in indices.items():
        if ctx.needs_input_grad[i]:
            raise RuntimeError(f"edgegen::{op}: {name}: the quantized layers are differentiable with respect to "
                               "their input and bias only (to learn the scales, train with QAT: quantize_(model, QATConfig()))")


def _static_pass(x: Tensor, a_scale: float, a_zero_point: int) -> Tensor | None:
    """Where a static 7-bit activation range did not clamp the input (None: dynamic, no clamping)."""
    if not a_scale > 0:
        return None
    q = torch.round(x.detach().to(torch.float32, copy=True) * (1.0 / torch.tensor(a_scale, dtype=torch.float32)))
    q = q + a_zero_point
    return (q >= 0) & (q <= 127)


def _int8_matrix(packed: Tensor, row_sum: Tensor, weight_scale: Tensor, n: int, k: int) -> Tensor:
    """The float32 [n, k] weight a packed INT8 weight stands for."""
    from edgegen.ops._fallback_quant import _unpacked

    return _unpacked(packed, row_sum, n, k, padding=False).float() * weight_scale.float()[:, None]


def _save(ctx, x: Tensor, bias: Tensor | None, static: tuple[float, int] | None, *tensors: Tensor) -> None:
    """Keep what backward needs. The input itself only for a static activation range (the clamp
    mask is computed in backward: nothing is added to the forward pass) and only when its gradient
    is wanted."""
    keep_x = static is not None and static[0] > 0 and ctx.needs_input_grad[0]
    ctx.save_for_backward(x if keep_x else None, *tensors)
    ctx.static_act = static if keep_x else None
    ctx.x_dtype, ctx.x_shape = x.dtype, x.shape
    ctx.bias_dtype = None if bias is None else bias.dtype


def _finish(ctx, grad_x: Tensor | None, x: Tensor | None, grad_out: Tensor, bias_index: int, channel_dim: int
            ) -> tuple:
    if grad_x is not None:
        mask = _static_pass(x, *ctx.static_act) if x is not None else None
        grad_x = (grad_x if mask is None else grad_x * mask).to(ctx.x_dtype)
    grad_b = None
    if ctx.bias_dtype is not None and ctx.needs_input_grad[bias_index]:
        g = grad_out.float().movedim(channel_dim, -1)
        grad_b = g.reshape(-1, g.shape[-1]).sum(0).to(ctx.bias_dtype)
    return grad_x, grad_b


def _linear_setup(ctx, inputs, output):
    static = len(inputs) == 9
    x = inputs[0]
    packed, row_sum, ws, bias, n, k = inputs[-6:]
    _save(ctx, x, bias, (inputs[1], inputs[2]) if static else None, packed, row_sum, ws)
    ctx.static, ctx.nk = static, (n, k)


def _linear_backward(ctx, grad_out):
    x, packed, row_sum, ws = ctx.saved_tensors
    off = 2 if ctx.static else 0
    op = "int8_linear_static" if ctx.static else "int8_linear_dynamic"
    _no_grad_for(ctx, op, weight_scale=3 + off)
    n, k = ctx.nk
    grad_x = grad_out.float() @ _int8_matrix(packed, row_sum, ws, n, k) if ctx.needs_input_grad[0] else None
    grad_x, grad_b = _finish(ctx, grad_x, x, grad_out, 4 + off, -1)
    rest = (None, None, None, grad_b, None, None)
    return (grad_x, None, None, *rest) if ctx.static else (grad_x, *rest)


def _int4_setup(ctx, inputs, output, op: str):
    x, packed, scale, zp, bias, group_size = inputs
    _save(ctx, x, bias, None, packed, scale, zp)
    ctx.group_size, ctx.op = group_size, op


def _int4_backward(ctx, grad_out):
    _, packed, scale, zp = ctx.saved_tensors
    _no_grad_for(ctx, ctx.op, scale=2, zero_point=3)
    grad_x = None
    if ctx.needs_input_grad[0]:
        grad_x = grad_out.float() @ torch.ops.edgegen.int4_dequantize(packed, scale, zp, ctx.group_size).float()
    grad_x, grad_b = _finish(ctx, grad_x, None, grad_out, 4, -1)
    return grad_x, None, None, None, grad_b, None


def _conv_setup(ctx, inputs, output):
    x, packed, row_sum, ws, bias, out_channels, kernel_size, stride, padding, dilation, a_scale, a_zp = inputs
    _save(ctx, x, bias, (a_scale, a_zp), packed, row_sum, ws)
    ctx.geometry = (out_channels, list(kernel_size), list(stride), list(padding), list(dilation))


def _conv_backward(ctx, grad_out):
    x, packed, row_sum, ws = ctx.saved_tensors
    _no_grad_for(ctx, "int8_conv2d", weight_scale=3)
    co, (kh, kw), stride, padding, dilation = ctx.geometry
    grad_x = None
    if ctx.needs_input_grad[0]:
        ci = ctx.x_shape[1]
        cp = (ci + 3) // 4 * 4  # the direct convolution's tap-major layout, channels padded to 4
        w = _int8_matrix(packed, row_sum, ws, co, kh * kw * cp).reshape(co, kh, kw, cp)[..., :ci].permute(0, 3, 1, 2)
        grad_x = torch.nn.grad.conv2d_input(list(ctx.x_shape), w, grad_out.float(), stride, padding, dilation)
    grad_x, grad_b = _finish(ctx, grad_x, x, grad_out, 4, 1)
    return (grad_x, None, None, None, grad_b) + (None,) * 7


def _conv_transpose_setup(ctx, inputs, output):
    x, packed, row_sums, ws, bias, out_channels, phase_info, stride, padding, output_size, a_scale, a_zp = inputs
    _save(ctx, x, bias, (a_scale, a_zp), ws, *packed, *row_sums)
    ctx.geometry = (out_channels, list(phase_info), list(stride), list(padding), len(packed))


def _conv_transpose_weight(ci: int, co: int, phase_info: list[int], stride: list[int], packed, row_sums,
                           ws: Tensor) -> Tensor:
    """The float32 [Cin, Cout, kh, kw] transposed-convolution weight that the output phases hold:
    phase (ry, rx) with ty x tx taps is the convolution whose window j reads tap ry + sy * (ty-1-j)."""
    sy, sx = stride
    phases = [phase_info[i:i + 4] for i in range(0, len(phase_info), 4)]
    kh = max(ry + sy * (ty - 1) for ry, _, ty, _ in phases) + 1
    kw = max(rx + sx * (tx - 1) for _, rx, _, tx in phases) + 1
    cp = (ci + 3) // 4 * 4
    w = torch.zeros(ci, co, kh, kw, device=ws.device)
    for (ry, rx, ty, tx), p, rs in zip(phases, packed, row_sums):
        sub = _int8_matrix(p, rs, ws, co, ty * tx * cp).reshape(co, ty, tx, cp)[..., :ci]
        rows = torch.tensor([ry + sy * (ty - 1 - j) for j in range(ty)], device=ws.device)
        cols = torch.tensor([rx + sx * (tx - 1 - j) for j in range(tx)], device=ws.device)
        w[:, :, rows[:, None], cols[None, :]] = sub.permute(3, 0, 1, 2)
    return w


def _conv_transpose_backward(ctx, grad_out):
    x, ws, *rest = ctx.saved_tensors
    _no_grad_for(ctx, "int8_conv_transpose2d", weight_scale=3)
    co, phase_info, stride, padding, phases = ctx.geometry
    grad_x = None
    if ctx.needs_input_grad[0]:
        ci, (h, w) = ctx.x_shape[1], ctx.x_shape[2:]
        weight = _conv_transpose_weight(ci, co, phase_info, stride, rest[:phases], rest[phases:], ws)
        # The adjoint of a transposed convolution is the convolution with the same weight; rows and
        # columns past the input's size come only from output_padding and carry no input.
        grad_x = torch.nn.functional.conv2d(grad_out.float(), weight, stride=stride, padding=padding)[..., :h, :w]
    grad_x, grad_b = _finish(ctx, grad_x, x, grad_out, 4, 1)
    return (grad_x, [None] * phases, [None] * phases, None, grad_b) + (None,) * 7


for _op in ("int8_linear_static", "int8_linear_dynamic"):
    torch.library.register_autograd(f"edgegen::{_op}", _linear_backward, setup_context=_linear_setup)
for _op in ("int4_linear", "int4_linear_dynamic"):
    torch.library.register_autograd(f"edgegen::{_op}", _int4_backward,
                                    setup_context=functools.partial(_int4_setup, op=_op))
torch.library.register_autograd("edgegen::int8_conv2d", _conv_backward, setup_context=_conv_setup)
torch.library.register_autograd("edgegen::int8_conv_transpose2d", _conv_transpose_backward,
                                setup_context=_conv_transpose_setup)
