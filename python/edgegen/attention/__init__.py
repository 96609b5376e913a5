"""Sparse attention: sliding-window + global-token attention with a C++ forward and backward,
block-sparse layouts through the same kernel, a module for GPT-2's attention slot, and a
latency-aware window chooser."""

from edgegen.attention.chooser import WindowChoice, choose_window
from edgegen.attention.functional import (
    block_layout_mask,
    block_sparse_attention,
    sliding_window_attention,
    sliding_window_mask,
)
from edgegen.attention.dense import DenseAttention, HeadLayout, HeadPrunable
from edgegen.attention.modules import SparseAttentionConfig, SparseSelfAttention, sparsify_attention_

__all__ = ["sliding_window_attention", "block_sparse_attention", "sliding_window_mask", "block_layout_mask",
           "SparseSelfAttention", "SparseAttentionConfig", "sparsify_attention_", "choose_window", "WindowChoice",
           "DenseAttention", "HeadLayout", "HeadPrunable"]
