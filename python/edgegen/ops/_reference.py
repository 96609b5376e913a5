"""Pure-PyTorch twins of the edgegen ops.

They are the test oracle (run them on float64 inputs for an exact reference) and the fallback on
devices the C++ extension has no kernel for. They follow the ops' semantics exactly: ignored rows
count for nothing, a term whose weight is 0 is skipped, and teacher entries of probability 0
contribute 0 to the KL (0 log 0 = 0) even where the student is also -inf.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def _teacher_log_probs(
    teachers: Sequence[Tensor], weights: Sequence[float] | None, temperature: float, dtype
) -> Tensor:
    logps = [F.log_softmax(t.to(dtype) / temperature, dim=-1) for t in teachers]
    if len(logps) == 1:
        return logps[0]
    w = torch.tensor(
        list(weights) if weights else [1.0] * len(logps), dtype=dtype, device=logps[0].device
    )
    w = w / w.sum()
    # log sum_k w_k p_k, computed stably; w_k = 0 gives log 0 = -inf, which logsumexp ignores.
    return torch.logsumexp(torch.stack([lp + torch.log(wk) for lp, wk in zip(logps, w)]), dim=0)


def kd_loss_reference(
    student_logits: Tensor,
    teacher_logits: Tensor | Sequence[Tensor],
    target: Tensor,
    temperature: float = 2.0,
    alpha: float = 0.5,
    ignore_index: int = -100,
    reduction: str = "mean",
    teacher_weights: Sequence[float] | None = None,
) -> Tensor:
    """alpha T^2 KL(p_t || softmax(s/T)) + (1 - alpha) CE(s, target), per non-ignored row.

    Computed in the inputs' dtype promoted to at least float32.
    """
    teachers = [teacher_logits] if isinstance(teacher_logits, Tensor) else list(teacher_logits)
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    s = student_logits.to(dtype)
    vocab = s.shape[-1]
    valid = target != ignore_index
    row = torch.zeros(s.shape[:-1], dtype=dtype, device=s.device)
    if alpha > 0:
        log_ps = F.log_softmax(s / temperature, dim=-1)
        log_pt = _teacher_log_probs(teachers, teacher_weights, temperature, dtype)
        kl = F.kl_div(log_ps, log_pt, log_target=True, reduction="none")
        kl = kl.masked_fill(log_pt == float("-inf"), 0.0).sum(-1)
        row = row + alpha * temperature**2 * kl
    if alpha < 1:
        ce = F.cross_entropy(
            s.reshape(-1, vocab), target.reshape(-1), ignore_index=ignore_index, reduction="none"
        ).reshape(s.shape[:-1])
        row = row + (1 - alpha) * ce
    row = torch.where(valid, row, torch.zeros((), dtype=dtype, device=s.device))
    if reduction == "none":
        return row
    total = row.sum()
    if reduction == "sum":
        return total
    return total / valid.sum().clamp(min=1).to(dtype)


def fused_linear_kd_loss_reference(
    student_hidden: Tensor,
    student_weight: Tensor,
    teacher_hidden: Tensor,
    teacher_weight: Tensor,
    target: Tensor,
    temperature: float = 2.0,
    alpha: float = 0.5,
    ignore_index: int = -100,
    reduction: str = "mean",
    student_bias: Tensor | None = None,
    teacher_bias: Tensor | None = None,
) -> Tensor:
    """Materialises both models' logits, then applies kd_loss_reference."""
    s = F.linear(student_hidden, student_weight, student_bias)
    t = F.linear(teacher_hidden, teacher_weight, teacher_bias)
    return kd_loss_reference(s, t, target, temperature, alpha, ignore_index, reduction)


# --- pruning -------------------------------------------------------------------------------------


def _scores(weight: Tensor, grad: Tensor | None) -> Tensor:
    """|w| or |w * g|, evaluated in float32 (float64 for float64 weights), flattened."""
    dt = torch.float64 if weight.dtype == torch.float64 else torch.float32
    s = weight.detach().to(dt)
    if grad is not None:
        s = s * grad.detach().to(dt)
    return s.abs().flatten()


def _all_scores(weights: Sequence[Tensor], grads: Sequence[Tensor] | None) -> Tensor:
    if grads is not None and len(grads) != len(weights):
        raise ValueError(f"grads: expected one gradient per weight ({len(weights)}), got {len(grads)}")
    parts = [_scores(w, None if grads is None else grads[i]) for i, w in enumerate(weights)]
    s = torch.cat(parts) if parts else torch.empty(0)
    if bool(torch.isnan(s).any()):
        raise ValueError(f"weights: {int(torch.isnan(s).sum())} of the scores are NaN; magnitude pruning "
                         "needs finite (or infinite) weights")
    return s


def magnitude_scores_reference(weight: Tensor, grad: Tensor | None = None) -> Tensor:
    """|w| (or |w * grad|) per entry, in ``weight``'s shape and dtype: what the pruning kernels rank."""
    return _scores(weight, grad).view(weight.shape).to(weight.dtype)


def kth_smallest_score_reference(weights: Sequence[Tensor], grads: Sequence[Tensor] | None, k: int) -> Tensor:
    """The k-th smallest score (1-based) over all ``weights`` together: the global magnitude
    threshold. ValueError unless 1 <= k <= the number of scores."""
    s = _all_scores(weights, grads)
    if not 1 <= k <= s.numel():
        raise ValueError(f"k: expected a value in [1, {s.numel()}] (the number of scores), got {k}")
    return torch.sort(s).values[k - 1].float()


def magnitude_mask_reference(weights: Sequence[Tensor], grads: Sequence[Tensor] | None,
                             num_prune: int) -> list[Tensor]:
    """Stable ascending sort of the concatenated scores; the first ``num_prune`` are pruned, so
    ties fall in list order, then flat-index order."""
    s = _all_scores(weights, grads)
    if not 0 <= num_prune <= s.numel():
        raise ValueError(f"num_prune: expected a value in [0, {s.numel()}] (the number of weights), got {num_prune}")
    keep = torch.ones(s.numel(), dtype=torch.bool, device=s.device)
    keep[torch.sort(s, stable=True).indices[:num_prune]] = False
    out, off = [], 0
    for w in weights:
        out.append(keep[off:off + w.numel()].view(w.shape))
        off += w.numel()
    return out


def nm_mask_reference(weight: Tensor, n: int, m: int, dim: int) -> Tensor:
    """Bool mask keeping the ``n`` largest |w| of every ``m`` consecutive entries along ``dim``
    (ties keep the lower index)."""
    if not 1 <= m <= 64:  # the C++ kernel's limit, on every dtype and device
        raise ValueError(f"m: expected a group size in [1, 64], got {m}")
    if not 0 <= n <= m:
        raise ValueError(f"n: expected 0 <= n <= m ({m}), got {n}")
    moved = weight.detach().movedim(dim, -1)
    if moved.shape[-1] % m:
        raise ValueError(f"weight: size {moved.shape[-1]} of dim {dim} is not a multiple of m ({m})")
    groups = _scores(moved.contiguous(), None).view(-1, m)
    # Stable descending order: equal scores keep their index order, so ties keep the lower index.
    order = torch.sort(groups, dim=1, descending=True, stable=True).indices
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, order[:, :n], True)
    return keep.view(moved.shape).movedim(-1, dim).contiguous()


def channel_norms_reference(weight: Tensor, dim: int, p: int, grad: Tensor | None = None) -> Tensor:
    """L1 (``p=1``) or L2 (``p=2``) norm of every slice along ``dim`` (of |w * grad| when
    ``grad`` is given), in float64."""
    if p not in (1, 2):
        raise ValueError(f"p: expected 1 (L1) or 2 (L2), got {p}")
    x = weight.detach().double()
    if grad is not None:
        x = x * grad.detach().double()
    x = x.movedim(dim, 0).reshape(weight.shape[dim], -1)
    return x.norm(p=p, dim=1).float()


# --- quantization --------------------------------------------------------------------------------


def _qshape(x: Tensor, axis: int | None) -> list[int]:
    shape = [1] * x.dim()
    if axis is not None:
        shape[axis] = x.shape[axis]
    return shape


def _qparams(x: Tensor, scale: Tensor, zero_point: Tensor, axis: int | None):
    shape = _qshape(x, axis)
    s = scale.detach().to(torch.float32).reshape(shape)
    return s, (1.0 / s), zero_point.detach().to(torch.int64).reshape(shape)


def _rounded(v: Tensor) -> Tensor:
    """round-half-even to int64, saturated far outside every integer range (so +-inf clamp to
    the range's ends like the C++ kernels' values do); NaN is the callers' to handle."""
    return torch.round(v).clamp(-(2.0 ** 62), 2.0 ** 62).nan_to_num(0.0).to(torch.int64)


def quantize_affine_reference(x: Tensor, scale: Tensor, zero_point: Tensor, axis: int | None, quant_min: int,
                              quant_max: int, dtype: torch.dtype) -> Tensor:
    """clamp(round_half_even(x * (1.0f / scale)) + zero_point, quant_min, quant_max), in float32."""
    _, inv, zp = _qparams(x, scale, zero_point, axis)
    q = _rounded(x.detach().to(torch.float32) * inv) + zp
    return q.clamp(quant_min, quant_max).to(dtype)


def dequantize_affine_reference(q: Tensor, scale: Tensor, zero_point: Tensor, axis: int | None,
                                out_dtype: torch.dtype = torch.float32) -> Tensor:
    s, _, zp = _qparams(q, scale, zero_point, axis)
    return ((q.to(torch.int64) - zp).to(torch.float32) * s).to(out_dtype)


def fake_quantize_affine_reference(x: Tensor, scale: Tensor, zero_point: Tensor, axis: int | None, quant_min: int,
                                   quant_max: int) -> tuple[Tensor, Tensor]:
    s, inv, zp = _qparams(x, scale, zero_point, axis)
    xf = x.detach().to(torch.float32)
    nan = torch.isnan(xf)
    q = _rounded(xf * inv) + zp
    mask = (q >= quant_min) & (q <= quant_max) & ~nan
    out = (q.clamp(quant_min, quant_max) - zp).to(torch.float32) * s
    return torch.where(nan, xf, out).to(x.dtype), mask  # NaN stays NaN (and passes no gradient)


def fake_quantize_learnable_backward_reference(grad: Tensor, x: Tensor, scale: Tensor, zero_point: Tensor,
                                               axis: int | None, quant_min: int, quant_max: int,
                                               grad_factor: float) -> tuple[Tensor, Tensor, Tensor]:
    """LSQ gradients as torch._fake_quantize_learnable_per_*_affine defines them (see the C++ header)."""
    s, inv, zp = _qparams(x, scale, zero_point, axis)
    xf = x.detach().to(torch.float32)
    g = grad.detach().to(torch.float64)
    qu = _rounded(xf * inv) + zp
    edge = (qu < quant_min) | (qu > quant_max)
    q = qu.clamp(quant_min, quant_max)
    xhat = (q - zp).to(torch.float32) * s
    ds = torch.where(edge, (q - zp).double(), ((xhat - xf) * inv).double()) * g
    dz = torch.where(edge, -s.double() * g, torch.zeros((), dtype=torch.float64))  # 0 inside, whatever g is
    dims = [d for d in range(x.dim()) if d != axis % x.dim()] if axis is not None else list(range(x.dim()))
    red = lambda t: (t.sum(dim=dims) if dims else t).reshape(-1) * grad_factor  # noqa: E731
    dx = torch.where(edge, torch.zeros((), dtype=grad.dtype), grad.detach()).to(x.dtype)
    return dx, red(ds).float(), red(dz).float()


def int_mm_padded(a: Tensor, w: Tensor) -> Tensor:
    """int32 a @ w^T of int8 a [M, K] and w [N, K] on the GPU's integer tensor cores
    (torch._int_mm), zero-padded to its shape rules (M > 16, K and N multiples of 8): exact."""
    m, k = a.shape
    n = w.shape[0]
    mp, kp, np_ = max(m, 17), -(-k // 8) * 8, -(-n // 8) * 8
    if (mp, kp) != (m, k):
        a = torch.nn.functional.pad(a, (0, kp - k, 0, mp - m))
    if (np_, kp) != (n, k):
        w = torch.nn.functional.pad(w, (0, kp - k, 0, np_ - n))
    return torch._int_mm(a.contiguous(), w.contiguous().t())[:m, :n]


def int8_gemm_reference(a: Tensor, a_zero_point: int, weight: Tensor, seven_bit: bool = False) -> Tensor:
    """(a - a_zero_point) @ weight^T, exact, int32. On CUDA through torch._int_mm: one product
    when a and the zero point are 7-bit (a - zp fits int8), else d = 2 h + l with h = d >> 1 and
    l = d & 1, two products."""
    if a.is_cuda and weight.is_cuda and a.shape[-1] > 0:
        return int8_gemm_int_mm(a, a_zero_point, weight, seven_bit)
    return ((a.to(torch.int64) - a_zero_point) @ weight.to(torch.int64).t()).to(torch.int32)


def int8_gemm_int_mm(a: Tensor, a_zero_point: int, weight: Tensor, seven_bit: bool = False) -> Tensor:
    """The torch._int_mm form of int8_gemm_reference (any device that has _int_mm)."""
    d = a.to(torch.int16) - a_zero_point
    w = weight.to(torch.int8)
    if seven_bit:
        return int_mm_padded(d.to(torch.int8), w)
    h, low = (d >> 1).to(torch.int8), (d & 1).to(torch.int8)
    return int_mm_padded(h, w) * 2 + int_mm_padded(low, w)


def u7_params(lo: float, hi: float) -> tuple[Tensor, int]:
    """The dynamic 7-bit scale (a float32 CPU scalar tensor) and zero point of values whose
    minimum and maximum are lo and hi: the range extended to include 0, scale (hi - lo) / 127
    (1 for an empty range), zero point round(-lo / scale) in float32, as the kernels compute them."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    lo32, hi32 = torch.tensor(lo, dtype=torch.float32), torch.tensor(hi, dtype=torch.float32)
    scale = ((hi32 - lo32) / 127.0) if hi > lo else torch.tensor(1.0)
    return scale, int(torch.round(-lo32 / scale).clamp(0, 127))


def quantize_activations_u7_reference(x: Tensor) -> tuple[Tensor, float, int]:
    """Dynamic per-tensor 7-bit quantization as the INT8 linear kernel does it (float32 math)."""
    x = x.detach().to(torch.float32)
    scale, zp = u7_params(float(x.min()), float(x.max())) if x.numel() else u7_params(0.0, 0.0)
    q = (torch.round(x * (1.0 / scale)) + zp).clamp(0, 127).to(torch.uint8)
    return q, float(scale), zp


def int8_linear_dynamic_reference(x: Tensor, weight_int8: Tensor, weight_scale: Tensor,
                                  bias: Tensor | None) -> Tensor:
    q, s, zp = quantize_activations_u7_reference(x.reshape(-1, x.shape[-1]))
    acc = int8_gemm_reference(q, zp, weight_int8, seven_bit=True).to(torch.float32)
    out = acc * (torch.tensor(s, dtype=torch.float32) * weight_scale.to(torch.float32))
    if bias is not None:
        out = out + bias.to(torch.float32)
    return out.reshape(*x.shape[:-1], weight_int8.shape[0]).to(x.dtype)


def _int4_positions(k: int, device=None) -> tuple[Tensor, Tensor]:
    """Byte offset and shift of each input feature's nibble in a packed INT4 row (see int4.h)."""
    kk = torch.arange(k, device=device)
    chunk, r = kk // 64, kk % 64
    word = (r // 32) * 4 + r % 4
    t = (r % 32) // 4
    return chunk * 32 + word * 4 + t // 2, (t % 2) * 4


def int4_pack_reference(q: Tensor) -> Tensor:
    n, k = q.shape
    byte, shift = _int4_positions(k, q.device)
    out = torch.zeros(n, k // 2, dtype=torch.int32, device=q.device)
    out.index_add_(1, byte, ((q.to(torch.int32) & 15) << shift.to(torch.int32)).to(torch.int32))
    return out.to(torch.uint8)


def int4_unpack_reference(packed: Tensor) -> Tensor:
    byte, shift = _int4_positions(packed.shape[1] * 2, packed.device)
    return (packed[:, byte].to(torch.int32) >> shift) & 15


def int4_dequantize_reference(packed: Tensor, scale: Tensor, zero_point: Tensor, group_size: int) -> Tensor:
    q = int4_unpack_reference(packed).to(torch.float32)
    n, k = q.shape
    g = q.view(n, k // group_size, group_size)
    return ((g - zero_point.to(torch.float32)[..., None]) * scale.to(torch.float32)[..., None]).view(n, k)


def int4_linear_reference(x: Tensor, packed: Tensor, scale: Tensor, zero_point: Tensor, bias: Tensor | None,
                          group_size: int) -> Tensor:
    w = int4_dequantize_reference(packed, scale, zero_point, group_size)
    out = torch.nn.functional.linear(x.to(torch.float32), w, None if bias is None else bias.to(torch.float32))
    return out.to(x.dtype)


def int4_act_codes_reference(x: Tensor, group_size: int) -> tuple[Tensor, Tensor]:
    """(codes, scales) of the 8-bit activations of ``int4_linear_dynamic``: per row and group of
    ``group_size`` features, sx = max|x| / 127 (1 where that is 0) and codes round(x / sx) in
    [-127, 127]; codes float32 [..., groups, group_size], scales float32 [..., groups]."""
    xg = x.to(torch.float32).reshape(*x.shape[:-1], x.shape[-1] // group_size, group_size)
    sx = xg.abs().amax(-1) / 127.0
    sx = torch.where(sx > 0, sx, torch.ones_like(sx))
    return torch.round(xg / sx[..., None]).clamp(-127, 127), sx


def int4_linear_dynamic_reference(x: Tensor, packed: Tensor, scale: Tensor, zero_point: Tensor, bias: Tensor | None,
                                  group_size: int) -> Tensor:
    """4-bit weights against 8-bit activation codes, in float64: per group the exact integer sum
    of code * (q - zero), times scale * sx, summed over groups."""
    codes, sx = int4_act_codes_reference(x, group_size)
    q = int4_unpack_reference(packed).to(torch.float64)
    n, k = q.shape
    w = q.view(n, k // group_size, group_size) - zero_point.to(torch.float64)[..., None]
    dots = torch.einsum("...gk,ngk->...ng", codes.to(torch.float64), w)
    out = (dots * scale.to(torch.float64) * sx.to(torch.float64)[..., None, :]).sum(-1)
    if bias is not None:
        out = out + bias.to(torch.float64)
    return out.to(torch.float32).to(x.dtype)


def int8_linear_static_reference(x: Tensor, a_scale: float, a_zero_point: int, weight_int8: Tensor,
                                 weight_scale: Tensor, bias: Tensor | None) -> Tensor:
    x2 = x.detach().reshape(-1, x.shape[-1]).to(torch.float32)
    s = torch.tensor(a_scale, dtype=torch.float32)
    q = (torch.round(x2 * (1.0 / s)) + a_zero_point).clamp(0, 127).to(torch.uint8)
    acc = int8_gemm_reference(q, a_zero_point, weight_int8, seven_bit=0 <= a_zero_point <= 127).to(torch.float32)
    out = acc * (s * weight_scale.to(torch.float32))
    if bias is not None:
        out = out + bias.to(torch.float32)
    return out.reshape(*x.shape[:-1], weight_int8.shape[0]).to(x.dtype)


def sliding_window_mask(nq: int, nk: int, window: int, num_global: int = 0, causal: bool = True,
                        q_offset: int = 0, device=None) -> Tensor:
    """Bool [nq, nk] mask (True = may attend) of the sliding-window + global-token pattern:
    query i at position p = q_offset + i, key j at position j. Causal: j <= p and
    (p - j < window or j < num_global); non-causal: |p - j| < window or j < num_global or
    p < num_global."""
    p = torch.arange(q_offset, q_offset + nq, device=device)[:, None]
    j = torch.arange(nk, device=device)[None, :]
    glob_key = j < num_global
    if causal:
        return (j <= p) & ((p - j < window) | glob_key)
    return ((p - j).abs() < window) | glob_key | (p < num_global)


def block_layout_mask(nq: int, nk: int, block_layout: Tensor, block_size: int, causal: bool,
                      q_offset: int = 0, device=None) -> Tensor:
    """Bool [nq, nk] mask of a block-sparse layout: (query block, key block) pairs over blocks of
    ``block_size`` positions, and only j <= p of them when causal."""
    nqb = (q_offset + nq + block_size - 1) // block_size
    nkb = (nk + block_size - 1) // block_size
    blocks = torch.zeros(nqb, nkb, dtype=torch.bool, device=device)
    if block_layout.numel():
        blocks[block_layout[:, 0].to(device), block_layout[:, 1].to(device)] = True
    p = torch.arange(q_offset, q_offset + nq, device=device)
    j = torch.arange(nk, device=device)
    mask = blocks[p // block_size][:, j // block_size]
    if causal:
        mask &= j[None, :] <= p[:, None]
    return mask


def pattern_mask(nq: int, nk: int, window: int, num_global: int, causal: bool, q_offset: int,
                 block_layout: Tensor | None, block_size: int, device=None) -> Tensor:
    """The attention op's visibility as a bool [nq, nk] mask: the block layout when given, else the
    sliding-window + global-token pattern."""
    if block_layout is not None:
        return block_layout_mask(nq, nk, block_layout, block_size, causal, q_offset, device)
    return sliding_window_mask(nq, nk, window, num_global, causal, q_offset, device)


def sliding_window_attention_reference(q: Tensor, k: Tensor, v: Tensor, window: int, num_global: int = 0,
                                       causal: bool = True, scale: float | None = None, q_offset: int = 0,
                                       block_layout: Tensor | None = None, block_size: int = 0
                                       ) -> tuple[Tensor, Tensor]:
    """(out, lse) of softmax attention restricted to the pattern, materialising the [nq, nk]
    scores (O(n^2) memory: a test oracle and the fallback on devices without a kernel). Computed
    in float32 (float64 for float64 inputs); out in the inputs' dtype. A query that sees no key
    gets output 0 and lse -inf. Differentiable by autograd."""
    nq, nk, d = q.shape[-2], k.shape[-2], q.shape[-1]
    mask = pattern_mask(nq, nk, window, num_global, causal, q_offset, block_layout, block_size, q.device)
    dtype = torch.promote_types(q.dtype, torch.float32)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    s = (q.to(dtype) @ k.to(dtype).transpose(-1, -2)) * scale
    # Rows that see no key are scored 0 everywhere (and then masked), so no -inf - (-inf) = NaN
    # reaches the values or the gradients.
    empty = ~mask.any(dim=-1, keepdim=True)
    s = s.masked_fill(~mask & ~empty, float("-inf")).masked_fill(empty, 0.0)
    lse = torch.logsumexp(s, dim=-1)
    pr = torch.exp(s - lse[..., None]).masked_fill(~mask, 0.0)
    out = (pr @ v.to(dtype)).to(q.dtype)
    return out, lse.masked_fill(empty[..., 0], float("-inf"))
