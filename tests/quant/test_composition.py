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
