"""Pruning-ratio sweeps: per ratio, the pruned model's size, cost and the caller's quality."""

from __future__ import annotations

from typing import Callable, Iterable

from torch import nn

from edgegen.ops.flops import count_flops
from edgegen.prune.api import prune_
from edgegen.prune.export import saved_bytes
from edgegen.prune.graph import eval_mode
from edgegen.prune.masks import finalize_
from edgegen.prune.structured import _as_tuple, shrink

DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _eval_flops(model: nn.Module, example_inputs) -> int:
    """FLOPs of one forward pass in eval mode as executed (dense): :func:`edgegen.ops.flops.count_flops`,
    the counter every edgegen measurement uses (2 per multiply-add; convolutions, matmuls,
    attention and edgegen's own ops)."""
    with eval_mode(model):
        return count_flops(model, _as_tuple(example_inputs))


def sweep_ratios(build_model: Callable[[], nn.Module], config_for: Callable[[float], object], example_inputs,
                 ratios: Iterable[float] = DEFAULT_RATIOS, evaluate: Callable[[nn.Module], float] | None = None,
                 filter_fn=None) -> list[dict]:
    """For each ratio: build a fresh model, ``prune_`` it with ``config_for(ratio)``, then
    physically ``shrink`` it (configs that remove structures: channels, heads, FFN units) or bake
    the masks in (others). Returns one dict per ratio (ratio 0 = the dense model is included
    first) with: ``params`` (all),
    ``nonzero_params``, ``flops`` (dense-executed forward FLOPs on example_inputs),
    ``bytes_dense`` (plain safetensors), ``bytes_sparse`` (bitmask-compressed safetensors) and
    ``metric`` (``evaluate(model)``, or None)."""
    inputs = _as_tuple(example_inputs)
    rows = []
    for ratio in [0.0, *ratios]:
        model = build_model()
        config = None
        if ratio > 0:
            config = config_for(ratio)
            prune_(model, config, filter_fn, example_inputs=inputs)
            model = shrink(model, inputs) if config.shrinks else finalize_(model)
        params = sum(p.numel() for p in model.parameters())
        nonzero = sum(int((p != 0).sum()) for p in model.parameters())
        rows.append({
            "ratio": ratio, "config": None if config is None else config.to_dict(), "params": params,
            "nonzero_params": nonzero, "flops": _eval_flops(model, inputs), "bytes_dense": saved_bytes(model),
            "bytes_sparse": saved_bytes(model, sparse=True), "metric": None if evaluate is None else evaluate(model),
        })
    return rows
