"""Python side of ``torch.ops.edgegen.*``: fake kernels, autograd, and reference twins."""

from edgegen.ops import distill as _distill_registrations  # noqa: F401
from edgegen.ops._reference import fused_linear_kd_loss_reference, kd_loss_reference

__all__ = ["kd_loss_reference", "fused_linear_kd_loss_reference"]
