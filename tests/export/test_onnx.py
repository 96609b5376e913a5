"""ONNX round trips: every model kind, dense and physically pruned, matches PyTorch in ONNX
Runtime; INT8 through ONNX Runtime's quantizer stays close to the float model; bad input is named."""

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="the export extra (onnx, onnxruntime) is not installed")

from edgegen.export import export_onnx, onnx_latency, onnx_target, quantize_onnx, run_onnx  # noqa: E402
from edgegen.models.dcgan import DCGANConfig, DCGANGenerator  # noqa: E402
from edgegen.models.gpt2 import GPT2, GPT2Config  # noqa: E402
from edgegen.models.vae import BetaVAE, BetaVAEConfig  # noqa: E402
from edgegen.prune import ChannelConfig, HeadConfig, prune_, shrink  # noqa: E402


def _models():
    torch.manual_seed(0)
    return {
        "dcgan": DCGANGenerator(DCGANConfig(nz=16, ngf=8)),
        "vae": BetaVAE(BetaVAEConfig(latent_dim=8)),
        "gpt2": GPT2(GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=512, n_positions=32)),
    }


def _shrunk(model):
    # GPT-2: attention heads (its MLP channels feed the residual stream through the tied head)
    config = HeadConfig(amount=0.5) if isinstance(model, GPT2) else ChannelConfig(amount=0.5)
    prune_(model, config, example_inputs=model.example_inputs(2))
    return shrink(model.eval(), model.example_inputs(1))


@pytest.mark.parametrize("kind", ["dcgan", "vae", "gpt2"])
@pytest.mark.parametrize("pruned", [False, True], ids=["dense", "shrunk"])
def test_round_trip_matches_pytorch(kind, pruned, tmp_path):
    model = _models()[kind].eval()
    if pruned:
        before = sum(p.numel() for p in model.parameters())
        model = _shrunk(model)
        assert sum(p.numel() for p in model.parameters()) < before
    res = export_onnx(model, path=tmp_path / f"{kind}.onnx")
    assert res.max_abs_diff is not None and res.max_abs_diff < 1e-3 and res.bytes > 0
    # a different batch size than the export's (the batch axis is dynamic)
    module, inputs, _, _ = onnx_target(model, batch=3)
    with torch.no_grad():
        expected = module(*inputs).numpy()
    got = run_onnx(res.path, inputs)[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-3)


def _relative_error(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("kind", ["dcgan", "vae", "gpt2"])
@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_int8_through_onnxruntime_stays_close(kind, mode, tmp_path):
    model = _models()[kind].eval()
    fp32 = export_onnx(model, path=tmp_path / "fp32.onnx")
    module, inputs, _, _ = onnx_target(model, batch=4)
    calib = [onnx_target(model, batch=4)[1] for _ in range(2)] if mode == "static" else None
    if kind == "dcgan" and mode == "dynamic":  # transposed convolutions only: nothing to quantize
        with pytest.warns(RuntimeWarning, match="quantized no weight .* try mode='static'"):
            quantize_onnx(fp32.path, tmp_path / "int8.onnx", mode=mode)
        return
    size = quantize_onnx(fp32.path, tmp_path / "int8.onnx", mode=mode, calibration=calib)
    assert size < 0.5 * fp32.bytes  # int8 weights
    with torch.no_grad():
        expected = module(*inputs).numpy()
    got = run_onnx(tmp_path / "int8.onnx", inputs)[0]
    assert got.shape == expected.shape
    assert _relative_error(got, expected) < 0.1  # 8-bit quantization error, not a broken graph


def test_pruning_masks_are_baked_in(tmp_path):
    from edgegen.prune import MagnitudeConfig

    model = _models()["dcgan"].eval()
    prune_(model, MagnitudeConfig(amount=0.5))
    res = export_onnx(model, path=tmp_path / "masked.onnx")
    assert res.max_abs_diff < 1e-3
    import onnx

    init = [onnx.numpy_helper.to_array(t) for t in onnx.load(res.path).graph.initializer if t.dims and len(t.dims) == 4]
    assert max(float((w == 0).mean()) for w in init) >= 0.49  # the zeros travel into the file


def test_a_file_that_differs_from_pytorch_raises(tmp_path):
    class Drifts(torch.nn.Module):
        """Adds how often it ran before: the traced file holds 0, the check's PyTorch run adds 1."""

        calls = 0

        def forward(self, x):
            out = x + self.calls
            self.calls += 1
            return out

    with pytest.raises(RuntimeError, match=r"export_onnx: ONNX Runtime differs from PyTorch by up to 1 "
                                           r"\(atol 0.0001, rtol 0.001\) on .*drifts.onnx"):
        export_onnx(Drifts().eval(), (torch.zeros(2, 3),), tmp_path / "drifts.onnx")
    # without the check the file is written and its difference is not measured
    res = export_onnx(Drifts().eval(), (torch.zeros(2, 3),), tmp_path / "unchecked.onnx", check=False)
    assert res.max_abs_diff is None and res.bytes > 0
    np.testing.assert_array_equal(run_onnx(res.path, (torch.zeros(2, 3),))[0], np.zeros((2, 3), np.float32))


def test_latency_and_explicit_inputs(tmp_path):
    lin = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()).eval()
    x = torch.randn(2, 8)
    res = export_onnx(lin, (x,), tmp_path / "lin.onnx", input_names=["x"], output_names=["y"])
    assert res.input_names == ["x"] and res.output_names == ["y"]
    lat = onnx_latency(res.path, (x,), repeats=3, threads=1)
    assert lat["latency_ms_p50"] > 0 and lat["threads"] == 1


def test_a_fixed_batch_export_keeps_the_example_batch_and_reports_the_relative_difference(tmp_path):
    """dynamic_batch=False: every input and output of the graph has the example's batch (2) as a
    fixed dimension, ONNX Runtime refuses a batch of 3, and max_abs_diff / max_rel_diff are
    max |ort - torch| and max |ort - torch| / |torch| on the example."""
    import onnx
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.LayerNorm(32),
                                torch.nn.Linear(32, 8)).eval()
    x = torch.randn(2, 16)
    res = export_onnx(model, (x,), tmp_path / "fixed.onnx", dynamic_batch=False)
    graph = onnx.load(res.path).graph
    dims = [[(d.dim_value, d.dim_param) for d in v.type.tensor_type.shape.dim] for v in [*graph.input, *graph.output]]
    assert dims == [[(2, ""), (16, "")], [(2, ""), (8, "")]]
    with pytest.raises(InvalidArgument, match=r"invalid dimensions for input: input0\s+.*\s+index: 0 Got: 3 "
                                              r"Expected: 2"):
        run_onnx(res.path, (torch.randn(3, 16),))
    got = run_onnx(res.path, (x,))[0].astype(np.float64)
    with torch.no_grad():
        expected = model(x).double().numpy()
    diff = np.abs(got - expected)
    assert diff.max() > 0  # a difference to measure, not an identical graph
    assert res.max_abs_diff == pytest.approx(float(diff.max()), rel=1e-6)
    assert res.max_rel_diff == pytest.approx(float((diff / np.abs(expected)).max()), rel=1e-4)
    # the default export of the same model takes any batch
    dyn = export_onnx(model, (x,), tmp_path / "dynamic.onnx")
    assert [d.dim_param for d in onnx.load(dyn.path).graph.input[0].type.tensor_type.shape.dim] == ["batch", ""]
    assert run_onnx(dyn.path, (torch.randn(3, 16),))[0].shape == (3, 8)


def test_bad_input(tmp_path):
    from edgegen.quant import Int8DynamicConfig, quantize_

    q = quantize_(torch.nn.Sequential(torch.nn.Linear(64, 64)).eval(), Int8DynamicConfig())
    with pytest.raises(ValueError, match="model: holds edgegen integer layers .*quantize_onnx"):
        export_onnx(q, (torch.randn(1, 64),), tmp_path / "q.onnx")
    with pytest.raises(TypeError, match="model: expected an nn.Module"):
        export_onnx(lambda x: x, (torch.randn(1),), tmp_path / "f.onnx")
    with pytest.raises(ValueError, match="opset: expected an int in"):
        export_onnx(torch.nn.Identity(), (torch.randn(1),), tmp_path / "i.onnx", opset=7)
    with pytest.raises(ValueError, match="input_names: expected 1 names"):
        export_onnx(torch.nn.Identity(), (torch.randn(1),), tmp_path / "i.onnx", input_names=["a", "b"])
    with pytest.raises(TypeError, match="no default export target"):
        export_onnx(torch.nn.Identity(), path=tmp_path / "i.onnx")
    with pytest.raises(FileNotFoundError, match="fp32_path: .* does not exist"):
        quantize_onnx(tmp_path / "absent.onnx", tmp_path / "o.onnx")
    lin = export_onnx(torch.nn.Linear(4, 4).eval(), (torch.randn(1, 4),), tmp_path / "l.onnx")
    with pytest.raises(ValueError, match="mode: expected 'dynamic' or 'static'"):
        quantize_onnx(lin.path, tmp_path / "o.onnx", mode="int4")
    with pytest.raises(ValueError, match="calibration: static quantization needs"):
        quantize_onnx(lin.path, tmp_path / "o.onnx", mode="static")


def test_qat_models_are_refused_and_nested_outputs_compared(tmp_path):
    from edgegen.quant import prepare_qat_

    qat = prepare_qat_(torch.nn.Sequential(torch.nn.Linear(8, 8)))
    with pytest.raises(ValueError, match="model: holds QATModule layers .*convert them first"):
        export_onnx(qat, (torch.randn(2, 8),), tmp_path / "qat.onnx")

    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)

        def forward(self, x):  # a dict: the exporter writes its values in order
            return {"a": self.lin(x), "b": 2 * self.lin(x) + 1}

    torch.manual_seed(0)
    two = Two().eval()
    x = torch.randn(3, 4)
    res = export_onnx(two, (x,), tmp_path / "two.onnx", output_names=["a", "b"])  # was: 'str' has no .detach
    a, b = run_onnx(res.path, (x,))
    np.testing.assert_allclose(a, two(x)["a"].detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b, two(x)["b"].detach().numpy(), rtol=1e-5, atol=1e-6)
    assert res.max_abs_diff < 1e-5


@pytest.mark.parametrize("kind, mode, expected", [
    ("vae", "dynamic", (2, 6)),   # the decoder's 2 Linear layers; its 4 ConvTranspose layers stay float
    ("vae", "static", (6, 6)),
    ("dcgan", "static", (5, 5)),  # 5 ConvTranspose layers
    ("gpt2", "dynamic", (11, 11)),  # wte, wpe, 4 matrices per block x 2, the head's transposed copy of wte
])
def test_quantized_weights_counts_weights_not_zero_points(kind, mode, expected, tmp_path):
    """The per-channel zero points ONNX Runtime writes are 8-bit initializers too: they are not
    weights (were counted: "4 of 6" for the VAE, a fraction above 1 for GPT-2's static model)."""
    from edgegen.export import quantized_weights

    model = _models()[kind].eval()
    fp32 = export_onnx(model, path=tmp_path / "fp32.onnx")
    calib = [onnx_target(model, batch=2)[1] for _ in range(2)] if mode == "static" else None
    quantize_onnx(fp32.path, tmp_path / "int8.onnx", mode=mode, calibration=calib)
    assert quantized_weights(fp32.path, tmp_path / "int8.onnx") == expected


def test_inputs_and_files_are_checked(tmp_path):
    lin = export_onnx(torch.nn.Linear(4, 4).eval(), (torch.randn(1, 4),), tmp_path / "l.onnx")
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match=r"inputs: .*l.onnx takes 1 input\(s\) \['input0'\], got 2 tensor\(s\)"):
        run_onnx(lin.path, (x, x))  # was: the second tensor silently dropped
    with pytest.raises(ValueError, match=r"inputs: .* takes 1 input\(s\)"):
        onnx_latency(lin.path, (x, x), repeats=1)
    for fn in (lambda p: run_onnx(p, x), lambda p: onnx_latency(p, x, repeats=1)):
        with pytest.raises(FileNotFoundError, match=r"path: .*absent.onnx does not exist"):
            fn(tmp_path / "absent.onnx")
    with pytest.raises(ValueError, match="calibration: static quantization needs at least one calibration input"):
        quantize_onnx(lin.path, tmp_path / "o.onnx", mode="static", calibration=[])
    with pytest.raises(ValueError, match="calibration: static quantization needs at least one"):
        quantize_onnx(lin.path, tmp_path / "o.onnx", mode="static", calibration=(t for t in []))
    with pytest.raises(ValueError, match=r"calibration: batch 0 has 2 tensor\(s\); the model takes 1 input"):
        quantize_onnx(lin.path, tmp_path / "o.onnx", mode="static", calibration=[(x, x)])
    # a generator of calibration batches is read once and works
    size = quantize_onnx(lin.path, tmp_path / "g.onnx", mode="static", calibration=((torch.randn(2, 4),) for _ in range(2)))
    assert size > 0


def test_bf16_layers_are_refused_by_name(tmp_path):
    from edgegen.quant import Bf16Config, Fp16Config, quantize_

    bf = quantize_(torch.nn.Sequential(torch.nn.Linear(8, 8)).eval(), Bf16Config())
    with pytest.raises(ValueError, match="model: holds bfloat16 layers .*export the float model"):
        export_onnx(bf, (torch.randn(2, 8),), tmp_path / "bf.onnx")  # was: ONNX Runtime NOT_IMPLEMENTED (Gemm)
    fp = quantize_(torch.nn.Sequential(torch.nn.Linear(8, 8)).eval(), Fp16Config())
    assert export_onnx(fp, (torch.randn(2, 8),), tmp_path / "fp.onnx").max_abs_diff < 1e-2  # fp16 runs in ORT


@pytest.mark.parametrize("kind", ["dcgan", "vae", "gpt2"])
@pytest.mark.parametrize("mode", ["eval", "train", "mixed"])
def test_export_restores_every_module_mode(kind, mode, tmp_path):
    """GPT-2 and the VAE (exported through a wrapper) came back in training mode: dropout on,
    greedy generation no longer repeatable."""
    model = _models()[kind].train(mode != "eval")
    if mode == "mixed":  # a training model with one frozen part
        next(m for m in model.modules() if m is not model).eval()
    before = [m.training for m in model.modules()]
    export_onnx(model, path=tmp_path / f"{kind}.onnx")
    assert [m.training for m in model.modules()] == before


def test_early_exit_models_are_refused(tmp_path):
    """The trace recorded the example's exits: ONNX Runtime then ran those layers for every input
    (off by 0.125 on a token that exits elsewhere), and the check on the example passed."""
    from edgegen.models import EarlyExitConfig, add_early_exits

    torch.manual_seed(0)
    ee = add_early_exits(GPT2(GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_layer=4, n_head=2)).eval(),
                         EarlyExitConfig(layers=(1,), threshold=0.5))
    with pytest.raises(ValueError, match=r"model: an EarlyExitGPT2 .*data-dependent control flow.*model.model"):
        export_onnx(ee, (torch.randint(0, 50, (1, 16)),), tmp_path / "ee.onnx")
    assert not (tmp_path / "ee.onnx").exists()


def test_data_dependent_branches_are_not_hidden(tmp_path):
    """The tracer's warning that the file holds the example's branch used to be silenced."""
    class Branchy(torch.nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x * 3

    with pytest.warns(torch.jit.TracerWarning, match="Converting a tensor to a Python boolean"):
        export_onnx(Branchy().eval(), (torch.ones(2, 3),), tmp_path / "b.onnx")


def test_sliding_window_attention_is_refused_up_front(tmp_path):
    """It failed deep in the exporter (no ONNX edgegen::sliding_window_attention) after printing
    the whole graph."""
    from edgegen.attention import SparseAttentionConfig, sparsify_attention_

    model = _models()["gpt2"].eval()
    sparsify_attention_(model, SparseAttentionConfig(window=None))  # dense: exports as before
    assert export_onnx(model, path=tmp_path / "dense.onnx").max_abs_diff < 1e-3
    sparsify_attention_(model, SparseAttentionConfig(window=4, num_global=1))
    with pytest.raises(ValueError, match=r"model: holds sliding-window attention \('h.0.attn.attention': window=4, "
                                         r"num_global=1\) .*no ONNX form"):
        export_onnx(model, path=tmp_path / "sparse.onnx")


@pytest.mark.parametrize("kind", ["dcgan-generator", "dcgan-discriminator", "vae", "gpt2", "gpt2-own-inputs"])
def test_the_built_in_models_export_without_tracer_warnings(kind, tmp_path):
    """The models' input checks are skipped while tracing (the exporter checks its example) and
    dense attention takes its explicit mask there, so an export of a built-in model passes on no
    TracerWarning: one that appears points at a model's data-dependent computation."""
    import warnings

    from edgegen.models.dcgan import DCGANConfig, DCGANDiscriminator, DCGANGenerator
    from edgegen.models.gpt2 import GPT2, GPT2Config
    from edgegen.models.vae import BetaVAE, BetaVAEConfig

    model = {"dcgan-generator": lambda: DCGANGenerator(DCGANConfig()),
             "dcgan-discriminator": lambda: DCGANDiscriminator(DCGANConfig()),
             "vae": lambda: BetaVAE(BetaVAEConfig()),
             "gpt2": lambda: GPT2(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=16)),
             "gpt2-own-inputs": lambda: GPT2(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100,
                                                        n_positions=16))}[kind]()
    # The caller's token block instead of the default target's: GPT-2 is still exported as logits of
    # idx alone (its keyword flags would otherwise be traced as tensors).
    inputs = (torch.randint(0, 100, (2, 8)),) if kind == "gpt2-own-inputs" else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_onnx(model.eval(), inputs, tmp_path / "m.onnx")
    assert [f"{w.filename}:{w.lineno}" for w in caught if w.category is torch.jit.TracerWarning] == []
