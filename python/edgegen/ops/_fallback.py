"""Kernels written in PyTorch for the devices the C++ extension has no kernel for.

They are registered with the dispatcher (see :func:`register`), so ``torch.ops.edgegen.*`` is the
one entry point on every device: the C++ CPU and CUDA kernels (``TORCH_LIBRARY_IMPL``) take
precedence for their devices, and these serve the rest.

* ``CompositeExplicitAutograd`` (any device without a kernel of its own): the pruning and
  quantization ops (:mod:`edgegen.ops._fallback_quant`); the KD losses computed
  in row chunks, the gradient written once into the output and no other [N, V] intermediate; the
  attention ops through the O(n^2) reference (out, lse) and an analytic backward.
* ``AutogradCUDA`` for the attention ops: the native CUDA kernels (when built) for what they take
  (bfloat16/float16, head_dim 32, 64, 80, 96 or 128, no block layout), FlexAttention (compiled, block mask
  cached per pattern) for what it takes, the reference for the rest; so a GPU runs the O(n^2)
  twin only where nothing else applies. Registered at the autograd level because FlexAttention
  brings its own backward.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from edgegen.ops import _reference as ref
from edgegen.ops._fallback_quant import FALLBACKS

# Rows per chunk: about this many logits at a time, at least 1 row.
_CHUNK_LOGITS = 1 << 24


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _normalised_weights(weights, k: int) -> list[float]:
    if not weights:
        return [1.0 / k] * k
    if len(weights) != k:
        raise ValueError(f"teacher_weights: expected {k} weights (one per teacher) or none, got {len(weights)}")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"teacher_weights: expected finite values >= 0, got {list(weights)}")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"teacher_weights: expected a positive sum, got {total}")
    return [w / total for w in weights]


def _check_target(target: Tensor, lead, vocab: int, ignore_index: int) -> int:
    """The number of non-ignored rows; IndexError naming the first bad entry."""
    if target.dtype != torch.long:
        raise TypeError(f"target: expected an int64 (torch.long) tensor of class indices, got {target.dtype}")
    if tuple(target.shape) != tuple(lead):
        raise ValueError(f"target: expected shape {list(lead)} (the logits' shape without the vocabulary "
                         f"dimension), got {list(target.shape)}")
    flat = target.reshape(-1)
    kept = flat != ignore_index
    bad = kept & ((flat < 0) | (flat >= vocab))
    counts = torch.stack([kept.sum(), bad.sum()]).tolist()
    if counts[1]:
        i = int(bad.nonzero()[0, 0])
        raise IndexError(f"target: entry {i} is {int(flat[i])}, expected a class index in [0, {vocab}) or "
                         f"ignore_index ({ignore_index})")
    return counts[0]


def kd_rows(s: Tensor, teachers: list[Tensor], weights: list[float], y: Tensor, temperature: float,
            alpha: float, ignore_index: int, grad_out: Tensor | None, grad_scale: float,
            row_scale: Tensor | None) -> Tensor:
    """Row losses [rows] (float32, float64 for float64) of 2-D logits; with ``grad_out`` (may be
    ``s`` itself) the gradient of each row's loss times grad_scale (and row_scale) is written
    into it. Works through the rows in chunks."""
    rows, vocab = s.shape
    cdt = _compute_dtype(s.dtype)
    loss = torch.zeros(rows, dtype=cdt, device=s.device)
    use_kl, use_ce = alpha > 0, alpha < 1
    T = float(temperature)
    chunk = max(1, _CHUNK_LOGITS // max(vocab, 1))
    for r0 in range(0, rows, chunk):
        r1 = min(rows, r0 + chunk)
        sc = s[r0:r1].to(cdt)
        yc = y[r0:r1]
        keep = yc != ignore_index
        g = torch.zeros_like(sc) if grad_out is not None else None
        row = torch.zeros(r1 - r0, dtype=cdt, device=s.device)
        if use_kl:
            log_q = F.log_softmax(sc / T, dim=-1)
            log_p = ref._teacher_log_probs([t[r0:r1] for t in teachers], weights, T, cdt)
            p = log_p.exp()
            # 0 log 0 = 0: entries the teacher gives probability 0 contribute nothing.
            row = row + alpha * T * T * torch.where(p > 0, p * (log_p - log_q), 0.0).sum(-1)
            if g is not None:
                g += alpha * T * (log_q.exp() - p)
            del log_q, log_p, p
        if use_ce:
            log_q1 = F.log_softmax(sc, dim=-1)
            safe_y = torch.where(keep, yc, 0)
            row = row - (1 - alpha) * log_q1.gather(1, safe_y[:, None])[:, 0]
            if g is not None:
                q1 = log_q1.exp_()
                q1.scatter_add_(1, safe_y[:, None], torch.full((r1 - r0, 1), -1.0, dtype=cdt, device=s.device))
                g += (1 - alpha) * q1
            del log_q1
        loss[r0:r1] = torch.where(keep, row, 0.0)
        if grad_out is not None:
            scale = keep.to(cdt) * grad_scale
            if row_scale is not None:
                scale = scale * row_scale[r0:r1].to(cdt)
            grad_out[r0:r1] = (g * scale[:, None]).to(grad_out.dtype)
    return loss


def _reduce(row_loss: Tensor, reduction: str, valid: int, lead) -> Tensor:
    out_dtype = _compute_dtype(row_loss.dtype)
    if reduction == "none":
        return row_loss.to(out_dtype).reshape(lead)
    total = row_loss.sum()
    if reduction == "mean":
        total = total * (1.0 / valid if valid > 0 else 0.0)
    return total.to(out_dtype)


def kd_loss_fallback(student_logits, teacher_logits, teacher_weights, target, temperature, alpha, ignore_index,
                     reduction, with_grad):
    from edgegen.ops.distill import _check_meta, check_kd_settings

    check_kd_settings(temperature, alpha, ignore_index, reduction)
    if not 1 <= len(teacher_logits) <= 8:
        raise ValueError(f"teacher_logits: expected 1 to 8 tensors, got {len(teacher_logits)}")
    named = [("student_logits", student_logits)] + [(f"teacher_logits[{k}]", t) for k, t in enumerate(teacher_logits)]
    _check_meta(named)
    _check_meta([("student_logits", student_logits), ("target", target)], floating=False)
    if not student_logits.is_floating_point():
        raise TypeError(f"student_logits: expected a floating-point tensor, got {student_logits.dtype}")
    if student_logits.dim() < 1 or student_logits.shape[-1] < 1:
        raise ValueError(f"student_logits: expected shape [..., V] with V >= 1, got {list(student_logits.shape)}")
    for k, t in enumerate(teacher_logits):
        if t.shape != student_logits.shape:
            raise ValueError(f"teacher_logits[{k}]: expected the student's shape {list(student_logits.shape)}, "
                             f"got {list(t.shape)}")
    vocab = student_logits.shape[-1]
    lead = student_logits.shape[:-1]
    valid = _check_target(target, lead, vocab, ignore_index)
    weights = _normalised_weights(list(teacher_weights), len(teacher_logits))
    s = student_logits.reshape(-1, vocab)
    teachers = [t.reshape(-1, vocab) for t in teacher_logits]
    grad = torch.empty_like(s, memory_format=torch.contiguous_format) if with_grad else None
    gscale = 1.0 / valid if reduction == "mean" and valid > 0 else (0.0 if reduction == "mean" else 1.0)
    rows = kd_rows(s, teachers, weights, target.reshape(-1), temperature, alpha, ignore_index, grad, gscale, None)
    grad = grad.reshape(student_logits.shape) if with_grad else student_logits.new_empty((0,))
    return _reduce(rows, reduction, valid, lead), grad


def fused_linear_kd_loss_fallback(student_hidden, student_weight, student_bias, teacher_hidden, teacher_weight,
                                  teacher_bias, target, temperature, alpha, ignore_index, reduction, chunk_size,
                                  grad_row_scale, with_grad):
    from edgegen.ops.distill import _check_meta, check_kd_settings

    check_kd_settings(temperature, alpha, ignore_index, reduction)
    _check_meta([("student_hidden", student_hidden), ("student_weight", student_weight),
                 ("student_bias", student_bias), ("teacher_hidden", teacher_hidden),
                 ("teacher_weight", teacher_weight), ("teacher_bias", teacher_bias)])
    _check_meta([("student_hidden", student_hidden), ("target", target)], floating=False)
    if not student_hidden.is_floating_point() or student_hidden.dim() < 1 or teacher_hidden.dim() < 1:
        raise ValueError(f"student_hidden, teacher_hidden: expected floating-point tensors [..., H], got "
                         f"{student_hidden.dtype} {list(student_hidden.shape)} and {list(teacher_hidden.shape)}")
    H, Ht = student_hidden.shape[-1], teacher_hidden.shape[-1]
    if student_weight.dim() != 2 or student_weight.shape[1] != H or student_weight.shape[0] < 1:
        raise ValueError(f"student_weight: expected shape [V, {H}] (V >= 1), got {list(student_weight.shape)}")
    vocab = student_weight.shape[0]
    if tuple(teacher_weight.shape) != (vocab, Ht):
        raise ValueError(f"teacher_weight: expected shape [{vocab}, {Ht}], got {list(teacher_weight.shape)}")
    for name, b in (("student_bias", student_bias), ("teacher_bias", teacher_bias)):
        if b is not None and (b.dim() != 1 or b.shape[0] != vocab):
            raise ValueError(f"{name}: expected shape [{vocab}], got {list(b.shape)}")
    lead = student_hidden.shape[:-1]
    if teacher_hidden.shape[:-1] != lead:
        raise ValueError(f"teacher_hidden: expected leading shape {list(lead)} (student_hidden's), got "
                         f"{list(teacher_hidden.shape)}")
    if chunk_size < 0:
        raise ValueError(f"chunk_size: expected >= 0 (0 picks one), got {chunk_size}")
    valid = _check_target(target, lead, vocab, ignore_index)
    rows = math.prod(lead)
    hs, ht, y = student_hidden.reshape(rows, H), teacher_hidden.reshape(rows, Ht), target.reshape(-1)
    if grad_row_scale is not None and grad_row_scale.numel() != rows:
        raise ValueError(f"grad_row_scale: expected a floating-point tensor of {rows} elements, got "
                         f"{list(grad_row_scale.shape)}")
    chunk = chunk_size if chunk_size > 0 else max(32, _CHUNK_LOGITS // vocab)
    chunk = max(1, min(chunk, rows))
    gscale = 1.0 / valid if reduction == "mean" and valid > 0 else (0.0 if reduction == "mean" else 1.0)
    acc = student_hidden.dtype if student_hidden.dtype in (torch.float32, torch.float64) else torch.float32
    row_loss = torch.zeros(rows, dtype=_compute_dtype(student_hidden.dtype), device=student_hidden.device)
    d_h = torch.empty_like(hs) if with_grad else None
    d_w = torch.zeros(student_weight.shape, dtype=acc, device=student_weight.device) if with_grad else None
    d_b = (torch.zeros(vocab, dtype=acc, device=student_hidden.device)
           if with_grad and student_bias is not None else None)
    for r0 in range(0, rows, chunk):
        r1 = min(rows, r0 + chunk)
        s = F.linear(hs[r0:r1], student_weight, student_bias)
        t = F.linear(ht[r0:r1], teacher_weight, teacher_bias)
        rs = None if grad_row_scale is None else grad_row_scale.reshape(-1)[r0:r1]
        row_loss[r0:r1] = kd_rows(s, [t], [1.0], y[r0:r1], temperature, alpha, ignore_index,
                                  s if with_grad else None, gscale, rs)
        if with_grad:
            d_h[r0:r1] = s @ student_weight
            d_w += (s.t() @ hs[r0:r1]).to(acc)
            if d_b is not None:
                d_b += s.sum(0, dtype=acc)
    loss = _reduce(row_loss, reduction, valid, lead)
    empty = student_hidden.new_empty((0,))
    if not with_grad:
        return loss, empty, empty, empty
    return (loss, d_h.reshape(student_hidden.shape), d_w.to(student_hidden.dtype),
            d_b.to(student_hidden.dtype) if d_b is not None else empty)


# ----------------------------------------------------------------------------------- attention


def check_attention_args(q, k, v, window, num_global, q_offset, block_layout, block_size):
    """The attention checks that need no tensor data (fake kernels run them too)."""
    from edgegen.ops.attention import _check_meta

    _check_meta(q, k, v)
    if q.shape[0] != k.shape[0] or q.shape[1] != k.shape[1] or q.shape[3] != k.shape[3]:
        raise ValueError(f"k: expected the batch, heads and head_dim of q {tuple(q.shape)}, got {tuple(k.shape)}")
    if window < 1:
        raise ValueError(f"window: expected an integer >= 1, got {window}")
    if not 0 <= num_global <= k.shape[2]:
        raise ValueError(f"num_global: expected a value in [0, {k.shape[2]}] (the number of keys), got {num_global}")
    limit = (1 << 60) - q.shape[2]  # the C++ kernels' bound: positions below 2^60
    if not 0 <= q_offset <= limit:
        raise ValueError(f"q_offset: expected a value in [0, {limit}] (2^60 - the number of queries), got {q_offset}")
    if block_layout is None and block_size != 0:
        raise ValueError(f"block_size: only meaningful with a block_layout (pass 0), got {block_size}")
    if block_layout is not None:
        if block_size < 1:
            raise ValueError(f"block_size: expected >= 1 with a block_layout, got {block_size}")
        if block_layout.dtype != torch.long:
            raise TypeError(f"block_layout: expected an int64 tensor, got {block_layout.dtype}")
        if block_layout.dim() != 2 or block_layout.shape[1] != 2:
            raise ValueError(f"block_layout: expected shape [pairs, 2] of (query block, key block), got "
                             f"{list(block_layout.shape)}")


def _check_attention(q, k, v, window, num_global, q_offset, block_layout, block_size):
    check_attention_args(q, k, v, window, num_global, q_offset, block_layout, block_size)
    if block_layout is not None:
        nqb = -(-(q_offset + q.shape[2]) // block_size)
        nkb = -(-k.shape[2] // block_size)
        if block_layout.numel() and not bool(((block_layout[:, 0] >= 0) & (block_layout[:, 0] < nqb)
                                              & (block_layout[:, 1] >= 0) & (block_layout[:, 1] < nkb)).all()):
            raise IndexError(f"block_layout: expected query blocks in [0, {nqb}) and key blocks in [0, {nkb})")


def check_backward_inputs(grad_out, out, lse, q) -> None:
    """The backward's extra inputs: grad_out and out shaped and typed like q, lse [B, H, n]
    (float32, float64 for float64 q), as the C++ kernels check them."""
    for name, t in (("grad_out", grad_out), ("out", out)):
        if t.dim() != 4:
            raise ValueError(f"{name}: expected a 4-D tensor [batch, heads, length, head_dim], got {t.dim()}-D of "
                             f"shape {list(t.shape)}")
        if t.device != q.device:
            raise RuntimeError(f"{name}: expected a tensor on {q.device} (that of q), got one on {t.device}")
    if lse.device != q.device:
        raise RuntimeError(f"lse: expected a tensor on {q.device} (that of q), got one on {lse.device}")
    if grad_out.shape != q.shape or out.shape != q.shape:
        raise ValueError(f"grad_out, out: expected the shape of q {list(q.shape)}, got {list(grad_out.shape)} and "
                         f"{list(out.shape)}")
    if grad_out.dtype != q.dtype or out.dtype != q.dtype:
        raise TypeError(f"grad_out, out: expected the dtype of q ({q.dtype}), got {grad_out.dtype} and {out.dtype}")
    want = _compute_dtype(q.dtype)
    if lse.dtype != want or tuple(lse.shape) != tuple(q.shape[:3]):
        raise ValueError(f"lse: expected the {want} log-sum-exp of shape {list(q.shape[:3])} from the forward op, "
                         f"got {lse.dtype} {list(lse.shape)}")


def swa_fallback(q, k, v, window, num_global, causal, scale, q_offset, block_layout, block_size):
    _check_attention(q, k, v, window, num_global, q_offset, block_layout, block_size)
    return ref.sliding_window_attention_reference(q, k, v, window, num_global, causal, scale, q_offset,
                                                  block_layout, block_size)


def swa_backward_fallback(grad_out, q, k, v, out, lse, window, num_global, causal, scale, q_offset, block_layout,
                          block_size):
    """dq, dk, dv of the reference: P recomputed from lse, dS = P (dP - rowsum(dO * O))."""
    _check_attention(q, k, v, window, num_global, q_offset, block_layout, block_size)
    check_backward_inputs(grad_out, out, lse, q)
    cdt = _compute_dtype(q.dtype)
    nq, nk, d = q.shape[-2], k.shape[-2], q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    mask = ref.pattern_mask(nq, nk, window, num_global, causal, q_offset, block_layout, block_size, q.device)
    qc, kc, vc, do, oc = (t.to(cdt) for t in (q, k, v, grad_out, out))
    s = (qc @ kc.transpose(-1, -2)) * scale
    lse_c = lse.to(cdt)
    finite = torch.isfinite(lse_c)[..., None]
    p = torch.where(mask & finite, torch.exp(s - torch.where(finite, lse_c[..., None], 0.0)), 0.0)
    dv = p.transpose(-1, -2) @ do
    dp = do @ vc.transpose(-1, -2)
    ds = p * (dp - (do * oc).sum(-1, keepdim=True))
    dq = (ds @ kc) * scale
    dk = (ds.transpose(-1, -2) @ qc) * scale
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


# FlexAttention on CUDA -----------------------------------------------------------------------

_FLEX_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@functools.lru_cache(maxsize=1)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _mask_mod(window, num_global, causal, q_offset, blocks, block_size):
    if blocks is not None:
        def mod(b, h, qi, kj):
            p = qi + q_offset
            m = blocks[p // block_size, kj // block_size]
            return m & (kj <= p) if causal else m
        return mod
    if causal:
        def mod(b, h, qi, kj):
            p = qi + q_offset
            return (kj <= p) & ((p - kj < window) | (kj < num_global))
        return mod

    def mod(b, h, qi, kj):
        p = qi + q_offset
        return ((p - kj).abs() < window) | (kj < num_global) | (p < num_global)
    return mod


@functools.lru_cache(maxsize=64)
def _block_mask(nq, nk, window, num_global, causal, q_offset, layout_key, block_size, device):
    from torch.nn.attention.flex_attention import create_block_mask

    blocks = None
    if layout_key is not None:
        nqb = -(-(q_offset + nq) // block_size)
        nkb = -(-nk // block_size)
        blocks = torch.zeros(nqb, nkb, dtype=torch.bool, device=device)
        pairs = torch.tensor(layout_key, dtype=torch.long, device=device).reshape(-1, 2)
        if pairs.numel():
            blocks[pairs[:, 0], pairs[:, 1]] = True
    mod = _mask_mod(window, num_global, causal, q_offset, blocks, block_size)
    return create_block_mask(mod, B=None, H=None, Q_LEN=nq, KV_LEN=nk, device=device)


def _flex_applies(q, k) -> bool:
    d = q.shape[-1]
    return (q.dtype in _FLEX_DTYPES and d >= 16 and d & (d - 1) == 0 and d <= 256
            and q.shape[-2] >= 1 and k.shape[-2] >= 1)


def _flex_or_reference(q, k, v, window, num_global, causal, scale, q_offset, block_layout, block_size):
    """FlexAttention with a cached block mask where it applies, else the reference; both
    differentiable by their own autograd (lse included)."""
    if not _flex_applies(q, k):
        return ref.sliding_window_attention_reference(q, k, v, window, num_global, causal, scale, q_offset,
                                                      block_layout, block_size)
    layout_key = None if block_layout is None else tuple(block_layout.reshape(-1).tolist())
    bm = _block_mask(q.shape[-2], k.shape[-2], window, num_global, bool(causal), q_offset, layout_key,
                     block_size, q.device)
    out, lse = _compiled_flex()(q, k, v, block_mask=bm, scale=scale, return_lse=True)
    return out, lse.float()


# The head sizes the native CUDA attention kernels are built for (attention_cuda_supports in
# csrc/kernels/cuda/attention.cu; tests/cuda checks that the two agree).
NATIVE_HEAD_DIMS = (32, 64, 80, 96, 128)


def _native_applies(q, block_layout) -> bool:
    """The native CUDA kernels take bfloat16/float16, the head sizes of ``NATIVE_HEAD_DIMS``, no block layout."""
    return (_has_kernel("sliding_window_attention", "CUDA") and q.dtype in (torch.bfloat16, torch.float16)
            and q.shape[-1] in NATIVE_HEAD_DIMS and block_layout is None)


class _NativeAttention(torch.autograd.Function):
    """The native CUDA forward and backward ops under autograd (called below the autograd key)."""

    @staticmethod
    def forward(ctx, q, k, v, window, num_global, causal, scale, q_offset):
        with torch._C._AutoDispatchBelowAutograd():
            out, lse = torch.ops.edgegen.sliding_window_attention(q, k, v, window, num_global, causal, scale,
                                                                  q_offset, None, 0)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.args = (window, num_global, causal, scale, q_offset)
        ctx.set_materialize_grads(False)
        return out, lse

    @staticmethod
    def backward(ctx, grad_out, grad_lse):
        from edgegen.ops.attention import attention_backward

        q, k, v, out, lse = ctx.saved_tensors
        window, num_global, causal, scale, q_offset = ctx.args
        with torch._C._AutoDispatchBelowAutograd():
            dq, dk, dv = attention_backward(grad_out, grad_lse, q, k, v, out, lse, window, num_global, causal,
                                            scale, q_offset, None, 0)
        return dq, dk, dv, None, None, None, None, None


def swa_autograd_cuda(q, k, v, window, num_global, causal, scale, q_offset, block_layout, block_size):
    """The attention op on CUDA, at the autograd key: the native kernels where they apply, else
    FlexAttention (compiled, block mask cached per pattern), else the reference."""
    _check_attention(q, k, v, window, num_global, q_offset, block_layout, block_size)
    if _native_applies(q, block_layout):
        return _NativeAttention.apply(q, k, v, window, num_global, causal, scale, q_offset)
    return _flex_or_reference(q, k, v, window, num_global, causal, scale, q_offset, block_layout, block_size)


def swa_backward_autograd_cuda(grad_out, q, k, v, out, lse, window, num_global, causal, scale, q_offset,
                               block_layout, block_size):
    """The backward op on CUDA: the native kernel where it applies, else the forward recomputed
    through FlexAttention (or the reference) and differentiated."""
    _check_attention(q, k, v, window, num_global, q_offset, block_layout, block_size)
    check_backward_inputs(grad_out, out, lse, q)
    if _native_applies(q, block_layout):
        with torch._C._AutoDispatchBelowAutograd():
            return torch.ops.edgegen.sliding_window_attention_backward(
                grad_out, q, k, v, out, lse, window, num_global, causal, scale, q_offset, None, 0)
    with torch.enable_grad():
        qq, kk, vv = (t.detach().requires_grad_(True) for t in (q, k, v))
        o, _ = _flex_or_reference(qq, kk, vv, window, num_global, causal, scale, q_offset, block_layout, block_size)
        return torch.autograd.grad(o, (qq, kk, vv), grad_out)


# --------------------------------------------------------------------------------- pruning lists
def _nonempty(weights) -> None:
    # With an empty list no tensor reaches the dispatcher, which then lands here.
    if len(weights) == 0:
        raise ValueError("weights: expected at least one tensor")


def kth_smallest_score_fallback(weights, grads, k):
    _nonempty(weights)
    return ref.kth_smallest_score_reference(weights, grads, k)


def magnitude_mask_fallback(weights, grads, num_prune):
    _nonempty(weights)
    return ref.magnitude_mask_reference(weights, grads, num_prune)


def _no_shared_memory(named) -> None:
    """Tensors written in place must not share memory: the same tensor listed twice or views whose
    byte ranges intersect (interleaved strided views of one storage count as sharing)."""
    spans = []
    for name, t in named:
        if t.numel() == 0 or t.device.type == "meta":  # meta tensors have no memory to share
            continue
        start = t.storage_offset() * t.element_size()
        last = sum((n - 1) * st for n, st in zip(t.shape, t.stride()))
        spans.append((t.untyped_storage().data_ptr(), start, start + (last + 1) * t.element_size(), name))
    spans.sort()
    for (p0, _, e0, n0), (p1, s1, _, n1) in zip(spans, spans[1:]):
        if p0 == p1 and s1 < e0:
            raise ValueError(f"{n0} and {n1}: share memory (the same tensor twice, or overlapping views); each is "
                             "written in place, so list every tensor once")


def magnitude_prune_fallback(weights, grads, num_prune, masks):
    _nonempty(weights)
    if len(masks) != len(weights):
        raise ValueError(f"masks: expected one mask per weight ({len(weights)}), got {len(masks)}")
    for i, (w, m) in enumerate(zip(weights, masks)):  # everything checked before anything is written
        if m.device != w.device:
            raise RuntimeError(f"masks[{i}]: expected a tensor on {w.device} (that of weights[{i}]), got {m.device}")
        if m.dtype != torch.bool:
            raise TypeError(f"masks[{i}]: expected a bool tensor, got {m.dtype}")
        if m.shape != w.shape:
            raise ValueError(f"masks[{i}]: expected shape {list(w.shape)}, got {list(m.shape)}")
        for name, t in ((f"weights[{i}]", w), (f"masks[{i}]", m)):
            if torch._debug_has_internal_overlap(t) == 1:
                raise ValueError(f"{name}: has overlapping elements (an expanded view); it is written in place")
    _no_shared_memory([(f"{kind}[{i}]", t) for kind, ts in (("weights", weights), ("masks", masks))
                       for i, t in enumerate(ts)])
    keeps = ref.magnitude_mask_reference(weights, grads, num_prune)
    for w, m, keep in zip(weights, masks, keeps):
        m.copy_(keep)
        w.masked_fill_(~keep, 0)


# --------------------------------------------------------------------------------- registration

_LIBS: list = []


def _has_kernel(op: str, key: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"edgegen::{op}", key)


def register() -> None:
    """Register the fallbacks once (importing edgegen.ops does this)."""
    if _LIBS:
        return
    lib = torch.library.Library("edgegen", "IMPL")
    _LIBS.append(lib)
    lib.impl("kth_smallest_score", kth_smallest_score_fallback, "CompositeExplicitAutograd")
    lib.impl("magnitude_mask", magnitude_mask_fallback, "CompositeExplicitAutograd")
    lib.impl("magnitude_prune_", magnitude_prune_fallback, "CompositeExplicitAutograd")
    lib.impl("kd_loss", kd_loss_fallback, "CompositeExplicitAutograd")
    lib.impl("fused_linear_kd_loss", fused_linear_kd_loss_fallback, "CompositeExplicitAutograd")
    lib.impl("sliding_window_attention", swa_fallback, "CompositeExplicitAutograd")
    lib.impl("sliding_window_attention_backward", swa_backward_fallback, "CompositeExplicitAutograd")
    for name, fn in FALLBACKS.items():
        lib.impl(name, fn, "CompositeExplicitAutograd")
    lib.impl("sliding_window_attention", swa_autograd_cuda, "AutogradCUDA")
    lib.impl("sliding_window_attention_backward", swa_backward_autograd_cuda, "AutogradCUDA")
