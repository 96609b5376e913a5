"""Mixed precision by sensitivity, run-time precision switching, and saving/loading quantized
models at their real size."""

from __future__ import annotations

import copy
import json
import math
import os
from typing import Callable

import torch
from torch import Tensor, nn

from edgegen.tensor_files import read_safetensors, write_safetensors
from edgegen.quant.api import (
    _INT8_KINDS,
    LowPrecision,
    _int8_filter,
    _retie,
    _tied_heads,
    check_not_wrapped,
    quantize_,
)
from edgegen.quant.config import Bf16Config, Fp16Config, _Int4Config
from edgegen.quant.modules import Int4Embedding, Int4Linear, Int8Conv2d, Int8ConvTranspose2d, Int8Embedding, Int8Linear
from edgegen.transform import FilterFn


def _candidates(model: nn.Module, config, filter_fn: FilterFn | None) -> list[str]:
    if isinstance(config, _Int4Config):
        def ok(m, n):
            return (isinstance(m, nn.Linear) and m.in_features % 64 == 0 and m.in_features % config.group_size == 0
                    and (filter_fn is None or filter_fn(m, n)))
    elif isinstance(config, (Fp16Config, Bf16Config)):
        def ok(m, n):
            return isinstance(m, _INT8_KINDS) and (filter_fn is None or filter_fn(m, n))
    else:
        keep = _int8_filter(filter_fn)

        def ok(m, n):
            return isinstance(m, _INT8_KINDS) and keep(m, n)
    return [n for n, m in model.named_modules() if n and ok(m, n)]


def _with_tied(model: nn.Module, names) -> set[str]:
    """``names`` plus the embedding tied to any head among them (GPT-2's ``wte`` for ``lm_head``):
    quantize_ then quantizes the pair together and keeps the tie (one table in the file), rather
    than giving the head its own copy beside a float table."""
    tied = {head: emb for emb, head in _tied_heads(model)}
    return set(names) | {tied[n] for n in names if n in tied}


def layer_sensitivity(model: nn.Module, config, evaluate: Callable[[nn.Module], float],
                      filter_fn: FilterFn | None = None) -> dict[str, float]:
    """For every candidate layer: ``evaluate`` (a loss: lower is better) of a copy of the model
    with only that layer quantized (with the embedding tied to it, if any), minus ``evaluate`` of
    the unquantized model."""
    base = float(evaluate(model))
    out = {}
    for name in _candidates(model, config, filter_fn):
        m = copy.deepcopy(model)
        chosen = _with_tied(m, [name])
        quantize_(m, config, filter_fn=lambda mod, n, chosen=chosen: n in chosen)
        out[name] = float(evaluate(m)) - base
    return out


def quantize_mixed_(model: nn.Module, config, evaluate: Callable[[nn.Module], float], keep_fraction: float = 0.12,
                    keep_config=Bf16Config(), filter_fn: FilterFn | None = None) -> dict:
    """Quantize with ``config`` except the ``keep_fraction`` most sensitive layers (by
    :func:`layer_sensitivity`), which get ``keep_config`` (16-bit by default, as in the published
    recipe; None keeps them in fp32). Returns a report: per-layer sensitivity, the kept layers,
    the baseline and final ``evaluate`` values and the saved size in bytes."""
    if not 0.0 <= keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction: expected a fraction in [0, 1], got {keep_fraction!r}")
    from edgegen.prune.export import saved_bytes

    baseline = float(evaluate(model))
    sens = layer_sensitivity(model, config, evaluate, filter_fn)
    if not sens:
        raise ValueError("model: nothing to quantize (no candidate layer)")
    k = math.ceil(keep_fraction * len(sens)) if keep_fraction > 0 else 0
    kept = sorted(sens, key=lambda n: sens[n], reverse=True)[:k]
    rest = _with_tied(model, set(sens) - set(kept))
    if rest:
        quantize_(model, config, filter_fn=lambda m, n: n in rest)
    if kept and keep_config is not None:
        quantize_(model, keep_config, filter_fn=lambda m, n: n in kept)
    return {"baseline": baseline, "metric": float(evaluate(model)), "sensitivity": sens, "kept": kept,
            "bytes": saved_bytes(model)}


class SwitchablePrecision(nn.Module):
    """Keeps a layer both in full precision and quantized (packed), and runs either: per call
    (``forward(x, quantized=True/False)``) or by the ``quantized`` attribute
    (:func:`set_precision_`). For dynamic precision scaling under a latency or energy budget."""

    def __init__(self, module: nn.Module, config):
        super().__init__()
        self.full = module
        holder = nn.Sequential(copy.deepcopy(module))
        quantize_(holder, config)
        self.low = holder[0]
        self.quantized = True
        self.training = module.training  # the mode of the layer it replaces
        self.low.train(module.training)

    def forward(self, x: Tensor, quantized: bool | None = None) -> Tensor:
        use_low = self.quantized if quantized is None else quantized
        return self.low(x) if use_low else self.full(x)


def enable_precision_switch_(model: nn.Module, config, filter_fn: FilterFn | None = None) -> nn.Module:
    """Wrap every candidate layer of ``config`` (``filter_fn`` selects) in a
    :class:`SwitchablePrecision` holding both the float layer and its quantized twin, in place;
    :func:`set_precision_` then switches the whole model at run time. Returns ``model``; a
    ValueError when no layer qualifies."""
    names = _candidates(model, config, filter_fn)
    if not names:
        raise ValueError("model: nothing to quantize (no candidate layer)")
    for name in names:
        check_not_wrapped(model, name)
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, child, SwitchablePrecision(getattr(owner, child), config))
    return model


def set_precision_(model, quantized: bool) -> int:
    """Switch every :class:`SwitchablePrecision` layer of ``model`` (a module, or the list of its
    switchable layers collected once, for per-step switching); returns how many were switched."""
    layers = model.modules() if isinstance(model, nn.Module) else model
    n = 0
    for m in layers:
        if isinstance(m, SwitchablePrecision):
            m.quantized = bool(quantized)
            n += 1
    return n


# --- saving and loading --------------------------------------------------------------------------

def _layout(model: nn.Module) -> dict[str, dict]:
    """Name -> how to rebuild it, for every quantized layer (not the Int8Linear GEMMs that
    convolutions hold inside: their parent rebuilds them)."""
    from edgegen.quant.qat import QATModule

    out: dict[str, dict] = {}
    for name, m in model.named_modules():
        if any(name.startswith(p + ".") for p in out):
            continue
        if isinstance(m, (SwitchablePrecision, QATModule)):
            raise ValueError(f"model: layer {name!r} is a {type(m).__name__}, which save_quantized cannot store "
                             "(it holds a float layer beside its quantized form); "
                             + ("convert it first (QATConfig(step='convert') / convert_)" if isinstance(m, QATModule)
                                else "save the model quantized with the config itself instead"))
        if isinstance(m, Int8Linear):
            out[name] = {"type": "Int8Linear", "static": m.static}
        elif isinstance(m, Int8Conv2d):
            out[name] = {"type": "Int8Conv2d", "static": m.gemm.static}
        elif isinstance(m, Int8ConvTranspose2d):
            out[name] = {"type": "Int8ConvTranspose2d", "static": m.static}
        elif isinstance(m, Int4Linear):
            out[name] = {"type": "Int4Linear", "group_size": m.group_size, "activations": m.activations}
        elif isinstance(m, Int8Embedding):
            out[name] = {"type": "Int8Embedding"}
        elif isinstance(m, Int4Embedding):
            out[name] = {"type": "Int4Embedding", "group_size": m.group_size}
        elif isinstance(m, LowPrecision):
            out[name] = {"type": "LowPrecision", "dtype": str(m.dtype).removeprefix("torch.")}
    return out


def save_quantized(model: nn.Module, path: str | os.PathLike) -> int:
    """Write the quantized model's state dict (int8/int4 weights, scales) and its layout to a
    safetensors file, atomically. Returns the file size in bytes. Pruning masks of layers left in
    floating point are baked in (saved from a :func:`~edgegen.prune.finalize_`-d copy): the file
    holds each such weight once, with its pruned entries zero, and loads into a fresh model.

    Examples:
        >>> import tempfile, torch
        >>> from torch import nn
        >>> from edgegen.quant import Int8DynamicConfig, quantize_
        >>> model = quantize_(nn.Sequential(nn.Linear(64, 64)), Int8DynamicConfig())
        >>> folder = tempfile.TemporaryDirectory()
        >>> path = folder.name + "/model.safetensors"
        >>> save_quantized(model, path) < 64 * 64 * 4      # int8 weights: about a quarter of fp32
        True
        >>> fresh = load_quantized(nn.Sequential(nn.Linear(64, 64)), path)
        >>> x = torch.randn(3, 64)
        >>> torch.equal(fresh(x), model(x))
        True
        >>> folder.cleanup()
    """
    from torch.nn.utils import parametrize

    from edgegen.prune.masks import finalize_

    layout = _layout(model)  # refuses wrappers before anything is copied
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        model = finalize_(copy.deepcopy(model))
    return write_safetensors(model.state_dict(), path, {"edgegen_quant_layout": json.dumps(layout)})


def load_quantized(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Turn a freshly built float ``model`` of the same architecture into the saved quantized model:
    the layers listed in the file's layout are replaced, then the state dict is loaded."""
    state, meta = read_safetensors(path)
    if "edgegen_quant_layout" not in meta:
        raise ValueError(f"path: {path} was not written by edgegen.quant.save_quantized")
    layout = json.loads(meta["edgegen_quant_layout"])
    tied = _tied_heads(model)  # the float model's ties (GPT-2's head), shared again after loading
    for name, spec in layout.items():
        m = model.get_submodule(name)
        act = (1.0, 0) if spec.get("static") else None  # placeholders; the state dict brings the values
        kind = spec["type"]
        if kind == "Int8Linear":
            q = Int8Linear.from_float(m, act)
        elif kind == "Int8Conv2d":
            q = Int8Conv2d.from_float(m, act)
        elif kind == "Int8ConvTranspose2d":
            q = Int8ConvTranspose2d.from_float(m, act)
        elif kind == "Int4Linear":
            q = Int4Linear.from_float(m, spec["group_size"], spec.get("activations", "float"))
        elif kind == "Int8Embedding":
            q = Int8Embedding.from_float(m)
        elif kind == "Int4Embedding":
            q = Int4Embedding.from_float(m, spec["group_size"])
        elif kind == "LowPrecision":
            q = LowPrecision(m, getattr(torch, spec["dtype"]))
        else:
            raise ValueError(f"path: unknown layer type {kind!r} for {name}")
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, q)
    model.load_state_dict(state)
    _retie(model, tied)
    return model
