"""Analysis of results: statistics over seeds, and the quality/efficiency trade-off (fitted
curves, the optimal complexity, Pareto fronts and scores) with its figures (``edgegen.analysis.plots``)."""

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
           "optimal_complexity", "pareto_front", "pareto_scores", "atei", "ATEI_WEIGHTS"]
