"""Analysis of results: statistics over seeds."""

from edgegen.analysis.stats import SeedSummary, paired_ttest, summarize

__all__ = ["summarize", "paired_ttest", "SeedSummary"]
