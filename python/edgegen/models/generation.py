"""Generation with dynamic precision scaling: each step of a GPT-2-style model runs in low or full
precision by how confident the model's previous next-token distribution was."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edgegen.models.gpt2 import check_sampling, sample_next
from edgegen.quant.config import DynamicPrecisionConfig
from edgegen.quant.mixed import SwitchablePrecision, set_precision_


@torch.no_grad()
def generate_dynamic(model: nn.Module, idx: Tensor, max_new_tokens: int, config: DynamicPrecisionConfig,
                     greedy: bool = True, temperature: float = 1.0, top_k: int | None = None,
                     top_p: float | None = None, generator: torch.Generator | None = None) -> tuple[Tensor, dict]:
    """(``idx`` with ``max_new_tokens`` tokens appended, statistics) for a model prepared with
    ``quantize_(model, config)``. Step t runs the low-precision layers when step t-1's
    distribution was confident by ``config``'s rule (the prompt's step: only when every
    distribution counts as confident), else full precision; the KV cache holds each step's keys
    and values as that step computed them. Statistics: ``steps``, ``low_steps``,
    ``low_fraction`` and ``precision`` (per step, True = low). The model is left in full
    precision."""
    if not isinstance(config, DynamicPrecisionConfig):
        raise TypeError(f"config: expected a DynamicPrecisionConfig, got {type(config).__name__}")
    switches = [m for m in model.modules() if isinstance(m, SwitchablePrecision)]  # once, not per step
    if not switches:
        raise ValueError("model: no switchable layers; prepare it with quantize_(model, config) first")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens: expected an int >= 0, got {max_new_tokens!r}")
    check_sampling(greedy, temperature, top_p)
    low, past, used = config.always_low, None, []
    try:
        for _ in range(max_new_tokens):
            set_precision_(switches, low)
            used.append(low)
            logits, past = model(idx if past is None else idx[:, -1:], past_key_values=past, use_cache=True)
            logits = logits[:, -1, :].float()
            idx = torch.cat([idx, sample_next(logits, greedy, temperature, top_k, top_p, generator)], dim=1)
            low = config.confident(logits)
    finally:
        set_precision_(switches, False)
    n = len(used)
    return idx, {"steps": n, "low_steps": sum(used), "low_fraction": sum(used) / n if n else 0.0, "precision": used}
