"""Attention-head pruning for attention modules laid out like GPT-2's: a fused ``c_attn`` linear
producing [q | k | v] (each ``n_head * head_dim`` wide, head-major) and a ``c_proj`` linear over
the concatenated heads. A pruned head has its query, key and value rows and its output-projection
columns masked, so it contributes exactly nothing; :func:`shrink_heads_` then removes it."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch
from torch import Tensor, nn

from edgegen.prune.config import HeadConfig
from edgegen.prune.masks import apply_mask_


def is_attention(module: nn.Module) -> bool:
    return (isinstance(getattr(module, "c_attn", None), nn.Linear) and isinstance(getattr(module, "c_proj", None), nn.Linear)
            and isinstance(getattr(module, "n_head", None), int) and isinstance(getattr(module, "head_dim", None), int))


def attention_layers(model: nn.Module, filter_fn: Callable[[nn.Module, str], bool] | None = None
                     ) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules()
            if is_attention(m) and (filter_fn is None or filter_fn(m, n))]


@torch.no_grad()
def head_importance(attn: nn.Module) -> Tensor:
    """L2 norm, per head, of its query/key/value rows (weights and biases) and output-projection
    columns, in float64."""
    H, d = attn.n_head, attn.head_dim
    w = attn.c_attn.weight.detach().double().view(3, H, d, -1)
    sq = w.pow(2).sum(dim=(0, 2, 3))
    if attn.c_attn.bias is not None:
        sq += attn.c_attn.bias.detach().double().view(3, H, d).pow(2).sum(dim=(0, 2))
    sq += attn.c_proj.weight.detach().double().view(-1, H, d).pow(2).sum(dim=(0, 2))
    return sq.sqrt()


def mask_heads_(attn: nn.Module, keep: Tensor) -> None:
    """Mask the heads where ``keep`` is False."""
    d = attn.head_dim
    rows = keep.repeat_interleave(d).repeat(3)  # [q | k | v], head-major inside each
    apply_mask_(attn.c_attn, "weight", rows[:, None].expand_as(attn.c_attn.weight))
    if attn.c_attn.bias is not None:
        apply_mask_(attn.c_attn, "bias", rows)
    apply_mask_(attn.c_proj, "weight", keep.repeat_interleave(d)[None, :].expand_as(attn.c_proj.weight))


def prune_heads_(model: nn.Module, config: HeadConfig, filter_fn=None) -> int:
    """Mask ``config.amount`` of the heads: per layer (``scope='layer'``), or the least important
    over all layers together (``'global'``; per-layer counts then differ). At least one head per
    layer survives. Returns the number of heads masked."""
    layers = attention_layers(model, filter_fn)
    if not layers:
        raise ValueError("model: no attention layer with c_attn/c_proj/n_head/head_dim was selected for head pruning")
    scope = config.scope
    imps = [head_importance(m) for _, m in layers]
    keeps = [torch.ones(m.n_head, dtype=torch.bool) for _, m in layers]
    if scope == "layer":
        for (_, m), imp, keep in zip(layers, imps, keeps):
            keep[torch.sort(imp, stable=True).indices[: m.n_head - config.heads_to_keep(m.n_head)]] = False
    elif scope == "global":
        total = sum(m.n_head for _, m in layers)
        todo = round(config.amount * total)
        flat = torch.cat(imps)
        owner = torch.cat([torch.full((m.n_head,), i) for i, (_, m) in enumerate(layers)])
        local = torch.cat([torch.arange(m.n_head) for _, m in layers])
        for j in torch.sort(flat, stable=True).indices.tolist():
            if todo == 0:
                break
            keep = keeps[int(owner[j])]
            if int(keep.sum()) > 1:
                keep[int(local[j])] = False
                todo -= 1
    else:
        raise ValueError(f"scope: expected 'layer' or 'global', got {scope!r}")
    removed = 0
    for (_, m), keep in zip(layers, keeps):
        if not keep.all():
            removed += int((~keep).sum())
            mask_heads_(m, keep)
    return removed


def _select_rows(linear: nn.Linear, dim: int, index: Tensor) -> None:
    w = linear.weight
    linear.weight = nn.Parameter(w.detach().index_select(dim, index).clone(), requires_grad=w.requires_grad)
    if dim == 0 and linear.bias is not None:
        b = linear.bias
        linear.bias = nn.Parameter(b.detach().index_select(0, index).clone(), requires_grad=b.requires_grad)
    linear.out_features, linear.in_features = linear.weight.shape


@torch.no_grad()
def shrink_heads_(model: nn.Module) -> int:
    """Remove, in place, every head whose output-projection columns are all zero (it contributes
    nothing). Keeps one head per layer. A GPT-2 model's config gets the new ``head_counts``.
    Returns the number of heads removed. The model must not be parametrized."""
    removed = 0
    for _, attn in attention_layers(model):
        H, d = attn.n_head, attn.head_dim
        live = attn.c_proj.weight.detach().view(-1, H, d).ne(0).any(dim=2).any(dim=0).cpu()
        if bool(live.all()):
            continue
        if not bool(live.any()):
            live[0] = True
        heads = live.nonzero().flatten()
        cols = (heads[:, None] * d + torch.arange(d)).flatten()
        rows = torch.cat([cols + part * H * d for part in range(3)])
        _select_rows(attn.c_attn, 0, rows.to(attn.c_attn.weight.device))
        _select_rows(attn.c_proj, 1, cols.to(attn.c_proj.weight.device))
        removed += H - len(heads)
        attn.n_head = len(heads)
    from edgegen.models.gpt2 import GPT2

    if removed and isinstance(model, GPT2):
        model.config = replace(model.config, head_counts=tuple(b.attn.n_head for b in model.h))
    return removed
