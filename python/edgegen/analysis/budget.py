"""A modular reduction plan (``MPRFConfig``) chosen for a parameter or latency budget: a greedy
walk up each group's ladder of settings, taking at every step the move that saves the most cost
per unit of score lost, until the budget is met."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from edgegen.prune.config import FFNConfig, HeadConfig
from edgegen.reduce import EmbeddingFactorConfig, LowRankConfig, MPRFConfig, apply_plan_
from edgegen.transform import FilterFn

GROUPS = ("heads", "ffn", "rank", "embedding")


def default_ladders(model: nn.Module | None = None) -> dict[str, list]:
    """Each group's settings from mild to strong: a quarter, half and three quarters of the heads
    and hidden units; each Linear layer's rank at 1/2, 1/3, 1/4 of its largest possible rank; the
    embedding at ranks d/2, d/4, d/8 for a model with ``config.n_embd`` = d (GPT-2), else at 90 /
    75 / 50 % retained singular-value energy. (A trained embedding keeps most of its energy in a
    few directions, so an energy rule cuts it to a very low rank.)"""
    ladders = {"heads": [HeadConfig(a) for a in (0.25, 0.5, 0.75)],
               "ffn": [FFNConfig(a) for a in (0.25, 0.5, 0.75)],
               "rank": [LowRankConfig(fraction=f) for f in (1 / 2, 1 / 3, 1 / 4)],
               "embedding": [EmbeddingFactorConfig(energy=e) for e in (0.9, 0.75, 0.5)]}
    d = getattr(getattr(model, "config", None), "n_embd", None)
    if isinstance(d, int) and d >= 8:
        ladders["embedding"] = [EmbeddingFactorConfig(rank=max(1, d // k)) for k in (2, 4, 8)]
    return ladders


@dataclass
class PlanStep:
    """One evaluated plan: its config (None: the model unreduced), cost (parameters or median
    latency in ms), score, whether the walk took it, and the error when it could not be applied."""

    config: MPRFConfig | None
    cost: float
    score: float
    taken: bool
    error: str = ""  # why it was not a candidate: not applicable (cost, score NaN), or a score not finite


@dataclass
class ReductionPlan:
    """What :func:`plan_reduction` chose: ``config`` (apply with ``reduce_``), its ``cost`` and
    ``score``, the unreduced model's, the ``budget`` and its unit, the score's ``score_label`` and
    every plan evaluated on the way (``steps``)."""

    config: MPRFConfig
    cost: float
    score: float
    base_cost: float
    base_score: float
    budget: float
    unit: str
    score_label: str
    steps: list[PlanStep] = field(default_factory=list)


def fidelity_score(reference: nn.Module, inputs: tuple) -> Callable[[nn.Module], float]:
    """A score for models reduced from ``reference``: minus the mean KL divergence (nats per output
    row) from the reference's output distribution to the candidate's on ``inputs`` (0 is perfect).
    It measures fidelity to the unreduced model, not quality on data, and needs a model whose
    output is a floating-point tensor of logits (classes on the last axis, as GPT-2's); for any
    other model (a VAE's dict of outputs, say) it raises a ValueError asking for ``score=``."""
    ref = F.log_softmax(_logits(reference, inputs, "reference").double(), -1)

    def score(model: nn.Module) -> float:
        out = F.log_softmax(_logits(model, inputs, "model").double(), -1)
        return -float(F.kl_div(out, ref, log_target=True, reduction="sum") / ref[..., 0].numel())

    return score


def _logits(model: nn.Module, inputs: tuple, what: str) -> torch.Tensor:
    out = _eval_call(model, inputs)
    if not isinstance(out, torch.Tensor) or not out.is_floating_point() or out.dim() < 1 or out.shape[-1] < 2:
        got = (f"a {out.dtype} tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor)
               else f"a {type(out).__name__}")
        raise ValueError(f"score: the default fidelity score compares output logits (a floating-point tensor with "
                         f"classes on the last axis), but {type(model).__name__} ({what}) returns {got}; pass "
                         "score= (a function model -> float, higher is better, e.g. minus a validation loss)")
    return out


def _eval_call(model: nn.Module, inputs: tuple):
    """``model(*inputs)`` in eval mode without gradients, each module's mode restored afterwards."""
    from edgegen.prune.graph import eval_mode

    with torch.no_grad(), eval_mode(model):
        return model(*inputs)


def _config(levels: dict[str, int], ladders: dict[str, list]) -> MPRFConfig | None:
    chosen = {g: ladders[g][levels[g] - 1] for g in GROUPS if levels[g] > 0}
    return MPRFConfig(**chosen) if chosen else None


def plan_reduction(model: nn.Module, max_params: int | None = None, max_latency_ms: float | None = None,
                   score: Callable[[nn.Module], float] | None = None, example_inputs: tuple | None = None,
                   ladders: dict[str, list] | None = None, filter_fn: FilterFn | None = None,
                   latency_repeats: int = 10) -> ReductionPlan:
    """Choose an :class:`~edgegen.reduce.MPRFConfig` for ``model`` that meets ``max_params``
    (parameters counted once) or ``max_latency_ms`` (median of ``latency_repeats`` calls on
    ``example_inputs`` by :func:`edgegen.eval.profile`, on this machine) — exactly one of the two.

    Starting from the unreduced model, each step tries moving every group (heads, FFN width, ranks,
    embedding) one rung up its ladder (``ladders``: group -> configs from mild to strong;
    :func:`default_ladders` of ``model`` by default; a group left out is never reduced), applies
    each candidate plan to a copy of ``model`` and takes the one saving the most cost per unit of
    ``score`` lost (a move that loses nothing wins outright); when some candidates meet the budget,
    it takes the best-scoring of those and stops. A candidate that cannot be applied (a group the
    model has no layers for, such as heads in a convolutional model), or whose score is not a finite
    number, is recorded with its error and not taken (the unreduced model's score must be finite).
    ``score(model) -> float``, higher is better (for example minus the validation loss); by default
    :func:`fidelity_score` on ``example_inputs`` (or ``model.example_inputs()``), which needs logits
    (a model with other outputs, such as the Beta-VAE, must pass ``score``). ``model`` is not
    changed. A ValueError
    naming the budget when no plan on the ladders meets it, or naming ``model`` (with the first
    group's error) when no group applies to the model at all (a DCGAN has no heads, FFN, Linear
    ranks or embedding)."""
    if (max_params is None) == (max_latency_ms is None):
        raise ValueError("max_params / max_latency_ms: give exactly one budget")
    if max_params is not None and (isinstance(max_params, bool) or not isinstance(max_params, int) or max_params < 1):
        raise ValueError(f"max_params: expected an int >= 1, got {max_params!r}")
    if max_latency_ms is not None and (isinstance(max_latency_ms, bool) or not isinstance(max_latency_ms, (int, float))
                                       or not max_latency_ms > 0):
        raise ValueError(f"max_latency_ms: expected a positive number, got {max_latency_ms!r}")
    if isinstance(latency_repeats, bool) or not isinstance(latency_repeats, int) or latency_repeats < 1:
        raise ValueError(f"latency_repeats: expected an int >= 1, got {latency_repeats!r}")
    ladders = default_ladders(model) if ladders is None else ladders
    if not isinstance(ladders, dict):
        raise ValueError(f"ladders: expected a mapping group -> list of settings, got {type(ladders).__name__}")
    unknown = sorted(set(ladders) - set(GROUPS))
    if unknown:
        raise ValueError(f"ladders.{unknown[0]}: unknown group (expected some of {', '.join(GROUPS)})")
    for g, rungs in ladders.items():
        if not isinstance(rungs, (list, tuple)):
            raise ValueError(f"ladders.{g}: expected a list of settings from mild to strong, got {rungs!r}")
    ladders = {g: list(ladders.get(g, [])) for g in GROUPS}
    if example_inputs is None:
        if not callable(getattr(model, "example_inputs", None)):
            raise ValueError("example_inputs: required for a model without example_inputs()")
        example_inputs = model.example_inputs()
    inputs = tuple(example_inputs)
    label = "custom score"
    if score is None:
        score, label = fidelity_score(model, inputs), "-KL to the unreduced model (nats/row, fidelity)"
    budget, unit = (max_params, "params") if max_params is not None else (max_latency_ms, "ms (median latency)")

    def cost_of(m: nn.Module) -> float:
        if max_params is not None:
            return float(sum(p.numel() for p in m.parameters()))
        from edgegen.eval.profile import profile

        return profile(m, inputs, repeats=latency_repeats, warmup=2, measure_memory=False).latency_ms_p50

    def evaluate(levels: dict[str, int]) -> tuple[PlanStep, bool]:
        """The step, and whether its plan changed the model at all."""
        cfg = _config(levels, ladders)
        m = copy.deepcopy(model).eval()
        changed = False
        if cfg is not None:
            idle: list[str] = []
            changed = apply_plan_(m, cfg, filter_fn, idle) > 0  # on this copy: reduce_'s dry run is not needed
            if idle:  # a rung that changes nothing is left out of the plan (reduce_ refuses idle groups)
                kept = {g: getattr(cfg, g) for g in GROUPS if getattr(cfg, g) is not None and g not in idle}
                cfg = MPRFConfig(**kept) if kept else None
        return PlanStep(cfg, cost_of(m), float(score(m)), False), changed

    def unscored(step: PlanStep) -> str:
        """Why the walk cannot compare ``step``'s score ("" when it can)."""
        if math.isfinite(step.score):
            return ""
        what = "the unreduced model" if step.config is None else f"the plan {step.config}"
        return f"score: expected a finite number (higher is better), got {step.score} for {what}"

    levels = {g: 0 for g in GROUPS}
    current = evaluate(levels)[0]
    if unscored(current):  # every move is measured against it
        raise ValueError(unscored(current))
    current.taken = True
    base = current
    steps = [current]
    applied = False  # whether any plan on the ladders changed the model at all
    while current.cost > budget:
        candidates, not_finite = [], []
        for g in GROUPS:
            if levels[g] < len(ladders[g]):
                trial = dict(levels, **{g: levels[g] + 1})
                try:
                    step, changed = evaluate(trial)  # a rung that changes nothing costs what the current plan does
                except ValueError as e:  # a group this model has no layers for, or a setting it cannot take
                    steps.append(PlanStep(_config(trial, ladders), math.nan, math.nan, False, str(e)))
                    continue
                steps.append(step)
                applied = applied or changed
                step.error = unscored(step)
                if step.error:  # recorded and never taken (a loss that overflowed on one plan), as above
                    not_finite.append(step)
                    continue
                candidates.append((g, trial, step))
        if not candidates and not_finite:
            raise ValueError(f"{not_finite[0].error}, and for every other plan one step from "
                             f"{current.config or 'the unreduced model'}: none left to take")
        if not candidates:
            errors = [s.error for s in steps if s.error]
            if not applied and any(ladders[g] for g in GROUPS):
                first = f"; the first error: {errors[0]}" if errors else ""
                raise ValueError(f"model: no reduction group applies to {type(model).__name__}: every plan on the "
                                 f"ladders ({', '.join(g for g in GROUPS if ladders[g])}) failed or left the model "
                                 f"unchanged{first}")
            raise ValueError(f"max_{'params' if max_params is not None else 'latency_ms'}: {budget} is below the "
                             f"cheapest plan on the ladders ({current.cost:.6g} {unit})")

        def merit(c):
            saved = current.cost - c[2].cost
            lost = current.score - c[2].score
            return math.inf if lost <= 0 and saved > 0 else saved / max(lost, 1e-12)

        within = [c for c in candidates if c[2].cost <= budget]
        if within:  # the last move: the best-scoring one that meets the budget, not the largest saving
            g, levels, current = max(within, key=lambda c: c[2].score)
        else:
            g, levels, current = max(candidates, key=merit)
        current.taken = True
    if current.config is None:  # the unreduced model already fits: the mildest plan is not forced on it
        raise ValueError(f"max_{'params' if max_params is not None else 'latency_ms'}: the model already meets "
                         f"{budget} {unit} ({current.cost:.6g}); nothing to reduce")
    return ReductionPlan(current.config, current.cost, current.score, base.cost, base.score, budget, unit, label,
                         steps)
