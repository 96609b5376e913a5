"""INT8 ops validate what they are given instead of trusting it: transposed-convolution phases,
strides and sizes; channel and feature counts hidden by the 4-byte padding; NaN/inf inputs,
weights and activation parameters."""

import pytest
import torch
from torch import nn

import edgegen  # noqa: F401
from edgegen.ops.quant import int8_pack_weight
from edgegen.quant import Int4Linear, Int8Conv2d, Int8ConvTranspose2d, Int8Linear

op_ct = torch.ops.edgegen.int8_conv_transpose2d


@pytest.fixture
def ct():
    torch.manual_seed(0)
    m = Int8ConvTranspose2d.from_float(nn.ConvTranspose2d(8, 16, 4, 2, 1))
    x = torch.randn(1, 8, 5, 5)
    info = [v for t in m.phase_taps for v in t]
    args = dict(packed=[p.packed_weight for p in m.phases], rows=[p.weight_row_sum for p in m.phases],
                scale=m.phases[0].weight_scale, bias=m.bias, out=16, info=info, stride=[2, 2], padding=[1, 1],
                size=[10, 10], a_scale=0.0, a_zp=0)
    return m, x, args


def _call(x, a):
    return op_ct(x, a["packed"], a["rows"], a["scale"], a["bias"], a["out"], a["info"], a["stride"], a["padding"],
                 a["size"], a["a_scale"], a["a_zp"])


def test_valid_call_matches_the_module(ct):
    m, x, a = ct
    torch.testing.assert_close(_call(x, a), m(x))


@pytest.mark.parametrize("change, match", [
    (lambda a: a.update(info=a["info"][:4] * 4), "repeats the residue"),
    (lambda a: a.update(info=[-1] + a["info"][1:]), r"has residue \(-1, 0\), expected values in \[0, stride\)"),
    (lambda a: a.update(stride=[1, 1]), r"has residue \(0, 1\), expected values in \[0, stride\)"),
    (lambda a: a.update(stride=[3, 3]), "do not split one kernel of 4 rows by stride 3"),
    (lambda a: a.update(stride=[2**31, 2**31]), r"stride: expected two values in \[1, 65536\]"),
    (lambda a: a.update(size=[12, 10]), r"output_size: 12 is not a transposed-convolution size"),
    (lambda a: a.update(size=[2**40, 10]), r"output_size: expected two values in \[1, 16777216\]"),
    (lambda a: a.update(a_scale=float("inf")), "a_scale: expected a finite value > 0, got inf"),
    (lambda a: a.update(a_scale=float("nan")), "a_scale: expected a finite value"),
    (lambda a: a.update(a_scale=0.1, a_zp=200), r"a_zero_point: expected a value in \[0, 127\]"),
    (lambda a: a.update(info=a["info"][:12], packed=a["packed"][:3], rows=a["rows"][:3]),
     "expected one phase per"),
], ids=["duplicate-phase", "negative-residue", "stride-1", "stride-3", "stride-huge", "size", "size-huge",
        "inf-scale", "nan-scale", "zero-point", "missing-phase"])
def test_transposed_metadata_is_checked(ct, change, match):
    _, x, a = ct
    change(a)
    with pytest.raises(ValueError, match=match):
        _call(x, a)


def test_static_module_from_infinite_act_params_is_refused():
    conv = nn.ConvTranspose2d(8, 16, 4, 2, 1)
    m = Int8ConvTranspose2d.from_float(conv, act_qparams=(float("inf"), 0))
    with pytest.raises(ValueError, match="a_scale: expected a finite value > 0, got inf"):
        m(torch.randn(1, 8, 5, 5))


def test_channels_hidden_by_padding_are_refused():
    torch.manual_seed(0)
    c3 = Int8Conv2d.from_float(nn.Conv2d(3, 4, 3, padding=1))
    with pytest.raises(ValueError, match=r"input: expected \[N, 3, H, W\] for this Int8Conv2d"):
        c3(torch.randn(1, 4, 6, 6))
    t8 = Int8ConvTranspose2d.from_float(nn.ConvTranspose2d(8, 16, 4, 2, 1))
    with pytest.raises(ValueError, match=r"input: expected \[N, 8, H, W\] for this Int8ConvTranspose2d"):
        t8(torch.randn(1, 5, 5, 5))
    # at the op level: the packed weight was built for 8 channels, the input has 5 (both pad to 8)
    a = dict(packed=[p.packed_weight for p in t8.phases], rows=[p.weight_row_sum for p in t8.phases],
             scale=t8.phases[0].weight_scale, bias=t8.bias, out=16, info=[v for t in t8.phase_taps for v in t],
             stride=[2, 2], padding=[1, 1], size=[10, 10], a_scale=0.0, a_zp=0)
    with pytest.raises(ValueError, match="packed_weight: was packed for more input channels"):
        _call(torch.randn(1, 5, 5, 5), a)
    g = c3.gemm
    with pytest.raises(ValueError, match="packed_weight: was packed for more input channels"):
        torch.ops.edgegen.int8_conv2d(torch.randn(1, 2, 6, 6), g.packed_weight, g.weight_row_sum, g.weight_scale,
                                      g.bias, 4, [3, 3], [1, 1], [1, 1], [1, 1], 0.0, 0)


def test_gemm_k_padding_to_the_same_size_is_refused():
    w = torch.randint(-127, 128, (16, 32), dtype=torch.int8)
    packed, rows = int8_pack_weight(w)
    a = torch.randint(0, 128, (2, 29), dtype=torch.uint8)
    with pytest.raises(ValueError, match="packed_weight: was packed for more input features"):
        torch.ops.edgegen.int8_gemm(a, 0, packed, rows, 16, 29)
    # a genuine 29-wide weight packs with zero padding and is accepted
    p29, r29 = int8_pack_weight(w[:, :29].contiguous())
    out = torch.ops.edgegen.int8_gemm(a, 0, p29, r29, 16, 29)
    torch.testing.assert_close(out, a.int() @ w[:, :29].int().t())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
def test_non_finite_inputs_are_an_error(bad):
    torch.manual_seed(0)
    lin = Int8Linear.from_float(nn.Linear(16, 8))
    x = torch.randn(3, 16)
    x[1, 2] = bad
    with pytest.raises(ValueError, match="input: contains NaN or infinite values"):
        lin(x)
    conv = Int8Conv2d.from_float(nn.Conv2d(4, 4, 3, padding=1))
    xc = torch.randn(1, 4, 5, 5)
    xc[0, 1, 2, 2] = bad
    with pytest.raises(ValueError, match="input: contains NaN or infinite values"):
        conv(xc)


@pytest.mark.parametrize("make", [
    lambda w: Int8Linear.from_float(_linear(w)),
    lambda w: Int4Linear.from_float(_linear(w), group_size=64),
    lambda w: Int8ConvTranspose2d.from_float(_ct(w)),
    lambda w: Int8Conv2d.from_float(_conv(w)),
], ids=["int8-linear", "int4-linear", "int8-conv-transpose", "int8-conv"])
def test_nan_weights_are_an_error(make):
    with pytest.raises(ValueError, match=r"weight: contains 1 NaN or infinite weight\(s\)"):
        make(float("nan"))


def _linear(v):
    m = nn.Linear(64, 8)
    with torch.no_grad():
        m.weight[3, 5] = v
    return m


def _ct(v):
    m = nn.ConvTranspose2d(4, 16, 4, 2, 1)
    with torch.no_grad():
        m.weight[1, 2, 0, 0] = v
    return m


def _conv(v):
    m = nn.Conv2d(4, 4, 3)
    with torch.no_grad():
        m.weight[1, 2, 0, 0] = v
    return m


@pytest.mark.parametrize("make", [lambda: nn.Conv2d(3, 4, 3, padding=1), lambda: nn.ConvTranspose2d(3, 4, 4, 2, 1)],
                         ids=["conv", "conv-transpose"])
def test_unbatched_input_is_taken_as_the_float_layer_takes_it(make):
    torch.manual_seed(0)
    conv = make()
    q = (Int8Conv2d if isinstance(conv, nn.Conv2d) else Int8ConvTranspose2d).from_float(conv)
    x = torch.randn(3, 6, 6)
    out = q(x)  # was: "expected [N, 3, H, W]"
    assert out.shape == conv(x).shape and torch.equal(out, q(x[None])[0])
    with pytest.raises(ValueError, match=r"input: expected \[N, 3, H, W\] .*\[3, H, W\] unbatched.*got shape \(6, 6\)"):
        q(torch.randn(6, 6))
