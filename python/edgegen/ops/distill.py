"""Fake (meta) kernels and autograd for torch.ops.edgegen.kd_loss / fused_linear_kd_loss.

Two modes, chosen by the ops' ``with_grad`` argument:

* ``with_grad=True`` (what edgegen.distill uses by default): the gradient of the reduced loss is
  computed in the same sweep as the loss, with an upstream gradient of 1, and returned as an extra
  output; backward only scales it by the real upstream gradient, in place, and not at all when
  that is exactly 1 (the usual ``loss.backward()``). The saved gradient therefore serves one
  backward pass, and is handed to autograd as the ``.grad`` itself (no copy): a second backward
  through the same graph (retain_graph=True) raises a clear error rather than return a wrong
  answer.
* ``with_grad=False``: the forward computes the loss only and keeps its inputs; every backward
  recomputes the gradient. Repeated backward (gradcheck, jacobians) works; it costs a second
  sweep and keeps the inputs alive until backward.

First-order gradients only, in both modes: the gradient comes from a fused kernel and is not
itself differentiable, so a backward run with ``create_graph=True`` (double backward, gradient
penalties, Hessian-vector products) raises a clear error instead of returning a gradient whose own
derivative would silently leave out the KD loss.
"""

from __future__ import annotations

import math

import torch

from edgegen.ops._args import INT64_MAX, INT64_MIN, is_real
from edgegen.ops._fake import register_fake
from torch import Tensor

_REDUCTIONS = ("mean", "sum", "none")

_SECOND_BACKWARD = (
    "{op}: backward ran a second time through the same graph (retain_graph=True). The gradient "
    "was computed together with the loss and has been handed out already. Recompute the loss for "
    "each backward pass, or pass grad_in_forward=False to edgegen.distill (with_grad=False to the "
    "op), which recomputes the gradient in every backward."
)


_DOUBLE_BACKWARD = (
    "{op}: double backward is not supported: backward ran with create_graph=True, but the KD loss's "
    "gradient comes from a fused kernel and is not itself differentiable, so a higher-order gradient "
    "would silently leave out the KD term. Differentiate the KD loss only once (without "
    "create_graph), or use edgegen.ops._reference.kd_loss_reference (plain PyTorch) for "
    "higher-order gradients."
)


def _refuse_double_backward(op: str) -> None:
    """Raise when backward runs with create_graph=True (autograd runs a backward in grad mode only
    then). Tracers that compile a backward (AOTAutograd) trace it without create_graph."""
    if torch.is_grad_enabled():
        raise RuntimeError(_DOUBLE_BACKWARD.format(op=op))


def _plain_eager(*tensors: Tensor) -> bool:
    """True outside every tracer: no dynamo, no fake/proxy/functional mode, no tensor subclass.
    Only then may backward look at data (upstream == 1) or mutate a saved tensor."""
    if torch.compiler.is_compiling():
        return False
    if any(type(t) is not torch.Tensor for t in tensors):
        return False
    keys = torch._C._TorchDispatchModeKey
    if any(torch._C._get_dispatch_mode(k) is not None for k in (keys.FAKE, keys.PROXY, keys.FUNCTIONAL)):
        return False
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    return _get_current_dispatch_mode() is None


def _keep_grads(ctx, grads) -> None:
    """Keep the gradients computed by the forward call for backward.

    Eager: as detached aliases on ctx, which backward takes and drops, so the tensor it returns
    has no other owner and autograd adopts it as ``.grad`` instead of cloning it (a clone would
    double the memory of an [N, V] gradient). Under a tracer: through save_for_backward.
    """
    ctx.eager = _plain_eager(*grads)
    if ctx.eager:
        ctx.kept = tuple(g.detach() for g in grads)
    else:
        ctx.save_for_backward(*grads)


def _scaled_kept_grads(ctx, upstream: Tensor, op: str, per_row: bool):
    """The kept gradients times the upstream gradient: in place and handed over when eager
    (untouched when the upstream gradient is exactly 1), out of place under a tracer."""
    if not ctx.eager:
        return tuple(g * upstream.to(g.dtype) for g in ctx.saved_tensors)
    if ctx.kept is None:
        raise RuntimeError(_SECOND_BACKWARD.format(op=op))
    if not _plain_eager(upstream):  # eager forward, traced backward: leave the kept ones intact
        return tuple(g * upstream.to(g.dtype) for g in ctx.kept)
    grads, ctx.kept = ctx.kept, None
    if not per_row and bool(upstream == 1):
        return grads
    return tuple(g.mul_(upstream) for g in grads)




def _real(value, name: str) -> float:
    """``value`` as a float if it is a real-number scalar: a Python int or float, a NumPy scalar
    (anything registered as numbers.Real) or a one-element real tensor; bools are refused."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{name}: expected a real number (a tensor must hold exactly one real value), "
                            f"got a {value.dtype} tensor of shape {tuple(value.shape)}")
        return float(value)
    if is_real(value):
        return float(value)
    raise TypeError(f"{name}: expected a real number (int, float, NumPy scalar or one-element tensor), "
                    f"got {type(value).__name__} {value!r}")


def check_kd_settings(temperature, alpha, ignore_index, reduction) -> None:
    """The KD losses' scalar settings, as every kernel and the public functions check them.
    ``temperature`` and ``alpha`` may be any real-number scalar (Python, NumPy, one-element
    tensor); callers pass ``float()`` of them on to the ops."""
    t = _real(temperature, "temperature")
    if not 0.01 <= t < math.inf:  # comparisons only: torch.compile(dynamic=True) traces t symbolically
        # below 0.01 logits / T overflow float32 and the loss is NaN
        raise ValueError(f"temperature: expected a finite number >= 0.01, got {temperature!r}")
    a = _real(alpha, "alpha")
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"alpha: expected a number in [0, 1], got {alpha!r}")
    if not isinstance(ignore_index, int) or isinstance(ignore_index, bool):
        raise TypeError(f"ignore_index: expected an int, got {ignore_index!r}")
    if not INT64_MIN <= ignore_index <= INT64_MAX:
        raise ValueError(f"ignore_index: expected an int64 value in [-2**63, 2**63 - 1], got {ignore_index}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected one of {_REDUCTIONS}, got {reduction!r}")


def _check_meta(named, floating=True):
    """The metadata checks the C++ kernels make, for the fake kernels (devices, dtypes)."""
    device = named[0][1].device
    dtype = named[0][1].dtype
    for name, t in named:
        if t is None:
            continue
        if t.device != device:
            raise RuntimeError(f"{name}: expected a tensor on {device}, got one on {t.device} "
                               "(all inputs must be on the same device)")
        if floating and t.dtype != dtype:
            raise TypeError(f"{name}: expected dtype {dtype}, got {t.dtype}")


# --------------------------------------------------------------------------------- kd_loss


@register_fake("edgegen::kd_loss")
def _kd_loss_fake(
    student_logits, teacher_logits, teacher_weights, target, temperature, alpha, ignore_index,
    reduction, with_grad,
):
    _check_meta([("student_logits", student_logits)]
                + [(f"teacher_logits[{k}]", t) for k, t in enumerate(teacher_logits)])
    _check_meta([("student_logits", student_logits), ("target", target)], floating=False)
    for k, t in enumerate(teacher_logits):
        if t.shape != student_logits.shape:
            raise ValueError(f"teacher_logits[{k}]: expected the student's shape "
                             f"{tuple(student_logits.shape)}, got {tuple(t.shape)}")
    ldtype = torch.float64 if student_logits.dtype == torch.float64 else torch.float32
    lead = student_logits.shape[:-1]
    loss = student_logits.new_empty(lead if reduction == "none" else (), dtype=ldtype)
    if with_grad:
        grad = student_logits.new_empty(student_logits.shape)
    else:
        grad = student_logits.new_empty((0,))
    return loss, grad


def _kd_loss_setup(ctx, inputs, output):
    student, teachers, weights, target, temperature, alpha, ignore_index, reduction, with_grad = inputs
    # The gradient output is data, not a function of the inputs to differentiate. Without these
    # two calls autograd would build an [N, V] zero "gradient" for it in every backward.
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)
    ctx.n_teachers = len(teachers)
    ctx.weights_empty = len(weights) == 0
    ctx.reduction = reduction
    ctx.with_grad = with_grad
    if with_grad:
        _keep_grads(ctx, (output[1],))
    else:
        ctx.save_for_backward(student, target, *teachers)
        ctx.recompute_args = (list(weights), temperature, alpha, ignore_index, reduction)


def _kd_loss_backward(ctx, grad_loss, _grad_of_grad):
    if grad_loss is None:  # the loss did not reach whatever was differentiated
        return None, [None] * ctx.n_teachers, [] if ctx.weights_empty else None, *[None] * 6
    _refuse_double_backward("edgegen::kd_loss")
    per_row = ctx.reduction == "none"
    upstream = grad_loss.unsqueeze(-1) if per_row else grad_loss
    if ctx.with_grad:
        (d,) = _scaled_kept_grads(ctx, upstream, "edgegen::kd_loss", per_row)
    else:
        student, target, *teachers = ctx.saved_tensors
        weights, temperature, alpha, ignore_index, reduction = ctx.recompute_args
        _, d = torch.ops.edgegen.kd_loss(
            student, teachers, weights, target, temperature, alpha, ignore_index, reduction, True
        )
        d = d * upstream.to(d.dtype)
    # Gradient flows to the student only. torch.library's pytree treats a non-empty float[] as
    # one leaf (one None) and an empty one as an empty list.
    weights_grad = [] if ctx.weights_empty else None
    return d, [None] * ctx.n_teachers, weights_grad, None, None, None, None, None, None


torch.library.register_autograd(
    "edgegen::kd_loss", _kd_loss_backward, setup_context=_kd_loss_setup
)


# ---------------------------------------------------------------------- fused_linear_kd_loss


@register_fake("edgegen::fused_linear_kd_loss")
def _fused_linear_kd_loss_fake(
    student_hidden, student_weight, student_bias, teacher_hidden, teacher_weight, teacher_bias,
    target, temperature, alpha, ignore_index, reduction, chunk_size, grad_row_scale, with_grad,
):
    _check_meta([("student_hidden", student_hidden), ("student_weight", student_weight),
                 ("student_bias", student_bias), ("teacher_hidden", teacher_hidden),
                 ("teacher_weight", teacher_weight), ("teacher_bias", teacher_bias)])
    _check_meta([("student_hidden", student_hidden), ("target", target)], floating=False)
    ldtype = torch.float64 if student_hidden.dtype == torch.float64 else torch.float32
    lead = student_hidden.shape[:-1]
    loss = student_hidden.new_empty(lead if reduction == "none" else (), dtype=ldtype)
    if not with_grad:
        return loss, *(student_hidden.new_empty((0,)) for _ in range(3))
    d_bias = (
        student_bias.new_empty(student_bias.shape)
        if student_bias is not None
        else student_hidden.new_empty((0,))
    )
    return (
        loss,
        student_hidden.new_empty(student_hidden.shape),
        student_weight.new_empty(student_weight.shape),
        d_bias,
    )


def _fused_setup(ctx, inputs, output):
    (hs, ws, bs, ht, wt, bt, target, temperature, alpha, ignore_index, reduction, chunk_size,
     _grad_row_scale, with_grad) = inputs
    ctx.mark_non_differentiable(output[1], output[2], output[3])
    ctx.set_materialize_grads(False)
    # 'none' always recomputes: per-row upstream gradients are unknown until backward.
    ctx.recompute = reduction == "none" or not with_grad
    ctx.has_bias = bs is not None
    if ctx.recompute:
        ctx.save_for_backward(hs, ws, bs, ht, wt, bt, target)
        ctx.recompute_args = (temperature, alpha, ignore_index, reduction, chunk_size)
    else:
        _keep_grads(ctx, (output[1], output[2], output[3]))


def _fused_backward(ctx, grad_loss, *_grads_of_grads):
    op = "edgegen::fused_linear_kd_loss"
    if grad_loss is None:
        return (None,) * 14
    _refuse_double_backward(op)
    if ctx.recompute:
        hs, ws, bs, ht, wt, bt, target = ctx.saved_tensors
        temperature, alpha, ignore_index, reduction, chunk_size = ctx.recompute_args
        row_scale = grad_loss.reshape(-1) if reduction == "none" else grad_loss.expand(target.shape).reshape(-1)
        _, d_h, d_w, d_b = torch.ops.edgegen.fused_linear_kd_loss(
            hs, ws, bs, ht, wt, bt, target, temperature, alpha, ignore_index, reduction,
            chunk_size, row_scale, True,
        )
    else:
        d_h, d_w, d_b = _scaled_kept_grads(ctx, grad_loss, op, per_row=False)
    return (
        d_h, d_w, d_b if ctx.has_bias else None,
        None, None, None, None, None, None, None, None, None, None, None,
    )


torch.library.register_autograd(
    "edgegen::fused_linear_kd_loss", _fused_backward, setup_context=_fused_setup
)
