"""Generation with dynamic precision scaling: each step of a GPT-2-style model runs in low or full
precision by how confident the model's previous next-token distribution was."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edgegen.models.gpt2 import EosStop, _sample_next, check_eos, check_generation, check_sampling
from edgegen.quant.config import DynamicPrecisionConfig
from edgegen.quant.mixed import SwitchablePrecision, set_precision_


def _switches(model: nn.Module, config) -> list[SwitchablePrecision]:
    """The model's switchable layers, collected once (not per step), with the argument checks."""
    if not isinstance(config, DynamicPrecisionConfig):
        raise TypeError(f"config: expected a DynamicPrecisionConfig, got {type(config).__name__}")
    switches = [m for m in model.modules() if isinstance(m, SwitchablePrecision)]
    if not switches:
        raise ValueError("model: no switchable layers; prepare it with quantize_(model, config) first")
    return switches


def _n_positions(model: nn.Module) -> int | None:
    """The model's context length, when its config names one (GPT-2's ``n_positions``)."""
    n = getattr(getattr(model, "config", None), "n_positions", None)
    return n if isinstance(n, int) else None


@torch.no_grad()
def generate_dynamic(model: nn.Module, idx: Tensor, max_new_tokens: int, config: DynamicPrecisionConfig,
                     greedy: bool = True, temperature: float = 1.0, top_k: int | None = None,
                     top_p: float | None = None, generator: torch.Generator | None = None,
                     eos_token_id: int | None = None) -> tuple[Tensor, dict]:
    """(``idx`` with ``max_new_tokens`` tokens appended, statistics) for a model prepared with
    ``quantize_(model, config)``. Step t runs the low-precision layers when step t-1's
    distribution was confident by ``config``'s rule (the prompt's step: only when every
    distribution counts as confident), else full precision; the KV cache holds each step's keys
    and values as that step computed them. Statistics: ``steps``, ``low_steps``,
    ``low_fraction`` and ``precision`` (per step, True = low). The model is left in full
    precision. ``eos_token_id`` ends rows and generation as in ``GPT2.generate`` (the statistics
    then count the steps run). The arguments are checked as ``GPT2.generate`` checks them, before
    the first token (the prompt plus ``max_new_tokens`` must fit the model's ``n_positions``)."""
    switches = _switches(model, config)
    check_sampling(greedy, temperature, top_p, top_k)
    max_new_tokens = check_generation(idx, max_new_tokens, _n_positions(model))
    stop = EosStop(idx, check_eos(eos_token_id, getattr(getattr(model, "config", None), "vocab_size", None)))
    low, past, used = config.always_low, None, []
    try:
        for _ in range(max_new_tokens):
            if stop.finished():
                break
            set_precision_(switches, low)
            used.append(low)
            logits, past = model(idx if past is None else idx[:, -1:], past_key_values=past, use_cache=True)
            logits = logits[:, -1, :].float()
            idx = torch.cat([idx, stop(_sample_next(logits, greedy, temperature, top_k, top_p, generator))], dim=1)
            low = config.confident(logits)
    finally:
        set_precision_(switches, False)
    n = len(used)
    return idx, {"steps": n, "low_steps": sum(used), "low_fraction": sum(used) / n if n else 0.0, "precision": used}


@torch.no_grad()
def dynamic_nll(model: nn.Module, tokens: Tensor, config: DynamicPrecisionConfig, context: int = 128) -> dict:
    """Teacher-forced scoring under dynamic precision: the token sequence is read one token at a
    time with the KV cache, in windows of ``context`` tokens (each a fresh cache), and each step
    runs in the precision :func:`generate_dynamic` would choose from the previous step's
    distribution (a window's first step: low only when every distribution counts as confident).
    Returns ``nll`` (mean negative log-likelihood, nats per scored token, float64), ``ppl``,
    ``tokens`` scored and ``low_fraction`` of the steps. The model is left in full precision."""
    switches = _switches(model, config)
    if not isinstance(tokens, Tensor) or not (tokens.dim() == 1 or (tokens.dim() == 2 and tokens.shape[0] == 1)):
        raise ValueError(f"tokens: expected one sequence of token ids, [T] or [1, T], got "
                         f"{tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__}")
    ids = tokens.reshape(-1)
    if ids.dtype not in (torch.int64, torch.int32) or ids.numel() < 2:
        raise ValueError(f"tokens: expected at least 2 integer token ids, got {ids.dtype} of {ids.numel()}")
    if isinstance(context, bool) or not isinstance(context, int) or context < 2:
        raise ValueError(f"context: expected an int >= 2, got {context!r}")
    n_positions = _n_positions(model)
    if n_positions is not None and context > n_positions:
        raise ValueError(f"context: expected at most the model's n_positions ({n_positions}), got {context}")
    ids = ids.long()
    total, scored, low_steps, steps = 0.0, 0, 0, 0
    try:
        for start in range(0, ids.numel() - 1, context - 1):
            window = ids[start:start + context]
            if window.numel() < 2:
                break
            low, past = config.always_low, None
            for t in range(window.numel() - 1):
                set_precision_(switches, low)
                logits, past = model(window[None, t:t + 1], past_key_values=past, use_cache=True)
                logits = logits[:, -1, :].float()
                total -= float(torch.log_softmax(logits.double(), -1)[0, window[t + 1]])
                scored += 1
                low_steps += low
                steps += 1
                low = config.confident(logits)
    finally:
        set_precision_(switches, False)
    nll = total / scored
    return {"nll": nll, "ppl": float(torch.tensor(nll, dtype=torch.float64).exp()), "tokens": scored,
            "low_fraction": low_steps / steps}
