"""Convolution blocks the image models share, including the lightweight variants that edge
papers compare against plain convolutions: depthwise-separable convolutions (Howard et al.
2017, MobileNets) and squeeze-and-excitation (Hu et al. 2018)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

CONV_KINDS = ("standard", "depthwise_separable")


def conv(kind: str, cin: int, cout: int, k: int, stride: int, pad: int, transposed: bool = False,
         bias: bool = False) -> nn.Module:
    """A (transposed) convolution, plain or depthwise-separable (per-channel spatial filter, then
    a 1x1 channel mix) with the same input/output shapes."""
    require_conv_kind(kind)
    layer = nn.ConvTranspose2d if transposed else nn.Conv2d
    if kind == "standard":
        return layer(cin, cout, k, stride, pad, bias=bias)
    return nn.Sequential(layer(cin, cin, k, stride, pad, groups=cin, bias=False),
                         nn.Conv2d(cin, cout, 1, bias=bias))


class SqueezeExcite(nn.Module):
    """Channel gating: global average pool, bottleneck MLP, sigmoid, rescale."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(hidden, channels, 1), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)


def require_positive_ints(config, *names: str) -> None:
    """Config validation shared by the models: each named field is an int >= 1."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")


def require_conv_kind(kind: str) -> None:
    if kind not in CONV_KINDS:
        raise ValueError(f"conv: expected one of {CONV_KINDS}, got {kind!r}")


def input_dtype(first: nn.Module) -> torch.dtype:
    """The dtype a model's floating-point inputs (latents, images) must have, from its first
    layer ``first``: the dtype of its first floating-point parameter (a model moved to float64 or
    bfloat16 with ``.to``; a factorized layer's too), else the default dtype. Layers quantized by
    edgegen cast their inputs themselves and take what the float model took, so their float
    scales and biases do not count."""
    from edgegen.quant import INTEGER_LAYERS, LowPrecision

    if isinstance(first, (*INTEGER_LAYERS, LowPrecision)):
        return torch.get_default_dtype()
    return next((p.dtype for p in first.parameters() if p.is_floating_point()), torch.get_default_dtype())


def parameter_count(module: nn.Module) -> int:
    """Distinct parameters (shared tensors counted once)."""
    return sum(p.numel() for p in module.parameters())
