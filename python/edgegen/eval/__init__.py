"""Quality metrics next to efficiency: distances between feature distributions (Frechet distance
on streaming statistics, KID), image reconstruction quality (SSIM, PSNR), language-model
perplexity by the sliding-window procedure, and measures of generated text.

Nothing here imports heavy optional packages at import time (sacrebleu and scipy are imported by
the functions that need them).
"""

from edgegen.eval.frechet import GaussianStats, KIDResult, frechet_distance, frechet_distance_stats, kid
from edgegen.eval.image import psnr, ssim
from edgegen.eval.text import PerplexityResult, bleu, distinct_n, perplexity, repetition_rate

__all__ = ["GaussianStats", "KIDResult", "frechet_distance", "frechet_distance_stats", "kid", "ssim", "psnr",
           "PerplexityResult", "perplexity", "bleu", "distinct_n", "repetition_rate"]
