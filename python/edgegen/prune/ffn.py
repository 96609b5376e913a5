"""Feed-forward width pruning for blocks that report their two projections (``ffn_layout()``
returning (the Linear into the hidden units, the Linear out of them); GPT-2's MLP does). A
pruned unit has its input row and bias and its output column masked, so it contributes exactly
nothing; :func:`shrink_ffn_` then removes it, and a model defining ``ffn_changed()`` is told."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edgegen.prune.config import FFNConfig
from edgegen.prune.masks import apply_mask_, drop_smallest_globally
from edgegen.transform import FilterFn


def _layout(block: nn.Module) -> tuple[nn.Linear, nn.Linear] | None:
    """The block's (in, out) projections if both are plain Linear layers of matching width."""
    fc_in, fc_out = block.ffn_layout()
    if isinstance(fc_in, nn.Linear) and isinstance(fc_out, nn.Linear) and fc_in.out_features == fc_out.in_features:
        return fc_in, fc_out
    return None


def ffn_blocks(model: nn.Module, filter_fn: FilterFn | None = None) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules()
            if callable(getattr(m, "ffn_layout", None)) and (filter_fn is None or filter_fn(m, n))]


@torch.no_grad()
def unit_importance(block: nn.Module) -> Tensor:
    """L2 norm, per hidden unit, of its input row (with the bias) and its output column, float64."""
    fc_in, fc_out = _layout(block)
    sq = fc_in.weight.detach().double().pow(2).sum(1) + fc_out.weight.detach().double().pow(2).sum(0)
    if fc_in.bias is not None:
        sq += fc_in.bias.detach().double().pow(2)
    return sq.sqrt()


def prune_ffn_(model: nn.Module, config: FFNConfig, filter_fn: FilterFn | None = None) -> int:
    """Mask ``config.amount`` of the hidden units of every selected block (``'layer'``) or of all
    of them together (``'global'``); at least one unit per block survives. Returns the number of
    blocks changed."""
    blocks = [(n, m) for n, m in ffn_blocks(model, filter_fn) if _layout(m) is not None]
    if not blocks:
        raise ValueError("model: no feed-forward block (ffn_layout() with plain Linear layers) was selected")
    imps = [unit_importance(m) for _, m in blocks]
    keeps = [torch.ones(len(i), dtype=torch.bool) for i in imps]
    if config.scope == "layer":
        for imp, keep in zip(imps, keeps):
            keep[torch.sort(imp, stable=True).indices[: len(imp) - config.units_to_keep(len(imp))]] = False
    else:
        keeps = drop_smallest_globally(imps, round(config.amount * sum(len(i) for i in imps)))
    changed = 0
    for (_, m), keep in zip(blocks, keeps):
        if keep.all():
            continue
        fc_in, fc_out = _layout(m)
        apply_mask_(fc_in, "weight", keep[:, None].expand_as(fc_in.weight).to(fc_in.weight.device))
        if fc_in.bias is not None:
            apply_mask_(fc_in, "bias", keep.to(fc_in.bias.device))
        apply_mask_(fc_out, "weight", keep[None, :].expand_as(fc_out.weight).to(fc_out.weight.device))
        changed += 1
    return changed


@torch.no_grad()
def shrink_ffn_(model: nn.Module) -> int:
    """Remove, in place, every hidden unit whose output column is all zero (it contributes
    nothing), keeping one per block; blocks whose projections are not plain Linear layers are left
    alone. The model must not be parametrized. Returns the number of units removed."""
    removed = 0
    for _, block in ffn_blocks(model):
        lay = _layout(block)
        if lay is None:
            continue
        fc_in, fc_out = lay
        live = fc_out.weight.detach().ne(0).any(0).cpu()
        if bool(live.all()):
            continue
        if not bool(live.any()):
            live[0] = True
        idx = live.nonzero().flatten()
        fc_in.weight = nn.Parameter(fc_in.weight.detach()[idx.to(fc_in.weight.device)].clone(),
                                    requires_grad=fc_in.weight.requires_grad)
        if fc_in.bias is not None:
            fc_in.bias = nn.Parameter(fc_in.bias.detach()[idx.to(fc_in.bias.device)].clone(),
                                      requires_grad=fc_in.bias.requires_grad)
        fc_out.weight = nn.Parameter(fc_out.weight.detach()[:, idx.to(fc_out.weight.device)].clone(),
                                     requires_grad=fc_out.weight.requires_grad)
        fc_in.out_features = fc_out.in_features = len(idx)
        removed += len(live) - len(idx)
    if removed and callable(getattr(model, "ffn_changed", None)):
        model.ffn_changed()
    return removed
