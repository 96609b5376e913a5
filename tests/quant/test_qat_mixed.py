"""QAT gradients against a reference built from torch's fake-quantize ops, QAT -> convert
equivalence, mixed precision by sensitivity, precision switching, saving and loading."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import edgegen  # noqa: F401
from edgegen.models.dcgan import DCGANConfig, DCGANGenerator
from edgegen.models.gpt2 import GPT2, GPT2Config
from edgegen.quant import (
    Bf16Config,
    Int4DynamicConfig,
    Int4WeightOnlyConfig,
    Int8DynamicConfig,
    Int8Linear,
    Int8StaticConfig,
    LowPrecision,
    QATConfig,
    QATModule,
    SwitchablePrecision,
    convert_,
    enable_precision_switch_,
    layer_sensitivity,
    load_quantized,
    prepare_qat_,
    quantize_,
    quantize_mixed_,
    save_quantized,
    set_precision_,
)


def test_qat_lsq_gradients_equal_torch_reference():
    torch.manual_seed(0)
    lin = nn.Linear(12, 6)
    q = QATModule(copy.deepcopy(lin), QATConfig("lsq", "lsq"))
    x = torch.randn(5, 12)
    out = q(x)  # initialises the activation scale from this batch
    g = torch.randn_like(out)
    out.backward(g)
    # Reference: torch's learnable fake-quant ops with the same parameters and grad factors.
    w = lin.weight.detach().clone().requires_grad_()
    b = lin.bias.detach().clone().requires_grad_()
    ws = q.weight_scale.detach().clone().requires_grad_()
    wz = torch.zeros(6, requires_grad=False)
    a_s = q.act_scale.detach().clone().requires_grad_()
    a_z = q.act_zero_point.detach().clone().requires_grad_()
    xq = torch._fake_quantize_learnable_per_tensor_affine(x, a_s, a_z, 0, 127, 1.0 / (12 * 127) ** 0.5)
    wq = torch._fake_quantize_learnable_per_channel_affine(w, ws, wz, 0, -127, 127, 1.0 / (12 * 127) ** 0.5)
    ref = F.linear(xq, wq, b)
    ref.backward(g)
    _assert_matches_reference(q, out, ref, w, b, ws, a_s, a_z)


def _assert_matches_reference(q, out, ref, w, b, ws, a_s, a_z):
    """The QAT layer's output and every gradient (weights, bias, the learned scales and zero
    point) equal the reference's."""
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(q.module.weight.grad, w.grad)
    torch.testing.assert_close(q.module.bias.grad, b.grad)
    torch.testing.assert_close(q.weight_scale.grad, ws.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(q.act_scale.grad, a_s.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(q.act_zero_point.grad, a_z.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("make, axis", [
    (lambda: nn.Conv2d(3, 5, 3, stride=2, padding=1), 0),
    (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1), 1),
], ids=["conv2d", "conv-transpose2d"])
def test_qat_lsq_gradients_of_convolutions_equal_torch_reference(make, axis):
    # LSQ's gradient factors 1 / sqrt(n * qmax): n = the weights per output channel (C_in * kh * kw,
    # the weight's output-channel axis is 1 for ConvTranspose2d) and the features per sample (C * H * W).
    torch.manual_seed(0)
    conv = make()
    q = QATModule(copy.deepcopy(conv), QATConfig("lsq", "lsq"))
    x = torch.randn(2, conv.in_channels, 7, 6)
    out = q(x)  # initialises the activation scale from this batch
    g = torch.randn_like(out)
    out.backward(g)
    c_in, c_out, kh, kw = conv.in_channels, conv.out_channels, *conv.kernel_size
    w_factor = 1.0 / (c_in * kh * kw * 127) ** 0.5
    a_factor = 1.0 / (conv.in_channels * 7 * 6 * 127) ** 0.5
    w = conv.weight.detach().clone().requires_grad_()
    b = conv.bias.detach().clone().requires_grad_()
    ws = q.weight_scale.detach().clone().requires_grad_()
    assert ws.shape == (c_out,)
    wz = torch.zeros(c_out)
    a_s = q.act_scale.detach().clone().requires_grad_()
    a_z = q.act_zero_point.detach().clone().requires_grad_()
    xq = torch._fake_quantize_learnable_per_tensor_affine(x, a_s, a_z, 0, 127, a_factor)
    wq = torch._fake_quantize_learnable_per_channel_affine(w, ws, wz, axis, -127, 127, w_factor)
    if axis == 0:
        ref = F.conv2d(xq, wq, b, conv.stride, conv.padding)
    else:
        ref = F.conv_transpose2d(xq, wq, b, conv.stride, conv.padding, conv.output_padding)
    ref.backward(g)
    _assert_matches_reference(q, out, ref, w, b, ws, a_s, a_z)


def test_qat_ste_gradients_equal_torch_reference():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3)
    q = QATModule(copy.deepcopy(conv), QATConfig("ste", "ema"))
    x = torch.randn(2, 3, 6, 6)
    out = q(x)
    out.sum().backward()
    s, z = q.activation_qparams()
    w = conv.weight.detach().clone().requires_grad_()
    sc = w.detach().abs().amax(dim=(1, 2, 3)) / 127
    wq = torch.fake_quantize_per_channel_affine(w, sc, torch.zeros(4, dtype=torch.int32), 0, -127, 127)
    xr = x.clone().requires_grad_()
    ref = F.conv2d(torch.fake_quantize_per_tensor_affine(xr, s, z, 0, 127), wq, conv.bias)
    ref.sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(q.module.weight.grad, w.grad)


@pytest.mark.parametrize("cfg", [QATConfig("lsq", "lsq"), QATConfig("ste", "ema")])
def test_qat_trains_and_converts_to_the_same_function(cfg):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    prepare_qat_(model, cfg)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    x = torch.randn(256, 16)
    y = x[:, :4] * 2 + 0.5
    first = None
    for _ in range(60):
        opt.zero_grad()
        loss = (model(x) - y).pow(2).mean()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.2 * first
    model.eval()
    with torch.no_grad():
        want = model(x)
    convert_(model)
    assert all(isinstance(m, Int8Linear) for m in (model[0], model[2])) and model[0].static
    with torch.no_grad():
        torch.testing.assert_close(model(x), want, rtol=1e-5, atol=1e-5)


def test_qat_dcgan_generator_round_trip():
    g = DCGANGenerator(DCGANConfig(ngf=8)).train()
    prepare_qat_(g)
    z = g.example_inputs(4)[0]
    g(z).mean().backward()
    g.eval()
    with torch.no_grad():
        want = g(z)
    convert_(g)
    with torch.no_grad():
        got = g(z)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def small_gpt2():
    torch.manual_seed(0)
    return GPT2(GPT2Config(vocab_size=256, n_positions=32, n_embd=128, n_layer=2, n_head=4)).eval()


def test_sensitivity_and_mixed_precision():
    model = small_gpt2()
    idx = torch.randint(0, 256, (4, 16))

    def loss(m):
        with torch.no_grad():
            return F.cross_entropy(m(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten()).item()

    sens = layer_sensitivity(model, Int4WeightOnlyConfig(64), loss)
    assert len(sens) == 9  # 4 linears per block x 2 + the head
    report = quantize_mixed_(copy.deepcopy(model), Int4WeightOnlyConfig(64), loss, keep_fraction=0.12)
    top = sorted(sens, key=sens.get, reverse=True)[:2]  # ceil(0.12 * 9) = 2 layers stay in 16-bit
    assert report["kept"] == top and report["sensitivity"] == pytest.approx(sens)
    mixed = copy.deepcopy(model)
    quantize_mixed_(mixed, Int4WeightOnlyConfig(64), loss, keep_fraction=0.12)
    assert all(isinstance(mixed.get_submodule(n), LowPrecision) for n in top)
    rest = [n for n in sens if n not in top]
    from edgegen.quant import Int4Linear

    assert all(isinstance(mixed.get_submodule(n), Int4Linear) for n in rest)
    assert loss(mixed) == pytest.approx(report["metric"]) and report["bytes"] > 0
    with pytest.raises(ValueError, match="keep_fraction"):
        quantize_mixed_(model, Int8DynamicConfig(), loss, keep_fraction=1.5)


def test_precision_switch_per_call_and_global():
    model = small_gpt2()
    idx = torch.randint(0, 256, (1, 8))
    with torch.no_grad():
        full = model(idx)
    enable_precision_switch_(model, Int8DynamicConfig())
    assert sum(isinstance(m, SwitchablePrecision) for m in model.modules()) == 9
    with torch.no_grad():
        low = model(idx)
        assert set_precision_(model, False) == 9
        torch.testing.assert_close(model(idx), full)
        set_precision_(model, True)
        torch.testing.assert_close(model(idx), low)
    layer = model.h[0].mlp.c_fc
    x = torch.randn(2, 128)
    torch.testing.assert_close(layer(x, quantized=False), layer.full(x))
    assert not torch.equal(layer(x, quantized=True), layer.full(x))


@pytest.mark.parametrize("cfg", ["int8", "int4", "static", "bf16"])
def test_save_and_load_quantized_models_at_their_real_size(tmp_path, cfg):
    model = small_gpt2()
    idx = torch.randint(0, 256, (2, 8))
    dense = save_quantized(model, tmp_path / "fp32.safetensors")
    q = copy.deepcopy(model)
    config = {"int8": Int8DynamicConfig(), "int4": Int4WeightOnlyConfig(64), "bf16": Bf16Config(),
              "static": Int8StaticConfig(batches=1)}[cfg]
    quantize_(q, config, calibration=[(idx,)] if cfg == "static" else None)
    size = save_quantized(q, tmp_path / "q.safetensors")
    fresh = GPT2(model.config).eval()
    load_quantized(fresh, tmp_path / "q.safetensors")
    with torch.no_grad():
        assert torch.equal(fresh(idx), q(idx))
    # The quantized layers hold 1/4 (int8), ~1/7 (int4) or 1/2 (bf16) of their fp32 bytes; the
    # fp32 embeddings and layer norms do not change.
    linear_fp32 = sum(m.weight.numel() * 4 for m in model.modules() if isinstance(m, nn.Linear)
                      and m is not model.lm_head) + model.lm_head.weight.numel() * 4
    assert size < dense - 0.45 * linear_fp32
    with pytest.raises(ValueError, match="save_quantized"):
        from edgegen.prune import save_sparse

        save_sparse(model, tmp_path / "other.safetensors")
        load_quantized(GPT2(model.config), tmp_path / "other.safetensors")


def test_bad_qat_input():
    with pytest.raises(ValueError, match="weight"):
        QATConfig(weight="pact")
    with pytest.raises(ValueError, match="activation"):
        QATConfig(activation="minmax")
    with pytest.raises(ValueError, match="nothing to prepare"):
        prepare_qat_(nn.Sequential(nn.ReLU()))
    with pytest.raises(ValueError, match="no QATModule"):
        convert_(nn.Sequential(nn.Linear(2, 2)))


@pytest.mark.parametrize("config", [Int4WeightOnlyConfig(64), Int4DynamicConfig(32)], ids=["weight-only", "w4a8"])
def test_int4_embedding_and_tied_head_share_storage(tmp_path, config):
    from edgegen.ops._reference import int4_dequantize_reference
    from edgegen.quant import Int4Embedding, Int4Linear

    model = small_gpt2()
    idx = torch.randint(0, 256, (2, 8))
    emb = Int4Embedding.from_float(model.wte, config.group_size)
    table = int4_dequantize_reference(emb.packed_weight, emb.scale, emb.zero_point, config.group_size)
    assert torch.equal(emb(idx), table[idx])  # the gathered rows of the dequantised table
    step = emb.scale.repeat_interleave(config.group_size, dim=1)
    assert bool(((table - model.wte.weight).abs() <= step / 2 + 1e-6).all())  # half a step per entry
    assert emb(torch.zeros(0, dtype=torch.long)).shape == (0, 128)
    dense = save_quantized(model, tmp_path / "fp32.safetensors")
    quantize_(model, config)
    assert isinstance(model.wte, Int4Embedding) and isinstance(model.lm_head, Int4Linear)
    assert model.lm_head.packed_weight is model.wte.packed_weight and model.lm_head.scale is model.wte.scale
    size = save_quantized(model, tmp_path / "int4.safetensors")
    assert 5.5 < dense / size < 8.0  # every weight matrix in 4 bits plus group scales, the table stored once
    fresh = GPT2(model.config).eval()
    load_quantized(fresh, tmp_path / "int4.safetensors")
    assert fresh.lm_head.packed_weight is fresh.wte.packed_weight  # the alias restored on load
    with torch.no_grad():
        assert torch.equal(fresh(idx), model(idx))
    keep = small_gpt2()
    quantize_(keep, type(config)(config.group_size, embeddings=False))
    assert isinstance(keep.wte, nn.Embedding) and isinstance(keep.lm_head, Int4Linear)


def test_int4_config_version_1_keeps_tables_in_float_and_embeddings_check_ids():
    from edgegen.quant import Int4Embedding, Int8Embedding, QuantConfig

    old = QuantConfig.from_dict({"kind": "Int4WeightOnlyConfig", "version": 1, "group_size": 32})
    assert old == Int4WeightOnlyConfig(32, embeddings=False)  # what version-1 data meant
    assert QuantConfig.from_dict(Int4WeightOnlyConfig(32).to_dict()) == Int4WeightOnlyConfig(32)
    torch.manual_seed(0)
    for emb in (Int4Embedding.from_float(nn.Embedding(10, 64)), Int8Embedding.from_float(nn.Embedding(10, 64))):
        for bad in (torch.tensor([3, -1]), torch.tensor([[10]])):
            with pytest.raises(IndexError, match=r"idx: ids must lie in \[0, 10\)"):
                emb(bad)
        with pytest.raises(RuntimeError, match="indices"):  # the embedding op's own check, as nn.Embedding's
            emb(torch.tensor([1.0]))
    model = nn.Sequential(nn.Embedding(10, 64, max_norm=1.0), nn.Linear(64, 64))
    for config in (Int4DynamicConfig(64), Int8DynamicConfig()):
        with pytest.raises(ValueError, match="max_norm"):  # refused, as INT8 refuses it
            quantize_(model, config)
        assert isinstance(model[1], nn.Linear)  # refused before any layer was replaced


def test_int4_embedding_refuses_what_it_cannot_pack():
    from edgegen.quant import Int4Embedding

    with pytest.raises(ValueError, match="embedding_dim"):
        Int4Embedding.from_float(nn.Embedding(10, 96))
    with pytest.raises(ValueError, match="group_size"):
        Int4Embedding(10, 128, group_size=16)
    with pytest.raises(TypeError, match="emb"):
        Int4Embedding.from_float(nn.Linear(64, 64))
    # quantize_ leaves a table it cannot pack in floating point
    model = nn.Sequential(nn.Embedding(10, 96), nn.Linear(96, 64), nn.Linear(64, 8))
    with pytest.warns(UserWarning, match="stay in floating point"):
        quantize_(model, Int4WeightOnlyConfig(64))
    assert isinstance(model[0], nn.Embedding)


def test_int8_embedding_and_tied_head_share_storage(tmp_path):
    from edgegen.quant import Int8Embedding

    model = small_gpt2()
    idx = torch.randint(0, 256, (2, 8))
    emb = Int8Embedding.from_float(model.wte)
    want = model.wte(idx)
    assert (emb(idx) - want).abs().max() <= emb.weight_scale.max() / 2 + 1e-7  # half a step per entry
    dense = save_quantized(model, tmp_path / "fp32.safetensors")
    quantize_(model, Int8DynamicConfig())
    assert isinstance(model.wte, Int8Embedding) and model.lm_head.weight_int8 is model.wte.weight_int8
    size = save_quantized(model, tmp_path / "int8.safetensors")
    assert 3.5 < dense / size < 4.1  # every weight matrix in int8, the table stored once
    fresh = GPT2(model.config).eval()
    load_quantized(fresh, tmp_path / "int8.safetensors")
    with torch.no_grad():
        assert torch.equal(fresh(idx), model(idx))
    keep = small_gpt2()
    quantize_(keep, Int8DynamicConfig(embeddings=False))
    assert isinstance(keep.wte, nn.Embedding)


def test_mixed_precision_keeps_a_tied_head_with_its_embedding():
    """The tied head is quantized together with its table, as quantize_ does: one int8 table
    shared by both, not an int8 copy for the head beside an fp32 table."""
    from edgegen.prune import saved_bytes
    from edgegen.quant import Int8Embedding

    model = small_gpt2()
    idx = torch.randint(0, 256, (2, 8))

    def loss(m):
        with torch.no_grad():
            return float(m(idx).pow(2).mean())

    mixed = copy.deepcopy(model)
    report = quantize_mixed_(mixed, Int8DynamicConfig(), loss, keep_fraction=0.0)
    assert isinstance(mixed.wte, Int8Embedding) and mixed.lm_head.weight_int8 is mixed.wte.weight_int8
    ref = quantize_(copy.deepcopy(model), Int8DynamicConfig(), filter_fn=lambda m, n: n != "wpe")  # the same layers
    with torch.no_grad():
        assert torch.equal(mixed(idx), ref(idx))
    assert report["bytes"] == saved_bytes(ref) < 0.3 * saved_bytes(model)
    head = quantize_(copy.deepcopy(model), Int8DynamicConfig(), filter_fn=lambda m, n: n in ("lm_head", "wte"))
    assert report["sensitivity"]["lm_head"] == pytest.approx(loss(head) - loss(model))


@pytest.mark.parametrize("config", [QATConfig(activation="ema"), Bf16Config(), "dynamic"], ids=["qat", "bf16", "dynamic"])
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_wrappers_take_the_mode_of_the_layer_they_replace(config, training):
    from edgegen.quant import DynamicPrecisionConfig

    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)).train(training)
    quantize_(model, DynamicPrecisionConfig() if config == "dynamic" else config)
    assert all(m.training == training for m in model.modules())


def test_an_eval_mode_qat_model_does_not_move_its_observers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    prepare_qat_(model, QATConfig(activation="ema"))
    x = torch.randn(4, 8)
    model(x)  # the first batch sets the range
    assert float(model[0].observer.max_val) == float(x.max())
    model(torch.randn(4, 8) * 100)
    assert float(model[0].observer.max_val) == float(x.max())  # was: moved by an eval forward
    model.train()
    model(torch.randn(4, 8) * 100)
    assert float(model[0].observer.max_val) > float(x.max())


def test_static_calibration_restores_each_modules_own_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 4)).train()
    model[1].eval()  # a BatchNorm frozen while the rest fine-tunes
    quantize_(model, Int8StaticConfig(batches=1), filter_fn=lambda m, n: n == "2", calibration=[torch.randn(4, 8)])
    assert [m.training for m in model] == [True, False, True]  # was: the BatchNorm training again
    assert model.training


def test_static_calibration_names_a_layer_it_never_reached():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.aux = nn.Linear(8, 8), nn.Linear(8, 2)

        def forward(self, x):
            return self.a(x)

    model = Model()
    with pytest.raises(ValueError, match="calibration: the batches never reached layer 'aux'"):
        quantize_(model, Int8StaticConfig(batches=1), calibration=[torch.randn(2, 8)])
    assert isinstance(model.a, nn.Linear)  # refused before any layer was replaced
    quantize_(model, Int8StaticConfig(batches=1), filter_fn=lambda m, n: n != "aux", calibration=[torch.randn(2, 8)])
    assert isinstance(model.a, Int8Linear)
