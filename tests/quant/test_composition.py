"""quantize_ and the other transforms on models that are not a plain stack of fresh layers: one
layer registered under two names, transforms applied twice or on top of each other, PyTorch
layers that read their children's weights, padding modes the INT8 path cannot take, tied
weights, saved QAT state, and what save_quantized / export_onnx refuse."""

import copy
import warnings

import pytest
import torch
from torch import nn

import edgegen  # noqa: F401
from edgegen.models.gpt2 import GPT2, GPT2Config
from edgegen.quant import (
    DynamicPrecisionConfig,
    Fp16Config,
    Int8Conv2d,
    Int8DynamicConfig,
    Int8Linear,
    LowPrecision,
    QATConfig,
    QATModule,
    convert_,
    enable_precision_switch_,
    prepare_qat_,
    quantize_,
    save_quantized,
)
from edgegen.reduce import LowRankConfig, reduce_


def test_a_layer_under_two_names_is_converted_under_both():
    torch.manual_seed(0)
    lin = nn.Linear(16, 16)
    model = nn.Sequential(lin, nn.ReLU(), lin).eval()
    x = torch.randn(4, 16)
    ref = model(x)
    quantize_(model, Int8DynamicConfig())
    assert isinstance(model[0], Int8Linear) and model[2] is model[0]  # one conversion, shared again
    torch.testing.assert_close(model(x), ref, rtol=0.05, atol=0.05 * float(ref.abs().max()))
    model = nn.Sequential(lin, nn.ReLU(), lin).eval()
    quantize_(model, Fp16Config())  # was: the second use kept float16 weights without the casts
    assert isinstance(model[2], LowPrecision) and model[2] is model[0]
    torch.testing.assert_close(model(x), ref, rtol=0.02, atol=0.02 * float(ref.abs().max()))


@pytest.mark.parametrize("first, second, wrapper", [
    (lambda m: quantize_(m, Fp16Config()), lambda m: quantize_(m, Fp16Config()), "LowPrecision"),
    (lambda m: prepare_qat_(m), lambda m: prepare_qat_(m), "QATModule"),
    (lambda m: prepare_qat_(m), lambda m: quantize_(m, Int8DynamicConfig()), "QATModule"),
    (lambda m: quantize_(m, DynamicPrecisionConfig()), lambda m: quantize_(m, DynamicPrecisionConfig()),
     "SwitchablePrecision"),
    (lambda m: quantize_(m, DynamicPrecisionConfig()), lambda m: enable_precision_switch_(m, Int8DynamicConfig()),
     "SwitchablePrecision"),
], ids=["fp16-twice", "qat-twice", "int8-after-qat", "dynamic-twice", "switch-after-dynamic"])
def test_transforms_on_already_wrapped_layers_are_refused(first, second, wrapper):
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))
    first(model)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=rf"model: layer '0\.\w+' is inside a {wrapper} \('0'\)"):
        second(model)
    after = model.state_dict()  # refused before anything was touched
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_layers_whose_parent_reads_their_weight_are_kept():
    torch.manual_seed(0)
    enc = nn.TransformerEncoderLayer(64, 4, 128, batch_first=True)
    model = nn.Sequential(enc, nn.Linear(64, 8)).eval()
    x = torch.randn(2, 5, 64)
    ref = model(x)
    with pytest.warns(UserWarning, match=r"quantize_: 3 layer\(s\) stay as they are because their parent "
                                          r"reads.*'0\.self_attn\.out_proj'"):
        quantize_(model, Int8DynamicConfig())
    assert isinstance(model[1], Int8Linear)
    assert type(enc.linear1) is nn.Linear and type(enc.self_attn.out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear
    torch.testing.assert_close(model(x), ref, rtol=0.05, atol=0.05 * float(ref.abs().max()))  # was: AttributeError
    with pytest.warns(UserWarning, match="parent reads"), pytest.raises(ValueError, match="nothing to quantize"):
        quantize_(nn.TransformerEncoderLayer(64, 4, 128), Fp16Config())
    low = nn.Sequential(nn.TransformerEncoderLayer(64, 4, 128, batch_first=True), nn.Linear(64, 256)).eval()
    with torch.no_grad():  # a rank-8 weight: its rank-8 factorization is exact
        low[1].weight.copy_(0.1 * torch.randn(256, 8) @ torch.randn(8, 64))
    ref = low(x)
    reduce_(low, LowRankConfig(rank=8))  # only the layer outside the encoder (was: AttributeError in forward)
    assert type(low[0].linear1) is nn.Linear and type(low[1]) is not nn.Linear
    torch.testing.assert_close(low(x), ref, rtol=1e-4, atol=1e-4)


def test_convolutions_the_int8_path_cannot_pad_stay_float_with_a_warning():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect"), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1)).eval()
    with pytest.warns(UserWarning, match=r"1 convolution\(s\) with a padding mode other than 'zeros'.*'0'"):
        quantize_(model, Int8DynamicConfig())
    assert type(model[0]) is nn.Conv2d and isinstance(model[2], Int8Conv2d)
    qat = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect"), nn.Conv2d(8, 8, 3, padding="same"),
                        nn.Conv2d(8, 4, 3, padding=1))
    with pytest.warns(UserWarning, match=r"2 convolution\(s\)"):
        prepare_qat_(qat)  # was: trained with zero padding, then failed at convert_
    assert [type(m).__name__ for m in qat] == ["Conv2d", "Conv2d", "QATModule"]


def test_fp16_on_a_tied_head_says_the_embedding_changes_too():
    torch.manual_seed(0)
    model = GPT2(GPT2Config(vocab_size=256, n_positions=32, n_embd=64, n_layer=1, n_head=4)).eval()
    with pytest.warns(UserWarning, match=r"'lm_head' shares its weight with the embedding 'wte'.*float16"):
        quantize_(model, Fp16Config(), filter_fn=lambda m, n: n == "lm_head")
    assert model.wte.weight.dtype == torch.float16 and model.wte.weight is model.lm_head.module.weight
    untied = nn.Sequential(nn.Linear(8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no tie, no warning
        quantize_(untied, Fp16Config())


def test_ema_qat_state_loads_into_a_freshly_prepared_model():
    torch.manual_seed(0)
    model = prepare_qat_(nn.Sequential(nn.Linear(16, 8)), QATConfig(weight="ste", activation="ema"))
    model.train()
    for _ in range(3):
        model(torch.randn(4, 16))
    fresh = prepare_qat_(nn.Sequential(nn.Linear(16, 8)), QATConfig(weight="ste", activation="ema"))
    fresh.load_state_dict(model.state_dict())  # was: size mismatch [1] vs [0]
    model.eval(), fresh.eval()
    x = torch.randn(5, 16)
    assert torch.equal(fresh(x), model(x))
    assert fresh[0].activation_qparams() == model[0].activation_qparams()
    empty = prepare_qat_(nn.Sequential(nn.Linear(16, 8)), QATConfig(weight="ste", activation="ema"))
    fresh.load_state_dict(empty.state_dict())  # and back to "no data seen"
    with pytest.raises(RuntimeError, match="no data observed"):
        fresh[0].activation_qparams()


def test_lsq_convert_without_data_is_refused():
    model = prepare_qat_(nn.Sequential(nn.Linear(16, 8)), QATConfig(weight="lsq", activation="lsq"))
    with pytest.raises(RuntimeError, match="no data seen yet"):  # was: activation scale 1.0, silently
        convert_(model)


def test_save_quantized_refuses_layers_it_cannot_store(tmp_path):
    switch = quantize_(nn.Sequential(nn.Linear(64, 8)), DynamicPrecisionConfig())
    with pytest.raises(ValueError, match="'0' is a SwitchablePrecision, which save_quantized cannot store"):
        save_quantized(switch, tmp_path / "s.safetensors")
    qat = prepare_qat_(nn.Sequential(nn.Linear(64, 8)))
    with pytest.raises(ValueError, match=r"'0' is a QATModule.*convert it first"):
        save_quantized(qat, tmp_path / "q.safetensors")
    assert not list(tmp_path.iterdir())
    assert isinstance(qat[0], QATModule)


def _pruned_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                         nn.Flatten(), nn.Linear(8 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 10)).eval()


@pytest.mark.parametrize("config", ["int8", "static", "int4", "bf16"])
def test_a_pruned_then_quantized_model_saves_and_loads(tmp_path, config):
    """Layers left in floating point (the depthwise convolution under INT8, the convolutions under
    INT4) keep their pruning masks in memory; the file holds them baked in, once, and loads into a
    fresh model."""
    from edgegen.prune import MagnitudeConfig, finalize_, get_mask, prune_
    from edgegen.quant import Bf16Config, Int4WeightOnlyConfig, Int8StaticConfig, load_quantized
    from edgegen.tensor_files import read_safetensors

    model, x = _pruned_net(), torch.randn(2, 4, 8, 8)
    prune_(model, MagnitudeConfig(0.5))
    cfg = {"int8": Int8DynamicConfig(), "static": Int8StaticConfig(batches=1), "int4": Int4WeightOnlyConfig(64),
           "bf16": Bf16Config()}[config]
    quantize_(model, cfg, calibration=[x] if config == "static" else None)
    masked = [n for n, m in model.named_modules() if get_mask(m) is not None]
    assert masked  # the case: float layers still masked
    size = save_quantized(model, tmp_path / "q.safetensors")
    assert all(get_mask(model.get_submodule(n)) is not None for n in masked)  # the model itself keeps its masks
    state, _ = read_safetensors(tmp_path / "q.safetensors")
    assert not any("parametrizations" in k for k in state)
    assert size == save_quantized(finalize_(copy.deepcopy(model)), tmp_path / "ref.safetensors")  # masks baked in
    fresh = load_quantized(_pruned_net(), tmp_path / "q.safetensors")
    assert torch.equal(fresh(x), model(x))


def test_a_training_run_that_prunes_then_quantizes_writes_a_loadable_file(tmp_path):
    from edgegen.prune import MagnitudeConfig, get_mask, sparsity
    from edgegen.quant import load_quantized
    from edgegen.train.compression import Compression
    from edgegen.train.config import CompressConfig

    model, x = _pruned_net(), torch.randn(2, 4, 8, 8)
    comp = Compression(CompressConfig(prune=MagnitudeConfig(0.5), prune_begin=0, prune_end=4, prune_frequency=2,
                                      ptq=Int8DynamicConfig()), model, total_steps=8)
    for step in range(6):
        comp.after_step(step)
    assert sparsity(model) == pytest.approx(0.5, abs=1e-3)
    path = comp.quantize(model, tmp_path, lambda: [x])
    fresh = load_quantized(_pruned_net(), path)  # was: missing "2.weight", unexpected "2.parametrizations..."
    assert torch.equal(fresh(x), model(x))
    assert not bool(get_mask(model[2]).all()) and torch.equal(fresh[2].weight, model[2].weight)  # float, pruned


_CONVERSIONS = {"float": (lambda m: m.float(), torch.float32), "half": (lambda m: m.half(), torch.float16),
                "to-bf16": (lambda m: m.to(torch.bfloat16), torch.bfloat16),
                "to-f64": (lambda m: m.to(torch.float64), torch.float64)}


@pytest.mark.parametrize("conversion", list(_CONVERSIONS))
@pytest.mark.parametrize("low", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_low_precision_keeps_its_dtype_through_model_conversions(low, conversion):
    """The 16 bits are the quantization: a model conversion leaves the wrapped layer in them (as
    the integer modules keep their float32 scales), and the converted model runs."""
    import torch.nn.functional as F

    from edgegen.quant import Bf16Config

    convert, dtype = _CONVERSIONS[conversion]
    torch.manual_seed(0)
    model = quantize_(nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)),
                      Fp16Config() if low == torch.float16 else Bf16Config())
    convert(model)
    assert all(p.dtype == low for p in model.parameters()) and model[0].dtype == low
    x = torch.randn(3, 16, dtype=dtype)
    a, b = model[0].module, model[2].module
    ref = F.linear(F.relu(F.linear(x.to(low), a.weight, a.bias).to(dtype)).to(low), b.weight, b.bias).to(dtype)
    out = model(x)  # was: "mat1 and mat2 must have the same dtype"
    assert out.dtype == dtype and torch.equal(out, ref)


def test_fp16_gpt2_keeps_its_tied_table_through_model_float():
    torch.manual_seed(0)
    model = GPT2(GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=1, n_head=2)).eval()
    idx = torch.randint(0, 64, (2, 6))
    with pytest.warns(UserWarning, match="shares its weight"):
        quantize_(model, Fp16Config())
    out = model(idx)
    model.float()
    assert model.lm_head.module.weight is model.wte.weight and model.wte.weight.dtype == torch.float16
    assert torch.equal(model(idx), out)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64], ids=["bf16", "fp16", "f64"])
@pytest.mark.parametrize("config", ["int8", "int4"])
def test_quantized_embeddings_follow_a_model_dtype_conversion(config, dtype):
    """Int8Embedding / Int4Embedding rows come out in the model's dtype, as nn.Embedding's would;
    the scales stay float32, so the rows are the float32 rows cast."""
    from edgegen.quant import Int4Embedding, Int4WeightOnlyConfig, Int8Embedding

    torch.manual_seed(0)
    model = GPT2(GPT2Config(vocab_size=100, n_positions=16, n_embd=64, n_layer=1, n_head=2)).eval()
    idx = torch.randint(0, 100, (2, 6))
    quantize_(model, Int8DynamicConfig() if config == "int8" else Int4WeightOnlyConfig(64))
    emb = model.wte
    assert isinstance(emb, Int8Embedding if config == "int8" else Int4Embedding)
    rows, ref = emb(idx), model(idx)
    assert rows.dtype == torch.float32
    model.to(dtype)
    assert torch.equal(emb(idx), rows.to(dtype))
    assert (emb.weight_scale if config == "int8" else emb.scale).dtype == torch.float32
    out = model(idx)  # was: "mixed dtype (CPU): expect parameter to have scalar type of Float"
    assert out.dtype == dtype
    assert torch.nn.functional.cosine_similarity(out.double().flatten(), ref.double().flatten(), dim=0) > 0.999
    half = nn.Embedding(10, 64).to(torch.bfloat16)  # a table quantized in bf16 gives bf16 rows
    assert type(emb).from_float(half)(torch.tensor([1, 2])).dtype == torch.bfloat16
