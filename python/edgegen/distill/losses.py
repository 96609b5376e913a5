"""Knowledge-distillation losses (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network").

    loss = alpha * T^2 * KL(p_teacher || softmax(student / T)) + (1 - alpha) * CE(student, target)

Both run through ``torch.ops.edgegen.kd_loss`` / ``fused_linear_kd_loss``, and the dispatcher
picks the kernel from the inputs' device: the fused C++ kernels on CPU, the CUDA row kernel on
GPUs (when the extension is built with ``EDGEGEN_CUDA``), and elsewhere a PyTorch kernel that
works through the rows in chunks (same semantics; no [N, V] intermediate beyond the gradient and
one chunk).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import torch
from torch import Tensor, nn

from edgegen.config import Config
from edgegen.ops.distill import check_kd_settings


@dataclass
class KDConfig(Config):
    """The distillation loss's settings; round-trips through dict/JSON/YAML as is."""

    temperature: float = 2.0
    alpha: float = 0.5
    ignore_index: int = -100
    reduction: str = "mean"

    def __post_init__(self):
        check_kd_settings(self.temperature, self.alpha, self.ignore_index, self.reduction)


def _settings(config, temperature, alpha, ignore_index, reduction) -> KDConfig:
    """The module's KDConfig: ``config`` (a KDConfig or its dict), else the four settings."""
    if config is None:
        return KDConfig(temperature, alpha, ignore_index, reduction)
    if (temperature, alpha, ignore_index, reduction) != (2.0, 0.5, -100, "mean"):
        raise ValueError("config: give either a KDConfig or temperature/alpha/ignore_index/reduction, not both")
    if isinstance(config, dict):
        config = KDConfig.from_dict(config)
    if not isinstance(config, KDConfig):
        raise TypeError(f"config: expected a KDConfig or its dict, got {type(config).__name__}")
    return config


def _fields(config: KDConfig) -> dict:
    return {f.name: getattr(config, f.name) for f in fields(config)}


def _check_tensors(named: Sequence[tuple[str, Tensor | None]]) -> torch.device:
    device = None
    first = None
    for name, t in named:
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if device is None:
            device, first = t.device, name
        elif t.device != device:
            raise ValueError(
                f"{name}: expected a tensor on {device} (the device of {first}), got {t.device}"
            )
    return device


def _needs_grad(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor | Sequence[Tensor],
    target: Tensor,
    temperature: float = 2.0,
    alpha: float = 0.5,
    ignore_index: int = -100,
    reduction: str = "mean",
    teacher_weights: Sequence[float] | None = None,
    grad_in_forward: bool = True,
) -> Tensor:
    """Fused distillation loss on logits.

    Args:
        student_logits: [N, V] or [B, T, V], float32/bfloat16/float16 (float64 also accepted).
        teacher_logits: a tensor of the same shape and dtype, or a list of them (a weighted
            mixture of the teachers' distributions at temperature T). Never receives a gradient.
        target: int64 class indices, shape ``student_logits.shape[:-1]``; rows equal to
            ``ignore_index`` contribute nothing and get zero gradient.
        temperature: T >= 0.01 (below, logits / T overflow float32), applied to student and teacher
            for the KL term; CE uses T = 1.
        alpha: weight of the KL term in [0, 1]; a term whose weight is 0 is skipped.
        reduction: 'mean' (over non-ignored rows, for both terms; 0 when all are ignored),
            'sum' or 'none' (shape ``student_logits.shape[:-1]``).
        teacher_weights: mixture weights for several teachers (normalised; default uniform).
        grad_in_forward: compute the student gradient in the same sweep as the loss (fastest;
            one backward per forward). False recomputes it in backward, which allows backward
            through the same graph more than once (retain_graph, gradcheck) and keeps the
            inputs alive until then.

    Returns the loss in float32 (float64 for float64 inputs), accumulated in fp32.

    Examples:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> s = torch.randn(6, 50, dtype=torch.float64, requires_grad=True)
        >>> t = torch.randn(6, 50, dtype=torch.float64)
        >>> y = torch.tensor([3, 1, -100, 7, 0, 2])          # -100: an ignored row
        >>> loss = kd_loss(s, t, y, temperature=2.0, alpha=0.5)
        >>> rows = y != -100
        >>> kl = F.kl_div(F.log_softmax(s[rows] / 2, -1), F.log_softmax(t[rows] / 2, -1), log_target=True,
        ...               reduction="batchmean")
        >>> ref = 0.5 * 4 * kl + 0.5 * F.cross_entropy(s, y)
        >>> bool(torch.allclose(loss, ref))
        True
        >>> loss.backward()
    """
    check_kd_settings(temperature, alpha, ignore_index, reduction)
    teachers = [teacher_logits] if isinstance(teacher_logits, Tensor) else list(teacher_logits)
    _check_tensors(
        [("student_logits", student_logits)]
        + [(f"teacher_logits[{k}]", t) for k, t in enumerate(teachers)]
        + [("target", target)]
    )
    weights = [] if teacher_weights is None else [float(w) for w in teacher_weights]
    loss, _ = torch.ops.edgegen.kd_loss(
        student_logits, teachers, weights, target, float(temperature), float(alpha),
        ignore_index, reduction, grad_in_forward and _needs_grad(student_logits),
    )
    return loss


def fused_linear_kd_loss(
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
    chunk_size: int = 0,
    grad_in_forward: bool = True,
) -> Tensor:
    """The distillation loss computed from hidden states and output-head weights.

    Equals ``kd_loss(student_hidden @ student_weight.T (+ bias), teacher_hidden @
    teacher_weight.T (+ bias), target, ...)`` but works through the rows ``chunk_size`` at a
    time (0 picks about 16M logits per chunk), so neither model's [N, V] logits ever exist.
    Gradients flow to ``student_hidden``, ``student_weight`` and ``student_bias``; the teacher
    tensors get none. With 'mean' and 'sum' the gradients are computed with the loss
    (``grad_in_forward``, as in :func:`kd_loss`); with 'none', or grad_in_forward=False,
    backward recomputes the chunks (per-row upstream gradients are only known then).

    Examples:
        >>> import torch
        >>> h_s, w_s = torch.randn(32, 16, requires_grad=True), torch.randn(100, 16)
        >>> h_t, w_t = torch.randn(32, 24), torch.randn(100, 24)
        >>> y = torch.randint(0, 100, (32,))
        >>> fused = fused_linear_kd_loss(h_s, w_s, h_t, w_t, y)      # no [32, 100] logits kept
        >>> bool(torch.allclose(fused, kd_loss(h_s @ w_s.T, h_t @ w_t.T, y), atol=1e-5))
        True
    """
    check_kd_settings(temperature, alpha, ignore_index, reduction)
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 0:
        raise ValueError(f"chunk_size: expected an int >= 0 (0 picks one), got {chunk_size!r}")
    _check_tensors(
        [
            ("student_hidden", student_hidden), ("student_weight", student_weight),
            ("student_bias", student_bias), ("teacher_hidden", teacher_hidden),
            ("teacher_weight", teacher_weight), ("teacher_bias", teacher_bias),
            ("target", target),
        ]
    )
    with_grad = (
        grad_in_forward
        and reduction != "none"
        and _needs_grad(student_hidden, student_weight, student_bias)
    )
    loss, _, _, _ = torch.ops.edgegen.fused_linear_kd_loss(
        student_hidden, student_weight, student_bias, teacher_hidden, teacher_weight,
        teacher_bias, target, float(temperature), float(alpha), ignore_index, reduction,
        chunk_size, None, with_grad,
    )
    return loss


class KDLoss(nn.Module):
    """Module form of :func:`kd_loss`; ``forward(student_logits, teacher_logits, target)``.
    ``config`` (a :class:`KDConfig` or its dict) replaces the four loss settings."""

    def __init__(
        self,
        temperature: float = 2.0,
        alpha: float = 0.5,
        ignore_index: int = -100,
        reduction: str = "mean",
        teacher_weights: Sequence[float] | None = None,
        *,
        config: KDConfig | dict | None = None,
    ):
        super().__init__()
        self.config = _settings(config, temperature, alpha, ignore_index, reduction)
        self.teacher_weights = None if teacher_weights is None else list(teacher_weights)

    def forward(self, student_logits, teacher_logits, target):
        c = self.config
        return kd_loss(
            student_logits, teacher_logits, target, c.temperature, c.alpha, c.ignore_index,
            c.reduction, self.teacher_weights,
        )

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in _fields(self.config).items())


class FusedLinearKDLoss(nn.Module):
    """Module form of :func:`fused_linear_kd_loss`.

    ``forward(student_hidden, student_head, teacher_hidden, teacher_head, target)`` where the
    heads are ``nn.Linear`` modules (or weight tensors of shape [V, H]).
    """

    def __init__(
        self,
        temperature: float = 2.0,
        alpha: float = 0.5,
        ignore_index: int = -100,
        reduction: str = "mean",
        chunk_size: int = 0,
        *,
        config: KDConfig | dict | None = None,
    ):
        super().__init__()
        self.config = _settings(config, temperature, alpha, ignore_index, reduction)
        self.chunk_size = chunk_size

    @staticmethod
    def _head(head, name):
        if isinstance(head, nn.Linear):
            return head.weight, head.bias
        if isinstance(head, Tensor):
            return head, None
        raise TypeError(f"{name}: expected an nn.Linear or a [V, H] weight tensor, got {type(head).__name__}")

    def forward(self, student_hidden, student_head, teacher_hidden, teacher_head, target):
        ws, bs = self._head(student_head, "student_head")
        wt, bt = self._head(teacher_head, "teacher_head")
        c = self.config
        return fused_linear_kd_loss(
            student_hidden, ws, teacher_hidden, wt, target, c.temperature, c.alpha,
            c.ignore_index, c.reduction, bs, bt, self.chunk_size,
        )

    def extra_repr(self) -> str:
        d = _fields(self.config) | {"chunk_size": self.chunk_size}
        return ", ".join(f"{k}={v!r}" for k, v in d.items())
