"""Quality metrics next to efficiency: distances between feature distributions (Frechet distance
on streaming statistics, KID), image reconstruction quality (SSIM, PSNR), language-model
perplexity by the sliding-window procedure, measures of generated text, and the efficiency
profile of a model (parameters, FLOPs with edgegen's ops, size on disk, peak memory, latency,
energy measured or labelled as estimated).

Nothing here imports heavy optional packages at import time (sacrebleu and scipy are imported by
the functions that need them).
"""

from edgegen.eval.flops import count_flops, visible_pairs
from edgegen.eval.frechet import GaussianStats, KIDResult, frechet_distance, frechet_distance_stats, kid
from edgegen.eval.image import psnr, ssim
from edgegen.eval.profile import GenerationProfile, ProfileRecord, model_bytes_on_disk, profile, profile_generation
from edgegen.eval.text import PerplexityResult, bleu, distinct_n, perplexity, repetition_rate

__all__ = ["GaussianStats", "KIDResult", "frechet_distance", "frechet_distance_stats", "kid", "ssim", "psnr",
           "PerplexityResult", "perplexity", "bleu", "distinct_n", "repetition_rate", "count_flops", "visible_pairs",
           "ProfileRecord", "profile", "model_bytes_on_disk", "GenerationProfile", "profile_generation"]
