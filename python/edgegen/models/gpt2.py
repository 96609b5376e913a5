"""GPT-2 (Radford et al. 2019): learned positions, pre-LayerNorm blocks, tanh-GELU MLP, output
head tied to the token embedding. Loads and saves Hugging Face GPT-2 checkpoint folders
(``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``, their parameter names and
``Conv1D`` [in, out] weight layout), which doubles as a correctness check.

The attention is a pluggable module (``GPT2.set_attention``): dense scaled-dot-product
attention by default, so sparse attention can replace it without touching this file.
``forward(..., return_hidden=True)`` returns the final hidden states before the head, which is
what ``edgegen.distill.fused_linear_kd_loss`` consumes.
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgegen.attention.dense import DenseAttention, HeadLayout
from edgegen.models.config import ModelConfig
from edgegen.models.blocks import require_positive_ints
from edgegen.ops._args import is_int, is_real
from edgegen.reduce.embedding import FactorizedEmbedding, TiedFactorizedHead


@dataclass
class GPT2Config(ModelConfig, kind="gpt2"):
    """GPT-2's architecture: vocabulary, context length, width, depth and heads (GPT-2 small by
    default; :meth:`gpt2` and :meth:`student` name the two sizes edgegen uses), dropout, and the
    per-layer ``head_counts`` left by head pruning."""

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    dropout: float = 0.0
    layer_norm_epsilon: float = 1e-5
    # Heads kept in each layer after head pruning (None: n_head everywhere). The head size stays
    # n_embd // n_head.
    head_counts: tuple[int, ...] | None = None
    # MLP hidden width of each layer after feed-forward pruning (None: 4 * n_embd everywhere).
    inner_sizes: tuple[int, ...] | None = None
    # Rank of the factorized token embedding ([vocab, r] table @ [r, n_embd]; None: dense).
    embedding_rank: int | None = None

    def __post_init__(self):
        require_positive_ints(self, "vocab_size", "n_positions", "n_embd", "n_layer", "n_head")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not is_real(self.dropout) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout: expected a number in [0, 1), got {self.dropout!r}")
        if not is_real(self.layer_norm_epsilon) or not (math.isfinite(self.layer_norm_epsilon)
                                                        and self.layer_norm_epsilon > 0):
            raise ValueError(f"layer_norm_epsilon: expected a finite number > 0, got {self.layer_norm_epsilon!r}")
        if self.head_counts is not None:
            self.head_counts = tuple(self.head_counts)
            if len(self.head_counts) != self.n_layer or not all(
                    isinstance(h, int) and not isinstance(h, bool) and 1 <= h <= self.n_head
                    for h in self.head_counts):
                raise ValueError(f"head_counts: expected {self.n_layer} ints in [1, {self.n_head}], "
                                 f"got {self.head_counts!r}")
        if self.inner_sizes is not None:
            self.inner_sizes = tuple(self.inner_sizes)
            if len(self.inner_sizes) != self.n_layer or not all(
                    isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in self.inner_sizes):
                raise ValueError(f"inner_sizes: expected {self.n_layer} ints >= 1, got {self.inner_sizes!r}")
        if self.embedding_rank is not None and (
                isinstance(self.embedding_rank, bool) or not isinstance(self.embedding_rank, int)
                or not 1 <= self.embedding_rank <= min(self.n_embd, self.vocab_size)):
            raise ValueError(f"embedding_rank: expected an int in [1, {min(self.n_embd, self.vocab_size)}] or None, "
                             f"got {self.embedding_rank!r}")

    def heads(self, layer: int) -> int:
        return self.n_head if self.head_counts is None else self.head_counts[layer]

    def inner(self, layer: int) -> int:
        """The MLP hidden width of ``layer``."""
        return 4 * self.n_embd if self.inner_sizes is None else self.inner_sizes[layer]

    @classmethod
    def gpt2(cls) -> "GPT2Config":
        """GPT-2 small, the teacher: 12 layers, 768 hidden, 12 heads (124,439,808 parameters)."""
        return cls()

    @classmethod
    def student(cls) -> "GPT2Config":
        """The distillation student: 6 layers, 384 hidden, 6 heads."""
        return cls(n_embd=384, n_layer=6, n_head=6)

    def build(self):
        return GPT2(self)

    # Hugging Face's config.json uses the same names for all but dropout.
    def to_hf(self) -> dict:
        if self.embedding_rank is not None:
            raise ValueError("embedding_rank: a GPT-2 with a factorized embedding cannot be represented by Hugging "
                             "Face's GPT2LMHeadModel; save it with a state dict instead")
        if self.head_counts is not None and any(h != self.n_head for h in self.head_counts):
            raise ValueError("head_counts: a head-pruned GPT-2 has per-layer head counts, which Hugging Face's "
                             "GPT2LMHeadModel cannot represent; save it with torch.save / a state dict instead")
        inner = sorted(set(self.inner_sizes or ()))
        if len(inner) > 1:
            raise ValueError("inner_sizes: a feed-forward-pruned GPT-2 with per-layer MLP widths cannot be represented "
                             "by Hugging Face's GPT2LMHeadModel (one n_inner); save it with a state dict instead")
        return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_inner": inner[0] if inner else None,
                "vocab_size": self.vocab_size, "n_positions": self.n_positions, "n_ctx": self.n_positions,
                "n_embd": self.n_embd, "n_layer": self.n_layer, "n_head": self.n_head,
                "layer_norm_epsilon": self.layer_norm_epsilon, "activation_function": "gelu_new",
                "resid_pdrop": self.dropout, "embd_pdrop": self.dropout, "attn_pdrop": self.dropout,
                "tie_word_embeddings": True}

    @classmethod
    def from_hf(cls, d: dict) -> "GPT2Config":
        act = d.get("activation_function", "gelu_new")
        if act != "gelu_new":
            raise ValueError(f"config.json: activation_function {act!r} is not GPT-2's 'gelu_new'")
        # Variants of GPT2LMHeadModel that edgegen's GPT2 (tied head, scores scaled by 1/sqrt(head_dim)
        # only) would load without an error but compute differently.
        for key, default, meaning in (
                ("tie_word_embeddings", True, "an output head separate from the token embedding"),
                ("scale_attn_weights", True, "attention scores not scaled by 1/sqrt(head_dim)"),
                ("scale_attn_by_inverse_layer_idx", False, "attention scores also scaled by 1/(layer + 1)")):
            if d.get(key, default) != default:
                raise ValueError(f"config.json: {key} is {d[key]!r} ({meaning}), which edgegen's GPT2 cannot "
                                 f"represent; expected {default!r}")
        return cls(vocab_size=d["vocab_size"], n_positions=d.get("n_positions", d.get("n_ctx", 1024)),
                   n_embd=d["n_embd"], n_layer=d["n_layer"], n_head=d["n_head"],
                   layer_norm_epsilon=d.get("layer_norm_epsilon", 1e-5),
                   inner_sizes=None if d.get("n_inner") in (None, 4 * d["n_embd"]) else (d["n_inner"],) * d["n_layer"])


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPT2Config, n_head: int | None = None):
        super().__init__()
        self.n_head = cfg.n_head if n_head is None else n_head
        self.head_dim = cfg.n_embd // cfg.n_head
        inner = self.n_head * self.head_dim
        self.c_attn = nn.Linear(cfg.n_embd, 3 * inner)
        self.c_proj = nn.Linear(inner, cfg.n_embd)
        self.attention: nn.Module = DenseAttention(cfg.dropout)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def _heads(self, x: Tensor, past: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v [B, heads, T, head_dim] of ``x``, the keys and values after ``past``'s."""
        B, T, _ = x.shape
        q, k, v = self.c_attn(x).split(self.n_head * self.head_dim, dim=2)
        q, k, v = (t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=-2), torch.cat([past[1], v], dim=-2)
        return q, k, v

    def keys_values(self, x: Tensor, past: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """The (key, value) cache entry ``forward`` would return for ``x``, without the attention."""
        return self._heads(x, past)[1:]

    def forward(self, x: Tensor, past: tuple[Tensor, Tensor] | None = None):
        B, T, _ = x.shape
        q, k, v = self._heads(x, past)
        y = self.attention(q, k, v, q_offset=k.shape[-2] - T)
        y = y.transpose(1, 2).contiguous().view(B, T, self.n_head * self.head_dim)
        return self.resid_dropout(self.c_proj(y)), (k, v)

    def head_layout(self) -> HeadLayout:
        return HeadLayout(self.c_attn, self.c_proj, self.n_head, self.head_dim)

    def set_head_count(self, n_head: int) -> None:
        self.n_head = n_head


class MLP(nn.Module):
    def __init__(self, cfg: GPT2Config, inner: int | None = None):
        super().__init__()
        inner = 4 * cfg.n_embd if inner is None else inner
        self.c_fc = nn.Linear(cfg.n_embd, inner)
        self.c_proj = nn.Linear(inner, cfg.n_embd)
        self.dropout = nn.Dropout(cfg.dropout)

    def ffn_layout(self) -> tuple[nn.Linear, nn.Linear]:
        """(the Linear into the hidden units, the Linear out of them): what feed-forward pruning
        masks and shrinks."""
        return self.c_fc, self.c_proj

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, cfg: GPT2Config, layer: int = 0):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.attn = CausalSelfAttention(cfg, cfg.heads(layer))
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.mlp = MLP(cfg, cfg.inner(layer))

    def forward(self, x: Tensor, past=None):
        a, present = self.attn(self.ln_1(x), past)
        x = x + a
        return x + self.mlp(self.ln_2(x)), present


def check_sampling(greedy: bool, temperature: float, top_p: float | None, top_k: int | None = None) -> None:
    """ValueError naming the argument unless the sampling settings are usable: ``temperature`` a
    finite number >= 0, and > 0 when sampling (0 is not an alias of ``greedy``: pass
    ``greedy=True`` for the argmax, which ignores the temperature); ``top_k`` None or an int >= 1;
    ``top_p`` None or a number in (0, 1] (1 keeps every token)."""
    if not is_real(temperature) or not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature: expected a finite number >= 0, got {temperature!r}")
    if temperature == 0 and not greedy:
        raise ValueError(f"temperature: expected > 0 when sampling (or greedy=True for the argmax), "
                         f"got {temperature!r}")
    if top_k is not None and (not is_int(top_k) or top_k < 1):
        raise ValueError(f"top_k: expected None or an int >= 1, got {top_k!r}")
    if top_p is not None and (not is_real(top_p) or not 0 < top_p <= 1):
        raise ValueError(f"top_p: expected None or a number in (0, 1], got {top_p!r}")


def check_generation(idx, max_new_tokens, n_positions: int | None) -> int:
    """The checks every ``generate`` makes before it produces a token: ``idx`` int64 token ids
    [B, T] with T >= 1 (B may be 0), ``max_new_tokens`` an int >= 0, and, when the model's
    context ``n_positions`` is known, T + max_new_tokens <= n_positions (the whole result fits the
    context, so cached and uncached generation see the same prefix). Returns max_new_tokens."""
    if not isinstance(idx, Tensor) or idx.dim() != 2 or idx.dtype != torch.long:
        got = f"{idx.dtype} {tuple(idx.shape)}" if isinstance(idx, Tensor) else type(idx).__name__
        raise ValueError(f"idx: expected int64 token ids of shape [B, T], got {got}")
    if idx.shape[1] < 1:
        raise ValueError(f"idx: expected a prompt of at least one token per row, got shape {tuple(idx.shape)}")
    if not is_int(max_new_tokens) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens: expected an int >= 0, got {max_new_tokens!r}")
    max_new_tokens = int(max_new_tokens)
    T = idx.shape[1]
    if n_positions is not None and T > n_positions:
        raise ValueError(f"idx: the prompt length ({T}) alone exceeds the model's context n_positions "
                         f"({n_positions}), with max_new_tokens ({max_new_tokens}) still to come")
    if n_positions is not None and T + max_new_tokens > n_positions:
        raise ValueError(f"max_new_tokens: the prompt length ({T}) plus max_new_tokens ({max_new_tokens}) is "
                         f"{T + max_new_tokens}, beyond the model's context n_positions ({n_positions}); "
                         f"expected at most {n_positions - T} new tokens for this prompt")
    return max_new_tokens


def check_eos(eos_token_id, vocab_size: int | None) -> int | None:
    """``eos_token_id`` checked: None (generate every token asked for) or a token id in
    [0, vocab_size)."""
    if eos_token_id is None:
        return None
    if not is_int(eos_token_id) or eos_token_id < 0 or (vocab_size is not None and eos_token_id >= vocab_size):
        bound = f"[0, {vocab_size})" if vocab_size is not None else ">= 0"
        raise ValueError(f"eos_token_id: expected None or a token id in {bound}, got {eos_token_id!r}")
    return int(eos_token_id)


class EosStop:
    """End-of-sequence bookkeeping shared by the generation loops: a row that has produced
    ``eos_token_id`` is continued with it (padding), and generation ends once every row has
    (at once for a batch of no rows). ``eos_token_id`` None: never ends early."""

    def __init__(self, idx: Tensor, eos_token_id: int | None):
        self.eos = eos_token_id
        self.done = torch.zeros(idx.shape[0], 1, dtype=torch.bool, device=idx.device)

    def finished(self) -> bool:
        return self.eos is not None and bool(self.done.all())

    def __call__(self, nxt: Tensor) -> Tensor:
        """``nxt`` [B, 1] with the finished rows' tokens replaced by the end-of-sequence token."""
        if self.eos is None:
            return nxt
        nxt = nxt.masked_fill(self.done, self.eos)
        self.done |= nxt == self.eos
        return nxt


def nucleus_filter(logits: Tensor, top_p: float) -> Tensor:
    """``logits`` [..., V] with the tokens outside the nucleus set to -inf (Holtzman et al. 2020):
    with the tokens sorted by probability, a token is dropped when those before it already hold
    ``top_p`` of the mass, so the smallest set reaching ``top_p`` is kept (Hugging Face's rule).
    ``top_p >= 1`` keeps every token. The probabilities and their running sum are float64: in
    float32 the running sum over a 50k vocabulary rounds past ``top_p`` (even past 1) before the
    tail and drops tokens that belong to the nucleus."""
    if top_p >= 1:
        return logits
    srt, order = torch.sort(logits, descending=True)
    probs = srt.double().softmax(-1)
    before = F.pad(probs.cumsum(-1)[..., :-1], (1, 0))  # mass of the tokens strictly before each
    return logits.scatter(-1, order, srt.masked_fill(before >= top_p, float("-inf")))


def sample_next(logits: Tensor, greedy: bool = False, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> Tensor:
    """The next token [B, 1] from last-position logits [B, V]: the argmax (``greedy``), or a sample
    at ``temperature`` after optional top-k and nucleus (top-p, see :func:`nucleus_filter`)
    filtering. The settings are checked as :func:`check_sampling` does."""
    check_sampling(greedy, temperature, top_p, top_k)
    return _sample_next(logits, greedy, temperature, top_k, top_p, generator)


def _sample_next(logits: Tensor, greedy: bool, temperature: float, top_k: int | None, top_p: float | None,
                 generator: torch.Generator | None) -> Tensor:
    """:func:`sample_next` without the checks: for generation loops that checked the settings
    once before the first token."""
    if greedy:
        return logits.argmax(-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(int(top_k), logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        logits = nucleus_filter(logits, top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)


class GPT2(nn.Module):
    """GPT-2 with a tied output head: ``forward(idx)`` -> logits [B, T, vocab] (see the module
    docstring for the cache, hidden states and Hugging Face loading)."""

    def __init__(self, config: GPT2Config):
        super().__init__()
        self.config = config
        self.wte: nn.Module = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.lm_head: nn.Module = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2's scaled init of residual projections
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * config.n_layer))
        if config.embedding_rank is not None:
            self._install_embedding(FactorizedEmbedding(config.vocab_size, config.n_embd, config.embedding_rank))
            nn.init.normal_(self.wte.table.weight, 0.0, 0.02)

    @staticmethod
    def _init(m: nn.Module):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)

    def example_inputs(self, batch: int = 2) -> tuple[Tensor]:
        """Inputs for tracing (e.g. edgegen.prune, export): random token ids [batch, min(16, context)]."""
        n = min(16, self.config.n_positions)
        return (torch.randint(0, self.config.vocab_size, (batch, n), device=self.wpe.weight.device),)

    def num_parameters(self) -> int:
        """Distinct parameters (the tied head counted once)."""
        return sum(p.numel() for p in self.parameters())

    def heads_changed(self) -> None:
        """Record the per-layer head counts in the config after heads were removed."""
        self.config = replace(self.config, head_counts=tuple(b.attn.n_head for b in self.h))

    def ffn_changed(self) -> None:
        """Record the per-layer MLP widths in the config after hidden units were removed."""
        self.config = replace(self.config, inner_sizes=tuple(b.mlp.c_fc.out_features for b in self.h))

    def tied_embedding(self) -> nn.Embedding | None:
        """The token embedding the output head shares (None once it is factorized)."""
        return None if isinstance(self.wte, FactorizedEmbedding) else self.wte

    def set_embedding(self, embedding: FactorizedEmbedding) -> None:
        """Replace the token embedding by ``embedding`` (same vocabulary and width), tie the head to
        it and record its rank in the config: what ``reduce_(model, EmbeddingFactorConfig(...))``
        calls."""
        if not isinstance(embedding, FactorizedEmbedding):
            raise TypeError(f"embedding: expected a FactorizedEmbedding, got {type(embedding).__name__}")
        if (embedding.num_embeddings, embedding.embedding_dim) != (self.config.vocab_size, self.config.n_embd):
            raise ValueError(f"embedding: expected {self.config.vocab_size} x {self.config.n_embd}, got "
                             f"{embedding.num_embeddings} x {embedding.embedding_dim}")
        self._install_embedding(embedding)
        self.config = replace(self.config, embedding_rank=embedding.rank)

    def _install_embedding(self, embedding: FactorizedEmbedding) -> None:
        self.wte = embedding
        self.lm_head = TiedFactorizedHead(embedding)

    def head_operands(self, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """(x, weight) with logits ``x @ weight^T`` for final hidden states: (hidden, the tied table)
        for a dense embedding, (hidden projected to the rank, the [vocab, r] table) for a factorized
        one. What ``fused_linear_kd_loss`` takes."""
        head = self.lm_head.out if isinstance(self.lm_head, TiedFactorizedHead) else self.lm_head
        if not isinstance(head, nn.Linear):
            raise ValueError(f"model: the output head is a {type(head).__name__}, not a float Linear; head_operands "
                             "(fused distillation) needs the float head, before quantization")
        if isinstance(self.lm_head, TiedFactorizedHead):
            return F.linear(hidden, self.wte.proj), head.weight
        return hidden, head.weight

    def embed(self, idx: Tensor, offset: int = 0) -> Tensor:
        """Token plus position embeddings (after dropout) of ``idx`` [B, T] at positions ``offset``
        onwards, the ids and context checked: the input of the first block."""
        if idx.dtype != torch.long or idx.dim() != 2:
            raise ValueError(f"idx: expected int64 token ids of shape [B, T], got {idx.dtype} {tuple(idx.shape)}")
        T = idx.shape[1]
        # Checks of the input, not the model's computation: skipped while tracing (an ONNX export
        # checks its example before), where each would be a warning about baked-in control flow.
        if not torch.jit.is_tracing():
            if offset + T > self.config.n_positions:
                raise ValueError(f"idx: {offset + T} positions exceed the context of {self.config.n_positions}")
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.config.vocab_size):
                raise ValueError(f"idx: token ids must lie in [0, {self.config.vocab_size})")
        pos = torch.arange(offset, offset + T, device=idx.device)
        return self.drop(self.wte(idx) + self.wpe(pos))

    def set_attention(self, factory) -> None:
        """Replace every block's attention module: ``factory(layer_index) -> nn.Module`` taking
        ``(q, k, v, q_offset)`` like :class:`DenseAttention`."""
        for i, block in enumerate(self.h):
            block.attn.attention = factory(i)

    def forward(self, idx: Tensor, past_key_values=None, use_cache: bool = False,
                return_hidden: bool = False):
        """Logits [B, T, V] (or hidden states [B, T, C] with ``return_hidden``); with
        ``use_cache`` also the per-layer (key, value) cache to pass back as ``past_key_values``."""
        x = self.embed(idx, past_key_values[0][0].shape[-2] if past_key_values else 0)
        presents = []
        for i, block in enumerate(self.h):
            x, present = block(x, past_key_values[i] if past_key_values else None)
            presents.append(present)
        x = self.ln_f(x)
        out = x if return_hidden else self.lm_head(x)
        return (out, presents) if use_cache else out

    @torch.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, greedy: bool = False,
                 use_cache: bool = True, generator: torch.Generator | None = None,
                 eos_token_id: int | None = None) -> Tensor:
        """Append ``max_new_tokens`` tokens: greedy, or sampled at ``temperature`` with optional
        top-k and nucleus (top-p) filtering. With and without the cache the tokens are the same.
        With ``eos_token_id``, a row that produces it is padded with it from then on, and
        generation stops early once every row has (the result is then shorter). Everything is
        checked before the first token (:func:`check_sampling`, :func:`check_generation`,
        :func:`check_eos`): the prompt plus ``max_new_tokens`` must fit ``n_positions``."""
        check_sampling(greedy, temperature, top_p, top_k)
        max_new_tokens = check_generation(idx, max_new_tokens, self.config.n_positions)
        stop = EosStop(idx, check_eos(eos_token_id, self.config.vocab_size))
        past = None
        for _ in range(max_new_tokens):
            if stop.finished():
                break
            if use_cache:
                inp = idx if past is None else idx[:, -1:]
                logits, past = self(inp, past_key_values=past, use_cache=True)
            else:
                logits = self(idx)  # fits: checked above, so no prefix is ever cropped
            nxt = _sample_next(logits[:, -1, :].float(), greedy, temperature, top_k, top_p, generator)
            idx = torch.cat([idx, stop(nxt)], dim=1)
        return idx

    # ------------------------------------------------------------------ Hugging Face format
    _CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")

    def _hf_to_local(self, name: str) -> str:
        return name[len("transformer."):] if name.startswith("transformer.") else name

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "GPT2":
        path = Path(path)
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise FileNotFoundError(f"{cfg_file}: a Hugging Face GPT-2 folder needs config.json")
        model = cls(GPT2Config.from_hf(json.loads(cfg_file.read_text())))
        if (path / "model.safetensors").is_file():
            from safetensors.torch import load_file

            state = load_file(str(path / "model.safetensors"))
        elif (path / "pytorch_model.bin").is_file():
            state = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
        else:
            raise FileNotFoundError(f"{path}: expected model.safetensors or pytorch_model.bin")
        model.load_hf_state_dict(state, source=str(path))
        return model

    def load_hf_state_dict(self, state: dict, source: str = "state dict") -> None:
        if self.config.embedding_rank is not None:
            raise ValueError("embedding_rank: Hugging Face GPT-2 checkpoints hold a dense embedding; load into a "
                             "dense GPT2 and factorize it with reduce_(model, EmbeddingFactorConfig(...))")
        own = dict(self.state_dict())
        own.pop("lm_head.weight")  # tied to wte
        converted, head = {}, None
        for name, t in state.items():
            local = self._hf_to_local(name)
            if local.endswith((".attn.bias", ".attn.masked_bias")):
                continue  # causal-mask buffers of older checkpoints
            if local == "lm_head.weight":
                head = t  # the tied head: checked against wte below
                continue
            if local.endswith(self._CONV1D):
                t = t.t()
            converted[local] = t
        missing = sorted(set(own) - set(converted))
        extra = sorted(set(converted) - set(own))
        if missing or extra:
            raise KeyError(f"{source}: checkpoint does not match GPT-2 {self.config.n_layer}L/"
                           f"{self.config.n_embd}: missing {missing[:5]}, unexpected {extra[:5]}")
        for name, t in converted.items():
            if t.shape != own[name].shape:
                raise ValueError(f"{source}: {name} has shape {tuple(t.shape)}, expected {tuple(own[name].shape)}")
        if head is not None and not torch.equal(head, converted["wte.weight"]):
            raise ValueError(f"{source}: lm_head.weight differs from the token embedding wte.weight (an untied "
                             "output head), which edgegen's GPT2 (head tied to wte) cannot represent")
        self.load_state_dict(converted, strict=False)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write config.json and model.safetensors in Hugging Face's GPT2LMHeadModel layout. The
        model is checked before anything is written: a model GPT2LMHeadModel cannot represent
        (factorized embedding, per-layer head counts or MLP widths, quantized layers, sliding-window
        attention) is refused.
        A magnitude-pruned model is written with its masks baked in (the model keeps them). Each
        file is replaced atomically."""
        from edgegen._atomic import write_text
        from edgegen.quant import INTEGER_LAYERS, LowPrecision, QATModule, SwitchablePrecision
        from edgegen.tensor_files import write_safetensors

        hf_config = self.config.to_hf()
        kinds = (*INTEGER_LAYERS, LowPrecision, QATModule, SwitchablePrecision)
        found = sorted({type(m).__name__ for m in self.modules() if isinstance(m, kinds)})
        if found:
            raise ValueError(f"model: holds quantized layers ({', '.join(found)}) that Hugging Face's "
                             "GPT2LMHeadModel cannot hold; save the float model, or this one with "
                             "edgegen.quant.save_quantized")
        from edgegen.attention.modules import SparseSelfAttention

        # A window covering the whole context is dense causal attention: GPT2LMHeadModel's.
        sparse = [(n, m) for n, m in self.named_modules() if isinstance(m, SparseSelfAttention)
                  and m.window is not None and m.window < self.config.n_positions]
        if sparse:  # GPT2LMHeadModel would run the weights with dense attention: another model
            name, m = sparse[0]
            raise ValueError(f"model: holds sliding-window attention ({name!r}: window={m.window}, num_global="
                             f"{m.num_global}), which Hugging Face's GPT2LMHeadModel (dense attention) cannot "
                             "hold; save it with edgegen (torch.save of the state dict) or restore dense attention")
        model = self
        if any(torch.nn.utils.parametrize.is_parametrized(m) for m in self.modules()):
            from edgegen.prune import finalize_

            model = finalize_(copy.deepcopy(self))  # masks baked in: pruned weights are exact zeros
        own = model.state_dict()
        state = {}
        for name, t in own.items():
            if name == "lm_head.weight":
                if not torch.equal(t, own["wte.weight"]):
                    raise ValueError("model: lm_head.weight differs from the token embedding wte.weight (an untied "
                                     "output head), which Hugging Face's GPT2LMHeadModel (tied head) cannot hold")
                continue  # tied: Hugging Face restores it from wte
            t = t.t() if name.endswith(self._CONV1D) else t
            state["transformer." + name] = t.detach().contiguous().cpu()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        write_safetensors(state, path / "model.safetensors", {"format": "pt"})
        write_text(path / "config.json", json.dumps(hf_config, indent=2))
