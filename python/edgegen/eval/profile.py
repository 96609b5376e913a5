"""Efficiency of a model in one record: parameters, FLOPs, size on disk in the format a user would
ship, peak memory, latency, throughput and energy, each labelled with how it was obtained.

Energy is read from RAPL (Linux powercap) when the machine exposes it; otherwise it is estimated
as CPU time x a stated power per core and reported only under ``energy_j_estimated`` (with the
figure in ``energy_method``), never as a measurement.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from edgegen.ops.flops import count_flops
from edgegen.prune.graph import restore_training_flags, training_flags
from edgegen.tensor_files import storage_key

__all__ = ["ProfileRecord", "profile", "model_bytes_on_disk", "read_rapl_joules", "rapl_energy_between",
           "GenerationProfile", "profile_generation"]

DEFAULT_WATTS_PER_CORE = 10.0
_RAPL_ROOT = "/sys/class/powercap"


@dataclass
class ProfileRecord:
    """What :func:`profile` measured: parameters (all, non-zero), FLOPs and MACs (edgegen's ops
    counted), bytes on disk in the shipped format, peak memory and how it was measured, latency
    percentiles and throughput at ``batch_size``, energy per call (``energy_j`` measured through
    RAPL, or ``energy_j_estimated`` and labelled so), threads, notes, and the precision of the
    matrix products inferred from the layer types (``compute_precision``: fp32, fp16, bf16 or
    int8, with ``compute_precision_basis``), which :func:`edgegen.eval.project` projects at."""

    params: int
    nonzero_params: int
    flops: int
    macs: int
    bytes_on_disk: int
    disk_format: str
    peak_memory_bytes: int | None
    peak_memory_method: str
    latency_ms_p50: float
    latency_ms_p90: float
    throughput_per_s: float
    batch_size: int
    energy_j: float | None = None            # measured (RAPL), per call
    energy_j_estimated: float | None = None  # estimated, per call
    energy_method: str = ""
    threads: int = 1
    notes: list[str] = field(default_factory=list)
    compute_precision: str = "fp32"
    compute_precision_basis: str = ""

    def as_dict(self) -> dict:
        """Flat, MLflow-ready (units in the names; absent values left out)."""
        d = asdict(self)
        d["notes"] = "; ".join(self.notes)
        return {k: v for k, v in d.items() if v is not None}


def _is_quantized(model: nn.Module) -> bool:
    from edgegen.quant import modules as qm
    from edgegen.quant.api import LowPrecision

    return any(isinstance(m, (*qm.INTEGER_LAYERS, LowPrecision)) for m in model.modules())


_RATE_ORDER = ("fp32", "bf16", "fp16", "int8")  # slowest first


def _compute_precision(model: nn.Module) -> tuple[str, str]:
    """(arithmetic precision of the model's matrix products, what it rests on), from the types of
    edgegen's quantized layers (embedding lookups do no arithmetic): INT8 layers and INT4 W4A8
    (int8 activations) run int8 dot products; INT4 weight-only layers dequantise their weights into
    float32 arithmetic; LowPrecision layers compute in their 16-bit dtype. Several kinds: the
    slowest of them, stated. No quantized layer: fp32."""
    from edgegen.quant import modules as qm
    from edgegen.quant.api import LowPrecision

    found = {}
    for m in model.modules():
        if isinstance(m, (qm.Int8Linear, qm.Int8Conv2d, qm.Int8ConvTranspose2d)):
            found.setdefault("int8", "INT8 layers (int8 arithmetic)")
        elif isinstance(m, qm.Int4Linear) and m.activations == "int8":
            found.setdefault("int8", "INT4 W4A8 layers (int8 arithmetic)")
        elif isinstance(m, qm.Int4Linear):
            found.setdefault("fp32", "INT4 weight-only layers (weights dequantised into fp32 arithmetic)")
        elif isinstance(m, LowPrecision) and m.dtype in (torch.float16, torch.bfloat16):
            kind = "fp16" if m.dtype == torch.float16 else "bf16"
            found.setdefault(kind, f"{kind} layers ({kind} arithmetic)")
    if not found:
        return "fp32", "no quantized or 16-bit layers (fp32 arithmetic)"
    slowest = min(found, key=_RATE_ORDER.index)
    if len(found) == 1:
        return slowest, found[slowest]
    return slowest, f"{'; '.join(found.values())}: the slowest, {slowest}, taken for all"


def _stored_weight_counts(model: nn.Module) -> tuple[int, int]:
    """(weights, non-zero weights) of a quantized model from its state dict: every floating-point
    parameter (a factorized embedding's projection, 16-bit layers' weights, ...), the float
    weights and biases quantized layers keep as buffers, int8 weights and INT4 nibbles (two per
    packed byte; non-zero where the code is not its group's zero point); a tied tensor once.
    Scales and zero points are not weights."""
    params = {storage_key(p) for p in model.parameters() if p.is_floating_point()}
    modules = dict(model.named_modules())
    total = nonzero = 0
    seen = set()
    for name, t in model.state_dict(keep_vars=False).items():
        key = storage_key(t)
        if key in seen:  # a tied tensor (GPT-2's head shares the embedding's int8 table): once
            continue
        seen.add(key)
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "weight_int8":
            total += t.numel()
            nonzero += int(torch.count_nonzero(t))
        elif leaf == "packed_weight" and t.dtype == torch.uint8:
            total += 2 * t.numel()
            nonzero += _int4_nonzero(modules.get(name[:-len("packed_weight")].rstrip(".")), t)
        elif t.is_floating_point() and (key in params or leaf in ("weight", "bias")):
            total += t.numel()
            nonzero += int(torch.count_nonzero(t))
    return total, nonzero


def _int4_nonzero(module: nn.Module | None, packed: torch.Tensor) -> int:
    """Non-zero weights of an INT4 layer's ``packed`` codes: those that dequantize to a value
    other than zero (a code other than its group's zero point; a zero weight always lands on it),
    a few thousand rows at a time. A layout without scales and zero points: every value."""
    scale, zero = getattr(module, "scale", None), getattr(module, "zero_point", None)
    group = getattr(module, "group_size", None)
    if not (isinstance(scale, torch.Tensor) and isinstance(zero, torch.Tensor) and isinstance(group, int)):
        return 2 * packed.numel()
    count = 0
    for r in range(0, packed.shape[0], 4096):
        rows = slice(r, r + 4096)
        w = torch.ops.edgegen.int4_dequantize(packed[rows], scale[rows], zero[rows], group)
        count += int(torch.count_nonzero(w))
    return count


def model_bytes_on_disk(model: nn.Module) -> tuple[int, str]:
    """(bytes, format) of ``model`` saved the way it would be shipped: quantized models with
    ``save_quantized`` (int8/int4 weights and scales), others as safetensors, dense or with
    ``save_sparse`` (bitmask + non-zeros) whichever is smaller."""
    from edgegen.prune.export import saved_bytes

    if _is_quantized(model):
        from edgegen.quant import save_quantized

        with tempfile.TemporaryDirectory() as d:
            return save_quantized(model, Path(d) / "model.safetensors"), "edgegen quantized safetensors"
    dense = saved_bytes(model, sparse=False)
    sparse = saved_bytes(model, sparse=True)
    return (sparse, "edgegen sparse safetensors") if sparse < dense else (dense, "safetensors")


def read_rapl_joules(root: str = _RAPL_ROOT) -> dict[str, tuple[float, float]] | None:
    """{package domain: (energy counter in J, counter range in J)} for each readable top-level RAPL
    package domain (``intel-rapl:0``, ``intel-rapl:1``, ... whose ``name`` is ``package-N``; a
    ``psys`` platform zone, which holds the packages, is left out), or None where there are none
    (no powercap, or not readable). Kept per package: each counter wraps at its own range, so a sum
    cannot be corrected for a wrap (see :func:`rapl_energy_between`)."""
    base = Path(root)
    if not base.is_dir():
        return None
    out = {}
    for dom in sorted(base.glob("intel-rapl:*")):
        if dom.name.count(":") != 1:  # sub-domains (core, dram) are inside the package's count
            continue
        try:
            name = (dom / "name").read_text().strip()
        except OSError:
            name = None
        # A top-level zone that is not a package (psys on Intel client machines: the whole
        # platform, the packages included) would count the packages' energy twice.
        if name is not None and not name.startswith("package"):
            continue
        try:
            energy = int((dom / "energy_uj").read_text()) / 1e6
            rng = int((dom / "max_energy_range_uj").read_text()) / 1e6
        except (OSError, ValueError):
            continue
        out[dom.name] = (energy, rng)
    return out or None


def rapl_energy_between(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
                        ) -> float | None:
    """Joules used between two :func:`read_rapl_joules` readings, summed over the packages, each
    package's counter corrected for one wrap at its own ``max_energy_range_uj`` (a counter that
    went down wrapped once; more than one wrap between readings cannot be seen). None when the two
    readings do not cover the same packages."""
    if not before or not after or set(before) != set(after):
        return None
    total = 0.0
    for name, (e0, _) in before.items():
        e1, rng = after[name]
        delta = e1 - e0
        if delta < 0:  # this package's counter wrapped
            delta += rng
        total += delta
    return total


def _peak_in_subprocess(model: nn.Module, inputs: tuple, threads: int) -> int | None:
    """Peak resident memory of one call in a fresh process (the model and inputs pickled over):
    VmHWM after reset, above the resident set before the call. None when the model cannot be
    pickled (e.g. parametrized, pruned modules)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "job.pt"
        try:
            torch.save({"model": model, "inputs": inputs, "threads": threads}, path)
        except Exception:  # noqa: BLE001 - any pickling failure means: measure elsewhere
            return None
        code = ("import sys, json; from edgegen.eval.profile import _peak_worker; "
                "print(json.dumps(_peak_worker(sys.argv[1])))")
        r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=600,
                           env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
        if r.returncode != 0:
            return None
        return int(json.loads(r.stdout.strip().splitlines()[-1])["peak"])


def proc_status_kb(key: str) -> int:
    """A kB field of /proc/self/status (VmRSS, VmHWM, ...)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def _peak_worker(path: str) -> dict:
    import gc

    import edgegen  # noqa: F401  (registers the ops the model uses)

    job = torch.load(path, weights_only=False)
    torch.set_num_threads(job["threads"])
    model, inputs = job["model"], job["inputs"]
    with torch.no_grad():
        model(*inputs)  # warm: lazy allocations, packed weights
        gc.collect()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = proc_status_kb("VmRSS")
        out = model(*inputs)
        del out
        peak = proc_status_kb("VmHWM")
    return {"peak": max(0, peak - base) * 1024}


def _quantiles(samples: list[float]) -> tuple[float, float]:
    """Median and p90 (nearest rank) of the timings."""
    s = sorted(samples)
    n = len(s)
    p50 = s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])
    return p50, s[min(n - 1, math.ceil(0.9 * n) - 1)]


def profile(model: nn.Module, example_inputs, repeats: int = 20, warmup: int = 3, threads: int | None = None,
            watts_per_core: float = DEFAULT_WATTS_PER_CORE, measure_memory: bool = True,
            rapl_root: str = _RAPL_ROOT, min_time_s: float = 0.0) -> ProfileRecord:
    """Profile ``model(*example_inputs)`` (inference, no gradients) on this machine.

    Latency: median and p90 of ``repeats`` timed calls after ``warmup`` (more calls until
    ``min_time_s`` seconds have passed, if set); throughput = batch size
    (the first input's leading dimension) / median latency. FLOPs: torch's counter with edgegen's
    ops (see edgegen.ops.flops). Size: :func:`model_bytes_on_disk`. Peak memory: one call in a
    fresh process (CPU models); ``None`` with the reason in ``peak_memory_method`` where that is not
    possible. Energy per call: RAPL over the timed calls when readable (each package's counter
    corrected for its own wrap), else estimated as the process's CPU time x ``watts_per_core``;
    either way the CPU only (for a model on a GPU, ``energy_method`` says the GPU is not counted).
    A CUDA model is synchronised before and after each timed call.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    if not inputs:
        raise ValueError("example_inputs: expected at least one input")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats: expected an int >= 1, got {repeats!r}")
    if not (isinstance(min_time_s, (int, float)) and math.isfinite(min_time_s) and min_time_s >= 0):
        raise ValueError(f"min_time_s: expected a finite value >= 0, got {min_time_s!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup: expected an int >= 0, got {warmup!r}")
    if not (isinstance(watts_per_core, (int, float)) and math.isfinite(watts_per_core) and watts_per_core > 0):
        raise ValueError(f"watts_per_core: expected a finite value > 0, got {watts_per_core!r}")
    previous_threads = torch.get_num_threads()
    if threads is not None:
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads: expected None or an int >= 1, got {threads!r}")
        torch.set_num_threads(threads)
    used_threads = torch.get_num_threads()
    flags = training_flags(model)  # each module's own: model.train(flag) would overwrite a frozen BatchNorm's
    model.eval()
    notes = []
    try:
        if _is_quantized(model):
            params, nonzero = _stored_weight_counts(model)
            notes.append("params counted from the stored weights (integer weights of quantized layers, padding of "
                         "packed layouts included)")
        else:
            params = sum(p.numel() for p in model.parameters())
            nonzero = sum(int(torch.count_nonzero(p.detach())) for p in model.parameters())
        flops = count_flops(model, inputs)
        size, disk_format = model_bytes_on_disk(model)
        precision, precision_basis = _compute_precision(model)

        device = next((t.device for t in (*model.parameters(), *model.buffers())), torch.device("cpu"))
        with torch.no_grad():
            for _ in range(warmup):
                model(*inputs)
            _sync(device)
            samples = []
            rapl0 = read_rapl_joules(rapl_root)
            cpu0 = time.process_time()
            start = time.perf_counter()
            # At least ``repeats`` calls and ``min_time_s`` seconds: a window of a few milliseconds
            # would make the energy figure mostly noise (threads still spinning from earlier work).
            while len(samples) < repeats or (time.perf_counter() - start < min_time_s and len(samples) < 100_000):
                t0 = time.perf_counter()
                model(*inputs)
                _sync(device)  # CUDA calls return before the kernels finish
                samples.append((time.perf_counter() - t0) * 1e3)
            cpu_s = time.process_time() - cpu0
            rapl1 = read_rapl_joules(rapl_root)
        p50, p90 = _quantiles(samples)
        first = inputs[0]
        batch = int(first.shape[0]) if isinstance(first, torch.Tensor) and first.dim() > 0 else 1

        energy = estimated = None
        joules = rapl_energy_between(rapl0, rapl1) if rapl0 is not None and rapl1 is not None else None
        if joules is not None:
            energy = joules / len(samples)
            method = (f"measured: RAPL package energy over the timed calls ({len(rapl0)} package(s), each counter's "
                      "wrap corrected; whole package, other load included)")
        else:
            if rapl0 is not None and rapl1 is not None:
                notes.append(f"RAPL packages differed between the readings ({sorted(rapl0)} then {sorted(rapl1)}); "
                             "energy estimated instead")
            estimated = cpu_s * watts_per_core / len(samples)
            method = (f"estimated: process CPU time x {watts_per_core:g} W per busy core (a stated figure, no "
                      "power meter read)")
        if device.type != "cpu":
            method += f"; CPU only: the model ran on {device}, whose energy is not included"

        if not measure_memory:
            peak, peak_method = None, "not measured (measure_memory=False)"
        elif device.type != "cpu":
            peak, peak_method = None, f"not measured (model on {device}; the subprocess measure is for CPU)"
        else:
            peak = _peak_in_subprocess(model, inputs, used_threads)
            peak_method = "resident-set high-water mark of one call in a fresh process"
            if peak is None and any(torch.nn.utils.parametrize.is_parametrized(m) for m in model.modules()):
                import copy

                from edgegen.prune.masks import finalize_

                peak = _peak_in_subprocess(finalize_(copy.deepcopy(model)), inputs, used_threads)
                peak_method += " (pruning masks baked in, as the model would be shipped)"
            if peak is None:
                peak_method = "not measured (the model could not be pickled to a fresh process)"
        return ProfileRecord(
            params=params, nonzero_params=nonzero, flops=flops, macs=flops // 2, bytes_on_disk=size,
            disk_format=disk_format, peak_memory_bytes=peak, peak_memory_method=peak_method,
            latency_ms_p50=p50, latency_ms_p90=p90, throughput_per_s=batch / (p50 * 1e-3) if p50 > 0 else math.inf,
            batch_size=batch, energy_j=energy, energy_j_estimated=estimated, energy_method=method,
            threads=used_threads, notes=notes, compute_precision=precision, compute_precision_basis=precision_basis)
    finally:
        restore_training_flags(flags)
        torch.set_num_threads(previous_threads)


@dataclass
class GenerationProfile:
    """Latency of autoregressive generation with the KV cache: the prefill of ``prompt_tokens``
    and each later one-token step (median and p90 over ``new_tokens`` steps), in ms."""

    prompt_tokens: int
    new_tokens: int
    batch_size: int
    prefill_ms_p50: float
    decode_ms_per_token_p50: float
    decode_ms_per_token_p90: float
    decode_tokens_per_s: float
    threads: int

    def as_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def profile_generation(model: nn.Module, prompt_tokens: int = 128, new_tokens: int = 32, batch_size: int = 1,
                       repeats: int = 3, threads: int | None = None, seed: int = 0) -> GenerationProfile:
    """Prefill and per-token decode latency of a causal LM with a KV cache: ``model(idx,
    past_key_values=..., use_cache=True)`` returning (logits, cache), as edgegen's GPT-2 does.
    Random prompts (latency does not depend on the tokens); greedy next tokens fed back; the
    prefill is the median of ``repeats`` runs, the decode steps are pooled over them."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    config = getattr(model, "config", None)
    vocab, n_positions = getattr(config, "vocab_size", None), getattr(config, "n_positions", None)
    if not isinstance(vocab, int) or not isinstance(n_positions, int):
        raise TypeError("model: expected a causal LM with config.vocab_size and config.n_positions (edgegen GPT-2)")
    for name, v, lo in (("prompt_tokens", prompt_tokens, 1), ("new_tokens", new_tokens, 1),
                        ("batch_size", batch_size, 1), ("repeats", repeats, 1)):
        if not isinstance(v, int) or v < lo:
            raise ValueError(f"{name}: expected an int >= {lo}, got {v!r}")
    if prompt_tokens + new_tokens > n_positions:
        raise ValueError(f"prompt_tokens + new_tokens: expected at most the model's n_positions ({n_positions}), got "
                         f"{prompt_tokens + new_tokens}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads: expected None or an int >= 1, got {threads!r}")
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    flags = training_flags(model)  # each module's own: model.train(flag) would overwrite a frozen BatchNorm's
    model.eval()
    try:
        device = next((t.device for t in (*model.parameters(), *model.buffers())), torch.device("cpu"))
        g = torch.Generator().manual_seed(seed)
        prefill, steps = [], []
        for r in range(repeats + 1):  # the first run warms up
            idx = torch.randint(0, vocab, (batch_size, prompt_tokens), generator=g).to(device)
            t0 = time.perf_counter()
            logits, past = model(idx, past_key_values=None, use_cache=True)
            nxt = logits[:, -1:].argmax(-1)
            _sync(device)
            t_prefill = (time.perf_counter() - t0) * 1e3
            run_steps = []
            for _ in range(new_tokens):
                t0 = time.perf_counter()
                logits, past = model(nxt, past_key_values=past, use_cache=True)
                nxt = logits[:, -1:].argmax(-1)
                _sync(device)
                run_steps.append((time.perf_counter() - t0) * 1e3)
            if r > 0:
                prefill.append(t_prefill)
                steps.extend(run_steps)
        p50_prefill, _ = _quantiles(prefill)
        p50, p90 = _quantiles(steps)
        return GenerationProfile(prompt_tokens, new_tokens, batch_size, p50_prefill, p50, p90,
                                 batch_size / (p50 * 1e-3) if p50 > 0 else math.inf, torch.get_num_threads())
    finally:
        restore_training_flags(flags)
        torch.set_num_threads(previous_threads)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
