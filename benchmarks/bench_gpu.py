"""GPU benchmark: edgegen's CUDA kernels against the best peers on the same GPU, in one run.

* KD loss forward + backward (the student gradient), N x V logits: edgegen's row kernel and its
  cluster kernel (EDGEGEN_CUDA_KD_CLUSTER=1; sm_90) vs the same loss written in PyTorch (eager) and
  that code under torch.compile; achieved bandwidth of the minimum traffic (read both logits, write
  the gradient) against a measured device-to-device copy.
* Sliding-window + global-token attention forward + backward (and forward alone): edgegen (its
  default kernels, and the cp.async double-buffered ones: EDGEGEN_CUDA_ATTENTION_PIPELINE=1) vs
  FlexAttention with a block mask of the same pattern (compiled) and dense causal SDPA (flash).
* INT8 linear (torch._int_mm behind Int8Linear) vs the float layer, for the record.

Times are medians of CUDA-event timings after warm-up. peak = the most memory allocated during
one call above what was allocated before it, with the previous call's gradients still held (each
call releases and replaces them): for fwd+bwd rows, 0 means nothing beyond the new gradients. Writes
benchmarks/results/gpu.csv (or --out, alias --csv) in the shared schema and prints a table with
ratios; kernel_path names what each edgegen row ran: edgegen's CUDA kernel (row or cluster KD
kernel, default or cp.async-pipelined attention) or, without one, the fallback's PyTorch ops.
Usage: python benchmarks/bench_gpu.py [--quick] [--out PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

import edgegen  # noqa: E402,F401
from edgegen.attention import sliding_window_attention  # noqa: E402
from edgegen.distill import kd_loss  # noqa: E402


def gpu_time_ms(fn, repeats=20, warmup=3):
    """p20/p50/p80 of CUDA-event timings."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        samples.append(a.elapsed_time(b))
    return harness.quantiles(samples)


def peak_mb(fn):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 1e6


def copy_gbps():
    n = 1 << 30  # 1 GiB of float32 read + written
    a = torch.empty(n // 4, device="cuda").uniform_()
    b = torch.empty_like(a)
    _, p50, _ = gpu_time_ms(lambda: b.copy_(a), repeats=20)
    return 2 * n / (p50 * 1e-3) / 1e9


# ------------------------------------------------------------------------------------ KD loss


def kd_composite(s, t, y, temperature=2.0, alpha=0.5):
    """The same loss in plain PyTorch: fp32 log-softmax of both models, KL + CE."""
    log_ps = F.log_softmax(s.float() / temperature, dim=-1)
    log_pt = F.log_softmax(t.float() / temperature, dim=-1)
    kl = F.kl_div(log_ps, log_pt, log_target=True, reduction="batchmean")
    ce = F.cross_entropy(s.float(), y)
    return alpha * temperature**2 * kl + (1 - alpha) * ce


def kd_paths(native: bool, major: int) -> dict[str, str]:
    """kernel_path of the KD rows: the CUDA row or cluster kernel (the cluster one needs sm_90), or
    the fallback's PyTorch ops where the extension has no CUDA kernel."""
    if not native:
        return {"edgegen": "fallback (PyTorch ops, no CUDA kernel)",
                "edgegen-cluster": "fallback (PyTorch ops, no CUDA kernel)"}
    return {"edgegen": "cuda row kernel",
            "edgegen-cluster": ("cuda cluster kernel" if major >= 9
                                else "cuda row kernel (the cluster kernel needs sm_90)")}


def attention_paths(native: bool) -> dict[str, str]:
    """kernel_path of the attention rows: the CUDA kernels (default or cp.async pipelined), or the
    fallback's PyTorch ops."""
    if not native:
        return {"edgegen": "fallback (PyTorch ops, no CUDA kernel)",
                "edgegen-pipelined": "fallback (PyTorch ops, no CUDA kernel)"}
    return {"edgegen": "cuda", "edgegen-pipelined": "cuda, cp.async pipelined"}


def bench_kd(rows, dtype, n, vocab, bw, quick, paths):
    s = torch.randn(n, vocab, device="cuda", dtype=dtype, requires_grad=True)
    t = torch.randn(n, vocab, device="cuda", dtype=dtype)
    y = torch.randint(0, vocab, (n,), device="cuda")
    compiled = torch.compile(kd_composite)
    providers = {
        "edgegen": lambda: kd_loss(s, t, y).backward(),
        # the cluster kernel (EDGEGEN_CUDA_KD_CLUSTER=1, read per call; the row kernel below sm_90)
        "edgegen-cluster": lambda: kd_loss(s, t, y).backward(),
        "eager": lambda: kd_composite(s, t, y).backward(),
        "compile": lambda: compiled(s, t, y).backward(),
    }
    floor_bytes = 3 * n * vocab * s.element_size()
    out = {}
    for name, fn in providers.items():
        os.environ["EDGEGEN_CUDA_KD_CLUSTER"] = "1" if name == "edgegen-cluster" else "0"

        def run():
            s.grad = None
            fn()
        p20, p50, p80 = gpu_time_ms(run, repeats=5 if quick else 15)
        mb = peak_mb(run)
        gbps = floor_bytes / (p50 * 1e-3) / 1e9
        out[name] = p50
        rows.append(dict(op="kd_loss", provider=name, shape=f"{n}x{vocab}", dtype=str(dtype).split(".")[-1],
                         mode="fwd+bwd", p20_ms=f"{p20:.3f}", p50_ms=f"{p50:.3f}", p80_ms=f"{p80:.3f}",
                         peak_mb=f"{mb:.0f}", gbps=f"{gbps:.0f}", kernel_path=paths.get(name, "")))
        print(f"kd_loss {str(dtype):15s} {name:15s} {p50:8.3f} ms  peak {mb:7.0f} MB  {gbps:6.0f} GB/s "
              f"({100 * gbps / bw:.0f}% of copy)", flush=True)
    os.environ.pop("EDGEGEN_CUDA_KD_CLUSTER", None)
    for variant in ("edgegen", "edgegen-cluster"):
        print(f"  {variant} vs eager {out['eager'] / out[variant]:.2f}x, vs compile {out['compile'] / out[variant]:.2f}x",
              flush=True)
    same = "" if torch.cuda.get_device_capability()[0] >= 9 else " (below sm_90 both run the row kernel)"
    print(f"  cluster vs row kernel {out['edgegen'] / out['edgegen-cluster']:.2f}x{same};"
          f" gradient alone {n * vocab * s.element_size() / 1e6:.0f} MB", flush=True)


# ---------------------------------------------------------------------------------- attention


def flex_runner(n, window, num_global, causal=True):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def mod(b, h, q, k):
        if not causal:
            return ((q - k).abs() < window) | (k < num_global) | (q < num_global)
        return (k <= q) & ((q - k < window) | (k < num_global))

    bm = create_block_mask(mod, None, None, n, n, device="cuda")
    flex = torch.compile(flex_attention)
    return lambda q, k, v: flex(q, k, v, block_mask=bm)


def visible_pairs(n, window, num_global, causal):
    """Visible (query, key) pairs of one head."""
    if causal:
        return sum(min(p + 1, window) + max(0, min(num_global, p + 1 - window)) for p in range(n))
    total = 0
    for p in range(n):
        if p < num_global:
            total += n
            continue
        lo, hi = max(0, p - window + 1), min(n, p + window)  # the window [lo, hi)
        total += hi - lo + max(0, min(num_global, lo))  # + global keys left of it
    return total


def bench_attention(rows, n, window, num_global, quick, paths, d=64, causal=True):
    H, dtype = 12, torch.bfloat16
    q, k, v = (torch.randn(1, H, n, d, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
    go = torch.randn(1, H, n, d, device="cuda", dtype=dtype)
    flex = flex_runner(n, window, num_global, causal)
    swa = lambda: sliding_window_attention(q, k, v, window, num_global, causal)  # noqa: E731
    providers = {
        "edgegen": swa,
        # The cp.async double-buffered kernels (EDGEGEN_CUDA_ATTENTION_PIPELINE=1, read per call).
        "edgegen-pipelined": swa,
        "flex": lambda: flex(q, k, v),
        "sdpa-dense": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
    }
    # Useful work: visible pairs only (window + globals per query), 4 d flops per pair forward.
    pairs = visible_pairs(n, window, num_global, causal) * H
    shape = f"1x{H}x{n}x{d} w{window} g{num_global}" + ("" if causal else " bidir")
    times = {}
    for mode in ("fwd", "fwd+bwd"):
        for name, fn in providers.items():
            os.environ["EDGEGEN_CUDA_ATTENTION_PIPELINE"] = "1" if name == "edgegen-pipelined" else "0"

            def run():
                for x in (q, k, v):
                    x.grad = None
                o = fn()
                if mode == "fwd+bwd":
                    o.backward(go)
            p20, p50, p80 = gpu_time_ms(run, repeats=5 if quick else 20)
            mb = peak_mb(run)
            flops = pairs * 4 * d * (1 if mode == "fwd" else 3.5)
            times[(mode, name)] = p50
            rows.append(dict(op="sliding_window_attention", provider=name, shape=shape,
                             dtype="bfloat16", mode=mode, p20_ms=f"{p20:.3f}", p50_ms=f"{p50:.3f}",
                             p80_ms=f"{p80:.3f}", peak_mb=f"{mb:.0f}", gflops=f"{flops / (p50 * 1e-3) / 1e9:.0f}",
                             kernel_path=paths.get(name, "")))
            print(f"attention n={n:6d} d={d:3d}{'' if causal else ' bidir'} {mode:8s} {name:17s} {p50:8.3f} ms  "
                  f"peak {mb:7.0f} MB  "
                  f"{flops / (p50 * 1e-3) / 1e12:6.1f} TFLOP/s useful", flush=True)
        os.environ.pop("EDGEGEN_CUDA_ATTENTION_PIPELINE", None)
        for variant in ("edgegen", "edgegen-pipelined"):
            e = times[(mode, variant)]
            print(f"  {mode}: {variant} vs flex {times[(mode, 'flex')] / e:.2f}x, vs dense SDPA "
                  f"{times[(mode, 'sdpa-dense')] / e:.2f}x", flush=True)


# ------------------------------------------------------------------------------------- INT8


def bench_int8(rows, m, k, n):
    from edgegen.quant.modules import Int8Linear

    lin = torch.nn.Linear(k, n)
    q = Int8Linear.from_float(lin).cuda()
    lin = lin.cuda()
    x = torch.randn(m, k, device="cuda")
    xh = x.half()
    linh = torch.nn.Linear(k, n).cuda().half()
    for name, fn in (("edgegen-int8", lambda: q(x)), ("fp32", lambda: lin(x)), ("fp16", lambda: linh(xh))):
        with torch.no_grad():
            p20, p50, p80 = gpu_time_ms(fn, repeats=20)
        rows.append(dict(op="int8_linear", provider=name, shape=f"{m}x{k}x{n}", dtype="", mode="fwd",
                         p20_ms=f"{p20:.3f}", p50_ms=f"{p50:.3f}", p80_ms=f"{p80:.3f}",
                         gflops=f"{2 * m * k * n / (p50 * 1e-3) / 1e9:.0f}",
                         kernel_path="torch._int_mm (integer tensor cores)" if name == "edgegen-int8" else ""))
        print(f"linear {m}x{k}x{n} {name:13s} {p50:8.3f} ms", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats, no n = 65536")
    ap.add_argument("--out", "--csv", dest="out", default=str(harness.RESULTS / "gpu.csv"))
    ap.add_argument("--only", choices=["kd", "attention", "int8"], default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_gpu.py needs a CUDA GPU")
    torch.backends.cuda.matmul.allow_tf32 = False
    name = torch.cuda.get_device_name()
    native = {op: torch._C._dispatch_has_kernel_for_dispatch_key(f"edgegen::{op}", "CUDA")
              for op in ("kd_loss", "sliding_window_attention")}
    bw = copy_gbps()
    major = torch.cuda.get_device_capability()[0]
    kd_path, attention_path = kd_paths(native["kd_loss"], major), attention_paths(native["sliding_window_attention"])
    print(f"device: {name}; torch {torch.__version__}; native CUDA kernels: {native}; "
          f"device-to-device copy {bw:.0f} GB/s (read + write)", flush=True)
    print(f"# kernel paths: KD {kd_path}; attention {attention_path}", flush=True)
    rows = []

    def save(final=False):  # after every section: a run cut short (a device's time limit) keeps what it measured
        harness.save(rows, args.out, lead="", final=final, machine=f"{name}; host {harness.machine()}",
                     versions=harness.versions(), threads="")

    if args.only in (None, "kd"):
        for dtype in (torch.float32, torch.bfloat16):
            bench_kd(rows, dtype, 8192, 50257, bw, args.quick, kd_path)
        save()
    if args.only in (None, "attention"):
        for n in (4096, 16384) + (() if args.quick else (65536,)):
            bench_attention(rows, n, 256, 4, args.quick, attention_path)
        # head_dim 128 (the dK/dV pass spills there: see docs/gpu.md), at the target's length
        bench_attention(rows, 16384, 256, 4, args.quick, attention_path, d=128)
        # not causal: the global queries see every key (their tiles split over blocks, forward and dQ)
        bench_attention(rows, 16384, 256, 4, args.quick, attention_path, causal=False)
        save()
    if args.only in (None, "int8"):
        # a decode step, a short prefill, the GPT-2 MLP shape and a long prefill
        for m in (1, 64, 512, 4096):
            bench_int8(rows, m, 768, 3072)
    save(final=True)


if __name__ == "__main__":
    main()
