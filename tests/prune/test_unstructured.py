"""prune_ with MagnitudeConfig / NMConfig: equality with torch.nn.utils.prune, exact counts, masks
that survive optimizers, saving and loading, torch.compile, finalize_, bad input."""

import copy

import pytest
import torch
import torch.nn.utils.prune as tprune
from torch import nn

from edgegen.models.gpt2 import GPT2, GPT2Config
from edgegen.prune import (
    ChannelConfig,
    HeadConfig,
    MagnitudeConfig,
    NMConfig,
    config_from_dict,
    finalize_,
    get_mask,
    load_pruned_state_dict,
    prune_,
    sparsity,
)
from edgegen.prune.masks import raw_parameter


def small_net():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.ConvTranspose2d(8, 8, 4, 2, 1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 16 * 16, 16), nn.ReLU(), nn.Linear(16, 4))


def weights(model):
    return [m.weight for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]


@pytest.mark.parametrize("amount", [0.1, 0.5, 0.9])
def test_layer_scope_equals_l1_unstructured(amount):
    model = small_net()
    ref = copy.deepcopy(model)
    prune_(model, MagnitudeConfig(amount, scope="layer"))
    for mine, theirs in zip([m for m in model.modules() if get_mask(m) is not None],
                            [m for m in ref.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]):
        tprune.l1_unstructured(theirs, "weight", amount=amount)
        assert torch.equal(get_mask(mine), theirs.weight_mask.bool())
        assert torch.equal(mine.weight, theirs.weight)


@pytest.mark.parametrize("amount", [0.2, 0.75])
def test_global_scope_equals_global_unstructured(amount):
    model = small_net()
    ref = copy.deepcopy(model)
    prune_(model, MagnitudeConfig(amount))
    params = [(m, "weight") for m in ref.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]
    tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=amount)
    for w, (m, _) in zip(weights(model), params):
        assert torch.equal(w, m.weight)
    total = sum(w.numel() for w in weights(model))
    assert sum(int((w == 0).sum()) for w in weights(model)) == round(amount * total)


def test_exact_count_with_ties():
    model = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 10))
    with torch.no_grad():
        for m in model:
            m.weight.fill_(0.5)  # all tied
    prune_(model, MagnitudeConfig(0.33))
    assert sum(int((~get_mask(m)).sum()) for m in model) == 66
    # Ties are pruned in order: all of the first layer's 100 are not needed, its first 66 go.
    assert int((~get_mask(model[0])).sum()) == 66 and bool(get_mask(model[1]).all())


@pytest.mark.parametrize("sizes", [(3, 70000, 1, 17), (1_500_000, 3_000_001)], ids=["small-tails", "sampled-path"])
def test_magnitude_ops_on_every_isa_path(isa, sizes):
    """The float32 sweeps on every path this CPU has (baseline and AVX-512): masks equal a stable
    sort over all tensors, pruned weights are zeroed in place and the others kept bit for bit;
    the larger case (>= 16 * 2^18 scores) takes the sampled-bracket path with its gathering sweep."""
    g = torch.Generator().manual_seed(sum(sizes))
    ws = [torch.randn(n, generator=g) for n in sizes]
    ws[0][0] = 0.0
    ws[-1][-1] = -0.0  # ties at zero: pruned in order, the sign ignored
    flat = torch.cat([w.abs() for w in ws])
    order = torch.sort(flat, stable=True).indices
    for k in (1, flat.numel() // 3, flat.numel() - 2):
        want = torch.ones(flat.numel(), dtype=torch.bool)
        want[order[:k]] = False
        got = torch.ops.edgegen.magnitude_mask(ws, None, k)
        assert torch.equal(torch.cat(got), want)
        copies = [w.clone() for w in ws]
        masks = [torch.empty(w.shape, dtype=torch.bool) for w in ws]
        torch.ops.edgegen.magnitude_prune_(copies, None, k, masks)
        assert torch.equal(torch.cat(masks), want)
        # bit for bit: pruned entries +0 (not -0), kept ones unchanged
        expect = torch.where(want, torch.cat(ws), torch.zeros(()))
        assert torch.equal(torch.cat(copies).view(torch.int32), expect.view(torch.int32))


@pytest.mark.parametrize("make_opt", [
    lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-2),
    lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
], ids=["sgd-momentum", "adamw"])
def test_masked_entries_stay_zero_through_optimizer_steps(make_opt):
    model = small_net()
    opt = make_opt(model.parameters())  # created before pruning: the parameters stay the same objects
    x, y = torch.randn(4, 3, 8, 8), torch.randn(4, 4)
    for _ in range(3):  # momentum / Adam moments built up before pruning
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    prune_(model, MagnitudeConfig(0.6))
    masks = [get_mask(m).clone() for m in model.modules() if get_mask(m) is not None]
    before = [w.detach().clone() for w in weights(model)]
    for _ in range(10):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    for w, m, b in zip(weights(model), masks, before):
        assert bool((w[~m] == 0).all())
        assert not torch.equal(w[m], b[m])  # the surviving weights did train


def test_pruning_again_only_grows_the_masks():
    model = small_net()
    prune_(model, MagnitudeConfig(0.5))
    first = [get_mask(m).clone() for m in model.modules() if get_mask(m) is not None]
    prune_(model, MagnitudeConfig(0.7))
    second = [get_mask(m) for m in model.modules() if get_mask(m) is not None]
    assert all(bool((~a & b).sum() == 0) for a, b in zip(first, second))  # nothing revived
    assert sparsity(model) == pytest.approx(0.7, abs=1e-4)
    prune_(model, MagnitudeConfig(0.3))  # a smaller amount never un-prunes
    assert sparsity(model) == pytest.approx(0.7, abs=1e-4)


def test_taylor_importance_uses_weight_times_grad():
    model = nn.Sequential(nn.Linear(20, 30), nn.Linear(30, 5))
    with pytest.raises(ValueError, match="taylor"):
        prune_(copy.deepcopy(model), MagnitudeConfig(0.5, importance="taylor"))
    model(torch.randn(8, 20)).pow(2).sum().backward()
    scores = torch.cat([(m.weight * m.weight.grad).abs().flatten() for m in model])
    k = round(0.5 * scores.numel())
    expect = torch.ones_like(scores, dtype=torch.bool)
    expect[torch.sort(scores, stable=True).indices[:k]] = False
    prune_(model, MagnitudeConfig(0.5, importance="taylor"))
    assert torch.equal(torch.cat([get_mask(m).flatten() for m in model]), expect)


def test_state_dict_round_trip_and_finalize():
    model = small_net()
    prune_(model, MagnitudeConfig(0.5))
    x = torch.randn(2, 3, 8, 8)
    state = model.state_dict()
    assert any(k.endswith("parametrizations.weight.0.mask") for k in state)
    fresh = small_net()
    load_pruned_state_dict(fresh, state)
    assert torch.equal(fresh(x), model(x))
    params_before = [raw_parameter(m) for m in model.modules() if get_mask(m) is not None]
    out = model(x)
    finalize_(model)
    assert get_mask(model[0]) is None and not any("parametrizations" in k for k in model.state_dict())
    assert all(a is b for a, b in zip(params_before, weights(model)))  # same Parameter objects
    assert torch.equal(model(x), out)
    assert sparsity(model) == pytest.approx(0.5, abs=1e-4)


def test_deep_copy_of_a_masked_model_is_independent():
    model = small_net()
    prune_(model, MagnitudeConfig(0.5))
    twin = copy.deepcopy(model)
    finalize_(twin)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(model(x), twin(x))  # finalizing the copy left the original masked and working
    assert get_mask(model[0]) is not None


def _seq_then_channels():
    torch.manual_seed(0)
    model, x = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)), torch.randn(2, 8)
    return model, x, lambda m: prune_(m, ChannelConfig(0.5), example_inputs=(x,)), lambda m: m[0]


def _gpt2_then_ffn():
    from edgegen.prune import FFNConfig

    torch.manual_seed(0)
    model = GPT2(GPT2Config(vocab_size=100, n_positions=16, n_embd=32, n_layer=1, n_head=2)).eval()
    return model, torch.randint(0, 100, (1, 5)), lambda m: prune_(m, FFNConfig(0.5)), lambda m: m.h[0].mlp.c_fc


@pytest.mark.parametrize("make", [_seq_then_channels, _gpt2_then_ffn], ids=["channels-sequential", "ffn-gpt2"])
def test_masking_a_new_tensor_of_a_deep_copy_leaves_the_original_working(make):
    """A deep copy shares the parametrized class of each masked layer with the original; masking a
    tensor only the copy has masked so far (a bias, by channel or FFN pruning) must not reach the
    original's class."""
    model, x, prune_more, layer = make()
    prune_(model, MagnitudeConfig(0.3))
    ref = model(x)
    twin = copy.deepcopy(model)
    prune_more(twin)
    assert get_mask(layer(twin), "bias") is not None and get_mask(layer(model), "bias") is None
    assert torch.equal(model(x), ref)  # was: KeyError 'bias'
    out = twin(x)
    for m in (model, twin):  # the true original class comes back, and computes the same
        finalize_(m)
        assert type(layer(m)) is nn.Linear
    assert torch.equal(model(x), ref) and torch.equal(twin(x), out)


def test_torch_compile_of_a_masked_model():
    model = small_net()
    prune_(model, MagnitudeConfig(0.5))
    x = torch.randn(2, 3, 8, 8)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), model(x))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        opt.zero_grad()
        compiled(x).sum().backward()
        opt.step()
    assert all(bool((m.weight[~get_mask(m)] == 0).all()) for m in model.modules() if get_mask(m) is not None)


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8)])
def test_nm_every_group_along_the_input_dimension(n, m):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 16, 3), nn.ConvTranspose2d(16, 8, 2), nn.Flatten(), nn.Linear(8, 16))
    before = [model[i].weight.detach().clone() for i in (0, 1, 3)]
    prune_(model, NMConfig(n, m), filter_fn=lambda mod, name: not isinstance(mod, nn.Linear) or mod.in_features % m == 0)
    for layer, in_dim, w0 in zip((model[0], model[1], model[3]), (1, 0, 1), before):
        w = layer.weight
        groups = (w != 0).movedim(in_dim, -1).reshape(-1, m)
        assert bool((groups.sum(1) <= n).all())
        assert bool((get_mask(layer).movedim(in_dim, -1).reshape(-1, m).sum(1) == n).all())
        # the n largest |w| of every m consecutive input entries (random weights: no ties)
        moved = w0.movedim(in_dim, -1)
        top = moved.abs().reshape(-1, m).topk(n, dim=1).indices
        expect = torch.zeros(moved.numel() // m, m, dtype=torch.bool).scatter_(1, top, True)
        expect = expect.reshape(moved.shape).movedim(-1, in_dim)
        assert torch.equal(get_mask(layer), expect)
        assert torch.equal(w.detach(), torch.where(expect, w0, torch.zeros_like(w0)))


def test_nm_rejects_a_layer_whose_input_is_not_a_multiple_of_m():
    with pytest.raises(ValueError, match="multiple of m"):
        prune_(nn.Sequential(nn.Linear(6, 4)), NMConfig(2, 4))


def test_gpt2_tied_head_is_not_pruned():
    model = GPT2(GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_layer=2, n_head=4))
    prune_(model, MagnitudeConfig(0.5))
    assert get_mask(model.lm_head) is None and model.lm_head.weight is model.wte.weight
    assert get_mask(model.h[0].attn.c_attn) is not None


@pytest.mark.parametrize("make,exc,match", [
    (lambda: MagnitudeConfig(-0.1), ValueError, "amount"),
    (lambda: MagnitudeConfig(1.5), ValueError, "amount"),
    (lambda: MagnitudeConfig(True), TypeError, "amount"),
    (lambda: MagnitudeConfig(0.5, scope="model"), ValueError, "scope"),
    (lambda: MagnitudeConfig(0.5, importance="random"), ValueError, "importance"),
    (lambda: NMConfig(3, 2), ValueError, "n:"),
    (lambda: NMConfig(2, 0), ValueError, "m:"),
    (lambda: NMConfig(2.0, 4), TypeError, "n:"),
    (lambda: ChannelConfig(1.0), ValueError, "every channel"),
    (lambda: ChannelConfig(0.5, round_to=0), ValueError, "round_to"),
    (lambda: ChannelConfig(0.5, importance="l3"), ValueError, "importance"),
    (lambda: HeadConfig(1.0), ValueError, "every head"),
    (lambda: config_from_dict({"kind": "Nope"}), ValueError, "kind"),
    (lambda: MagnitudeConfig.from_dict({"amount": 0.5, "extra": 1}), ValueError, "unknown"),
    (lambda: prune_(nn.Sequential(nn.ReLU()), MagnitudeConfig(0.5)), ValueError, "nothing to prune"),
    (lambda: prune_(small_net(), MagnitudeConfig(0.5), filter_fn=lambda m, n: False), ValueError, "nothing to prune"),
    (lambda: prune_(small_net(), "magnitude"), TypeError, "config"),
    (lambda: prune_(small_net(), MagnitudeConfig(0.5), filter_fn=3), TypeError, "filter_fn"),
    (lambda: prune_(nn.Sequential(nn.Linear(2, 2)), HeadConfig(0.5)), ValueError, "attention"),
])
def test_bad_input(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_configs_round_trip_through_dicts():
    for cfg in (MagnitudeConfig(0.3, "layer", "taylor"), NMConfig(2, 4), ChannelConfig(0.5, "l2", 8),
                HeadConfig(0.25, "global")):
        assert config_from_dict(cfg.to_dict()) == cfg
    model = small_net()
    prune_(model, MagnitudeConfig(0.4).to_dict())  # prune_ accepts the dict form too
    assert sparsity(model) == pytest.approx(0.4, abs=1e-4)


def test_loading_masks_into_a_masked_model_and_changing_dtype():
    a, b = small_net(), small_net()
    prune_(a, MagnitudeConfig(0.5))
    prune_(b, MagnitudeConfig(0.2, scope="layer"))
    b.load_state_dict(a.state_dict())  # the multipliers follow the loaded masks
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(b(x), a(x))
    b = b.to(torch.float64)
    torch.testing.assert_close(b(x.double()), a(x).double(), rtol=1e-5, atol=1e-6)
    assert bool((b[0].weight[~get_mask(b[0])] == 0).all())


def test_two_parameters_over_one_memory_count_as_a_tied_weight():
    """Distinct Parameters viewing the same memory (load_state_dict(assign=True) of a state with
    tied entries) are skipped like one Parameter shared by two layers, not refused as a whole."""
    from edgegen.prune.masks import prunable_weights

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6, bias=False), nn.Linear(6, 6, bias=False), nn.Linear(6, 3))
    w = torch.randn(6, 6)
    model[0].weight = nn.Parameter(w)
    model[1].weight = nn.Parameter(w.view(6, 6))  # another Parameter, the same memory
    assert model[0].weight is not model[1].weight
    assert [name for name, _ in prunable_weights(model)] == ["2"]
    before = w.clone()
    prune_(model, MagnitudeConfig(0.5))
    assert torch.equal(w, before) and int((model[2].weight == 0).sum()) == 9
