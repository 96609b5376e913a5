"""DCGAN and Beta-VAE: architecture sizes, init, loss terms, lightweight variants, bad input."""

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from edgegen.models import (BetaVAE, BetaVAEConfig, DCGANConfig, DCGANDiscriminator, DCGANGenerator,
                            parameter_count)


def test_dcgan_sizes_and_paper_init():
    g, d = DCGANGenerator(), DCGANDiscriminator()
    # nz=100, ngf=ndf=64: the sums of the paper's layer shapes.
    assert parameter_count(g) == 3_576_704 and parameter_count(d) == 2_765_568
    convs = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)])
    assert abs(convs.std().item() - 0.02) < 0.001 and abs(convs.mean().item()) < 0.001
    bn = torch.cat([m.weight for m in d.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert abs(bn.mean().item() - 1.0) < 0.01


def test_dcgan_train_step():
    g, d = DCGANGenerator(DCGANConfig(ngf=16, ndf=16)), DCGANDiscriminator(DCGANConfig(ngf=16, ndf=16))
    fake = g(torch.randn(4, 100))
    assert fake.shape == (4, 3, 64, 64) and fake.abs().max() <= 1
    logits = d(fake)
    assert logits.shape == (4,)
    torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.ones(4)).backward()
    assert all(p.grad is not None for p in g.parameters())


@pytest.mark.parametrize("kind", ["standard", "depthwise_separable"])
@pytest.mark.parametrize("se", [False, True])
def test_lightweight_variants_keep_shapes(kind, se):
    cfg = DCGANConfig(conv=kind, squeeze_excite=se)
    g, d = DCGANGenerator(cfg), DCGANDiscriminator(cfg)
    assert g(torch.randn(2, 100)).shape == (2, 3, 64, 64) and d(torch.randn(2, 3, 64, 64)).shape == (2,)
    v = BetaVAE(BetaVAEConfig(conv=kind, squeeze_excite=se))
    assert v(torch.rand(2, 3, 64, 64) * 2 - 1)["recon"].shape == (2, 3, 64, 64)
    if kind == "depthwise_separable" and not se:
        assert parameter_count(g) == 1_008_704  # docs/models.md: 1.01M instead of 3.58M
        assert parameter_count(g) < parameter_count(DCGANGenerator()) / 3
        assert parameter_count(v) < parameter_count(BetaVAE())


def test_beta_vae_terms():
    torch.manual_seed(0)
    v = BetaVAE(BetaVAEConfig(latent_dim=10, beta=4.0))
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    out = v(x, generator=torch.Generator().manual_seed(0))
    kl_ref = kl_divergence(Normal(out["mu"], (0.5 * out["logvar"]).exp()), Normal(0.0, 1.0)).sum(1).mean()
    torch.testing.assert_close(out["kl"], kl_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["reconstruction"], (out["recon"] - x).pow(2).sum((1, 2, 3)).mean())
    torch.testing.assert_close(out["loss"], out["reconstruction"] + 4.0 * out["kl"])
    out["loss"].backward()
    assert all(p.grad is not None for p in v.parameters())
    assert v.sample(5).shape == (5, 3, 64, 64) and v.reconstruct(x).shape == x.shape
    assert out["mu"].shape == (3, 10)


def test_bad_input():
    with pytest.raises(ValueError, match=r"images: expected \[B, 3, 64, 64\]"):
        DCGANDiscriminator()(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"images: expected \[B, 3, 64, 64\]"):
        DCGANDiscriminator()(torch.randn(2, 1, 64, 64))
    with pytest.raises(ValueError, match=r"z: expected \[B, 100\]"):
        DCGANGenerator()(torch.randn(2, 64))
    with pytest.raises(ValueError, match=r"x: expected \[B, 3, 64, 64\]"):
        BetaVAE()(torch.randn(2, 3, 48, 48))
    with pytest.raises(ValueError, match="conv"):
        DCGANConfig(conv="fancy")
    with pytest.raises(ValueError, match="beta"):
        BetaVAEConfig(beta=-1.0)
    with pytest.raises(ValueError, match="ngf: expected a positive int"):
        DCGANConfig(ngf=True)  # a bool is not a width
    with pytest.raises(ValueError, match="latent_dim: expected a positive int"):
        BetaVAEConfig(latent_dim=0)


@pytest.mark.parametrize("call,exc,match", [
    (lambda v: v(torch.zeros(0, 3, 64, 64)), ValueError,
     r"x: expected at least one image .*got shape \(0, 3, 64, 64\)"),
    (lambda v: v(torch.zeros(2, 3, 64, 64, dtype=torch.uint8)), TypeError, r"x: expected floating-point images"),
    (lambda v: v(torch.zeros(2, 3, 64, 64), eps=torch.zeros(2, 32, dtype=torch.float64)), TypeError,
     r"eps: expected dtype torch.float32 \(the model's\), got torch.float64"),
    (lambda v: v(torch.zeros(2, 3, 64, 64), eps=torch.zeros(2, 32, device="meta")), ValueError,
     r"eps: expected a tensor on cpu \(the model's device\), got one on meta"),
    (lambda v: v(torch.zeros(2, 3, 64, 64), eps=torch.zeros(2, 31)), ValueError, r"eps: expected shape \(2, 32\)"),
    (lambda v: v.decode(torch.zeros(2, 31)), ValueError, r"z: expected latents of shape \[B, 32\], got \(2, 31\)"),
    (lambda v: v.decode(torch.zeros(2, 32, 1)), ValueError,
     r"z: expected latents of shape \[B, 32\], got \(2, 32, 1\)"),
    (lambda v: v.decode(torch.zeros(2, 32, dtype=torch.long)), TypeError, r"z: expected floating-point latents"),
    (lambda v: v.sample(-1), ValueError, r"n: expected an int >= 0, got -1"),
    (lambda v: BetaVAEConfig(beta=float("inf")), ValueError, r"beta: expected a finite number >= 0, got inf"),
    (lambda v: BetaVAEConfig(beta="1"), ValueError, r"beta: expected a finite number >= 0, got '1'"),
], ids=["empty-batch", "integer-images", "eps-dtype", "eps-device", "eps-shape", "z-width", "z-rank", "z-integer",
        "sample-negative", "beta-inf", "beta-str"])
def test_vae_bad_input_names_the_argument(call, exc, match):
    """An empty batch used to give NaN losses; the others failed deep inside a layer."""
    torch.manual_seed(0)
    with pytest.raises(exc, match=match):
        call(BetaVAE())


def test_vae_sample_follows_the_model_dtype_and_allows_zero():
    v = BetaVAE(BetaVAEConfig(latent_dim=8)).double()
    g = torch.Generator().manual_seed(0)
    images = v.sample(2, generator=g)
    z = torch.randn(2, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert images.dtype == torch.float64 and torch.equal(images, v.decode(z))
    assert v.sample(0).shape == (0, 3, 64, 64)
    from edgegen.quant import Bf16Config, Fp16Config, quantize_

    for config in (Fp16Config(), Bf16Config()):  # 16-bit layers cast their inputs: images stay float32
        q = quantize_(BetaVAE(BetaVAEConfig(latent_dim=8)).eval(), config)
        assert q.sample(2, generator=torch.Generator().manual_seed(0)).dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64], ids=["bfloat16", "float64"])
def test_sampling_and_example_inputs_follow_a_model_moved_to_another_dtype(dtype):
    """A bfloat16 VAE drew float32 latents and failed in its first layer (Float and BFloat16)."""
    torch.manual_seed(0)
    v = BetaVAE(BetaVAEConfig(latent_dim=8)).to(dtype).eval()
    images = v.sample(2, generator=torch.Generator().manual_seed(0))
    z = torch.randn(2, 8, generator=torch.Generator().manual_seed(0), dtype=dtype)
    assert images.dtype == dtype and torch.equal(images, v.decode(z))
    assert v.example_inputs(2)[0].dtype == dtype and v(*v.example_inputs(2))["loss"].dtype == dtype
    g, d = (m.to(dtype).eval() for m in DCGANConfig(nz=8, ngf=4, ndf=4).build())
    for model in (g, d):
        ex = model.example_inputs(2)
        assert ex[0].dtype == dtype and model(*ex).dtype == dtype


def test_sampling_follows_the_dtype_of_a_factorized_first_layer():
    """A float64 VAE whose decoder starts with a low-rank layer samples float64 (the dtype came
    from plain Linear / convolution layers only, so the default float32 was fed to float64
    weights)."""
    from edgegen.reduce import LowRankConfig, reduce_

    m = BetaVAE(BetaVAEConfig()).double().eval()
    reduce_(m, LowRankConfig(rank=8), filter_fn=lambda mod, name: name == "decoder.0")
    assert type(m.decoder[0]).__name__ == "LowRankLinear"
    assert m.sample(2).dtype == torch.float64
    assert m(*m.example_inputs())["recon"].dtype == torch.float64
