"""Configs of the parameter-reduction transforms (``reduce_``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from edgegen.config import Config


@dataclass
class ReduceConfig(Config, family=True):
    """Base of the reduction configs (a field annotated with it takes any of them by ``kind``)."""


@dataclass
class LowRankConfig(ReduceConfig):
    """Low-rank factorization of Linear layers: ``W ~ U_r S_r V_r^T`` by truncated SVD, each layer
    replaced physically by two thinner layers (:class:`~edgegen.reduce.LowRankLinear`: ``in -> r``
    then ``r -> out`` with the bias). The rank of every selected layer is

    * ``ranks``: a per-layer plan ``{qualified name: rank}`` (what :func:`lowrank_layout` returns,
      to rebuild a reduced model's structure before loading its state dict), else
    * ``rank``: the same rank for every layer, else
    * ``energy``: the smallest rank keeping that fraction of the squared singular values (the
      Frobenius energy), in (0, 1].

    A layer is factorized only if the two thin layers hold fewer parameters than the dense one
    (``r (in + out) < in * out``); weights shared between modules (a tied output head) are left
    alone. ``rank`` / ``ranks`` entries above ``min(in, out)`` of their layer are errors."""

    energy: float = 0.95
    rank: Optional[int] = None
    ranks: Optional[dict[str, int]] = None

    def __post_init__(self):
        if isinstance(self.energy, bool) or not isinstance(self.energy, (int, float)) or not 0.0 < self.energy <= 1.0:
            raise ValueError(f"energy: expected a fraction in (0, 1], got {self.energy!r}")
        if self.rank is not None and (isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1):
            raise ValueError(f"rank: expected an int >= 1, got {self.rank!r}")
        if self.ranks is not None:
            if self.rank is not None:
                raise ValueError("ranks: give either rank (every layer) or ranks (a per-layer plan), not both")
            if not isinstance(self.ranks, dict) or not self.ranks:
                raise ValueError(f"ranks: expected a non-empty mapping of layer name -> rank, got {self.ranks!r}")
            for name, r in self.ranks.items():
                if isinstance(r, bool) or not isinstance(r, int) or r < 1:
                    raise ValueError(f"ranks.{name}: expected an int >= 1, got {r!r}")
