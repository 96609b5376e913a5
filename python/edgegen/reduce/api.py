"""``reduce_``: one in-place verb for the parameter-reduction methods."""

from __future__ import annotations

import copy

import torch
from torch import nn

from edgegen.reduce.config import EmbeddingFactorConfig, LowRankConfig, MPRFConfig, ReduceConfig
from edgegen.reduce.embedding import factorize_embedding_
from edgegen.reduce.lowrank import lowrank_
from edgegen.transform import FilterFn, Handlers, check_filter_fn, check_model

_HANDLERS = Handlers("reduce_")
_HANDLERS.register(LowRankConfig)(lowrank_)
_HANDLERS.register(EmbeddingFactorConfig)(factorize_embedding_)


@_HANDLERS.register(MPRFConfig)
def _mprf_(model: nn.Module, config: MPRFConfig, filter_fn: FilterFn | None) -> int:
    # A dry run on a copy first: a plan failing in a later group (a rank above a layer's width after
    # head pruning, say) raises before the model is touched. The groups are deterministic, so the
    # second pass, in place, does what the dry run did; references to the model's modules, its
    # hooks and an optimizer's parameters stay valid for every module a group leaves alone.
    idle: list[str] = []
    apply_plan_(copy.deepcopy(model), config, filter_fn, idle)
    if idle:  # a group the user asked for that would change nothing is a mistake in the plan
        raise ValueError(f"{idle[0]}: nothing to reduce (this group of the plan changes no layer of the model)")
    return apply_plan_(model, config, filter_fn)


def apply_plan_(model: nn.Module, config: MPRFConfig, filter_fn: FilterFn | None = None,
                idle: list | None = None) -> int:
    """Apply ``config``'s groups to ``model`` in place, in order, without ``reduce_``'s dry run: a
    group that fails leaves the earlier ones applied. For callers that already work on a copy
    (:func:`edgegen.analysis.plan_reduction`); returns how many groups changed something, and
    appends the names of those that changed nothing to ``idle`` when given."""
    from torch.nn.utils import parametrize

    from edgegen.prune import finalize_, prune_
    from edgegen.prune.ffn import shrink_ffn_
    from edgegen.prune.heads import shrink_heads_

    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise ValueError("model: has pruning masks (parametrizations); bake them in with edgegen.prune.finalize_ "
                         "before a modular reduction, which removes heads and hidden units physically")
    changed = 0
    for group in config.groups():
        sub = getattr(config, group)
        try:
            if group in ("heads", "ffn"):
                prune_(model, sub, filter_fn=filter_fn)
                finalize_(model)
                with torch.no_grad():
                    did = (shrink_heads_ if group == "heads" else shrink_ffn_)(model) > 0
            else:
                did = _HANDLERS(model, sub, filter_fn) > 0
        except ValueError as e:
            raise ValueError(f"{group}.{e}") from e
        changed += did
        if not did and idle is not None:
            idle.append(group)
    return changed


def register_reduce_handler(config_type: type):
    """``@register_reduce_handler(ConfigType)`` on ``handler(model, config, filter_fn)``:
    ``reduce_`` then applies configs of that type; the handler returns how many modules changed."""
    return _HANDLERS.register(config_type)


def reduce_(model: nn.Module, config, filter_fn: FilterFn | None = None) -> nn.Module:
    """Reduce ``model``'s parameters in place (``filter_fn(module, name)`` selects layers) and
    return it. ``config`` is a config object or its dict:

    * :class:`LowRankConfig`: Linear layers and 1x1 convolutions -> :class:`LowRankLinear` /
      :class:`LowRankConv1x1` (truncated SVD, the rank per
      layer by retained energy, a fixed rank or a per-layer plan).
    * :class:`EmbeddingFactorConfig`: a tied token embedding (GPT-2's) -> a [vocab, r] table and
      an [r, d] projection, the output head tied to both (:class:`FactorizedEmbedding`).
    * :class:`MPRFConfig`: a per-group plan (heads, FFN width, ranks, embedding) applied in turn.

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
