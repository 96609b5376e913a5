"""Structured pruning: channel groups found from the model, masks equal to torch.nn.utils.prune's
ln_structured, physically smaller models whose outputs equal the masked ones, attention heads."""

import copy

import pytest
import torch
import torch.nn.functional as F
import torch.nn.utils.prune as tprune
from torch import nn

from edgegen.models.dcgan import DCGANConfig, DCGANDiscriminator, DCGANGenerator
from edgegen.models.gpt2 import GPT2, GPT2Config
from edgegen.models.vae import BetaVAE, BetaVAEConfig
from edgegen.prune import ChannelConfig, HeadConfig, find_channel_groups, get_mask, prune_, shrink


def nparams(m):
    return sum(p.numel() for p in m.parameters())


def outputs(model, inputs, train=False):
    model.train(train)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        out = model(*inputs)
    return out if isinstance(out, torch.Tensor) else out["recon"]


def assert_same(masked, small, inputs):
    for train in (False, True):  # eval (running stats) and train (batch statistics)
        a = outputs(copy.deepcopy(masked), inputs, train)
        b = outputs(copy.deepcopy(small), inputs, train)
        assert a.shape == b.shape
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def randomise_bn(model):
    """Non-trivial BatchNorm statistics, so that a mistake in slicing them shows."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.normal_(0, 0.1)


@pytest.mark.parametrize("p", [1, 2])
def test_channel_mask_equals_ln_structured(p):
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 4, 3))
    ref = copy.deepcopy(model[0])
    prune_(model, ChannelConfig(0.5, importance="l1" if p == 1 else "l2"), example_inputs=torch.randn(1, 3, 9, 9))
    tprune.ln_structured(ref, "weight", amount=0.5, n=p, dim=0)
    assert torch.equal(get_mask(model[0]), ref.weight_mask.bool())
    # The whole group is masked: bias, BatchNorm scale and shift, and the consumer's input channels.
    kept = ref.weight_mask.bool()[:, 0, 0, 0]
    assert torch.equal(get_mask(model[0], "bias"), kept)
    assert torch.equal(get_mask(model[1], "weight"), kept) and torch.equal(get_mask(model[1], "bias"), kept)
    assert torch.equal(get_mask(model[3])[0, :, 0, 0], kept)


def dcgan_expected(cfg, keep, which):
    if which == "G":
        c = [keep(cfg.ngf * 8), keep(cfg.ngf * 4), keep(cfg.ngf * 2), keep(cfg.ngf)]
        n = cfg.nz * c[0] * 16 + 2 * c[0]
        n += sum(a * b * 16 + 2 * b for a, b in zip(c, c[1:]))
        return n + c[-1] * cfg.nc * 16
    c = [keep(cfg.ndf), keep(cfg.ndf * 2), keep(cfg.ndf * 4), keep(cfg.ndf * 8)]
    n = cfg.nc * c[0] * 16 + sum(a * b * 16 + 2 * b for a, b in zip(c, c[1:]))
    return n + c[-1] * 16


@pytest.mark.parametrize("which", ["G", "D"])
@pytest.mark.parametrize("amount", [0.5, 0.3])
def test_dcgan_physically_pruned_equals_masked(which, amount):
    cfg = DCGANConfig(ngf=16, ndf=16)
    model = DCGANGenerator(cfg) if which == "G" else DCGANDiscriminator(cfg)
    randomise_bn(model)
    inputs = model.example_inputs(3)
    dense = nparams(model)
    prune_(model, ChannelConfig(amount), example_inputs=inputs)
    small = shrink(model, inputs)
    assert_same(model, small, inputs)
    cc = ChannelConfig(amount)
    assert nparams(small) == dcgan_expected(cfg, cc.channels_to_keep, which) < dense
    assert nparams(model) == dense  # the masked model keeps its shapes; shrink copied it


def vae_expected(keep, latent=32, nc=3):
    c = [keep(32), keep(32), keep(64), keep(64)]
    n, cin = 0, nc
    for co in c:
        n += cin * co * 16 + co
        cin = co
    h = keep(256)
    n += c[-1] * 16 * h + h + h * 2 * latent + 2 * latent  # flatten -> linear: 16 features per channel
    n += latent * h + h + h * c[-1] * 16 + c[-1] * 16      # decoder linears, unflatten to c[-1] x 4 x 4
    rc = list(reversed(c)) + [nc]
    n += sum(a * b * 16 + b for a, b in zip(rc, rc[1:]))
    return n


def test_beta_vae_physically_pruned_equals_masked():
    model = BetaVAE()
    inputs = model.example_inputs(3)
    prune_(model, ChannelConfig(0.5), example_inputs=inputs)
    small = shrink(model, inputs)
    assert_same(model, small, inputs)
    assert nparams(small) == vae_expected(ChannelConfig(0.5).channels_to_keep)
    assert small.decoder[4].unflattened_size == (32, 4, 4)


@pytest.mark.parametrize("make", [
    lambda: DCGANGenerator(DCGANConfig(ngf=8, conv="depthwise_separable", squeeze_excite=True)),
    lambda: DCGANDiscriminator(DCGANConfig(ndf=8, conv="depthwise_separable", squeeze_excite=True)),
    lambda: BetaVAE(BetaVAEConfig(conv="depthwise_separable", squeeze_excite=True)),
], ids=["G-dw-se", "D-dw-se", "VAE-dw-se"])
def test_lightweight_variants_shrink_exactly(make):
    model = make()
    randomise_bn(model)
    inputs = model.example_inputs(2)
    dense = nparams(model)
    prune_(model, ChannelConfig(0.5), example_inputs=inputs)
    small = shrink(model, inputs)
    assert_same(model, small, inputs)
    assert nparams(small) < 0.55 * dense  # about half: the input and output widths are fixed


def test_round_to_and_at_least_one_channel():
    model = DCGANGenerator(DCGANConfig(ngf=16))
    inputs = model.example_inputs()
    prune_(model, ChannelConfig(0.5, round_to=24), example_inputs=inputs)
    small = shrink(model, inputs)
    outs = [m.out_channels for m in small.net if isinstance(m, nn.ConvTranspose2d)][:-1]
    assert outs == [72, 48, 24, 16]  # half of [128, 64, 32, 16], rounded up to a multiple of 24, capped
    assert all(o % 24 == 0 or o == full for o, full in zip(outs, [128, 64, 32, 16]))
    tiny = DCGANDiscriminator(DCGANConfig(ndf=2))
    prune_(tiny, ChannelConfig(0.99), example_inputs=tiny.example_inputs())
    small = shrink(tiny, tiny.example_inputs())
    assert [m.out_channels for m in small.net if isinstance(m, nn.Conv2d)][:-1] == [1, 1, 1, 1]


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 6, 1)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        h = F.relu(self.a(x))
        h = h + self.b(h)  # couples a's and b's output channels
        return self.head(F.relu(self.c(h)))


def test_residual_add_couples_producers():
    model = Residual()
    x = torch.randn(2, 3, 8, 8)
    groups = [g for g in find_channel_groups(model, x) if g.prunable]
    big = next(g for g in groups if g.channels == 8)
    assert {id(s.module) for s in big.producers} == {id(model.a), id(model.b)}
    assert {id(s.module) for s in big.consumers} == {id(model.b), id(model.c)}
    prune_(model, ChannelConfig(0.5), example_inputs=x)
    small = shrink(model, x)
    assert (small.a.out_channels, small.b.in_channels, small.b.out_channels, small.c.in_channels) == (4, 4, 4, 4)
    assert small.c.out_channels == 3 and small.head.in_channels == 3
    torch.testing.assert_close(small(x), model(x), atol=1e-5, rtol=1e-5)


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(3, 4, 1)
        self.c = nn.Conv2d(8, 6, 1)
        self.head = nn.Conv2d(6, 1, 1)

    def forward(self, x):
        return self.head(F.relu(self.c(torch.cat([self.a(x), self.b(x)], dim=1))))


class HardCodedView(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 32)
        self.conv = nn.Conv2d(8, 2, 1)

    def forward(self, z):
        return self.conv(self.fc(z).view(z.shape[0], 8, 2, 2))


def test_unknown_ops_freeze_their_groups():
    x = torch.randn(2, 3, 4, 4)
    groups = find_channel_groups(Concat(), x)
    frozen = [g for g in groups if g.channels == 4]
    assert len(frozen) == 2 and all("cat" in g.frozen for g in frozen)
    model = Concat()
    prune_(model, ChannelConfig(0.5), example_inputs=x)  # only c's output group is prunable
    small = shrink(model, x)
    assert (small.a.out_channels, small.b.out_channels, small.c.out_channels) == (4, 4, 3)
    torch.testing.assert_close(small(x), model(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="no prunable channel group"):
        prune_(HardCodedView(), ChannelConfig(0.5), example_inputs=torch.randn(2, 4))


class ReusedConv(nn.Module):
    """``b`` called twice: its input and output channels belong to two groups each."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.out(torch.relu(self.b(torch.relu(self.b(torch.relu(self.a(x)))))))


class TiedConvs(nn.Module):
    """``c`` shares ``b``'s weight Parameter; ``d`` after them is free to prune."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 1), nn.Conv2d(6, 6, 1)
        self.c.weight = self.b.weight
        self.d, self.out = nn.Conv2d(6, 8, 3, padding=1), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.out(torch.relu(self.d(torch.relu(self.c(torch.relu(self.b(h)))))))


class PoolWithIndices(nn.Module):
    """Max pooling's values leave the model as a second output (a tuple-valued op)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        h = torch.relu(self.a(x))
        pooled, _ = F.max_pool2d(h, 2, return_indices=True)
        return self.b(h), pooled


def test_shared_or_reused_weights_freeze_their_groups():
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="no prunable channel group .*a shared weight"):
        prune_(ReusedConv(), ChannelConfig(0.5), example_inputs=x)  # was: a crash inside shrink
    groups = find_channel_groups(ReusedConv(), x)
    assert sum("used by 2 channel groups" in (g.frozen or "") for g in groups) == 3
    torch.manual_seed(0)
    model = TiedConvs().eval()
    ref = model(x)
    prune_(model, ChannelConfig(0.5), example_inputs=x)  # only d's output channels may go
    small = shrink(model, x)
    assert (small.a.out_channels, small.b.out_channels, small.d.out_channels) == (6, 6, 4)
    assert small.c.weight is small.b.weight  # the tie survives
    torch.testing.assert_close(small(x), model(x), atol=1e-5, rtol=1e-5)
    assert not torch.equal(model(x), ref)  # d was pruned


def test_tuple_outputs_are_followed_to_the_model_output():
    x = torch.randn(2, 3, 8, 8)
    groups = {g.channels: g for g in find_channel_groups(PoolWithIndices(), x)}
    assert groups[8].frozen == "reaches the model output"  # was: prunable, zeroing output channels
    with pytest.raises(ValueError, match="no prunable channel group"):
        prune_(PoolWithIndices(), ChannelConfig(0.5), example_inputs=x)


def test_shrink_keeps_qat_wrappers_and_cuts_their_scales():
    from edgegen.quant import QATConfig, QATModule, convert_, prepare_qat_

    torch.manual_seed(0)
    g = DCGANGenerator(DCGANConfig(nz=8, ngf=8))
    z = torch.randn(4, 8)
    prepare_qat_(g, QATConfig(weight="lsq", activation="ema"))
    g(z)  # observers and LSQ scales see a batch
    prune_(g, ChannelConfig(0.5), example_inputs=(z,))
    g.eval()
    small = shrink(g, (z,))  # checked against the masked QAT model; was: nothing removed
    assert sum(p.numel() for p in small.parameters()) < 0.5 * sum(p.numel() for p in g.parameters())
    wrapped = [m for m in small.modules() if isinstance(m, QATModule)]
    assert len(wrapped) == sum(isinstance(m, QATModule) for m in g.modules())
    for w in wrapped:
        channels = w.module.weight.shape[w.axis]
        assert w.weight_scale.shape == w.weight_zero_point.shape == (channels,)
    torch.testing.assert_close(convert_(copy.deepcopy(small))(z), small(z), rtol=1e-4, atol=1e-4)


def test_filter_fn_selects_groups_by_producer():
    model = DCGANDiscriminator(DCGANConfig(ndf=8))
    inputs = model.example_inputs()
    prune_(model, ChannelConfig(0.5), filter_fn=lambda m, name: name == "net.2", example_inputs=inputs)
    small = shrink(model, inputs)
    assert [m.out_channels for m in small.net if isinstance(m, nn.Conv2d)] == [8, 8, 32, 64, 1]


def test_taylor_channel_importance():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 2, 3))
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="taylor"):
        prune_(copy.deepcopy(model), ChannelConfig(0.5, importance="taylor"), example_inputs=x)
    model(x).sum().backward()
    w, g = model[0].weight, model[0].weight.grad
    score = (w * g).abs().sum(dim=(1, 2, 3))
    prune_(model, ChannelConfig(0.5, importance="taylor"), example_inputs=x)
    expect = torch.ones(8, dtype=torch.bool)
    expect[torch.sort(score, stable=True).indices[:4]] = False
    assert torch.equal(get_mask(model[0])[:, 0, 0, 0], expect)


def test_example_inputs_are_required():
    with pytest.raises(ValueError, match="example_inputs"):
        prune_(nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 1, 1)), ChannelConfig(0.5))


# --- attention heads -----------------------------------------------------------------------------

def small_gpt2():
    return GPT2(GPT2Config(vocab_size=97, n_positions=32, n_embd=48, n_layer=3, n_head=6)).eval()


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_gpt2_head_pruning_physical_equals_masked(scope):
    model = small_gpt2()
    idx = torch.randint(0, 97, (2, 12))
    dense = nparams(model)
    prune_(model, HeadConfig(0.5, scope=scope))
    masked_logits = model(idx)
    small = shrink(model, (idx,))
    torch.testing.assert_close(small(idx), masked_logits, atol=1e-5, rtol=1e-5)
    heads = small.config.head_counts
    assert sum(heads) == 9 and all(h >= 1 for h in heads)
    if scope == "layer":
        assert heads == (3, 3, 3)
    E, d = 48, 8
    per_head = 3 * d * E + 3 * d + E * d  # q/k/v rows (+ biases) and output-projection columns
    assert nparams(small) == dense - 9 * per_head
    # A head-pruned GPT-2 rebuilds from its config and keeps generating the same tokens with and
    # without the KV cache.
    again = GPT2(GPT2Config.from_dict(small.config.to_dict()))
    again.load_state_dict(small.state_dict())
    prompt = idx[:, :4]
    torch.testing.assert_close(again(idx), small(idx))
    assert torch.equal(small.generate(prompt, 6, greedy=True, use_cache=True),
                       small.generate(prompt, 6, greedy=True, use_cache=False))


def reference_head_importance(attn, n_head, head_dim):
    """Per head: the L2 norm of its rows in each of the q, k and v blocks of c_attn (weights and
    biases) and of its columns of c_proj, in float64."""
    E = n_head * head_dim
    w = attn.c_attn.weight.detach().double()
    b = attn.c_attn.bias.detach().double()
    proj = attn.c_proj.weight.detach().double()
    scores = []
    for h in range(n_head):
        rows = slice(h * head_dim, (h + 1) * head_dim)
        sq = sum(w[part * E:(part + 1) * E][rows].pow(2).sum() + b[part * E:(part + 1) * E][rows].pow(2).sum()
                 for part in range(3))
        scores.append(float((sq + proj[:, rows].pow(2).sum()).sqrt()))
    return torch.tensor(scores, dtype=torch.float64)


def test_layer_scope_masks_the_least_important_heads():
    torch.manual_seed(0)
    model = small_gpt2()
    with torch.no_grad():
        for block in model.h:  # every head's q, k, v rows, biases and c_proj columns scaled differently
            block.attn.c_attn.weight.mul_(torch.rand(3 * 48, 1) * 3)
            block.attn.c_attn.bias.normal_(0, 0.5)
            block.attn.c_proj.weight.mul_(torch.rand(1, 48) * 3)
    imps = [reference_head_importance(block.attn, 6, 8) for block in model.h]
    prune_(model, HeadConfig(0.5))
    for block, imp in zip(model.h, imps):
        masked = ~block.attn.c_proj.weight.view(48, 6, 8).ne(0).any(2).any(0)
        expect = torch.zeros(6, dtype=torch.bool)
        expect[torch.sort(imp, stable=True).indices[:3]] = True
        assert torch.equal(masked, expect)
        assert float(imp[masked].max()) < float(imp[~masked].min())
        rows = masked.repeat_interleave(8).repeat(3)  # q, k and v rows of the masked heads
        assert bool((block.attn.c_attn.weight[rows] == 0).all()) and bool((block.attn.c_attn.bias[rows] == 0).all())
        assert bool(block.attn.c_attn.weight[~rows].ne(0).all())


def test_global_head_pruning_gives_different_counts_per_layer():
    model = small_gpt2()
    with torch.no_grad():
        model.h[0].attn.c_attn.weight.mul_(0.01)  # layer 0's heads are far less important
        model.h[0].attn.c_proj.weight.mul_(0.01)
    prune_(model, HeadConfig(0.3, scope="global"))
    small = shrink(model, (torch.randint(0, 97, (1, 5)),))
    assert small.config.head_counts[0] == 1 and sum(small.config.head_counts) == 18 - round(0.3 * 18)
    with pytest.raises(ValueError, match="head_counts"):
        small.config.to_hf()


def test_shrink_bad_input():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 1, 1))
    with pytest.raises(ValueError, match="example_inputs"):
        shrink(model)
    with pytest.raises(TypeError, match="example_inputs"):
        shrink(model, "not a tensor")
