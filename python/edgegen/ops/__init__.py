"""Python side of ``torch.ops.edgegen.*``: fake kernels, autograd, and reference twins."""

from edgegen.ops import attention as _attention_registrations  # noqa: F401
from edgegen.ops import distill as _distill_registrations  # noqa: F401
from edgegen.ops import prune as _prune_registrations  # noqa: F401
from edgegen.ops import quant as _quant_registrations  # noqa: F401
from edgegen.ops._fallback import register as _register_fallbacks
from edgegen.ops._reference import (
    channel_norms_reference,
    fused_linear_kd_loss_reference,
    kd_loss_reference,
    kth_smallest_score_reference,
    magnitude_mask_reference,
    magnitude_scores_reference,
    nm_mask_reference,
    sliding_window_attention_reference,
)

_register_fallbacks()

__all__ = ["kd_loss_reference", "fused_linear_kd_loss_reference", "magnitude_scores_reference",
           "kth_smallest_score_reference", "magnitude_mask_reference", "nm_mask_reference",
           "channel_norms_reference", "sliding_window_attention_reference"]
