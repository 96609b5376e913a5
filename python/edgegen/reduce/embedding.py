"""Factorization of a tied token embedding: the [vocab, d] table becomes a [vocab, r] table and an
[r, d] projection, and the output head that shared the table shares both factors."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgegen.reduce.config import EmbeddingFactorConfig
from edgegen.reduce.lowrank import _svd, energy_rank
from edgegen.transform import FilterFn


class FactorizedEmbedding(nn.Module):
    """``embedding(idx) = table[idx] @ proj``: ``table`` is an ``nn.Embedding(vocab, rank)``,
    ``proj`` an [rank, embedding_dim] parameter, ``rank * (vocab + dim)`` weights instead of
    ``vocab * dim``. Its tied output head is :class:`TiedFactorizedHead`."""

    def __init__(self, num_embeddings: int, embedding_dim: int, rank: int, device=None, dtype=None):
        super().__init__()
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= min(num_embeddings, embedding_dim):
            raise ValueError(f"rank: expected an int in [1, min(vocab, dim) = {min(num_embeddings, embedding_dim)}], "
                             f"got {rank!r}")
        self.num_embeddings, self.embedding_dim, self.rank = num_embeddings, embedding_dim, rank
        self.table = nn.Embedding(num_embeddings, rank, device=device, dtype=dtype)
        self.proj = nn.Parameter(torch.empty(rank, embedding_dim, device=device, dtype=dtype))
        nn.init.normal_(self.proj, 0.0, 1.0 / math.sqrt(rank))  # table ~ N(0, s) gives rows ~ N(0, s)

    @classmethod
    @torch.no_grad()
    def from_embedding(cls, embedding: nn.Embedding, rank: int,
                       svd: tuple[Tensor, Tensor, Tensor] | None = None) -> "FactorizedEmbedding":
        """The best rank-``rank`` approximation of ``embedding.weight`` in the Frobenius norm
        (truncated SVD in float64, the singular values split as square roots between the factors),
        stored in the embedding's dtype. ``svd``: the weight's float64 (U, S, Vh) if already computed."""
        w = embedding.weight
        u, s, vh = svd if svd is not None else _svd(w)
        out = cls(embedding.num_embeddings, embedding.embedding_dim, rank, w.device, w.dtype)
        root = s[:rank].sqrt()
        out.table.weight.copy_((u[:, :rank] * root[None, :]).to(w.dtype))
        out.proj.copy_((root[:, None] * vh[:rank]).to(w.dtype))
        out.train(embedding.training)
        return out

    def weight_product(self) -> Tensor:
        """The dense [vocab, dim] table the factors represent."""
        return self.table.weight @ self.proj

    def forward(self, idx: Tensor) -> Tensor:
        # The table may be stored in another precision than proj: a tied head quantized to 16 bits
        # converts the shared table (as GPT-2's dense embedding then looks up 16-bit rows).
        return self.table(idx).to(self.proj.dtype) @ self.proj

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, rank={self.rank}"


class TiedFactorizedHead(nn.Module):
    """The output head tied to a :class:`FactorizedEmbedding`: ``h @ (table @ proj)^T`` computed as
    ``out(h @ proj^T)`` (the dense product is never formed),
    where ``out`` is a bias-free ``nn.Linear(rank, vocab)`` whose weight *is* the embedding's table
    (one Parameter, as GPT-2's dense head shares its embedding), so quantization treats the pair as
    it treats a dense tied head. The embedding itself is referenced, not registered: ``proj``
    appears once in ``parameters()`` and the state dict, under the embedding's name."""

    def __init__(self, embedding: FactorizedEmbedding):
        super().__init__()
        object.__setattr__(self, "embedding", embedding)
        self.out = nn.Linear(embedding.rank, embedding.num_embeddings, bias=False,
                             device=embedding.proj.device, dtype=embedding.proj.dtype)
        self.out.weight = embedding.table.weight

    def forward(self, hidden: Tensor) -> Tensor:
        return self.out(F.linear(hidden, self.embedding.proj))

    def extra_repr(self) -> str:
        return f"tied to FactorizedEmbedding(rank={self.embedding.rank})"


def embedding_rank(weight: Tensor, config: EmbeddingFactorConfig,
                   svd: tuple[Tensor, Tensor, Tensor] | None = None) -> tuple[int, tuple | None]:
    """(rank, the float64 SVD when the energy rule computed it) for ``weight`` [vocab, dim] under
    ``config``; a ValueError naming ``rank`` when it exceeds min(vocab, dim)."""
    limit = min(weight.shape)
    if config.rank is not None:
        if config.rank > limit:
            raise ValueError(f"rank: {config.rank} exceeds min(vocab, dim) = {limit} of the embedding")
        return config.rank, svd
    svd = svd if svd is not None else _svd(weight)
    return energy_rank(svd[1], config.energy), svd


def factorize_embedding_(model: nn.Module, config: EmbeddingFactorConfig, filter_fn: FilterFn | None) -> int:
    """Factorize the tied embedding of every selected module implementing
    ``tied_embedding() -> nn.Embedding | None`` and ``set_embedding(FactorizedEmbedding)`` (GPT-2)
    when the factors hold fewer parameters; returns how many changed."""
    changed = found = 0
    for name, m in list(model.named_modules()):
        if not (callable(getattr(m, "tied_embedding", None)) and callable(getattr(m, "set_embedding", None))):
            continue
        found += 1
        if filter_fn is not None and not filter_fn(m, name):
            continue
        emb = m.tied_embedding()
        if emb is None:  # already factorized
            continue
        rank, svd = embedding_rank(emb.weight, config)
        vocab, dim = emb.weight.shape
        if rank * (vocab + dim) >= vocab * dim:
            continue
        m.set_embedding(FactorizedEmbedding.from_embedding(emb, rank, svd))
        changed += 1
    if not found:
        raise ValueError("model: no module with a tied token embedding (tied_embedding() and set_embedding(), "
                         "as GPT-2 has)")
    return changed
