"""Parameter reduction by the method that suits each group of parameters: low-rank factorization
of Linear layers (truncated SVD, physically two thinner layers), through ``reduce_``."""

from edgegen.reduce.api import reduce_, register_reduce_handler
from edgegen.reduce.config import LowRankConfig, ReduceConfig
from edgegen.reduce.lowrank import LowRankLinear, energy_rank, lowrank_layout, plan_ranks

__all__ = ["reduce_", "register_reduce_handler", "ReduceConfig", "LowRankConfig", "LowRankLinear", "energy_rank",
           "lowrank_layout", "plan_ranks"]
