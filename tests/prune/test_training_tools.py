"""Cubic schedule, gradual pruning, lottery-ticket rewinding, ratio sweeps, compressed export."""

import math

import pytest
import torch
from torch import nn

from edgegen.models.dcgan import DCGANConfig, DCGANDiscriminator, DCGANGenerator
from edgegen.models.gpt2 import GPT2, GPT2Config
from edgegen.prune import (
    ChannelConfig,
    CubicSchedule,
    GradualPruner,
    LotteryTicket,
    MagnitudeConfig,
    get_mask,
    load_sparse,
    prune_,
    save_sparse,
    saved_bytes,
    shrink,
    sparsity,
    sweep_ratios,
)


def test_cubic_schedule_values():
    s = CubicSchedule(0.1, 0.9, begin_step=100, end_step=1100, frequency=100)
    assert s.sparsity(0) == 0.0 and s.sparsity(99) == 0.0
    assert s.sparsity(100) == pytest.approx(0.1)
    assert s.sparsity(1100) == pytest.approx(0.9) and s.sparsity(5000) == pytest.approx(0.9)
    for t in (250, 600, 1000):  # Zhu & Gupta (2017), eq. 1
        assert s.sparsity(t) == pytest.approx(0.9 + (0.1 - 0.9) * (1 - (t - 100) / 1000) ** 3)
    vals = [s.sparsity(t) for t in range(100, 1101, 10)]
    assert all(b >= a for a, b in zip(vals, vals[1:]))  # never decreases
    assert [t for t in range(0, 1200, 50) if s.is_pruning_step(t)] == list(range(100, 1101, 100))
    assert CubicSchedule.from_dict(s.to_dict()) == s


@pytest.mark.parametrize("kw,match", [
    ({"initial_sparsity": -0.1}, "initial_sparsity"), ({"final_sparsity": 1.2}, "final_sparsity"),
    ({"initial_sparsity": 0.6, "final_sparsity": 0.5}, "must not exceed"), ({"end_step": 10}, "end_step"),
    ({"frequency": 0}, "frequency"), ({"begin_step": -1}, "begin_step"),
])
def test_cubic_schedule_bad_input(kw, match):
    args = {"initial_sparsity": 0.0, "final_sparsity": 0.8, "begin_step": 10, "end_step": 100, **kw}
    with pytest.raises(ValueError, match=match):
        CubicSchedule(**args)


def test_gradual_pruning_during_training_follows_the_schedule():
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    sched = CubicSchedule(0.0, 0.8, begin_step=2, end_step=12, frequency=2)
    pruner = GradualPruner(model, MagnitudeConfig(0.0), sched)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.randn(32, 16), torch.randn(32, 4)
    total = sum(m.weight.numel() for m in model if isinstance(m, nn.Linear))
    prev_masks = None
    for step in range(15):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        applied = pruner.step(step)
        if applied:
            assert sparsity(model) == pytest.approx(round(applied * total) / total)
            masks = [get_mask(m).clone() for m in (model[0], model[2])]
            if prev_masks:
                assert all(not bool((~a & b).any()) for a, b in zip(prev_masks, masks))  # only grows
            prev_masks = masks
    assert sparsity(model) == pytest.approx(0.8, abs=1 / total)
    with pytest.raises(TypeError, match="config"):
        GradualPruner(model, object(), sched)


def _dcgan_channels():
    g = DCGANGenerator(DCGANConfig(nz=16, ngf=16)).eval()
    return g, ChannelConfig(0.1), g.example_inputs()


def _gpt2_heads():
    from edgegen.prune import HeadConfig

    return GPT2(GPT2Config(vocab_size=300, n_positions=32, n_embd=64, n_layer=2, n_head=4)), HeadConfig(0.1), None


@pytest.mark.parametrize("make", [_dcgan_channels, _gpt2_heads], ids=["dcgan-channels", "gpt2-heads"])
def test_gradual_pruner_reports_the_measured_sparsity(make):
    """Channel pruning also zeroes the consumers' inputs and head pruning leaves the MLPs dense:
    the schedule's amount (0.5) is not the model's sparsity, which is what step() reports."""
    torch.manual_seed(0)
    model, config, example = make()
    pruner = GradualPruner(model, config, CubicSchedule(0.0, 0.5, 0, 10, 5), example_inputs=example)
    assert pruner.step(3) is None
    for step in (0, 5, 10):
        reported = pruner.step(step)
        weights = [m.weight for n, m in model.named_modules()
                   if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)) and n != "lm_head"]  # not the tied head
        zeros = sum(int((w == 0).sum()) for w in weights)
        assert reported == pytest.approx(zeros / sum(w.numel() for w in weights), abs=1e-12)
    assert abs(reported - 0.5) > 0.1  # was: the amount, 0.5


def test_lottery_ticket_rewinds_survivors_and_keeps_pruned_zero():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 2))
    ticket = LotteryTicket(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(64, 10), torch.randn(64, 2)

    def train(steps):
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()

    train(2)
    ticket.record()  # the rewind point (an early step)
    early = {k: v.clone() for k, v in ticket.snapshot.items()}
    for r in (1, 2, 3):
        train(5)
        ticket.prune_and_rewind(LotteryTicket.round_sparsity(0.2, r))
        for name, layer in (("0", model[0]), ("2", model[2])):
            m = get_mask(layer)
            assert torch.equal(layer.weight[m], early[f"{name}.weight"][m])  # survivors rewound
            assert bool((layer.weight[~m] == 0).all())
            assert torch.equal(layer.bias, early[f"{name}.bias"])
        assert sparsity(model) == pytest.approx(1 - 0.8 ** r, abs=1e-2)
    assert ticket.rounds_done == 3
    other = LotteryTicket(model)
    other.load_state_dict(ticket.state_dict())
    assert other.rounds_done == 3
    with pytest.raises(RuntimeError, match="record"):
        LotteryTicket(nn.Linear(2, 2)).rewind()
    with pytest.raises(ValueError, match="per_round"):
        LotteryTicket.round_sparsity(1.0, 1)


def test_sparse_export_round_trips_and_is_smaller():
    model = GPT2(GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=4))  # tied weights too
    prune_(model, MagnitudeConfig(0.7))
    dense, sparse = saved_bytes(model), saved_bytes(model, sparse=True)
    assert sparse < 0.6 * dense
    from tempfile import TemporaryDirectory

    with TemporaryDirectory() as d:
        path = f"{d}/m.safetensors"
        assert save_sparse(model, path) == sparse
        state = load_sparse(path)
    fresh = GPT2(model.config)
    fresh.load_state_dict(state)
    idx = torch.randint(0, 64, (1, 8))
    torch.testing.assert_close(fresh(idx), model(idx), atol=0, rtol=0)
    assert fresh.lm_head.weight is fresh.wte.weight


def test_shrunk_dcgan_saves_about_half_the_bytes():
    g = DCGANGenerator(DCGANConfig(ngf=16))
    dense = saved_bytes(g)
    prune_(g, ChannelConfig(0.5), example_inputs=g.example_inputs())
    small = shrink(g, g.example_inputs())
    ratio = dense / saved_bytes(small)
    assert 2.0 < ratio < 4.5  # input/output widths fixed, inner layers ~4x smaller


def test_sweep_ratios_reports_size_cost_and_metric():
    cfg = DCGANConfig(ndf=8)
    x = torch.randn(2, 3, 64, 64)
    rows = sweep_ratios(lambda: DCGANDiscriminator(cfg), lambda r: ChannelConfig(r), x, ratios=(0.25, 0.5, 0.75),
                        evaluate=lambda m: float(m(x).detach().abs().mean()))
    assert [r["ratio"] for r in rows] == [0.0, 0.25, 0.5, 0.75]
    for key in ("params", "flops", "bytes_dense"):
        vals = [r[key] for r in rows]
        assert all(b < a for a, b in zip(vals, vals[1:])), key
    assert rows[0]["config"] is None and rows[2]["config"]["amount"] == 0.5
    assert all(isinstance(r["metric"], float) and math.isfinite(r["metric"]) for r in rows)
    rows = sweep_ratios(lambda: DCGANDiscriminator(cfg), lambda r: MagnitudeConfig(r), x, ratios=(0.5, 0.9))
    assert rows[0]["params"] == rows[1]["params"] == rows[2]["params"]  # unstructured: same shapes
    nz = [r["nonzero_params"] for r in rows]
    sp = [r["bytes_sparse"] for r in rows]
    assert nz[0] > nz[1] > nz[2] and sp[1] > sp[2] and sp[2] < rows[2]["bytes_dense"] / 3
