"""INT8 GEMM (exact int32), dynamically quantized INT8 Linear, INT4 weight-only Linear, quantize_."""

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import edgegen  # noqa: F401
from edgegen.models.gpt2 import GPT2, GPT2Config
from edgegen.models.vae import BetaVAE
from edgegen.ops._reference import (
    int4_dequantize_reference,
    int4_linear_dynamic_reference,
    int4_pack_reference,
    int4_unpack_reference,
    int8_gemm_reference,
    int8_linear_dynamic_reference,
)
from edgegen.quant import (
    Bf16Config,
    Fp16Config,
    Int4DynamicConfig,
    Int4Linear,
    Int4WeightOnlyConfig,
    Int8DynamicConfig,
    Int8Linear,
    LowPrecision,
    config_from_dict,
    quantize_,
)
from edgegen.prune import saved_bytes
from tests.helpers import opcheck_ids


def gemm(a, zp, w):
    packed, row_sum = torch.ops.edgegen.int8_pack_weight(w)
    return torch.ops.edgegen.int8_gemm(a, zp, packed, row_sum, w.shape[0], w.shape[1])


@pytest.mark.parametrize("m", [1, 3, 4, 7, 64, 65])
@pytest.mark.parametrize("k", [1, 3, 4, 5, 64, 257])
@pytest.mark.parametrize("n", [1, 15, 16, 17, 33])
@pytest.mark.parametrize("seven_bit", [True, False])
def test_int8_gemm_is_exact(m, k, n, seven_bit):
    a = torch.randint(0, 128 if seven_bit else 256, (m, k), dtype=torch.uint8)
    w = torch.randint(-128, 128, (n, k), dtype=torch.int8)
    zp = int(torch.randint(0, 256, ()).item())
    assert torch.equal(gemm(a, zp, w), int8_gemm_reference(a, zp, w))


@pytest.mark.parametrize("a_val,w_val", [(255, 127), (255, -128), (127, -128), (0, -128)])
def test_int8_gemm_adversarial_extremes(a_val, w_val):
    # 255 x 127 pairs would saturate vpmaddubsw's int16 sums; the kernel must take its exact path.
    for k in (2, 4, 1000, 3072):
        a = torch.full((5, k), a_val, dtype=torch.uint8)
        w = torch.full((17, k), w_val, dtype=torch.int8)
        for zp in (0, 255):
            assert torch.equal(gemm(a, zp, w), int8_gemm_reference(a, zp, w))


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (1, 5, 3), (9, 70, 33), (17, 29, 40), (64, 768, 48), (70, 2100, 20)])
def test_int8_gemm_is_exact_on_every_path(isa, m, k, n):
    """Every path of this CPU (scalar, AVX2, AVX-512 VNNI) against the int64 product, with the
    adversarial 255 x -128 corner, K not a multiple of any vector width, and N of partial panels."""
    a = torch.randint(0, 256, (m, k), dtype=torch.uint8)
    w = torch.randint(-128, 128, (n, k), dtype=torch.int8)
    a[0], w[0] = 255, -128
    p, s = torch.ops.edgegen.int8_pack_weight(w)
    for zp in (0, 3, 255):
        assert torch.equal(torch.ops.edgegen.int8_gemm(a, zp, p, s, n, k), int8_gemm_reference(a, zp, w))


def test_max_isa_caps_every_family_and_restores(isa):
    import edgegen

    order = edgegen.isa.LEVELS
    assert edgegen.cpu_isa() == isa
    for family, path in edgegen.kernel_paths().items():
        assert order.index(path) <= order.index(isa), (family, path)
    with edgegen.max_isa("scalar"):
        assert set(edgegen.kernel_paths().values()) == {"scalar"}
    assert edgegen.cpu_isa() == isa
    with pytest.raises(ValueError, match="isa: expected"):
        edgegen.max_isa("avx1024")


@pytest.mark.parametrize("shape", [(1, 70), (5, 7, 70), (64, 70)])
@pytest.mark.parametrize("bias", [True, False])
def test_int8_linear_equals_reference_and_is_close_to_fp32(shape, bias):
    lin = nn.Linear(70, 33, bias=bias)
    q = Int8Linear.from_float(lin)
    x = torch.randn(shape)
    out = q(x)
    torch.testing.assert_close(out, int8_linear_dynamic_reference(x, q.weight_int8, q.weight_scale, q.bias),
                               rtol=1e-6, atol=1e-6)
    ref = lin(x).detach()
    # Stated tolerance: 7-bit activations and 8-bit weights keep the error within 3% of the output range.
    assert (out - ref).abs().max() <= 0.03 * ref.abs().max()
    assert out.shape == ref.shape


def test_int8_linear_state_dict_size_and_dtypes():
    lin = nn.Linear(256, 512)
    q = Int8Linear.from_float(lin)
    fresh = Int8Linear(256, 512)
    fresh.load_state_dict(q.state_dict())  # repacks on load
    x = torch.randn(4, 256)
    assert torch.equal(fresh(x), q(x))
    assert set(q.state_dict()) == {"weight_int8", "weight_scale", "bias", "act_scale", "act_zero_point"}
    ratio = saved_bytes(lin) / saved_bytes(q)
    assert 3.5 < ratio < 4.1  # int8 weights + fp32 scales and bias vs fp32
    assert q(x.bfloat16()).dtype == torch.bfloat16


def test_int4_pack_layout_and_dequantize():
    q = torch.randint(0, 16, (7, 192), dtype=torch.uint8)
    packed = torch.ops.edgegen.int4_pack(q)
    assert packed.shape == (7, 96) and torch.equal(packed, int4_pack_reference(q))
    assert torch.equal(int4_unpack_reference(packed).to(torch.uint8), q)
    for g in (32, 64):
        scale = torch.rand(7, 192 // g) + 0.01
        zero = torch.randint(0, 16, (7, 192 // g), dtype=torch.uint8)
        assert torch.equal(torch.ops.edgegen.int4_dequantize(packed, scale, zero, g),
                           int4_dequantize_reference(packed, scale, zero, g))


@pytest.mark.parametrize("m", [1, 3, 4, 5, 9, 64])
@pytest.mark.parametrize("group", [32, 64, 128])
def test_int4_linear_equals_dequantized_fp32(m, group):
    lin = nn.Linear(384, 100)
    q = Int4Linear.from_float(lin, group)
    x = torch.randn(m, 384)
    want = F.linear(x, q.dequantized_weight(), q.bias)
    torch.testing.assert_close(q(x), want, rtol=1e-5, atol=1e-5)
    # Quantization error of each weight is at most half a step of its group.
    step = q.scale.repeat_interleave(group, dim=1)
    assert bool(((q.dequantized_weight() - lin.weight).abs() <= step / 2 + 1e-6).all())


def test_int4_linear_bf16_input_state_dict_and_size():
    lin = nn.Linear(256, 512)
    q = Int4Linear.from_float(lin, 64)
    x = torch.randn(2, 256)
    assert q(x.bfloat16()).dtype == torch.bfloat16
    fresh = Int4Linear(256, 512, group_size=64)
    fresh.load_state_dict(q.state_dict())
    assert torch.equal(fresh(x), q(x))
    ratio = saved_bytes(lin) / saved_bytes(q)
    assert 6.0 < ratio < 8.0  # 0.5 byte per weight + 5 bytes per group of 64


@pytest.mark.parametrize("m", [1, 3, 4, 5, 9, 64])
@pytest.mark.parametrize("group", [32, 64, 128])
def test_int4_a8_equals_float64_reference(m, group):
    """W4A8: the kernel equals the float64 reference (the same codes and exact integer group sums)
    to float32 rounding, and stays close to the weight-only layer (8-bit activations per group)."""
    torch.manual_seed(m * 1000 + group)
    lin = nn.Linear(384, 100)
    q = Int4Linear.from_float(lin, group, "int8")
    x = torch.randn(m, 384)
    x[0, :group] *= 40.0  # an outlier group: its own scale, the other groups unaffected
    want = int4_linear_dynamic_reference(x, q.packed_weight, q.scale, q.zero_point, q.bias, group)
    got = q(x)
    torch.testing.assert_close(got, want, rtol=2e-6, atol=2e-6 * float(want.abs().max()))
    weight_only = F.linear(x, q.dequantized_weight(), q.bias)
    assert float((got - weight_only).norm() / weight_only.norm()) < 0.01


@pytest.mark.parametrize("k,group", [(768, 32), (3072, 64)], ids=["24-groups", "48-groups"])
def test_int4_a8_many_groups_and_one_signed_inputs(isa, k, group):
    """Rows with more than 16 groups (the zero-point sweep's full and masked steps), and inputs of
    one sign (as after GELU), where the per-lane products and the zero-point term nearly cancel, on
    every path: the kernel's difference from the float64 reference stays below 2e-5 relative and a
    hundredth of the error the 8-bit activations themselves bring (against the weight-only layer)."""
    torch.manual_seed(k)
    q = Int4Linear.from_float(nn.Linear(k, 64), group, "int8")
    for x in (torch.randn(3, k), torch.relu(torch.randn(3, k)) + 0.01):
        want = int4_linear_dynamic_reference(x, q.packed_weight, q.scale, q.zero_point, q.bias, group)
        got = q(x)
        kernel_err = float((got.double() - want.double()).norm() / want.double().norm())
        act_err = float((want - F.linear(x, q.dequantized_weight(), q.bias)).norm() / want.norm())
        assert kernel_err < 2e-5 and kernel_err < act_err / 100, (kernel_err, act_err)


def test_int4_a8_integer_inputs_are_exact_and_zero_rows_give_the_bias():
    # Integer activations with max |x| = 127 in every group are their own codes (scale 1); unit
    # weight scales make every partial sum an integer below 2^24: the output is exact.
    torch.manual_seed(5)
    n, k = 24, 320
    codes = torch.randint(0, 16, (n, k), dtype=torch.uint8)
    zero = torch.randint(0, 16, (n, k // 64), dtype=torch.uint8)
    packed = torch.ops.edgegen.int4_pack(codes)
    x = torch.randint(-127, 128, (5, k)).float()
    x[:, ::64] = 127.0
    exact = (x.double().view(5, k // 64, 64)[:, None] *
             (codes.double().view(n, k // 64, 64) - zero.double()[..., None])[None]).sum((-1, -2))
    out = torch.ops.edgegen.int4_linear_dynamic(x, packed, torch.ones(n, k // 64), zero, None, 64)
    assert torch.equal(out.double(), exact)
    bias = torch.randn(n)
    zeros = torch.ops.edgegen.int4_linear_dynamic(torch.zeros(2, k), packed, torch.rand(n, k // 64), zero, bias, 64)
    assert torch.equal(zeros, bias.expand(2, n))


def test_int4_dynamic_config_quantizes_saves_and_loads(tmp_path):
    from edgegen.quant import Int4DynamicConfig, QuantConfig, load_quantized, save_quantized

    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 8)).eval()
    x = torch.randn(3, 128)
    ref = model(x).detach()
    cfg = QuantConfig.from_dict(Int4DynamicConfig(32).to_dict())
    assert cfg == Int4DynamicConfig(32)
    quantize_(model, cfg)
    assert [m.activations for m in (model[0], model[2])] == ["int8", "int8"]
    with torch.no_grad():
        assert float(F.cosine_similarity(model(x).flatten(), ref.flatten(), dim=0)) > 0.99
    save_quantized(model, tmp_path / "m.safetensors")
    fresh = load_quantized(nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 8)), tmp_path / "m.safetensors")
    with torch.no_grad():
        assert fresh[0].activations == "int8" and torch.equal(fresh(x), model(x))


def test_quantize_gpt2_student_end_to_end():
    torch.manual_seed(0)
    model = GPT2(GPT2Config(vocab_size=512, n_positions=64, n_embd=128, n_layer=2, n_head=4)).eval()
    idx = torch.randint(0, 512, (2, 16))
    with torch.no_grad():
        ref = model(idx)
    for cfg, min_cos in ((Int8DynamicConfig(), 0.995), (Int4WeightOnlyConfig(64), 0.95), (Int4DynamicConfig(64), 0.95),
                         (Bf16Config(), 0.999),
                         (Fp16Config(), 0.9999)):
        m = GPT2(model.config).eval()
        m.load_state_dict(model.state_dict())
        quantize_(m, cfg)
        with torch.no_grad():
            out = m(idx)
            gen = m.generate(idx[:, :4], 4, greedy=True)
        assert out.shape == ref.shape and bool(torch.isfinite(out).all())
        assert F.cosine_similarity(out.flatten(), ref.flatten(), dim=0) > min_cos, cfg
        assert gen.shape == (2, 8)


def test_quantize_beta_vae_decoder():
    vae = BetaVAE().eval()
    z = torch.randn(3, vae.config.latent_dim)
    with torch.no_grad():
        ref = vae.decode(z)
    quantize_(vae, Int8DynamicConfig())
    assert isinstance(vae.decoder[0], Int8Linear)
    with torch.no_grad():
        out = vae.decode(z)
    assert bool(torch.isfinite(out).all()) and float(out.abs().max()) <= 1.0
    assert (out - ref).abs().max() < 0.05


def test_configs_round_trip_and_low_precision_wrapper():
    for cfg in (Int8DynamicConfig(), Int4WeightOnlyConfig(128), Fp16Config(), Bf16Config()):
        assert config_from_dict(cfg.to_dict()) == cfg
    m = nn.Sequential(nn.Linear(8, 8))
    quantize_(m, Bf16Config())
    assert isinstance(m[0], LowPrecision) and m[0].module.weight.dtype == torch.bfloat16
    assert m(torch.randn(2, 8)).dtype == torch.float32


OPCHECK = [
    (torch.ops.edgegen.int8_pack_weight, (torch.randint(-128, 128, (20, 9), dtype=torch.int8),)),
    (torch.ops.edgegen.int8_gemm, (torch.randint(0, 256, (3, 9), dtype=torch.uint8), 5,
                                   *torch.ops.edgegen.int8_pack_weight(torch.randint(-128, 128, (20, 9),
                                                                                     dtype=torch.int8)), 20, 9)),
    (torch.ops.edgegen.int8_linear_dynamic, (torch.randn(3, 9),
                                             *torch.ops.edgegen.int8_pack_weight(torch.randint(-127, 128, (20, 9),
                                                                                               dtype=torch.int8)),
                                             torch.rand(20) + 0.01, torch.randn(20), 20, 9)),
    (torch.ops.edgegen.int4_pack, (torch.randint(0, 16, (4, 64), dtype=torch.uint8),)),
    (torch.ops.edgegen.int4_dequantize, (torch.randint(0, 255, (4, 32), dtype=torch.uint8), torch.rand(4, 2) + 0.1,
                                         torch.randint(0, 16, (4, 2), dtype=torch.uint8), 32)),
    (torch.ops.edgegen.int4_linear, (torch.randn(2, 64), torch.randint(0, 255, (4, 32), dtype=torch.uint8),
                                     torch.rand(4, 1) + 0.1, torch.randint(0, 16, (4, 1), dtype=torch.uint8), None, 64)),
    (torch.ops.edgegen.int4_linear_dynamic, (torch.randn(3, 128), torch.randint(0, 255, (4, 64), dtype=torch.uint8),
                                             torch.rand(4, 4) + 0.1, torch.randint(0, 16, (4, 4), dtype=torch.uint8),
                                             torch.randn(4), 32)),
]


@pytest.mark.parametrize("op,args", OPCHECK, ids=opcheck_ids(OPCHECK))
def test_opcheck(op, args):
    torch.library.opcheck(op, args)


def test_torch_compile_quantized_model():
    m = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))
    m8 = quantize_(nn.Sequential(*[x for x in m]), Int8DynamicConfig())
    x = torch.randn(4, 64)
    eager = m8(x)
    torch.testing.assert_close(torch.compile(m8, fullgraph=True, backend="inductor")(x), eager)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: torch.ops.edgegen.int8_pack_weight(torch.randn(3, 4)), TypeError, "weight"),
    (lambda: torch.ops.edgegen.int8_pack_weight(torch.zeros(3, dtype=torch.int8)), ValueError, "weight"),
    (lambda: gemm(torch.randn(2, 4), 0, torch.zeros(3, 4, dtype=torch.int8)), TypeError, "input"),
    (lambda: gemm(torch.zeros(2, 5, dtype=torch.uint8), 0, torch.zeros(3, 4, dtype=torch.int8)), ValueError, "input"),
    (lambda: gemm(torch.zeros(2, 4, dtype=torch.uint8), 300, torch.zeros(3, 4, dtype=torch.int8)), ValueError,
     "a_zero_point"),
    (lambda: torch.ops.edgegen.int8_gemm(torch.zeros(2, 4, dtype=torch.uint8), 0, torch.zeros(10, dtype=torch.int8),
                                         torch.zeros(3, dtype=torch.int32), 3, 4), ValueError, "packed_weight"),
    (lambda: torch.ops.edgegen.int4_pack(torch.full((2, 64), 16, dtype=torch.uint8)), ValueError, "4-bit"),
    (lambda: torch.ops.edgegen.int4_pack(torch.zeros(2, 48, dtype=torch.uint8)), ValueError, "multiple of 64"),
    (lambda: Int4Linear(96, 8), ValueError, "in_features"),
    (lambda: Int4Linear(128, 8, group_size=48), ValueError, "group_size"),
    (lambda: Int4WeightOnlyConfig(group_size=100), ValueError, "group_size"),
    (lambda: Int4DynamicConfig(group_size=16), ValueError, "group_size"),
    (lambda: Int4Linear(128, 8, activations="int16"), ValueError, "activations"),
    (lambda: torch.ops.edgegen.int4_linear_dynamic(torch.tensor([[float("nan")] * 64]),
                                                   torch.zeros(4, 32, dtype=torch.uint8), torch.ones(4, 1),
                                                   torch.zeros(4, 1, dtype=torch.uint8), None, 64),
     ValueError, "finite"),
    (lambda: torch.ops.edgegen.int4_linear_dynamic(torch.randn(2, 32), torch.zeros(4, 32, dtype=torch.uint8),
                                                   torch.ones(4, 1), torch.zeros(4, 1, dtype=torch.uint8), None, 64),
     ValueError, "input"),
    (lambda: torch.ops.edgegen.int4_linear(torch.randn(2, 64), torch.zeros(4, 32, dtype=torch.uint8),
                                           torch.ones(4, 2), torch.zeros(4, 1, dtype=torch.uint8), None, 64),
     ValueError, "scale"),
    (lambda: quantize_(nn.Sequential(nn.ReLU()), Int8DynamicConfig()), ValueError, "nothing to quantize"),
    (lambda: quantize_(nn.Sequential(nn.Linear(2, 2)), "int8"), TypeError, "config"),
    (lambda: Int8Linear.from_float(nn.Conv2d(1, 1, 1)), TypeError, "linear"),
], ids=lambda x: x if isinstance(x, str) else "")
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_int4_keeps_layers_it_cannot_pack_in_float():
    from torch import nn

    from edgegen.quant import Int4Linear, Int4WeightOnlyConfig, quantize_

    model = nn.Sequential(nn.Linear(128, 96), nn.ReLU(), nn.Linear(96, 64), nn.Linear(64, 8))
    with pytest.warns(UserWarning, match="1 of 3 Linear layers"):
        quantize_(model, Int4WeightOnlyConfig(64))
    assert [type(m) for m in (model[0], model[2], model[3])] == [Int4Linear, nn.Linear, Int4Linear]
    with pytest.raises(ValueError, match="nothing to quantize"):
        quantize_(nn.Sequential(nn.Linear(96, 8)), Int4WeightOnlyConfig(64))


@pytest.mark.parametrize("threads", [1, 2])
def test_int8_linear_large_input_extremes_in_different_chunks(threads):
    """The dynamic range is found in chunks of 65,536 values split over threads: the minimum in the
    last chunk, the maximum in the first, both past a vector's width, give the reference result on
    any thread count."""
    torch.manual_seed(3)
    lin = nn.Linear(64, 24)
    q = Int8Linear.from_float(lin)
    x = torch.randn(3126, 64)  # 200,064 values: three full chunks and a partial one
    x.view(-1)[17] = 9.5
    x.view(-1)[200_061] = -7.25
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = q(x)
    finally:
        torch.set_num_threads(old)
    torch.testing.assert_close(out, int8_linear_dynamic_reference(x, q.weight_int8, q.weight_scale, q.bias),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("where", [0, 65_535, 65_536, 200_063], ids=["first", "chunk-end", "chunk-start", "last"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
def test_int8_linear_non_finite_anywhere_in_a_large_input(where, bad):
    lin = Int8Linear.from_float(nn.Linear(64, 8))
    x = torch.randn(3126, 64)
    x.view(-1)[where] = bad
    with pytest.raises(ValueError, match="input: contains NaN or infinite values"):
        lin(x)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
def test_int8_linear_non_finite_in_the_vector_tail(bad):
    """203,000 values: the last chunk (6,392 values) ends with 8 past the last full 16-lane vector,
    where the finiteness check runs on a masked (AVX-512) or scalar (AVX2) tail."""
    lin = Int8Linear.from_float(nn.Linear(70, 8))
    x = torch.randn(2900, 70)
    x.view(-1)[-1] = bad
    with pytest.raises(ValueError, match="input: contains NaN or infinite values"):
        lin(x)
    small = torch.randn(3, 70)  # one chunk of 210 values, 2 past the last full vector
    small.view(-1)[-1] = bad
    with pytest.raises(ValueError, match="input: contains NaN or infinite values"):
        lin(small)
