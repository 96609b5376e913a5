"""Beta-VAE metrics: the ELBO terms equal the model's own loss terms for the same posterior
sample, reconstructions are scored from the posterior mean, and batching does not change the
averages."""

import pytest
import torch

from edgegen.eval import ssim, psnr
from edgegen.eval.vae import vae_metrics
from edgegen.models import BetaVAE
from edgegen.models.vae import BetaVAEConfig


@pytest.fixture
def vae():
    torch.manual_seed(0)
    return BetaVAE(BetaVAEConfig(latent_dim=8, beta=4.0)).eval()


def test_terms_equal_the_models_own_loss(vae):
    x = torch.rand(6, 3, 64, 64) * 2 - 1
    m = vae_metrics(vae, x, seed=5)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        out = vae(x, generator=g)  # the same single posterior sample per image
    assert m["elbo_reconstruction"] == pytest.approx(out["reconstruction"].item(), rel=1e-5)
    assert m["elbo_kl"] == pytest.approx(out["kl"].item(), rel=1e-5)
    assert m["neg_elbo"] == pytest.approx(out["loss"].item(), rel=1e-5)
    with torch.no_grad():
        rec = (vae.reconstruct(x).clamp(-1, 1) + 1) / 2
    ref = (x + 1) / 2
    assert m["recon_mse"] == pytest.approx((rec - ref).pow(2).mean().item(), rel=1e-5)
    assert m["recon_ssim"] == pytest.approx(ssim(rec, ref).item(), rel=1e-6)
    assert m["recon_psnr_db"] == pytest.approx(psnr(rec, ref).item(), rel=1e-6)
    assert m["images"] == 6


@pytest.mark.parametrize("dtype, rel", [(torch.float64, 1e-5), (torch.bfloat16, 3e-2)], ids=["float64", "bfloat16"])
def test_a_model_in_another_dtype_reads_its_own_dtype_and_scores_the_same(vae, dtype, rel):
    """float32 images into a VAE moved to float64 / bfloat16: cast to the model's dtype for it,
    compared with the images as given; float64 reproduces float32's numbers (to float32 rounding), bfloat16 near them."""
    import copy

    x = torch.rand(4, 3, 64, 64) * 2 - 1
    want = vae_metrics(vae, x, seed=1)
    got = vae_metrics(copy.deepcopy(vae).to(dtype), x, seed=1)
    for k in ("recon_mse", "recon_ssim", "recon_psnr_db", "elbo_reconstruction"):
        assert got[k] == pytest.approx(want[k], rel=rel), k
    assert got["images"] == 4


def test_batches_and_prefix(vae):
    x = torch.rand(7, 3, 64, 64) * 2 - 1
    whole = vae_metrics(vae, x)
    parts = vae_metrics(vae, [(x[:3], None), (x[3:], None)])
    for k in ("recon_mse", "recon_ssim", "recon_psnr_db"):  # deterministic terms: any batching
        assert parts[k] == pytest.approx(whole[k], rel=1e-6)
    assert vae_metrics(vae, x, max_images=4)["images"] == 4
    assert vae.training is False


def test_bad_input(vae):
    with pytest.raises(ValueError, match=r"images: expected values in \[-1, 1\]"):
        vae_metrics(vae, torch.rand(2, 3, 64, 64) * 3)
    with pytest.raises(ValueError, match="images: no images"):
        vae_metrics(vae, torch.zeros(0, 3, 64, 64))
    with pytest.raises(ValueError, match=r"x: expected \[B, 3, 64, 64\]"):
        vae_metrics(vae, torch.zeros(2, 3, 32, 32))
    with pytest.raises(TypeError, match="model: expected an edgegen BetaVAE"):
        vae_metrics(torch.nn.Linear(2, 2), torch.zeros(2, 3, 64, 64))


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_images_are_refused_up_front(vae, value):
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    x[0, 0, 0, 0] = value  # NaN passes every range comparison
    with pytest.raises(ValueError, match=r"images: expected finite values in \[-1, 1\], got 1 NaN or infinite"):
        vae_metrics(vae, [x[1:], x])  # in the second batch, after one was measured

