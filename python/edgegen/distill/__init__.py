"""Knowledge distillation: fused KD losses on logits or straight from hidden states."""

from edgegen.distill.losses import (
    FusedLinearKDLoss,
    KDConfig,
    KDLoss,
    fused_linear_kd_loss,
    kd_loss,
)

__all__ = ["KDConfig", "KDLoss", "FusedLinearKDLoss", "kd_loss", "fused_linear_kd_loss"]
