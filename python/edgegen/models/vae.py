"""Beta-VAE (Higgins et al. 2017) for 64x64 images in [-1, 1].

Encoder: four stride-2 4x4 convolutions (32, 32, 64, 64 channels) to 4x4, a 256-unit layer,
then (mu, logvar). Decoder mirrors it with transposed convolutions and a Tanh output. The loss is
reconstruction + beta * KL(q(z|x) || N(0, I)); reconstruction is the per-image summed squared
error (a Gaussian likelihood up to a constant), both terms averaged over the batch and returned
separately.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from edgegen.models.config import ModelConfig
from edgegen.models.blocks import SqueezeExcite, conv, input_dtype, require_conv_kind, require_positive_ints
from edgegen.ops._args import is_int, is_real


@dataclass
class BetaVAEConfig(ModelConfig, kind="vae"):
    """Beta-VAE sizes: ``latent_dim``, the KL weight ``beta`` (>= 0), image channels ``nc``;
    ``conv`` and ``squeeze_excite`` select the lightweight variants."""

    latent_dim: int = 32
    beta: float = 4.0
    nc: int = 3
    conv: str = "standard"
    squeeze_excite: bool = False

    def __post_init__(self):
        require_positive_ints(self, "latent_dim", "nc")
        if not is_real(self.beta) or not math.isfinite(self.beta) or not self.beta >= 0:
            raise ValueError(f"beta: expected a finite number >= 0, got {self.beta!r}")
        require_conv_kind(self.conv)

    def build(self):
        return BetaVAE(self)


class BetaVAE(nn.Module):
    """Images [B, nc, 64, 64] in [-1, 1] -> a dict with ``recon``, ``mu``, ``logvar``, ``loss``,
    ``reconstruction`` and ``kl`` (batch means); ``decode(z)`` maps latents to images."""

    CHANNELS = (32, 32, 64, 64)

    def __init__(self, config: BetaVAEConfig | None = None):
        super().__init__()
        c = self.config = config or BetaVAEConfig()
        enc: list[nn.Module] = []
        cin = c.nc
        for i, cout in enumerate(self.CHANNELS):
            # The first layer stays a plain convolution: depthwise over 3 channels saves nothing.
            enc += [conv("standard" if i == 0 else c.conv, cin, cout, 4, 2, 1, bias=True), nn.ReLU(True)]
            if c.squeeze_excite and i > 0:
                enc.append(SqueezeExcite(cout, reduction=8))
            cin = cout
        self.encoder = nn.Sequential(*enc, nn.Flatten(), nn.Linear(64 * 4 * 4, 256), nn.ReLU(True),
                                     nn.Linear(256, 2 * c.latent_dim))
        dec: list[nn.Module] = [nn.Linear(c.latent_dim, 256), nn.ReLU(True), nn.Linear(256, 64 * 4 * 4),
                                nn.ReLU(True), nn.Unflatten(1, (64, 4, 4))]
        chans = list(reversed(self.CHANNELS)) + [c.nc]
        for i, (a, b) in enumerate(zip(chans, chans[1:])):
            last = i == len(chans) - 2
            dec.append(conv("standard" if last else c.conv, a, b, 4, 2, 1, transposed=True, bias=True))
            if not last:
                dec.append(nn.ReLU(True))
                if c.squeeze_excite:
                    dec.append(SqueezeExcite(b, reduction=8))
        self.decoder = nn.Sequential(*dec, nn.Tanh())

    def example_inputs(self, batch: int = 2) -> tuple[Tensor]:
        """Inputs for tracing (e.g. edgegen.prune): images of shape [batch, nc, 64, 64], in the model's dtype."""
        return (torch.rand(batch, self.config.nc, 64, 64, device=next(self.parameters()).device,
                           dtype=input_dtype(self.encoder[0])) * 2 - 1,)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1:] != (self.config.nc, 64, 64):
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x: expected [B, {self.config.nc}, 64, 64], got {got}")
        if not x.is_floating_point():
            raise TypeError(f"x: expected floating-point images in [-1, 1], got {x.dtype}")
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: Tensor) -> Tensor:
        """Images [B, nc, 64, 64] from latents ``z`` [B, latent_dim]."""
        # An input check, skipped while tracing (the exporter checks its example).
        if not torch.jit.is_tracing() and (not isinstance(z, Tensor) or z.dim() != 2
                                           or z.shape[1] != self.config.latent_dim):
            got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"z: expected latents of shape [B, {self.config.latent_dim}], got {got}")
        if not z.is_floating_point():
            raise TypeError(f"z: expected floating-point latents, got {z.dtype}")
        return self.decoder(z)

    def forward(self, x: Tensor, generator: torch.Generator | None = None, eps: Tensor | None = None) -> dict:
        """Returns recon, mu, logvar, and the loss terms: 'reconstruction', 'kl', 'loss'. The
        posterior sample uses ``eps`` [B, latent_dim] if given (the dtype and device of the
        encoder's output), else standard normal noise drawn from ``generator``. The losses are batch
        means, so ``x`` must hold at least one image."""
        if isinstance(x, Tensor) and x.dim() >= 1 and x.shape[0] == 0:
            raise ValueError(f"x: expected at least one image (the losses are means over the batch), got "
                             f"shape {tuple(x.shape)}")
        mu, logvar = self.encode(x)
        if eps is None:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        else:
            if not isinstance(eps, Tensor) or eps.shape != mu.shape:
                got = tuple(eps.shape) if isinstance(eps, Tensor) else type(eps).__name__
                raise ValueError(f"eps: expected shape {tuple(mu.shape)}, got {got}")
            if eps.dtype != mu.dtype:
                raise TypeError(f"eps: expected dtype {mu.dtype} (the model's), got {eps.dtype}")
            if eps.device != mu.device:
                raise ValueError(f"eps: expected a tensor on {mu.device} (the model's device), got one on {eps.device}")
        z = mu + eps * torch.exp(0.5 * logvar)  # reparameterisation
        recon = self.decode(z)
        rec = (recon - x).pow(2).flatten(1).sum(1).mean()
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()
        return {"recon": recon, "mu": mu, "logvar": logvar, "reconstruction": rec, "kl": kl,
                "loss": rec + self.config.beta * kl}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` images decoded from standard normal latents in the model's dtype: that of the
        decoder's first layer (float64 or bfloat16 for a model moved there with ``.to``), or the
        default dtype (float32) when that layer is quantized, as ``forward`` gives for float32
        images (layers quantized to 16 bits cast their inputs themselves)."""
        if not is_int(n) or n < 0:
            raise ValueError(f"n: expected an int >= 0, got {n!r}")
        params = list(self.parameters())
        dtype = input_dtype(self.decoder[0])
        z = torch.randn(int(n), self.config.latent_dim, generator=generator, device=params[0].device, dtype=dtype)
        return self.decode(z)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Decode the posterior mean."""
        return self.decode(self.encode(x)[0])
