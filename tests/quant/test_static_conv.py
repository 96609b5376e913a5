"""Observers against plain-PyTorch statistics, INT8 convolutions against fp32 and against their
dequantized-weight reference, static calibration, DCGAN / Beta-VAE integer end to end."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import edgegen  # noqa: F401
from edgegen.ops._fallback_quant import int8_conv2d_fallback, int8_conv_transpose2d_fallback
from edgegen.models.dcgan import DCGANDiscriminator, DCGANGenerator
from edgegen.models.vae import BetaVAE
from edgegen.quant import (
    Int8Conv2d,
    Int8ConvTranspose2d,
    Int8DynamicConfig,
    Int8Linear,
    Int8StaticConfig,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    PercentileObserver,
    fake_quantize,
    qparams_from_range,
    quantize_,
)


def test_minmax_ops_and_observers_match_torch():
    x = torch.randn(6, 5, 4)
    lo, hi = torch.ops.edgegen.observe_minmax(x, 1)
    assert torch.equal(lo, x.amin(dim=(0, 2))) and torch.equal(hi, x.amax(dim=(0, 2)))
    obs = MinMaxObserver(axis=1)
    obs(x)
    obs(x * 2)
    assert torch.equal(obs.min_val, (2 * x).amin(dim=(0, 2))) and torch.equal(obs.max_val, (2 * x).amax(dim=(0, 2)))
    ema = MovingAverageMinMaxObserver(averaging_constant=0.5)
    ema(x)
    ema(x * 3)
    assert torch.allclose(ema.max_val, x.max() + 0.5 * (3 * x.max() - x.max()))
    for dtype in (torch.bfloat16, torch.float64):
        lo, hi = torch.ops.edgegen.observe_minmax(x.to(dtype), None)
        assert lo.item() == x.to(dtype).min().float().item() and hi.item() == x.to(dtype).max().float().item()


@pytest.mark.parametrize("axis", [None, 1], ids=["per-tensor", "per-channel"])
def test_moving_average_observer_follows_the_ema_of_the_batch_extremes(axis):
    # c = 0.1 weights the newest batch by c and the running value by 1 - c (asymmetric, unlike
    # c = 0.5); the first batch initialises the averages.
    c = 0.1
    batches = [torch.randn(6, 5, 4), torch.randn(6, 5, 4) * 4 + 1, torch.randn(6, 5, 4) * 0.5 - 2]
    dims = (0, 1, 2) if axis is None else (0, 2)
    ema = MovingAverageMinMaxObserver(averaging_constant=c, axis=axis)
    want_lo = want_hi = None
    for x in batches:
        ema(x)
        xd = x.double()
        lo, hi = xd.amin(dim=dims).reshape(-1), xd.amax(dim=dims).reshape(-1)  # per tensor: shape (1,)
        if want_lo is None:
            want_lo, want_hi = lo, hi
        else:
            want_lo, want_hi = (1 - c) * want_lo + c * lo, (1 - c) * want_hi + c * hi
        torch.testing.assert_close(ema.min_val.double(), want_lo, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(ema.max_val.double(), want_hi, rtol=1e-6, atol=1e-6)


def test_histogram_equals_torch_histc():
    x = torch.randn(100_000)
    counts = torch.ops.edgegen.observe_histogram(x, 64, -2.0, 2.0)
    ref = torch.histc(x.clamp(-2, 2), 64, -2, 2)
    assert counts.sum() == x.numel() and torch.allclose(counts.float(), ref, atol=2)  # bin-edge rounding


def test_qparams_conventions():
    s, z = qparams_from_range(torch.tensor([-1.0]), torch.tensor([3.0]), 0, 255)
    assert torch.allclose(s, torch.tensor([4.0 / 255])) and z.item() == 64
    s, z = qparams_from_range(torch.tensor([-1.0]), torch.tensor([3.0]), -127, 127, symmetric=True)
    assert torch.allclose(s, torch.tensor([3.0 / 127])) and z.item() == 0
    s, z = qparams_from_range(torch.tensor([0.5]), torch.tensor([2.0]), 0, 127)  # the range always includes 0
    assert z.item() == 0 and torch.allclose(s, torch.tensor([2.0 / 127]))
    # Symmetric on an unsigned range: the zero point in the middle, (qmin + qmax + 1) // 2.
    s, z = qparams_from_range(torch.tensor([-1.0]), torch.tensor([3.0]), 0, 255, symmetric=True)
    assert torch.allclose(s, torch.tensor([3.0 / 127.5])) and z.item() == 128
    s, z = qparams_from_range(torch.tensor([-2.0, 0.0]), torch.tensor([1.0, 0.5]), 0, 127, symmetric=True)
    assert torch.allclose(s, torch.tensor([2.0, 0.5]) / 63.5) and z.tolist() == [64, 64]


def test_percentile_and_mse_observers_clip_outliers():
    torch.manual_seed(1)
    x = torch.randn(200_000)
    x[:10] = 30.0  # a few outliers: clipping them costs less squared error than coarse steps for all
    mm, pct, mse = MinMaxObserver(), PercentileObserver(percentile=99.9), MSEObserver(steps=200)
    for obs in (mm, pct, mse):
        obs(x[:100_000])
        obs(x[100_000:] * 1.5)  # a wider second batch: the histogram is re-binned
    s_mm = mm.calculate_qparams()[0].item()
    s_pct = pct.calculate_qparams()[0].item()
    s_mse = mse.calculate_qparams()[0].item()
    data = torch.cat([x[:100_000], x[100_000:] * 1.5])
    want = (torch.quantile(data, 0.999) - torch.quantile(data, 0.001)).item() / 127
    assert s_pct == pytest.approx(want, rel=0.05) and s_pct < s_mm / 3 and s_mse < s_mm
    # On the data both saw, the MSE choice errs no more than min/max's: the full observed range is
    # one of its candidates.
    def err(s, z):
        return (fake_quantize(data, s, z, 0, 127) - data).double().pow(2).sum().item()
    e_mse = err(*[t.item() for t in mse.calculate_qparams()])
    e_mm = err(*[t.item() for t in mm.calculate_qparams()])
    assert e_mse < e_mm  # strictly: clipping the outliers pays here


def test_percentile_observer_rebins_a_straddling_bin_by_its_centre():
    # 4 bins over [-3, 1] (width 1), then [-3, 2.6] (width 1.4): the old bin [-2, -1) straddles the
    # new edge -1.6; its centre -1.5 (and its 20 values at -1.3) lie in the new bin [-1.6, -0.2).
    # Below -1.6: 1 of 100 values, then 21: lower = -1.6; [1.2, 2.6] holds the last 78: upper = 2.6.
    obs = PercentileObserver(percentile=90.0, bins=4)  # quant range [0, 127]
    obs(torch.cat([torch.tensor([-3.0, 1.0]), torch.full((20,), -1.3)]))
    obs(torch.cat([torch.tensor([2.6]), torch.full((77,), 2.0)]))
    assert obs.histogram.tolist() == [1.0, 20.0, 1.0, 78.0]
    s, z = obs.calculate_qparams()
    assert s.item() == pytest.approx(4.2 / 127, rel=1e-5)  # 2.6 - (-1.6)
    assert z.item() == round(1.6 / (4.2 / 127))  # 48


def _percentile_clip_range(obs, sign):
    """The observer's (lower, upper) clip bound read back from its qparams: with data of one sign
    the range's other end is 0, so scale * (qmax - qmin) is the bound itself."""
    s, z = obs.calculate_qparams()
    assert z.item() == (obs.quant_min if sign > 0 else obs.quant_max)
    return s.double().item() * (obs.quant_max - obs.quant_min)


@pytest.mark.parametrize("sign", [1, -1], ids=["upper", "lower"])
def test_percentile_observer_clips_within_one_bin_of_the_float64_quantile(sign):
    # Upper bound: the right edge of the bin holding the q-quantile, so in [quantile, quantile + w];
    # lower bound: the left edge of the bin holding the (1 - q)-quantile, in [quantile - w, quantile].
    torch.manual_seed(3)
    x = sign * (torch.randn(60_000).abs() + 0.25)
    x[:20] = sign * 12.0  # a few outliers beyond the percentile
    obs = PercentileObserver(percentile=99.0, bins=512, quant_min=0, quant_max=255)
    obs(x)
    xd = x.double()
    w = (xd.max() - xd.min()).item() / 512
    slack = 1e-5 * xd.abs().max().item()  # float32 bounds and scale
    if sign > 0:
        q = torch.quantile(xd, 0.99).item()
        upper = _percentile_clip_range(obs, sign)
        assert q - slack <= upper <= q + w + slack
    else:
        q = torch.quantile(xd, 0.01).item()
        lower = -_percentile_clip_range(obs, sign)
        assert q - w - slack <= lower <= q + slack


def test_percentile_observer_on_mixed_signs_spans_the_quantiles_within_two_bins():
    torch.manual_seed(4)
    x = torch.randn(60_000) * 2 + 0.5
    x[:30] = -15.0
    x[30:60] = 20.0
    obs = PercentileObserver(percentile=99.5, bins=1024, quant_min=0, quant_max=255)
    obs(x)
    xd = x.double()
    w = (xd.max() - xd.min()).item() / 1024
    width = (torch.quantile(xd, 0.995) - torch.quantile(xd, 0.005)).item()
    s = obs.calculate_qparams()[0].double().item() * 255
    assert width - 1e-4 <= s <= width + 2 * w + 1e-4


def test_percentile_observer_rebins_a_growing_range_exactly():
    # The range doubles twice around 0 (16 bins over [-1, 1], [-2, 2], [-4, 4]): each re-binning
    # merges neighbouring pairs, so the final histogram is the one of all 1000 values over [-4, 4]
    # (bin width 0.5). Below -1.5: 2 values (-4, -2); in [-1.5, -1): the 150 at -1.3, cumulative
    # 0.152 >= 0.1, so lower = -1.5. Below 0.5: 847 values (0.847 < 0.9); [0.5, 1) adds the 150 at
    # 0.8 and the 1 (0.998 >= 0.9), so upper = 1.0.
    def batch(*pairs):
        return torch.cat([torch.full((n,), v) for v, n in pairs])

    obs = PercentileObserver(percentile=90.0, bins=16)  # quant range [0, 127]
    obs(batch((-1.0, 1), (1.0, 1), (0.8, 150), (0.05, 48)))
    obs(batch((-2.0, 1), (2.0, 1), (-1.3, 150), (0.05, 248)))
    obs(batch((-4.0, 1), (4.0, 1), (0.05, 398)))
    assert obs.histogram.sum().item() == 1000
    assert obs.min_val.item() == -4.0 and obs.max_val.item() == 4.0
    s, z = obs.calculate_qparams()
    assert s.item() == pytest.approx(2.5 / 127, rel=1e-6)  # upper - lower = 1.0 - (-1.5)
    assert z.item() == round(1.5 / (2.5 / 127))  # 76: lower = -z * scale


def test_mse_clip_range_is_the_argmin():
    x = torch.randn(5000)
    lo, hi = torch.ops.edgegen.mse_clip_range(x, -4.0, 4.0, 0, 127, 20)
    errs = []
    for s in range(1, 21):
        sc, zp = qparams_from_range(torch.tensor([-4.0 * s / 20]), torch.tensor([4.0 * s / 20]), 0, 127)
        errs.append(((fake_quantize(x, sc, zp.int(), 0, 127) - x).double().pow(2).sum().item(), s))
    best = min(errs)[1]
    assert lo == pytest.approx(-4.0 * best / 20) and hi == pytest.approx(4.0 * best / 20)


@pytest.mark.parametrize("qmin, qmax, mid", [(0, 255, 128), (-127, 127, 0)], ids=["u8", "s8-narrow"])
def test_symmetric_mse_observer_equals_a_float64_search_over_plus_minus_amax(qmin, qmax, mid):
    # Skewed data (mostly positive, max 6, min about -0.9): the candidates are [-amax, amax] * s /
    # steps, not [min, max] * s / steps (whose best choice here is the whole range).
    torch.manual_seed(5)
    x = torch.randn(8000) * 0.5 + 1.0
    x[:2] = 6.0
    steps = 40
    obs = MSEObserver(steps=steps, symmetric=True, quant_min=qmin, quant_max=qmax)
    obs(x[:4000])
    obs(x[4000:])
    xd = x.double()
    amax = max(-xd.min().item(), xd.max().item())
    errs = []
    for k in range(1, steps + 1):
        scale = amax * k / steps / ((qmax - qmin) / 2)
        q = torch.clamp(torch.round(xd / scale) + mid, qmin, qmax)
        errs.append(((q - mid) * scale - xd).pow(2).sum().item())
    best = min(range(steps), key=lambda k: errs[k]) + 1
    assert best < steps  # an interior optimum: the outliers are clipped
    s, z = obs.calculate_qparams()
    assert z.item() == mid
    assert s.item() == pytest.approx(amax * best / steps / ((qmax - qmin) / 2), rel=1e-5)


@pytest.mark.parametrize("cfg", [dict(k=3, s=1, p=1), dict(k=4, s=2, p=1), dict(k=1, s=1, p=0), dict(k=3, s=2, p=0, d=2)])
@pytest.mark.parametrize("static", [False, True])
def test_int8_conv2d_equals_its_integer_reference(cfg, static):
    conv = nn.Conv2d(5, 7, cfg["k"], cfg["s"], cfg["p"], dilation=cfg.get("d", 1))
    x = torch.randn(3, 5, 13, 11)
    q = Int8Conv2d.from_float(conv, (0.05, 60) if static else None)
    # Reference: the same arithmetic in PyTorch (fake-quantized input, dequantized weight).
    from edgegen.ops._reference import quantize_activations_u7_reference

    s_a, z_a = (0.05, 60) if static else quantize_activations_u7_reference(x)[1:]
    kh, kw = conv.kernel_size
    w = q.gemm.dequantized_weight().reshape(7, kh, kw, -1)[..., :5].permute(0, 3, 1, 2)
    want = F.conv2d(fake_quantize(x, s_a, z_a, 0, 127), w, conv.bias, conv.stride, conv.padding, conv.dilation)
    torch.testing.assert_close(q(x), want.detach(), rtol=1e-5, atol=1e-5)
    ref = conv(x).detach()
    assert q(x).shape == ref.shape
    if not static:  # stated tolerance: within 4% of the output range
        assert (q(x) - ref).abs().max() <= 0.04 * ref.abs().max()


@pytest.mark.parametrize("cfg", [dict(k=4, s=2, p=1, op=0), dict(k=4, s=1, p=0, op=0), dict(k=3, s=2, p=1, op=1),
                                 dict(k=5, s=3, p=2, op=0), dict(k=2, s=3, p=0, op=2), dict(k=3, s=2, p=0, op=0, d=2),
                                 dict(k=4, s=2, p=1, op=0, c=3)])
def test_int8_conv_transpose2d_matches_fp32(cfg):
    # Phase decomposition for every stride/kernel/padding combination here; dilation and narrow
    # outputs (c=3) take col2im.
    conv = nn.ConvTranspose2d(6, cfg.get("c", 16), cfg["k"], cfg["s"], cfg["p"], output_padding=cfg["op"],
                              dilation=cfg.get("d", 1))
    x = torch.randn(2, 6, 5, 7)
    q = Int8ConvTranspose2d.from_float(conv)
    ref = conv(x).detach()
    out = q(x)
    assert out.shape == ref.shape
    assert (out - ref).abs().max() <= 0.04 * ref.abs().max()
    # With exactly representable weights and inputs the integer path is exact up to float rounding.
    exact = nn.ConvTranspose2d(6, cfg.get("c", 16), cfg["k"], cfg["s"], cfg["p"], output_padding=cfg["op"], bias=False,
                               dilation=cfg.get("d", 1))
    with torch.no_grad():
        exact.weight.copy_(torch.randint(-127, 128, exact.weight.shape).float() / 127)
        exact.weight[0] = 1.0  # every (output channel, kernel position) row has max |w| = 1: scale 1/127
    qe = Int8ConvTranspose2d.from_float(exact)
    xe = torch.randint(0, 128, x.shape).float() / 127  # 7-bit grid in [0, 1], zero point 0
    xe.view(-1)[0] = 1.0
    torch.testing.assert_close(qe(xe), exact(xe).detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make", [DCGANGenerator, DCGANDiscriminator, BetaVAE])
@pytest.mark.parametrize("observer", [None, "minmax", "percentile", "mse"])
def test_image_models_run_integer_end_to_end(make, observer):
    torch.manual_seed(0)
    model = make().eval()
    x = model.example_inputs(4)
    with torch.no_grad():
        ref = model(*x)
    ref = ref if isinstance(ref, torch.Tensor) else ref["recon"]
    cfg = Int8DynamicConfig() if observer is None else Int8StaticConfig(batches=3, observer=observer)
    calibration = None if observer is None else [model.example_inputs(4) for _ in range(3)]
    quantize_(model, cfg, calibration=calibration)
    kinds = {type(m) for m in model.modules()}
    assert not ({nn.Conv2d, nn.ConvTranspose2d, nn.Linear} & kinds)  # every layer is integer now
    assert kinds & {Int8Conv2d, Int8ConvTranspose2d, Int8Linear}
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(0)
        out = model(*x)
    out = out if isinstance(out, torch.Tensor) else out["recon"]
    assert out.shape == ref.shape and bool(torch.isfinite(out).all())
    # Untrained weights, ten quantized layers, 7-bit activations: within 15% of the output range.
    assert (out - ref).abs().max() <= 0.15 * ref.abs().max()


def test_static_state_dict_round_trip():
    lin = nn.Linear(16, 8)
    q = Int8Linear.from_float(lin, (0.02, 64))
    fresh = Int8Linear(16, 8)
    fresh.load_state_dict(q.state_dict())
    x = torch.randn(3, 16)
    assert fresh.static and torch.equal(fresh(x), q(x))


@pytest.mark.parametrize("call,exc,match", [
    (lambda: quantize_(nn.Sequential(nn.Linear(2, 2)), Int8StaticConfig()), ValueError, "calibration"),
    (lambda: Int8StaticConfig(batches=0), ValueError, "batches"),
    (lambda: Int8StaticConfig(observer="kl"), ValueError, "observer"),
    (lambda: quantize_(nn.Sequential(nn.Linear(2, 2)), Int8StaticConfig(), calibration=[]), ValueError, "no batches"),
    (lambda: quantize_(nn.Sequential(nn.Linear(2, 2)), Int8DynamicConfig(), calibration=[torch.ones(1, 2)]),
     ValueError, "calibration: Int8DynamicConfig does not take calibration"),
    (lambda: Int8Conv2d.from_float(nn.Conv2d(4, 4, 3, groups=2)), ValueError, "grouped"),
    (lambda: Int8Linear.from_float(nn.Linear(2, 2), (0.0, 3)), ValueError, "act_qparams"),
    (lambda: Int8Linear.from_float(nn.Linear(2, 2), (0.1, 200)), ValueError, "act_qparams"),
    (lambda: MinMaxObserver().calculate_qparams(), RuntimeError, "no data"),
    (lambda: MinMaxObserver(quant_min=5, quant_max=5), ValueError, "quant_min"),
    (lambda: PercentileObserver(percentile=20), ValueError, "percentile"),
    (lambda: torch.ops.edgegen.observe_minmax(torch.tensor([1.0, float("nan")]), None), ValueError, "NaN"),
    (lambda: torch.ops.edgegen.observe_histogram(torch.randn(3), 0, 0.0, 1.0), ValueError, "bins"),
    (lambda: torch.ops.edgegen.int8_linear_static(torch.randn(2, 4), 0.1, 200,
                                                  *torch.ops.edgegen.int8_pack_weight(torch.zeros(3, 4, dtype=torch.int8)),
                                                  torch.ones(3), None, 3, 4), ValueError, "a_zero_point"),
], ids=lambda x: x if isinstance(x, str) else "")
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_opcheck_observer_ops():
    torch.library.opcheck(torch.ops.edgegen.observe_minmax, (torch.randn(4, 3), 1))
    torch.library.opcheck(torch.ops.edgegen.observe_histogram, (torch.randn(40), 8, -1.0, 1.0))
    torch.library.opcheck(torch.ops.edgegen.int8_linear_static,
                          (torch.randn(2, 4), 0.1, 3, *torch.ops.edgegen.int8_pack_weight(
                              torch.randint(-127, 128, (3, 4), dtype=torch.int8)), torch.ones(3), None, 3, 4))


def test_opcheck_int8_conv2d():
    q = Int8Conv2d.from_float(nn.Conv2d(3, 5, 3, 2, 1))
    g = q.gemm
    torch.library.opcheck(torch.ops.edgegen.int8_conv2d,
                          (torch.randn(2, 3, 7, 6), g.packed_weight, g.weight_row_sum, g.weight_scale, g.bias, 5,
                           [3, 3], [2, 2], [1, 1], [1, 1], 0.0, 0))


@pytest.mark.parametrize("call,match", [
    (lambda g: torch.ops.edgegen.int8_conv2d(torch.randn(2, 3, 7), g.packed_weight, g.weight_row_sum, g.weight_scale,
                                             None, 5, [3, 3], [1, 1], [0, 0], [1, 1], 0.0, 0), "input"),
    (lambda g: torch.ops.edgegen.int8_conv2d(torch.randn(2, 3, 7, 7), g.packed_weight, g.weight_row_sum,
                                             g.weight_scale, None, 5, [3, 3], [0, 1], [0, 0], [1, 1], 0.0, 0), "stride"),
    (lambda g: torch.ops.edgegen.int8_conv2d(torch.randn(2, 3, 2, 2), g.packed_weight, g.weight_row_sum,
                                             g.weight_scale, None, 5, [3, 3], [1, 1], [0, 0], [1, 1], 0.0, 0), "too small"),
    (lambda g: torch.ops.edgegen.int8_conv2d(torch.randn(2, 4, 7, 7), g.packed_weight, g.weight_row_sum,
                                             g.weight_scale, None, 5, [5, 5], [1, 1], [0, 0], [1, 1], 0.0, 0),
     "packed_weight"),
])
def test_int8_conv2d_bad_input(call, match):
    g = Int8Conv2d.from_float(nn.Conv2d(3, 5, 3)).gemm
    with pytest.raises(ValueError, match=match):
        call(g)


@pytest.mark.parametrize("conv, shape", [
    (lambda: nn.Conv2d(4, 16, 5, stride=4), (1, 4, 2, 9)),  # last window start -2: truncating division gave 1 row
    (lambda: nn.Conv2d(4, 8, 4, 2, 1), (1, 4, 1, 1)),  # padded 3x3 against a 4x4 kernel
    (lambda: nn.Conv2d(4, 8, 3, 3, dilation=2), (2, 4, 4, 9)),  # dilated kernel spans 5 rows
], ids=["stride4", "padded-1x1", "dilated"])
def test_input_smaller_than_the_kernel_raises_like_torch(conv, shape):
    float_conv = conv()
    x = torch.randn(*shape)
    with pytest.raises(RuntimeError, match="Kernel size can't be greater than actual input"):
        float_conv(x)  # what float PyTorch says of the same call
    q = Int8Conv2d.from_float(float_conv)
    with pytest.raises(ValueError, match="input: spatial size .* is too small for the kernel"):
        q(x)
    g = q.gemm
    with pytest.raises(ValueError, match="input: spatial size .* is too small for the kernel"):
        int8_conv2d_fallback(x, g.packed_weight, g.weight_row_sum, g.weight_scale, g.bias, float_conv.out_channels,
                             list(float_conv.kernel_size), list(float_conv.stride), list(float_conv.padding),
                             list(float_conv.dilation), 0.0, 0)


def test_int8_conv_transpose2d_op_equals_the_phase_by_phase_reference():
    conv = nn.ConvTranspose2d(8, 16, 4, 2, 1)
    x = torch.randn(3, 8, 5, 6)
    q = Int8ConvTranspose2d.from_float(conv)
    fused = q(x)  # the C++ op: one quantization, every phase written in place
    g = q.phases
    args = (x, [p.packed_weight for p in g], [p.weight_row_sum for p in g], g[0].weight_scale, q.bias,
            16, [v for t in q.phase_taps for v in t], [2, 2], [1, 1], [10, 12], 0.0, 0)
    # The other devices' kernel: each phase a float64 convolution of the integer codes.
    torch.testing.assert_close(fused, int8_conv_transpose2d_fallback(*args), rtol=1e-6, atol=1e-6)
    torch.library.opcheck(torch.ops.edgegen.int8_conv_transpose2d, args)
