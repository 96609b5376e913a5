"""Sliding-window + global-token attention on CPU, forward and forward+backward.

B=1, H=12, head_dim=64, window=256, num_global=4, causal, n in {1024, 4096, 16384}, float32:
  * edgegen      torch.ops.edgegen.sliding_window_attention (C++ flash-style tiles, its own backward)
  * sdpa_causal  dense causal F.scaled_dot_product_attention (ATen's CPU flash kernel; what a
                 model without sparse attention runs; more work, the speed target's baseline)
  * sdpa_mask    the same SDPA with the explicit [n, n] boolean mask of the sliding pattern
                 (the obvious way to get this pattern in PyTorch)
  * flex         torch.nn.attention.flex_attention compiled with a block mask of the pattern
                 (forward; its CPU backward is attempted and reported if it fails)
Also: one decode step (1 query, a cache of n keys) for edgegen and SDPA, and fwd+bwd in bfloat16
(n >= 4096) for edgegen and SDPA.

    python benchmarks/bench_attention.py            # full run (~15 minutes on 2 cores)
    python benchmarks/bench_attention.py --quick    # n in {1024, 4096}, 5 repeats, no flex
    python benchmarks/bench_attention.py --lengths 16384 --out ...   # only the given lengths

edgegen's outputs and gradients above 32 MiB come from its buffer cache (edgegen.memory), so
repeated calls reuse last call's buffers; "edgegen-fresh" (n >= 16384) is the best path with the
cache off (EDGEGEN_BUFFER_CACHE=0): fresh buffers, as the peers get.
Each (provider, case) runs in its own process: times are p20/p50/p80 after warm-up at a fixed
thread count, peak memory is the resident-set high-water mark above the inputs (see harness.py).
"useful GFLOP/s" counts the pattern's visible (query, key) pairs only, 4*d flops per pair forward
and 14*d forward+backward, for every provider: dense causal SDPA does more work than that.
Targets: edgegen >= 5x sdpa_causal at n=4096 and >= 15x at n=16384 (forward+backward),
time from 4096 to 16384 <= 4.5x, memory linear in n. Results: benchmarks/results/attention.csv.

Correctness: each edgegen and sdpa_mask row is checked once in its timing process, outside the
timed loop, on the path it is timed on (the same EDGEGEN_MAX_ISA, mode and dtype) at
n = min(n, 1024): the output (and for fwd+bwd the gradients of q, k and v) against float64 SDPA
with the pattern's mask. max_err = the largest max |x - ref| / max |ref| over them; tolerance 1e-4
in float32, 2e-2 in bfloat16; a row over it fails the run. FlexAttention's forward is checked the
same way once before the timings (not under --quick, which skips flex: its compile takes minutes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

B, H, D, WINDOW, NUM_GLOBAL = 1, 12, 64, 256, 4
SHAPE = "B={B} H={H} n={n} d={D} w={WINDOW} g={NUM_GLOBAL}"  # the shape column, n filled in
TOLERANCE = {"float32": 1e-4, "bfloat16": 2e-2}
CHECK_N = 1024  # the longest sequence the correctness check runs (float64 dense reference)


def visible_pairs(n: int, window: int, num_global: int) -> int:
    """(query, key) pairs of the causal sliding-window + global pattern."""
    total = 0
    for p in range(n):
        local = min(p + 1, window)
        total += local + min(num_global, max(0, p + 1 - window))
    return total


def inputs(n: int, mode: str, dtype):
    """Seeded q, k, v (requiring grad for fwd+bwd) and the output gradient: nq = 1 query (the last
    position) for decode, else n."""
    import torch

    g = torch.Generator().manual_seed(0)
    grad = mode == "fwd+bwd"
    nq = 1 if mode == "decode" else n
    q = torch.randn(B, H, nq, D, generator=g).to(dtype).requires_grad_(grad)
    k = torch.randn(B, H, n, D, generator=g).to(dtype).requires_grad_(grad)
    v = torch.randn(B, H, n, D, generator=g).to(dtype).requires_grad_(grad)
    return q, k, v, torch.randn(B, H, nq, D, generator=g).to(dtype)


def attention_fn(provider: str, n: int, mode: str):
    """``provider``'s attention as f(q, k, v) for n keys (and one query, the last, for decode)."""
    import torch
    import torch.nn.functional as F

    from edgegen.attention import sliding_window_attention, sliding_window_mask

    nq = 1 if mode == "decode" else n
    offset = n - nq
    if provider.startswith("edgegen"):  # edgegen[<path>]: run under EDGEGEN_MAX_ISA=<path>
        return lambda q, k, v: sliding_window_attention(q, k, v, WINDOW, NUM_GLOBAL, q_offset=offset)
    if provider == "sdpa_causal":
        if mode == "decode":  # one query sees every cached key: no mask needed
            return lambda q, k, v: F.scaled_dot_product_attention(q, k, v)
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if provider == "sdpa_mask":
        mask = sliding_window_mask(nq, n, WINDOW, NUM_GLOBAL, True, offset)
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if provider == "flex":
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        def mask_mod(b, h, qi, kj):
            return (kj <= qi) & ((qi - kj < WINDOW) | (kj < NUM_GLOBAL))

        block_mask = create_block_mask(mask_mod, B=None, H=None, Q_LEN=n, KV_LEN=n, device="cpu")
        flex = torch.compile(flex_attention)
        return lambda q, k, v: flex(q, k, v, block_mask=block_mask)
    raise ValueError(provider)


def check_error(provider: str, n: int, mode: str, dtype) -> float:
    """``provider`` against float64 SDPA with the pattern's mask at n keys: the largest
    max |x - ref| / max |ref| over the output and, for fwd+bwd, the q, k, v gradients."""
    import torch
    import torch.nn.functional as F

    from edgegen.attention import sliding_window_mask

    q, k, v, go = inputs(n, mode, dtype)
    nq = q.shape[-2]
    out = attention_fn(provider, n, mode)(q, k, v)
    q64, k64, v64 = (x.detach().double().requires_grad_(mode == "fwd+bwd") for x in (q, k, v))
    ref = F.scaled_dot_product_attention(q64, k64, v64,
                                         attn_mask=sliding_window_mask(nq, n, WINDOW, NUM_GLOBAL, True, n - nq))
    pairs = [(out, ref)]
    if mode == "fwd+bwd":
        pairs += zip(torch.autograd.grad(out, (q, k, v), go), torch.autograd.grad(ref, (q64, k64, v64), go.double()))
    return max(float((a.detach().double() - b.detach()).abs().max() / b.detach().abs().max()) for a, b in pairs)


def worker(spec: dict) -> dict:
    import torch

    import edgegen  # noqa: F401

    torch.set_num_threads(spec["threads"])
    n, provider, mode = spec["n"], spec["provider"], spec["mode"]
    dtype = getattr(torch, spec["dtype"])
    if spec["measure"] == "check":  # the forward alone, before the timings (FlexAttention)
        return {"max_err": check_error(provider, min(n, CHECK_N), mode, dtype)}
    q, k, v, grad_out = inputs(n, mode, dtype)
    f = attention_fn(provider, n, mode)

    def attn():
        return f(q, k, v)

    if mode == "fwd+bwd":
        def run():
            out = attn()
            return torch.autograd.grad(out, (q, k, v), grad_out)
    else:
        def run():
            with torch.no_grad():
                return attn()

    check = {}
    if spec["measure"] == "memory":
        run()  # compile / warm caches first
    elif provider.startswith("edgegen") or provider == "sdpa_mask":  # once, outside the timed loop
        check = harness.check_result(check_error(provider, min(n, CHECK_N), mode, dtype), TOLERANCE[spec["dtype"]])
    return {**harness.measure(spec, run), **check}


def check_cell(res: dict) -> str:
    """A worker result's check, for the printed tables ("" where the provider is not checked)."""
    if "max_err" not in res:
        return ""
    return f"{harness.verdict(res['max_err'], res['tol'])} ({res['max_err']:.3g})"


def edgegen_bf16_products() -> dict[str, str]:
    """How each attention level of this CPU multiplies bf16 inputs ('avx512_bf16' or 'float')."""
    import edgegen

    out = {}
    for level in harness.kernel_levels("attention"):
        with edgegen.max_isa(level):
            out[level] = edgegen._C.attention_bf16_products()
    return out


def sequence_lengths(text: str) -> tuple[int, ...]:
    """--lengths: positive integers separated by commas, e.g. "4096,16384"."""
    try:
        out = tuple(int(v) for v in text.split(","))
    except ValueError:
        out = ()
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return tuple(sorted(set(out)))  # ascending: the scaling lines compare each length with the previous


def main():
    args = harness.cli(__doc__, "attention.csv", worker, add_arguments=lambda ap: ap.add_argument(
        "--lengths", type=sequence_lengths, help="comma-separated sequence lengths instead of the default ones"))
    machine, versions = harness.header(args.threads)
    print(f"# B={B} H={H} d={D} window={WINDOW} num_global={NUM_GLOBAL} causal, float32 unless noted")
    rows = []
    lengths = (1024, 4096) if args.quick else (1024, 4096, 16384)
    if args.lengths:
        lengths = args.lengths

    if args.quick:
        print("# FlexAttention skipped under --quick (its compile takes minutes): no flex rows in this run")
    else:
        # edgegen's and sdpa_mask's rows carry their own check (max_err, check columns).
        print(f"\n## FlexAttention's accuracy vs float64 SDPA with the pattern's mask, n={CHECK_N} (forward, "
              "max |error| / max |ref|)")
        r = harness.run_once(__file__, dict(n=CHECK_N, provider="flex", mode="fwd", dtype="float32",
                                            threads=args.threads, measure="check"))
        print(f"{'flex':16s} {r.get('max_err', r.get('error'))}")

    # edgegen's lower attention paths beside the best one ("edgegen"), each under its own cap.
    levels = harness.above_scalar(harness.kernel_levels("attention"))
    lower = [f"edgegen[{lv}]" for lv in levels[:-1]]
    best_path = levels[-1]
    harness.print_paths("attention", levels, f" ('edgegen' = {best_path})")
    results: dict[tuple, dict] = {}
    for mode in ("fwd", "fwd+bwd"):
        print(f"\n## {mode}")
        print(f"{'n':>6s} {'provider':16s} {'p50 ms':>10s} {'peak MB':>9s} {'useful GFLOP/s':>14s} "
              f"{'edgegen speed-up':>16s}  check (max_err)")
        for n in lengths:
            pairs = visible_pairs(n, WINDOW, NUM_GLOBAL)
            flops = (4 if mode == "fwd" else 14) * D * pairs * B * H
            providers = ["edgegen", *lower, *(["edgegen-fresh"] if n >= 16384 else []), "sdpa_causal",
                         "sdpa_mask"]
            if not args.quick:
                providers.append("flex")
            for provider in providers:
                # The shared machine's noise is +-30% on single runs: the cheap cases get more.
                repeats = harness.MIN_REPEATS if args.quick or not provider.startswith("edgegen") else 11
                isa = best_path if provider == "edgegen-fresh" else harness.isa_of(provider)
                spec = dict(n=n, provider=provider, mode=mode, dtype="float32", threads=args.threads,
                            repeats=repeats, isa=isa)
                if provider == "edgegen-fresh":
                    spec["env"] = {"EDGEGEN_BUFFER_CACHE": "0"}
                r = harness.run_worker(__file__, spec, timeout=1800)
                path = isa or (best_path if provider == "edgegen" else "")
                if "error" in r:
                    print(f"{n:6d} {provider:16s} ERROR {r['error']}")
                    rows.append(dict(op="sliding_window_attention", provider=provider, shape=SHAPE.format(
                        B=B, H=H, n=n, D=D, WINDOW=WINDOW, NUM_GLOBAL=NUM_GLOBAL), dtype="float32", mode=mode,
                        kernel_path=path, error=harness.error_text(r)))
                    continue
                results[(mode, n, provider)] = r
                gflops = flops / (r["p50_ms"] * 1e-3) / 1e9
                base = results.get((mode, n, "edgegen"))
                speed = "" if provider == "edgegen" or base is None else f"{r['p50_ms'] / base['p50_ms']:15.2f}x"
                print(f"{n:6d} {provider:16s} {r['p50_ms']:10.1f} {r['peak_mb']:9.0f} {gflops:14.1f} {speed:>16s}  "
                      f"{check_cell(r)}")
                rows.append(dict(op="sliding_window_attention", provider=provider,
                                 shape=SHAPE.format(B=B, H=H, n=n, D=D, WINDOW=WINDOW, NUM_GLOBAL=NUM_GLOBAL),
                                 dtype="float32", mode=mode, gflops=round(gflops, 2), kernel_path=path,
                                 **harness.measured(r)))
        harness.save(rows, args.out, final=False, threads=args.threads, machine=machine, versions=versions)

    print("\n## scaling of edgegen (target: 4096 -> 16384 time <= 4.5x; memory linear)")
    for mode in ("fwd", "fwd+bwd"):
        e = [(n, results[(mode, n, "edgegen")]) for n in lengths if (mode, n, "edgegen") in results]
        for (n0, a), (n1, b) in zip(e, e[1:]):
            print(f"{mode:8s} n {n0} -> {n1} ({n1 // n0}x): time {b['p50_ms'] / a['p50_ms']:.2f}x, "
                  f"peak memory {b['peak_mb'] / max(a['peak_mb'], 1e-9):.2f}x")

    print("\n## one decode step (1 new query, cache of n keys) and bfloat16")
    print(f"{'case':34s} {'provider':16s} {'p50 ms':>10s} {'speed-up':>9s}  check (max_err)")
    extra = [("decode", n, "float32") for n in lengths] + [("fwd+bwd", n, "bfloat16") for n in lengths if n >= 4096]
    products = edgegen_bf16_products()
    for mode, n, dtype in extra:
        res = {}
        for provider in ("edgegen", *lower, "sdpa_causal"):
            isa = harness.isa_of(provider)
            spec = dict(n=n, provider=provider, mode=mode, dtype=dtype, threads=args.threads,
                        repeats=50 if mode == "decode" else harness.MIN_REPEATS, isa=isa)
            r = harness.run_worker(__file__, spec, timeout=1800)
            path = isa or (best_path if provider == "edgegen" else "")
            if path and dtype == "bfloat16":  # how that path multiplies bf16 inputs
                path = f"{path} ({products.get(path, 'float')} products)"
            shape = SHAPE.format(B=B, H=H, n=n, D=D, WINDOW=WINDOW, NUM_GLOBAL=NUM_GLOBAL)
            if "error" in r:
                print(f"{mode} n={n} {dtype:24s} {provider:16s} ERROR {r['error']}")
                rows.append(dict(op="sliding_window_attention", provider=provider, shape=shape, dtype=dtype,
                                 mode=mode, kernel_path=path, error=harness.error_text(r)))
                continue
            res[provider] = r
            rows.append(dict(op="sliding_window_attention", provider=provider, shape=shape, dtype=dtype, mode=mode,
                             kernel_path=path, **harness.measured(r, 4)))
        if "edgegen" in res:
            for provider, r in res.items():
                speed = "" if provider == "edgegen" else f"{r['p50_ms'] / res['edgegen']['p50_ms']:8.2f}x"
                print(f"{f'{mode} n={n} {dtype}':34s} {provider:16s} {r['p50_ms']:10.3f} {speed:>9s}  {check_cell(r)}")
    harness.save(rows, args.out, threads=args.threads, machine=machine, versions=versions)


if __name__ == "__main__":
    main()
