"""Configs of the parameter-reduction transforms (``reduce_``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from edgegen.config import Config
from edgegen.prune.config import FFNConfig, HeadConfig


def _require_fraction(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise ValueError(f"{name}: expected a fraction in (0, 1], got {value!r}")


def _require_rank(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value!r}")


@dataclass
class ReduceConfig(Config, family=True):
    """Base of the reduction configs (a field annotated with it takes any of them by ``kind``)."""


@dataclass
class LowRankConfig(ReduceConfig):
    """Low-rank factorization of Linear layers and pointwise (1x1) convolutions: ``W ~ U_r S_r V_r^T``
    by truncated SVD, each layer replaced physically by two thinner layers
    (:class:`~edgegen.reduce.LowRankLinear`: ``in -> r`` then ``r -> out`` with the bias;
    :class:`~edgegen.reduce.LowRankConv1x1` likewise with 1x1 convolutions). The rank of every
    selected layer is

    * ``ranks``: a per-layer plan ``{qualified name: rank}`` (what :func:`lowrank_layout` returns,
      to rebuild a reduced model's structure before loading its state dict), else
    * ``rank``: the same rank for every layer, else
    * ``fraction``: each layer's rank as that fraction of its largest possible rank
      (``ceil(fraction * min(in, out))``), in (0, 1], else
    * ``energy``: the smallest rank keeping that fraction of the squared singular values (the
      Frobenius energy), in (0, 1].

    A layer is factorized only if the two thin layers hold fewer parameters than the dense one
    (``r (in + out) < in * out``); weights shared between modules (a tied output head) are left
    alone. ``rank`` / ``ranks`` entries above ``min(in, out)`` of their layer are errors."""

    energy: float = 0.95
    rank: Optional[int] = None
    ranks: Optional[dict[str, int]] = None
    fraction: Optional[float] = None

    def __post_init__(self):
        _require_fraction(self.energy, "energy")
        if self.rank is not None:
            _require_rank(self.rank, "rank")
        if self.fraction is not None:
            _require_fraction(self.fraction, "fraction")
            if self.rank is not None or self.ranks is not None:
                raise ValueError("fraction: give one of rank, ranks and fraction")
        if self.ranks is not None:
            if self.rank is not None:
                raise ValueError("ranks: give either rank (every layer) or ranks (a per-layer plan), not both")
            if not isinstance(self.ranks, dict) or not self.ranks:
                raise ValueError(f"ranks: expected a non-empty mapping of layer name -> rank, got {self.ranks!r}")
            for name, r in self.ranks.items():
                _require_rank(r, f"ranks.{name}")


@dataclass
class EmbeddingFactorConfig(ReduceConfig):
    """Factorization of a tied token embedding (GPT-2's [vocab, d] table, which its output head
    shares) into a [vocab, r] table and an [r, d] projection by truncated SVD; the head stays tied
    to both factors (:class:`~edgegen.reduce.FactorizedEmbedding`). ``rank``: r, at most
    min(vocab, d); else ``energy``: the smallest r keeping that fraction of the squared singular
    values. Applied only when the factors hold fewer parameters (``r (vocab + d) < vocab * d``)."""

    energy: float = 0.9
    rank: Optional[int] = None

    def __post_init__(self):
        _require_fraction(self.energy, "energy")
        if self.rank is not None:
            _require_rank(self.rank, "rank")


@dataclass
class MPRFConfig(ReduceConfig):
    """Modular parameter reduction: each group of parameters reduced by the method that suits it,
    applied by ``reduce_`` in this order (each later step sees the earlier steps' result):

    * ``heads``: attention-head pruning (:class:`~edgegen.prune.HeadConfig`), physical;
    * ``ffn``: feed-forward width pruning (:class:`~edgegen.prune.FFNConfig`), physical;
    * ``rank``: low-rank factorization of the remaining Linear layers (:class:`LowRankConfig`);
    * ``embedding``: the tied token embedding factorized (:class:`EmbeddingFactorConfig`).

    A group left ``None`` is untouched; at least one must be set. ``filter_fn`` of ``reduce_``
    selects the layers of every group. :func:`edgegen.analysis.plan_reduction` chooses such a
    plan for a parameter or latency budget."""

    heads: Optional[HeadConfig] = None
    ffn: Optional[FFNConfig] = None
    rank: Optional[LowRankConfig] = None
    embedding: Optional[EmbeddingFactorConfig] = None

    def __post_init__(self):
        for name, kind in (("heads", HeadConfig), ("ffn", FFNConfig), ("rank", LowRankConfig),
                           ("embedding", EmbeddingFactorConfig)):
            value = getattr(self, name)
            if value is not None and not isinstance(value, kind):
                raise ValueError(f"{name}: expected a {kind.__name__} or None, got {type(value).__name__}")
        if self.groups() == []:
            raise ValueError("MPRFConfig: expected at least one of heads, ffn, rank, embedding")

    def groups(self) -> list[str]:
        """The groups this plan reduces, in the order they are applied."""
        return [g for g in ("heads", "ffn", "rank", "embedding") if getattr(self, g) is not None]
