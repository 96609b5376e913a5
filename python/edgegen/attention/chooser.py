"""Latency-aware choice of the attention window: measure the sliding-window kernel on this
device for a few (window, num_global) candidates and keep the largest that fits a per-token
latency budget."""

from __future__ import annotations

import math
import statistics
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from edgegen.attention.functional import sliding_window_attention
from edgegen.ops._args import is_int

_MODES = ("forward", "train", "decode")


@dataclass
class WindowChoice:
    """The chosen ``window`` / ``num_global``, their cost (milliseconds per token, all
    ``layers`` together), whether that fits ``budget_ms``, the length they were timed at
    (``calibration_length``; 'decode' times one token after ``seq_len`` keys), and every measured
    candidate (each with its ``length``)."""

    window: int
    num_global: int
    ms_per_token: float
    budget_ms: float
    fits: bool
    mode: str
    seq_len: int
    calibration_length: int
    measurements: list[dict] = field(default_factory=list)


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (allocations, page faults)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _measurer(mode: str, seq_len: int, length: Callable[[int, int], int], batch: int, heads: int, head_dim: int,
              dtype, repeats: int, generator: torch.Generator):
    """``measure(window, num_global)`` timing the kernel; 'forward' and 'train' run it on
    ``length(window, num_global)`` tokens (inputs made once per length)."""
    def make(n: int, grad: bool):
        return [torch.randn(batch, heads, n, head_dim, generator=generator).to(dtype).requires_grad_(grad)
                for _ in range(3)]

    if mode == "decode":
        _, k, v = make(seq_len, False)
        q = torch.randn(batch, heads, 1, head_dim, generator=generator).to(dtype)

        def measure(window: int, num_global: int) -> float:
            def step():
                with torch.no_grad():
                    sliding_window_attention(q, k, v, window, num_global, q_offset=seq_len - 1)
            return _median_ms(step, repeats)  # one token
        return measure

    inputs: dict[int, tuple] = {}

    def measure(window: int, num_global: int) -> float:
        n = length(window, num_global)
        if n not in inputs:
            inputs[n] = (*make(n, mode == "train"),
                         torch.randn(batch, heads, n, head_dim, generator=generator).to(dtype))
        q, k, v, grad_out = inputs[n]

        def run():
            if mode == "train":
                out = sliding_window_attention(q, k, v, window, num_global)
                torch.autograd.grad(out, (q, k, v), grad_out)
            else:
                with torch.no_grad():
                    sliding_window_attention(q, k, v, window, num_global)
        return _median_ms(run, repeats) / n
    return measure


def choose_window(latency_budget_ms: float, seq_len: int, *, mode: str = "forward", batch: int = 1,
                  heads: int = 12, head_dim: int = 64, layers: int = 1,
                  windows: Sequence[int] = (16, 32, 64, 128, 256, 512, 1024, 2048),
                  num_globals: Sequence[int] = (0, 4), calibration_length: int = 2048, repeats: int = 3,
                  dtype: torch.dtype = torch.float32,
                  measure: Callable[[int, int], float] | None = None) -> WindowChoice:
    """The largest ``window`` (then the most global tokens) whose measured attention cost per
    token fits ``latency_budget_ms``.

    ``mode``: 'forward' (prefill / inference over ``seq_len`` tokens), 'train' (forward and
    backward) or 'decode' (one new token with a cache of ``seq_len`` keys). The cost per token is
    measured once per candidate on random [batch, heads, L, head_dim] inputs, with
    L = min(seq_len, max(calibration_length, window + num_global)) (the sliding-window cost per
    token does not grow with the length once it exceeds the window, so a short run stands for a
    long one; a shorter one would time a smaller window), times ``layers``; 'decode' times one
    token after ``seq_len`` keys (its recorded length is ``seq_len``). Windows are tried from
    small to large and measuring stops at the first window that no longer fits; windows above
    ``seq_len`` are dropped (``window = seq_len`` is already dense causal attention).
    ``measure(window, num_global) -> ms per token for one layer`` replaces the built-in timing
    (for a cost model, or a measurement taken on another device).

    If even the smallest candidate misses the budget, that candidate is returned with
    ``fits=False`` (and a warning).
    """
    if isinstance(latency_budget_ms, bool) or not isinstance(latency_budget_ms, (int, float)) or not (
            math.isfinite(latency_budget_ms) and latency_budget_ms > 0):
        raise ValueError(f"latency_budget_ms: expected a finite number > 0, got {latency_budget_ms!r}")
    for name, value in (("seq_len", seq_len), ("batch", batch), ("heads", heads), ("head_dim", head_dim),
                        ("layers", layers), ("calibration_length", calibration_length), ("repeats", repeats)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    if mode not in _MODES:
        raise ValueError(f"mode: expected one of {_MODES}, got {mode!r}")
    windows = list(windows)
    if not windows or any(not is_int(w) or w < 1 for w in windows):
        raise ValueError(f"windows: expected ints >= 1, got {windows!r}")
    windows = [int(w) for w in windows]
    cands = sorted({w for w in windows if w <= seq_len} | ({seq_len} if max(windows) >= seq_len else set()))
    globals_ = list(num_globals)
    if not globals_ or any(not is_int(g) or g < 0 for g in globals_):
        raise ValueError(f"num_globals: expected ints >= 0, got {globals_!r}")
    globals_ = [g for g in sorted({int(g) for g in globals_}) if g <= seq_len] or [0]

    def length(window: int, num_global: int) -> int:
        if mode == "decode":  # one token over the whole cache: calibration_length plays no part
            return seq_len
        return min(seq_len, max(calibration_length, window + num_global))

    if measure is None:
        gen = torch.Generator().manual_seed(0)
        measure = _measurer(mode, seq_len, length, batch, heads, head_dim, dtype, repeats, gen)

    rows: list[dict] = []
    best = None
    for w in cands:
        fitted_any = False
        for g in globals_:
            ms = float(measure(w, g)) * layers
            fits = ms <= latency_budget_ms
            rows.append({"window": w, "num_global": g, "ms_per_token": ms, "fits": fits, "length": length(w, g)})
            if fits:
                fitted_any = True
                best = (w, g, ms)
        if not fitted_any:
            break
    if best is None:
        first = rows[0]
        warnings.warn(f"choose_window: even window={first['window']} costs {first['ms_per_token']:.4g} ms per token, "
                      f"over the budget of {latency_budget_ms} ms", stacklevel=2)
        return WindowChoice(first["window"], first["num_global"], first["ms_per_token"], float(latency_budget_ms),
                            False, mode, seq_len, first["length"], rows)
    return WindowChoice(best[0], best[1], best[2], float(latency_budget_ms), True, mode, seq_len,
                        length(best[0], best[1]), rows)
