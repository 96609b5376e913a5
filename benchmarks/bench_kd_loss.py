"""Distillation loss on CPU: edgegen vs PyTorch eager vs torch.compile, and fused-linear vs
materialise-then-loss for the GPT-2 student head (6L/384) against the teacher head (12L/768).

    python benchmarks/bench_kd_loss.py            # full run (several minutes)
    python benchmarks/bench_kd_loss.py --quick    # N=512 and 2048 only

Every number is forward + backward (the student gradient), median of repeats after warm-up, at
the machine's full thread count. edgegen runs as a training loop would call it: each step's
gradient is freed before the next, and edgegen's buffer cache hands the freed buffer back
(edgegen.memory); the row "edgegen-fresh" is the best path with the cache off
(EDGEGEN_BUFFER_CACHE=0), every gradient a fresh allocation as for the peers. Peak memory always
counts the gradient (the cache is emptied before it is measured). GB/s counts the minimum traffic of the op (read student and
teacher logits once, write the gradient once), the same bytes for every provider, against the
machine's measured copy bandwidth. Results go to benchmarks/results/kd_loss.csv.

Correctness: every edgegen row is checked once, in its timing process and outside the timed loop,
against the loss written above computed in float64 (a block of rows at a time) on the same inputs:
max_err is the larger of the loss's relative error and the gradient's largest absolute error
relative to the reference gradient's largest magnitude (logits rows: the student gradient;
fused rows: the student hidden states' and head weight's gradients). Tolerance: 1e-4 in float32,
1e-2 in bfloat16 (the gradient is stored in bfloat16); a row over it fails the run. The check
adds about a float64 forward + backward per checked row (the largest cost of a full run at
N = 8192).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

V = 50257
T, ALPHA = 2.0, 0.5
HS, HT = 384, 768  # student 6L/384 and teacher 12L/768 hidden sizes


# ----------------------------------------------------------------------------- providers
def composite_rows(s, t, y):
    """Each row's loss (KL + CE, zero where y == -100) in the dtype of ``s`` and ``t``."""
    import torch.nn.functional as F

    kl = F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), log_target=True,
                  reduction="none").sum(-1)
    ce = F.cross_entropy(s, y, reduction="none")
    return (ALPHA * T * T * kl + (1 - ALPHA) * ce) * (y != -100)


def composite(s, t, y):
    """The loss as a user writes it in PyTorch: fp32 math, log-softmax both models, KL + CE."""
    valid = y != -100
    return composite_rows(s.float(), t.float(), y).sum() / valid.sum().clamp(min=1)


TOLERANCE = {"float32": 1e-4, "bfloat16": 1e-2}
CHECK_ROWS = 256  # rows of the float64 reference at a time


def relative_error(loss, ref_loss, diffs) -> float:
    """max(|loss - ref| / |ref|, each gradient's max |g - g_ref| / max |g_ref|); ``diffs`` holds
    (max |g - g_ref|, max |g_ref|) per gradient."""
    loss = float(loss.detach()) if hasattr(loss, "detach") else float(loss)
    err = abs(loss - ref_loss) / max(abs(ref_loss), 1e-30)
    return max([err] + [d / max(scale, 1e-30) for d, scale in diffs])


def check_logits(s, t, y, loss) -> float:
    """edgegen's loss and s.grad on logits against the float64 reference (relative_error)."""
    import torch

    count = (y != -100).sum().clamp(min=1).double()
    ref_loss, diff, scale = 0.0, 0.0, 0.0
    for i in range(0, s.shape[0], CHECK_ROWS):
        s64 = s[i:i + CHECK_ROWS].detach().double().requires_grad_()
        part = composite_rows(s64, t[i:i + CHECK_ROWS].double(), y[i:i + CHECK_ROWS]).sum() / count
        (g,) = torch.autograd.grad(part, s64)
        ref_loss += part.item()
        diff = max(diff, (s.grad[i:i + CHECK_ROWS].double() - g).abs().max().item())
        scale = max(scale, g.abs().max().item())
    return relative_error(loss, ref_loss, [(diff, scale)])


def check_linear(hs, ws, ht, wt, y, loss) -> float:
    """edgegen's loss, hs.grad and ws.grad of the fused head against the reference: the logits'
    products in float32 (float64 sums across blocks), the loss and its logits gradient in float64."""
    import torch

    count = (y != -100).sum().clamp(min=1).double()
    ref_loss, diff_h, scale_h = 0.0, 0.0, 0.0
    gws = torch.zeros(ws.shape, dtype=torch.float64)
    w_s, w_t = ws.detach().float(), wt.float()
    for i in range(0, hs.shape[0], CHECK_ROWS):
        h_s = hs[i:i + CHECK_ROWS].detach().float()
        ls = (h_s @ w_s.T).double().requires_grad_()
        part = composite_rows(ls, (ht[i:i + CHECK_ROWS].float() @ w_t.T).double(), y[i:i + CHECK_ROWS]).sum() / count
        (g,) = torch.autograd.grad(part, ls)
        ref_loss += part.item()
        g32 = g.float()
        ghs = (g32 @ w_s).double()
        gws += (g32.T @ h_s).double()
        diff_h = max(diff_h, (hs.grad[i:i + CHECK_ROWS].double() - ghs).abs().max().item())
        scale_h = max(scale_h, ghs.abs().max().item())
    diff_w = (ws.grad.double() - gws).abs().max().item()
    return relative_error(loss, ref_loss, [(diff_h, scale_h), (diff_w, gws.abs().max().item())])


def logits_step(provider):
    import torch

    from edgegen.distill import kd_loss

    if provider.startswith("edgegen"):  # edgegen[<path>]: run under EDGEGEN_MAX_ISA=<path>
        return lambda s, t, y: kd_loss(s, t, y, temperature=T, alpha=ALPHA)
    if provider == "eager":
        return composite
    if provider == "compile":
        return torch.compile(composite, dynamic=False)
    raise ValueError(provider)


def linear_step(provider, chunk):
    import torch.nn.functional as F

    from edgegen.distill import fused_linear_kd_loss, kd_loss

    if provider == "edgegen-fused":
        return lambda hs, ws, ht, wt, y: fused_linear_kd_loss(
            hs, ws, ht, wt, y, temperature=T, alpha=ALPHA, chunk_size=chunk)
    if provider == "materialise+edgegen":
        return lambda hs, ws, ht, wt, y: kd_loss(F.linear(hs, ws), F.linear(ht, wt), y,
                                                 temperature=T, alpha=ALPHA)
    if provider == "materialise+eager":
        return lambda hs, ws, ht, wt, y: composite(F.linear(hs, ws), F.linear(ht, wt), y)
    raise ValueError(provider)


# ------------------------------------------------------------------------------- worker
def worker(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    dtype = getattr(torch, spec["dtype"])
    n = spec["n"]
    y = torch.randint(0, V, (n,))
    y[::10] = -100
    if spec["op"] == "kd_loss":
        s = (torch.randn(n, V) * 2).to(dtype).requires_grad_()
        t = (torch.randn(n, V) * 2).to(dtype)
        step = logits_step(spec["provider"])

        def clear():
            s.grad = None

        def run():
            loss = step(s, t, y)
            loss.backward()
            return loss
    else:
        hs = torch.randn(n, HS).to(dtype).requires_grad_()
        ws = (torch.randn(V, HS) * HS**-0.5).to(dtype).requires_grad_()
        ht = torch.randn(n, HT).to(dtype)
        wt = (torch.randn(V, HT) * HT**-0.5).to(dtype)
        step = linear_step(spec["provider"], spec.get("chunk", 0))

        def clear():
            hs.grad = ws.grad = None

        def run():
            loss = step(hs, ws, ht, wt, y)
            loss.backward()
            return loss

    def iteration():
        clear()
        run()

    loss = run()  # warm-up (and compile)
    check = {}
    if spec["measure"] == "time" and "edgegen" in spec["provider"]:  # once, outside the timed loop
        err = (check_logits(s, t, y, loss) if spec["op"] == "kd_loss"
               else check_linear(hs, ws, ht, wt, y, loss))
        check = harness.check_result(err, TOLERANCE[spec["dtype"]])
    clear()  # the memory peak counts the new gradients, not the previous iteration's; iteration() clears anyway
    return {**harness.measure(spec, run if spec["measure"] == "memory" else iteration), **check}


# --------------------------------------------------------------------------------- main
def check_cell(row: dict) -> str:
    """The check verdict and max_err of a row, for the printed tables ("" for unchecked peers)."""
    return f"{row['check']} ({row['max_err']:.3g})" if row.get("check") else ""


def thp_argument(ap):
    ap.add_argument("--thp", action="store_true",
                    help="give every provider transparent huge pages (THP_MEM_ALLOC_ENABLE=1)")


def main():
    args = harness.cli(__doc__, "kd_loss.csv", worker, quick_help="N in {512, 2048} only", add_arguments=thp_argument)
    ns = [512, 2048] if args.quick else [512, 2048, 8192]
    if args.thp:
        os.environ["THP_MEM_ALLOC_ENABLE"] = "1"  # inherited by every worker
    mode = "fwd+bwd" + (",THP" if args.thp else "")
    machine, versions = harness.header(args.threads, f"; mode {mode}")
    ceiling = harness.print_copy_ceiling(args.threads)
    rows = []
    import edgegen

    kd_path = edgegen.kernel_paths()["kd_loss"]  # the best path: what the fused head's loss runs

    def record(op, provider, n, dtype, extra_shape, res, nbytes=None, flops=None, path=None):
        row = dict(op=op, provider=provider, shape=f"N={n} V={V}{extra_shape}", dtype=dtype,
                   mode=mode, kernel_path=path or "")
        if "error" in res:
            print(f"{op:22s} {provider:22s} N={n:5d} {dtype:8s} ERROR {res['error']}")
            rows.append({**row, "error": harness.error_text(res)})
            return None
        row.update(harness.measured(res))
        if nbytes:
            row["gbps"] = round(nbytes / (res["p50_ms"] * 1e-3) / 1e9, 2)
        if flops:
            row["gflops"] = round(flops / (res["p50_ms"] * 1e-3) / 1e9, 2)
        rows.append(row)
        return row

    # edgegen once per kd_loss path this CPU has (each under its own EDGEGEN_MAX_ISA), the best
    # last; the speed-ups are the best path's.
    levels = harness.above_scalar(harness.kernel_levels("kd_loss"))
    mine = [f"edgegen[{lv}]" for lv in levels]
    best = mine[-1]
    harness.print_paths("kd_loss", levels)
    print("\n## kd_loss on logits (forward + backward)")
    print(f"{'N':>5s} {'dtype':8s} {'provider':16s} {'p50 ms':>9s} {'peak MB':>9s} {'GB/s':>7s} "
          f"{'% ceil':>6s} {'speed-up':>9s}  check (max_err)")
    for dtype in ("float32", "bfloat16"):
        elt = 4 if dtype == "float32" else 2
        for n in ns:
            res = {}
            for provider in (*mine, "edgegen-fresh", "eager", "compile"):
                isa = levels[-1] if provider == "edgegen-fresh" else harness.isa_of(provider)
                spec = dict(op="kd_loss", provider=provider, n=n, dtype=dtype, threads=args.threads,
                            repeats=5 if n >= 8192 else 9, isa=isa)
                if provider == "edgegen-fresh":
                    spec["env"] = {"EDGEGEN_BUFFER_CACHE": "0"}
                row = record("kd_loss", provider, n, dtype, "", harness.run_worker(__file__, spec),
                             nbytes=3 * n * V * elt, path=isa)
                if row:
                    res[provider] = row
            if best not in res:
                continue
            base = res[best]["p50_ms"]
            for provider, row in res.items():
                ratio = row["p50_ms"] / base
                print(f"{n:5d} {dtype:8s} {provider:16s} {row['p50_ms']:9.1f} {row['peak_mb']:9.0f} "
                      f"{row['gbps']:7.1f} {100 * row['gbps'] / ceiling:5.0f}% "
                      f"{'' if provider == best else f'{ratio:8.2f}x':>9s}  {check_cell(row)}")

    harness.save(rows, args.out, final=False, threads=args.threads, machine=machine, versions=versions)

    print("\n## fused-linear vs materialise-then-loss, student 384 -> V, teacher 768 -> V")
    print(f"{'N':>5s} {'provider':22s} {'p50 ms':>9s} {'peak MB':>9s} {'GFLOP/s':>8s} "
          f"{'time vs fused':>13s} {'memory vs fused':>15s}  check (max_err)")
    for n in [n for n in ns if n >= 2048]:
        # GEMMs: two forward logits products, two student backward products.
        flops = 2 * n * V * (HS + HT) + 2 * 2 * n * V * HS
        res = {}
        for provider in ("edgegen-fused", "materialise+edgegen", "materialise+eager"):
            spec = dict(op="linear_kd_loss", provider=provider, n=n, dtype="float32",
                        threads=args.threads, repeats=5)
            row = record("fused_linear_kd_loss", provider, n, "float32", f" Hs={HS} Ht={HT}",
                         harness.run_worker(__file__, spec), flops=flops,
                         path=kd_path if "edgegen" in provider else None)
            if row:
                res[provider] = row
        if "edgegen-fused" not in res:
            continue
        f = res["edgegen-fused"]
        for provider, row in res.items():
            print(f"{n:5d} {provider:22s} {row['p50_ms']:9.1f} {row['peak_mb']:9.0f} "
                  f"{row['gflops']:8.1f} {row['p50_ms'] / f['p50_ms']:12.2f}x "
                  f"{row['peak_mb'] / f['peak_mb']:14.2f}x  {check_cell(row)}")
    harness.save(rows, args.out, threads=args.threads, machine=machine, versions=versions)


if __name__ == "__main__":
    main()
