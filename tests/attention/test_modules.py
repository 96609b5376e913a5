"""SparseSelfAttention in GPT-2's attention slot, sparsify_attention_, and choose_window."""

import copy
import math

import pytest
import torch

import edgegen  # noqa: F401
from edgegen.attention import (
    SparseAttentionConfig,
    SparseSelfAttention,
    choose_window,
    sliding_window_mask,
    sparsify_attention_,
)
from edgegen.models.gpt2 import GPT2, GPT2Config, DenseAttention

CFG = GPT2Config(vocab_size=101, n_positions=160, n_embd=48, n_layer=2, n_head=4)


def tokens(B, T, seed=0):
    return torch.randint(0, CFG.vocab_size, (B, T), generator=torch.Generator().manual_seed(seed))


def test_window_at_least_the_context_equals_dense_gpt2():
    dense = GPT2(CFG)
    sparse = sparsify_attention_(copy.deepcopy(dense), SparseAttentionConfig(window=CFG.n_positions, num_global=0))
    idx = tokens(2, 150)
    a, b = dense(idx), sparse(idx)
    torch.testing.assert_close(b, a, rtol=0, atol=2e-5)
    ga = torch.autograd.grad(a.logsumexp(-1).sum(), list(dense.parameters()))
    gb = torch.autograd.grad(b.logsumexp(-1).sum(), list(sparse.parameters()))
    for x, y in zip(ga, gb):
        torch.testing.assert_close(y, x, rtol=1e-4, atol=1e-5)


def test_windowed_gpt2_equals_gpt2_with_the_explicit_mask():
    torch.manual_seed(0)
    sparse = sparsify_attention_(GPT2(CFG), {"window": 16, "num_global": 4})

    class MaskedSDPA(torch.nn.Module):
        def forward(self, q, k, v, q_offset=0):
            mask = sliding_window_mask(q.shape[-2], k.shape[-2], 16, 4, True, q_offset)
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    masked = copy.deepcopy(sparse)
    masked.set_attention(lambda i: MaskedSDPA())
    idx = tokens(2, 100, seed=1)
    torch.testing.assert_close(sparse(idx), masked(idx), rtol=0, atol=2e-5)


def test_cached_generation_equals_uncached_and_decode_logits_match():
    torch.manual_seed(0)
    model = sparsify_attention_(GPT2(CFG), SparseAttentionConfig(window=8, num_global=2)).eval()
    prompt = tokens(2, 5, seed=2)
    a = model.generate(prompt, 30, greedy=True, use_cache=True)
    b = model.generate(prompt, 30, greedy=True, use_cache=False)
    assert torch.equal(a, b)
    # Logits of each cached step equal the full forward's at that position.
    full = model(a)
    logits, past = model(a[:, :5], use_cache=True)
    steps = [logits[:, -1]]
    for t in range(5, a.shape[1] - 1):
        logits, past = model(a[:, t:t + 1], past_key_values=past, use_cache=True)
        steps.append(logits[:, -1])
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 4:-1], rtol=0, atol=5e-5)


def test_training_step_reduces_the_loss():
    torch.manual_seed(0)
    model = sparsify_attention_(GPT2(CFG), SparseAttentionConfig(window=12, num_global=1))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    idx = tokens(4, 64, seed=3)
    losses = []
    for _ in range(8):
        logits = model(idx[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, CFG.vocab_size), idx[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] - 0.1


def test_dense_mode_equals_the_default_attention():
    q, k, v = (torch.randn(1, 2, 9, 8) for _ in range(3))
    dense = SparseSelfAttention(window=None)
    torch.testing.assert_close(dense(q, k, v), DenseAttention()(q, k, v), rtol=0, atol=0)
    torch.testing.assert_close(dense(q[:, :, -2:], k, v, q_offset=7), DenseAttention()(q[:, :, -2:], k, v, 7),
                               rtol=0, atol=1e-6)
    assert "dense" in repr(dense) and "window=5" in repr(SparseSelfAttention(5, 1))


def test_config_and_transform_validation():
    with pytest.raises(ValueError, match="window"):
        SparseAttentionConfig(window=0)
    with pytest.raises(ValueError, match="num_global"):
        SparseAttentionConfig(num_global=-1)
    with pytest.raises(ValueError, match="stride: unknown key"):
        SparseAttentionConfig.from_dict({"window": 4, "stride": 2})
    cfg = SparseAttentionConfig(window=32, num_global=2)
    assert SparseAttentionConfig.from_dict(cfg.to_dict()) == cfg
    assert SparseSelfAttention(config=cfg).config == cfg == SparseSelfAttention(config=cfg.to_dict()).config
    with pytest.raises(ValueError, match="either a config or window"):
        SparseSelfAttention(64, config=cfg)
    with pytest.raises(ValueError, match="dropout"):
        SparseSelfAttention(window=8, dropout=0.1)
    with pytest.raises(ValueError, match="model: no attention core"):
        sparsify_attention_(torch.nn.Linear(2, 2), cfg)
    with pytest.raises(TypeError, match="model"):
        sparsify_attention_("gpt2", cfg)
    with pytest.raises(TypeError, match="filter_fn"):
        sparsify_attention_(GPT2(CFG), cfg, filter_fn=3)
    with pytest.raises(TypeError, match="config"):
        sparsify_attention_(GPT2(CFG), 256)
    with pytest.warns(UserWarning, match="dropout"):
        sparsify_attention_(GPT2(GPT2Config(101, 32, 16, 1, 2, dropout=0.1)), cfg)


# ------------------------------------------------------------------------------ chooser
def test_choose_window_picks_the_largest_window_that_fits():
    calls = []

    def cost(window, num_global):  # a linear cost model, ms per token per layer
        calls.append((window, num_global))
        return 0.001 * window + 0.002 * num_global

    c = choose_window(0.3, 4096, layers=1, windows=(32, 64, 128, 256, 512), num_globals=(0, 4), measure=cost)
    assert (c.window, c.num_global, c.fits) == (256, 4, True)
    assert c.ms_per_token == pytest.approx(0.264)
    # Measuring stops at the first window that no longer fits.
    assert (512, 0) in calls and max(w for w, _ in calls) == 512
    # Layers multiply the per-token cost.
    c = choose_window(0.3, 4096, layers=2, windows=(32, 64, 128, 256, 512), num_globals=(0, 4), measure=cost)
    assert (c.window, c.num_global) == (128, 4)
    # Windows above the sequence length collapse to the length itself (dense causal).
    c = choose_window(10.0, 100, windows=(64, 128, 256), num_globals=(0,), measure=cost)
    assert c.window == 100
    # Nothing fits: the smallest candidate, flagged, with a warning.
    with pytest.warns(UserWarning, match="budget"):
        c = choose_window(0.001, 4096, windows=(32, 64), num_globals=(0,), measure=cost)
    assert (c.window, c.fits) == (32, False)


def test_choose_window_nothing_fits_returns_the_cheapest_first_candidate():
    def cost(window, num_global):
        return 0.001 * window + 0.002 * num_global

    with pytest.warns(UserWarning, match=r"even window=32 costs 0.032 ms per token, over the budget of 0.001 ms"):
        c = choose_window(0.001, 4096, windows=(32, 64), num_globals=(0, 4), calibration_length=512, measure=cost)
    assert (c.window, c.num_global, c.fits) == (32, 0, False)
    assert c.ms_per_token == pytest.approx(0.032) and c.calibration_length == 512
    # window 32 missed with either number of global tokens: 64 was never measured
    assert [(r["window"], r["num_global"], r["fits"]) for r in c.measurements] == [(32, 0, False), (32, 4, False)]


def test_choose_window_stops_measuring_at_the_first_miss():
    calls = []
    costs = {32: 0.05, 64: 0.5, 128: 0.09}  # 64 misses, 128 would fit again (a noisy measurement)

    def cost(window, num_global):
        calls.append((window, num_global))
        return costs[window]

    c = choose_window(0.1, 4096, windows=(32, 64, 128), num_globals=(0,), measure=cost)
    assert (c.window, c.num_global, c.fits) == (32, 0, True)
    assert calls == [(32, 0), (64, 0)]
    assert [r["window"] for r in c.measurements] == [32, 64]


@pytest.mark.parametrize("mode", ["forward", "train", "decode"])
def test_choose_window_reports_milliseconds_per_token_times_layers(mode, monkeypatch):
    """With a clock that advances 64 ms per reading, every timed run takes 64 ms: 'forward' and
    'train' run 128 tokens (0.5 ms per token), 'decode' one token."""
    import types

    import edgegen.attention.chooser as chooser

    ticks = []

    def perf_counter():
        ticks.append(None)
        return 0.064 * len(ticks)

    monkeypatch.setattr(chooser, "time", types.SimpleNamespace(perf_counter=perf_counter))
    c = choose_window(1e9, 256, mode=mode, heads=1, head_dim=8, layers=3, windows=(64,), num_globals=(0,),
                      calibration_length=128, repeats=1)
    per_token = 64.0 if mode == "decode" else 64.0 / 128
    assert ticks  # the chooser read this clock
    assert c.ms_per_token == pytest.approx(3 * per_token, rel=1e-9)
    assert [r["ms_per_token"] for r in c.measurements] == [pytest.approx(3 * per_token, rel=1e-9)]


@pytest.mark.parametrize("mode", ["forward", "train", "decode"])
def test_choose_window_a_cost_equal_to_the_budget_fits(mode, monkeypatch):
    """A clock that advances 1/16 s per reading: every timed run takes exactly 62.5 ms, so the
    cost per token (62.5 / 128 tokens, or 62.5 for one decoded token, times 2 layers) is exact. A
    budget equal to it fits (cost <= budget); the next float below it does not."""
    import types

    import edgegen.attention.chooser as chooser

    ticks = []

    def perf_counter():
        ticks.append(None)
        return 0.0625 * len(ticks)

    monkeypatch.setattr(chooser, "time", types.SimpleNamespace(perf_counter=perf_counter))
    cost = 2 * (62.5 if mode == "decode" else 62.5 / 128)
    kwargs = dict(mode=mode, heads=1, head_dim=8, layers=2, windows=(32, 64), num_globals=(0,),
                  calibration_length=128, repeats=1)
    c = choose_window(cost, 256, **kwargs)
    assert (c.window, c.num_global, c.fits, c.ms_per_token, c.budget_ms) == (64, 0, True, cost, cost)
    assert [(r["window"], r["ms_per_token"], r["fits"]) for r in c.measurements] == [(32, cost, True),
                                                                                     (64, cost, True)]
    below = math.nextafter(cost, 0.0)
    with pytest.warns(UserWarning, match="over the budget"):
        c = choose_window(below, 256, **kwargs)
    assert (c.window, c.fits) == (32, False) and [r["fits"] for r in c.measurements] == [False]


@pytest.mark.parametrize("calibration_length", [16, 128, 4096])
def test_choose_window_decode_times_one_token_after_seq_len_keys(calibration_length, monkeypatch):
    """'decode' runs the kernel on one query at position seq_len - 1 over seq_len keys, whatever
    calibration_length is; the cost is that of the one token (no division by a length)."""
    import edgegen.attention.chooser as chooser

    seen = []
    real = chooser.sliding_window_attention

    def recording(q, k, v, window, num_global, **kwargs):
        seen.append((window, num_global, q.shape[-2], k.shape[-2], v.shape[-2], kwargs.get("q_offset")))
        return real(q, k, v, window, num_global, **kwargs)

    monkeypatch.setattr(chooser, "sliding_window_attention", recording)
    choose_window(1e9, 96, mode="decode", heads=1, head_dim=8, windows=(8, 32), num_globals=(0, 2),
                  calibration_length=calibration_length, repeats=1)
    assert sorted(set(seen)) == [(8, 0, 1, 96, 96, 95), (8, 2, 1, 96, 96, 95), (32, 0, 1, 96, 96, 95),
                                 (32, 2, 1, 96, 96, 95)]


@pytest.mark.parametrize("mode", ["forward", "train", "decode"])
def test_choose_window_measures_the_kernel(mode):
    c = choose_window(1e6, 256, mode=mode, heads=2, head_dim=16, windows=(16, 64), num_globals=(0, 2),
                      calibration_length=128, repeats=1)
    timed = 256 if mode == "decode" else 128  # decode: one token over all 256 cached keys
    assert c.fits and c.window == 64 and c.num_global == 2 and c.calibration_length == timed
    assert len(c.measurements) == 4 and all(m["ms_per_token"] > 0 and m["length"] == timed for m in c.measurements)


def test_choose_window_bad_input():
    for kwargs, name in [(dict(latency_budget_ms=0, seq_len=10), "latency_budget_ms"),
                         (dict(latency_budget_ms=1, seq_len=0), "seq_len"),
                         (dict(latency_budget_ms=1, seq_len=10, mode="prefill"), "mode"),
                         (dict(latency_budget_ms=1, seq_len=10, windows=(0,)), "windows"),
                         (dict(latency_budget_ms=1, seq_len=10, num_globals=(-1,)), "num_globals"),
                         (dict(latency_budget_ms=1, seq_len=10, layers=0), "layers")]:
        with pytest.raises(ValueError, match=name):
            choose_window(**kwargs, measure=lambda w, g: 0.0)


def test_choose_window_times_each_window_on_enough_tokens(monkeypatch):
    """Every candidate ran on min(seq_len, calibration_length) tokens: a window larger than that
    was timed as a smaller one (a window of 8192 at 16x less than its cost at 512 tokens)."""
    import edgegen.attention.chooser as chooser

    seen = []
    real = chooser.sliding_window_attention

    def recording(q, k, v, window, num_global, **kwargs):
        seen.append((window, num_global, q.shape[-2]))
        return real(q, k, v, window, num_global, **kwargs)

    monkeypatch.setattr(chooser, "sliding_window_attention", recording)
    c = choose_window(1e9, 100, heads=1, head_dim=8, windows=(8, 64, 512), num_globals=(0, 4),
                      calibration_length=16, repeats=1)
    # min(seq_len, max(calibration_length, window + num_global)); 512 > seq_len runs as 100
    lengths = {(8, 0): 16, (8, 4): 16, (64, 0): 64, (64, 4): 68, (100, 0): 100, (100, 4): 100}
    assert {(w, g, n) for w, g, n in seen} == {(w, g, n) for (w, g), n in lengths.items()}
    assert [(r["window"], r["num_global"], r["length"]) for r in c.measurements] == [
        (w, g, n) for (w, g), n in lengths.items()]
    assert (c.window, c.num_global, c.calibration_length) == (100, 4, 100)


def test_choose_window_global_tokens_beyond_the_calibration_length():
    """num_global above calibration_length (but within seq_len) failed in the kernel: more global
    tokens than keys."""
    c = choose_window(1e9, 8, heads=1, head_dim=8, windows=(2,), num_globals=(0, 4), calibration_length=2,
                      repeats=1)
    assert (c.window, c.num_global, c.fits) == (2, 4, True)
    assert [r["length"] for r in c.measurements] == [2, 6]


@pytest.mark.parametrize("num_globals", [(0.7, 2.9), (0, 2.0), (True,), ("1",)],
                         ids=["fractions", "integral-float", "bool", "str"])
def test_choose_window_num_globals_must_be_ints(num_globals):
    """They went through int(): 0.7 and 2.9 were measured as 0 and 2, True as 1."""
    with pytest.raises(ValueError, match=r"num_globals: expected ints >= 0, got \["):
        choose_window(1.0, 64, windows=(16,), num_globals=num_globals, measure=lambda w, g: 0.0)


def test_choose_window_takes_numpy_integers():
    """np.arange gives numpy integers: accepted as ints (and numpy's bool_ is not)."""
    import numpy as np

    seen = []
    c = choose_window(1e9, 64, windows=np.array([8, 16]), num_globals=np.arange(0, 8, 4),
                      measure=lambda w, g: seen.append((w, g)) or 0.0)
    assert sorted(seen) == [(8, 0), (8, 4), (16, 0), (16, 4)] and all(type(v) is int for p in seen for v in p)
    assert c.fits
    with pytest.raises(ValueError, match=r"num_globals: expected ints >= 0"):
        choose_window(1.0, 64, windows=(16,), num_globals=[np.bool_(True)], measure=lambda w, g: 0.0)
