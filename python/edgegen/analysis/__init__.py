"""Analysis of results: statistics over seeds, and the quality/efficiency trade-off (fitted
curves, the optimal complexity, Pareto fronts and scores), reduction plans chosen for a budget with its figures (``edgegen.analysis.plots``)."""

from edgegen.analysis.budget import ReductionPlan, default_ladders, fidelity_score, plan_reduction
from edgegen.analysis.stats import SeedSummary, paired_ttest, summarize
from edgegen.analysis.tradeoff import (
    ATEI_WEIGHTS,
    TradeoffFit,
    atei,
    fit_tradeoff,
    optimal_complexity,
    pareto_front,
    pareto_scores,
    utility,
)

__all__ = ["summarize", "paired_ttest", "SeedSummary", "TradeoffFit", "fit_tradeoff", "utility",
           "optimal_complexity", "pareto_front", "pareto_scores", "atei", "ATEI_WEIGHTS",
           "plan_reduction", "ReductionPlan", "default_ladders", "fidelity_score"]
