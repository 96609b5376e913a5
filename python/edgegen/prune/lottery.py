"""Lottery-ticket rewinding (Frankle & Carbin 2019; rewinding to an early step as in Frankle et
al. 2020): record the weights at an early step, train, prune, reset the surviving weights to their
recorded values, retrain; repeat for iterative rounds."""

from __future__ import annotations

import re

import torch
from torch import nn

from edgegen.prune.config import MagnitudeConfig
from edgegen.prune.masks import masked_tensors
from edgegen.transform import FilterFn

_ORIGINAL = re.compile(r"\.?parametrizations\.([^.]+)\.original$")


def _canonical(name: str) -> str:
    """'layer.parametrizations.weight.original' -> 'layer.weight' (masking does not rename)."""
    return _ORIGINAL.sub(lambda m: ("." if name[: m.start()] else "") + m.group(1), name)


class LotteryTicket:
    """``record()`` at the rewind step, then per round ``prune_and_rewind(amount)`` (sparsity over
    the pruned layers after this round). :meth:`round_sparsity` gives the usual iterative
    schedule, pruning ``per_round`` of the remaining weights each round."""

    def __init__(self, model: nn.Module, filter_fn: FilterFn | None = None,
                 scope: str = "global"):
        self.model, self.filter_fn = model, filter_fn
        MagnitudeConfig(0.0, scope)  # validates scope
        self.scope = scope
        self.snapshot: dict[str, torch.Tensor] | None = None
        self.rounds_done = 0

    @torch.no_grad()
    def record(self) -> None:
        self.snapshot = {_canonical(n): p.detach().clone() for n, p in self.model.named_parameters()}

    @staticmethod
    def round_sparsity(per_round: float, round_index: int) -> float:
        """Sparsity after ``round_index`` (1-based) rounds of pruning ``per_round`` of what is left."""
        if not 0.0 <= per_round < 1.0:
            raise ValueError(f"per_round: expected a fraction in [0, 1), got {per_round!r}")
        return 1.0 - (1.0 - per_round) ** round_index

    def _check_snapshot(self, snapshot: dict, what: str) -> None:
        """ValueError unless ``snapshot`` holds exactly the model's parameters with their shapes."""
        shapes = {_canonical(n): tuple(p.shape) for n, p in self.model.named_parameters()}
        missing = sorted(set(shapes) - set(snapshot))
        extra = sorted(set(snapshot) - set(shapes))
        wrong = sorted(k for k in set(shapes) & set(snapshot) if tuple(snapshot[k].shape) != shapes[k])
        if missing or extra or wrong:
            parts = ([f"missing {missing[:3]}"] if missing else []) + ([f"not in the model {extra[:3]}"] if extra else [])
            parts += [f"{k}: recorded {tuple(snapshot[k].shape)}, model {shapes[k]}" for k in wrong[:3]]
            raise ValueError(f"{what}: the recorded weights do not match the model's parameters ({'; '.join(parts)}); "
                             "a ticket rewinds the model it was recorded on")

    @torch.no_grad()
    def rewind(self) -> None:
        """Reset every recorded parameter to its recorded value; pruned entries stay zero."""
        if self.snapshot is None:
            raise RuntimeError("rewind: call record() at the rewind step first")
        self._check_snapshot(self.snapshot, "rewind")  # before anything is written
        for name, p in self.model.named_parameters():
            p.copy_(self.snapshot[_canonical(name)])
        for _, module, tname, mask in masked_tensors(self.model):
            module.parametrizations[tname].original.masked_fill_(~mask, 0)

    def prune_and_rewind(self, amount: float) -> None:
        from edgegen.prune.api import prune_

        if self.snapshot is None:
            raise RuntimeError("prune_and_rewind: call record() at the rewind step first")
        self._check_snapshot(self.snapshot, "prune_and_rewind")  # before the model is pruned
        prune_(self.model, MagnitudeConfig(amount, self.scope), self.filter_fn)
        self.rewind()
        self.rounds_done += 1

    def state_dict(self) -> dict:
        return {"snapshot": self.snapshot, "rounds_done": self.rounds_done, "scope": self.scope}

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or not {"snapshot", "rounds_done", "scope"} <= set(state):
            raise ValueError("state: expected a LotteryTicket state_dict (snapshot, rounds_done, scope)")
        MagnitudeConfig(0.0, state["scope"])  # validates scope
        if state["snapshot"] is not None:
            self._check_snapshot(state["snapshot"], "state")
        self.snapshot, self.rounds_done, self.scope = state["snapshot"], state["rounds_done"], state["scope"]
