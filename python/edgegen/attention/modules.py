"""Sparse attention as an attention core (see :mod:`edgegen.attention.dense`), and the transform
that installs it in a model's attention slots."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from torch import Tensor, nn

from edgegen.config import Config
from edgegen.attention.functional import sliding_window_attention
from edgegen.ops._args import INT64_MAX
from edgegen.attention.dense import DenseAttention
from edgegen.transform import FilterFn, check_filter_fn, check_model


@dataclass
class SparseAttentionConfig(Config):
    """``window`` (int >= 1) and ``num_global`` (int >= 0) of :func:`sliding_window_attention`;
    ``window=None`` keeps dense causal attention (the baseline of an ablation)."""

    window: int | None = 256
    num_global: int = 4

    def __post_init__(self):
        if self.window is not None and (isinstance(self.window, bool) or not isinstance(self.window, int)
                                        or not 1 <= self.window <= INT64_MAX):
            raise ValueError(f"window: expected None (dense) or an int in [1, 2**63 - 1], got {self.window!r}")
        if (isinstance(self.num_global, bool) or not isinstance(self.num_global, int)
                or not 0 <= self.num_global <= INT64_MAX):
            raise ValueError(f"num_global: expected an int in [0, 2**63 - 1], got {self.num_global!r}")

    @property
    def dense(self) -> bool:
        return self.window is None



class SparseSelfAttention(nn.Module):
    """Causal attention over [B, H, T, D] queries/keys/values for GPT-2's attention slot
    (``forward(q, k, v, q_offset)``, like :class:`edgegen.attention.DenseAttention`).

    With a window it runs :func:`sliding_window_attention` (causal): training gets the C++
    backward, and a decode step with the KV cache (``q_offset`` = cache length) reads only the
    window and the global tokens of the cache. ``window=None`` is dense SDPA. Attention-probability
    dropout is not offered by the sparse kernel (``dropout`` must be 0 with a window).
    ``config`` (a :class:`SparseAttentionConfig` or its dict) replaces ``window`` and ``num_global``.
    """

    def __init__(self, window: int | None = 256, num_global: int = 4, dropout: float = 0.0, *,
                 config: SparseAttentionConfig | dict | None = None):
        super().__init__()
        if config is None:
            config = SparseAttentionConfig(window, num_global)
        else:
            if (window, num_global) != (256, 4):
                raise ValueError("config: give either a config or window/num_global, not both")
            if isinstance(config, dict):
                config = SparseAttentionConfig.from_dict(config)
            if not isinstance(config, SparseAttentionConfig):
                raise TypeError(f"config: expected a SparseAttentionConfig or its dict, got {type(config).__name__}")
        self.config = config
        window = config.window
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


def sparsify_attention_(model: nn.Module, config: SparseAttentionConfig | dict,
                        filter_fn: FilterFn | None = None) -> nn.Module:
    """Replace the attention cores (:class:`DenseAttention` or :class:`SparseSelfAttention`
    modules, wherever the model keeps them; ``filter_fn(core, name)`` selects) by
    :class:`SparseSelfAttention` with ``config``, in place; returns the model. The weights are
    untouched: with ``window`` >= the context length the model computes exactly what it did
    before.

    Examples:
        >>> import torch
        >>> from edgegen.models import GPT2, GPT2Config
        >>> model = GPT2(GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2)).eval()
        >>> idx = torch.randint(0, 64, (1, 32))
        >>> dense = model(idx)
        >>> _ = sparsify_attention_(model, SparseAttentionConfig(window=32, num_global=0))
        >>> bool(torch.allclose(model(idx), dense, atol=1e-5))    # a window covering the context
        True
        >>> _ = sparsify_attention_(model, SparseAttentionConfig(window=4), filter_fn=lambda m, n: n.startswith("h.0."))
        >>> [b.attn.attention.window for b in model.h]
        [4, 32]
    """
    if isinstance(config, dict):
        config = SparseAttentionConfig.from_dict(config)
    if not isinstance(config, SparseAttentionConfig):
        raise TypeError(f"config: expected a SparseAttentionConfig or its dict, got {type(config).__name__}")
    check_model(model)
    check_filter_fn(filter_fn)
    targets: list[tuple[str, nn.Module]] = []
    for n, m in model.named_modules():  # parents come before their children
        if any(n.startswith(t + ".") for t, _ in targets):
            continue  # inside a core already chosen (a SparseSelfAttention's own dense fallback)
        if n and isinstance(m, (DenseAttention, SparseSelfAttention)) and (filter_fn is None or filter_fn(m, n)):
            targets.append((n, m))
    if not targets:
        raise ValueError(f"model: no attention core (DenseAttention / SparseSelfAttention module) was selected in "
                         f"{type(model).__name__}")
    # the attention dropout of the dense core each slot started with (kept through re-sparsifying)
    dropouts = {float(getattr(m, "dense_dropout", m.dropout)) for _, m in targets}
    if not config.dense and any(dropouts):
        warnings.warn(f"sparsify_attention_: the model's attention-probability dropout ({max(dropouts)}) is not "
                      "applied by the sliding-window kernel; residual and embedding dropout are unchanged",
                      stacklevel=2)
    for name, m in targets:
        parent, _, child = name.rpartition(".")
        dense_dropout = float(getattr(m, "dense_dropout", m.dropout))
        core = SparseSelfAttention(dropout=dense_dropout if config.dense else 0.0, config=config)
        core.dense_dropout = dense_dropout
        core.train(m.training)
        setattr(model.get_submodule(parent) if parent else model, child, core)
    return model
