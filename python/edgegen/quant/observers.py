"""Observers: record statistics of the tensors that pass through them (the C++ kernels do the
passes over the data) and turn them into quantization parameters."""

from __future__ import annotations

import torch
from torch import Tensor, nn

_EPS = torch.finfo(torch.float32).eps


def qparams_from_range(lo: Tensor, hi: Tensor, quant_min: int, quant_max: int, symmetric: bool = False
                       ) -> tuple[Tensor, Tensor]:
    """(scale float32, zero_point int64) of ranges [lo, hi] (tensors, per channel or 0-d), extended
    to include 0. Affine: scale = (hi - lo) / (qmax - qmin), zero_point = qmin - round(lo / scale),
    clamped. Symmetric: scale = max(|lo|, |hi|) / ((qmax - qmin) / 2), zero point at the middle of
    the range (0 for [-128, 127] or [-127, 127]; 128 for [0, 255])."""
    lo = torch.minimum(lo.float(), torch.zeros_like(lo, dtype=torch.float32))
    hi = torch.maximum(hi.float(), torch.zeros_like(hi, dtype=torch.float32))
    if symmetric:
        amax = torch.maximum(-lo, hi)
        scale = (amax / ((quant_max - quant_min) / 2)).clamp_min(_EPS)
        mid = 0 if quant_min < 0 else (quant_min + quant_max + 1) // 2
        zp = torch.full_like(scale, mid, dtype=torch.int64)
    else:
        scale = ((hi - lo) / (quant_max - quant_min)).clamp_min(_EPS)
        zp = (quant_min - torch.round(lo / scale)).clamp(quant_min, quant_max).to(torch.int64)
    return scale, zp


class Observer(nn.Module):
    """Base: ``forward(x)`` records and returns ``x``; ``calculate_qparams()`` gives (scale,
    zero_point) for ``[quant_min, quant_max]``. ``axis`` makes it per channel."""

    def __init__(self, quant_min: int = 0, quant_max: int = 127, symmetric: bool = False, axis: int | None = None):
        super().__init__()
        if not quant_min < quant_max:
            raise ValueError(f"quant_min/quant_max: expected quant_min < quant_max, got [{quant_min}, {quant_max}]")
        self.quant_min, self.quant_max, self.symmetric, self.axis = int(quant_min), int(quant_max), symmetric, axis
        self.register_buffer("min_val", torch.tensor([]))
        self.register_buffer("max_val", torch.tensor([]))

    def _minmax(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return torch.ops.edgegen.observe_minmax(x.detach(), self.axis)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The statistics' shape is known only once data has been seen (empty, then one value or
        # one per channel): a fresh observer takes the shape of the saved one, or drops back to empty.
        for name, buf in list(self._buffers.items()):
            saved = state_dict.get(prefix + name)
            if buf is not None and isinstance(saved, Tensor) and saved.shape != buf.shape and (
                    buf.numel() == 0 or saved.numel() == 0):
                self._buffers[name] = torch.empty(saved.shape, dtype=buf.dtype, device=buf.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        lo, hi = self._minmax(x)
        self._update(x, lo, hi)
        return x

    def _update(self, x: Tensor, lo: Tensor, hi: Tensor) -> None:
        if self.min_val.numel() == 0:
            self.min_val, self.max_val = lo, hi
        else:
            self.min_val, self.max_val = torch.minimum(self.min_val, lo), torch.maximum(self.max_val, hi)

    def range(self) -> tuple[Tensor, Tensor]:
        if self.min_val.numel() == 0:
            raise RuntimeError(f"{type(self).__name__}: no data observed yet (run calibration batches first)")
        return self.min_val, self.max_val

    def calculate_qparams(self) -> tuple[Tensor, Tensor]:
        lo, hi = self.range()
        return qparams_from_range(lo, hi, self.quant_min, self.quant_max, self.symmetric)


class MinMaxObserver(Observer):
    """The running minimum and maximum."""


class MovingAverageMinMaxObserver(Observer):
    """Exponential moving averages of the per-batch minimum and maximum."""

    def __init__(self, averaging_constant: float = 0.01, **kw):
        super().__init__(**kw)
        if not 0.0 < averaging_constant <= 1.0:
            raise ValueError(f"averaging_constant: expected a value in (0, 1], got {averaging_constant!r}")
        self.c = float(averaging_constant)

    def _update(self, x, lo, hi):
        if self.min_val.numel() == 0:
            self.min_val, self.max_val = lo, hi
        else:
            self.min_val = self.min_val + self.c * (lo - self.min_val)
            self.max_val = self.max_val + self.c * (hi - self.max_val)


class PercentileObserver(Observer):
    """Clips at the ``percentile`` of the values (and ``100 - percentile`` below), from a histogram
    that is re-binned when a batch widens the range (per tensor only)."""

    def __init__(self, percentile: float = 99.99, bins: int = 2048, **kw):
        super().__init__(**kw)
        if kw.get("axis") is not None:
            raise ValueError("axis: PercentileObserver is per tensor")
        if not 50.0 < percentile <= 100.0:
            raise ValueError(f"percentile: expected a value in (50, 100], got {percentile!r}")
        self.percentile, self.bins = float(percentile), int(bins)
        self.register_buffer("histogram", torch.zeros(self.bins, dtype=torch.float64))

    def _update(self, x, lo, hi):
        lo_new = lo if self.min_val.numel() == 0 else torch.minimum(self.min_val, lo)
        hi_new = hi if self.max_val.numel() == 0 else torch.maximum(self.max_val, hi)
        if self.min_val.numel() and (lo_new < self.min_val or hi_new > self.max_val):
            # Re-bin: each old bin's mass goes to the new bin holding its centre.
            w_old = (self.max_val - self.min_val) / self.bins
            centres = self.min_val + (torch.arange(self.bins, device=self.min_val.device) + 0.5) * w_old
            w_new = (hi_new - lo_new) / self.bins
            idx = ((centres - lo_new) / w_new).floor().clamp(0, self.bins - 1).long()
            self.histogram = torch.zeros_like(self.histogram).index_add_(0, idx.to(self.histogram.device),
                                                                         self.histogram)
        self.min_val, self.max_val = lo_new, hi_new
        counts = torch.ops.edgegen.observe_histogram(x.detach(), self.bins, float(lo_new),
                                                     float(hi_new))
        self.histogram += counts.to(self.histogram.device, torch.float64)  # the observer may live elsewhere

    def calculate_qparams(self):
        lo, hi = self.range()
        cdf = torch.cumsum(self.histogram, 0) / self.histogram.sum()
        w = (hi - lo) / self.bins
        q = self.percentile / 100.0
        upper = lo + (int(torch.searchsorted(cdf, torch.tensor([q], dtype=torch.float64)).clamp(max=self.bins - 1)) + 1) * w
        lower = lo + int(torch.searchsorted(cdf, torch.tensor([1.0 - q], dtype=torch.float64))) * w
        return qparams_from_range(lower.reshape(1), upper.reshape(1), self.quant_min, self.quant_max, self.symmetric)


class MSEObserver(Observer):
    """Chooses the clipping range [lo, hi] * s / steps (s = 1..steps) that minimises the
    fake-quantization squared error over the observed values (a deterministic strided sample of
    at most ``max_samples`` per batch is kept; per tensor only)."""

    def __init__(self, steps: int = 100, max_samples: int = 1 << 20, **kw):
        super().__init__(**kw)
        if kw.get("axis") is not None:
            raise ValueError("axis: MSEObserver is per tensor")
        self.steps, self.max_samples = int(steps), int(max_samples)
        self.samples: list[Tensor] = []

    def _update(self, x, lo, hi):
        super()._update(x, lo, hi)
        flat = x.detach().float().flatten().cpu()
        stride = max(1, flat.numel() // self.max_samples)
        self.samples.append(flat[::stride].clone())

    def calculate_qparams(self):
        lo, hi = self.range()
        data = torch.cat(self.samples)
        if self.symmetric:
            amax = float(torch.maximum(-lo, hi))
            lo_c, hi_c = torch.ops.edgegen.mse_clip_range(data, -amax, amax, self.quant_min, self.quant_max, self.steps)
        else:
            lo_c, hi_c = torch.ops.edgegen.mse_clip_range(data, float(lo), float(hi), self.quant_min, self.quant_max,
                                                          self.steps)
        return qparams_from_range(torch.tensor([lo_c]), torch.tensor([hi_c]), self.quant_min, self.quant_max,
                                  self.symmetric)


OBSERVERS = {"minmax": MinMaxObserver, "moving_average": MovingAverageMinMaxObserver,
             "percentile": PercentileObserver, "mse": MSEObserver}
