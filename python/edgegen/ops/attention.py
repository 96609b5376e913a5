"""Fake kernels and autograd for torch.ops.edgegen.sliding_window_attention (and its backward).

The forward op returns (out, lse); autograd saves q, k, v, out and lse, and the backward op
recomputes the probabilities tile by tile (nothing of size [n, n] is ever kept). ``lse`` is
differentiable too (merging attention over key chunks by their log-sum-exp needs it): its gradient
adds ``scale * g_i * sum_j p_ij k_j`` to dq (one more forward, with k as the values) and
``scale * sum_i p_ij g_i q_i`` to dk (the value gradient of one more backward), only when ``lse``
was used.

First-order gradients only. With ``create_graph=True`` the gradients are returned as usual, but
differentiating them again (double backward: Hessian-vector products, gradient penalties through
the attention) raises a RuntimeError: the backward op has an autograd formula that refuses,
rather than one that would silently contribute zeros.
"""

from __future__ import annotations

import torch

from edgegen.ops._fake import register_fake


def _check_meta(q, k, v):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"{name}: expected a 4-D tensor [batch, heads, length, head_dim], got {t.dim()}-D")
        if t.device != q.device:
            raise RuntimeError(f"{name}: expected a tensor on {q.device}, got one on {t.device}")
        if t.dtype != q.dtype:
            raise TypeError(f"k, v: expected the dtype of q ({q.dtype}), got {t.dtype}")
    if k.shape != v.shape:
        raise ValueError(f"v: expected the shape of k {tuple(k.shape)}, got {tuple(v.shape)}")


def _lse_dtype(q):
    return torch.float64 if q.dtype == torch.float64 else torch.float32


@register_fake("edgegen::sliding_window_attention")
def _swa_fake(q, k, v, window, num_global, causal, scale, q_offset, block_layout, block_size):
    from edgegen.ops._fallback import check_attention_args

    check_attention_args(q, k, v, window, num_global, q_offset, block_layout, block_size)  # what the kernels reject
    out = q.new_empty(q.shape)
    lse = q.new_empty(q.shape[:-1], dtype=_lse_dtype(q))
    return out, lse


@register_fake("edgegen::sliding_window_attention_backward")
def _swa_backward_fake(grad_out, q, k, v, out, lse, window, num_global, causal, scale, q_offset, block_layout,
                       block_size):
    from edgegen.ops._fallback import check_attention_args

    check_attention_args(q, k, v, window, num_global, q_offset, block_layout, block_size)
    return (q.new_empty(q.shape),
            k.new_empty(k.shape),
            v.new_empty(v.shape))


def lse_gradients(grad_lse, q, k, lse, window, num_global, causal, scale, q_offset, block_layout, block_size):
    """(dq, dk) of ``sum(grad_lse * lse)``. With p the attention probabilities and s the scale,
    d lse_i / d q_i = s * sum_j p_ij k_j: the attention of q with k as the values; and
    d lse_i / d k_j = s * p_ij q_i: the value gradient of the backward for grad_out = g * q. The
    masks, windows, offsets and empty rows are those of the op itself."""
    s = q.shape[-1] ** -0.5 if scale is None else scale
    acc = torch.promote_types(q.dtype, torch.float32)  # float64 stays float64
    g = grad_lse.unsqueeze(-1).to(acc) * s
    pk, _ = torch.ops.edgegen.sliding_window_attention(q, k, k, window, num_global, causal, scale, q_offset,
                                                       block_layout, block_size)
    dq = (g * pk.to(acc)).to(q.dtype)
    _, _, dk = torch.ops.edgegen.sliding_window_attention_backward(
        (g * q.to(acc)).to(q.dtype), q, k, k, pk, lse, window, num_global, causal, scale, q_offset, block_layout,
        block_size)
    return dq, dk


def attention_backward(grad_out, grad_lse, q, k, v, out, lse, window, num_global, causal, scale, q_offset,
                       block_layout, block_size):
    """(dq, dk, dv) for the gradients of both outputs; either may be None (that output unused)."""
    if grad_out is None:
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), None
    else:
        dq, dk, dv = torch.ops.edgegen.sliding_window_attention_backward(
            grad_out, q, k, v, out, lse, window, num_global, causal, scale, q_offset, block_layout, block_size)
    if grad_lse is not None:
        eq, ek = lse_gradients(grad_lse, q, k, lse, window, num_global, causal, scale, q_offset, block_layout,
                               block_size)
        dq, dk = dq + eq, dk + ek
    return dq, dk, dv


def _swa_setup(ctx, inputs, output):
    q, k, v, window, num_global, causal, scale, q_offset, block_layout, block_size = inputs
    out, lse = output
    ctx.set_materialize_grads(False)  # an unused output's gradient stays None: no work for it
    ctx.save_for_backward(q, k, v, out, lse, block_layout)
    ctx.args = (window, num_global, causal, scale, q_offset, block_size)


def _swa_backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse, block_layout = ctx.saved_tensors
    window, num_global, causal, scale, q_offset, block_size = ctx.args
    dq, dk, dv = attention_backward(grad_out, grad_lse, q, k, v, out, lse, window, num_global, causal, scale,
                                    q_offset, block_layout, block_size)
    return dq, dk, dv, None, None, None, None, None, None, None


torch.library.register_autograd("edgegen::sliding_window_attention", _swa_backward, setup_context=_swa_setup)


_DOUBLE_BACKWARD = (
    "edgegen::sliding_window_attention: double backward is not supported. The gradients were computed "
    "with create_graph=True and are now being differentiated again, but the backward kernel has no "
    "derivative of its own. Differentiate the attention only once, or use "
    "edgegen.ops._reference.sliding_window_attention_reference (plain PyTorch, O(n^2) memory), which "
    "supports higher-order gradients."
)


def _swa_backward_setup(ctx, inputs, output):
    pass  # nothing to keep: the backward of the backward refuses


def _swa_double_backward(ctx, grad_dq, grad_dk, grad_dv):
    raise RuntimeError(_DOUBLE_BACKWARD)


# Without a formula, autograd would treat the backward op as constant in its inputs: the gradient
# computed with create_graph=True would be marked differentiable and a second differentiation would
# silently give zeros for the attention's part.
torch.library.register_autograd("edgegen::sliding_window_attention_backward", _swa_double_backward,
                                setup_context=_swa_backward_setup)
