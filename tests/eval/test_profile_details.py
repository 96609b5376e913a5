"""The profile record and the edge projection in detail: latency percentiles and
throughput from a scripted clock, energy per call over every timed call (min_time_s included),
RAPL readings that are empty, partial or unchanged, argument checks, thread counts restored,
sparse and quantized sizes and counts, mixed precisions, the generation profile's pooling and
greedy feed-back, and the projection's label kinds and checks."""

from __future__ import annotations

import math
import sys
import time
import types
import warnings

import pytest
import torch
from torch import nn

import edgegen  # noqa: F401
from edgegen.eval import profile, profile_generation
from edgegen.eval.edge import device_profiles, project


def _module():
    return sys.modules["edgegen.eval.profile"]


class ScriptedClock:
    """A perf_counter whose timed intervals follow ``durations_ms``: the timed loops read the
    clock in pairs (before and after a call), each pair ``durations_ms[i]`` apart; the
    ``pairs_start`` reads before the first pair and any read after the last (profile()'s start and
    its final min_time_s check, with min_time_s=0) return the current time unchanged."""

    def __init__(self, durations_ms, pairs_start=1):
        self.durations = [d * 1e-3 for d in durations_ms]
        self.now = 0.0
        self.reads = 0
        self.pairs_start = pairs_start  # reads before the first pair

    def __call__(self):
        i = self.reads - self.pairs_start
        self.reads += 1
        if i >= 0 and i % 2 == 1 and i // 2 < len(self.durations):
            self.now += self.durations[i // 2]
        return self.now


def _scripted_profile(monkeypatch, durations_ms, batch=3, **kw):
    clock = ScriptedClock(durations_ms)
    monkeypatch.setattr(_module(), "time", types.SimpleNamespace(perf_counter=clock, process_time=time.process_time))
    return profile(nn.Linear(4, 4), torch.zeros(batch, 4), repeats=len(durations_ms), warmup=0,
                   measure_memory=False, **kw)


@pytest.mark.parametrize("durations, p50, p90", [
    # 11 calls, out of order: median the 6th smallest; p90 by nearest rank ceil(0.9 * 11) = 10th.
    ([9, 2, 11, 4, 7, 1, 10, 3, 6, 8, 5], 6.0, 10.0),
    # 12 calls: median the mean of the 6th and 7th; p90 the ceil(10.8) = 11th.
    ([12, 1, 11, 2, 10, 3, 9, 4, 8, 5, 7, 6.5], (6.5 + 7) / 2, 11.0),
    # 20 calls: p90 rank exactly 18 (no rounding up).
    ([float(v) for v in range(20, 0, -1)], 10.5, 18.0),
    ([3.0], 3.0, 3.0),
], ids=["odd", "even", "twenty", "one"])
def test_latency_percentiles_and_throughput_follow_the_timed_calls(monkeypatch, durations, p50, p90):
    """Median (mean of the middle two for an even count) and p90 by nearest rank of the timed
    calls, in ms; throughput = batch size / median."""
    rec = _scripted_profile(monkeypatch, durations, batch=3)
    assert rec.latency_ms_p50 == pytest.approx(p50, rel=1e-9)
    assert rec.latency_ms_p90 == pytest.approx(p90, rel=1e-9)
    assert rec.batch_size == 3
    assert rec.throughput_per_s == pytest.approx(3 / (p50 * 1e-3), rel=1e-9)


def test_throughput_of_calls_too_fast_for_the_clock_is_infinite(monkeypatch):
    rec = _scripted_profile(monkeypatch, [0.0, 0.0, 0.0])
    assert rec.latency_ms_p50 == 0.0 and rec.throughput_per_s == math.inf


def test_a_clock_that_never_reaches_min_time_stops_at_the_call_cap(monkeypatch):
    """With min_time_s never reached (a frozen clock), the timed loop still ends, at 100 000 calls;
    the energy is divided by every call made."""
    calls = [0]

    class Count(nn.Module):
        def forward(self, x):
            calls[0] += 1
            return x

    frozen = types.SimpleNamespace(perf_counter=lambda: 0.0, process_time=time.process_time)
    monkeypatch.setattr(_module(), "time", frozen)
    reads = []

    def rapl(root):
        reads.append(calls[0])
        return {"intel-rapl:0": (100_000.0 * (len(reads) - 1), 10**9)}

    monkeypatch.setattr(_module(), "read_rapl_joules", rapl)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 0 FLOPs
        rec = profile(Count(), torch.zeros(1), repeats=2, warmup=0, measure_memory=False, min_time_s=1.0)
    assert reads[1] - reads[0] == 100_000
    assert rec.energy_j == pytest.approx(1.0, rel=1e-12)


def _counting_model():
    model = nn.Linear(4, 4)
    model.calls = 0
    forward = model.forward

    def counted(x):
        model.calls += 1
        return forward(x)

    model.forward = counted
    return model


class SteppingClock:
    """A perf_counter that advances by ``step_ms`` at every read."""

    def __init__(self, step_ms):
        self.step, self.reads = step_ms * 1e-3, 0

    def __call__(self):
        self.reads += 1
        return (self.reads - 1) * self.step


def test_min_time_adds_calls_and_energy_is_per_call_made(monkeypatch):
    """min_time_s keeps calling past ``repeats``; the energy per call (measured or estimated) is
    divided by every timed call, not by ``repeats``. A clock that advances 0.5 ms per read: the
    start, two reads per call, one check of the elapsed time after each call from the second on;
    the check after k calls reads (3k - 1) x 0.5 ms, first >= 9.5 ms at k = 7."""
    model = _counting_model()
    snapshots = []

    def rapl(root):
        snapshots.append(model.calls)
        return {"intel-rapl:0": (50.0 if len(snapshots) == 1 else 80.0, 1000.0)}

    monkeypatch.setattr(_module(), "time", types.SimpleNamespace(perf_counter=SteppingClock(0.5),
                                                                 process_time=time.process_time))
    monkeypatch.setattr(_module(), "read_rapl_joules", rapl)
    rec = profile(model, torch.zeros(1, 4), repeats=2, warmup=0, measure_memory=False, min_time_s=0.0095)
    timed = snapshots[1] - snapshots[0]
    assert timed == 7
    assert rec.energy_j == pytest.approx(30.0 / 7, rel=1e-12)
    assert rec.latency_ms_p50 == pytest.approx(0.5, rel=1e-9)

    model = _counting_model()
    counts = []

    def cpu():
        counts.append(model.calls)
        return 4.0 * len(counts)  # 4 s of CPU time over the window

    monkeypatch.setattr(_module(), "time", types.SimpleNamespace(perf_counter=SteppingClock(0.5), process_time=cpu))
    monkeypatch.setattr(_module(), "read_rapl_joules", lambda root: None)
    rec = profile(model, torch.zeros(1, 4), repeats=2, warmup=0, measure_memory=False, min_time_s=0.0095,
                  watts_per_core=5.0)
    assert counts[1] - counts[0] == 7 and rec.energy_j is None
    assert rec.energy_j_estimated == pytest.approx(4.0 * 5.0 / 7, rel=1e-12)


def test_default_power_per_core_is_ten_watts(tmp_path, monkeypatch):
    cpu_clock = iter([1.0, 3.0])  # 2 s of CPU time
    monkeypatch.setattr(_module(), "time", types.SimpleNamespace(perf_counter=time.perf_counter,
                                                                 process_time=lambda: next(cpu_clock)))
    rec = profile(nn.Linear(4, 4), torch.zeros(1, 4), repeats=4, warmup=0, rapl_root=str(tmp_path / "none"),
                  measure_memory=False)
    assert rec.energy_j_estimated == pytest.approx(2.0 * 10.0 / 4, rel=1e-12)
    assert "10 W per busy core" in rec.energy_method


def test_batch_size_is_the_first_inputs_leading_dimension():
    """A list of inputs is several positional inputs; the batch is the first one's leading
    dimension; a 0-dim first input is a batch of one."""

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x, y):
            return self.lin(x).sum() + self.lin(y).sum()

    rec = profile(Two(), [torch.zeros(3, 4), torch.zeros(5, 4)], repeats=1, warmup=0, measure_memory=False)
    assert rec.batch_size == 3 and rec.flops == 2 * 4 * 4 * (3 + 5)

    class Scalar(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, s):
            return self.lin(s.expand(2, 4))

    rec = profile(Scalar(), torch.tensor(1.5), repeats=1, warmup=0, measure_memory=False)
    assert rec.batch_size == 1


def test_macs_are_an_integer_half_of_the_flops():
    rec = profile(nn.Linear(16, 8), torch.zeros(3, 16), repeats=1, warmup=0, measure_memory=False)
    assert rec.flops == 2 * 3 * 16 * 8 and isinstance(rec.macs, int) and rec.macs == 3 * 16 * 8


def test_warmup_calls_and_every_call_in_eval_mode_without_gradients(monkeypatch):
    """count_flops makes one call, the warm-up ``warmup`` more before the first synchronisation;
    every call runs in eval mode with gradients off, and the mode is restored afterwards."""
    seen = []

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            seen.append((self.training, torch.is_grad_enabled()))
            return self.lin(x)

    events = []
    counting = [False]
    real_count = _module().count_flops

    def count(model, inputs):
        counting[0] = True
        try:
            return real_count(model, inputs)
        finally:
            counting[0] = False

    model = Spy().train()
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda x: events.append("flops" if counting[0] else "call") or forward(x))
    monkeypatch.setattr(_module(), "count_flops", count)
    monkeypatch.setattr(_module(), "_sync", lambda device: events.append("sync"))
    profile(model, torch.zeros(2, 4), repeats=2, warmup=3, measure_memory=False)
    first_sync = events.index("sync")
    assert events[:first_sync].count("call") == 3 and events.count("flops") == 1
    assert events[first_sync:] == ["sync"] + ["call", "sync"] * 2
    assert seen and all(s == (False, False) for s in seen)
    assert model.training and model.lin.training


def _other_thread_count():
    return 1 if torch.get_num_threads() != 1 else 2


def test_threads_are_used_recorded_and_restored():
    before = torch.get_num_threads()
    k = _other_thread_count()
    rec = profile(nn.Linear(4, 4), torch.zeros(1, 4), repeats=1, warmup=0, threads=k, measure_memory=False)
    assert rec.threads == k and torch.get_num_threads() == before


@pytest.mark.parametrize("kwargs, match", [
    (dict(warmup=-1), r"warmup: expected an int >= 0, got -1"),
    (dict(warmup=1.0), r"warmup: expected an int >= 0, got 1.0"),
    (dict(min_time_s=-0.5), r"min_time_s: expected a finite value >= 0, got -0.5"),
    (dict(min_time_s=math.inf), r"min_time_s: expected a finite value >= 0, got inf"),
    (dict(min_time_s=math.nan), r"min_time_s: expected a finite value >= 0, got nan"),
    (dict(min_time_s="1"), r"min_time_s: expected a finite value >= 0, got '1'"),
    (dict(watts_per_core=0), r"watts_per_core: expected a finite value > 0, got 0"),
    (dict(watts_per_core=math.inf), r"watts_per_core: expected a finite value > 0, got inf"),
    (dict(threads=0), r"threads: expected None or an int >= 1, got 0"),
    (dict(threads=1.5), r"threads: expected None or an int >= 1, got 1.5"),
    (dict(repeats=2.0), r"repeats: expected an int >= 1, got 2.0"),
], ids=["warmup-negative", "warmup-float", "min-time-negative", "min-time-inf", "min-time-nan", "min-time-str",
        "watts-zero", "watts-inf", "threads-zero", "threads-float", "repeats-float"])
def test_profile_arguments_are_named(kwargs, match):
    before = torch.get_num_threads()
    with pytest.raises(ValueError, match=match):
        profile(nn.Linear(4, 4), torch.zeros(1, 4), measure_memory=False, **kwargs)
    assert torch.get_num_threads() == before


def test_float_nonzero_params_count_zeros():
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 2))
    with torch.no_grad():
        model[0].weight[:, :5] = 0  # 30 zeros
        model[2].bias.zero_()       # 2 zeros
    rec = profile(model, torch.zeros(1, 8), repeats=1, warmup=0, measure_memory=False)
    total = 8 * 6 + 6 + 6 * 2 + 2
    assert rec.params == total and rec.nonzero_params == total - 30 - 2


def test_pruned_model_ships_sparse_and_its_peak_is_measured_with_masks_baked_in():
    """A magnitude-pruned model (parametrized: it cannot be pickled as is) is sized in the sparse
    format when that is smaller, and its peak memory is measured on a copy with the masks baked in."""
    from edgegen.prune import MagnitudeConfig, prune_, saved_bytes

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 16))
    prune_(model, MagnitudeConfig(0.9))
    sparse, dense = saved_bytes(model, sparse=True), saved_bytes(model)
    assert sparse < dense
    rec = profile(model, torch.randn(4, 128), repeats=1, warmup=0)
    assert (rec.bytes_on_disk, rec.disk_format) == (sparse, "edgegen sparse safetensors")
    assert rec.peak_memory_bytes is not None
    assert rec.peak_memory_method.endswith("(pruning masks baked in, as the model would be shipped)")


def test_int8_nonzero_params_count_the_integer_zeros():
    """Weights that are 0 or +-0.5, +-1 quantize exactly (zeros stay zeros): the non-zero count of
    the INT8 model equals the float model's."""
    from edgegen.quant import Int8DynamicConfig, quantize_

    torch.manual_seed(0)
    lin = nn.Linear(64, 32)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([0.0, 0.5, -1.0, 0.0, 1.0, 0.0, -0.5, 0.0]).repeat(32, 8))
        lin.weight[0] = 0.0
        lin.bias[:7] = 0.0
    want = int(torch.count_nonzero(lin.weight)) + int(torch.count_nonzero(lin.bias))
    assert want == 31 * 32 + 25
    model = quantize_(nn.Sequential(lin), Int8DynamicConfig())
    rec = profile(model, torch.randn(2, 64), repeats=1, warmup=0, measure_memory=False)
    assert rec.params == 64 * 32 + 32 and rec.nonzero_params == want


def test_int4_zero_count_covers_layers_taller_than_one_chunk():
    """INT4 non-zeros are counted a few thousand rows at a time: a layer of 4100 rows is counted
    in full, its last rows included."""
    from edgegen.quant import Int4WeightOnlyConfig, quantize_

    torch.manual_seed(0)
    lin = nn.Linear(64, 4100, bias=False)
    with torch.no_grad():
        lin.weight[:4000] = 0  # only the last 100 rows hold weights
    model = quantize_(nn.Sequential(lin), Int4WeightOnlyConfig(group_size=64))
    want = int(torch.count_nonzero(model[0].dequantized_weight()))
    assert 90 * 64 < want <= 100 * 64
    rec = profile(model, torch.randn(1, 64), repeats=1, warmup=0, measure_memory=False)
    assert rec.params == 4100 * 64 and rec.nonzero_params == want


def test_mixed_precisions_take_the_slowest_and_say_so():
    """INT8 layers and INT4 weight-only layers (float arithmetic) in one model: fp32 for all, the
    basis naming both kinds in layer order; the projection follows."""
    from edgegen.quant import Int4WeightOnlyConfig, Int8DynamicConfig, quantize_

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 64))
    quantize_(model, Int8DynamicConfig(), filter_fn=lambda m, name: name == "0")
    quantize_(model, Int4WeightOnlyConfig(group_size=64), filter_fn=lambda m, name: name == "2")
    rec = profile(model, torch.randn(2, 128), repeats=1, warmup=0, measure_memory=False)
    assert rec.compute_precision == "fp32"
    assert rec.compute_precision_basis == ("INT8 layers (int8 arithmetic); INT4 weight-only layers (weights "
                                           "dequantised into fp32 arithmetic): the slowest, fp32, taken for all")
    assert project(rec, "pixel6").precision == "fp32"


def test_rapl_readings_edge_cases(tmp_path):
    """A powercap folder without packages reads None; an unreadable package is skipped, not the
    whole reading; an unchanged counter used 0 J (no wrap); readings that are empty or name other
    packages (even as many) give no energy."""
    from edgegen.eval.profile import rapl_energy_between, read_rapl_joules

    (tmp_path / "empty").mkdir()
    assert read_rapl_joules(str(tmp_path / "empty")) is None
    root = tmp_path / "powercap"
    for i, text in enumerate(["2500000", "not a number"]):
        dom = root / f"intel-rapl:{i}"
        dom.mkdir(parents=True)
        (dom / "energy_uj").write_text(text)
        (dom / "max_energy_range_uj").write_text("1000000000")
    (root / "intel-rapl:2").mkdir()  # no files at all
    assert read_rapl_joules(str(root)) == {"intel-rapl:0": (pytest.approx(2.5), pytest.approx(1000.0))}

    same = {"intel-rapl:0": (7.0, 100.0)}
    assert rapl_energy_between(same, dict(same)) == 0.0
    assert rapl_energy_between({}, {}) is None
    assert rapl_energy_between({"intel-rapl:0": (1.0, 10.0)}, {"intel-rapl:1": (2.0, 10.0)}) is None


def test_a_psys_platform_zone_is_not_added_to_the_packages(tmp_path):
    """Intel client machines expose a top-level psys zone (the whole platform, the packages
    included) beside the packages: only the packages are read, so their energy counts once."""
    from edgegen.eval.profile import rapl_energy_between, read_rapl_joules

    def zone(n, name, uj):
        d = tmp_path / f"intel-rapl:{n}"
        d.mkdir(exist_ok=True)
        (d / "name").write_text(name + "\n")
        (d / "energy_uj").write_text(str(uj))
        (d / "max_energy_range_uj").write_text("262143328850")

    zone(0, "package-0", 1_000_000)
    zone(1, "psys", 5_000_000)
    zone(2, "package-1", 2_000_000)
    before = read_rapl_joules(str(tmp_path))
    assert sorted(before) == ["intel-rapl:0", "intel-rapl:2"]
    zone(0, "package-0", 11_000_000)  # 10 J
    zone(1, "psys", 20_000_000)       # 15 J, the packages' 13 J included
    zone(2, "package-1", 5_000_000)   # 3 J
    assert rapl_energy_between(before, read_rapl_joules(str(tmp_path))) == pytest.approx(13.0)
    (tmp_path / "intel-rapl:0" / "name").write_text("psys\n")
    (tmp_path / "intel-rapl:2" / "name").write_text("psys\n")
    assert read_rapl_joules(str(tmp_path)) is None  # no package left: no measurement


def test_a_rapl_reading_lost_after_the_calls_falls_back_to_the_estimate(tmp_path, monkeypatch):
    """RAPL readable before the timed calls and not after: estimated energy, without a note that
    the packages differed; an empty powercap folder likewise, with no note."""
    readings = iter([{"intel-rapl:0": (1.0, 10.0)}, None])
    monkeypatch.setattr(_module(), "read_rapl_joules", lambda root: next(readings))
    rec = profile(nn.Linear(4, 4), torch.zeros(1, 4), repeats=1, warmup=0, measure_memory=False)
    assert rec.energy_j is None and rec.energy_j_estimated is not None
    assert rec.energy_method.startswith("estimated") and not rec.notes
    monkeypatch.undo()
    (tmp_path / "powercap").mkdir()
    rec = profile(nn.Linear(4, 4), torch.zeros(1, 4), repeats=1, warmup=0, measure_memory=False,
                  rapl_root=str(tmp_path / "powercap"))
    assert rec.energy_j is None and rec.energy_method.startswith("estimated") and not rec.notes


def test_as_dict_joins_the_notes(monkeypatch):
    from edgegen.quant import Int8DynamicConfig, quantize_

    readings = iter([{"intel-rapl:0": (1.0, 10.0)}, {"intel-rapl:1": (2.0, 10.0)}])
    monkeypatch.setattr(_module(), "read_rapl_joules", lambda root: next(readings))
    model = quantize_(nn.Sequential(nn.Linear(64, 32)), Int8DynamicConfig())
    rec = profile(model, torch.randn(2, 64), repeats=1, warmup=0, measure_memory=False)
    assert len(rec.notes) == 2
    d = rec.as_dict()
    assert d["notes"] == rec.notes[0] + "; " + rec.notes[1]
    assert "energy_j" not in d and "peak_memory_bytes" not in d


# ---- profile_generation ------------------------------------------------------------------------

def _gpt2(n_positions=64):
    from edgegen.models.gpt2 import GPT2, GPT2Config

    torch.manual_seed(0)
    return GPT2(GPT2Config(vocab_size=101, n_positions=n_positions, n_embd=32, n_layer=2, n_head=2))


def test_generation_profile_pools_the_timed_runs_after_the_warm_up(monkeypatch):
    """The first run warms up and is left out; the prefill is the median over the other runs, the
    decode steps are pooled over them (median, p90 by nearest rank), tokens/s = batch / median step."""
    # Call order per run: prefill, then 4 steps. Warm-up run: slow. Then runs 1 and 2.
    durations = [100.0, 50.0, 50.0, 50.0, 50.0,
                 10.0, 1.0, 2.0, 3.0, 4.0,
                 20.0, 8.0, 7.0, 6.0, 5.0]
    clock = ScriptedClock(durations, pairs_start=0)
    monkeypatch.setattr(_module(), "time", types.SimpleNamespace(perf_counter=clock, process_time=time.process_time))
    r = profile_generation(_gpt2(), prompt_tokens=6, new_tokens=4, batch_size=2, repeats=2)
    assert clock.reads == 2 * len(durations)
    assert r.prefill_ms_p50 == pytest.approx(15.0, rel=1e-9)
    assert r.decode_ms_per_token_p50 == pytest.approx(4.5, rel=1e-9)
    assert r.decode_ms_per_token_p90 == pytest.approx(8.0, rel=1e-9)
    assert r.decode_tokens_per_s == pytest.approx(2 / 4.5e-3, rel=1e-9)


def test_generation_feeds_back_the_greedy_token_of_the_last_position(monkeypatch):
    """Each decode step is fed the argmax of the previous call's last-position logits; prompts are
    drawn from ``seed``."""
    model = _gpt2()
    fed, outs = [], []
    forward = model.forward

    def spy(idx, past_key_values=None, use_cache=False, **kw):
        fed.append(idx.clone())
        out = forward(idx, past_key_values=past_key_values, use_cache=use_cache, **kw)
        outs.append(out[0].detach().clone())
        return out

    monkeypatch.setattr(model, "forward", spy)
    profile_generation(model, prompt_tokens=8, new_tokens=3, batch_size=2, repeats=1, seed=3)
    assert len(fed) == 2 * 4
    for i, idx in enumerate(fed):
        if i % 4 == 0:
            assert idx.shape == (2, 8)
        else:
            assert idx.shape == (2, 1)
            assert torch.equal(idx, outs[i - 1][:, -1:].argmax(-1))
    prompts = [fed[0], fed[4]]
    fed.clear()
    profile_generation(model, prompt_tokens=8, new_tokens=3, batch_size=2, repeats=1, seed=3)
    assert torch.equal(fed[0], prompts[0]) and torch.equal(fed[4], prompts[1])
    g = torch.Generator().manual_seed(3)
    assert torch.equal(prompts[0], torch.randint(0, 101, (2, 8), generator=g))
    fed.clear()
    profile_generation(model, prompt_tokens=8, new_tokens=3, batch_size=2, repeats=1, seed=4)
    assert not torch.equal(fed[0], prompts[0])


def test_generation_throughput_of_steps_too_fast_for_the_clock_is_infinite(monkeypatch):
    """A clock that cannot see a decode step: a median of 0 ms and infinite tokens per second, as
    profile() reports, never a division by zero."""
    from edgegen.models.gpt2 import GPT2, GPT2Config

    monkeypatch.setattr(_module(), "time", types.SimpleNamespace(perf_counter=lambda: 0.0,
                                                                 process_time=time.process_time))
    torch.manual_seed(0)
    model = GPT2(GPT2Config(vocab_size=101, n_positions=32, n_embd=32, n_layer=2, n_head=2))
    g = profile_generation(model, prompt_tokens=4, new_tokens=2, repeats=1)
    assert g.decode_ms_per_token_p50 == 0.0 and g.decode_tokens_per_s == math.inf


def test_generation_profile_arguments_and_threads():
    model = _gpt2(n_positions=16)
    r = profile_generation(model, prompt_tokens=12, new_tokens=4, repeats=1)  # exactly n_positions
    assert (r.prompt_tokens, r.new_tokens, r.batch_size) == (12, 4, 1)
    for name in ("prompt_tokens", "batch_size", "repeats"):
        kwargs = {"prompt_tokens": 4, "new_tokens": 2, name: 0}
        with pytest.raises(ValueError, match=f"{name}: expected an int >= 1, got 0"):
            profile_generation(model, **kwargs)
    before = torch.get_num_threads()
    k = _other_thread_count()
    r = profile_generation(model, prompt_tokens=4, new_tokens=2, repeats=1, threads=k)
    assert r.threads == k and torch.get_num_threads() == before


# ---- edge projection ---------------------------------------------------------------------------

def _rec(flops=10**9, size=0, **kw):
    return types.SimpleNamespace(flops=flops, bytes_on_disk=size, **kw)


def test_label_lists_an_assumed_precision_among_the_kinds():
    """Jetson Nano's fp16 figures are vendor specifications; with the caller's efficiency the only
    assumption left is the precision: bf16 run at the fp16 rate, or fp32 for a record without one."""
    bf16 = project(_rec(compute_precision="bf16", compute_precision_basis="bf16 layers"), "jetson-nano",
                   efficiency=0.5)
    assert bf16.precision == "fp16" and "sourced figures (assumption, spec);" in bf16.label
    bare = project(_rec(), "jetson-nano", efficiency=0.5)  # fp32 rate: a derived figure
    assert bare.precision == "fp32" and "sourced figures (assumption, derived, spec);" in bare.label
    given = project(_rec(), "jetson-nano", precision="fp32", efficiency=0.5)
    assert "sourced figures (derived, spec);" in given.label


def test_label_basis_falls_back_to_the_precision():
    p = project(_rec(compute_precision="int8", compute_precision_basis=""), "pixel6")
    assert "(int8 inferred from the model's layers: int8)" in p.label


def test_a_projection_with_nothing_to_do_is_compute_bound_at_zero():
    p = project(_rec(flops=0), "rpi4", bytes_moved=0)
    assert (p.latency_ms_projected, p.energy_j_projected, p.bound) == (0.0, 0.0, "compute")


def test_an_integer_efficiency_is_reported_as_a_float():
    p = project(_rec(), "rpi4", efficiency=1)
    assert isinstance(p.efficiency, float) and p.efficiency == 1.0


@pytest.mark.parametrize("kwargs, record, exc, match", [
    (dict(), _rec(flops=-1), ValueError, r"record: expected a profile record with integer flops >= 0, got -1"),
    (dict(), _rec(flops=1.5e9), ValueError, r"record: expected a profile record with integer flops >= 0, got 1500000000.0"),
    (dict(bytes_moved=1.5), _rec(), ValueError, r"bytes_moved: expected an int >= 0, got 1.5"),
    (dict(), _rec(size=2.0), ValueError,
     r"record: expected a profile record with integer bytes_on_disk >= 0 \(or bytes_moved given\), got 2.0"),
    (dict(efficiency="0.5"), _rec(), ValueError, r"efficiency: expected a value in \(0, 1\], got '0.5'"),
    (dict(efficiency=math.nan), _rec(), ValueError, r"efficiency: expected a value in \(0, 1\], got nan"),
], ids=["negative-flops", "float-flops", "float-bytes", "float-record-bytes", "str-efficiency", "nan-efficiency"])
def test_projection_checks_name_the_bad_value(kwargs, record, exc, match):
    with pytest.raises(exc, match=match):
        project(record, "rpi4", **kwargs)


_GOOD = "{value: 1, kind: spec, source: s}"


def _device_file(tmp_path, name, **override):
    fig = {f: _GOOD for f in ("fp32", "fp16", "int8", "memory_gbps", "power_w", "efficiency")}
    fig.update(override)
    text = (f"x:\n  name: X\n  peak_gflops: {{fp32: {fig['fp32']}, fp16: {fig['fp16']}, int8: {fig['int8']}}}\n"
            f"  memory_gbps: {fig['memory_gbps']}\n  power_w: {fig['power_w']}\n  efficiency: {fig['efficiency']}\n")
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def test_device_file_figures_must_be_positive_finite_and_sourced(tmp_path):
    good = device_profiles(_device_file(tmp_path, "good"))["x"]
    assert (good.memory_gbps.value, good.power_w.value, good.efficiency.value) == (1.0, 1.0, 1.0)
    for name, override, where in [
        ("zero", dict(power_w="{value: 0, kind: spec, source: s}"), "x.power_w"),
        ("inf", dict(memory_gbps="{value: .inf, kind: spec, source: s}"), "x.memory_gbps"),
        ("nan", dict(fp16="{value: .nan, kind: spec, source: s}"), "x.peak_gflops.fp16"),
        ("unsourced", dict(efficiency="{value: 0.3, kind: assumption, source: ''}"), "x.efficiency"),
    ]:
        with pytest.raises(ValueError, match=rf"{where}: expected a positive value, kind spec/derived/assumption "
                                             "and a source"):
            device_profiles(_device_file(tmp_path, name, **override))
    with pytest.raises(ValueError, match=r"x.efficiency: expected a fraction of the roofline in \(0, 1\], got 1.5"):
        device_profiles(_device_file(tmp_path, "above-one", efficiency="{value: 1.5, kind: assumption, source: s}"))
    listing = tmp_path / "list.yaml"
    listing.write_text("- rpi4\n- pixel6\n")
    with pytest.raises(ValueError, match="expected a mapping of device keys to profiles"):
        device_profiles(listing)


def test_device_figures_reach_their_fields(tmp_path):
    """Each figure lands in its own field: power and efficiency are not interchangeable."""
    path = _device_file(tmp_path, "distinct", memory_gbps="{value: 2, kind: spec, source: s}",
                        power_w="{value: 7, kind: spec, source: s}",
                        efficiency="{value: 0.25, kind: assumption, source: s}")
    d = device_profiles(path)["x"]
    assert (d.memory_gbps.value, d.power_w.value, d.efficiency.value) == (2.0, 7.0, 0.25)
    assert d.efficiency.kind == "assumption"
