"""Affine quantization kernels: bit-exact against PyTorch's quantize / dequantize / fake-quantize,
learnable fake-quantization gradients against torch's, opcheck, compile, bad input."""

import warnings

import pytest
import torch

import edgegen  # noqa: F401
from tests.helpers import opcheck_ids
from edgegen.ops._reference import (
    dequantize_affine_reference,
    fake_quantize_affine_reference,
    quantize_affine_reference,
)
from edgegen.quant import (
    dequantize,
    fake_quantize,
    fake_quantize_learnable,
    quantize_per_channel,
    quantize_per_tensor,
)

warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
QT = {torch.int8: torch.qint8, torch.uint8: torch.quint8}


def inputs(kind, shape=(6, 5, 4, 3)):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(shape, generator=g) * 3
    if kind == "positive":
        return x.abs()
    if kind == "negative":
        return -x.abs()
    if kind == "constant":
        return torch.full(shape, 0.7)
    if kind == "huge":
        return x * 1e6
    return x


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8])
@pytest.mark.parametrize("kind", ["normal", "positive", "negative", "constant", "huge"])
@pytest.mark.parametrize("scale,zp", [(0.05, 0), (0.0173, 4), (1.0, -7), (2.5e-3, 10)])
def test_quantize_per_tensor_equals_torch(dtype, kind, scale, zp):
    if dtype == torch.uint8:
        zp = abs(zp) + 100
    x = inputs(kind)
    got = quantize_per_tensor(x, scale, zp, dtype)
    want = torch.quantize_per_tensor(x, scale, zp, QT[dtype]).int_repr()
    assert got.dtype == dtype and torch.equal(got, want)
    assert torch.equal(dequantize(got, scale, zp), torch.quantize_per_tensor(x, scale, zp, QT[dtype]).dequantize())


def test_half_way_values_round_to_even():
    s = 0.25  # exact in binary: x * (1 / s) lands exactly on .5
    x = (torch.arange(-40, 40).float() + 0.5) * s
    for zp in (0, 2, -6):  # even zero points: every convention agrees
        assert torch.equal(quantize_per_tensor(x, s, zp), torch.quantize_per_tensor(x, s, zp, torch.qint8).int_repr())
    # With an odd zero point the zero point must be added after rounding (the definition, and what
    # torch.fake_quantize_* does); torch.quantize_per_tensor's vectorised path adds it before.
    got = quantize_per_tensor(x, s, 3)
    assert torch.equal(got, (torch.round(x / s) + 3).clamp(-128, 127).to(torch.int8))
    fq = torch.fake_quantize_per_tensor_affine(x, s, 3, -128, 127)
    assert torch.equal(dequantize(got, s, 3), fq)
    assert torch.equal(quantize_per_tensor(torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5]), 1.0, 0),
                       torch.tensor([0, 2, 2, 0, -2], dtype=torch.int8))


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8])
@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1])
def test_quantize_per_channel_every_axis_equals_torch(dtype, axis):
    x = inputs("normal")
    c = x.shape[axis]
    scales = torch.rand(c, dtype=torch.float64) * 0.1 + 0.01
    zps = torch.randint(-5, 6, (c,)) + (128 if dtype == torch.uint8 else 0)
    zps = zps - zps % 2  # even: see test_half_way_values_round_to_even
    got = quantize_per_channel(x, scales, zps, axis, dtype)
    q = torch.quantize_per_channel(x, scales, zps, axis % x.dim(), QT[dtype])
    assert torch.equal(got, q.int_repr())
    # Dequantization is float32 arithmetic, so that quantize -> dequantize equals fake-quantize
    # bit for bit; torch's per-channel dequantize computes in float64 (within 1 ulp of ours).
    deq = dequantize(got, scales, zps, axis)
    qmin, qmax = (0, 255) if dtype == torch.uint8 else (-128, 127)
    assert torch.equal(deq, fake_quantize(x, scales.float(), zps.int(), qmin, qmax, axis))
    torch.testing.assert_close(deq, q.dequantize(), rtol=1.2e-7, atol=0)


@pytest.mark.parametrize("qrange", [(-128, 127), (-127, 127), (0, 255), (0, 15), (-8, 7)])
@pytest.mark.parametrize("zp", [0, 3])
def test_fake_quantize_per_tensor_equals_torch_values_and_gradients(qrange, zp):
    qmin, qmax = qrange
    zp = min(max(zp, qmin), qmax)
    x = torch.cat([inputs("normal").flatten(), (torch.arange(-20, 20).float() + 0.5) * 0.25]).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    got = fake_quantize(x, 0.25, zp, qmin, qmax)
    want = torch.fake_quantize_per_tensor_affine(x2, 0.25, zp, qmin, qmax)
    assert torch.equal(got, want)
    g = torch.randn_like(got)
    got.backward(g)
    want.backward(g)
    assert torch.equal(x.grad, x2.grad)


@pytest.mark.parametrize("axis", [0, 1, 3])
def test_fake_quantize_per_channel_equals_torch(axis):
    x = inputs("normal").requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    c = x.shape[axis]
    scales = torch.rand(c) * 0.2 + 0.05
    zps = torch.randint(-3, 4, (c,), dtype=torch.int32)
    got = fake_quantize(x, scales, zps, -8, 7, axis)
    want = torch.fake_quantize_per_channel_affine(x2, scales, zps, axis, -8, 7)
    assert torch.equal(got, want)
    got.sum().backward()
    want.sum().backward()
    assert torch.equal(x.grad, x2.grad)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_other_input_dtypes_equal_the_reference(dtype):
    x = inputs("normal").to(dtype)
    s, z = torch.tensor([0.03]), torch.tensor([5])
    assert torch.equal(quantize_per_tensor(x, 0.03, 5), quantize_affine_reference(x, s, z, None, -128, 127, torch.int8))
    out, mask = torch.ops.edgegen.fake_quantize_affine(x, s, z, None, -20, 20)
    ro, rm = fake_quantize_affine_reference(x, s, z, None, -20, 20)
    assert out.dtype == dtype and torch.equal(out, ro) and torch.equal(mask, rm)
    q = quantize_per_tensor(x, 0.03, 5)
    assert torch.equal(dequantize(q, 0.03, 5, out_dtype=dtype), dequantize_affine_reference(q, s, z, None, dtype))


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("grad_factor", [1.0, 0.37])
def test_learnable_fake_quantize_matches_torch(per_channel, grad_factor):
    x = inputs("normal").requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    if per_channel:
        s = (torch.rand(5) * 0.2 + 0.05).requires_grad_()
        z = torch.tensor([0.0, 1.4, -2.6, 3.0, 0.5]).requires_grad_()
    else:
        s = torch.tensor([0.11], requires_grad=True)
        z = torch.tensor([1.7], requires_grad=True)
    s2, z2 = s.detach().clone().requires_grad_(), z.detach().clone().requires_grad_()
    got = fake_quantize_learnable(x, s, z, -8, 7, axis=1 if per_channel else None, grad_factor=grad_factor)
    if per_channel:
        want = torch._fake_quantize_learnable_per_channel_affine(x2, s2, z2, 1, -8, 7, grad_factor)
    else:
        want = torch._fake_quantize_learnable_per_tensor_affine(x2, s2, z2, -8, 7, grad_factor)
    assert torch.equal(got, want)
    g = torch.randn_like(got)
    got.backward(g)
    want.backward(g)
    assert torch.equal(x.grad, x2.grad)
    torch.testing.assert_close(s.grad, s2.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(z.grad, z2.grad, rtol=1e-4, atol=1e-5)


OPCHECK = [
    (torch.ops.edgegen.quantize_affine, (torch.randn(4, 3), torch.tensor([0.1]), torch.tensor([2]), None, -128, 127,
                                         torch.int8)),
    (torch.ops.edgegen.quantize_affine, (torch.randn(4, 3), torch.rand(3) + 0.1, torch.tensor([0, 1, 2]), 1, 0, 255,
                                         torch.uint8)),
    (torch.ops.edgegen.dequantize_affine, (torch.randint(-128, 127, (4, 3), dtype=torch.int8), torch.rand(4) + 0.1,
                                           torch.zeros(4, dtype=torch.int32), 0, torch.float32)),
    (torch.ops.edgegen.fake_quantize_affine, (torch.randn(4, 3, requires_grad=True), torch.tensor([0.1]),
                                              torch.tensor([0]), None, -8, 7)),
    (torch.ops.edgegen.fake_quantize_learnable_backward, (torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0.1]),
                                                          torch.tensor([1]), None, -8, 7, 1.0)),
]


@pytest.mark.parametrize("op,args", OPCHECK, ids=opcheck_ids(OPCHECK))
def test_opcheck(op, args):
    torch.library.opcheck(op, args)


def test_torch_compile_qat_step():
    w = torch.randn(8, 8, requires_grad=True)
    s = torch.tensor([0.05], requires_grad=True)
    z = torch.tensor([0.0], requires_grad=True)

    def step(x):
        return (x @ fake_quantize_learnable(w, s, z, -128, 127)).pow(2).sum() + fake_quantize(x, 0.1, 0, -8, 7).sum()

    x = torch.randn(4, 8)
    eager = step(x)
    eager.backward()
    grads = [t.grad.clone() for t in (w, s)]
    for t in (w, s, z):
        t.grad = None
    compiled = torch.compile(step, backend="aot_eager")(x)
    compiled.backward()
    torch.testing.assert_close(compiled, eager)
    for a, b in zip(grads, (w.grad, s.grad)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: quantize_per_tensor(torch.randn(3), 0.0, 0), ValueError, "scale"),
    (lambda: quantize_per_tensor(torch.randn(3), -1.0, 0), ValueError, "scale"),
    (lambda: quantize_per_tensor(torch.randn(3), float("nan"), 0), ValueError, "scale"),
    (lambda: quantize_per_tensor(torch.randn(3), 0.1, 200), ValueError, "zero_point"),
    (lambda: quantize_per_tensor(torch.randn(3), 0.1, -1, torch.uint8), ValueError, "zero_point"),
    (lambda: quantize_per_tensor(torch.randn(3), 0.1, 0, torch.int16), TypeError, "dtype"),
    (lambda: quantize_per_tensor(torch.randn(3), 0.1, 0, quant_min=5, quant_max=2), ValueError, "quant_min"),
    (lambda: quantize_per_tensor(torch.randn(3), 0.1, 0, quant_min=-200), ValueError, "quant_min"),
    (lambda: quantize_per_tensor(torch.arange(3), 0.1, 0), TypeError, "input"),
    (lambda: quantize_per_tensor(torch.randn(3), "0.1", 0), TypeError, "scale"),
    (lambda: quantize_per_channel(torch.randn(3, 4), torch.ones(4), torch.zeros(4), 2), IndexError, "axis"),
    (lambda: quantize_per_channel(torch.randn(3, 4), torch.ones(3), torch.zeros(3), 1), ValueError, "scale"),
    (lambda: quantize_per_channel(torch.randn(3, 4), torch.ones(4), torch.zeros(3), 1), ValueError, "zero_point"),
    (lambda: quantize_per_channel(torch.randn(3, 4), torch.ones(4), torch.zeros(4) + 0.5, 1), TypeError, "zero_point"),
    (lambda: dequantize(torch.randn(3), 0.1, 0), TypeError, "input"),
    (lambda: fake_quantize(torch.randn(3), 0.1, 9, -8, 7), ValueError, "zero_point"),
    (lambda: fake_quantize_learnable(torch.randn(3), 0.1, 0, -8, 7), TypeError, "scale"),
], ids=lambda x: x if isinstance(x, str) else "")
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("axis", [None, 0, 2])
def test_learnable_backward_op_equals_reference_twin(axis):
    from edgegen.ops._reference import fake_quantize_learnable_backward_reference

    x, g = inputs("normal"), torch.randn(6, 5, 4, 3)
    c = 1 if axis is None else x.shape[axis]
    s, z = torch.rand(c) * 0.2 + 0.05, torch.randint(-3, 4, (c,), dtype=torch.int32)
    got = torch.ops.edgegen.fake_quantize_learnable_backward(g, x, s, z, axis, -8, 7, 0.5)
    want = fake_quantize_learnable_backward_reference(g, x, s, z, axis, -8, 7, 0.5)
    assert torch.equal(got[0], want[0])
    torch.testing.assert_close(got[1], want[1], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got[2], want[2], rtol=1e-6, atol=1e-6)


def test_learnable_float64_gradient_passes_through_unchanged():
    """Where nothing is clamped the input's gradient is the incoming one, bit for bit, in float64
    too (it was rounded through float32)."""
    x = (torch.rand(4, 50, dtype=torch.float64) - 0.5).requires_grad_()  # well inside [-8, 7] * 0.11
    s, z = torch.tensor([0.11], dtype=torch.float64), torch.tensor([0.4], dtype=torch.float64)
    out = fake_quantize_learnable(x, s, z, -8, 7)
    g = torch.randn(out.shape, dtype=torch.float64) * (1 + 1e-9)
    out.backward(g)
    assert torch.equal(x.grad, g)
