"""``reduce_``: one in-place verb for the parameter-reduction methods."""

from __future__ import annotations

from torch import nn

from edgegen.reduce.config import LowRankConfig, ReduceConfig
from edgegen.reduce.lowrank import lowrank_
from edgegen.transform import FilterFn, Handlers, check_filter_fn, check_model

_HANDLERS = Handlers("reduce_")
_HANDLERS.register(LowRankConfig)(lowrank_)


def register_reduce_handler(config_type: type):
    """``@register_reduce_handler(ConfigType)`` on ``handler(model, config, filter_fn)``:
    ``reduce_`` then applies configs of that type; the handler returns how many modules changed."""
    return _HANDLERS.register(config_type)


def reduce_(model: nn.Module, config, filter_fn: FilterFn | None = None) -> nn.Module:
    """Reduce ``model``'s parameters in place (``filter_fn(module, name)`` selects layers) and
    return it. ``config`` is a config object or its dict:

    * :class:`LowRankConfig`: Linear layers -> :class:`LowRankLinear` (truncated SVD, the rank per
      layer by retained energy, a fixed rank or a per-layer plan).

    A ValueError when no layer qualifies. Other methods plug in through
    :func:`register_reduce_handler`.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))
        >>> with torch.no_grad():  # a weight of rank 4 plus a little noise
        ...     _ = model[0].weight.copy_(torch.randn(64, 4) @ torch.randn(4, 64) + 1e-3 * torch.randn(64, 64))
        >>> x = torch.randn(5, 64)
        >>> ref = model(x)
        >>> _ = reduce_(model, LowRankConfig(energy=0.999), filter_fn=lambda m, n: n == "0")
        >>> model[0].rank, sum(p.numel() for p in model[0].parameters())
        (4, 576)
        >>> bool(torch.allclose(model(x), ref, atol=1e-2))
        True
    """
    if isinstance(config, dict):
        config = ReduceConfig.from_dict(config)
    check_model(model)
    check_filter_fn(filter_fn)
    if _HANDLERS(model, config, filter_fn) == 0:
        raise ValueError("model: nothing to reduce (no selected layer gets fewer parameters with this config)")
    return model
