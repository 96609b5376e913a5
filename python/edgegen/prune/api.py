"""``prune_``: one in-place verb for every pruning config."""

from __future__ import annotations

import torch
from torch import nn

from edgegen.ops import prune as ops
from edgegen.prune.config import ChannelConfig, FFNConfig, HeadConfig, MagnitudeConfig, NMConfig, PruneConfig
from edgegen.prune.masks import apply_mask_, get_mask, prunable_weights, raw_parameter
from edgegen.transform import FilterFn, Handlers, check_filter_fn, check_model

_HANDLERS = Handlers("prune_", ignorable=("example_inputs",))


def register_prune_handler(config_type: type):
    """``@register_prune_handler(ConfigType)`` on ``handler(model, config, filter_fn)``
    (optionally also taking ``example_inputs``): ``prune_`` then applies configs of that type. The
    handler prunes in place and returns how many modules it changed."""
    return _HANDLERS.register(config_type)


def _input_dim(module: nn.Module) -> int:
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        return 0
    return 1


def _selected(model: nn.Module, filter_fn: FilterFn | None) -> list[tuple[str, nn.Module]]:
    layers = prunable_weights(model, filter_fn)
    if not layers:
        raise ValueError("model: nothing to prune (no Linear/Conv/ConvTranspose weight, not shared with another "
                         "module, was selected by filter_fn)")
    return layers


@register_prune_handler(MagnitudeConfig)
@torch.no_grad()
def _prune_magnitude_(model: nn.Module, config: MagnitudeConfig, filter_fn: FilterFn | None) -> int:
    layers = _selected(model, filter_fn)
    weights, grads = [], None
    for name, module in layers:
        w = raw_parameter(module, "weight")
        old = get_mask(module, "weight")
        if old is not None:
            w.masked_fill_(~old, 0)  # rank what the module really uses: pruned entries score 0
        weights.append(w)
    if config.importance == "taylor":
        grads = []
        for (name, _), w in zip(layers, weights):
            if w.grad is None:
                raise ValueError(f"importance: 'taylor' needs gradients; {name}.weight has no .grad (run a "
                                 "backward pass before pruning)")
            grads.append(w.grad)
    # Every mask first, no weight changed yet: apply_mask_ zeroes the pruned entries as it masks each layer.
    if config.scope == "global":
        total = sum(w.numel() for w in weights)
        masks = ops.magnitude_mask(weights, round(config.amount * total), grads)
    else:
        masks = [ops.magnitude_mask([w], round(config.amount * w.numel()), None if grads is None else [grads[i]])[0]
                 for i, w in enumerate(weights)]
    for (_, module), mask in zip(layers, masks):
        apply_mask_(module, "weight", mask)
    return len(layers)


@register_prune_handler(NMConfig)
@torch.no_grad()
def _prune_nm_(model: nn.Module, config: NMConfig, filter_fn: FilterFn | None) -> int:
    layers = _selected(model, filter_fn)
    for name, module in layers:
        w, dim = module.weight, _input_dim(module)
        if w.shape[dim] % config.m:
            raise ValueError(f"{name}: {w.shape[dim]} input channels are not a multiple of m ({config.m}); "
                             "exclude this layer with filter_fn")
    for _, module in layers:
        apply_mask_(module, "weight", ops.nm_mask(module.weight, config.n, config.m, _input_dim(module)))
    return len(layers)


@register_prune_handler(ChannelConfig)
def _prune_channels_(model: nn.Module, config: ChannelConfig, filter_fn: FilterFn | None, example_inputs=None) -> int:
    from edgegen.prune.structured import prune_channels_

    return prune_channels_(model, config, filter_fn, example_inputs)


@register_prune_handler(FFNConfig)
def _prune_ffn_(model: nn.Module, config: FFNConfig, filter_fn: FilterFn | None) -> int:
    from edgegen.prune.ffn import prune_ffn_

    return prune_ffn_(model, config, filter_fn)


@register_prune_handler(HeadConfig)
def _prune_heads_(model: nn.Module, config: HeadConfig, filter_fn: FilterFn | None) -> int:
    from edgegen.prune.heads import prune_heads_

    return prune_heads_(model, config, filter_fn)


def prune_(model: nn.Module, config, filter_fn: FilterFn | None = None, example_inputs=None) -> nn.Module:
    """Prune ``model`` in place according to ``config`` (a config object or its ``to_dict()``).

    * :class:`MagnitudeConfig` / :class:`NMConfig`: weights of Linear/Conv/ConvTranspose layers
      (``filter_fn(module, name)`` selects; weights shared between modules, like a tied output
      head, are skipped).
    * :class:`ChannelConfig`: whole channels of coupled layer groups, found by tracing one forward
      pass of ``example_inputs`` (or ``model.example_inputs()``); ``filter_fn`` selects groups by
      their producing layers.
    * :class:`HeadConfig`: attention heads of GPT-2-style attention modules.
    * :class:`FFNConfig`: hidden units of feed-forward blocks (GPT-2's MLP).

    Pruned weights become ``original * mask`` (see :mod:`edgegen.prune.masks`): they stay exactly
    zero through optimizer steps, are saved with the model, and work under ``torch.compile``.
    Pruning again only adds to the masks. :func:`finalize_` bakes the masks in; :func:`shrink`
    removes pruned channels and heads physically. Other config types plug in through
    :func:`register_prune_handler`. Returns ``model``.

    Examples:
        >>> from torch import nn
        >>> from edgegen.prune import MagnitudeConfig, sparsity
        >>> model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
        >>> _ = prune_(model, MagnitudeConfig(0.5))             # the smallest half of all weights
        >>> round(sparsity(model), 2)
        0.5
        >>> _ = prune_(model, {"kind": "NMConfig", "n": 2, "m": 4})  # the dict form of a config
    """
    if isinstance(config, dict):
        config = PruneConfig.from_dict(config)
    check_filter_fn(filter_fn)
    check_model(model)
    _HANDLERS(model, config, filter_fn, example_inputs=example_inputs)
    return model
