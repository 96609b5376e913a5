"""Models: one readable file each, with a dataclass config."""

from edgegen.models.gpt2 import GPT2, DenseAttention, GPT2Config

__all__ = ["GPT2", "GPT2Config", "DenseAttention"]
