"""Low-rank factorization (reduce_ with LowRankConfig): SVD against float64 references, the
physically reduced GPT-2 against the dense one, save/load/export round trips, bad configs."""

import copy
import re

import pytest
import torch
from torch import nn

from edgegen.config import from_dict
from edgegen.models import GPT2, GPT2Config
from edgegen.reduce import LowRankConfig, LowRankLinear, ReduceConfig, energy_rank, lowrank_layout, plan_ranks, reduce_

CFG = GPT2Config(vocab_size=101, n_positions=32, n_embd=48, n_layer=2, n_head=4)


def linear(i, o, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return nn.Linear(i, o, dtype=dtype)


@pytest.mark.parametrize("shape", [(16, 24), (24, 16), (20, 20)], ids=["wide", "tall", "square"])
def test_full_rank_equals_the_dense_layer(shape):
    lin = linear(*shape)
    low = LowRankLinear.from_linear(lin, min(shape))
    x = torch.randn(7, shape[0], dtype=torch.float64)
    torch.testing.assert_close(low(x), lin(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rank", [1, 3, 8, 15])
def test_the_error_is_the_discarded_energy(rank):
    lin = linear(24, 16, seed=rank)
    s = torch.linalg.svdvals(lin.weight.detach())
    low = LowRankLinear.from_linear(lin, rank)
    err = (lin.weight - low.weight_product()).pow(2).sum()
    torch.testing.assert_close(err, s[rank:].pow(2).sum(), rtol=1e-9, atol=1e-12)
    assert low.down.weight.shape == (rank, 24) and low.up.weight.shape == (16, rank)
    torch.testing.assert_close(low.up.bias, lin.bias, rtol=0, atol=0)


def test_energy_rank_is_the_smallest_rank_keeping_the_energy():
    s = torch.tensor([4.0, 2.0, 1.0, 0.5], dtype=torch.float64)
    sq = s.pow(2)
    for e in (0.1, 0.75, 0.76, 0.95, 0.99, 1.0):
        brute = next(r for r in range(1, 5) if sq[:r].sum() / sq.sum() >= e - 1e-12)
        assert energy_rank(s, e) == brute, e
    assert energy_rank(torch.zeros(3), 0.9) == 1


def test_reduced_gpt2_computes_the_factorized_weights_and_keeps_the_tied_head():
    torch.manual_seed(0)
    model = GPT2(CFG).eval()
    dense = {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    reduce_(model, LowRankConfig(rank=8))
    layout = lowrank_layout(model)
    # every block's fused QKV, attention output and both MLP projections; not the tied head
    assert sorted(layout) == sorted(f"h.{i}.{p}" for i in range(2) for p in ("attn.c_attn", "attn.c_proj", "mlp.c_fc",
                                                                            "mlp.c_proj"))
    assert isinstance(model.lm_head, nn.Linear) and model.lm_head.weight is model.wte.weight
    for name, r in layout.items():
        m = model.get_submodule(name)
        s = torch.linalg.svdvals(dense[name].double())
        err = (dense[name].double() - m.weight_product().double()).pow(2).sum()
        torch.testing.assert_close(err, s[r:].pow(2).sum(), rtol=1e-4, atol=1e-6)
    idx = torch.randint(0, 101, (2, 12))
    a = model.generate(idx[:, :4], 10, greedy=True, use_cache=True)
    b = model.generate(idx[:, :4], 10, greedy=True, use_cache=False)
    assert torch.equal(a, b)


def test_a_reduced_model_saves_and_loads_through_its_layout(tmp_path):
    torch.manual_seed(0)
    model = reduce_(GPT2(CFG).eval(), LowRankConfig(energy=0.6))
    layout = lowrank_layout(model)
    torch.save(model.state_dict(), tmp_path / "reduced.pt")
    fresh = reduce_(GPT2(CFG).eval(), LowRankConfig(ranks=layout))  # the same structure, other weights
    fresh.load_state_dict(torch.load(tmp_path / "reduced.pt"))
    idx = torch.randint(0, 101, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(fresh(idx), model(idx), rtol=0, atol=0)
    assert from_dict(ReduceConfig, LowRankConfig(ranks=layout).to_dict()) == LowRankConfig(ranks=layout)


def test_reduced_gpt2_exports_to_onnx(tmp_path):
    pytest.importorskip("onnxruntime", reason="the export extra (onnx, onnxruntime) is not installed")
    from edgegen.export import export_onnx, run_onnx

    torch.manual_seed(0)
    model = reduce_(GPT2(CFG).eval(), LowRankConfig(rank=8))
    idx = torch.randint(0, 101, (1, 16))
    exp = export_onnx(model, (idx,), tmp_path / "reduced.onnx")  # checked against PyTorch inside
    with torch.no_grad():
        ref = model(idx)
    torch.testing.assert_close(torch.from_numpy(run_onnx(exp.path, (idx,))[0]), ref, rtol=1e-4, atol=1e-4)


def test_quantization_applies_to_the_thin_layers():
    from edgegen.quant import Int8DynamicConfig, Int8Linear, quantize_

    torch.manual_seed(0)
    model = reduce_(GPT2(CFG).eval(), LowRankConfig(rank=8))
    idx = torch.randint(0, 101, (2, 12))
    with torch.no_grad():
        ref = model(idx)
    quantize_(model, Int8DynamicConfig())
    assert isinstance(model.h[0].attn.c_attn.down, Int8Linear) and isinstance(model.h[0].mlp.c_fc.up, Int8Linear)
    with torch.no_grad():
        out = model(idx)
    assert torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0) > 0.99


def test_only_layers_that_get_smaller_are_factorized():
    model = nn.Sequential(linear(64, 64, dtype=torch.float32), linear(64, 4, dtype=torch.float32))
    plan = plan_ranks(model, LowRankConfig(energy=1.0))  # full energy: full rank, never smaller
    assert plan == {}
    with pytest.raises(ValueError, match="nothing to reduce"):
        reduce_(model, LowRankConfig(energy=1.0))
    assert plan_ranks(model, LowRankConfig(rank=16), filter_fn=lambda m, n: n == "0") == {"0": 16}  # 16 * 128 < 4096
    assert "1" not in plan_ranks(model, LowRankConfig(energy=0.99))  # 64 -> 4: r * 68 >= 256 for r = 4


def test_layers_inside_pytorch_attention_are_left_dense():
    """nn.MultiheadAttention (in nn.TransformerEncoderLayer) reads its projections' .weight
    itself: only the plain Linear after it is factorized."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.TransformerEncoderLayer(64, 4, 256, dropout=0.0, batch_first=True, dtype=torch.float64),
                          linear(64, 64)).eval()
    encoder = copy.deepcopy(model[0])
    w, b = model[1].weight.detach().clone(), model[1].bias.detach().clone()
    assert plan_ranks(model, LowRankConfig(rank=4)) == {"1": 4}
    reduce_(model, LowRankConfig(rank=4))
    assert lowrank_layout(model) == {"1": 4} and isinstance(model[1], LowRankLinear)
    for name, m in model[0].named_modules():
        if isinstance(m, nn.Linear):
            assert type(m) is type(encoder.get_submodule(name))
            assert torch.equal(m.weight, encoder.get_submodule(name).weight)
    # the reduced model runs: the encoder as before, then the rank-4 truncated SVD of the Linear
    x = torch.randn(2, 5, 64, dtype=torch.float64)
    u, sv, vh = torch.linalg.svd(w, full_matrices=False)
    w4 = u[:, :4] @ torch.diag(sv[:4]) @ vh[:4]
    with torch.no_grad():
        out = model(x)
        expected = encoder(x) @ w4.T + b
    assert out.shape == (2, 5, 64)
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("make,exc,match", [
    (lambda: LowRankConfig(rank=0), ValueError, "rank: expected an int >= 1"),
    (lambda: LowRankConfig(energy=0.0), ValueError, "energy"),
    (lambda: LowRankConfig(energy=1.5), ValueError, "energy"),
    (lambda: LowRankConfig(rank=4, ranks={"a": 2}), ValueError, "ranks: give either"),
    (lambda: LowRankConfig(ranks={"a": 0}), ValueError, r"ranks\.a"),
    (lambda: reduce_(nn.Sequential(nn.Linear(8, 4)), LowRankConfig(rank=5)), ValueError,
     r"rank: 5 exceeds min\(in, out\) = 4 of 0"),
    (lambda: reduce_(nn.Sequential(nn.Linear(8, 4)), LowRankConfig(ranks={"1": 2})), ValueError, r"ranks\.1: no Linear"),
    (lambda: reduce_(nn.Sequential(nn.Linear(8, 4)), {"kind": "MagnitudeConfig", "amount": 0.5}), ValueError, "kind"),
    (lambda: reduce_(nn.Sequential(nn.Linear(8, 4)), {"kind": "LowRankConfig", "rnk": 2}), ValueError, "rnk: unknown"),
    (lambda: reduce_("model", LowRankConfig()), TypeError, "model"),
    (lambda: reduce_(nn.Linear(8, 4), LowRankConfig(), filter_fn=1), TypeError, "filter_fn"),
    (lambda: LowRankLinear(8, 4, 5), ValueError, "rank"),
], ids=["rank0", "energy0", "energy-big", "rank-and-ranks", "ranks-0", "rank-above-min", "ranks-unknown",
        "wrong-family", "unknown-key", "not-a-model", "bad-filter", "module-rank"])
def test_bad_input_names_the_field(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_parameter_count_matches_the_plan():
    torch.manual_seed(0)
    model = GPT2(CFG)
    before = model.num_parameters()
    plan = plan_ranks(model, LowRankConfig(rank=6))
    saved = sum(model.get_submodule(n).in_features * model.get_submodule(n).out_features
                - r * (model.get_submodule(n).in_features + model.get_submodule(n).out_features) for n, r in plan.items())
    reduce_(model, LowRankConfig(rank=6))
    assert model.num_parameters() == before - saved
    # by hand: four layers per block, r (in + out) instead of in * out (plus the unchanged biases)
    by_hand = 2 * sum(i * o - 6 * (i + o) for i, o in ((48, 144), (48, 48), (48, 192), (192, 48)))
    assert saved == by_hand


@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 0), (1, 1)], ids=["plain", "stride2", "padded"])
def test_pointwise_convolutions_factorize_like_linear_layers(stride, padding):
    from edgegen.reduce import LowRankConv1x1

    torch.manual_seed(0)
    conv = nn.Conv2d(24, 16, 1, stride=stride, padding=padding, dtype=torch.float64)
    x = torch.randn(2, 24, 7, 7, dtype=torch.float64)
    full = LowRankConv1x1.from_conv(conv, 16)
    torch.testing.assert_close(full(x), conv(x), rtol=1e-12, atol=1e-12)
    s = torch.linalg.svdvals(conv.weight.detach()[:, :, 0, 0])
    low = LowRankConv1x1.from_conv(conv, 5)
    err = (conv.weight[:, :, 0, 0] - low.weight_product()).pow(2).sum()
    torch.testing.assert_close(err, s[5:].pow(2).sum(), rtol=1e-9, atol=1e-12)
    # the two convolutions compute the dense 1x1 convolution with the product weight
    dense = torch.nn.functional.conv2d(x, low.weight_product()[:, :, None, None], conv.bias, stride, padding)
    torch.testing.assert_close(low(x), dense, rtol=1e-12, atol=1e-12)


def test_reduce_factorizes_the_pointwise_convolutions_of_a_separable_generator():
    import copy

    from edgegen.models import DCGANConfig, DCGANGenerator
    from edgegen.reduce import LowRankConv1x1, is_pointwise

    torch.manual_seed(0)
    g = DCGANGenerator(DCGANConfig(nz=16, ngf=32, conv="depthwise_separable")).eval()
    pointwise = [n for n, m in g.named_modules() if is_pointwise(m)]
    wide = lambda m, n: min(getattr(m, "in_channels", 0), getattr(m, "out_channels", 0)) >= 4  # noqa: E731 (not RGB)
    with pytest.raises(ValueError, match=r"rank: 4 exceeds min\(in, out\) = 3"):
        reduce_(copy.deepcopy(g), LowRankConfig(rank=4))  # the last 1x1 convolution outputs 3 channels
    plan = plan_ranks(g, LowRankConfig(rank=4), filter_fn=wide)
    assert plan and set(plan) <= set(pointwise)  # the 1x1 convolutions where rank 4 is smaller, nothing else
    ref = copy.deepcopy(g)
    reduce_(g, LowRankConfig(rank=4), filter_fn=wide)
    assert lowrank_layout(g) == plan and all(isinstance(g.get_submodule(n), LowRankConv1x1) for n in plan)
    for name in plan:  # the reference: each factorized convolution's product written back densely
        ref.get_submodule(name).weight.data.copy_(g.get_submodule(name).weight_product()[:, :, None, None])
    z = torch.randn(3, 16)
    with torch.no_grad():
        torch.testing.assert_close(g(z), ref(z), rtol=1e-5, atol=1e-5)


def test_fraction_sets_each_layers_rank_from_its_own_width():
    model = nn.Sequential(linear(64, 48, dtype=torch.float32), linear(48, 16, dtype=torch.float32))
    assert plan_ranks(model, LowRankConfig(fraction=0.25)) == {"0": 12, "1": 4}  # ceil(0.25 * min(in, out))
    assert plan_ranks(model, LowRankConfig(fraction=0.3)) == {"0": 15, "1": 5}
    with pytest.raises(ValueError, match=r"fraction: expected a fraction in \(0, 1\]"):
        LowRankConfig(fraction=0.0)
    with pytest.raises(ValueError, match="fraction: give one of rank, ranks and fraction"):
        LowRankConfig(rank=2, fraction=0.5)


def _decaying(i, o, decay, seed):
    """nn.Linear(i, o) (float32) whose weight has singular values decay ** k, k = 0 .. min - 1."""
    g = torch.Generator().manual_seed(seed)
    n = min(i, o)
    u = torch.linalg.qr(torch.randn(o, n, generator=g, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(i, n, generator=g, dtype=torch.float64))[0]
    lin = nn.Linear(i, o)
    with torch.no_grad():
        lin.weight.copy_(u @ torch.diag(decay ** torch.arange(n, dtype=torch.float64)) @ v.T)
    return lin


@pytest.mark.parametrize("energy", [0.5, 0.8, 0.9, 0.97], ids=["50pct", "80pct", "90pct", "97pct"])
def test_energy_plans_the_smallest_rank_keeping_that_energy(energy):
    """Each layer's rank: the smallest r with sum(s[:r]^2) >= energy * sum(s^2), s the float64
    singular values of its weight; layers where r (in + out) >= in * out are left out."""
    model = nn.Sequential(_decaying(64, 48, 0.8, 0), nn.ReLU(), _decaying(48, 40, 0.9, 1), nn.ReLU(),
                          _decaying(40, 8, 0.97, 2), nn.ReLU(), linear(32, 24, seed=3, dtype=torch.float32))
    expected = {}
    for name in ("0", "2", "4", "6"):
        w = model.get_submodule(name).weight.detach().double()
        sq = torch.linalg.svdvals(w).pow(2)
        share = [float(sq[:r].sum() / sq.sum()) for r in range(1, len(sq) + 1)]
        assert min(abs(f - energy) for f in share) > 1e-6  # no rank on the boundary
        r = next(r for r, f in enumerate(share, 1) if f >= energy)
        if r * (w.shape[0] + w.shape[1]) < w.shape[0] * w.shape[1]:
            expected[name] = r
    assert {"0", "2"} <= set(expected)  # the decaying layers are factorized at every energy here
    assert plan_ranks(model, LowRankConfig(energy=energy)) == expected
    reduce_(model, LowRankConfig(energy=energy))
    assert lowrank_layout(model) == expected


def test_a_second_reduction_leaves_the_factors_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256))
    reduce_(model, LowRankConfig(fraction=0.25), filter_fn=lambda m, n: n == "0")
    first = lowrank_layout(model)
    reduce_(model, LowRankConfig(fraction=0.25))  # only the layer not factorized yet
    assert lowrank_layout(model) == {**first, "2": 64}  # was: the factors factorized again, "0.down": 16, ...
    fresh = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256))
    reduce_(fresh, LowRankConfig(ranks=lowrank_layout(model)))  # the layout rebuilds the structure
    fresh.load_state_dict(model.state_dict())
    with pytest.raises(ValueError, match="nothing to reduce"):
        reduce_(model, LowRankConfig(fraction=0.25))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_weights_are_named(bad):
    model = nn.Sequential(nn.Linear(64, 64))
    with torch.no_grad():
        model[0].weight[3, 5] = bad
    with pytest.raises(ValueError, match="model: layer '0' has NaN or infinite weights"):
        reduce_(model, LowRankConfig(rank=4))


@pytest.mark.parametrize("rank", [2.5, True, "4"], ids=["float", "bool", "str"])
def test_rank_must_be_an_int(rank):
    with pytest.raises(TypeError, match="rank: expected an int"):
        LowRankLinear(8, 8, rank)


def test_non_finite_weights_outside_the_plan_do_not_matter():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.Linear(32, 32))
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    reduce_(model, LowRankConfig(ranks={"1": 4}))  # layer 0 is not in the plan
    assert type(model[0]) is nn.Linear and model[1].rank == 4


def _qat(m):
    from edgegen.quant import QATConfig, quantize_

    quantize_(m, QATConfig())


def _switchable(m):
    from edgegen.quant import Int8DynamicConfig, enable_precision_switch_

    enable_precision_switch_(m, Int8DynamicConfig())


@pytest.mark.parametrize("wrap,wrapper,why", [
    (_qat, "QATModule", "which fake-quantizes the layer's weight: factorize the float model first, then prepare it "
                        "for QAT"),
    (_switchable, "SwitchablePrecision", "whose quantized copy of the layer the factorization would not change: "
                                         "factorize the float model first, then enable_precision_switch_"),
], ids=["qat", "switchable"])
def test_layers_inside_quantization_wrappers_are_refused(wrap, wrapper, why):
    """A wrapper reads its layer's weight (QAT), or holds a quantized twin the factorization would
    not change (switchable precision): refused, naming the layer and what to do for that wrapper,
    before anything changes."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))
    wrap(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=rf"^model: layer '0\.\w+' is inside a {wrapper} \('0'\), {re.escape(why)}$"):
        reduce_(model, LowRankConfig(rank=4))
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_layers_inside_a_16_bit_wrapper_are_factorized_in_its_precision():
    """LowPrecision only casts its layer and input: fp16 then low-rank factorizes the wrapped layer
    (in float16) and computes what low-rank then fp16 does, to fp16 rounding (was: refused)."""
    from edgegen.quant import Fp16Config, quantize_
    from edgegen.quant.api import LowPrecision

    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64)).eval()
    x = torch.randn(4, 64)
    half_first = quantize_(copy.deepcopy(base), Fp16Config())
    reduce_(half_first, LowRankConfig(rank=8))
    low_first = reduce_(copy.deepcopy(base), LowRankConfig(rank=8))
    quantize_(low_first, Fp16Config())
    for i in (0, 2):
        assert type(half_first[i]) is LowPrecision and type(half_first[i].module) is LowRankLinear
        assert half_first[i].module.rank == 8 and half_first[i].module.down.weight.dtype == torch.float16
    y = half_first(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, low_first(x), rtol=1e-2, atol=2e-3)
