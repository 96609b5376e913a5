"""The interface between attention layers and the transforms that change them.

* An attention *core* maps [B, H, T, D] queries/keys/values to outputs: ``forward(q, k, v,
  q_offset)``. :class:`DenseAttention` is the default; ``sparsify_attention_`` swaps cores for
  sparse ones, wherever a model keeps them.
* A layer whose heads can be pruned implements :class:`HeadPrunable`: it reports its fused
  [q | k | v] projection and output projection (:class:`HeadLayout`) and accepts a new head count.
  Models with such layers may define ``heads_changed()`` to update their own config after heads
  are physically removed.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DenseAttention", "HeadLayout", "HeadPrunable"]


def _no_cache(q: Tensor, k: Tensor, q_offset) -> bool:
    """Whether the queries start at position 0 and are as long as the keys (no KV cache). A trace
    records the answer for its example: an ONNX export of GPT-2 has a fixed sequence length and no
    cache, so the answer holds for every input it takes, and its TracerWarning would only bury the
    warnings that matter."""
    if not torch.jit.is_tracing():
        return q_offset == 0 and q.shape[-2] == k.shape[-2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return bool(q_offset == 0) and bool(q.shape[-2] == k.shape[-2])


class DenseAttention(nn.Module):
    """Causal softmax attention over [B, H, T, D] queries/keys/values via SDPA.
    ``q_offset`` is the position of the first query (the length of a KV cache before it)."""

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.dropout = dropout

    def forward(self, q: Tensor, k: Tensor, v: Tensor, q_offset: int = 0) -> Tensor:
        p = self.dropout if self.training else 0.0
        if _no_cache(q, k, q_offset):
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        tq, tk = q.shape[-2], k.shape[-2]
        mask = torch.arange(tk, device=q.device)[None, :] <= (q_offset + torch.arange(tq, device=q.device))[:, None]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)


class HeadLayout(NamedTuple):
    """``qkv``: a Linear producing [q | k | v], each ``n_head * head_dim`` wide and head-major;
    ``proj``: a Linear over the concatenated heads (``n_head * head_dim`` inputs)."""

    qkv: nn.Linear
    proj: nn.Linear
    n_head: int
    head_dim: int


@runtime_checkable
class HeadPrunable(Protocol):
    """An attention layer whose heads can be pruned: ``head_layout()`` reports its projections
    and head shape; ``set_head_count(n)`` takes the count after heads were removed (the
    projections are already sliced)."""

    def head_layout(self) -> HeadLayout: ...

    def set_head_count(self, n_head: int) -> None: ...
