"""ONNX export of edgegen's models, checked in ONNX Runtime, and INT8 through ONNX Runtime's own
quantizer, so edgegen's runtime and ONNX Runtime can be compared on the same model.

``export_onnx(model, example_inputs, path)`` traces the model (PyTorch's TorchScript-based ONNX
exporter: no extra dependency beyond onnx/onnxruntime), loads the file in ONNX Runtime and checks
its outputs against PyTorch on the example inputs. :func:`onnx_target` picks what is exported for
each model kind: the DCGAN generator (latents -> images), the Beta-VAE decoder (latents ->
images), GPT-2 (token ids of a fixed length -> logits, no cache). Pruned models are exported with
their masks baked in (and physically shrunk if they were). :func:`quantize_onnx` makes the INT8
model (dynamic, or static with calibration batches); :func:`onnx_latency` times a file.

onnx and onnxruntime are an optional extra (``pip install edgegen[export]``), imported only by the
functions here.
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from edgegen.prune.graph import restore_training_flags, training_flags

__all__ = ["OnnxExport", "export_onnx", "onnx_target", "quantize_onnx", "onnx_latency", "run_onnx",
           "quantized_weights"]

DEFAULT_OPSET = 17


def _require_ort():
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError as exc:
        raise ImportError("edgegen.export needs onnx and onnxruntime: pip install 'edgegen[export]' "
                          f"(missing: {exc.name})") from None
    return onnxruntime


@dataclass
class OnnxExport:
    """An exported file and how well ONNX Runtime reproduces PyTorch on the example inputs."""

    path: str
    bytes: int
    opset: int
    input_names: list
    output_names: list
    max_abs_diff: float | None
    max_rel_diff: float | None


class _LogitsOnly(nn.Module):
    """GPT-2 as a pure function of a fixed-length token block: logits, no cache."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, idx: Tensor) -> Tensor:
        return self.lm(idx)


class _Decoder(nn.Module):
    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, z: Tensor) -> Tensor:
        return self.vae.decode(z)


def onnx_target(model: nn.Module, batch: int = 1, seq_len: int | None = None) -> tuple[nn.Module, tuple, list, list]:
    """(module to export, example inputs, input names, output names) for an edgegen model: the
    DCGAN generator, the Beta-VAE's decoder, GPT-2's logits for ``seq_len`` tokens (default: the
    model's context, at most 128). Other modules: ``model`` itself with its ``example_inputs()``."""
    from edgegen.models.dcgan import DCGANGenerator
    from edgegen.models.gpt2 import GPT2
    from edgegen.models.vae import BetaVAE

    g = torch.Generator().manual_seed(0)
    if isinstance(model, DCGANGenerator):
        return model, (torch.randn(batch, model.config.nz, generator=g),), ["z"], ["images"]
    if isinstance(model, BetaVAE):
        return _Decoder(model), (torch.randn(batch, model.config.latent_dim, generator=g),), ["z"], ["images"]
    if isinstance(model, GPT2):
        n = seq_len or min(128, model.config.n_positions)
        ids = torch.randint(0, model.config.vocab_size, (batch, n), generator=g)
        return _LogitsOnly(model), (ids,), ["input_ids"], ["logits"]
    if hasattr(model, "example_inputs"):
        ex = model.example_inputs()
        return model, tuple(ex), [f"input{i}" for i in range(len(ex))], ["output"]
    raise TypeError(f"model: no default export target for {type(model).__name__}; call export_onnx with "
                    "example_inputs")


def _check_exportable(model: nn.Module) -> nn.Module:
    from edgegen.quant import INTEGER_LAYERS, QATModule

    if any(isinstance(m, QATModule) for m in model.modules()):
        raise ValueError("model: holds QATModule layers (fake quantization for training) that have no ONNX form; "
                         "convert them first (edgegen.quant.convert_) and quantize the float export with "
                         "edgegen.export.quantize_onnx, or export the float model")
    found = sorted({type(m).__name__ for m in model.modules() if isinstance(m, INTEGER_LAYERS)})
    if found:
        raise ValueError(f"model: holds edgegen integer layers ({', '.join(found)}) that run as edgegen's own "
                         "kernels and have no ONNX form; export the float model and quantize the file with "
                         "edgegen.export.quantize_onnx (ONNX Runtime's quantizer)")
    from edgegen.quant import LowPrecision

    if any(isinstance(m, LowPrecision) and m.dtype == torch.bfloat16 for m in model.modules()):
        # The exported graph is valid ONNX, but ONNX Runtime's CPU provider refuses it on load.
        raise ValueError("model: holds bfloat16 layers (LowPrecision, e.g. from Bf16Config) that ONNX Runtime's "
                         "CPU provider cannot run (no bfloat16 convolution or matrix-product kernels); export the "
                         "float model instead")
    from edgegen.models.early_exit import EarlyExitGPT2

    if any(isinstance(m, EarlyExitGPT2) for m in model.modules()):
        # Tracing records the exits the example inputs take: other inputs would run the same layers.
        raise ValueError("model: an EarlyExitGPT2 chooses per token, from the confidence of its exits, how many "
                         "blocks run (data-dependent control flow) and has no fixed ONNX graph; export its GPT-2 "
                         "(model.model) instead")
    from edgegen.attention.modules import SparseSelfAttention

    sparse = [(n, m) for n, m in model.named_modules() if isinstance(m, SparseSelfAttention) and m.window is not None]
    if sparse:
        name, m = sparse[0]
        raise ValueError(f"model: holds sliding-window attention ({name!r}: window={m.window}, "
                         f"num_global={m.num_global}) that runs as edgegen's own kernel "
                         "(edgegen::sliding_window_attention) and has no ONNX form; export the model with dense "
                         "attention (SparseAttentionConfig(window=None))")
    if any(torch.nn.utils.parametrize.is_parametrized(m) for m in model.modules()):
        from edgegen.prune import finalize_

        model = finalize_(copy.deepcopy(model))  # masks baked in: pruned weights are exact zeros
    return model


def _as_inputs(example_inputs) -> tuple:
    inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    if not inputs or not all(isinstance(t, Tensor) for t in inputs):
        raise TypeError("example_inputs: expected a tensor or a tuple of tensors")
    return inputs


def run_onnx(path, inputs, threads: int | None = None) -> list[np.ndarray]:
    """Outputs of the ONNX file at ``path`` on ``inputs`` (tensors, in the file's input order,
    exactly as many as the file takes)."""
    ort = _require_ort()
    sess = _session(ort, path, threads)
    return sess.run(None, _feed(sess, path, inputs))


def _feed(sess, path, inputs) -> dict:
    """{input name: array} for a session; a count that differs from the file's inputs is an error
    (zip would drop the extra ones, or leave one unfed with a less clear message)."""
    names = [i.name for i in sess.get_inputs()]
    inputs = _as_inputs(inputs)
    if len(inputs) != len(names):
        raise ValueError(f"inputs: {path} takes {len(names)} input(s) {names}, got {len(inputs)} tensor(s)")
    return {n: t.detach().cpu().numpy() for n, t in zip(names, inputs)}


def _check_file(path, what: str = "path") -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: {path} does not exist")
    return path


def _session(ort, path, threads):
    _check_file(path)
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def export_onnx(model: nn.Module, example_inputs=None, path: str | os.PathLike = "model.onnx", *,
                input_names=None, output_names=None, dynamic_batch: bool = True, opset: int = DEFAULT_OPSET,
                check: bool = True, atol: float = 1e-4, rtol: float = 1e-3) -> OnnxExport:
    """Export ``model`` (eval mode, no gradients) to ``path``; with ``check``, load it in ONNX
    Runtime and require its outputs on ``example_inputs`` to match PyTorch's within
    ``atol + rtol * |expected|`` (a mismatch raises). ``example_inputs`` default: those of
    :func:`onnx_target` (which also picks the module for edgegen's model kinds). Every module's
    training mode is restored afterwards. Models with no ONNX form are refused up front:
    edgegen's integer, QAT and bfloat16 layers, sliding-window attention, and early-exit GPT-2
    (which branches on its data). PyTorch's TracerWarnings reach the caller; edgegen's own models
    export without any (their input checks are skipped while tracing), so one means the model
    branches on its data and the file holds the example inputs' branch."""
    _require_ort()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if not isinstance(opset, int) or not 13 <= opset <= 21:
        raise ValueError(f"opset: expected an int in [13, 21], got {opset!r}")
    model = _check_exportable(model)
    if example_inputs is None:
        model, example_inputs, in_default, out_default = onnx_target(model)
    else:
        in_default, out_default = None, ["output"]
    inputs = _as_inputs(example_inputs)
    from edgegen.models.gpt2 import GPT2

    if isinstance(model, GPT2) and len(inputs) == 1:  # logits of idx: forward's flags would be traced as tensors
        model = _LogitsOnly(model)
    input_names = list(input_names or in_default or [f"input{i}" for i in range(len(inputs))])
    output_names = list(output_names or out_default)
    if len(input_names) != len(inputs):
        raise ValueError(f"input_names: expected {len(inputs)} names (one per input), got {input_names}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Every module's own mode, restored after: the export target may be a wrapper (GPT-2's
    # _LogitsOnly, the VAE's _Decoder) around the caller's model, in whatever mode each part was.
    modes = training_flags(model)
    model.eval()
    dynamic = {n: {0: "batch"} for n in input_names + output_names} if dynamic_batch else None
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The exporter's deprecation notes only: a TracerWarning can mean that the model branches on
            # its data and the file holds the example's path, so those reach the caller.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            torch.onnx.export(model, inputs, str(path), dynamo=False, opset_version=opset, input_names=input_names,
                              output_names=output_names, dynamic_axes=dynamic, do_constant_folding=True)
            expected = model(*inputs)
    finally:
        restore_training_flags(modes)
    abs_diff = rel_diff = None
    if check:
        got = run_onnx(path, inputs)
        # The exporter flattens nested outputs (tuples, lists, dict values) in order: compare leaf by leaf.
        from torch.utils import _pytree

        exp = [t for t in _pytree.tree_leaves(expected) if isinstance(t, Tensor)]
        if len(exp) != len(got):
            raise RuntimeError(f"export_onnx: ONNX Runtime gave {len(got)} outputs, PyTorch {len(exp)} tensors "
                               f"on {path}")
        abs_diff = rel_diff = 0.0
        for e, g in zip(exp, got):
            e = e.detach().float().cpu().numpy()
            if e.shape != g.shape:
                raise RuntimeError(f"export_onnx: ONNX Runtime output shape {g.shape} differs from PyTorch's {e.shape}")
            d = np.abs(e - g)
            abs_diff = max(abs_diff, float(d.max(initial=0.0)))
            rel_diff = max(rel_diff, float((d / (np.abs(e) + 1e-12)).max(initial=0.0)))
            if not np.all(d <= atol + rtol * np.abs(e)):
                raise RuntimeError(f"export_onnx: ONNX Runtime differs from PyTorch by up to {abs_diff:.3g} (atol "
                                   f"{atol}, rtol {rtol}) on {path}")
    return OnnxExport(str(path), path.stat().st_size, opset, input_names, output_names, abs_diff, rel_diff)


class _Reader:
    """ONNX Runtime's calibration-data-reader protocol over edgegen calibration batches."""

    def __init__(self, names, batches):
        self.names = names
        self.it = iter(batches)
        self.index = 0

    def get_next(self):
        b = next(self.it, None)
        if b is None:
            return None
        b = _as_inputs(b)
        if len(b) != len(self.names):
            raise ValueError(f"calibration: batch {self.index} has {len(b)} tensor(s); the model takes "
                             f"{len(self.names)} input(s) {self.names}")
        self.index += 1
        return {n: t.detach().cpu().numpy() for n, t in zip(self.names, b)}

    def rewind(self):  # some ONNX Runtime versions call it
        pass


STATIC_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def quantize_onnx(fp32_path, out_path, mode: str = "dynamic", calibration=None, per_channel: bool = True,
                  op_types=STATIC_OPS) -> int:
    """INT8 model of the ONNX file ``fp32_path`` by ONNX Runtime's quantizer, written to
    ``out_path``; returns its size in bytes. ``mode``: "dynamic" (int8 weights, activations
    quantized per call) or "static" (QDQ format, activation ranges calibrated on ``calibration``: an
    iterable of model inputs, e.g. edgegen's calibration batches). Static mode quantizes the
    ``op_types`` (default: the convolutions and matrix products, as edgegen's own INT8 does; norms,
    softmax and residual additions stay float)."""
    _require_ort()
    fp32_path, out_path = _check_file(fp32_path, "fp32_path"), Path(out_path)
    if mode not in ("dynamic", "static"):
        raise ValueError(f"mode: expected 'dynamic' or 'static', got {mode!r}")
    if mode == "static":
        if calibration is None:
            raise ValueError("calibration: static quantization needs an iterable of calibration inputs")
        calibration = list(calibration)  # a generator is read once here, so emptiness can be checked
        if not calibration:
            raise ValueError("calibration: static quantization needs at least one calibration input, got none "
                             "(the activation ranges are measured on them)")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer's advice on pre-processing goes to the root logger
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            _quantize(mode, fp32_path, out_path, calibration, per_channel, op_types)
        finally:
            root.setLevel(level)
    if _int8_initializers(out_path) == 0:
        warnings.warn(f"quantize_onnx: ONNX Runtime's {mode} quantizer quantized no weight of {fp32_path.name} (its "
                      "dynamic mode has no ConvTranspose, for instance); the file is still float"
                      + ("; try mode='static'" if mode == "dynamic" else ""), RuntimeWarning, stacklevel=2)
    return out_path.stat().st_size


def _quantize(mode, fp32_path, out_path, calibration, per_channel, op_types) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    if mode == "dynamic":
        quantize_dynamic(str(fp32_path), str(out_path), weight_type=QuantType.QInt8, per_channel=per_channel)
        return
    names = [i.name for i in _session(_require_ort(), fp32_path, 1).get_inputs()]
    quantize_static(str(fp32_path), str(out_path), _Reader(names, calibration), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=per_channel,
                    calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=list(op_types))


def quantized_weights(fp32_path, int8_path) -> tuple[int, int]:
    """(weight tensors stored as 8-bit in ``int8_path``, weight tensors of ``fp32_path``): how much
    of the model ONNX Runtime's quantizer actually converted (its dynamic mode skips
    ConvTranspose, for one). A weight tensor is an initializer of two or more dimensions; the
    quantizer's zero points (8-bit too, per channel or per tensor) are not weights and not
    counted."""
    import onnx

    total = sum(1 for t in onnx.load(str(_check_file(fp32_path, "fp32_path"))).graph.initializer
                if len(t.dims) >= 2)
    return _int8_initializers(_check_file(int8_path, "int8_path")), total


# Where quantized ops take zero points (input positions), per ONNX and ONNX Runtime's contrib ops.
_ZERO_POINT_INPUTS = {"QuantizeLinear": (2,), "DequantizeLinear": (2,), "MatMulInteger": (2, 3),
                      "ConvInteger": (2, 3), "QLinearConv": (2, 5, 7), "QLinearMatMul": (2, 5, 7),
                      "DynamicQuantizeMatMul": (3,), "MatMulIntegerToFloat": (4, 5),
                      "QGemm": (2, 5, 8)}


def _int8_initializers(path) -> int:
    """Quantized weight tensors of an ONNX file: 8-bit initializers of two or more dimensions
    that no node reads as a zero point."""
    import onnx

    graph = onnx.load(str(path)).graph
    zero_points = {node.input[i] for node in graph.node for i in _ZERO_POINT_INPUTS.get(node.op_type, ())
                   if i < len(node.input)}
    return sum(1 for t in graph.initializer
               if t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) and len(t.dims) >= 2
               and t.name not in zero_points)


def onnx_latency(path, inputs, repeats: int = 20, warmup: int = 3, threads: int | None = None) -> dict:
    """Median and p90 latency (ms) of ONNX Runtime (CPU) on ``inputs``: ``{"latency_ms_p50",
    "latency_ms_p90", "threads"}``."""
    ort = _require_ort()
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats: expected an int >= 1, got {repeats!r}")
    threads = threads or torch.get_num_threads()
    sess = _session(ort, path, threads)
    feed = _feed(sess, path, inputs)
    for _ in range(warmup):
        sess.run(None, feed)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return {"latency_ms_p50": float(np.median(times)), "latency_ms_p90": float(np.quantile(times, 0.9)),
            "threads": threads}
