"""Python side of the pruning ops: fake kernels, and the public wrappers (argument checks, then
the op; the dispatcher picks the C++ CPU kernel or the reference twin registered for other
devices in :mod:`edgegen.ops._fallback`)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from edgegen.ops._args import as_int, check_real, check_writable
from edgegen.ops._fake import register_fake


@register_fake("edgegen::magnitude_scores")
def _(weight, grad):
    return torch.empty_like(weight, memory_format=torch.contiguous_format)


@register_fake("edgegen::kth_smallest_score")
def _(weights, grads, k):
    return weights[0].new_empty((), dtype=torch.float32)


@register_fake("edgegen::magnitude_mask")
def _(weights, grads, num_prune):
    return [torch.empty(w.shape, dtype=torch.bool, device=w.device) for w in weights]


@register_fake("edgegen::magnitude_prune_")
def _(weights, grads, num_prune, masks):
    return None


@register_fake("edgegen::nm_mask")
def _(weight, n, m, dim):
    return torch.empty(weight.shape, dtype=torch.bool, device=weight.device)


@register_fake("edgegen::channel_norms")
def _(weight, dim, p, grad):
    return weight.new_empty((weight.shape[dim],), dtype=torch.float32)


def _detached(ts: Sequence[Tensor] | None) -> list[Tensor] | None:
    return None if ts is None else [t.detach() for t in ts]


def _real(weights, grads, wname="weights", gname="grads") -> None:
    for i, w in enumerate(weights):
        check_real(w, f"{wname}[{i}]")
    for i, g in enumerate(grads or []):
        check_real(g, f"{gname}[{i}]")


def magnitude_scores(weight: Tensor, grad: Tensor | None = None) -> Tensor:
    """|weight|, or |weight * grad| (first-order Taylor importance), in weight's dtype."""
    check_real(weight, "weight")
    check_real(grad, "grad")
    return torch.ops.edgegen.magnitude_scores(weight.detach(), None if grad is None else grad.detach())


def kth_smallest_score(weights: Sequence[Tensor], k: int, grads: Sequence[Tensor] | None = None) -> Tensor:
    """The k-th smallest (1-based) score over all ``weights`` together, without concatenating
    them: equals ``torch.cat([w.abs().flatten() ...]).kthvalue(k)``. 0-d float32 tensor."""
    weights = list(weights)
    if not weights:
        raise ValueError("weights: expected at least one tensor")
    _real(weights, grads)
    k = as_int(k, "k")
    return torch.ops.edgegen.kth_smallest_score(_detached(weights), _detached(grads), k)


def magnitude_mask(weights: Sequence[Tensor], num_prune: int, grads: Sequence[Tensor] | None = None) -> list[Tensor]:
    """Bool masks (True = kept) pruning exactly ``num_prune`` entries, those with the smallest
    scores over all tensors together; ties at the threshold are pruned in list order, then
    flat-index order."""
    weights = list(weights)
    if not weights:
        return []
    _real(weights, grads)
    num_prune = as_int(num_prune, "num_prune")
    return list(torch.ops.edgegen.magnitude_mask(_detached(weights), _detached(grads), num_prune))


@torch.no_grad()
def magnitude_prune_(weights: Sequence[Tensor], num_prune: int, grads: Sequence[Tensor] | None = None) -> list[Tensor]:
    """:func:`magnitude_mask`, and the pruned entries of ``weights`` set to zero in place (one fused
    sweep on CPU). Returns the masks."""
    weights = list(weights)
    if not weights:
        return []
    _real(weights, grads)
    for i, w in enumerate(weights):
        check_writable(w, f"weights[{i}]")
    num_prune = as_int(num_prune, "num_prune")
    masks = [torch.empty(w.shape, dtype=torch.bool, device=w.device) for w in weights]
    torch.ops.edgegen.magnitude_prune_(_detached(weights), _detached(grads), num_prune, masks)
    return masks


def nm_mask(weight: Tensor, n: int, m: int, dim: int = -1) -> Tensor:
    """N:M mask: in every group of ``m`` consecutive entries along ``dim`` the ``n`` largest |w|
    are kept (ties keep the lower index). 0 <= n <= m <= 64 on every device and dtype."""
    check_real(weight, "weight")
    n, m, dim = as_int(n, "n"), as_int(m, "m"), as_int(dim, "dim")
    return torch.ops.edgegen.nm_mask(weight.detach(), n, m, dim)


def channel_norms(weight: Tensor, dim: int = 0, p: int = 1, grad: Tensor | None = None) -> Tensor:
    """float32 Lp norm (p = 1 or 2) of every slice of ``weight`` along ``dim`` (of weight * grad
    when given): dim 0 for Conv2d (OIHW) and Linear, dim 1 for ConvTranspose2d."""
    check_real(weight, "weight")
    check_real(grad, "grad")
    dim, p = as_int(dim, "dim"), as_int(p, "p")
    return torch.ops.edgegen.channel_norms(weight.detach(), dim, p, None if grad is None else grad.detach())
