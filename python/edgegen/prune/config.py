"""Pruning configs: the ``kind``s ``prune_`` accepts. They validate on construction and
round-trip through plain data (YAML/JSON, MLflow params, checkpoints)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from edgegen.config import Config


def _require_amount(amount, upper_inclusive: bool, what: str) -> None:
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise TypeError(f"amount: expected a number in [0, 1], got {amount!r}")
    ok = 0.0 <= amount <= 1.0 if upper_inclusive else 0.0 <= amount < 1.0
    if not ok:
        bound = "[0, 1]" if upper_inclusive else f"[0, 1) (1 would remove every {what})"
        raise ValueError(f"amount: expected a fraction in {bound}, got {amount!r}")


@dataclass
class PruneConfig(Config, family=True):
    """Base of the pruning configs (a field annotated with it takes any of them by ``kind``).
    ``shrinks``: the method removes whole structures (channels, heads, hidden units), so
    :func:`~edgegen.prune.shrink` makes the shipped model physically smaller."""

    shrinks: ClassVar[bool] = False


@dataclass
class MagnitudeConfig(PruneConfig):
    """Unstructured pruning of the ``amount`` fraction of weights with the smallest scores:
    |w| (``importance='magnitude'``) or |w * grad| (``'taylor'``, needs ``.grad``). ``scope``
    'global' ranks all selected weights together; 'layer' prunes each tensor by ``amount``."""

    amount: float
    scope: str = "global"
    importance: str = "magnitude"

    def __post_init__(self):
        _require_amount(self.amount, True, "weight")
        if self.scope not in ("global", "layer"):
            raise ValueError(f"scope: expected 'global' or 'layer', got {self.scope!r}")
        if self.importance not in ("magnitude", "taylor"):
            raise ValueError(f"importance: expected 'magnitude' or 'taylor', got {self.importance!r}")


@dataclass
class NMConfig(PruneConfig):
    """N:M semi-structured sparsity: ``n`` of every ``m`` consecutive weights along the input
    dimension are kept (2:4 and 4:8 are the hardware-supported patterns)."""

    n: int
    m: int

    def __post_init__(self):
        for name in ("n", "m"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name}: expected an int, got {v!r}")
        if not 1 <= self.m <= 64:
            raise ValueError(f"m: expected a group size in [1, 64], got {self.m}")
        if not 0 <= self.n <= self.m:
            raise ValueError(f"n: expected 0 <= n <= m ({self.m}), got {self.n}")


@dataclass
class ChannelConfig(PruneConfig):
    """Structured pruning of whole channels of every coupled group (found from the model):
    ``amount`` of each group's channels, ranked by the group's summed L1/L2 filter norms or
    first-order Taylor scores |w * grad|. At least one channel survives, and the number kept is
    rounded up to a multiple of ``round_to`` (but never above the original count)."""

    shrinks = True

    amount: float
    importance: str = "l1"
    round_to: int = 1

    def __post_init__(self):
        _require_amount(self.amount, False, "channel of a layer")
        if self.importance not in ("l1", "l2", "taylor"):
            raise ValueError(f"importance: expected 'l1', 'l2' or 'taylor', got {self.importance!r}")
        if isinstance(self.round_to, bool) or not isinstance(self.round_to, int) or self.round_to < 1:
            raise ValueError(f"round_to: expected a positive int, got {self.round_to!r}")

    def channels_to_keep(self, channels: int) -> int:
        keep = channels - round(self.amount * channels)
        keep = -(-keep // self.round_to) * self.round_to
        return max(1, min(channels, keep))


@dataclass
class _UnitsConfig(PruneConfig, family=True):
    """Removal of whole units (heads, hidden units) by importance: ``amount`` of the units of
    every layer (``scope='layer'``) or of all layers together (``'global'``); at least one unit
    per layer survives."""

    shrinks = True
    unit: ClassVar[str] = "unit of a layer"

    amount: float
    scope: str = "layer"

    def __post_init__(self):
        _require_amount(self.amount, False, self.unit)
        if self.scope not in ("layer", "global"):
            raise ValueError(f"scope: expected 'layer' or 'global', got {self.scope!r}")

    def units_to_keep(self, units: int) -> int:
        """How many of a layer's ``units`` survive with ``scope='layer'``."""
        return max(1, units - round(self.amount * units))


@dataclass
class HeadConfig(_UnitsConfig):
    """Attention-head pruning: in every attention layer, ``amount`` of the heads with the smallest
    importance (L2 norm of the head's query/key/value rows and output-projection columns) are
    removed; at least one head per layer survives. ``scope='global'`` instead removes the least
    important heads over all layers together, so per-layer head counts differ."""

    unit = "head of a layer"

    def heads_to_keep(self, heads: int) -> int:
        return self.units_to_keep(heads)


@dataclass
class FFNConfig(_UnitsConfig):
    """Feed-forward width pruning: in every feed-forward block (a layer with ``ffn_layout()``:
    GPT-2's MLP), ``amount`` of the hidden units with the smallest importance (L2 norm of the
    unit's input row with its bias and its output column) are removed; at least one survives.
    ``scope='global'`` ranks the units of all blocks together."""

    unit = "hidden unit of a block"


def config_from_dict(d: dict) -> PruneConfig:
    """Any pruning config from its ``to_dict()`` (or YAML)."""
    return PruneConfig.from_dict(d)
