"""Quantized layers pass gradients to their input (straight-through activation quantization,
dequantized weights) and to their bias: layers in front of a quantized one keep training. The
reference is float autograd through the same dequantized weights; scales get no gradient and
asking for one is an error."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgegen.quant.modules import Int4Linear, Int8Conv2d, Int8ConvTranspose2d, Int8Linear


def _deq(w: torch.Tensor, scale: torch.Tensor, axis: int) -> torch.Tensor:
    shape = [1] * w.dim()
    shape[axis] = -1
    s = scale.reshape(shape)
    return torch.round(w / s).clamp(-127, 127) * s


def _static_mask(x, scale, zp):
    q = torch.round(x.detach() * (1.0 / torch.tensor(scale))) + zp
    return ((q >= 0) & (q <= 127)).float()


def _check_grad(layer, reference, x, *, mask=None):
    """x.grad through ``layer`` equals the gradient of ``reference`` (float autograd), masked where
    a static activation range clamped."""
    x = x.detach().clone().requires_grad_()
    y = layer(x)
    g = torch.randn_like(y)
    y.backward(g)
    xr = x.detach().clone().requires_grad_()
    reference(xr).backward(g)
    expected = xr.grad if mask is None else xr.grad * mask
    assert x.grad is not None and x.grad.dtype == x.dtype
    torch.testing.assert_close(x.grad, expected, rtol=1e-5, atol=1e-5)


STATIC = (0.02, 60)  # a static 7-bit range [-1.2, 1.34]: inputs of scale 1 are often clamped


@pytest.mark.parametrize("act", [None, STATIC], ids=["dynamic", "static"])
def test_int8_linear(act):
    torch.manual_seed(0)
    lin = nn.Linear(13, 7)  # k not a multiple of 4, n not of the 16-row panel
    q = Int8Linear.from_float(lin, act)
    x = torch.randn(3, 5, 13)
    w = _deq(lin.weight.detach(), q.weight_scale, 0)
    _check_grad(q, lambda t: F.linear(t, w, lin.bias), x, mask=None if act is None else _static_mask(x, *act))


@pytest.mark.parametrize("activations", ["float", "int8"])
def test_int4_linear(activations):
    torch.manual_seed(1)
    lin = nn.Linear(64, 9)
    q = Int4Linear.from_float(lin, group_size=32, activations=activations)
    _check_grad(q, lambda t: F.linear(t, q.dequantized_weight(), lin.bias), torch.randn(4, 64))


@pytest.mark.parametrize("act", [None, STATIC], ids=["dynamic", "static"])
def test_int8_conv2d(act):
    torch.manual_seed(2)
    conv = nn.Conv2d(5, 6, 3, stride=2, padding=1, dilation=2)
    q = Int8Conv2d.from_float(conv, act)
    x = torch.randn(2, 5, 9, 8)
    w = _deq(conv.weight.detach(), q.gemm.weight_scale, 0)
    _check_grad(q, lambda t: F.conv2d(t, w, conv.bias, 2, 1, 2), x,
                mask=None if act is None else _static_mask(x, *act))


@pytest.mark.parametrize("dilation, act", [(1, None), (1, STATIC), (2, None)],
                         ids=["phases", "phases-static", "dilated-gemm"])
def test_int8_conv_transpose2d(dilation, act):
    torch.manual_seed(3)
    # 5 kernel taps at stride 2: output phases with 3 and 2 taps; output_padding adds a row and a
    # column that no input reaches.
    ct = nn.ConvTranspose2d(5, 3, 5, stride=2, padding=1, output_padding=1, dilation=dilation)
    q = Int8ConvTranspose2d.from_float(ct, act)
    x = torch.randn(2, 5, 6, 7)
    w = ct.weight.detach()
    wd = _deq(w, w.abs().amax(dim=(0, 2, 3)) / 127, 1)
    _check_grad(q, lambda t: F.conv_transpose2d(t, wd, ct.bias, 2, 1, 1, 1, dilation), x,
                mask=None if act is None else _static_mask(x, *act))


def test_bf16_input_gets_a_bf16_gradient():
    q = Int8Linear.from_float(nn.Linear(16, 8))
    x = torch.randn(4, 16, dtype=torch.bfloat16, requires_grad=True)
    q(x).float().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and bool(x.grad.abs().sum() > 0)


def test_bias_gradient_and_an_embedding_in_front_learns():
    torch.manual_seed(4)
    q = Int8Linear.from_float(nn.Linear(8, 5))
    bias = q.bias.detach().clone().requires_grad_()
    x = torch.randn(3, 4, 8, requires_grad=True)
    y = torch.ops.edgegen.int8_linear_dynamic(x, q.packed_weight, q.weight_row_sum, q.weight_scale, bias, 5, 8)
    g = torch.randn_like(y)
    y.backward(g)
    torch.testing.assert_close(bias.grad, g.sum(dim=(0, 1)))
    emb = nn.Embedding(10, 8)
    model = nn.Sequential(emb, q)
    model(torch.tensor([[1, 2, 3]])).sum().backward()
    assert emb.weight.grad is not None and bool(emb.weight.grad[1:4].abs().sum() > 0)


def test_scales_are_not_differentiated():
    q = Int8Linear.from_float(nn.Linear(8, 5))
    ws = q.weight_scale.detach().clone().requires_grad_()
    y = torch.ops.edgegen.int8_linear_dynamic(torch.randn(2, 8), q.packed_weight, q.weight_row_sum, ws, q.bias, 5, 8)
    with pytest.raises(RuntimeError, match="weight_scale: the quantized layers are differentiable with respect to "
                                           "their input and bias only"):
        y.sum().backward()
    q4 = Int4Linear.from_float(nn.Linear(64, 4), group_size=64)
    scale = q4.scale.detach().clone().requires_grad_()
    y = torch.ops.edgegen.int4_linear(torch.randn(2, 64), q4.packed_weight, scale, q4.zero_point, None, 64)
    with pytest.raises(RuntimeError, match="int4_linear: scale:"):
        y.sum().backward()


def _conv_args():
    q = Int8Conv2d.from_float(nn.Conv2d(3, 4, 3, padding=1), STATIC)
    g = q.gemm
    return (torch.randn(2, 3, 5, 5, requires_grad=True), g.packed_weight, g.weight_row_sum, g.weight_scale,
            torch.randn(4, requires_grad=True), 4, [3, 3], [1, 1], [1, 1], [1, 1], *STATIC)


def _linear_args():
    q = Int8Linear.from_float(nn.Linear(9, 20))
    return (torch.randn(3, 9, requires_grad=True), 0.05, 3, q.packed_weight, q.weight_row_sum, q.weight_scale,
            torch.randn(20, requires_grad=True), 20, 9)


OPCHECK = [(torch.ops.edgegen.int8_conv2d, _conv_args), (torch.ops.edgegen.int8_linear_static, _linear_args)]


@pytest.mark.parametrize("op,make", OPCHECK, ids=["int8_conv2d", "int8_linear_static"])
def test_opcheck_with_gradients(op, make):
    torch.manual_seed(5)
    torch.library.opcheck(op, make())


def test_one_dimensional_input_and_op_names():
    """A single vector through a quantized linear layer gets its input and bias gradients; the
    scale refusal names the op that was called."""
    q = Int4Linear.from_float(nn.Linear(64, 8), group_size=64, activations="int8")
    x = torch.randn(64, requires_grad=True)
    bias = q.bias.detach().clone().requires_grad_()
    y = torch.ops.edgegen.int4_linear_dynamic(x, q.packed_weight, q.scale, q.zero_point, bias, 64)
    g = torch.randn_like(y)
    y.backward(g)
    torch.testing.assert_close(bias.grad, g)
    torch.testing.assert_close(x.grad, g @ q.dequantized_weight(), rtol=1e-5, atol=1e-5)
    scale = q.scale.detach().clone().requires_grad_()
    y = torch.ops.edgegen.int4_linear_dynamic(torch.randn(64), q.packed_weight, scale, q.zero_point, None, 64)
    with pytest.raises(RuntimeError, match="edgegen::int4_linear_dynamic: scale:"):
        y.sum().backward()


def test_no_input_gradient_wanted_keeps_nothing_for_backward():
    """Training only the bias of a static layer: the input is not kept and no mask is computed."""
    q = Int8Linear.from_float(nn.Linear(8, 4), STATIC)
    bias = q.bias.detach().clone().requires_grad_()
    y = torch.ops.edgegen.int8_linear_static(torch.randn(3, 8), *STATIC, q.packed_weight, q.weight_row_sum,
                                             q.weight_scale, bias, 4, 8)
    assert y.grad_fn.saved_tensors[0] is None
    y.sum().backward()
    torch.testing.assert_close(bias.grad, torch.full((4,), 3.0))
