"""Statistics over seeds: mean +- standard deviation, 95% confidence intervals (Student t), and
paired t-tests between a baseline and an optimised variant run on the same seeds (scipy)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Sequence


@dataclass
class SeedSummary:
    """Mean, sample standard deviation and the t confidence interval of one metric over ``n``
    seeds (the interval is NaN for a single seed; printed from 3 seeds on, as the sweep's and the
    reproduction's tables do: two values say too little about the spread)."""

    n: int
    mean: float
    std: float  # sample standard deviation (ddof=1); NaN for a single value (no spread measured)
    ci_low: float
    ci_high: float
    confidence: float = 0.95  # of the interval

    def __str__(self) -> str:
        if self.n == 1:
            return f"{self.mean:.4g} (n=1: no spread)"
        if self.n == 2:
            return f"{self.mean:.4g} +- {self.std:.2g} (n=2: no interval)"
        return (f"{self.mean:.4g} +- {self.std:.2g} ({self.confidence * 100:g}% CI {self.ci_low:.4g} .. "
                f"{self.ci_high:.4g}, n={self.n})")


def summarize(values: Sequence[float], confidence: float = 0.95) -> SeedSummary:
    """:class:`SeedSummary` of ``values`` (finite numbers, at least one) with a ``confidence``
    Student-t interval.

    Examples:
        >>> s = summarize([1.0, 2.0, 3.0])
        >>> s.n, s.mean, s.std
        (3, 2.0, 1.0)
        >>> round(s.ci_low, 3), round(s.ci_high, 3)
        (-0.484, 4.484)
    """
    from scipy import stats

    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a level strictly between 0 and 1 (e.g. 0.95), got {confidence!r}")
    vals = _finite(values, "values")
    if not vals:
        raise ValueError("values: expected at least one value")
    n = len(vals)
    mean = sum(vals) / n
    if n == 1:
        return SeedSummary(1, mean, float("nan"), float("nan"), float("nan"), confidence)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return SeedSummary(n, mean, std, mean - half, mean + half, confidence)


def _finite(values, name: str) -> list:
    if isinstance(values, (str, bytes, Mapping)):  # iterable, but not a sequence of numbers
        raise ValueError(f"{name}: expected a sequence of numbers, got a {type(values).__name__}")
    try:
        vals = [float(v) for v in values]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected a sequence of numbers ({exc})") from None
    if any(not math.isfinite(v) for v in vals):
        raise ValueError(f"{name}: expected finite numbers, got {vals}")
    return vals


def paired_ttest(baseline: Sequence[float], variant: Sequence[float], alpha: float = 0.05) -> dict:
    """Paired t-test of variant - baseline (same seeds in the same order): t, two-sided p, the
    mean difference, and whether it is significant at ``alpha``."""
    from scipy import stats

    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ValueError(f"alpha: expected a significance level strictly between 0 and 1, got {alpha!r}")
    baseline, variant = _finite(baseline, "baseline"), _finite(variant, "variant")
    if len(baseline) != len(variant):
        raise ValueError(f"variant: expected one value per baseline seed ({len(baseline)}), got {len(variant)}")
    if len(baseline) < 2:
        raise ValueError("baseline: a paired t-test needs at least 2 seeds")
    diff = [float(v) - float(b) for b, v in zip(baseline, variant)]
    if all(d == diff[0] for d in diff):  # zero variance: t undefined
        p = 1.0 if diff[0] == 0 else 0.0
        return {"t": float("nan") if diff[0] == 0 else math.copysign(float("inf"), diff[0]), "p": p,
                "mean_diff": diff[0], "significant": p < alpha}
    res = stats.ttest_rel(variant, baseline)
    return {"t": float(res.statistic), "p": float(res.pvalue), "mean_diff": sum(diff) / len(diff),
            "significant": bool(res.pvalue < alpha)}
