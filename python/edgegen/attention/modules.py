"""Sparse attention as a module for GPT-2's attention slot, and the transform that installs it."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, fields

from torch import Tensor, nn

from edgegen.attention.functional import sliding_window_attention
from edgegen.models.gpt2 import DenseAttention


@dataclass
class SparseAttentionConfig:
    """``window`` (int >= 1) and ``num_global`` (int >= 0) of :func:`sliding_window_attention`;
    ``window=None`` keeps dense causal attention (the baseline of an ablation)."""

    window: int | None = 256
    num_global: int = 4

    def __post_init__(self):
        if self.window is not None and (isinstance(self.window, bool) or not isinstance(self.window, int)
                                        or self.window < 1):
            raise ValueError(f"window: expected None (dense) or an int >= 1, got {self.window!r}")
        if isinstance(self.num_global, bool) or not isinstance(self.num_global, int) or self.num_global < 0:
            raise ValueError(f"num_global: expected an int >= 0, got {self.num_global!r}")

    @property
    def dense(self) -> bool:
        return self.window is None

    def to_dict(self) -> dict:
        return {"kind": type(self).__name__, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "SparseAttentionConfig":
        d = dict(d)
        kind = d.pop("kind", cls.__name__)
        if kind != cls.__name__:
            raise ValueError(f"kind: expected {cls.__name__!r}, got {kind!r}")
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown fields {unknown}")
        return cls(**d)


class SparseSelfAttention(nn.Module):
    """Causal attention over [B, H, T, D] queries/keys/values for GPT-2's attention slot
    (``forward(q, k, v, q_offset)``, like ``edgegen.models.gpt2.DenseAttention``).

    With a window it runs :func:`sliding_window_attention` (causal): training gets the C++
    backward, and a decode step with the KV cache (``q_offset`` = cache length) reads only the
    window and the global tokens of the cache. ``window=None`` is dense SDPA. Attention-probability
    dropout is not offered by the sparse kernel (``dropout`` must be 0 with a window).
    """

    def __init__(self, window: int | None = 256, num_global: int = 4, dropout: float = 0.0):
        super().__init__()
        self.config = SparseAttentionConfig(window, num_global)
        if window is not None and dropout != 0.0:
            raise ValueError(f"dropout: the sliding-window kernel has no attention-probability dropout; expected 0.0 "
                             f"with window={window}, got {dropout}")
        self.dropout = float(dropout)
        self._dense = DenseAttention(self.dropout)  # the model's own dense attention (window=None)

    @property
    def window(self) -> int | None:
        return self.config.window

    @property
    def num_global(self) -> int:
        return self.config.num_global

    def extra_repr(self) -> str:
        return "dense" if self.config.dense else f"window={self.window}, num_global={self.num_global}"

    def forward(self, q: Tensor, k: Tensor, v: Tensor, q_offset: int = 0) -> Tensor:
        if self.config.dense:
            return self._dense(q, k, v, q_offset)
        return sliding_window_attention(q, k, v, self.window, min(self.num_global, k.shape[-2]), causal=True,
                                        q_offset=int(q_offset))


def sparsify_attention_(model: nn.Module, config: SparseAttentionConfig | dict) -> nn.Module:
    """Install :class:`SparseSelfAttention` in every attention slot of an edgegen GPT-2 (in place;
    returns the model). The weights are untouched: with ``window`` >= the context length the
    model computes exactly what it did before."""
    if isinstance(config, dict):
        config = SparseAttentionConfig.from_dict(config)
    if not isinstance(config, SparseAttentionConfig):
        raise TypeError(f"config: expected a SparseAttentionConfig or its dict, got {type(config).__name__}")
    if not hasattr(model, "set_attention"):
        raise TypeError(f"model: expected a model with attention slots (set_attention), got {type(model).__name__}")
    dropout = float(getattr(getattr(model, "config", None), "dropout", 0.0))
    if dropout and not config.dense:
        warnings.warn(f"sparsify_attention_: the model's attention-probability dropout ({dropout}) is not applied "
                      "by the sliding-window kernel; residual and embedding dropout are unchanged", stacklevel=2)
    model.set_attention(lambda i: SparseSelfAttention(config.window, config.num_global,
                                                      dropout if config.dense else 0.0))
    return model
