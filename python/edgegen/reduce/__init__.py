"""Parameter reduction by the method that suits each group of parameters: low-rank factorization
of Linear layers (truncated SVD, physically two thinner layers), factorization of a tied token
embedding, and modular plans over heads, feed-forward width, ranks and embedding, through
``reduce_``."""

from edgegen.reduce.api import apply_plan_, reduce_, register_reduce_handler
from edgegen.reduce.config import EmbeddingFactorConfig, LowRankConfig, MPRFConfig, ReduceConfig
from edgegen.reduce.embedding import FactorizedEmbedding, TiedFactorizedHead
from edgegen.reduce.lowrank import LowRankConv1x1, LowRankLinear, energy_rank, is_pointwise, lowrank_layout, plan_ranks

__all__ = ["reduce_", "apply_plan_", "register_reduce_handler", "ReduceConfig", "LowRankConfig", "EmbeddingFactorConfig",
           "MPRFConfig", "LowRankLinear", "LowRankConv1x1", "is_pointwise", "FactorizedEmbedding", "TiedFactorizedHead", "energy_rank",
           "lowrank_layout", "plan_ranks"]
