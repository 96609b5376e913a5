"""Pruning's less travelled paths: lottery tickets on another model, the schedule's first step,
configs checked when a gradual pruner is built, FFN sweeps, -0.0 in sparse files, layers whose
weight is parametrized over several tensors."""

import numpy as np
import pytest
import torch
from torch import nn

from edgegen.models.gpt2 import GPT2, GPT2Config
from edgegen.prune import (
    CubicSchedule,
    FFNConfig,
    GradualPruner,
    HeadConfig,
    LotteryTicket,
    MagnitudeConfig,
    NMConfig,
    finalize_,
    load_sparse,
    prune_,
    save_sparse,
    sparsity,
    sweep_ratios,
)


def _mlp(last_out=2):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, last_out))


@pytest.mark.parametrize("other", [lambda: _mlp(3), lambda: nn.Sequential(*list(_mlp())[:3])],
                         ids=["other-shape", "fewer-layers"])
def test_a_ticket_refuses_another_model_before_touching_it(other):
    ticket = LotteryTicket(_mlp())
    ticket.record()
    model = other()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    foreign = LotteryTicket(model)
    with pytest.raises(ValueError, match="state: the recorded weights do not match the model's parameters"):
        foreign.load_state_dict(ticket.state_dict())
    foreign.snapshot = ticket.snapshot  # set directly: prune_and_rewind checks before pruning
    with pytest.raises(ValueError, match="prune_and_rewind: the recorded weights do not match"):
        foreign.prune_and_rewind(0.5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and foreign.rounds_done == 0


def test_schedule_starts_exactly_at_the_initial_sparsity():
    s = CubicSchedule(0.1, 0.9, 0, 10)
    assert s.sparsity(0) == 0.1  # was 0.09999999999999998 (rounding), one weight fewer on 15
    layer = nn.Sequential(nn.Linear(5, 3))
    prune_(layer, MagnitudeConfig(s.sparsity(0)))
    assert int((layer[0].weight == 0).sum()) == 2  # round(0.1 * 15) = round(1.5) = 2


def test_gradual_pruner_checks_every_amount_it_will_use_up_front():
    model = GPT2(GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=1, n_head=4))
    with pytest.raises(ValueError, match="amount"):  # HeadConfig takes amounts below 1 only
        GradualPruner(model, HeadConfig(0.1), CubicSchedule(0.0, 1.0, 0, 10, 5))


def test_ffn_sweeps_shrink_the_model():
    cfg = GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=4)
    ids = torch.randint(0, 64, (1, 8))
    rows = sweep_ratios(lambda: GPT2(cfg).eval(), lambda r: FFNConfig(r), (ids,), ratios=[0.5])
    dense, half = rows
    ffn = 2 * (32 * 128 + 128 + 128 * 32)  # both blocks' c_fc and c_proj weights and c_fc bias
    assert dense["params"] - half["params"] == ffn // 2  # was: unchanged (masks baked in only)
    assert half["flops"] < dense["flops"]
    # The attention is counted too, as by every other edgegen measurement: torch's sdpa formula,
    # 4 d per (query, key) pair, all 8 x 8 of them (causal ones included, torch's convention), for
    # 2 layers x 4 heads of width 8, beside the matrix products of the linear layers and the head.
    linear = 2 * 8 * 2 * (32 * 96 + 32 * 32 + 32 * 128 + 128 * 32) + 2 * 8 * 32 * 64
    attention = 2 * 4 * (8 * 8) * 4 * 8
    assert dense["flops"] == linear + attention


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64],
                         ids=["fp32", "fp16", "bf16", "fp64"])
def test_negative_zeros_round_trip_bit_exactly(tmp_path, dtype):
    w = torch.tensor([[-0.0, 0.0, 1.5, -0.0], [0.0, 0.0, 2.0, -3.0]], dtype=dtype)
    save_sparse({"w": w}, tmp_path / "w.safetensors", min_sparsity=0.25)
    back = load_sparse(tmp_path / "w.safetensors")["w"]
    bits = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16,
            torch.float64: torch.int64}[dtype]
    assert torch.equal(back.view(bits), w.view(bits))  # was: -0.0 came back as +0.0


def test_sparse_file_of_a_trained_pruned_model_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)  # built before pruning: momentum on
    for step in range(6):
        if step == 3:
            prune_(model, MagnitudeConfig(0.5))
        opt.zero_grad()
        model(torch.randn(4, 32)).pow(2).sum().backward()
        opt.step()
    finalize_(model)  # masked entries: stored value x 0, which is -0.0 for negative ones
    assert bool(torch.signbit(model[0].weight[model[0].weight == 0]).any())  # the case: -0.0 present
    save_sparse(model, tmp_path / "m.safetensors")
    back = load_sparse(tmp_path / "m.safetensors")["0.weight"]
    assert np.array_equal(back.numpy().view(np.int32), model[0].weight.detach().numpy().view(np.int32))


@pytest.mark.parametrize("config", [MagnitudeConfig(0.5), NMConfig(2, 4)], ids=["magnitude", "n:m"])
def test_weight_norm_layers_are_named_not_crashed_on(config):
    from torch.nn.utils.parametrizations import weight_norm

    model = nn.Sequential(weight_norm(nn.Linear(16, 16)), nn.Linear(16, 4))
    with pytest.raises(ValueError, match="model: layer '0': .*parametrized by \\['_WeightNorm'\\] over several"):
        prune_(model, config)
    prune_(model, config, filter_fn=lambda m, n: n == "1")  # excluded: the rest prunes
    assert float((model[1].weight == 0).float().mean()) == 0.5


@pytest.mark.parametrize("config", [MagnitudeConfig(0.5), NMConfig(2, 4)], ids=["magnitude", "n:m"])
@pytest.mark.parametrize("hook", ["spectral_norm", "weight_norm"])
@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
def test_weights_recomputed_by_a_hook_are_refused_before_any_weight_changes(hook, config):
    """The hook-based torch.nn.utils.spectral_norm / weight_norm make .weight a plain attribute
    recomputed before each forward: no mask could hold on it. Refused, naming the layer, with every
    weight of the model as it was."""
    torch.manual_seed(0)
    model = nn.Sequential(getattr(torch.nn.utils, hook)(nn.Linear(16, 16)), nn.ReLU(), nn.Linear(16, 4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"model: layer '0': Linear\.weight: not a Parameter .*forward pre-hook"):
        prune_(model, config)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m.parametrizations for m in model.modules() if hasattr(m, "parametrizations"))
    prune_(model, config, filter_fn=lambda m, n: n == "2")  # excluded: the rest prunes
    assert float((model[2].weight == 0).float().mean()) == 0.5
    model.eval()(torch.randn(2, 16))  # the hook computes the layer's weight
    zeros = int((model[0].weight == 0).sum()) + int((model[2].weight == 0).sum())
    assert sparsity(model) == zeros / (16 * 16 + 16 * 4)  # measured over both layers, the hooked one included
