"""SSIM and PSNR against scikit-image, on random and structured images, every batch/channel
layout; bad input named."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from edgegen.eval import psnr, ssim


def _pair(n, c, h, w, seed=0, noise=0.1, data_range=1.0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, c, h, w, generator=g, dtype=torch.float64)
    # Smooth structure plus noise, so SSIM is neither ~0 nor ~1.
    base = torch.nn.functional.avg_pool2d(base, 3, 1, 1)
    other = (base + noise * torch.randn(n, c, h, w, generator=g, dtype=torch.float64)).clamp(0, 1)
    return base * data_range, other * data_range


def _skimage_ssim(x, y, data_range):
    vals = []
    for i in range(x.shape[0]):
        a, b = x[i].numpy(), y[i].numpy()
        vals.append(structural_similarity(a, b, data_range=data_range, channel_axis=0, gaussian_weights=True,
                                          sigma=1.5, use_sample_covariance=False))
    return np.array(vals)


@pytest.mark.parametrize("shape", [(2, 1, 11, 11), (3, 3, 32, 32), (1, 3, 64, 48), (2, 1, 28, 40)],
                         ids=["smallest", "rgb32", "rgb64x48", "gray28x40"])
@pytest.mark.parametrize("data_range", [1.0, 255.0], ids=["range1", "range255"])
def test_ssim_matches_scikit_image(shape, data_range):
    x, y = _pair(*shape, data_range=data_range)
    got = ssim(x, y, data_range, reduction="none")
    ref = _skimage_ssim(x, y, data_range)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-4, rtol=0)
    assert ssim(x, y, data_range).item() == pytest.approx(ref.mean(), abs=1e-4)


def test_ssim_float32_inputs_and_identity():
    x, y = _pair(2, 3, 32, 32, seed=1)
    got = ssim(x.float(), y.float())
    ref = _skimage_ssim(x.float().double(), y.float().double(), 1.0).mean()
    assert got.item() == pytest.approx(ref, abs=1e-4)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-12)


def test_psnr_matches_scikit_image():
    x, y = _pair(3, 3, 16, 16, seed=2, noise=0.05)
    got = psnr(x, y, reduction="none")
    ref = [peak_signal_noise_ratio(x[i].numpy(), y[i].numpy(), data_range=1.0) for i in range(3)]
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10)
    assert math.isinf(psnr(x, x).item())


def test_bad_input_names_the_argument():
    x, y = _pair(1, 1, 16, 16)
    with pytest.raises(ValueError, match="at least 11"):
        ssim(x[..., :10, :10], y[..., :10, :10])
    with pytest.raises(ValueError, match=r"x: expected values in \[0, 1"):
        ssim(x * 2 - 1, y)
    with pytest.raises(ValueError, match="y: expected the shape"):
        ssim(x, y[..., :12])
    with pytest.raises(ValueError, match="images"):
        ssim(x[0], y[0])
    with pytest.raises(ValueError, match="data_range"):
        psnr(x, y, data_range=0)
    with pytest.raises(TypeError, match="floating-point"):
        psnr((x * 255).to(torch.uint8), (y * 255).to(torch.uint8))


@pytest.mark.parametrize("metric, name", [(ssim, "SSIM"), (psnr, "PSNR")], ids=["ssim", "psnr"])
def test_empty_batches_and_images_name_the_metric(metric, name):
    with pytest.raises(ValueError, match=rf"x: {name} needs at least one image \[N >= 1, C, H, W\], got a batch of 0"):
        metric(torch.zeros(0, 3, 32, 32), torch.zeros(0, 3, 32, 32))
    with pytest.raises(ValueError, match=f"x: {name} needs images with at least one channel"):
        metric(torch.zeros(1, 0, 32, 32), torch.zeros(1, 0, 32, 32))
    size = 11 if name == "SSIM" else 1
    with pytest.raises(ValueError, match=f"x: {name} needs images of at least {size} x {size} pixels, got \\(0, 16\\)"):
        metric(torch.zeros(1, 1, 0, 16), torch.zeros(1, 1, 0, 16))
