"""Pure-PyTorch twins of the edgegen ops.

They are the test oracle (run them on float64 inputs for an exact reference) and the fallback on
devices the C++ extension has no kernel for. They follow the ops' semantics exactly: ignored rows
count for nothing, a term whose weight is 0 is skipped, and teacher entries of probability 0
contribute 0 to the KL (0 log 0 = 0) even where the student is also -inf.
"""

from __future__ import annotations

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
