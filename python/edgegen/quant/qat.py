"""Quantization-aware training: fake-quantize weights and activations in training exactly as the
integer kernels will compute them, then convert to the integer modules.

Weights: symmetric per output channel in [-127, 127] (axis 0 for Linear/Conv2d, axis 1 for
ConvTranspose2d). Activations: affine per tensor in [0, 127] (the range the INT8 kernels take).
Scales are learned (LSQ, Esser et al. 2020; ``weight='lsq'`` / ``activation='lsq'``) or derived:
weights from max|w| per channel, activations from moving averages of the batch min/max
(``'ste'`` / ``'ema'``), with the straight-through gradient."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgegen.quant.config import QATConfig
from edgegen.transform import FilterFn
from edgegen.quant.functional import fake_quantize, fake_quantize_learnable
from edgegen.quant.modules import Int8Conv2d, Int8ConvTranspose2d, Int8Linear, symmetric_weight_scales
from edgegen.quant.observers import MovingAverageMinMaxObserver, qparams_from_range

A_MIN, A_MAX, W_MIN, W_MAX = 0, 127, -127, 127
_EPS = torch.finfo(torch.float32).eps


class QATModule(nn.Module):
    """A Linear / Conv2d / ConvTranspose2d (groups=1) that trains with fake quantization."""

    def __init__(self, module: nn.Module, config: QATConfig):
        super().__init__()
        if not isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            raise TypeError(f"module: expected Linear, Conv2d or ConvTranspose2d, got {type(module).__name__}")
        if getattr(module, "groups", 1) != 1:
            raise ValueError("module: grouped convolutions are not supported")
        self.module, self.config = module, config
        self.axis = 1 if isinstance(module, nn.ConvTranspose2d) else 0
        w = module.weight.detach()
        per_channel = symmetric_weight_scales(w.transpose(0, self.axis))
        channels = per_channel.numel()
        self.register_buffer("weight_zero_point", torch.zeros(channels))
        if config.weight == "lsq":
            self.weight_scale = nn.Parameter(per_channel.clone())
        self.refresh_grad_factor()
        if config.activation == "lsq":
            self.act_scale = nn.Parameter(torch.ones(1))
            self.act_zero_point = nn.Parameter(torch.zeros(1))
        else:
            self.observer = MovingAverageMinMaxObserver(averaging_constant=config.averaging_constant,
                                                        quant_min=A_MIN, quant_max=A_MAX)
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        # In the wrapped layer's mode: in an eval-mode model the observer records the first batch only.
        self.training = module.training
        for child in self.children():
            if child is not module:
                child.train(module.training)

    def refresh_grad_factor(self) -> None:
        """LSQ's weight-scale gradient factor 1 / sqrt(weights per channel * W_MAX), from the
        wrapped layer's current size (again after ``shrink`` cut it)."""
        w = self.module.weight
        self.w_grad_factor = 1.0 / math.sqrt(w.numel() / self.weight_zero_point.numel() * W_MAX)

    # -- quantization parameters ------------------------------------------------------------------
    def current_weight_scale(self) -> Tensor:
        if self.config.weight == "lsq":
            return self.weight_scale
        return symmetric_weight_scales(self.module.weight.detach().transpose(0, self.axis))

    def activation_qparams(self) -> tuple[float, int]:
        if self.config.activation == "lsq":
            if not bool(self.initialized):
                raise RuntimeError("QATModule: no data seen yet: the learned activation scale is initialised from "
                                   "the first batch (run at least one forward pass before converting)")
            zp = int(self.act_zero_point.detach().round().clamp(A_MIN, A_MAX))
            return float(self.act_scale.detach().abs()), zp
        s, z = self.observer.calculate_qparams()
        return float(s), int(z)

    @torch.no_grad()
    def _init_activation(self, x: Tensor) -> None:
        lo, hi = x.detach().min().reshape(1), x.detach().max().reshape(1)
        s, z = qparams_from_range(lo, hi, A_MIN, A_MAX)
        self.act_scale.copy_(s)
        self.act_zero_point.copy_(z.float())
        self.initialized.fill_(True)

    def fake_weight(self) -> Tensor:
        w = self.module.weight
        if self.config.weight == "lsq":
            with torch.no_grad():  # an optimizer step may push a scale to or below 0 (as in torch's LSQ)
                self.weight_scale.clamp_(min=_EPS)
            return fake_quantize_learnable(w, self.weight_scale, self.weight_zero_point, W_MIN, W_MAX, self.axis,
                                           self.w_grad_factor)
        return fake_quantize(w, self.current_weight_scale(), self.weight_zero_point.int(), W_MIN, W_MAX, self.axis)

    def fake_input(self, x: Tensor) -> Tensor:
        if self.config.activation == "lsq":
            if not bool(self.initialized):
                self._init_activation(x)
            with torch.no_grad():
                self.act_scale.clamp_(min=_EPS)
            g = 1.0 / math.sqrt(max(1, x[0].numel()) * A_MAX)
            return fake_quantize_learnable(x, self.act_scale, self.act_zero_point, A_MIN, A_MAX, None, g)
        if self.training or self.observer.min_val.numel() == 0:
            self.observer(x)
        s, z = self.activation_qparams()
        return fake_quantize(x, s, z, A_MIN, A_MAX)

    def forward(self, x: Tensor) -> Tensor:
        xq, wq, m = self.fake_input(x), self.fake_weight(), self.module
        if isinstance(m, nn.Linear):
            return F.linear(xq, wq, m.bias)
        if isinstance(m, nn.Conv2d):
            return F.conv2d(xq, wq, m.bias, m.stride, m.padding, m.dilation)
        return F.conv_transpose2d(xq, wq, m.bias, m.stride, m.padding, m.output_padding, 1, m.dilation)

    def to_int8(self) -> nn.Module:
        scale = self.current_weight_scale().detach().abs().reshape(-1)
        act = self.activation_qparams()
        m = self.module
        if isinstance(m, nn.Linear):
            return Int8Linear._from_weight(m.weight, m.bias, act, scale)
        if isinstance(m, nn.Conv2d):
            return Int8Conv2d.from_float(m, act, scale)
        return Int8ConvTranspose2d.from_float(m, act, scale)


def prepare_qat_(model: nn.Module, config: QATConfig | None = None, filter_fn: FilterFn | None = None) -> nn.Module:
    """Wrap every selected Linear / Conv2d / ConvTranspose2d (groups=1) in a :class:`QATModule`
    (``quantize_`` with ``QATConfig(step='prepare')``). Build the optimizer afterwards (LSQ adds
    scale parameters)."""
    from dataclasses import replace

    from edgegen.quant.api import quantize_

    config = QATConfig() if config is None else config
    if not isinstance(config, QATConfig):
        raise TypeError(f"config: expected a QATConfig, got {type(config).__name__}")
    return quantize_(model, replace(config, step="prepare"), filter_fn)


def convert_(model: nn.Module) -> nn.Module:
    """Replace every :class:`QATModule` by its integer module, with the trained weight scales and
    activation parameters: the integer model computes what the QAT model computes in eval mode."""
    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, QATModule)]
    if not targets:
        raise ValueError("model: no QATModule to convert (run prepare_qat_ first)")
    for name, m in targets:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, m.to_int8())
    return model
