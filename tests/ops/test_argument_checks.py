"""Smaller inputs that used to pass unvalidated: non-integral integers are errors (never
truncated), complex tensors are refused, 4-bit zero points, the learnable fake-quant gradient
factor, tiny distillation temperatures, histogram infinities, in-place pruning of expanded views,
and each message names the argument the user passed."""

import pytest
import torch

import edgegen  # noqa: F401
import edgegen.distill as D
from edgegen.ops import prune as P
from edgegen.ops.quant import int8_pack_weight
from edgegen.quant import fake_quantize, fake_quantize_learnable, quantize_per_channel, quantize_per_tensor

ops = torch.ops.edgegen
X = torch.randn(4, 8)


@pytest.mark.parametrize("call, err, match", [
    (lambda: quantize_per_tensor(X, 0.1, 1.5), TypeError, "zero_point: expected an integer, got 1.5"),
    (lambda: quantize_per_tensor(X, 0.1, 0, torch.int8, -127.5, 127), TypeError, "quant_min: expected an integer"),
    (lambda: quantize_per_channel(X, torch.rand(4) + 0.1, torch.zeros(4, dtype=torch.int64), 0.5), TypeError,
     "axis: expected an integer, got 0.5"),
    (lambda: fake_quantize(X, 0.1, 0, -128, 127.5), TypeError, "quant_max: expected an integer"),
    (lambda: fake_quantize_learnable(X, torch.tensor([0.1]), torch.tensor([0.0]), -128.5, 127), TypeError,
     "quant_min: expected an integer"),
    (lambda: P.nm_mask(torch.randn(4, 8), 2.5, 4), TypeError, "n: expected an integer, got 2.5"),
    (lambda: P.nm_mask(torch.randn(4, 8), 2, 4, dim=0.5), TypeError, "dim: expected an integer"),
    (lambda: P.kth_smallest_score([torch.randn(8)], 2.5), TypeError, "k: expected an integer"),
    (lambda: P.magnitude_mask([torch.randn(8)], True), TypeError, "num_prune: expected an integer, got a bool"),
], ids=["zero-point", "quant-min", "axis", "fq-quant-max", "lsq-quant-min", "nm-n", "nm-dim", "kth-k", "bool"])
def test_non_integral_integers_are_errors(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_integral_floats_are_accepted():
    assert torch.equal(quantize_per_tensor(X, 0.1, 2.0), quantize_per_tensor(X, 0.1, 2))
    w = torch.randn(4, 8)
    assert torch.equal(P.nm_mask(w, 2.0, 4.0), P.nm_mask(w, 2, 4))


def test_scales_is_named_scales():
    with pytest.raises(ValueError, match=r"scales: expected 4 values \(one per channel along axis 0\)"):
        quantize_per_channel(X, torch.rand(3) + 0.1, torch.zeros(4, dtype=torch.int64), 0)


@pytest.mark.parametrize("call, match", [
    (lambda: P.magnitude_scores(torch.randn(4, dtype=torch.complex64)), "weight: expected a real floating-point"),
    (lambda: P.magnitude_mask([torch.randn(4), torch.randn(4, dtype=torch.complex64)], 1),
     r"weights\[1\]: expected a real floating-point"),
    (lambda: P.channel_norms(torch.randn(4, 4, dtype=torch.complex128)), "weight: expected a real floating-point"),
    (lambda: ops.int8_linear_dynamic(torch.randn(2, 16), *int8_pack_weight(torch.ones(8, 16, dtype=torch.int8)),
                                     torch.rand(8) + 0.1, torch.randn(8, dtype=torch.complex64), 8, 16),
     "bias: expected a floating-point tensor, got ComplexFloat"),
], ids=["scores", "mask", "norms", "int8-bias"])
def test_complex_tensors_are_refused(call, match):
    with pytest.raises(TypeError, match=match):
        call()


def test_nm_group_limit_is_the_same_for_every_dtype():
    for dtype in (torch.float32, torch.float64):
        with pytest.raises(ValueError, match=r"m: expected a group size in \[1, 64\], got 128"):
            P.nm_mask(torch.randn(4, 256, dtype=dtype), 2, 128, 1)


def test_int4_zero_points_are_four_bit():
    p4 = ops.int4_pack(torch.randint(0, 16, (8, 64), dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"zero_point: expected 4-bit values in \[0, 15\], got 16"):
        ops.int4_dequantize(p4, torch.rand(8, 1) + 0.1, torch.full((8, 1), 16, dtype=torch.uint8), 64)


@pytest.mark.parametrize("factor", [float("nan"), float("inf"), 0.0, -1.0], ids=["nan", "inf", "zero", "negative"])
def test_learnable_fake_quant_grad_factor(factor):
    with pytest.raises(ValueError, match="grad_factor: expected a finite value > 0"):
        ops.fake_quantize_learnable_backward(X, X, torch.tensor([0.1]), torch.tensor([0], dtype=torch.int32), None,
                                             -128, 127, factor)


@pytest.mark.parametrize("temperature", [1e-45, 1e-3, 0.0], ids=["denormal", "tiny", "zero"])
def test_tiny_temperatures_are_refused(temperature):
    s, t, y = torch.randn(4, 10), torch.randn(4, 10), torch.tensor([1, 2, 3, 4])
    with pytest.raises(ValueError, match="temperature: expected a finite (number|value) >= 0.01"):
        D.kd_loss(s, t, y, temperature=temperature)
    with pytest.raises(ValueError, match="temperature: expected a finite (number|value) >= 0.01"):
        ops.kd_loss(s, [t], [1.0], y, temperature, 0.5, -100, "mean", False)
    assert torch.isfinite(D.kd_loss(s, t, y, temperature=0.01))


def test_histogram_infinities_go_to_the_end_bins():
    counts = ops.observe_histogram(torch.tensor([float("inf"), 0.5, -float("inf"), 7.0, -3.0]), 4, 0.0, 1.0)
    assert counts.tolist() == [2, 0, 1, 2]  # -inf and -3 in the first bin, +inf and 7 in the last


def test_in_place_pruning_of_an_expanded_view_is_refused():
    w = torch.randn(1, 8).expand(4, 8)
    with pytest.raises(ValueError, match=r"weights\[0\]: elements share memory \(an expanded view\)"):
        P.magnitude_prune_([w], 3)


def test_mse_observer_needs_real_nan_free_data():
    with pytest.raises(ValueError, match="input: contains NaN values"):
        ops.mse_clip_range(torch.tensor([0.5, float("nan"), 1.0]), -1.0, 1.0, -128, 127, 10)
    with pytest.raises(RuntimeError, match="input: the clipping range depends on the values"):
        ops.mse_clip_range(torch.randn(8, device="meta"), -1.0, 1.0, -128, 127, 10)
    lo, hi = ops.mse_clip_range(torch.randn(1000), -3.0, 3.0, -128, 127, 20)
    assert -3.0 <= lo < 0 < hi <= 3.0
    with pytest.raises(ValueError, match="input: expected a non-empty tensor"):  # no data: no best range
        ops.mse_clip_range(torch.empty(0, 4), -1.0, 1.0, -128, 127, 10)



@pytest.mark.parametrize("qmin, qmax", [(0, 2**31 - 1), (-2**31, 0), (-2**31, 2**31 - 1)],
                         ids=["u31", "negative-half", "int32"])
def test_mse_observer_on_the_widest_integer_ranges(qmin, qmax):
    """With 2^31 levels rounding costs nothing: the best range is the whole one (the width
    qmax - qmin and the clamp bounds once overflowed int32 and gave a hundredth of it)."""
    x = torch.linspace(-1, 1, 1000)
    assert ops.mse_clip_range(x, -1.0, 1.0, qmin, qmax, 100) == (-1.0, 1.0)


def test_mse_observer_over_many_chunks_equals_a_float64_search_on_any_thread_count():
    torch.manual_seed(1)
    x = torch.randn(20 * 65536 + 123)
    lo, hi, steps = float(x.min()), float(x.max()), 24
    errs = []
    xd = x.double()
    for s in range(steps):
        f = (s + 1) / steps
        a, b = min(lo * f, 0.0), max(hi * f, 0.0)
        scale = torch.tensor((b - a) / 255, dtype=torch.float32).double()
        zp = float(torch.clamp(-128 - torch.round(torch.tensor(a, dtype=torch.float32) / scale.float()), -128, 127))
        q = torch.clamp(torch.round(x * (1 / scale.float())) + zp, -128, 127).double()
        errs.append(float(((xd - (q - zp) * scale) ** 2).sum()))
    best = min(range(steps), key=lambda s: errs[s])
    want = (lo * (best + 1) / steps, hi * (best + 1) / steps)
    old = torch.get_num_threads()
    try:
        got = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            got.append(ops.mse_clip_range(x, lo, hi, -128, 127, steps))
    finally:
        torch.set_num_threads(old)
    assert got[0] == got[1]
    assert got[0] == pytest.approx(want, rel=1e-6)


def test_histogram_over_many_chunks_counts_every_value_once_on_any_thread_count():
    x = torch.randn(5 * 65536 + 7, dtype=torch.float64)
    x[::1000] = float("inf")
    # float64 positions of the float64 values as they are, the outside ones (and infinities) in
    # the end bins
    pos = torch.floor((x + 2) / 0.0625).clamp(0, 63).long()
    want = torch.bincount(pos, minlength=64)
    old = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            assert torch.equal(ops.observe_histogram(x, 64, -2.0, 2.0), want)
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("lo, hi", [(-1e39, 0.0), (0.0, 1e39), (float("nan"), 1.0)], ids=["low", "high", "nan"])
@pytest.mark.parametrize("route", ["cpu", "other-devices"])
def test_observer_bounds_must_be_finite_float32(lo, hi, route):
    """1e39 is a finite double but infinity as float32, the type the bins are computed in."""
    from contextlib import nullcontext

    from tests.ops.test_dispatch import OtherDeviceKernels

    with OtherDeviceKernels() if route == "other-devices" else nullcontext():
        with pytest.raises(ValueError, match=r"lo/hi: expected finite lo <= hi within float32's range"):
            ops.observe_histogram(torch.tensor([-5.0, 3.0]), 4, lo, hi)
    with pytest.raises(ValueError, match=r"lo/hi: expected finite lo <= hi within float32's range"):
        ops.mse_clip_range(torch.tensor([-5.0, 3.0]), lo, hi, -128, 127, 4)


def test_dequantize_with_an_extreme_zero_point_matches_the_float64_reference():
    q = torch.tensor([0, 5, 127, -128], dtype=torch.int8)
    for zp in (-2**31, 2**31 - 1):
        got = ops.dequantize_affine(q, torch.tensor(1.0), torch.tensor(zp), None, torch.float32)
        assert torch.equal(got, (q.double() - zp).float()), zp


@pytest.mark.parametrize("route", ["cpu", "other-devices"])
@pytest.mark.parametrize("arg, value", [("kernel_size", [2**62 + 1, 1]), ("kernel_size", [1025, 1]),
                                        ("dilation", [2**62, 1]), ("stride", [1, 2**17])],
                         ids=["kernel-wraps", "kernel-1025", "dilation-wraps", "stride"])
def test_int8_conv2d_bounds_its_geometry(route, arg, value):
    """Unbounded sizes wrapped around in the size products, passed every check and read out of
    bounds (a crash); now each is an error naming the argument."""
    from contextlib import nullcontext

    from tests.ops.test_dispatch import OtherDeviceKernels

    p, rs = int8_pack_weight(torch.randint(-3, 3, (4, 4), dtype=torch.int8))
    geometry = {"kernel_size": [1, 1], "stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], arg: value}
    with OtherDeviceKernels() if route == "other-devices" else nullcontext():
        with pytest.raises(ValueError, match=rf"{arg}: expected two values in \[1, \d+\]"):
            ops.int8_conv2d(torch.randn(1, 4, 5, 5), p, rs, torch.ones(4), None, 4, geometry["kernel_size"],
                            geometry["stride"], geometry["padding"], geometry["dilation"], 0.0, 0)


@pytest.mark.parametrize("route", ["cpu", "other-devices"])
def test_a_weight_packed_for_more_output_features_is_refused(route):
    """20 output rows and 17 share a panel count: the last three rows were silently dropped."""
    from contextlib import nullcontext

    from tests.ops.test_dispatch import OtherDeviceKernels

    p, rs = int8_pack_weight(torch.ones(20, 16, dtype=torch.int8))
    with OtherDeviceKernels() if route == "other-devices" else nullcontext():
        with pytest.raises(ValueError, match=r"packed_weight: was packed for more output features than n=17 "
                                             r"\(a non-zero weight in row 17\)"):
            ops.int8_linear_dynamic(torch.randn(2, 16), p, rs[:17].contiguous(), torch.ones(17), None, 17, 16)
        out = ops.int8_linear_dynamic(torch.randn(2, 16), p, rs, torch.ones(20), None, 20, 16)
    assert out.shape == (2, 20)


def test_integer_arguments_refuse_bools_of_every_kind_and_values_beyond_int64():
    import numpy as np

    from edgegen.ops._args import as_int

    for v in (True, np.bool_(True), torch.tensor(True)):
        with pytest.raises(TypeError, match="num_prune: expected an integer, got a bool"):
            as_int(v, "num_prune")
    for v in (2**63, -(2**63) - 1, 2**70):
        with pytest.raises(ValueError, match=r"num_prune: expected an int64 value in \[-2\*\*63, 2\*\*63 - 1\]"):
            as_int(v, "num_prune")
    assert [as_int(v, "n") for v in (3, 3.0, np.int16(3), torch.tensor(3), 2**63 - 1)] == [3, 3, 3, 3, 2**63 - 1]
    with pytest.raises(TypeError, match="num_prune: expected an integer, got a bool"):
        P.magnitude_prune_([torch.randn(4)], torch.tensor(True))


def test_integer_weight_is_refused_by_the_python_check():
    with pytest.raises(TypeError, match="weight: expected a real floating-point tensor, got torch.int64"):
        P.magnitude_scores(torch.randint(-5, 5, (4, 8)))


def test_float_tensor_integers_are_refused():
    with pytest.raises(TypeError, match="n: expected an integer"):
        P.nm_mask(torch.randn(4, 8), torch.tensor(2.5), 4)
    assert torch.equal(P.nm_mask(torch.ones(4, 8), torch.tensor(2), 4), P.nm_mask(torch.ones(4, 8), 2, 4))
