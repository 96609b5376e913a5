"""Sliding-window + global-token attention and block-sparse attention (functional forms).

On CPU (float32, bfloat16, float16, float64) these run edgegen's C++ kernels, forward and
backward, in O(n * (window + num_global) * head_dim) time and O(n) memory. On CUDA they run
FlexAttention with a block mask of the same pattern (compiled; float16/bfloat16/float32, head_dim a
power of two in [16, 256]); anything else falls back to the PyTorch reference (same semantics,
O(n^2) memory). The dispatcher chooses, from the device of the inputs.
"""

from __future__ import annotations

import math
import sys

import torch
from torch import Tensor

from edgegen.ops._args import INT64_MAX, is_int
from edgegen.ops._reference import block_layout_mask, sliding_window_mask

__all__ = ["sliding_window_attention", "block_sparse_attention", "sliding_window_mask", "block_layout_mask"]




def _int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {value!r}")
    if not low <= value <= INT64_MAX:
        raise ValueError(f"{name}: expected an integer in [{low}, 2**63 - 1], got {value}")
    return value


def _integer_entries(value) -> bool:
    """True when a (nested) Python sequence holds only ints, bools excluded (NumPy integer scalars
    count as ints; NumPy's bool_ is no numbers.Integral)."""
    if isinstance(value, (list, tuple)):
        return all(_integer_entries(v) for v in value)
    return is_int(value)


def _layout(block_layout) -> Tensor:
    """``block_layout`` as an int64 tensor, refusing anything that is not integer-valued by type:
    a float layout would be truncated and a bool one read as block indices 0 and 1."""
    if isinstance(block_layout, Tensor):
        if block_layout.dtype == torch.bool or block_layout.is_floating_point() or block_layout.is_complex():
            raise TypeError(f"block_layout: expected an integer tensor of (query block, key block) pairs, "
                            f"got {block_layout.dtype}")
        return block_layout.long()
    np = sys.modules.get("numpy")
    if np is not None and isinstance(block_layout, np.ndarray):
        if block_layout.dtype.kind not in "iu":
            raise TypeError(f"block_layout: expected an integer array of (query block, key block) pairs, "
                            f"got {block_layout.dtype}")
        return torch.as_tensor(block_layout, dtype=torch.long)
    if not isinstance(block_layout, (list, tuple)) or not _integer_entries(block_layout):
        raise TypeError(f"block_layout: expected an integer tensor or a list of (query block, key block) pairs of "
                        f"ints, got {block_layout!r}")
    try:
        return torch.as_tensor(block_layout, dtype=torch.long)
    except (ValueError, RuntimeError, OverflowError) as e:  # ragged pairs, ints beyond int64
        raise ValueError(f"block_layout: expected [pairs, 2] int64 block indices, got {block_layout!r} ({e})") from None


def _check(q: Tensor, k: Tensor, v: Tensor, scale, q_offset) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: expected a tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name}: expected a 4-D tensor [batch, heads, length, head_dim], got "
                             f"{t.dim()}-D of shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {t.dtype}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"k, v: expected the dtype of q ({q.dtype}), got {k.dtype} and {v.dtype}")
    if k.device != q.device or v.device != q.device:
        raise RuntimeError(f"k, v: expected tensors on {q.device} (the device of q), got {k.device} and {v.device}")
    if k.shape != v.shape:
        raise ValueError(f"v: expected the shape of k {tuple(k.shape)}, got {tuple(v.shape)}")
    if q.shape[0] != k.shape[0] or q.shape[1] != k.shape[1] or q.shape[3] != k.shape[3]:
        raise ValueError(f"k: expected the batch, heads and head_dim of q {tuple(q.shape)}, got {tuple(k.shape)}")
    if scale is not None and not (isinstance(scale, (int, float)) and not isinstance(scale, bool)
                                  and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale: expected None or a finite number > 0, got {scale!r}")
    _int(q_offset, "q_offset", 0)


def _run(q, k, v, window, num_global, causal, scale, q_offset, layout, block_size, return_lse):
    scale = None if scale is None else float(scale)
    # The dispatcher picks the kernel: C++ on CPU, CUDA (native or FlexAttention) on GPUs, the
    # reference twin elsewhere.
    out, lse = torch.ops.edgegen.sliding_window_attention(q, k, v, window, num_global, bool(causal), scale,
                                                          q_offset, layout, block_size)
    return (out, lse) if return_lse else out


def sliding_window_attention(q: Tensor, k: Tensor, v: Tensor, window: int, num_global: int = 0,
                             causal: bool = True, scale: float | None = None, *, q_offset: int = 0,
                             return_lse: bool = False):
    """Softmax attention in which each query sees a window of nearby keys plus a few global
    tokens.

    Shapes: ``q`` [B, H, n, d], ``k`` and ``v`` [B, H, nk, d] (nk = n, or the cache length for a
    decode step). Query i sits at position ``p = q_offset + i`` and key j at position j. With
    ``w = window`` and ``g = num_global``:

    * causal (default): query p sees key j iff ``j <= p`` and (``p - j < w`` or ``j < g``): the
      ``w`` most recent positions including itself, plus the first ``g`` positions. ``window=1``
      sees only itself; ``window >= n`` is ordinary causal attention.
    * non-causal: iff ``|p - j| < w`` or ``j < g`` or ``p < g``: a window of ``2w - 1`` keys centred
      on p, the global keys, and the global queries (p < g) see every key.

    ``scale`` defaults to 1/sqrt(d). A query that sees no key (possible only with ``q_offset``
    beyond the keys) gets output 0 and zero gradients. Returns ``out`` [B, H, n, d] in q's dtype,
    or ``(out, lse)`` with the float32 log-sum-exp [B, H, n] when ``return_lse``. Differentiable
    in q, k and v (the backward never materialises [n, nk]), through ``lse`` too: attention merged
    over key chunks by their lse has the gradients of attention over all keys.

    Examples:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> q, k, v = (torch.randn(1, 2, 64, 16, dtype=torch.float64) for _ in range(3))
        >>> out = sliding_window_attention(q, k, v, window=8, num_global=2)
        >>> ref = F.scaled_dot_product_attention(q, k, v, attn_mask=sliding_window_mask(64, 64, 8, 2))
        >>> bool(torch.allclose(out, ref))
        True
    """
    _check(q, k, v, scale, q_offset)
    _int(window, "window", 1)
    _int(num_global, "num_global", 0)
    if num_global > k.shape[2]:
        raise ValueError(f"num_global: expected at most the number of keys ({k.shape[2]}), got {num_global}")
    return _run(q, k, v, window, num_global, causal, scale, q_offset, None, 0, return_lse)


def block_sparse_attention(q: Tensor, k: Tensor, v: Tensor, block_layout, block_size: int, causal: bool = False,
                           scale: float | None = None, *, q_offset: int = 0, return_lse: bool = False):
    """Attention over a block-sparse pattern, through the same kernel as
    :func:`sliding_window_attention`: positions are cut into blocks of ``block_size``; query
    position p sees key j iff the pair (p // block_size, j // block_size) is in ``block_layout``
    (an integer tensor [pairs, 2], or a list of pairs of ints; duplicates are ignored) and, when
    ``causal``, ``j <= p``. Cost is proportional to the number of listed pairs. Float and bool
    layouts are refused with a TypeError: a float would be truncated to a block index, and a bool
    tensor reads like a mask, which this is not."""
    _check(q, k, v, scale, q_offset)
    _int(block_size, "block_size", 1)
    layout = _layout(block_layout)
    if layout.numel() == 0:
        layout = layout.reshape(0, 2)
    if layout.dim() != 2 or layout.shape[1] != 2:
        raise ValueError(f"block_layout: expected [pairs, 2] (query block, key block), got shape "
                         f"{tuple(layout.shape)}")
    nqb = -(-(q_offset + q.shape[2]) // block_size)
    nkb = -(-k.shape[2] // block_size)
    if layout.numel() and (int(layout[:, 0].min()) < 0 or int(layout[:, 0].max()) >= nqb
                           or int(layout[:, 1].min()) < 0 or int(layout[:, 1].max()) >= nkb):
        raise IndexError(f"block_layout: expected query blocks in [0, {nqb}) and key blocks in [0, {nkb})")
    return _run(q, k, v, 1, 0, causal, scale, q_offset, layout.cpu(), block_size, return_lse)
