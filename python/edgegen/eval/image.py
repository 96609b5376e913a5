"""Image quality of reconstructions: SSIM (Wang et al. 2004) and PSNR.

SSIM uses the paper's settings: an 11 x 11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03,
population (not sample) variances, the map averaged over the pixels whose window lies inside the
image and over channels. That is scikit-image's ``structural_similarity(..., gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=...)``, which the tests check to 1e-4.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["ssim", "psnr"]

_RADIUS = 5  # int(3.5 * 1.5 + 0.5): the Gaussian truncated at 3.5 sigma, an 11-tap window
_SIGMA = 1.5


def _check_pair(x: Tensor, y: Tensor, data_range: float, metric: str, min_size: int = 1) -> None:
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: expected a tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name}: expected images [N, C, H, W], got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name}: expected floating-point images, got {t.dtype}")
    if x.shape != y.shape:
        raise ValueError(f"y: expected the shape of x {tuple(x.shape)}, got {tuple(y.shape)}")
    if not (isinstance(data_range, (int, float)) and math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range: expected a finite value > 0, got {data_range!r}")
    if x.shape[0] == 0:
        raise ValueError(f"x: {metric} needs at least one image [N >= 1, C, H, W], got a batch of 0 "
                         f"(shape {tuple(x.shape)})")
    if x.shape[1] == 0:
        raise ValueError(f"x: {metric} needs images with at least one channel, got shape {tuple(x.shape)}")
    if min(x.shape[-2:]) < min_size:
        raise ValueError(f"x: {metric} needs images of at least {min_size} x {min_size} pixels, got "
                         f"{tuple(x.shape[-2:])}")
    tol = 1e-6 * data_range
    for name, t in (("x", x), ("y", y)):
        if t.numel() and (not torch.isfinite(t).all() or t.min() < -tol or t.max() > data_range + tol):
            raise ValueError(f"{name}: expected values in [0, {data_range}] (data_range), got "
                             f"[{float(t.min()):.4g}, {float(t.max()):.4g}]; rescale the images first "
                             "(e.g. (x + 1) / 2 for [-1, 1] outputs)")


def _gaussian_window(dtype, device) -> Tensor:
    r = torch.arange(-_RADIUS, _RADIUS + 1, dtype=dtype, device=device)
    w = torch.exp(-(r * r) / (2 * _SIGMA * _SIGMA))
    return w / w.sum()


def ssim(x: Tensor, y: Tensor, data_range: float = 1.0, reduction: str = "mean") -> Tensor:
    """Structural similarity of image batches [N, C, H, W] (H, W >= 11) with values in
    [0, data_range]: one value per image (mean over channels and pixels), averaged over the batch
    unless ``reduction='none'``. Computed in float64.

    Examples:
        >>> import torch
        >>> x = torch.rand(2, 3, 32, 32)
        >>> float(ssim(x, x))
        1.0
        >>> bool(ssim(x, (x + 0.1 * torch.randn_like(x)).clamp(0, 1)) < 1)
        True
    """
    _check_pair(x, y, data_range, "SSIM", min_size=2 * _RADIUS + 1)
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction: expected 'mean' or 'none', got {reduction!r}")
    n, c, h, w = x.shape
    xd = x.detach().to(torch.float64).reshape(n * c, 1, h, w)
    yd = y.detach().to(torch.float64).reshape(n * c, 1, h, w)
    g = _gaussian_window(torch.float64, x.device)
    # The separable 'valid' Gaussian filter (only windows inside the image) as two products with
    # banded matrices: float64 matrix products run on BLAS, float64 convolutions do not.
    taps = 2 * _RADIUS + 1

    def band(size: int) -> Tensor:
        m = torch.zeros(size, size - taps + 1, dtype=torch.float64, device=x.device)
        for o in range(size - taps + 1):
            m[o:o + taps, o] = g
        return m

    bw, bh = band(w), band(h).t()

    def blur(t: Tensor) -> Tensor:  # [M, 1, H, W] -> [M, 1, H - 10, W - 10]
        return bh @ (t @ bw)

    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mx, my = blur(xd), blur(yd)
    vx = blur(xd * xd) - mx * mx
    vy = blur(yd * yd) - my * my
    cxy = blur(xd * yd) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    per_image = s.reshape(n, c, -1).mean(dim=(1, 2))
    return per_image.mean() if reduction == "mean" else per_image


def psnr(x: Tensor, y: Tensor, data_range: float = 1.0, reduction: str = "mean") -> Tensor:
    """Peak signal-to-noise ratio 10 log10(data_range^2 / MSE) per image [N, C, H, W] (inf for
    identical images), averaged over the batch unless ``reduction='none'``. Float64.

    Examples:
        >>> import torch
        >>> x = torch.zeros(1, 1, 4, 4)
        >>> round(float(psnr(x, x + 0.1)), 6)        # 10 log10(1 / 0.01)
        20.0
    """
    _check_pair(x, y, data_range, "PSNR")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction: expected 'mean' or 'none', got {reduction!r}")
    diff = x.detach().to(torch.float64) - y.detach().to(torch.float64)
    mse = diff.reshape(x.shape[0], -1).pow(2).mean(dim=1)
    per_image = 10.0 * torch.log10(data_range * data_range / mse)
    return per_image.mean() if reduction == "mean" else per_image
