"""Attention-head pruning for any attention layer that implements
:class:`edgegen.attention.HeadPrunable` (GPT-2's does): it reports a fused [q | k | v] linear
(each ``n_head * head_dim`` wide, head-major) and an output linear over the concatenated heads.
A pruned head has its query, key and value rows and its output-projection columns masked, so it
contributes exactly nothing; :func:`shrink_heads_` then removes it."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edgegen.attention.dense import HeadLayout, HeadPrunable
from edgegen.prune.config import HeadConfig
from edgegen.prune.masks import apply_mask_, drop_smallest_globally
from edgegen.transform import FilterFn


def is_attention(module: nn.Module) -> bool:
    return isinstance(module, HeadPrunable)


def attention_layers(model: nn.Module, filter_fn: FilterFn | None = None) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules()
            if is_attention(m) and (filter_fn is None or filter_fn(m, n))]


def _plain(lay: HeadLayout) -> bool:
    """Both projections plain Linear layers of the right widths (not QAT-wrapped or quantized)."""
    return (isinstance(lay.qkv, nn.Linear) and isinstance(lay.proj, nn.Linear)
            and lay.qkv.out_features == 3 * lay.n_head * lay.head_dim
            and lay.proj.in_features == lay.n_head * lay.head_dim)


def _layout(attn: nn.Module) -> HeadLayout:
    lay = attn.head_layout()
    if not _plain(lay):
        raise ValueError(f"{type(attn).__name__}.head_layout(): expected a [q | k | v] Linear with "
                         "3 * n_head * head_dim outputs and an output Linear with n_head * head_dim inputs")
    return lay


@torch.no_grad()
def head_importance(attn: nn.Module) -> Tensor:
    """L2 norm, per head, of its query/key/value rows (weights and biases) and output-projection
    columns, in float64."""
    qkv, proj, H, d = _layout(attn)
    w = qkv.weight.detach().double().view(3, H, d, -1)
    sq = w.pow(2).sum(dim=(0, 2, 3))
    if qkv.bias is not None:
        sq += qkv.bias.detach().double().view(3, H, d).pow(2).sum(dim=(0, 2))
    sq += proj.weight.detach().double().view(-1, H, d).pow(2).sum(dim=(0, 2))
    return sq.sqrt()


def mask_heads_(attn: nn.Module, keep: Tensor) -> None:
    """Mask the heads where ``keep`` is False."""
    qkv, proj, _, d = _layout(attn)
    rows = keep.repeat_interleave(d).repeat(3)  # [q | k | v], head-major inside each
    apply_mask_(qkv, "weight", rows[:, None].expand_as(qkv.weight))
    if qkv.bias is not None:
        apply_mask_(qkv, "bias", rows)
    apply_mask_(proj, "weight", keep.repeat_interleave(d)[None, :].expand_as(proj.weight))


def prune_heads_(model: nn.Module, config: HeadConfig, filter_fn=None) -> int:
    """Mask ``config.amount`` of the heads: per layer (``scope='layer'``), or the least important
    over all layers together (``'global'``; per-layer counts then differ). At least one head per
    layer survives. Returns the number of heads masked."""
    layers = attention_layers(model, filter_fn)
    if not layers:
        raise ValueError("model: no head-prunable attention layer (edgegen.attention.HeadPrunable) was selected "
                         "for head pruning")
    scope = config.scope
    imps = [head_importance(m) for _, m in layers]
    heads = [len(imp) for imp in imps]
    keeps = [torch.ones(h, dtype=torch.bool) for h in heads]
    if scope == "layer":
        for h, imp, keep in zip(heads, imps, keeps):
            keep[torch.sort(imp, stable=True).indices[: h - config.heads_to_keep(h)]] = False
    elif scope == "global":
        keeps = drop_smallest_globally(imps, round(config.amount * sum(heads)))
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
    nothing). Keeps one head per layer; layers whose projections are no longer plain Linear
    layers (QAT-wrapped, quantized) are left as they are. A model that defines
    ``heads_changed()`` (GPT-2: its config's ``head_counts``) is told. Returns the number of
    heads removed. The model must not be parametrized."""
    removed = 0
    for _, attn in attention_layers(model):
        if not _plain(attn.head_layout()):
            continue  # projections replaced (QAT, integer modules): their heads stay as they are
        qkv, proj, H, d = _layout(attn)
        live = proj.weight.detach().view(-1, H, d).ne(0).any(dim=2).any(dim=0).cpu()
        if bool(live.all()):
            continue
        if not bool(live.any()):
            live[0] = True
        heads = live.nonzero().flatten()
        cols = (heads[:, None] * d + torch.arange(d)).flatten()
        rows = torch.cat([cols + part * H * d for part in range(3)])
        _select_rows(qkv, 0, rows.to(qkv.weight.device))
        _select_rows(proj, 1, cols.to(proj.weight.device))
        removed += H - len(heads)
        attn.set_head_count(len(heads))
    if removed and callable(getattr(model, "heads_changed", None)):
        model.heads_changed()
    return removed
