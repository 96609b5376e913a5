"""Gradual pruning (Zhu & Gupta 2017, "To prune, or not to prune"): sparsity rises from s_i to
s_f along a cubic, s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0))^3, pruning every
``frequency`` steps between t0 and t1, fast at first and slowly as the network adapts."""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import nn

from edgegen.config import Config
from edgegen.prune.masks import sparsity
from edgegen.transform import FilterFn


@dataclass
class CubicSchedule(Config):
    """Sparsity from ``initial_sparsity`` at ``begin_step`` to ``final_sparsity`` at ``end_step``
    along the cubic of Zhu & Gupta, applied every ``frequency`` steps (and at ``end_step``);
    fractions in [0, 1], steps non-negative ints with ``end_step > begin_step``.

    Examples:
        >>> s = CubicSchedule(0.0, 0.8, begin_step=0, end_step=100, frequency=10)
        >>> s.sparsity(0), round(s.sparsity(50), 3), s.sparsity(100)
        (0.0, 0.7, 0.8)
        >>> s.is_pruning_step(20), s.is_pruning_step(25)
        (True, False)
    """

    initial_sparsity: float
    final_sparsity: float
    begin_step: int
    end_step: int
    frequency: int = 1

    def __post_init__(self):
        for name in ("initial_sparsity", "final_sparsity"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ValueError(f"{name}: expected a fraction in [0, 1], got {v!r}")
        if self.initial_sparsity > self.final_sparsity:
            raise ValueError(f"initial_sparsity ({self.initial_sparsity}) must not exceed final_sparsity "
                             f"({self.final_sparsity})")
        for name in ("begin_step", "end_step", "frequency"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if name == "frequency" else 0):
                raise ValueError(f"{name}: expected an int >= {1 if name == 'frequency' else 0}, got {v!r}")
        if self.end_step <= self.begin_step:
            raise ValueError(f"end_step ({self.end_step}) must be after begin_step ({self.begin_step})")

    def sparsity(self, step: int) -> float:
        """Target sparsity at ``step``: 0 before begin_step, s_f from end_step on."""
        if step < self.begin_step:
            return 0.0
        if step >= self.end_step:
            return float(self.final_sparsity)
        if step == self.begin_step:  # exactly s_i (the formula rounds s_f + (s_i - s_f) * 1)
            return float(self.initial_sparsity)
        frac = (step - self.begin_step) / (self.end_step - self.begin_step)
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1.0 - frac) ** 3

    def is_pruning_step(self, step: int) -> bool:
        return self.begin_step <= step <= self.end_step and (
            (step - self.begin_step) % self.frequency == 0 or step == self.end_step)


class GradualPruner:
    """Calls ``prune_`` with the schedule's sparsity as ``amount`` at every pruning step. The
    config is any pruning config with an ``amount`` (magnitude, channel, head); masks are
    recomputed from the weights the model uses at each pruning step and only ever grow, so a
    resumed run needs nothing beyond the model's state dict and the step."""

    def __init__(self, model: nn.Module, config, schedule: CubicSchedule,
                 filter_fn: FilterFn | None = None, example_inputs=None):
        if not hasattr(config, "amount"):
            raise TypeError(f"config: expected a pruning config with an 'amount' (MagnitudeConfig, ChannelConfig, "
                            f"HeadConfig), got {type(config).__name__}")
        if not isinstance(schedule, CubicSchedule):
            raise TypeError(f"schedule: expected a CubicSchedule, got {type(schedule).__name__}")
        from dataclasses import replace

        for amount in (schedule.initial_sparsity, schedule.final_sparsity):  # every amount it will ask for
            replace(config, amount=amount)  # the config's own check, now rather than at the last step
        self.model, self.config, self.schedule = model, config, schedule
        self.filter_fn, self.example_inputs = filter_fn, example_inputs

    def step(self, step: int) -> float | None:
        """Prune if ``step`` is a pruning step; returns the model's sparsity measured afterwards
        (:func:`~edgegen.prune.sparsity`, the zero fraction of all prunable weights: channel
        pruning also zeroes the consumers' inputs, head pruning leaves the MLPs dense, so it is not
        the schedule's amount), None on other steps."""
        if not self.schedule.is_pruning_step(step):
            return None
        from edgegen.prune.api import prune_

        amount = self.schedule.sparsity(step)
        if amount > 0.0:
            prune_(self.model, replace(self.config, amount=amount), self.filter_fn, example_inputs=self.example_inputs)
        return sparsity(self.model)
