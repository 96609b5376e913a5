"""Pruning on CPU.

1. Global magnitude pruning of a GPT-2-small-sized parameter set (every distinct GPT-2 small
   parameter shape, 124,439,808 floats): edgegen (exact radix selection, fused mask + zeroing)
   vs torch.nn.utils.prune.global_unstructured vs torch.kthvalue on a concatenation followed by
   masking. Each prunes 50% and leaves the pruned weights zero. Each provider's mask is compared,
   once in its timing process, with the exact mask (edgegen.ops.prune.magnitude_mask: stable
   order, exact count): max_err is the number of entries that differ; edgegen's rows must have
   none (a row with any fails the run), the peers' count is recorded, not enforced.
2. DCGAN generator and discriminator (64x64, ngf = ndf = 64): dense vs 50% channel-pruned and
   physically shrunk, eval-mode forward latency at batch 1 and 64, next to FLOPs and on-disk
   bytes (FLOPs alone say nothing about speed).
3. The GPT-2 student with 25/50/75% of every MLP's hidden units pruned and removed (FFNConfig +
   shrink) against the dense student: prefill of 128 tokens and one cached decode step, batch 1.

    python benchmarks/bench_prune.py            # full run (a few minutes)
    python benchmarks/bench_prune.py --quick    # see below

--quick prunes the first quarter of the 148 GPT-2 tensors in parameter order (37 tensors: the
two embeddings, the first two blocks and all but the last bias of the third; 60,646,656 weights,
49% of the set, the token embedding alone 31%), times DCGAN at batch 1 only, sweeps ratios 0, 0.5
and 0.9, and prunes the student's MLPs by 0 and 50%.

Medians of repeats after warm-up, each (provider, case) in its own process, at the machine's full
thread count. Results: benchmarks/results/prune.csv.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402


def gpt2_shapes(fraction: float) -> list[tuple[int, ...]]:
    import torch

    from edgegen.models.gpt2 import GPT2, GPT2Config

    with torch.device("meta"):
        model = GPT2(GPT2Config.gpt2())
    shapes = [tuple(p.shape) for p in model.parameters()]  # distinct: the tied head once
    if fraction < 1:
        shapes = shapes[: max(1, int(len(shapes) * fraction))]
    return shapes


def mask_worker(spec: dict) -> dict:
    import torch
    import torch.nn.utils.prune as tprune
    from torch import nn

    from edgegen.ops import prune as P

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    shapes = [tuple(s) for s in spec["shapes"]]
    source = [torch.randn(s) * 0.02 for s in shapes]
    total = sum(w.numel() for w in source)
    k = round(0.5 * total)
    provider = spec["provider"]
    holder = nn.ModuleList(nn.Module() for _ in source)

    def setup():
        for m, w in zip(holder, source):
            if hasattr(m, "weight_orig"):
                tprune.remove(m, "weight")
            m.weight = nn.Parameter(w.clone())

    def run():
        ws = [m.weight for m in holder]
        if provider.startswith("edgegen"):  # edgegen[<path>]: run under EDGEGEN_MAX_ISA=<path>
            return P.magnitude_prune_(ws, k)
        if provider == "torch.nn.utils.prune":
            tprune.global_unstructured([(m, "weight") for m in holder], pruning_method=tprune.L1Unstructured,
                                       amount=0.5)
            return [m.weight_mask for m in holder]
        if provider == "kthvalue(cat)":
            with torch.no_grad():
                thr = torch.cat([w.detach().abs().flatten() for w in ws]).kthvalue(k).values
                masks = [w.detach().abs() > thr for w in ws]
                for w, m in zip(ws, masks):
                    w.detach().mul_(m)
            return masks
        raise ValueError(provider)

    setup()
    masks = run()  # warm-up
    # Agreement with the exact reference order (stable sort), counted in mismatching entries.
    check = {}
    if spec.get("check") and spec["measure"] != "memory":
        ref_keep = P.magnitude_mask(source, k)
        mismatch = sum(int((a.bool() != b).sum()) for a, b in zip(masks, ref_keep))
        check = harness.check_result(mismatch, 0) if provider.startswith("edgegen") else {"mask_mismatch": mismatch}
    del masks
    return {**harness.measure(spec, run, warmup=0, setup=setup), **check}


def dcgan_worker(spec: dict) -> dict:
    import torch

    from edgegen.models.dcgan import DCGANDiscriminator, DCGANGenerator
    from edgegen.prune import ChannelConfig, prune_, shrink

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    model = DCGANGenerator() if spec["net"] == "generator" else DCGANDiscriminator()
    if spec["provider"] != "dense":
        prune_(model, ChannelConfig(spec["amount"]), example_inputs=model.example_inputs())
        model = shrink(model, model.example_inputs())
    model.eval()
    x = model.example_inputs(spec["batch"])[0]

    def run():
        with torch.no_grad():
            return model(x)

    run()
    return harness.measure(spec, run, warmup=2)


def dcgan_static(net: str, provider: str, amount: float) -> dict:
    """FLOPs (batch 1) and on-disk bytes, measured in this process (no timing involved)."""
    import torch

    from edgegen.models.dcgan import DCGANDiscriminator, DCGANGenerator
    from edgegen.prune import ChannelConfig, prune_, saved_bytes, shrink
    from edgegen.prune.sweep import count_flops

    torch.manual_seed(0)
    model = DCGANGenerator() if net == "generator" else DCGANDiscriminator()
    if provider != "dense":
        prune_(model, ChannelConfig(amount), example_inputs=model.example_inputs())
        model = shrink(model, model.example_inputs())
    return {"flops": count_flops(model, model.example_inputs(1)), "bytes": saved_bytes(model),
            "params": sum(p.numel() for p in model.parameters())}


def gpt2_ffn(amount: float):
    """The GPT-2 student with ``amount`` of every MLP's hidden units pruned and removed (dense at 0)."""
    import torch

    from edgegen.models import GPT2, GPT2Config
    from edgegen.prune import FFNConfig, prune_, shrink

    torch.manual_seed(0)
    model = GPT2(GPT2Config.student()).eval()
    if amount > 0:
        prune_(model, FFNConfig(amount))
        model = shrink(model, (torch.randint(0, 50257, (1, 16)),))
    return model


def ffn_worker(spec: dict) -> dict:
    return harness.measure_gpt2(spec, lambda: gpt2_ffn(spec["amount"]))


def worker(spec: dict) -> dict:
    if spec["op"] == "gpt2_ffn":
        return ffn_worker(spec)
    return mask_worker(spec) if spec["op"] == "global_magnitude_prune" else dcgan_worker(spec)


def main():
    args = harness.cli(__doc__, "prune.csv", worker)
    machine, versions = harness.header(args.threads)
    harness.print_copy_ceiling(args.threads)
    rows = []

    shapes = gpt2_shapes(0.25 if args.quick else 1.0)
    total = sum(int(math.prod(s)) for s in shapes)
    print(f"\n## global magnitude pruning, 50% of {total:,} float32 weights in {len(shapes)} tensors")
    # edgegen once per path of its float32 sweeps (each under its own EDGEGEN_MAX_ISA), the best last:
    # the speed-ups are against it.
    levels = harness.kernel_levels("prune")
    harness.print_paths("prune", levels)
    ours = [f"edgegen[{lv}]" for lv in levels]
    best = ours[-1]
    print(f"{'provider':22s} {'p50 ms':>9s} {'peak MB':>9s} {'GB/s':>7s} {'speed-up':>9s} {'mask vs exact':>22s}")
    res = {}
    for provider in (*ours, "torch.nn.utils.prune", "kthvalue(cat)"):
        isa = harness.isa_of(provider)
        spec = dict(op="global_magnitude_prune", provider=provider, shapes=shapes, threads=args.threads,
                    repeats=5, check=True, isa=isa)
        r = harness.run_worker(__file__, spec)
        row = dict(op="global_magnitude_prune", provider=provider, shape=f"{total} floats, {len(shapes)} tensors",
                   dtype="float32", mode="mask+apply, 50%", kernel_path=isa or "")
        if "error" in r:
            print(f"{provider:22s} ERROR {r['error']}")
            rows.append({**row, "error": harness.error_text(r)})
            continue
        res[provider] = r
        # Minimum traffic: read the weights, write the masks (1 B each) and the pruned half back.
        r["gbps"] = round((4 * total + total + 2 * total) / (r["p50_ms"] * 1e-3) / 1e9, 2)
        row.update(harness.measured(r))
        if "mask_mismatch" in r:  # a peer: recorded, not enforced
            row.update(max_err=r["mask_mismatch"], check="not enforced (peer)")
        rows.append(row)
    if best in res:
        base = res[best]["p50_ms"]
        for provider, r in res.items():
            agree = f"{r.get('max_err', r.get('mask_mismatch')):.0f} of {total} differ"
            speed = "" if provider == best else f"{r['p50_ms'] / base:8.2f}x"
            print(f"{provider:22s} {r['p50_ms']:9.1f} {r['peak_mb']:9.0f} {r['gbps']:7.2f} {speed:>9s} {agree:>22s}")

    save = lambda: harness.save(rows, args.out, final=False, threads=args.threads, machine=machine,  # noqa: E731
                                versions=versions)
    save()
    print("\n## DCGAN 64x64, dense vs 50% channel-pruned (physically smaller), eval forward")
    print(f"{'net':10s} {'batch':>5s} {'model':10s} {'params':>10s} {'MB on disk':>10s} {'GFLOP/img':>9s} "
          f"{'p50 ms':>9s} {'speed-up':>9s} {'size ratio':>10s}")
    for net in ("generator", "discriminator"):
        static = {p: dcgan_static(net, p, 0.5) for p in ("dense", "pruned-50%")}
        for batch in ((1,) if args.quick else (1, 64)):
            res = {}
            for provider in ("dense", "pruned-50%"):
                spec = dict(op="dcgan", net=net, provider=provider, amount=0.5, batch=batch, threads=args.threads,
                            repeats=20 if batch == 1 else 5)
                r = harness.run_worker(__file__, spec)
                if "error" in r:
                    print(f"{net:10s} {batch:5d} {provider:10s} ERROR {r['error']}")
                    rows.append(dict(op=f"dcgan_{net}_forward", provider=provider, shape=f"batch={batch} 64x64",
                                     dtype="float32", mode="eval", error=harness.error_text(r)))
                    continue
                res[provider] = r
                st = static[provider]
                rows.append(dict(op=f"dcgan_{net}_forward", provider=provider, shape=f"batch={batch} 64x64",
                                 dtype="float32", mode=f"eval; {st['params']} params; {st['bytes']} bytes",
                                 gflops=round(st["flops"] * batch / (r["p50_ms"] * 1e-3) / 1e9, 2),
                                 **harness.measured(r)))
            if len(res) == 2:
                d, p = res["dense"]["p50_ms"], res["pruned-50%"]["p50_ms"]
                for provider in ("dense", "pruned-50%"):
                    st = static[provider]
                    speed = "" if provider == "dense" else f"{d / p:8.2f}x"
                    size = "" if provider == "dense" else f"{static['dense']['bytes'] / st['bytes']:9.2f}x"
                    print(f"{net:10s} {batch:5d} {provider:10s} {st['params']:10,d} {st['bytes'] / 1e6:10.2f} "
                          f"{st['flops'] / 1e9:9.3f} {res[provider]['p50_ms']:9.2f} {speed:>9s} {size:>10s}")
    save()
    print("\n## DCGAN generator, pruning-ratio sweep (channel pruning, shrunk), batch 1, eval forward")
    print(f"{'ratio':>5s} {'params':>10s} {'MB on disk':>10s} {'GFLOP/img':>9s} {'p50 ms':>9s} {'speed-up':>9s}")
    dense_ms = None
    for amount in ((0.0, 0.5, 0.9) if args.quick else (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)):
        provider = "dense" if amount == 0 else f"pruned-{round(amount * 100)}%"
        st = dcgan_static("generator", provider, amount)
        spec = dict(op="dcgan", net="generator", provider=provider, amount=amount, batch=1, threads=args.threads,
                    repeats=20)
        r = harness.run_worker(__file__, spec)
        if "error" in r:
            print(f"{amount:5.1f} ERROR {r['error']}")
            rows.append(dict(op="dcgan_generator_sweep", provider=provider, shape="batch=1 64x64", dtype="float32",
                             mode="eval", error=harness.error_text(r)))
            continue
        dense_ms = dense_ms or r["p50_ms"]
        rows.append(dict(op="dcgan_generator_sweep", provider=provider, shape="batch=1 64x64", dtype="float32",
                         mode=f"eval; {st['params']} params; {st['bytes']} bytes",
                         gflops=round(st["flops"] / (r["p50_ms"] * 1e-3) / 1e9, 2), **harness.measured(r)))
        print(f"{amount:5.1f} {st['params']:10,d} {st['bytes'] / 1e6:10.2f} {st['flops'] / 1e9:9.3f} "
              f"{r['p50_ms']:9.2f} {dense_ms / r['p50_ms']:8.2f}x")
    save()
    print("\n## GPT-2 student, feed-forward width pruning (FFNConfig, shrunk), batch 1: prefill 128 tokens, one decode step")
    print(f"{'pruned':>6s} {'params':>11s} {'prefill ms':>10s} {'x dense':>8s} {'decode ms':>9s} {'x dense':>8s}")
    base = {}
    for amount in ((0.0, 0.5) if args.quick else (0.0, 0.25, 0.5, 0.75)):
        params = gpt2_ffn(amount).num_parameters()
        res = {}
        for mode in ("prefill", "decode"):
            r = harness.run_worker(__file__, dict(op="gpt2_ffn", amount=amount, mode=mode, threads=args.threads,
                                                  repeats=10 if mode == "prefill" else 30))
            if "error" in r:
                print(f"{amount:6.2f} {mode} ERROR {r['error']}")
                rows.append(dict(op=f"gpt2_student_ffn_{mode}",
                                 provider="dense" if amount == 0 else f"ffn-{round(amount * 100)}%",
                                 shape="batch=1, 128 tokens", dtype="float32", mode="eval",
                                 error=harness.error_text(r)))
                continue
            res[mode] = r
            base.setdefault(mode, r["p50_ms"])
            rows.append(dict(op=f"gpt2_student_ffn_{mode}", provider="dense" if amount == 0 else f"ffn-{round(amount * 100)}%",
                             shape="batch=1, 128 tokens", dtype="float32", mode=f"eval; {params} params",
                             **harness.measured(r)))
        if len(res) == 2:
            print(f"{amount:6.2f} {params:11,d} {res['prefill']['p50_ms']:10.2f} "
                  f"{base['prefill'] / res['prefill']['p50_ms']:7.2f}x {res['decode']['p50_ms']:9.3f} "
                  f"{base['decode'] / res['decode']['p50_ms']:7.2f}x")
    harness.save(rows, args.out, threads=args.threads, machine=machine, versions=versions)


if __name__ == "__main__":
    main()
