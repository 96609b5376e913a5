"""Early exit for GPT-2: threshold 1 is the full model, threshold 0 the first exit, cached
generation with exits equals uncached, the frozen-state KV rule against a hand-written reference,
exit training lowers the distillation loss, bad configs name the field."""

import pytest
import torch
import torch.nn.functional as F

from edgegen.config import Config
from edgegen.models import GPT2Config, EarlyExitConfig, add_early_exits, train_exits

from tests.helpers import seeded_gpt2
from tests.models.test_gpt2 import BAD_GENERATION, BAD_GENERATION_IDS, generate_args

CFG = GPT2Config(vocab_size=157, n_positions=48, n_embd=32, n_layer=4, n_head=4)


def model(seed=0):
    return seeded_gpt2(CFG, seed)


IDX = torch.randint(0, 157, (2, 14), generator=torch.Generator().manual_seed(5))


def trained(layers=(1, 2, 3)):
    ee = add_early_exits(model(), EarlyExitConfig(layers=layers))
    torch.manual_seed(1)
    for norm in ee.exit_norms.values():  # distinct exits, so thresholds split the positions
        norm.weight.data.uniform_(0.5, 4.0)
    return ee


def reference_forward(ee, idx, threshold):
    """Position by position, no cache: each position runs its blocks until an exit is confident;
    in blocks it skipped, its state is the frozen exit state, which later positions attend to."""
    m = ee.model
    T = idx.shape[1]
    states = [[None] * (m.config.n_layer + 1) for _ in range(T)]  # states[t][l]: input of block l
    logits, layers = [], []
    with torch.no_grad():
        emb = m.wte(idx) + m.wpe(torch.arange(T))
        for t in range(T):
            states[t][0] = emb[:, t:t + 1]
            out, exited = None, m.config.n_layer
            for li, block in enumerate(m.h):
                x = states[t][li]
                if out is not None:  # exited: frozen
                    states[t][li + 1] = x
                    continue
                past_x = torch.cat([states[s][li] for s in range(t)] + [x], 1)
                y, _ = block(past_x)
                states[t][li + 1] = y[:, -1:]
                if str(li + 1) in ee.exit_norms:
                    lg = m.lm_head(ee.exit_norms[str(li + 1)](y[:, -1:]))
                    if lg.softmax(-1).amax() > threshold:
                        out, exited = lg, li + 1
            if out is None:
                out = m.lm_head(m.ln_f(states[t][-1]))
            logits.append(out)
            layers.append(exited)
    return torch.cat(logits, 1), layers


def test_an_unreachable_threshold_is_the_full_model():
    ee = trained()
    with torch.no_grad():
        out, stats = ee(IDX, threshold=1.0, return_stats=True)
        torch.testing.assert_close(out, ee.model(IDX), rtol=0, atol=0)
    assert stats.mean_layers() == 4 and stats.exit_fraction() == 0.0


def test_threshold_zero_always_leaves_at_the_first_exit():
    ee = trained((2, 3))
    m = ee.model
    with torch.no_grad():
        out, stats = ee(IDX, threshold=0.0, return_stats=True)
        x = m.wte(IDX) + m.wpe(torch.arange(14))
        for block in m.h[:2]:
            x, _ = block(x)
        torch.testing.assert_close(out, m.lm_head(ee.exit_norms["2"](x)), rtol=1e-6, atol=1e-6)
    assert stats.histogram() == {2: 28}


def test_single_batch_rows_match_the_position_by_position_reference():
    ee = trained()
    with torch.no_grad():
        probs = [lg.softmax(-1).amax(-1) for lg in ee.exit_logits(IDX)[:-1]]
    threshold = float(torch.cat([p.flatten() for p in probs]).median())  # some positions leave, some stay
    for row in range(2):
        idx = IDX[row:row + 1]
        with torch.no_grad():
            out, stats = ee(idx, threshold=threshold, return_stats=True)
        ref, layers = reference_forward(ee, idx, threshold)
        assert stats.layers[0].tolist() == layers
        assert 1 < len(set(layers))
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_a_batch_whose_rows_exit_at_different_blocks_matches_the_reference_per_row():
    ee = trained()
    with torch.no_grad():
        probs = [lg.softmax(-1).amax(-1) for lg in ee.exit_logits(IDX)[:-1]]
    threshold = float(torch.cat([p.flatten() for p in probs]).median())
    with torch.no_grad():
        out, stats = ee(IDX, threshold=threshold, return_stats=True)
    for row in range(2):
        ref, layers = reference_forward(ee, IDX[row:row + 1], threshold)
        assert stats.layers[row].tolist() == layers
        torch.testing.assert_close(out[row:row + 1], ref, rtol=1e-5, atol=1e-5)
    assert stats.layers[0].tolist() != stats.layers[1].tolist()


@pytest.mark.parametrize("threshold", [0.0, 0.02, 0.05, 1.0], ids=["zero", "low", "mid", "one"])
def test_cached_generation_with_exits_equals_uncached(threshold):
    ee = trained()
    a, sa = ee.generate(IDX[:, :5], 9, threshold=threshold, use_cache=True)
    b, sb = ee.generate(IDX[:, :5], 9, threshold=threshold, use_cache=False)
    assert torch.equal(a, b) and torch.equal(sa.layers, sb.layers)
    assert sa.layers.shape == (2, 9)


def test_the_thresholds_used_split_the_tokens():
    ee = trained()
    _, low = ee.generate(IDX[:, :5], 9, threshold=0.02)
    assert 1.0 < low.mean_layers() < 4.0  # otherwise the cache test above compares trivial cases


def test_training_the_exits_lowers_their_distillation_loss_and_keeps_the_backbone():
    ee = trained((1, 2))  # exit norms far from the final one: a loss to lower
    before = {k: v.clone() for k, v in ee.model.state_dict().items()}
    batches = [torch.randint(0, 157, (4, 24), generator=torch.Generator().manual_seed(s)) for s in range(3)]
    losses = train_exits(ee, batches, steps=30, lr=2e-2)
    assert losses[-1] < 0.7 * losses[0]
    assert all(torch.equal(before[k], v) for k, v in ee.model.state_dict().items())
    assert all(p.requires_grad for p in ee.model.parameters()) and not ee.training
    # the loss is T^2 KL(full || exit) averaged over exits and tokens
    with torch.no_grad():
        outs = ee.exit_logits(batches[0])
        target = F.softmax(outs[-1] / 2.0, -1)
        kl = sum(F.kl_div(F.log_softmax(o / 2.0, -1), target, reduction="sum") for o in outs[:-1]) * 4 / 2 / (4 * 24)
        again = train_exits(ee, batches[:1], steps=1, lr=0.0)  # gradients enabled inside
    torch.testing.assert_close(torch.tensor(again[0]), kl, rtol=1e-4, atol=1e-6)


def test_exit_training_restores_frozen_flags_keeps_the_backbone_in_eval_and_reads_iterators_lazily():
    ee = trained((2,))
    ee.model.h[0].requires_grad_(False)  # the caller froze a block
    flags = {n: p.requires_grad for n, p in ee.named_parameters()}
    modes = []
    hook = ee.model.h[1].register_forward_pre_hook(lambda mod, args: modes.append(mod.training))
    batches = (torch.randint(0, 157, (2, 16), generator=torch.Generator().manual_seed(s)) for s in range(3))
    train_exits(ee, batches, steps=3)
    hook.remove()
    assert {n: p.requires_grad for n, p in ee.named_parameters()} == flags
    assert modes and not any(modes)
    with pytest.raises(ValueError, match="batches: ran out after 2 batches, 3 steps asked"):
        train_exits(ee, iter([IDX, IDX]), steps=3)


def test_training_the_backbone_changes_it():
    ee = add_early_exits(model(), EarlyExitConfig(layers=(2,)))
    before = ee.model.h[0].mlp.c_fc.weight.detach().clone()
    train_exits(ee, [IDX], steps=2, lr=1e-2, train_backbone=True)
    assert not torch.equal(before, ee.model.h[0].mlp.c_fc.weight)


def test_the_config_round_trips():
    cfg = EarlyExitConfig(layers=(2, 3), threshold=0.8)
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert add_early_exits(model(), cfg.to_dict()).exit_config == cfg


@pytest.mark.parametrize("make,match", [
    (lambda: EarlyExitConfig(layers=()), "layers: expected a non-empty"),
    (lambda: EarlyExitConfig(layers=(2, 1)), "layers: expected strictly increasing"),
    (lambda: EarlyExitConfig(layers=(0,)), "layers"),
    (lambda: EarlyExitConfig(layers=(1,), threshold=1.5), r"threshold: expected a probability in \[0, 1\]"),
    (lambda: EarlyExitConfig(layers=(1,), threshold=-0.1), "threshold"),
    (lambda: add_early_exits(model(), EarlyExitConfig(layers=(4,))), r"layers: 4 is outside \[1, n_layer - 1 = 3\]"),
    (lambda: add_early_exits(model(), EarlyExitConfig(layers=(1,)))(IDX, threshold=2.0), "threshold"),
    (lambda: add_early_exits(model(), EarlyExitConfig(layers=(1,))).generate(IDX, -1), "max_new_tokens"),
    (lambda: train_exits(add_early_exits(model(), EarlyExitConfig(layers=(1,))), [], 1), "batches"),
    (lambda: train_exits(add_early_exits(model(), EarlyExitConfig(layers=(1,))), [IDX], 0), "steps"),
    (lambda: Config.from_dict({"kind": "EarlyExitConfig", "layers": [1], "treshold": 0.5}), "treshold: unknown"),
], ids=["empty", "decreasing", "zero", "threshold-high", "threshold-negative", "beyond-depth", "call-threshold",
        "negative-tokens", "no-batches", "zero-steps", "unknown-key"])
def test_bad_input_names_the_field(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_a_non_gpt2_model_is_refused():
    with pytest.raises(TypeError, match="model: expected an edgegen GPT2"):
        add_early_exits(torch.nn.Linear(2, 2), EarlyExitConfig(layers=(1,)))


# -------------------------------------------------------------- empty inputs, generation arguments
@pytest.mark.parametrize("shape", [(0, 6), (2, 0), (0, 0)], ids=["empty-batch", "empty-sequence", "both"])
@pytest.mark.parametrize("threshold", [0.0, 0.5, 1.0], ids=["zero", "mid", "one"])
def test_empty_input_gives_empty_logits_like_gpt2(shape, threshold):
    """B*T = 0 used to return None; GPT-2 returns an empty [B, T, V] tensor."""
    ee = trained()
    idx = torch.zeros(shape, dtype=torch.long)
    expected = ee.model(idx)
    logits = ee(idx, threshold=threshold)
    assert logits.shape == expected.shape == (*shape, 157) and logits.dtype == expected.dtype
    logits, past, stats = ee(idx, use_cache=True, threshold=threshold, return_stats=True)
    assert logits.shape == (*shape, 157) and stats.layers.shape == shape
    assert len(past) == 4 and past[0][0].shape[-2] == shape[1]


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
def test_generation_on_an_empty_batch_matches_gpt2(use_cache):
    ee = trained()
    idx = torch.zeros(0, 5, dtype=torch.long)
    out, stats = ee.generate(idx, 3, threshold=0.05, use_cache=use_cache)
    expected = ee.model.generate(idx, 3, greedy=True, use_cache=use_cache)
    assert out.shape == expected.shape == (0, 8) and out.dtype == torch.long
    assert stats.layers.shape == (0, 3)


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
@pytest.mark.parametrize("kwargs,match", BAD_GENERATION, ids=BAD_GENERATION_IDS)
def test_bad_generation_arguments_are_checked_like_gpt2(kwargs, match, use_cache):
    idx, n, kw = generate_args(kwargs)
    with pytest.raises(ValueError, match=match):
        trained().generate(idx, n, use_cache=use_cache, **kw)


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
def test_generation_past_the_context_is_refused_before_the_first_token(use_cache):
    ee = trained()  # n_positions 48
    calls = []
    ee.model.register_forward_pre_hook(lambda *_: calls.append(1))
    ee.model.wte.register_forward_pre_hook(lambda *_: calls.append(1))  # EarlyExitGPT2 calls the blocks itself
    with pytest.raises(ValueError, match=r"^max_new_tokens: the prompt length \(14\) plus max_new_tokens \(35\) is 49, "
                                         r"beyond the model's context n_positions \(48\)"):
        ee.generate(IDX, 35, threshold=0.05, use_cache=use_cache)
    assert calls == []
    out, stats = ee.generate(IDX, 34, threshold=0.05, use_cache=use_cache)  # exactly the context
    assert out.shape == (2, 48) and stats.layers.shape == (2, 34)
    other, other_stats = ee.generate(IDX, 34, threshold=0.05, use_cache=not use_cache)
    assert torch.equal(out, other) and torch.equal(stats.layers, other_stats.layers)
