"""The lightweight methods on a GPT-2 trained here, measured side by side: each method alone and
combined, against the dense model and the existing pruning and quantization, with the cited
figures of "Optimizing Generative AI for Edge Deployment" printed beside ours.

The model is trained in this run (or read from the cache of an earlier run with the same settings)
on the WikiText-2 validation split (the train split is not staged here) and scored on the first
tokens of the test split, context 128: a briefly trained small model, so its perplexity is far
from a converged GPT-2's and the comparisons are between variants of this one model.

    python benchmarks/bench_methods.py            # the GPT-2 student (6 layers, 384 wide), 400 steps
    python benchmarks/bench_methods.py --quick    # 4 layers, 256 wide, 120 steps, fewer tokens scored
    python benchmarks/bench_methods.py --sections 1 --only INT4   # the INT4 rows of section 1

Sections: (1) every reduction alone and with INT8 (and INT4 post-training quantization: weight-only,
W4A8, W4A8 with the table left fp32): parameters, bytes on disk in the shipped
format, perplexity and its change, prefill of 128 tokens and one cached decode step at batch 1;
(2) dynamic precision (INT8 / fp32 per token) swept over its threshold: fraction of low-precision
steps (teacher-forced and in generation), teacher-forced perplexity, decode time per token; (3)
early exit swept over its threshold: blocks per token, fraction of tokens leaving early,
perplexity, decode time per token; (4) the rank sweep of the low-rank factorization (perplexity on
half the tokens of section 1) with the fitted trade-off (quality: perplexity; efficiency: prefill
time) and C*; (5) the teacher's size and speed under the methods (untrained weights) and the
ceiling of early exit (every token forced out at the first exit) on both models; (6) the cited
figures beside ours. Timing: in this process, medians after warm-up (noisier than the per-process kernel
benchmarks). Needs wikitext-2-raw/ and gpt2/ under the data root ($EDGEGEN_DATA_DIR). CSV:
benchmarks/results/methods.csv.
"""

from __future__ import annotations

import copy
import hashlib
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

CACHE = Path(__file__).resolve().parents[1] / "build" / "bench-cache"

# Cited in "Optimizing Generative AI for Edge Deployment" (its figures for these method families).
ANCHORS = [
    ("magnitude pruning", "67.8% smaller at 2.3% quality loss"),
    ("INT8 post-training quantization", "73.5% smaller at 1.9% quality loss"),
    ("mixed precision", "12.3% of components in 16-bit at 0.7% quality loss"),
    ("early exit", "78.4% of inputs leave after 42.3% of the layers, within 1.8% accuracy"),
]


def settings(quick: bool) -> dict:
    from edgegen.models import GPT2Config

    if quick:
        return dict(config=GPT2Config(n_embd=256, n_layer=4, n_head=4, n_positions=256), steps=120, batch=6,
                    eval_tokens=4096, dps_tokens=1024, ee_tokens=4096, exit_steps=40, ranks=(192, 128, 64, 32),
                    tune_steps=20)
    return dict(config=GPT2Config.student(), steps=400, batch=6, eval_tokens=16384, dps_tokens=2048,
                ee_tokens=8192, exit_steps=80, ranks=(288, 192, 128, 96, 64, 32), tune_steps=100)


def data():
    import torch

    from edgegen.data import WikiText2
    from edgegen.data.root import data_root
    from edgegen.data.tokenizer import GPT2Tokenizer

    root = data_root()
    tok = GPT2Tokenizer.from_dir(root / "gpt2")
    valid = torch.from_numpy(WikiText2(root, "valid").tokens(tok).astype("int64"))
    test = torch.from_numpy(WikiText2(root, "test").tokens(tok).astype("int64"))
    return valid, test


def windows(tokens, n: int, seq: int, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, tokens.numel() - seq - 1, (n,), generator=g)
    return torch.stack([tokens[s:s + seq + 1] for s in starts.tolist()])


def train(cfg, valid, steps: int, batch: int, seq: int = 128, lr: float = 1e-3):
    """The model after ``steps`` AdamW steps on random validation windows (cosine schedule, 20
    warm-up steps), cached by its settings."""
    import torch

    from edgegen.models import GPT2

    key = hashlib.sha256(repr((cfg.to_dict(), steps, batch, seq, lr, valid.numel())).encode()).hexdigest()[:16]
    path = CACHE / f"methods-gpt2-{key}.pt"
    torch.manual_seed(0)
    model = GPT2(cfg)
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        print(f"trained model read from {path}")
        return model.eval()
    fit(model, valid, steps, batch, seq, lr, warmup=20, seed=1000)
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model


def fit(model, valid, steps: int, batch: int, seq: int, lr: float, warmup: int, seed: int, log: bool = True):
    """``steps`` AdamW steps of next-token loss on random validation windows (warm-up, then a cosine
    decay to a tenth of ``lr``); the model is returned in eval mode."""
    import torch
    import torch.nn.functional as F

    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * min(s, steps) / steps))))
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        x = windows(valid, batch, seq, seed=seed + step)
        logits = model(x[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if log and (step % 50 == 0 or step == steps - 1):
            print(f"  step {step:4d}  loss {float(loss.detach()):.3f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    return model.eval()


def ppl(fn, test, n_tokens: int) -> float:
    from edgegen.eval import perplexity

    return perplexity(fn, test[:n_tokens], context=128, stride=128).perplexity


def latency(model, mode: str, repeats: int) -> float:
    return harness.time_ms(harness.gpt2_call(model, mode), repeats=repeats, warmup=2)[1]


def per_token_ms(generate, new_tokens: int = 32, repeats: int = harness.MIN_REPEATS) -> float:
    return harness.time_ms(generate, repeats=repeats, warmup=1)[1] / new_tokens


def nonzero_params(model) -> int:
    """Non-zero parameters of a float model, pruning masks applied (tied tensors once)."""
    import torch

    from edgegen.prune import finalize_

    return sum(int(torch.count_nonzero(p)) for p in finalize_(copy.deepcopy(model)).parameters())


def disk_bytes(model) -> int:
    from edgegen.eval.profile import model_bytes_on_disk

    return model_bytes_on_disk(model)[0]


def reductions(dense, cfg, valid, tune: int):
    """(name, build, to INT8) of every variant of section 1; ``tune``: fine-tuning steps of the
    rows that are fine-tuned after the reduction (the dense model gets the same steps in its own
    row, the reference for them)."""
    from edgegen.analysis import plan_reduction
    from edgegen.prune import FFNConfig, HeadConfig, MagnitudeConfig, finalize_, prune_
    from edgegen.quant import Int4DynamicConfig, Int4WeightOnlyConfig
    from edgegen.reduce import EmbeddingFactorConfig, LowRankConfig, MPRFConfig, reduce_

    d = cfg.n_embd
    blocks = lambda m, n: n.startswith("h.")  # noqa: E731
    example = (windows(valid, 2, 128, seed=7)[:, :-1],)
    t0 = time.perf_counter()
    plan = plan_reduction(dense, max_params=dense.num_parameters() // 2, example_inputs=example)
    print(f"plan_reduction for half the parameters ({time.perf_counter() - t0:.0f} s, {len(plan.steps)} plans "
          f"tried, score: {plan.score_label} on 2 validation windows): {plan.config.groups()} -> "
          f"{plan.config.to_dict()}")

    def red(c, **kw):
        return lambda: reduce_(copy.deepcopy(dense), c, **kw)

    def tuned(build):  # the same further steps for every tuned row, the dense one included
        return lambda: fit(build(), valid, tune, 6, 128, 3e-4, warmup=5, seed=9000, log=False)

    # (name, the float model, quantize it afterwards: True for INT8 dynamic, or the config to use)
    variants = [
        ("dense fp32", lambda: copy.deepcopy(dense), False),
        ("INT4 weight-only PTQ", lambda: copy.deepcopy(dense), Int4WeightOnlyConfig(64)),
        ("INT4 W4A8 PTQ", lambda: copy.deepcopy(dense), Int4DynamicConfig(64)),
        ("INT4 W4A8 PTQ, table fp32", lambda: copy.deepcopy(dense), Int4DynamicConfig(64, embeddings=False)),
        ("magnitude 50% (blocks)",  # masks baked in: zeros in dense weights, as it would be deployed
         lambda: finalize_(prune_(copy.deepcopy(dense), MagnitudeConfig(0.5), filter_fn=blocks)), False),
        ("INT8 dynamic PTQ", lambda: copy.deepcopy(dense), True),
        ("heads -50%", red(MPRFConfig(heads=HeadConfig(0.5))), False),
        ("FFN width -50%", red(MPRFConfig(ffn=FFNConfig(0.5))), False),
        (f"low-rank r={d // 3} (blocks)", red(LowRankConfig(rank=d // 3), filter_fn=blocks), False),
        (f"embedding rank {d // 3}", red(EmbeddingFactorConfig(rank=d // 3)), False),
        (f"embedding rank {d // 6}", red(EmbeddingFactorConfig(rank=d // 6)), False),
        ("MPRF planned (50% params)", red(plan.config), False),
        ("MPRF planned + INT8", red(plan.config), True),
        (f"dense + {tune} more steps", tuned(lambda: copy.deepcopy(dense)), False),
        (f"embedding rank {d // 3} + {tune} steps", tuned(red(EmbeddingFactorConfig(rank=d // 3))), False),
        (f"MPRF planned + {tune} steps", tuned(red(plan.config)), False),
        (f"MPRF planned + {tune} steps + INT8", tuned(red(plan.config)), True),
        (f"low-rank r={d // 3} + INT8", red(LowRankConfig(rank=d // 3), filter_fn=blocks), True),
        (f"embedding {d // 3} + FFN -50% + INT8",
         red(MPRFConfig(ffn=FFNConfig(0.5), embedding=EmbeddingFactorConfig(rank=d // 3))), True),
    ]
    return variants, plan


def print_pareto(points: list[tuple[str, float, float, float]]) -> None:
    """The non-dominated rows over (bytes on disk, perplexity, decode ms), all minimised, and every
    row's Pareto score (edgegen.analysis.pareto_scores: 1 on the front)."""
    from edgegen.analysis import pareto_front, pareto_scores

    values = [p[1:] for p in points]
    front = set(pareto_front(values, [True, True, True]).tolist())
    scores = pareto_scores(values, [True, True, True])
    print("Pareto over (MB, perplexity, decode ms), all minimised: " + "; ".join(
        f"{p[0]} {sc:.3f}{' (front)' if i in front else ''}" for i, (p, sc) in enumerate(zip(points, scores))))


def teacher_section(student, student_cfg, prompt, add) -> None:
    """Size and speed of the methods on the GPT-2 teacher (12 layers, 768 wide; seeded, untrained
    weights: no quality), and the ceiling of early exit on both models: every token forced out at
    the first exit (threshold 0), against the full model."""
    import torch

    from edgegen.models import GPT2, EarlyExitConfig, GPT2Config, add_early_exits
    from edgegen.prune import FFNConfig, HeadConfig
    from edgegen.quant import Int8DynamicConfig, quantize_
    from edgegen.reduce import EmbeddingFactorConfig, LowRankConfig, MPRFConfig, reduce_

    torch.manual_seed(0)
    teacher = GPT2(GPT2Config.gpt2()).eval()
    d = teacher.config.n_embd
    print(f"\n## 5. The teacher (GPT-2 12L/{d}, untrained weights: size and speed only) and early exit's ceiling")
    print(f"{'method':34s} {'params':>12s} {'MB':>8s} {'smaller':>8s} {'prefill':>8s} {'x':>6s} {'decode':>7s} {'x':>6s}")
    blocks = lambda m, n: n.startswith("h.")  # noqa: E731
    plan = MPRFConfig(heads=HeadConfig(0.25), ffn=FFNConfig(0.5), rank=LowRankConfig(fraction=1 / 3),
                      embedding=EmbeddingFactorConfig(rank=d // 3))
    variants = [("dense fp32", lambda: teacher, False), ("INT8 dynamic PTQ", lambda: copy.deepcopy(teacher), True),
                (f"low-rank r={d // 3} (blocks)",
                 lambda: reduce_(copy.deepcopy(teacher), LowRankConfig(rank=d // 3), filter_fn=blocks), False),
                (f"embedding rank {d // 3}", lambda: reduce_(copy.deepcopy(teacher), EmbeddingFactorConfig(rank=d // 3)),
                 False),
                ("MPRF heads .25, FFN .5, ranks 1/3, emb d/3", lambda: reduce_(copy.deepcopy(teacher), plan), False),
                ("same + INT8", lambda: reduce_(copy.deepcopy(teacher), plan), True)]
    base = {}
    for name, build, to_int8 in variants:
        m = build()
        params = m.num_parameters()
        if to_int8:
            m = quantize_(m, Int8DynamicConfig())
        size = disk_bytes(m)
        pf, dc = latency(m, "prefill", 5), latency(m, "decode", 20)
        base = base or dict(size=size, pf=pf, dc=dc)
        print(f"{name:34s} {params:12,d} {size / 1e6:8.1f} {100 * (1 - size / base['size']):7.1f}% {pf:8.1f} "
              f"{base['pf'] / pf:5.2f}x {dc:7.2f} {base['dc'] / dc:5.2f}x", flush=True)
        add("methods_teacher_prefill_128", name, f"{params} params; {size} bytes; untrained", pf)
        add("methods_teacher_decode_step", name, f"{params} params; {size} bytes; untrained", dc)
    for label, model in (("student (trained)", student), ("teacher (untrained)", teacher)):
        n = model.config.n_layer
        first = max(1, n // 3)
        ee = add_early_exits(model, EarlyExitConfig(layers=(first, max(first + 1, 2 * n // 3))))
        full = per_token_ms(lambda: model.generate(prompt, 32, greedy=True))
        forced = per_token_ms(lambda: ee.generate(prompt, 32, threshold=0.0))
        print(f"early exit ceiling, {label}: every token out after block {first} of {n}: {forced:.2f} ms per token "
              f"against {full:.2f} for the full model ({full / forced:.2f}x)", flush=True)
        add("methods_early_exit_ceiling", f"{label}, all out after block {first} of {n}",
            f"full model {full:.3f} ms/token", forced)


def main():
    def arguments(ap):
        ap.add_argument("--sections", default="123456", type=harness.section_digits("123456"),
                        help="which sections to run, digits of 1-6, e.g. 34 (default: all)")
        ap.add_argument("--only", default="", help="section 1: only the rows whose name contains this (and the "
                        "dense baseline), e.g. INT4")

    args = harness.cli(__doc__, "methods.csv", quick_help="a 4-layer 256-wide model, 120 steps, fewer tokens",
                       add_arguments=arguments)
    machine, versions = harness.header(args.threads)
    import torch

    import edgegen
    from edgegen.analysis import fit_tradeoff
    from edgegen.models import EarlyExitConfig, add_early_exits, dynamic_nll, generate_dynamic, train_exits
    from edgegen.quant import DynamicPrecisionConfig, Int8DynamicConfig, quantize_
    from edgegen.reduce import LowRankConfig, reduce_

    torch.set_num_threads(args.threads)
    int8_path = edgegen.kernel_paths()["int8_gemm"]
    print(f"INT8 GEMM path: {int8_path}; CPU flags: {harness.cpu_flags()}")
    s = settings(args.quick)
    cfg = s["config"]
    valid, test = data()
    print(f"\nGPT-2 {cfg.n_layer}L/{cfg.n_embd}, trained {s['steps']} steps x {s['batch']} windows of 128 tokens on the "
          f"WikiText-2 validation split; perplexity on the first {s['eval_tokens']} test tokens, context 128")
    dense = train(cfg, valid, s["steps"], s["batch"])
    prompt = test[None, :32]  # the generation prompt of sections 2 and 3
    rows = []

    paths = edgegen.kernel_paths()

    def add(op, provider, mode, p50=None, extra=""):
        int4 = "INT4" in provider
        path = (paths["int4_a8"] if "W4A8" in provider else paths["int4"]) if int4 else (
            int8_path if "INT8" in provider else "")
        dtype = "int4 weights" if int4 else ("int8 weights" if "INT8" in provider else "float32")
        rows.append(dict(op=op, provider=provider, shape=f"GPT-2 {cfg.n_layer}L/{cfg.n_embd}, batch 1",
                         dtype=dtype, mode=mode + extra, p50_ms=None if p50 is None else round(p50, 4),
                         kernel_path=path))

    def checkpoint():  # after every section: a later failure keeps what was measured
        harness.save(rows, args.out, final=False, threads=args.threads, machine=machine, versions=versions)

    # (1) every reduction alone and combined
    if "1" in args.sections:
        variants, plan = reductions(dense, cfg, valid, s["tune_steps"])
        print(f"\n## 1. Reductions (size on disk in the shipped format; perplexity on {s['eval_tokens']} test tokens)")
        print(f"{'method':34s} {'nonzero':>11s} {'MB':>7s} {'smaller':>8s} {'ppl':>8s} {'change':>8s} {'prefill':>8s} "
              f"{'x':>6s} {'decode':>7s} {'x':>6s}")
        base, points = {}, []
        chosen = [v for i, v in enumerate(variants) if i == 0 or not args.only or args.only in v[0]]
        for name, build, quant in chosen:
            m = build().eval()
            params = nonzero_params(m)
            if quant:
                quantize_(m, Int8DynamicConfig() if quant is True else quant)
            size = disk_bytes(m)
            q = ppl(m, test, s["eval_tokens"])
            pf, dc = latency(m, "prefill", 10), latency(m, "decode", 30)
            base = base or dict(size=size, ppl=q, pf=pf, dc=dc)
            smaller, change = 100 * (1 - size / base["size"]), 100 * (q / base["ppl"] - 1)
            print(f"{name:34s} {params:11,d} {size / 1e6:7.2f} {smaller:7.1f}% {q:8.1f} {change:+7.1f}% {pf:8.2f} "
                  f"{base['pf'] / pf:5.2f}x {dc:7.3f} {base['dc'] / dc:5.2f}x", flush=True)
            mode = f"{params} params; {size} bytes; ppl {q:.2f} ({change:+.2f}%)"
            add("methods_prefill_128", name, mode, pf)
            add("methods_decode_step", name, mode, dc)
            points.append((name, size, q, dc))
        print_pareto(points)

    checkpoint()

    # (2) dynamic precision: INT8 / fp32 per token
    if "2" in args.sections:
        print(f"\n## 2. Dynamic precision (INT8 dynamic / fp32 per token by the top-1 probability of the previous step; "
              f"teacher-forced perplexity on {s['dps_tokens']} test tokens, decode of 32 tokens after a 32-token prompt)")
        print(f"{'threshold':>9s} {'low steps':>9s} {'ppl':>8s} {'change':>8s} {'gen low':>9s} {'ms/token':>9s} "
              f"{'x fp32':>7s}")
        ref_ms = None
        dps_ref = None
        for th in (1.0, 0.5, 0.3, 0.2, 0.1, 0.0):
            dcfg = DynamicPrecisionConfig(low=Int8DynamicConfig(), rule="top1", threshold=th)
            m = quantize_(copy.deepcopy(dense), dcfg)
            r = dynamic_nll(m, test[:s["dps_tokens"]], dcfg, context=128)
            ms = per_token_ms(lambda: generate_dynamic(m, prompt, 32, dcfg))
            gen_low = generate_dynamic(m, prompt, 32, dcfg)[1]["low_fraction"]
            ref_ms, dps_ref = ref_ms or ms, dps_ref or r["ppl"]
            change = 100 * (r["ppl"] / dps_ref - 1)
            print(f"{th:9.2f} {100 * r['low_fraction']:8.1f}% {r['ppl']:8.1f} {change:+7.2f}% {100 * gen_low:8.1f}% "
                  f"{ms:9.3f} {ref_ms / ms:6.2f}x", flush=True)
            add("methods_dynamic_precision", f"DPS top1 >= {th}", f"low steps {r['low_fraction']:.4f}; ppl {r['ppl']:.2f} "
                f"({change:+.2f}%); generation low steps {gen_low:.4f}", ms)

    checkpoint()

    # (3) early exit
    if "3" in args.sections:
        n = cfg.n_layer
        layers = tuple(sorted({max(1, n // 3), max(1, 2 * n // 3)} - {n}))
        ee = add_early_exits(dense, EarlyExitConfig(layers=layers))
        t0 = time.perf_counter()
        losses = train_exits(ee, [windows(valid, 4, 128, seed=5000 + i)[:, :-1] for i in range(16)],
                             steps=s["exit_steps"], lr=5e-3)
        print(f"\n## 3. Early exit after blocks {layers} of {n} (exit LayerNorms distilled from the full model: "
              f"{s['exit_steps']} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}, {time.perf_counter() - t0:.0f} s); "
              f"perplexity on {s['ee_tokens']} test tokens, decode of 32 tokens after a 32-token prompt")
        print(f"{'threshold':>9s} {'blocks/token':>12s} {'left early':>10s} {'ppl':>8s} {'change':>8s} "
              f"{'gen blocks':>10s} {'ms/token':>9s} {'x full':>7s}")
        d, v = cfg.n_embd, cfg.vocab_size
        print(f"cost per decoded token (MACs): the {v}-way head {v * d / 1e6:.1f} M, each block about "
              f"{12 * d * d / 1e6:.2f} M; every exit checked computes the head once more")
        full_ms = per_token_ms(lambda: dense.generate(prompt, 32, greedy=True))
        print(f"the full model: {full_ms:.3f} ms per decoded token")
        full_ppl = ppl(dense, test, s["ee_tokens"])
        for th in (1.0, 0.9, 0.8, 0.6, 0.4, 0.2):
            used = []

            def scored(ids, th=th, used=used):
                out, st = ee(ids, threshold=th, return_stats=True)
                used.append(st.layers.flatten())
                return out

            q = ppl(scored, test, s["ee_tokens"])
            lay = torch.cat(used).double()
            left = float((lay < n).double().mean())
            gen_blocks = ee.generate(prompt, 32, threshold=th)[1].mean_layers()
            ms = per_token_ms(lambda: ee.generate(prompt, 32, threshold=th))
            change = 100 * (q / full_ppl - 1)
            print(f"{th:9.2f} {float(lay.mean()):7.2f} of {n} {100 * left:9.1f}% {q:8.1f} {change:+7.2f}% "
                  f"{gen_blocks:10.2f} {ms:9.3f} {full_ms / ms:6.2f}x", flush=True)
            add("methods_early_exit", f"early exit > {th}", f"blocks/token {float(lay.mean()):.3f} of {n}; left early "
                f"{left:.4f}; ppl {q:.2f} ({change:+.2f}%); generation blocks/token {gen_blocks:.3f}", ms)

    checkpoint()

    # (4) rank sweep and trade-off fit
    if "4" in args.sections:
        print("\n## 4. Low-rank rank sweep over the blocks' Linear layers: trade-off fit Q(C) (perplexity) and E(C) "
              "(prefill of 128 tokens), C = parameters")
        cs, qs, es = [], [], []
        for r in (None,) + s["ranks"]:
            m = copy.deepcopy(dense) if r is None else reduce_(copy.deepcopy(dense), LowRankConfig(rank=r),
                                                               filter_fn=lambda mod, name: name.startswith("h."))
            c = m.num_parameters()
            q = ppl(m, test, s["eval_tokens"] // 2)
            e = latency(m, "prefill", 15)
            cs.append(c)
            qs.append(q)
            es.append(e)
            print(f"rank {str(r or 'dense'):>5s}: {c:11,d} params, ppl {q:8.1f}, prefill {e:.2f} ms", flush=True)
            add("methods_rank_sweep", f"low-rank {r or 'dense'}", f"{c} params; ppl {q:.2f}", e)
        try:
            fit = fit_tradeoff(cs, qs, es, quality_lower_is_better=True, efficiency_lower_is_better=True)
            lo, hi = min(cs), max(cs)
            cstar = {lam: fit.optimal(lam, lo, hi) for lam in (0.25, 0.5, 0.75)}
            print(f"fit: R^2 quality {fit.r2_quality:.3f}, efficiency {fit.r2_efficiency:.3f} ({fit.quality_transform}); "
                  "C* = " + ", ".join(f"{c:,.0f} (lambda {lam})" for lam, c in cstar.items()))
            if min(fit.r2_quality, fit.r2_efficiency) < 0.5:
                print("  a fit with R^2 below 0.5 does not describe the sweep: C* from it is not meaningful")
        except (RuntimeError, ValueError) as e:
            print(f"fit: failed ({e})")

    checkpoint()

    # (5) the teacher's size and speed (untrained) and early exit's ceiling
    if "5" in args.sections:
        teacher_section(dense, cfg, prompt, add)

    checkpoint()

    # (6) the cited figures beside ours
    if "6" in args.sections:
        print("\n## 6. Cited figures (Optimizing Generative AI for Edge Deployment) and this run's")
        for method, cited in ANCHORS:
            print(f"- {method}: cited {cited}")
        print("  ours: the rows above (size on disk, perplexity change on WikiText-2 test tokens; early exit: blocks per "
              "token and the fraction leaving early; dynamic precision: fraction of low-precision steps)")
    harness.save(rows, args.out, threads=args.threads, machine=machine, versions=versions)


if __name__ == "__main__":
    main()
