"""What the in-place verbs (``quantize_``, ``prune_``, ``sparsify_attention_``) share: the
``filter_fn`` type and its check, and the table that maps a config type to the function that
applies it, so a new method plugs in without editing edgegen::

    @register_quantize_handler(MyConfig)
    def _apply(model, config, filter_fn):
        ...  # replace layers; return how many changed
"""

from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

FilterFn = Callable[[nn.Module, str], bool]
"""``filter_fn(module, qualified_name) -> bool``: which modules a verb may change."""

__all__ = ["FilterFn", "Handlers", "check_filter_fn", "check_model", "weight_read_by_parent"]

# Modules whose forward reads their child layers' ``.weight`` directly (PyTorch's attention and
# transformer layers pass them to fused kernels): a child replaced by a quantized or factorized
# module, which has no such attribute, would break them.
WEIGHT_READING_PARENTS = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


def weight_read_by_parent(model: nn.Module, name: str) -> bool:
    """Whether the layer ``name`` of ``model`` is a direct child of one of :data:`WEIGHT_READING_PARENTS`."""
    parent = name.rpartition(".")[0]
    return isinstance(model.get_submodule(parent), WEIGHT_READING_PARENTS)


def check_filter_fn(filter_fn) -> None:
    """TypeError naming ``filter_fn`` unless it is None or callable."""
    if filter_fn is not None and not callable(filter_fn):
        raise TypeError(f"filter_fn: expected a callable (module, name) -> bool, got {type(filter_fn).__name__}")


def check_model(model) -> None:
    """TypeError naming ``model`` unless it is an ``nn.Module``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")


class Handlers:
    """Config type -> handler for one verb. A config is handled by the entry of its own class or
    of the nearest registered base class. ``handler(model, config, filter_fn, **options)``
    returns how many modules it changed; options the verb passes (``calibration``,
    ``example_inputs``) reach only handlers whose signature names them. Giving an option to a
    config whose handler does not take it is an error, except for the ``ignorable`` ones (inputs
    that only some methods need, such as example inputs for tracing)."""

    def __init__(self, verb: str, ignorable: tuple[str, ...] = ()):
        self.verb = verb
        self.ignorable = frozenset(ignorable)
        self._table: dict[type, tuple[Callable, frozenset[str]]] = {}

    def register(self, config_type: type) -> Callable[[Callable], Callable]:
        if not isinstance(config_type, type):
            raise TypeError(f"config_type: expected a class, got {type(config_type).__name__}")

        def add(handler: Callable) -> Callable:
            if not callable(handler):
                raise TypeError(f"handler: expected a callable, got {type(handler).__name__}")
            params = inspect.signature(handler).parameters
            takes = frozenset(params) | ({"*"} if any(p.kind is p.VAR_KEYWORD for p in params.values()) else set())
            self._table[config_type] = (handler, takes)
            return handler
        return add

    def config_types(self) -> list[type]:
        return list(self._table)

    def __call__(self, model: nn.Module, config, filter_fn, **options) -> int:
        for cls in type(config).__mro__:
            if cls in self._table:
                handler, takes = self._table[cls]
                break
        else:
            names = ", ".join(sorted(c.__name__ for c in self._table))
            raise TypeError(f"config: {self.verb} takes {names} (or the dict of their to_dict()), "
                            f"got {type(config).__name__}")
        kwargs = {}
        for name, value in options.items():
            if name in takes or "*" in takes:
                kwargs[name] = value
            elif value is not None and name not in self.ignorable:
                raise ValueError(f"{name}: {type(config).__name__} does not take {name}")
        return handler(model, config, filter_fn, **kwargs)
