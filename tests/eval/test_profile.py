"""FLOP counts against torch's counter and hand counts (edgegen's INT8 and attention ops
included), visible pairs against the attention masks, and the profile record: sizes equal the
save functions, energy measured from RAPL when present and labelled estimated otherwise."""

from __future__ import annotations

import itertools
import sys
import warnings

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import edgegen  # noqa: F401
from edgegen.attention import block_sparse_attention, sliding_window_attention
from edgegen.eval import count_flops, model_bytes_on_disk, profile, visible_pairs
from edgegen.ops._reference import block_layout_mask, sliding_window_mask
from edgegen.quant import Int8DynamicConfig, quantize_


def _torch_count(model, x):
    mode = FlopCounterMode(display=False)
    with mode, torch.no_grad():
        model(x)
    return mode.get_total_flops()


def _float_models():
    return {
        "linear": (nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 16)), torch.randn(5, 64),
                   2 * 5 * (64 * 48 + 48 * 16)),
        "conv": (nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 3, stride=2)),
                 torch.randn(2, 3, 12, 12), 2 * 2 * (12 * 12 * 16 * 3 * 9 + 5 * 5 * 8 * 16 * 9)),
        "conv-transpose": (nn.Sequential(nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1)), torch.randn(2, 16, 5, 5),
                           2 * 2 * 5 * 5 * 16 * 8 * 16),
    }


@pytest.mark.parametrize("kind", ["linear", "conv", "conv-transpose"])
def test_float_flops_equal_torch_and_hand_counts(kind):
    model, x, hand = _float_models()[kind]
    assert count_flops(model, x) == _torch_count(model, x) == hand


@pytest.mark.parametrize("kind", ["linear", "conv", "conv-transpose"])
def test_int8_models_count_the_float_multiply_adds(kind):
    """Quantized layers run edgegen's INT8 ops (direct convolution, transposed convolution by
    phases or through the INT8 GEMM); their formulas give the float layers' counts."""
    model, x, hand = _float_models()[kind]
    quantize_(model, Int8DynamicConfig())
    ops = set()

    class Seen(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            ops.add(func._schema.name)
            return func(*args, **(kwargs or {}))

    with Seen(), torch.no_grad():
        model(x)
    assert any(name.startswith("edgegen::int8_") for name in ops), ops
    assert count_flops(model, x) == hand


def test_zero_flops_warns():
    class Elementwise(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(4))

        def forward(self, x):
            return x * self.w

    with pytest.warns(RuntimeWarning, match="0 FLOPs"):
        assert count_flops(Elementwise(), torch.randn(4)) == 0


def test_visible_pairs_equal_the_masks():
    for nq, nk, w, g, causal, off in itertools.product([1, 7, 40], [5, 40], [1, 3, 10, 100], [0, 2, 9],
                                                       [True, False], [0, 4, 50]):
        g = min(g, nk)
        assert visible_pairs(nq, nk, w, g, causal, off) == int(sliding_window_mask(nq, nk, w, g, causal, off).sum()), \
            (nq, nk, w, g, causal, off)
    layout = torch.tensor([[0, 0], [1, 0], [1, 1], [2, 2], [3, 0], [3, 3], [3, 3]])
    for causal, (off, nq) in itertools.product([True, False], [(0, 40), (5, 33), (12, 25)]):
        assert visible_pairs(nq, 40, 1, 0, causal, off, layout, 10) == int(
            block_layout_mask(nq, 40, layout, 10, causal, off).sum())


def test_attention_flops_count_visible_pairs_only():
    q, k, v = (torch.randn(2, 3, 100, 16) for _ in range(3))

    class Attn(nn.Module):
        def forward(self, x):
            return sliding_window_attention(x, k, v, 20, 4)

    pairs = int(sliding_window_mask(100, 100, 20, 4, True).sum())
    assert count_flops(Attn(), q) == 4 * 16 * pairs * 2 * 3
    class Blocks(nn.Module):
        def forward(self, x):
            return block_sparse_attention(x, k, v, [[0, 0], [1, 1], [1, 0]], 50, causal=True)

    pairs = int(block_layout_mask(100, 100, torch.tensor([[0, 0], [1, 1], [1, 0]]), 50, True).sum())
    assert count_flops(Blocks(), q.clone().requires_grad_(), backward=True) == (4 + 10) * 16 * pairs * 2 * 3


def _small_gpt2(**kw):
    from edgegen.models.gpt2 import GPT2Config

    torch.manual_seed(0)
    return GPT2Config(vocab_size=1000, n_positions=128, n_embd=64, n_layer=2, n_head=4, **kw).build().eval()


@pytest.mark.parametrize("cached", [0, 32], ids=["causal-sdpa", "masked-sdpa-after-a-cache"])
def test_gpt2_attention_flops_are_counted_on_cpu(cached):
    """GPT-2's attention runs F.scaled_dot_product_attention, on CPU torch's
    _scaled_dot_product_flash_attention_for_cpu (is_causal without a cache, a boolean mask after
    one). Hand count: 2 FLOPs per multiply-add of the linear layers and the head, plus 4 d per
    (query, key) pair, every pair of the T x (cached + T) scores counted, as torch counts sdpa."""
    model = _small_gpt2()
    d, layers, vocab, t = 64, 2, 1000, 128 - cached
    past = None
    if cached:
        with torch.no_grad():
            _, past = model(torch.randint(0, vocab, (1, cached)), use_cache=True)
    idx = torch.randint(0, vocab, (1, t))
    linear = layers * (2 * t * d * 3 * d + 2 * t * d * d + 2 * t * d * 4 * d * 2) + 2 * t * d * vocab
    attention = layers * 4 * t * (cached + t) * d
    assert count_flops(lambda i: model(i, past_key_values=past, use_cache=bool(cached)), idx) == linear + attention
    if not cached:
        assert linear + attention == 49938432


@pytest.mark.parametrize("masked", [False, True], ids=["is-causal", "bool-mask"])
def test_cpu_sdpa_backward_flops_follow_torch_formulas(masked):
    """Forward 4 d per (query, key) pair, backward 10 d (torch's sdpa formulas: scores recomputed,
    dP, dV, dQ, dK), every pair counted."""
    import torch.nn.functional as F

    b, h, nq, nk, d = 2, 3, 16, 24, 8
    q = torch.randn(b, h, nq, d, requires_grad=True)
    k, v = (torch.randn(b, h, nk, d, requires_grad=True) for _ in range(2))
    mask = torch.ones(nq, nk, dtype=torch.bool).tril(nk - nq)

    def attn(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask) if masked else \
            F.scaled_dot_product_attention(q, k, v, is_causal=True)

    assert count_flops(attn, (q, k, v)) == 4 * d * nq * nk * b * h
    assert count_flops(attn, (q, k, v), backward=True) == (4 + 10) * d * nq * nk * b * h


def test_profile_record_sizes_and_counts():
    from edgegen.prune.export import saved_bytes
    from edgegen.quant import save_quantized

    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 64))
    x = torch.randn(1024, 256)
    r = profile(model, x, repeats=3, warmup=1)
    assert r.params == r.nonzero_params == 256 * 256 + 256 + 256 * 64 + 64
    assert r.flops == 2 * 1024 * (256 * 256 + 256 * 64) and r.macs == r.flops // 2
    assert (r.bytes_on_disk, r.disk_format) == (saved_bytes(model), "safetensors")
    assert r.latency_ms_p50 > 0 and r.latency_ms_p90 >= r.latency_ms_p50 and r.batch_size == 1024
    # The call's fresh activations (1 MB each, allocated outside the heap) show in the resident set.
    assert r.peak_memory_bytes is not None and r.peak_memory_bytes >= 1024 * 256 * 4
    quantize_(model, Int8DynamicConfig())
    q = profile(model, x, repeats=3, warmup=1, measure_memory=False)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        assert q.bytes_on_disk == save_quantized(model, Path(d) / "m.safetensors")
    assert q.disk_format == "edgegen quantized safetensors" and q.flops == r.flops
    assert q.params == 256 * 256 + 256 + 256 * 64 + 64 and q.peak_memory_bytes is None
    assert model_bytes_on_disk(model)[0] == q.bytes_on_disk


@pytest.mark.parametrize("config", ["int8-dynamic", "int4-weight-only"], ids=["int8-dynamic", "int4-weight-only"])
def test_quantized_gpt2_counts_the_float_models_parameters(config):
    """A GPT-2 with a factorized embedding (table [V, r] @ proj [r, d], proj a plain Parameter):
    every stored weight counts once (the tied head once, int8 values, INT4 nibbles, float
    parameters such as proj), so the quantized model counts the float model's parameters."""
    import copy

    from edgegen.quant import Int4WeightOnlyConfig

    model = _small_gpt2(embedding_rank=32)
    assert dict(model.named_parameters())["wte.proj"].shape == (32, 64)
    n_float = sum(p.numel() for p in model.parameters())
    cfg = Int8DynamicConfig() if config == "int8-dynamic" else Int4WeightOnlyConfig(group_size=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # INT4: the rank-32 head input stays in floating point
        q = quantize_(copy.deepcopy(model), cfg)
    r = profile(q, torch.randint(0, 1000, (1, 16)), repeats=1, warmup=0, measure_memory=False)
    assert r.disk_format == "edgegen quantized safetensors" and r.notes
    assert r.params == n_float


def test_int4_zeros_are_counted_as_zeros():
    """Magnitude-pruned weights stay exactly zero through INT4 (a zero weight lands on its group's
    zero point): the non-zero count is the dequantized weight's, pruned entries and an all-zero
    group included, and the total is every stored value."""
    from edgegen.quant import Int4WeightOnlyConfig

    torch.manual_seed(0)
    lin = nn.Linear(128, 96)
    with torch.no_grad():
        lin.weight[lin.weight.abs() < 0.05] = 0  # unstructured zeros
        lin.weight[:, 64:] = 0                    # whole groups of 64 columns
        lin.weight[3] = 0                         # a row
        lin.bias[:10] = 0
    model = quantize_(nn.Sequential(lin), Int4WeightOnlyConfig(group_size=64))
    layer = model[0]
    want = int(torch.count_nonzero(layer.dequantized_weight())) + int(torch.count_nonzero(layer.bias))
    assert want < 96 * 128 // 2
    r = profile(model, torch.randn(2, 128), repeats=1, warmup=0, measure_memory=False)
    assert r.params == 96 * 128 + 96
    assert r.nonzero_params == want


def _fake_rapl(root, joules, package=0, range_uj=1000 * 10**6):
    dom = root / f"intel-rapl:{package}"
    dom.mkdir(parents=True, exist_ok=True)
    (dom / "energy_uj").write_text(str(int(joules * 1e6)))
    (dom / "max_energy_range_uj").write_text(str(range_uj))


def test_energy_is_measured_from_rapl_or_labelled_estimated(tmp_path, monkeypatch):
    model = nn.Linear(64, 64)
    x = torch.randn(8, 64)
    est = profile(model, x, repeats=4, warmup=0, rapl_root=str(tmp_path / "none"), measure_memory=False,
                  watts_per_core=7.5)
    assert est.energy_j is None and est.energy_j_estimated is not None and est.energy_j_estimated >= 0
    assert est.energy_method.startswith("estimated") and "7.5 W" in est.energy_method
    d = est.as_dict()
    assert "energy_j_estimated" in d and "energy_j" not in d
    # A RAPL counter that advances by 2 J per read, and one that wraps: measured, per call.
    profile_module = sys.modules["edgegen.eval.profile"]

    reads = iter([10.0, 18.0])
    monkeypatch.setattr(profile_module, "read_rapl_joules", lambda root: {"intel-rapl:0": (next(reads), 1000.0)})
    m = profile(model, x, repeats=4, warmup=0, measure_memory=False)
    assert m.energy_j == pytest.approx(2.0) and m.energy_j_estimated is None
    assert m.energy_method.startswith("measured")
    assert "CPU only" not in m.energy_method  # a CPU model: the CPU is all there is
    reads = iter([998.0, 2.0])
    monkeypatch.setattr(profile_module, "read_rapl_joules", lambda root: {"intel-rapl:0": (next(reads), 1000.0)})
    assert profile(model, x, repeats=4, warmup=0, measure_memory=False).energy_j == pytest.approx(1.0)


def test_estimated_energy_is_cpu_time_times_watts_per_call(tmp_path, monkeypatch):
    """Without RAPL: the timed window's process CPU time x watts per core, divided by the calls."""
    import time
    import types

    profile_module = sys.modules["edgegen.eval.profile"]
    cpu_clock = iter([3.0, 5.5])  # 2.5 s of CPU time over the timed calls
    monkeypatch.setattr(profile_module, "time", types.SimpleNamespace(perf_counter=time.perf_counter,
                                                                      process_time=lambda: next(cpu_clock)))
    rec = profile(nn.Linear(8, 8), torch.randn(2, 8), repeats=5, warmup=1, rapl_root=str(tmp_path / "none"),
                  measure_memory=False, watts_per_core=6.0)
    assert rec.energy_j is None and rec.energy_j_estimated == pytest.approx(2.5 * 6.0 / 5, rel=1e-12)


def test_read_rapl_files(tmp_path):
    from edgegen.eval.profile import read_rapl_joules

    assert read_rapl_joules(str(tmp_path / "absent")) is None
    _fake_rapl(tmp_path, 12.5)
    sub = tmp_path / "intel-rapl:0:0"  # a sub-domain is not added twice
    sub.mkdir()
    (sub / "energy_uj").write_text("5000000")
    (sub / "max_energy_range_uj").write_text("1000000000")
    assert read_rapl_joules(str(tmp_path)) == {"intel-rapl:0": (pytest.approx(12.5), pytest.approx(1000.0))}


def test_rapl_wrap_is_corrected_per_package(tmp_path, monkeypatch):
    """Two packages; package 0 wraps during the timed calls, package 1 does not. Each used 243 J:
    486 J in all, whatever the counters' ranges (summing the counters before the wrap check would
    add package 1's range instead)."""
    from edgegen.eval.profile import rapl_energy_between, read_rapl_joules

    r0, r1 = 262_143_328_850, 65_532_610_987  # two different max_energy_range_uj
    _fake_rapl(tmp_path, 262_000.0, 0, r0)  # near its wrap point
    _fake_rapl(tmp_path, 1_000.0, 1, r1)
    before = read_rapl_joules(str(tmp_path))
    assert before == {"intel-rapl:0": (pytest.approx(262_000.0), pytest.approx(r0 / 1e6)),
                      "intel-rapl:1": (pytest.approx(1_000.0), pytest.approx(r1 / 1e6))}
    after_j = {0: 262_000.0 + 243.0 - r0 / 1e6, 1: 1_243.0}

    def write_after():
        _fake_rapl(tmp_path, after_j[0], 0, r0)
        _fake_rapl(tmp_path, after_j[1], 1, r1)

    write_after()
    assert rapl_energy_between(before, read_rapl_joules(str(tmp_path))) == pytest.approx(486.0, abs=1e-6)
    # Package 1 wrapping instead (its own, smaller range).
    b = {"intel-rapl:0": (5.0, r0 / 1e6), "intel-rapl:1": (r1 / 1e6 - 3.0, r1 / 1e6)}
    a = {"intel-rapl:0": (15.0, r0 / 1e6), "intel-rapl:1": (4.0, r1 / 1e6)}
    assert rapl_energy_between(b, a) == pytest.approx(17.0, abs=1e-6)
    assert rapl_energy_between(b, {"intel-rapl:0": a["intel-rapl:0"]}) is None  # a package vanished

    # Through profile(): the files change between its two readings.
    _fake_rapl(tmp_path, 262_000.0, 0, r0)
    _fake_rapl(tmp_path, 1_000.0, 1, r1)
    profile_module = sys.modules["edgegen.eval.profile"]
    real, reads = profile_module.read_rapl_joules, []

    def reading(root):
        out = real(root)
        reads.append(out)
        if len(reads) == 1:
            write_after()
        return out

    monkeypatch.setattr(profile_module, "read_rapl_joules", reading)
    rec = profile(nn.Linear(4, 4), torch.zeros(1, 4), repeats=1, warmup=0, measure_memory=False,
                  rapl_root=str(tmp_path))
    assert len(reads) == 2 and rec.energy_j == pytest.approx(486.0, abs=1e-6)
    assert "2 package(s)" in rec.energy_method
    # A package that vanishes between the readings: no measurement, an estimate and a note.
    readings = iter([{"intel-rapl:0": (1.0, 10.0), "intel-rapl:1": (1.0, 10.0)}, {"intel-rapl:0": (2.0, 10.0)}])
    monkeypatch.setattr(profile_module, "read_rapl_joules", lambda root: next(readings))
    rec = profile(nn.Linear(4, 4), torch.zeros(1, 4), repeats=1, warmup=0, measure_memory=False)
    assert rec.energy_j is None and rec.energy_j_estimated is not None
    assert any("RAPL packages differed" in n for n in rec.notes)


def test_profile_synchronises_each_timed_call(monkeypatch):
    """Every timed call ends with a device synchronisation (a no-op on the CPU; on CUDA the
    call returns before its kernels finish), plus one after the warm-up."""
    profile_module = sys.modules["edgegen.eval.profile"]
    events = []
    model = nn.Linear(4, 4)
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda x: events.append("call") or forward(x))
    monkeypatch.setattr(profile_module, "_sync", lambda device: events.append(("sync", device.type)))
    profile(model, torch.zeros(1, 4), repeats=5, warmup=2, measure_memory=False)
    timed = events[events.index(("sync", "cpu")):]  # count_flops' call and the warm-up come first
    assert timed == [("sync", "cpu")] + ["call", ("sync", "cpu")] * 5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_profile_is_synchronised_and_energy_says_cpu_only():
    model = nn.Linear(256, 256).cuda()
    rec = profile(model, torch.randn(64, 256, device="cuda"), repeats=5, warmup=1, measure_memory=False)
    assert "CPU only" in rec.energy_method and "cuda" in rec.energy_method
    assert rec.latency_ms_p50 > 0 and rec.peak_memory_bytes is None


def test_profile_bad_input():
    model = nn.Linear(4, 4)
    with pytest.raises(TypeError, match="model"):
        profile(lambda x: x, torch.randn(2, 4))
    with pytest.raises(ValueError, match="repeats"):
        profile(model, torch.randn(2, 4), repeats=0)
    with pytest.raises(ValueError, match="watts_per_core"):
        profile(model, torch.randn(2, 4), watts_per_core=-1)
    with pytest.raises(ValueError, match="example_inputs"):
        profile(model, ())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert profile(model, torch.randn(2, 4), repeats=1, measure_memory=False).threads >= 1


def test_generation_profile_runs_the_cache_and_checks_its_arguments(monkeypatch):
    from edgegen.eval import profile_generation
    from edgegen.models.gpt2 import GPT2, GPT2Config

    model = GPT2(GPT2Config(vocab_size=101, n_positions=64, n_embd=32, n_layer=2, n_head=2))
    calls = []
    forward = model.forward

    def spy(idx, past_key_values=None, use_cache=False, **kw):
        calls.append((idx.shape[1], 0 if past_key_values is None else past_key_values[0][0].shape[-2]))
        return forward(idx, past_key_values=past_key_values, use_cache=use_cache, **kw)

    monkeypatch.setattr(model, "forward", spy)
    r = profile_generation(model, prompt_tokens=10, new_tokens=4, batch_size=2, repeats=2)
    # Per run: one prefill of 10 tokens, then 4 single-token steps over a growing cache.
    assert calls[:5] == [(10, 0), (1, 10), (1, 11), (1, 12), (1, 13)] and len(calls) == 3 * 5
    assert r.prefill_ms_p50 > 0 and r.decode_ms_per_token_p90 >= r.decode_ms_per_token_p50 > 0
    assert r.decode_tokens_per_s == pytest.approx(2 / (r.decode_ms_per_token_p50 * 1e-3))
    assert model.training  # restored
    with pytest.raises(ValueError, match="n_positions"):
        profile_generation(model, prompt_tokens=60, new_tokens=10)
    with pytest.raises(ValueError, match="new_tokens"):
        profile_generation(model, new_tokens=0)
    with pytest.raises(TypeError, match="causal LM"):
        profile_generation(nn.Linear(3, 3))
    threads = torch.get_num_threads()
    for bad in (0, -1, "2", 1.5):
        with pytest.raises(ValueError, match=f"threads: expected None or an int >= 1, got {bad!r}"):
            profile_generation(model, prompt_tokens=4, new_tokens=2, threads=bad)
        assert torch.get_num_threads() == threads


def test_measurements_restore_each_modules_own_mode():
    """A BatchNorm kept in eval mode while the rest trains stays so after a measurement
    (``model.train(flag)`` used to give every module the model's flag)."""
    from edgegen.analysis.budget import _eval_call
    from edgegen.eval import profile
    from edgegen.eval.vae import vae_metrics
    from edgegen.models.vae import BetaVAE, BetaVAEConfig

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4)).train()
    model[1].eval()
    profile(model, torch.randn(3, 4), warmup=0, repeats=1, measure_memory=False)
    _eval_call(model, (torch.randn(3, 4),))
    assert model.training and model[0].training and not model[1].training
    vae = BetaVAE(BetaVAEConfig(latent_dim=4)).train()
    frozen = list(vae.modules())[1].eval()  # a submodule kept in eval mode
    vae_metrics(vae, torch.rand(2, 3, 64, 64) * 2 - 1)
    assert vae.training and not frozen.training
