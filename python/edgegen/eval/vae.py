"""Quality of a Beta-VAE on held-out images: the model's own loss terms (the negative ELBO as it
trains on it: squared-error reconstruction summed over pixels plus beta x KL, per image) and the
quality of its reconstructions (MSE, SSIM, PSNR on images mapped to [0, 1])."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edgegen.eval.image import psnr, ssim
from edgegen.models.blocks import input_dtype
from edgegen.prune.graph import restore_training_flags, training_flags

__all__ = ["vae_metrics"]


@torch.no_grad()
def vae_metrics(model: nn.Module, images, seed: int = 0, max_images: int | None = None) -> dict[str, float]:
    """Averages over ``images`` (a tensor [N, C, 64, 64] in [-1, 1] or an iterable of such batches;
    NaN or infinite pixels are refused, naming ``images``).

    - ``elbo_reconstruction``, ``elbo_kl``, ``neg_elbo``: the model's terms per image with one
      posterior sample per image (seeded: the same seed gives the same numbers); ``neg_elbo`` =
      reconstruction + beta x KL, the training objective (a Gaussian-likelihood ELBO up to
      constants).
    - ``recon_mse``, ``recon_ssim``, ``recon_psnr_db``: reconstructions from the posterior mean,
      compared with the input on [0, 1].
    """
    if not all(hasattr(model, a) for a in ("encode", "decode", "config")):
        raise TypeError(f"model: expected an edgegen BetaVAE (encode/decode/config), got {type(model).__name__}")
    beta = float(model.config.beta)
    batches = [images] if isinstance(images, Tensor) else images
    device = next((t.device for t in (*model.parameters(), *model.buffers())), torch.device("cpu"))
    flags = training_flags(model)  # each module's own: model.train(flag) would overwrite a frozen BatchNorm's
    model.eval()
    g = torch.Generator(device=device).manual_seed(seed)
    in_dtype = input_dtype(model.encoder[0]) if isinstance(getattr(model, "encoder", None), nn.Sequential) \
        else torch.get_default_dtype()
    work = torch.promote_types(in_dtype, torch.float32)
    sums = dict.fromkeys(("elbo_reconstruction", "elbo_kl", "recon_mse", "recon_ssim", "recon_psnr_db"), 0.0)
    n = 0
    try:
        for x in batches:
            if isinstance(x, (tuple, list)):
                x = x[0]
            if not isinstance(x, Tensor) or not x.is_floating_point():
                raise TypeError(f"images: expected float image tensors, got {type(x).__name__}")
            # NaN fails every comparison, so the range check below would let it through.
            if x.numel() and not torch.isfinite(x).all():
                raise ValueError(f"images: expected finite values in [-1, 1], got {int((~torch.isfinite(x)).sum())} "
                                 f"NaN or infinite values in a batch of shape {tuple(x.shape)}")
            if x.numel() and (x.min() < -1 - 1e-4 or x.max() > 1 + 1e-4):
                raise ValueError(f"images: expected values in [-1, 1], got [{x.min().item():.3g}, "
                                 f"{x.max().item():.3g}]")
            if max_images is not None:
                x = x[:max(0, max_images - n)]
            if x.shape[0] == 0:
                continue
            # The model reads its input dtype (a VAE moved to float64 or bfloat16); the images
            # stay as given for the comparisons, made in float32 or wider.
            x = x.to(device)
            mu, logvar = model.encode(x.to(in_dtype))
            mu, logvar = mu.to(work), logvar.to(work)
            z = mu + torch.randn(mu.shape, generator=g, device=device, dtype=work) * torch.exp(0.5 * logvar)
            x = x.to(work)
            rec = (model.decode(z.to(in_dtype)).to(work) - x).pow(2).flatten(1).sum(1)
            kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
            mean_recon = model.decode(mu.to(in_dtype)).to(work)
            if not (torch.isfinite(mu).all() and torch.isfinite(logvar).all() and torch.isfinite(mean_recon).all()):
                raise ValueError("model: its encoder or decoder returned NaN or infinite values for finite images "
                                 "(the metrics would be NaN)")
            # The images within the tolerance checked above, clipped to [-1, 1] as the SSIM needs.
            a, b = (mean_recon.clamp(-1, 1) + 1) / 2, (x.clamp(-1, 1) + 1) / 2
            k = x.shape[0]
            sums["elbo_reconstruction"] += rec.double().sum().item()
            sums["elbo_kl"] += kl.double().sum().item()
            sums["recon_mse"] += (a - b).pow(2).flatten(1).mean(1).double().sum().item()
            sums["recon_ssim"] += ssim(a, b, data_range=1.0, reduction="none").double().sum().item()
            sums["recon_psnr_db"] += psnr(a, b, data_range=1.0, reduction="none").double().sum().item()
            n += k
            if max_images is not None and n >= max_images:
                break
    finally:
        restore_training_flags(flags)
    if n == 0:
        raise ValueError("images: no images to evaluate")
    out = {k: v / n for k, v in sums.items()}
    out["neg_elbo"] = out["elbo_reconstruction"] + beta * out["elbo_kl"]
    out["images"] = float(n)
    return out
