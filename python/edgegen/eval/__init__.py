"""Quality metrics next to efficiency: distances between feature distributions (Frechet distance
on streaming statistics, KID), fidelity and diversity apart (precision, recall, density,
coverage), image reconstruction quality (SSIM, PSNR), language-model perplexity by the
sliding-window procedure, measures of generated text, FID/KID of images (the standard Inception
network, or a labelled FID-proxy), Beta-VAE ELBO terms, the efficiency profile of a model
(parameters, FLOPs with edgegen's ops, size on disk, peak memory, latency, energy measured or
labelled as estimated), roofline projections onto edge devices (labelled projected), trained runs
loaded, evaluated and compared, and samples of models (image grids from seeded latents, text
continuations) to look at beside the numbers.

Nothing here imports heavy optional packages at import time (sacrebleu and scipy are imported by
the functions that need them).
"""

from edgegen.eval.edge import DeviceProfile, Projection, device_profiles, project
from edgegen.eval.fid import FeatureExtractor, FIDResult, fid, get_extractor, image_statistics, real_statistics, \
    train_proxy_extractor
from edgegen.ops.flops import count_flops, visible_pairs
from edgegen.eval.inception import FIDInceptionV3, download_fid_weights, load_fid_inception
from edgegen.eval.frechet import GaussianStats, KIDResult, frechet_distance, frechet_distance_stats, kid
from edgegen.eval.image import psnr, ssim
from edgegen.eval.manifold import ManifoldResult, manifold_metrics
from edgegen.eval.profile import GenerationProfile, ProfileRecord, model_bytes_on_disk, profile, profile_generation
from edgegen.eval.runs import EvalOptions, LoadedRun, compare_runs, evaluate_run, load_run
from edgegen.eval.samples import generate_images, image_grid, image_latents, labelled_panels, sample_text, save_png
from edgegen.eval.text import PerplexityResult, bleu, distinct_n, perplexity, repetition_rate
from edgegen.eval.vae import vae_metrics

__all__ = ["GaussianStats", "KIDResult", "frechet_distance", "frechet_distance_stats", "kid", "ssim", "psnr",
           "PerplexityResult", "perplexity", "bleu", "distinct_n", "repetition_rate", "count_flops", "visible_pairs",
           "ProfileRecord", "profile", "model_bytes_on_disk", "GenerationProfile", "profile_generation",
           "FeatureExtractor", "FIDResult", "fid", "get_extractor", "image_statistics", "real_statistics",
           "train_proxy_extractor", "FIDInceptionV3", "load_fid_inception", "download_fid_weights", "vae_metrics",
           "DeviceProfile", "Projection", "device_profiles", "project", "EvalOptions", "LoadedRun", "load_run",
           "evaluate_run", "compare_runs", "image_latents", "generate_images", "image_grid", "labelled_panels",
           "save_png", "sample_text", "ManifoldResult", "manifold_metrics"]
