"""DCGAN (Radford, Metz and Chintala 2015) for 64x64 images.

Generator: latent [B, nz] -> 4x4 -> ... -> 64x64 through stride-2 transposed convolutions with
BatchNorm + ReLU, Tanh output in [-1, 1]. Discriminator: stride-2 convolutions with BatchNorm
(none on the first layer) + LeakyReLU(0.2), one logit per image (use BCE-with-logits). Weights
follow the paper: N(0, 0.02) for convolutions, N(1, 0.02) for BatchNorm scales, zero shifts.
``conv`` and ``squeeze_excite`` select the lightweight variants.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from edgegen.models.config import ModelConfig
from edgegen.models.blocks import SqueezeExcite, conv, input_dtype, require_conv_kind, require_positive_ints


@dataclass
class DCGANConfig(ModelConfig, kind="dcgan"):
    """DCGAN sizes: latent ``nz``, generator / discriminator widths ``ngf`` / ``ndf``, image
    channels ``nc``; ``conv`` ('standard', 'depthwise_separable') and ``squeeze_excite`` select the
    lightweight variants. ``build()`` returns (generator, discriminator)."""

    nz: int = 100
    ngf: int = 64
    ndf: int = 64
    nc: int = 3
    conv: str = "standard"
    squeeze_excite: bool = False

    def __post_init__(self):
        require_positive_ints(self, "nz", "ngf", "ndf", "nc")
        require_conv_kind(self.conv)

    def build(self):
        return (DCGANGenerator(self), DCGANDiscriminator(self))


def dcgan_init_(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _check_images(x: Tensor, nc: int) -> None:
    if torch.jit.is_tracing():  # an input check, not computation: the exporter checked its example
        return
    if x.dim() != 4 or x.shape[1] != nc or x.shape[2:] != (64, 64):
        raise ValueError(f"images: expected [B, {nc}, 64, 64], got {tuple(x.shape)}")


class DCGANGenerator(nn.Module):
    """Latents [B, nz] (or [B, nz, 1, 1]) -> images [B, nc, 64, 64] in [-1, 1]."""

    def __init__(self, config: DCGANConfig | None = None):
        super().__init__()
        c = self.config = config or DCGANConfig()
        chans = [c.ngf * 8, c.ngf * 4, c.ngf * 2, c.ngf]
        layers: list[nn.Module] = [nn.ConvTranspose2d(c.nz, chans[0], 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(chans[0]), nn.ReLU(True)]
        for cin, cout in zip(chans, chans[1:]):
            layers += [conv(c.conv, cin, cout, 4, 2, 1, transposed=True), nn.BatchNorm2d(cout), nn.ReLU(True)]
            if c.squeeze_excite:
                layers.append(SqueezeExcite(cout))
        layers += [conv(c.conv, chans[-1], c.nc, 4, 2, 1, transposed=True), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        dcgan_init_(self)

    def example_inputs(self, batch: int = 2) -> tuple[Tensor]:
        """Inputs for tracing (e.g. edgegen.prune): latents of shape [batch, nz], in the model's dtype."""
        return (torch.randn(batch, self.config.nz, device=next(self.parameters()).device,
                            dtype=input_dtype(self.net[0])),)

    def forward(self, z: Tensor) -> Tensor:
        if z.dim() == 2:
            z = z[:, :, None, None]
        if not torch.jit.is_tracing() and (z.dim() != 4 or z.shape[1:] != (self.config.nz, 1, 1)):
            raise ValueError(f"z: expected [B, {self.config.nz}] latents, got {tuple(z.shape)}")
        return self.net(z)


class DCGANDiscriminator(nn.Module):
    """Images [B, nc, 64, 64] -> one logit per image [B] (train with BCE-with-logits)."""

    def __init__(self, config: DCGANConfig | None = None):
        super().__init__()
        c = self.config = config or DCGANConfig()
        chans = [c.ndf, c.ndf * 2, c.ndf * 4, c.ndf * 8]
        layers: list[nn.Module] = [nn.Conv2d(c.nc, chans[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for cin, cout in zip(chans, chans[1:]):
            layers += [conv(c.conv, cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, True)]
            if c.squeeze_excite:
                layers.append(SqueezeExcite(cout))
        layers.append(nn.Conv2d(chans[-1], 1, 4, 1, 0, bias=False))
        self.net = nn.Sequential(*layers)
        dcgan_init_(self)

    def example_inputs(self, batch: int = 2) -> tuple[Tensor]:
        """Inputs for tracing (e.g. edgegen.prune): images of shape [batch, nc, 64, 64], in the model's dtype."""
        return (torch.randn(batch, self.config.nc, 64, 64, device=next(self.parameters()).device,
                            dtype=input_dtype(self.net[0])),)

    def forward(self, x: Tensor) -> Tensor:
        """One real/fake logit per image, shape [B]."""
        _check_images(x, self.config.nc)
        return self.net(x).flatten()
