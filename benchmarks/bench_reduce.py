"""Low-rank factorization (reduce_ with LowRankConfig) of the GPT-2 student on CPU.

The student (6 layers, 384 wide, 50,257-token tied head) dense fp32 against every Linear of its
blocks factorized at a fixed rank (192, 128, 64, 32), alone and with INT8 on top, and INT8 alone
(the existing method, the peer in the same run): parameters, bytes of the state dict, prefill of
128 tokens and one decode step with the KV cache (batch 1), and the logits' cosine similarity to
the dense model's. Untrained (seeded random) weights: the cosine is fidelity to the dense model,
not quality, and random matrices have no low-rank structure (the retained-energy ranks printed
show it); trained weights are what the quality tables measure.

    python benchmarks/bench_reduce.py            # every rank
    python benchmarks/bench_reduce.py --quick    # ranks 128 and 64

Medians of repeats after warm-up, each (provider, case) in its own process. Results:
benchmarks/results/reduce.csv.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402


def build(provider: str, quantize: bool = True):
    """The student for ``provider`` ("dense", "int8", "lowrank-<r>", "lowrank-<r>+int8"); with
    ``quantize=False`` its float structure before INT8."""
    import torch

    from edgegen.models import GPT2, GPT2Config
    from edgegen.quant import Int8DynamicConfig, quantize_
    from edgegen.reduce import LowRankConfig, reduce_

    torch.manual_seed(0)
    model = GPT2(GPT2Config.student()).eval()
    if provider.startswith("lowrank-"):
        rank = int(provider.split("-")[1].split("+")[0])
        reduce_(model, LowRankConfig(rank=rank), filter_fn=lambda m, n: n.startswith("h."))
    if quantize and provider.endswith("int8"):
        quantize_(model, Int8DynamicConfig())
    return model


def worker(spec: dict) -> dict:
    return harness.measure_gpt2(spec, lambda: build(spec["provider"]))


def static(provider: str, dense_logits) -> dict:
    """Parameters (of the float structure: INT8 keeps the count as int8 values), bytes of the
    state dict (tied tensors once, as edgegen's safetensors writer stores them) and the logits'
    cosine to ``dense_logits`` (the dense model's on the same tokens)."""
    import copy

    import torch
    import torch.nn.functional as F

    from edgegen.quant import Int8DynamicConfig, quantize_
    from edgegen.tensor_files import dedupe

    model = build(provider, quantize=False)
    params = model.num_parameters()
    if provider.endswith("int8"):
        model = quantize_(copy.deepcopy(model), Int8DynamicConfig())
    with torch.no_grad():
        out = model(tokens()).double().flatten()
    stored, _ = dedupe(model.state_dict())
    return {"params": params, "bytes": sum(t.numel() * t.element_size() for t in stored.values()),
            "cosine": float(F.cosine_similarity(out, dense_logits, dim=0))}


def tokens():
    import torch

    return torch.randint(0, 50257, (2, 64), generator=torch.Generator().manual_seed(2))


def energy_ranks() -> str:
    import torch

    from edgegen.models import GPT2, GPT2Config
    from edgegen.reduce import energy_rank

    torch.manual_seed(0)
    lin = GPT2(GPT2Config.student()).h[0].mlp.c_fc
    s = torch.linalg.svdvals(lin.weight.detach().double())
    return ", ".join(f"{e:.2f} -> rank {energy_rank(s, e)}" for e in (0.5, 0.9, 0.99)) + f" of {len(s)}"


def main():
    args = harness.cli(__doc__, "reduce.csv", worker, quick_help="ranks 128 and 64 only")
    machine, versions = harness.header(args.threads)
    import edgegen

    int8_path = edgegen.kernel_paths()["int8_gemm"]
    print(f"INT8 GEMM path: {int8_path}; CPU flags: {harness.cpu_flags()}")
    ranks = (128, 64) if args.quick else (192, 128, 64, 32)
    providers = ["dense", "int8"] + [f"lowrank-{r}" for r in ranks] + [f"lowrank-{r}+int8" for r in ranks]
    print(f"\nretained energy of an untrained 384 -> 1536 MLP weight: {energy_ranks()}")
    print("\n## GPT-2 student, batch 1: prefill 128 tokens and one cached decode step")
    print(f"{'model':18s} {'params':>11s} {'MB':>7s} {'cosine':>7s} {'prefill ms':>10s} {'x dense':>8s} "
          f"{'decode ms':>9s} {'x dense':>8s}")
    import torch

    with torch.no_grad():
        dense_logits = build("dense")(tokens()).double().flatten()
    rows, base = [], {}
    for provider in providers:
        st = static(provider, dense_logits)
        res = {}
        for mode in ("prefill", "decode"):
            r = harness.run_worker(__file__, dict(provider=provider, mode=mode, threads=args.threads,
                                                  repeats=10 if mode == "prefill" else 30))
            if "error" in r:
                print(f"{provider:18s} {mode} ERROR {r['error']}")
                rows.append(dict(op=f"gpt2_student_{mode}", provider=provider, shape="batch=1, 128 tokens",
                                 error=harness.error_text(r)))
                continue
            res[mode] = r
            if provider == "dense":
                base[mode] = r["p50_ms"]
            rows.append(dict(op=f"gpt2_student_{mode}", provider=provider, shape="batch=1, 128 tokens",
                             dtype="float32" if not provider.endswith("int8") else "int8 weights",
                             mode=f"{st['params']} params; {st['bytes']} bytes; logits cosine {st['cosine']:.4f}",
                             kernel_path=int8_path if provider.endswith("int8") else "", **harness.measured(r)))
        if len(res) == 2 and base:
            pf, dc = res["prefill"]["p50_ms"], res["decode"]["p50_ms"]
            print(f"{provider:18s} {st['params']:11,d} {st['bytes'] / 1e6:7.1f} {st['cosine']:7.4f} {pf:10.2f} "
                  f"{base['prefill'] / pf:7.2f}x {dc:9.3f} {base['decode'] / dc:7.2f}x")
    harness.save(rows, args.out, threads=args.threads, machine=machine, versions=versions)


if __name__ == "__main__":
    main()
