"""Pruning: unstructured magnitude (layer-wise or global, exact counts), N:M, structured channels of
coupled layer groups, attention heads; masks that survive training; physical removal; gradual
(cubic) schedules; lottery-ticket rewinding; ratio sweeps; compressed export."""

from edgegen.prune.api import prune_, register_prune_handler
from edgegen.prune.config import (
    ChannelConfig,
    FFNConfig,
    HeadConfig,
    MagnitudeConfig,
    NMConfig,
    PruneConfig,
    config_from_dict,
)
from edgegen.prune.export import load_sparse, save_sparse, saved_bytes
from edgegen.prune.graph import ChannelGroup, find_channel_groups
from edgegen.prune.lottery import LotteryTicket
from edgegen.prune.masks import WeightMask, finalize_, get_mask, load_pruned_state_dict, sparsity
from edgegen.prune.schedule import CubicSchedule, GradualPruner
from edgegen.prune.structured import shrink
from edgegen.prune.sweep import sweep_ratios

__all__ = [
    "prune_", "finalize_", "shrink", "MagnitudeConfig", "NMConfig", "ChannelConfig", "HeadConfig", "FFNConfig",
    "PruneConfig", "register_prune_handler", "config_from_dict", "CubicSchedule", "GradualPruner", "LotteryTicket", "sweep_ratios", "save_sparse",
    "load_sparse", "saved_bytes", "WeightMask", "get_mask", "load_pruned_state_dict", "sparsity",
    "ChannelGroup", "find_channel_groups",
]
