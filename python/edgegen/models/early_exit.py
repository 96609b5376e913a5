"""Early exit for GPT-2 (in the manner of CALM, Schuster et al. 2022): exit heads after chosen
blocks, each a LayerNorm feeding the model's own tied output head, trained by distillation from
the full model's output; at inference a position stops at the first exit whose top-1 probability
exceeds a threshold.

**The KV cache of a position that exited.** A later position still attends to every earlier
position in every block, so blocks a position skipped still need its keys and values. edgegen
*copies the exit state forward* (CALM's state propagation): a position that exited after block
``l`` keeps its hidden state from there on, and each skipped block computes the position's keys
and values from that frozen state (its LayerNorm and QKV projection only: no attention, no MLP).
The alternative, computing the skipped blocks in full later, would restore the full model's keys
and values but spend the compute the exit saved. Compute is skipped only when every position of
the call has exited (decoding at batch 1, or a batch whose rows all left): otherwise the block runs
for all rows and the exited rows' results are discarded, so :class:`ExitStats` counts the blocks
each token used, not the compute spent. The same rule holds with and without the cache
(a full-sequence pass freezes exited positions block by block), so cached and uncached
generation produce the same tokens.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgegen.config import Config
from edgegen.models.gpt2 import GPT2, EosStop, _sample_next, check_eos, check_generation, check_sampling


def _check_threshold(value, name: str = "threshold") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}: expected a probability in [0, 1], got {value!r}")
    return float(value)


@dataclass
class EarlyExitConfig(Config):
    """Where GPT-2 may exit and when.

    ``layers``: exit after these blocks (1-based counts of blocks run, each in [1, n_layer - 1],
    increasing). ``threshold``: a position exits at the first exit whose top-1 next-token
    probability is strictly greater, in [0, 1] (1.0 never exits: the full model; 0.0 exits at the
    first exit whenever its top-1 probability is positive, which is always)."""

    layers: tuple[int, ...]
    threshold: float = 0.9

    def __post_init__(self):
        self.layers = tuple(self.layers)
        if not self.layers or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in self.layers):
            raise ValueError(f"layers: expected a non-empty list of block counts >= 1, got {self.layers!r}")
        if list(self.layers) != sorted(set(self.layers)):
            raise ValueError(f"layers: expected strictly increasing block counts, got {self.layers!r}")
        _check_threshold(self.threshold)


@dataclass
class ExitStats:
    """Where each position left: ``layers`` [B, T] int64, the number of blocks it ran (n_layer when
    it did not exit)."""

    layers: Tensor
    n_layer: int

    def mean_layers(self) -> float:
        return float(self.layers.double().mean()) if self.layers.numel() else 0.0

    def exit_fraction(self) -> float:
        """Fraction of positions that left before the last block."""
        return float((self.layers < self.n_layer).double().mean()) if self.layers.numel() else 0.0

    def histogram(self) -> dict[int, int]:
        """{blocks run: positions}."""
        values, counts = torch.unique(self.layers, return_counts=True)
        return {int(v): int(c) for v, c in zip(values, counts)}


class EarlyExitGPT2(nn.Module):
    """A :class:`~edgegen.models.GPT2` with exit heads (see the module docstring for the KV-cache
    rule). Made by :func:`add_early_exits`; ``model`` is the wrapped GPT-2 (shared, not copied)
    and ``exit_norms[str(l)]`` the LayerNorm of the exit after block ``l``, initialised from the
    final LayerNorm."""

    def __init__(self, model: GPT2, config: EarlyExitConfig):
        super().__init__()
        if not isinstance(model, GPT2):
            raise TypeError(f"model: expected an edgegen GPT2, got {type(model).__name__}")
        if not isinstance(config, EarlyExitConfig):
            raise TypeError(f"config: expected an EarlyExitConfig, got {type(config).__name__}")
        n = model.config.n_layer
        bad = [v for v in config.layers if not 1 <= v <= n - 1]
        if bad:
            raise ValueError(f"layers: {bad[0]} is outside [1, n_layer - 1 = {n - 1}]")
        self.model, self.exit_config = model, config
        self.exit_norms = nn.ModuleDict({str(v): copy.deepcopy(model.ln_f) for v in config.layers})

    @property
    def config(self):
        """The wrapped GPT-2's config (context length, vocabulary)."""
        return self.model.config

    def exit_logits(self, idx: Tensor) -> list[Tensor]:
        """Logits of every exit and of the final head, all positions through every block (what
        exit training needs): a list of [B, T, V], exits in order, the final head last."""
        x, out = self.model.embed(idx), []
        for i, block in enumerate(self.model.h):
            x, _ = block(x)
            if str(i + 1) in self.exit_norms:
                out.append(self.model.lm_head(self.exit_norms[str(i + 1)](x)))
        out.append(self.model.lm_head(self.model.ln_f(x)))
        return out

    def forward(self, idx: Tensor, past_key_values=None, use_cache: bool = False, threshold: float | None = None,
                return_stats: bool = False):
        """Logits [B, T, V], each position's from the exit it left at (or the final head); with
        ``use_cache`` also the cache, with ``return_stats`` an :class:`ExitStats`, in that order.
        ``threshold`` overrides the config's."""
        threshold = self.exit_config.threshold if threshold is None else _check_threshold(threshold)
        check = threshold < 1.0  # no probability exceeds 1: the exit heads are not computed at all
        m = self.model
        offset = past_key_values[0][0].shape[-2] if past_key_values else 0
        x = m.embed(idx, offset)
        B, T = idx.shape
        n = m.config.n_layer
        active = torch.ones(B, T, dtype=torch.bool, device=idx.device)
        layers = torch.full((B, T), n, dtype=torch.long, device=idx.device)
        logits, presents = None, []
        for i, block in enumerate(m.h):
            past = past_key_values[i] if past_key_values else None
            if bool(active.any()):
                y, present = block(x, past)
                x = torch.where(active[..., None], y, x)  # exited positions keep their state
            else:  # every position left: only the keys/values of the frozen states
                present = block.attn.keys_values(block.ln_1(x), past)
            presents.append(present)
            norm = self.exit_norms[str(i + 1)] if check and str(i + 1) in self.exit_norms else None
            if norm is not None and bool(active.any()):
                lg = m.lm_head(norm(x))
                leave = active & (lg.float().softmax(-1).amax(-1) > threshold)
                logits = lg if logits is None else torch.where(leave[..., None], lg, logits)
                layers = layers.masked_fill(leave, i + 1)
                active = active & ~leave
        if logits is None or bool(active.any()):  # None: an empty batch or sequence, [B, T, V] with B*T = 0
            final = m.lm_head(m.ln_f(x))
            logits = final if logits is None else torch.where(active[..., None], final, logits)
        out = (logits,)
        if use_cache:
            out += (presents,)
        if return_stats:
            out += (ExitStats(layers, n),)
        return out[0] if len(out) == 1 else out

    @torch.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, threshold: float | None = None, greedy: bool = True,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 use_cache: bool = True, generator: torch.Generator | None = None,
                 eos_token_id: int | None = None) -> tuple[Tensor, ExitStats]:
        """(``idx`` with ``max_new_tokens`` tokens appended, :class:`ExitStats` of the generated
        tokens' steps, [B, max_new_tokens]). Without the cache every step reruns the whole sequence
        with the same exit rule; the tokens are the same. ``eos_token_id`` ends rows and generation
        as in :meth:`GPT2.generate` (the statistics then cover the steps run). The arguments are
        checked as :meth:`GPT2.generate` checks them, before the first token (the prompt plus
        ``max_new_tokens`` must fit ``n_positions``)."""
        check_sampling(greedy, temperature, top_p, top_k)
        max_new_tokens = check_generation(idx, max_new_tokens, self.model.config.n_positions)
        stop = EosStop(idx, check_eos(eos_token_id, self.model.config.vocab_size))
        if threshold is not None:
            threshold = _check_threshold(threshold)
        past, used = None, []
        for _ in range(max_new_tokens):
            if stop.finished():
                break
            if use_cache:
                logits, past, stats = self(idx if past is None else idx[:, -1:], past_key_values=past,
                                           use_cache=True, threshold=threshold, return_stats=True)
            else:
                logits, stats = self(idx, threshold=threshold, return_stats=True)  # fits: checked above
            used.append(stats.layers[:, -1])
            idx = torch.cat([idx, stop(_sample_next(logits[:, -1, :].float(), greedy, temperature, top_k, top_p,
                                                   generator))], dim=1)
        layers = torch.stack(used, 1) if used else torch.empty(idx.shape[0], 0, dtype=torch.long, device=idx.device)
        return idx, ExitStats(layers, self.model.config.n_layer)


def add_early_exits(model: GPT2, config: EarlyExitConfig | dict) -> EarlyExitGPT2:
    """``model`` with exit heads after ``config.layers`` (an :class:`EarlyExitGPT2` sharing
    ``model``'s modules). Train the exits with :func:`train_exits`.

    Examples:
        >>> import torch
        >>> from edgegen.models import GPT2, GPT2Config
        >>> gpt = GPT2(GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=4, n_head=2)).eval()
        >>> ee = add_early_exits(gpt, EarlyExitConfig(layers=(1, 2)))
        >>> idx = torch.randint(0, 100, (1, 8))
        >>> torch.allclose(ee(idx, threshold=1.0), gpt(idx))   # threshold 1: never exits
        True
        >>> _, stats = ee(idx, threshold=0.0, return_stats=True)  # threshold 0: always the first exit
        >>> stats.mean_layers()
        1.0
    """
    if isinstance(config, dict):
        config = EarlyExitConfig.from_dict(config)
    return EarlyExitGPT2(model, config)


def train_exits(model: EarlyExitGPT2, batches: Iterable[Tensor], steps: int, lr: float = 1e-3,
                temperature: float = 2.0, train_backbone: bool = False, weight_decay: float = 0.0) -> list[float]:
    """Distil the full model's output into the exits: each step, the loss is the mean over exits of
    ``T^2 KL(p_full^T || p_exit^T)`` at ``temperature`` T, per token, where ``p_full`` is the full
    model's output as it was when training began. Trains the exit LayerNorms only (the backbone
    stays in eval mode and is its own teacher), unless ``train_backbone`` (then every parameter, in
    train mode, against a frozen copy taken at the start; the final head is also distilled from it
    so the full path stays close). ``batches``: token ids [B, T]; a list or tuple is cycled, any
    other iterable is read lazily and must yield ``steps`` batches. Returns the loss of each step;
    the model is left in eval mode, every parameter's ``requires_grad`` as it was."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: expected an int >= 1, got {steps!r}")
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or temperature <= 0:
        raise ValueError(f"temperature: expected > 0, got {temperature!r}")
    if isinstance(batches, (list, tuple)):
        if not batches:
            raise ValueError("batches: expected at least one batch of token ids")
        source = itertools.islice(itertools.cycle(batches), steps)
    else:
        source = iter(batches)
    flags = {p: p.requires_grad for p in model.parameters()}
    if train_backbone:
        teacher = copy.deepcopy(model.model).eval().requires_grad_(False)
        params = list(model.parameters())
    else:
        teacher = model.model  # frozen below: its output does not change while the exits train
        model.model.requires_grad_(False)
        params = list(model.exit_norms.parameters())
        for p in params:
            p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    losses = []
    if train_backbone:
        model.train()
    else:  # the backbone, its own teacher, in eval mode: no dropout in the targets
        model.model.eval()
        model.exit_norms.train()
    try:
        for step in range(steps):
            idx = next(source, None)
            if idx is None:
                raise ValueError(f"batches: ran out after {step} batches, {steps} steps asked")
            with torch.enable_grad():
                losses.append(_exit_step(model, teacher, opt, idx, temperature, train_backbone))
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
        model.eval()
    return losses


def _exit_step(model, teacher, opt, idx: Tensor, temperature: float, train_backbone: bool) -> float:
    with torch.no_grad():
        target = F.softmax(teacher(idx).float() / temperature, -1)
    outs = model.exit_logits(idx)
    heads = outs if train_backbone else outs[:-1]
    loss = sum(F.kl_div(F.log_softmax(o.float() / temperature, -1), target, reduction="batchmean")
               for o in heads) * temperature ** 2 / len(heads) / idx.shape[1]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())
