"""The quantization ops' fallback (every device without a C++ kernel) accepting, refusing and
answering as the CPU kernel does where the two could part (empty ranges, zero scales, int32 zero
points, histogram bins, packed weights of the wrong width, reciprocal scaling at rounding ties,
saturated static activations, padding channels, float64 beyond float32, 4-bit codes), meta shapes
of dilated convolutions, and the FLOP formulas of edgegen's ops.

Oracles: the C++ CPU kernel (the fallback must accept, refuse and answer as it does), the float64 /
float32 reference twins in edgegen.ops._reference, torch's own FLOP formulas for the float layers,
and closed-form counts.

"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import edgegen  # noqa: F401  (registers the ops)
from edgegen.ops._reference import int8_linear_static_reference, sliding_window_mask

ops = torch.ops.edgegen
DK = torch._C.DispatchKey


def fallback(name, *args):
    """The kernel every device without a C++ kernel gets (CUDA, MPS, XPU, ...)."""
    return getattr(ops, name).default._op_dk(DK.CompositeExplicitAutograd, *args)


def cpu(name, *args):
    return getattr(ops, name)(*args)


KERNELS = pytest.mark.parametrize("kernel", [cpu, fallback], ids=["cpu", "fallback"])


def _conv_weight(cout, cin, kh, kw, seed=0, pad_value=0):
    """A direct-convolution weight packed as Int8Conv2d packs it: [Cout, kh, kw, Cin padded to 4]."""
    g = torch.Generator().manual_seed(seed)
    cp = -(-cin // 4) * 4
    wc = torch.full((cout, kh, kw, cp), pad_value, dtype=torch.int8)
    wc[..., :cin] = torch.randint(-127, 128, (cout, kh, kw, cin), dtype=torch.int8, generator=g)
    packed, rows = ops.int8_pack_weight(wc.reshape(cout, -1))
    return wc, packed, rows


# ----------------------------------------------------------------------------- argument checks


@KERNELS
def test_an_empty_quantization_range_is_refused(kernel):
    x, s, z = torch.randn(8), torch.tensor([0.1]), torch.tensor([5])
    with pytest.raises(ValueError, match="quant_min/quant_max: expected"):
        kernel("quantize_affine", x, s, z, None, 5, 5, torch.int8)
    with pytest.raises(ValueError, match="quant_min/quant_max: expected"):
        kernel("fake_quantize_affine", x, s, z, None, 5, 5)


@KERNELS
def test_a_zero_scale_is_refused(kernel):
    x, z = torch.randn(8), torch.tensor([0])
    s0 = torch.tensor([0.0])
    with pytest.raises(ValueError, match="scale: expected finite values > 0"):
        kernel("quantize_affine", x, s0, z, None, -128, 127, torch.int8)
    with pytest.raises(ValueError, match="scale: expected finite values > 0"):
        kernel("dequantize_affine", torch.ones(8, dtype=torch.int8), s0, z, None, torch.float32)
    with pytest.raises(ValueError, match="scale: expected finite values > 0"):  # per channel, one zero
        kernel("fake_quantize_affine", torch.randn(2, 3), torch.tensor([0.1, 0.0, 0.2]), torch.zeros(3, dtype=torch.int32),
               1, -128, 127)


@KERNELS
@pytest.mark.parametrize("zp", [2**31, -2**31 - 1])
def test_dequantize_refuses_zero_points_outside_int32(kernel, zp):
    q = torch.tensor([1, 2], dtype=torch.int8)
    with pytest.raises(ValueError, match="zero_point: .*out of the int32 range"):
        kernel("dequantize_affine", q, torch.tensor([1.0]), torch.tensor([zp]), None, torch.float32)
    # the extremes themselves are accepted
    edge = 2**31 - 1 if zp > 0 else -2**31
    got = kernel("dequantize_affine", q, torch.tensor([1.0]), torch.tensor([edge]), None, torch.float32)
    assert torch.equal(got, (q.double() - edge).float())


@KERNELS
def test_a_static_activation_zero_point_above_127_is_refused(kernel):
    w = torch.randint(-127, 128, (8, 16), dtype=torch.int8)
    packed, rows = ops.int8_pack_weight(w)
    ws = torch.rand(8) + 0.1
    for zp in (128, 255):
        with pytest.raises(ValueError, match=r"a_zero_point: expected a value in \[0, 127\]"):
            kernel("int8_linear_static", torch.randn(3, 16), 0.05, zp, packed, rows, ws, None, 8, 16)
    _, pc, rc = _conv_weight(4, 3, 1, 1)
    with pytest.raises(ValueError, match=r"a_zero_point: expected a value in \[0, 127\]"):
        kernel("int8_conv2d", torch.randn(1, 3, 4, 4), pc, rc, torch.rand(4) + 0.1, None, 4, [1, 1], [1, 1], [0, 0],
               [1, 1], 0.05, 128)


@KERNELS
def test_int4_zero_points_and_codes_are_four_bit(kernel):
    codes = torch.randint(0, 16, (8, 64), dtype=torch.uint8)
    p4 = ops.int4_pack(codes)
    s4 = torch.rand(8, 1) + 0.1
    z16 = torch.full((8, 1), 16, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"zero_point: expected 4-bit values in \[0, 15\], got 16"):
        kernel("int4_dequantize", p4, s4, z16, 64)
    with pytest.raises(ValueError, match=r"zero_point: expected 4-bit values in \[0, 15\], got 16"):
        kernel("int4_linear", torch.randn(2, 64), p4, s4, z16, None, 64)
    bad = codes.clone()
    bad[3, 5] = 16
    with pytest.raises(ValueError, match=r"weight: .*4-bit .*\[0, 15\]"):
        kernel("int4_pack", bad)


@KERNELS
def test_a_weight_packed_for_one_more_output_feature_is_refused(kernel):
    # 5 rows packed (one panel of 16, rows 5..15 zero); called as n = 4: row 4 is not zero
    w = torch.randint(1, 100, (5, 8), dtype=torch.int8)
    packed, rows = ops.int8_pack_weight(w)
    r4 = rows[:4].contiguous()
    with pytest.raises(ValueError, match=r"packed_weight: was packed for more output features than n=4"):
        kernel("int8_linear_dynamic", torch.randn(3, 8), packed, r4, torch.rand(4) + 0.1, None, 4, 8)
    with pytest.raises(ValueError, match=r"packed_weight: was packed for more output features than n=4"):
        kernel("int8_gemm", torch.randint(0, 255, (3, 8), dtype=torch.uint8), 3, packed, r4, 4, 8)


@KERNELS
def test_a_weight_packed_for_one_more_input_feature_is_refused(kernel):
    # packed for k = 11 (padded to 12): column 10 is non-zero, column 11 (the padding) is zero
    w = torch.zeros(8, 11, dtype=torch.int8)
    w[:, 10] = 7
    w[:, :10] = torch.randint(-127, 128, (8, 10), dtype=torch.int8)
    packed, rows = ops.int8_pack_weight(w)
    with pytest.raises(ValueError, match="packed_weight: was packed for more input features"):
        kernel("int8_linear_dynamic", torch.randn(2, 10), packed, rows, torch.rand(8) + 0.1, None, 8, 10)
    with pytest.raises(ValueError, match="packed_weight: was packed for more input features"):
        kernel("int8_linear_static", torch.randn(2, 10), 0.05, 3, packed, rows, torch.rand(8) + 0.1, None, 8, 10)


@KERNELS
def test_a_conv_weight_with_non_zero_padding_channels_is_refused(kernel):
    # 3 input channels padded to 4: the 4th channel of every tap must be zero
    _, packed, rows = _conv_weight(8, 3, 3, 3, pad_value=1)
    with pytest.raises(ValueError, match="packed_weight: was packed for more input channels"):
        kernel("int8_conv2d", torch.randn(1, 3, 6, 6), packed, rows, torch.rand(8) + 0.1, None, 8, [3, 3], [1, 1],
               [1, 1], [1, 1], 0.0, 0)


@KERNELS
def test_int8_convolutions_refuse_float64_values_beyond_float32(kernel):
    _, packed, rows = _conv_weight(8, 3, 3, 3)
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64)
    x[0, 1, 2, 3] = 1e300  # finite in float64, infinite in float32 (the kernels' type)
    with pytest.raises(ValueError, match="input: contains NaN or infinite values"):
        kernel("int8_conv2d", x, packed, rows, torch.rand(8) + 0.1, None, 8, [3, 3], [1, 1], [1, 1], [1, 1], 0.0, 0)
    with pytest.raises(ValueError, match="input: contains NaN or infinite values"):
        kernel("int8_conv2d", x, packed, rows, torch.rand(8) + 0.1, None, 8, [3, 3], [1, 1], [1, 1], [1, 1], 0.05, 3)


# ----------------------------------------------------------------------------- numerics


def test_histogram_bins_use_float32_bounds():
    # lo = 0.1, hi = 0.3 in float32 put the bin edge at 0.2000000067; float32(0.2) = 0.2000000030
    # lies below it (bin 0), but above the float64 edge 0.2 (bin 1).
    x = torch.tensor([0.2], dtype=torch.float32)
    want = torch.tensor([1, 0])
    assert torch.equal(cpu("observe_histogram", x, 2, 0.1, 0.3), want)
    assert torch.equal(fallback("observe_histogram", x, 2, 0.1, 0.3), want)


def test_histogram_of_float64_values_bins_like_the_cpu_kernel():
    # 0.5 - 1e-12 is 0.5 in float32 (bin 5 of 10 over [0, 1]) but bin 4 in float64; float64 0.3 is
    # bin 2 (0.3 / 0.1 = 2.99999...), float32(0.3) bin 3.
    x = torch.tensor([0.5 - 1e-12, 0.3], dtype=torch.float64)
    want = torch.tensor([0, 0, 1, 0, 1, 0, 0, 0, 0, 0])
    assert torch.equal(cpu("observe_histogram", x, 10, 0.0, 1.0), want)
    assert torch.equal(fallback("observe_histogram", x, 10, 0.0, 1.0), want)


def test_histogram_over_an_empty_range_is_accepted():
    x = torch.tensor([0.5, 1.0, 2.0])
    want = torch.tensor([3, 0, 0, 0])
    assert torch.equal(cpu("observe_histogram", x, 4, 1.0, 1.0), want)
    assert torch.equal(fallback("observe_histogram", x, 4, 1.0, 1.0), want)


def test_static_linear_quantizes_with_the_reciprocal_of_the_scale():
    # float32 values where round(x * (1 / 0.1)) != round(x / 0.1): the kernels multiply by the
    # reciprocal, so the codes (and the outputs) differ by one step under a division.
    x = torch.tensor([[2.35, -4.95, 0.5, 1.0], [-5.95, 2.35, 0.0, -0.3]], dtype=torch.float32)
    s = torch.tensor(0.1, dtype=torch.float32)
    assert not torch.equal(torch.round(x * (1.0 / s)), torch.round(x / s))  # the inputs do discriminate
    g = torch.Generator().manual_seed(0)
    w = torch.randint(-127, 128, (16, 4), dtype=torch.int8, generator=g)
    packed, rows = ops.int8_pack_weight(w)
    ws, bias = torch.rand(16, generator=g) + 0.01, torch.randn(16, generator=g)
    want = int8_linear_static_reference(x, 0.1, 64, w, ws, bias)
    got = fallback("int8_linear_static", x, 0.1, 64, packed, rows, ws, bias, 16, 4)
    assert torch.equal(got, want)
    torch.testing.assert_close(cpu("int8_linear_static", x, 0.1, 64, packed, rows, ws, bias, 16, 4), want,
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("zp", [0, 10, 120])
def test_static_conv_saturates_activations_at_127(zp):
    cout, cin = 8, 3
    wc, packed, rows = _conv_weight(cout, cin, 3, 3, seed=1)
    ws, bias = torch.rand(cout) * 0.01 + 0.001, torch.randn(cout)
    a_scale = 0.01
    x = torch.randn(2, cin, 6, 5) * 3  # far beyond (127 - zp) * 0.01: most values saturate
    args = (x, packed, rows, ws, bias, cout, [3, 3], [1, 1], [1, 1], [1, 1], a_scale, zp)
    # float64 reference: 7-bit codes clamped to [0, 127], integer convolution, float32 epilogue
    s = torch.tensor(a_scale, dtype=torch.float32)
    d = ((torch.round(x * (1.0 / s)) + zp).clamp(0, 127) - zp).double()
    w = wc[..., :cin].permute(0, 3, 1, 2).double()
    acc = torch.nn.functional.conv2d(d, w, None, 1, 1)
    want = acc.float() * (s * ws)[None, :, None, None] + bias[None, :, None, None]
    torch.testing.assert_close(fallback("int8_conv2d", *args), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cpu("int8_conv2d", *args), want, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- fake (meta) kernels


@pytest.mark.parametrize("dilation", [[2, 3], [1, 2], [3, 1]])
def test_meta_int8_conv2d_shape_with_dilation(dilation):
    _, packed, rows = _conv_weight(8, 3, 3, 3)
    ws = torch.rand(8) + 0.1
    x = torch.randn(1, 3, 13, 14)
    real = cpu("int8_conv2d", x, packed, rows, ws, None, 8, [3, 3], [1, 1], [1, 1], dilation, 0.0, 0)
    fake = ops.int8_conv2d(x.to("meta"), packed.to("meta"), rows.to("meta"), ws.to("meta"), None, 8, [3, 3], [1, 1],
                           [1, 1], dilation, 0.0, 0)
    want = torch.nn.functional.conv2d(x, torch.zeros(8, 3, 3, 3), None, 1, 1, dilation).shape
    assert real.shape == want and fake.shape == want


# ----------------------------------------------------------------------------- FLOP counts


def _flops(model, x, backward=False):
    from edgegen.ops.flops import count_flops

    return count_flops(model, (x,), backward=backward)


def test_int4_linear_counts_2mnk():
    from edgegen.quant import Int4Linear

    lin = nn.Linear(128, 24)
    x = torch.randn(3, 5, 128)
    for act in ("float", "int8"):
        q = Int4Linear.from_float(lin, group_size=32, activations=act)
        assert _flops(q, x) == 2 * 15 * 24 * 128 == _flops(lin, x)


def test_static_int8_linear_on_a_3d_input_counts_every_row():
    from edgegen.quant import Int8Linear

    lin = nn.Linear(32, 16)
    x = torch.randn(3, 5, 32)
    for q in (Int8Linear.from_float(lin), Int8Linear.from_float(lin, act_qparams=(0.05, 64))):
        assert _flops(q, x) == 2 * 15 * 16 * 32 == _flops(lin, x)


def test_int8_conv2d_counts_like_the_float_convolution():
    from edgegen.quant import Int8Conv2d

    conv = nn.Conv2d(3, 8, (3, 5), stride=(2, 1), padding=(1, 2))
    x = torch.randn(2, 3, 9, 10)
    ho, wo = conv(x).shape[-2:]
    assert _flops(Int8Conv2d.from_float(conv), x) == 2 * 2 * ho * wo * 8 * 3 * 3 * 5 == _flops(conv, x)


@pytest.mark.parametrize("k, s, p", [(6, 2, 2), (3, 1, 1), (5, 2, 1)])
def test_int8_conv_transpose2d_counts_like_the_float_layer(k, s, p):
    from edgegen.quant import Int8ConvTranspose2d

    ct = nn.ConvTranspose2d(4, 6, k, s, p)
    x = torch.randn(2, 4, 5, 6)
    assert _flops(Int8ConvTranspose2d.from_float(ct), x) == 2 * 2 * 5 * 6 * 4 * 6 * k * k == _flops(ct, x)


@pytest.mark.parametrize("window, num_global, causal", [(4, 2, True), (3, 2, False), (5, 0, False), (2, 3, True)])
def test_attention_flops_count_the_visible_pairs_forward_and_backward(window, num_global, causal):
    # forward 4 d and backward 10 d per visible pair; non-causal global queries see every key
    b, h, n, d = 2, 3, 11, 8
    q, k, v = (torch.randn(b, h, n, d, requires_grad=True) for _ in range(3))
    pairs = int(sliding_window_mask(n, n, window, num_global, causal).sum())

    def swa(q):
        return ops.sliding_window_attention(q, k, v, window, num_global, causal, None, 0, None, 0)

    assert _flops(swa, q.detach()) == 4 * d * pairs * b * h
    assert _flops(swa, q, backward=True) == (4 + 10) * d * pairs * b * h


def test_visible_pairs_equals_the_mask():
    from edgegen.ops.flops import visible_pairs

    for nq, nk, window, g, causal, off in [(9, 9, 3, 2, False, 0), (7, 12, 2, 3, False, 5), (8, 8, 4, 1, True, 0),
                                          (5, 9, 2, 4, False, 0)]:
        want = int(sliding_window_mask(nq, nk, window, g, causal, off).sum())
        assert visible_pairs(nq, nk, window, g, causal, off) == want, (nq, nk, window, g, causal, off)


def test_int8_gemm_counts_2mnk():
    from edgegen.ops.flops import count_flops

    m, n, k = 7, 24, 40
    packed, rows = ops.int8_pack_weight(torch.randint(-127, 128, (n, k), dtype=torch.int8))
    a = torch.randint(0, 256, (m, k), dtype=torch.uint8)
    assert count_flops(lambda a: ops.int8_gemm(a, 3, packed, rows, n, k), (a,)) == 2 * m * n * k
