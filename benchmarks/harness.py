"""Shared benchmark harness: the command line and worker processes of the CPU benchmark scripts,
timing, CPU peak memory, machine ceilings, one fixed-schema CSV.

Every (provider, case) pair is measured in fresh subprocesses, so one provider's allocations,
compiled code and allocator caches never colour another's numbers:
  * times come from a process with the default allocator settings: p20/p50/p80 of repeated runs
    after warm-up, at a fixed thread count;
  * peak memory comes from a second process in which allocations above 64 KiB are served by mmap
    (MALLOC_MMAP_THRESHOLD_), so freed tensors leave the resident set at once and RSS tracks live
    memory. The peak is the kernel's resettable high-water mark (write 5 to
    /proc/self/clear_refs, run once, read VmHWM), reported as the increase over the resident set
    before the run.

Correctness: where a script checks a result against a reference (once per case, in the timing
worker, outside the timed loop), the row's ``max_err`` is the largest error it found (the script's
docstring says in which unit) and ``check`` says "ok" or "FAILED" against the tolerance; a failed
check is printed when it happens and again at the end, and the script then exits with status 1.
A case that fails to run (an exception, a worker past its time limit) becomes a row with its
``error``; a run in which no case was measured writes nothing and exits with status 1.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

RESULTS = Path(__file__).resolve().parent / "results"

CSV_FIELDS = [
    "op", "provider", "shape", "dtype", "mode", "p20_ms", "p50_ms", "p80_ms", "peak_mb",
    "gbps", "gflops", "threads", "machine", "versions", "kernel_path", "cpu_flags",
    "max_err", "check", "error", "total_ms",
]

# The fewest timed runs behind any p20/p50/p80 (time_ms raises smaller requests to it).
MIN_REPEATS = 5

# The instruction-set flags the kernels choose between, as /proc/cpuinfo names them.
ISA_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni", "avx_vnni",
             "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16")


def _status_kb(key: str) -> int:
    from edgegen.eval.profile import proc_status_kb

    return proc_status_kb(key)


def peak_extra_mb(fn: Callable[[], object]) -> float:
    """Peak resident memory above the current level while fn() runs, in MB (1e6 bytes). edgegen's
    buffer cache is emptied first, so buffers it would reuse count as the new memory they are."""
    import gc

    import edgegen

    edgegen.memory.empty_cache()
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status_kb("VmRSS")
    out = fn()
    del out
    peak = _status_kb("VmHWM")
    return (peak - base) * 1024 / 1e6


def time_ms(fn: Callable[[], object], repeats: int, warmup: int = 1,
            setup: Callable[[], object] | None = None) -> tuple[float, float, float]:
    """p20/p50/p80 in ms of ``fn()`` over ``max(repeats, MIN_REPEATS)`` timed calls; ``setup()``
    (untimed) runs before every call, for ops that consume their inputs (in-place pruning,
    re-parametrisation)."""
    repeats = max(repeats, MIN_REPEATS)
    for _ in range(warmup):
        if setup:
            setup()
        fn()
    samples = []
    for _ in range(repeats):
        if setup:
            setup()
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return quantiles(samples)


def quantiles(samples: list[float]) -> tuple[float, float, float]:
    """p20/p50/p80 of timing samples (linear interpolation, as numpy.percentile)."""
    import numpy as np

    if not samples:
        raise ValueError("samples: expected at least one timing, got none")
    p20, p50, p80 = np.percentile(samples, [20, 50, 80])
    return float(p20), float(p50), float(p80)


def measure(spec: dict, fn: Callable[[], object], warmup: int = 1, setup: Callable[[], object] | None = None,
            repeats: int | None = None) -> dict:
    """A worker's measurement of ``fn``, the one ``spec["measure"]`` names: ``{"peak_mb"}`` for
    "memory" (after ``setup()``, when given), else p20/p50/p80 ms of ``spec["repeats"]`` runs (or
    ``repeats``) after ``warmup``, ``setup()`` untimed before each."""
    if spec["measure"] == "memory":
        if setup:
            setup()
        return {"peak_mb": peak_extra_mb(fn)}
    p20, p50, p80 = time_ms(fn, repeats=spec["repeats"] if repeats is None else repeats, warmup=warmup, setup=setup)
    return {"p20_ms": p20, "p50_ms": p50, "p80_ms": p80}


def machine() -> str:
    from edgegen.tracking import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} cores"


def cpu_flags() -> str:
    """The ISA flags of this CPU (space-separated, from /proc/cpuinfo), for every CSV row."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return " ".join(fl for fl in ISA_FLAGS if fl in have)
    except OSError:
        pass
    return "unknown"


def kernel_levels(family: str) -> list[str]:
    """The ISA levels at which ``family`` (a key of edgegen.kernel_paths()) runs a distinct path on
    this CPU, lowest first: each is benchmarked under its own EDGEGEN_MAX_ISA cap."""
    import edgegen

    order = edgegen.isa.LEVELS
    cap = edgegen._C.max_isa()  # EDGEGEN_MAX_ISA: never benchmark above it
    seen, out = set(), []
    for level in edgegen.cpu_levels():
        if order.index(level) > order.index(cap):
            break
        with edgegen.max_isa(level):
            path = edgegen.kernel_paths()[family]
        if path not in seen:
            seen.add(path)
            out.append(path)
    return out


def above_scalar(levels: list[str]) -> list[str]:
    """The vector levels among ``levels``; ["scalar"] where there are none."""
    return [lv for lv in levels if lv != "scalar"] or ["scalar"]


def isa_of(provider: str) -> str | None:
    """The ISA cap in a provider name such as "edgegen[avx2]" (None without brackets)."""
    return provider[provider.index("[") + 1:-1] if "[" in provider else None


def print_paths(family: str, levels: list[str], note: str = "") -> None:
    """Prints the kernel paths benchmarked for ``family`` and this CPU's ISA flags."""
    print(f"# {family} paths on this CPU: {', '.join(levels)}{note}; CPU flags: {cpu_flags()}")


def versions() -> str:
    """torch, numpy, onnxruntime (or "onnxruntime absent") and edgegen with its best ISA level."""
    import numpy
    import torch

    import edgegen

    try:
        import onnxruntime

        ort = f"onnxruntime {onnxruntime.__version__}"
    except ImportError:
        ort = "onnxruntime absent"
    return (f"torch {torch.__version__}; numpy {numpy.__version__}; {ort}; "
            f"edgegen {edgegen.__version__} ({edgegen.cpu_isa()})")


def copy_bandwidth_gbps(threads: int, mbytes: int = 512) -> float:
    """Achieved memory bandwidth of a large tensor copy (read + write bytes / time): the ceiling
    that memory-bound kernels are compared against."""
    import torch

    torch.set_num_threads(threads)
    n = mbytes * 2**20 // 4
    a = torch.ones(n)
    b = torch.empty(n)
    _, p50, _ = time_ms(lambda: b.copy_(a), repeats=10, warmup=2)
    return 2 * n * 4 / (p50 * 1e-3) / 1e9


def print_copy_ceiling(threads: int) -> float:
    """Measures and prints copy_bandwidth_gbps(threads)."""
    ceiling = copy_bandwidth_gbps(threads)
    print(f"# memory copy bandwidth (ceiling): {ceiling:.1f} GB/s")
    return ceiling


def header(threads: int, note: str = "") -> tuple[str, str]:
    """Prints the machine, the versions and the thread count; returns (machine, versions)."""
    m, v = machine(), versions()
    print(f"# {m}; {v}; {threads} threads{note}")
    return m, v


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def section_digits(valid: str) -> Callable[[str], str]:
    """argparse type for --sections: one or more of the digits in ``valid`` (e.g. "1234")."""
    def parse(text: str) -> str:
        if not text or any(c not in valid for c in text):
            raise argparse.ArgumentTypeError(
                f"expected one or more of the section numbers {', '.join(valid)} (e.g. {valid[-2:]}), got {text!r}")
        return text
    return parse


def cli(doc: str, csv_name: str, worker: Callable[[dict], dict] | None = None, quick_help: str | None = None,
        add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
        out_aliases: tuple[str, ...] = (), default_threads: int | None = None,
        argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of a CPU benchmark script: --quick, --threads (an integer >= 1; default:
    every core), the script's own arguments (``add_arguments``), --out (default
    results/<csv_name>; ``out_aliases`` are other names for it).

    Started by run_worker as ``script --worker '<json spec>'``, it prints ``worker(spec)`` as one
    JSON line and exits instead of returning (scripts that measure in one process pass no worker)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if worker is not None:
        ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--threads", type=positive_int, default=default_threads or os.cpu_count(),
                    help="intra-op threads of every provider (default: %(default)s)")
    if add_arguments:
        add_arguments(ap)
    ap.add_argument("--out", *out_aliases, default=str(RESULTS / csv_name),
                    help="the CSV to write (default: %(default)s)")
    args = ap.parse_args(argv)
    if worker is not None and args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        sys.exit(0)
    return args


def run_once(script: str, spec: dict, env: dict | None = None, timeout: float = 3600) -> dict:
    """``script --worker '<json spec>'`` in a fresh process with ``env`` added to the environment:
    the JSON line it prints last, or {"error": [why]} (its last line of output, or that it ran
    past ``timeout`` seconds and was stopped)."""
    try:
        r = subprocess.run(
            [sys.executable, script, "--worker", json.dumps(spec)], capture_output=True, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": [f"timed out: the worker ran past {timeout:g} s and was stopped"]}
    if r.returncode != 0:
        return {"error": (r.stderr or r.stdout).strip().splitlines()[-1:] or [f"failed (exit status {r.returncode})"]}
    lines = r.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        return {"error": [f"the worker printed no result line: {lines[-1] if lines else '(nothing)'}"]}


def run_worker(script: str, spec: dict, timeout: int = 3600) -> dict:
    """Time, then measure peak memory, each in a fresh `script --worker '<json spec>'` process
    (spec["measure"] tells the worker which); each prints one JSON line."""
    env = {"EDGEGEN_MAX_ISA": spec["isa"]} if spec.get("isa") else {}
    env.update(spec.get("env", {}))
    res = run_once(script, {**spec, "measure": "time"}, env, timeout)
    if "error" in res:
        return res
    mem = run_once(script, {**spec, "measure": "memory"}, {"MALLOC_MMAP_THRESHOLD_": "65536", **env},
                   timeout)
    return mem if "error" in mem else {**res, **mem}


def check_result(err: float, tol: float) -> dict:
    """A worker's correctness result: the largest error ``err`` against the reference and the
    tolerance ``tol`` it must not exceed (``measured`` turns them into the max_err/check columns)."""
    return {"max_err": float(err), "tol": float(tol)}


def verdict(err: float, tol: float) -> str:
    """The check column: "ok (<= tol)" or "FAILED (> tol)" (a NaN error fails)."""
    return f"ok (<= {tol:g})" if err <= tol else f"FAILED (> {tol:g})"


def measured(res: dict, digits: int = 3) -> dict:
    """The CSV columns among a worker's results, rounded; with a check (``check_result``), its
    max_err (3 significant digits) and verdict, printed loudly when it failed."""
    out = {k: round(v, digits) for k, v in res.items() if k in CSV_FIELDS and k not in ("max_err", "check")}
    if "max_err" in res:
        err, tol = res["max_err"], res["tol"]
        out["max_err"] = float(f"{err:.3g}")
        out["check"] = verdict(err, tol)
        if out["check"].startswith("FAILED"):
            print(f"!!! CHECK FAILED: error {err:.3g} against the reference, tolerance {tol:g}", flush=True)
    return out


def error_text(res: dict) -> str:
    """A worker's error (``{"error": [lines]}``) as one line for the CSV's error column."""
    return " | ".join(str(e) for e in res["error"]) or "failed"


def write_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        flags = cpu_flags()
        for r in rows:
            w.writerow({**{k: r.get(k, "") for k in CSV_FIELDS}, "cpu_flags": r.get("cpu_flags") or flags})


def has_timing(row: dict) -> bool:
    return any(row.get(k) not in (None, "") for k in ("p50_ms", "total_ms"))


def save(rows: list[dict], out: str, lead: str = "\n", final: bool = True, **common) -> None:
    """Writes ``rows`` to the CSV ``out``, each given ``common``'s values for the columns it lacks.

    Scripts save after every section (``final=False``: nothing is written while no case has been
    measured) and at the end (``final=True``), which prints where, lists the cases that failed
    to run, and exits with status 1, leaving ``out`` as it was, when no case was measured, or
    after writing it when a correctness check failed."""
    if not any(has_timing(r) for r in rows):
        if final:
            print(f"{lead}error: no case was measured; {out} was not written", file=sys.stderr)
            sys.exit(1)
        return
    write_csv([{**common, **r} for r in rows], Path(out))
    if not final:
        print(f"# {len(rows)} rows so far in {out}", flush=True)
        return
    print(f"{lead}wrote {out}")
    errors = [r for r in rows if r.get("error")]
    if errors:
        print(f"{len(errors)} case(s) failed to run (the CSV's error column):")
        for r in errors:
            print(f"  {r.get('op')} {r.get('provider')} {r.get('shape')} {r.get('mode')}: {r['error']}")
    failed = [r for r in rows if str(r.get("check", "")).startswith("FAILED")]
    if failed:
        print(f"!!! {len(failed)} row(s) FAILED the correctness check:", file=sys.stderr)
        for r in failed:
            print(f"!!!   {r.get('op')} {r.get('provider')} {r.get('shape')} {r.get('dtype')} {r.get('mode')}: "
                  f"max_err {r.get('max_err')} {r['check']}", file=sys.stderr)
        sys.exit(1)


def gpt2_call(model, mode: str, tokens: int = 128):
    """A no-grad call of a GPT-2 at batch 1 on ``tokens`` seeded token ids: the whole prefill
    (``mode="prefill"``) or one decode step after it with the KV cache (``"decode"``)."""
    import torch

    idx = torch.randint(0, model.config.vocab_size, (1, tokens), generator=torch.Generator().manual_seed(1))
    if mode == "prefill":
        def run():
            with torch.no_grad():
                return model(idx)
        return run
    with torch.no_grad():
        _, past = model(idx, use_cache=True)

    def step():
        with torch.no_grad():
            return model(idx[:, -1:], past_key_values=past, use_cache=True)
    return step


def measure_gpt2(spec: dict, build):
    """A worker's measurement of ``build()`` (a GPT-2) in ``spec["mode"]`` (:func:`gpt2_call`) at
    ``spec["threads"]`` threads."""
    import torch

    torch.set_num_threads(spec["threads"])
    run = gpt2_call(build(), spec["mode"])
    run()
    return measure(spec, run, warmup=2)
