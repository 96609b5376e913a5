"""Dynamic precision scaling in generation (quantize_ with DynamicPrecisionConfig, then
edgegen.models.generate_dynamic) on CPU.

A GPT-2 student-sized model (6 layers, 384 wide) is first trained for a short while on the staged
OpenWebText text (EDGEGEN_DATA_DIR; generated tokens otherwise, said in the output), so that its
next-token distributions carry real confidence. Then greedy generation of 64 tokens from held-out
prompts, batch 1: all fp32, all INT8 (the peers, same run) and dynamic precision with the top-1
rule at thresholds set to quantiles (25/50/75%) of the top-1 probabilities the fp32 model's own
generations show, so that roughly a quarter, half and three quarters of the steps can run in
INT8. Reported: the fraction of steps run in INT8, milliseconds per generated
token (median of repeats), and the fraction of generated tokens equal to the all-fp32 ones (a
fidelity measure of a briefly trained model, not a quality metric).

    python benchmarks/bench_dynamic.py           # 40 training steps, 4 prompts
    python benchmarks/bench_dynamic.py --quick   # 12 training steps, 2 prompts

Results: benchmarks/results/dynamic.csv.
"""

from __future__ import annotations

import copy
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402


def train(steps: int, threads: int):
    from edgegen.train import load_experiment
    from edgegen.train.loop import Trainer

    data = Path(os.environ.get("EDGEGEN_DATA_DIR", "data"))
    real = (data / "openwebtext").is_dir() and (data / "gpt2").is_dir()
    cfg = load_experiment({
        "name": "dps-bench", "task": "lm",
        "model": {"kind": "gpt2", "n_layer": 6, "n_embd": 384, "n_head": 6, "n_positions": 128},
        "data": {"name": "openwebtext", "root": str(data), "seq_len": 64, "val_batches": 4} if real
        else {"name": "synthetic-tokens", "seq_len": 64, "val_batches": 4},
        "optim": {"name": "adamw", "lr": 1e-3, "betas": [0.9, 0.95], "grad_clip": 1.0},
        "train": {"batch_size": 8, "epochs": 1, "steps_per_epoch": steps, "threads": threads},
        "tracking": {"enabled": False}})
    with tempfile.TemporaryDirectory() as work:  # the trained model is kept in memory
        trainer = Trainer(cfg, Path(work) / "run", progress=False)
        trainer.fit()
    prompts = [x[:1, :32] for x, _ in trainer.batches.val_batches()]
    return trainer.task.main_model().eval(), prompts, real


def main():
    args = harness.cli(__doc__, "dynamic.csv", quick_help="12 training steps, 2 prompts")
    machine, versions = harness.header(args.threads)
    import torch

    import edgegen
    from edgegen.models import generate_dynamic
    from edgegen.quant import DynamicPrecisionConfig, Int8DynamicConfig, quantize_

    torch.set_num_threads(args.threads)
    path = edgegen.kernel_paths()["int8_gemm"]
    print(f"INT8 GEMM path: {path}; CPU flags: {harness.cpu_flags()}")
    model, prompts, real = train(12 if args.quick else 40, args.threads)
    prompts = prompts[: 2 if args.quick else 4]
    print(f"model trained on {'OpenWebText (staged)' if real else 'generated tokens (no staged OpenWebText)'}; "
          f"{len(prompts)} prompts of 32 tokens, 64 new tokens each, greedy, batch 1")
    n_new, repeats = 64, harness.MIN_REPEATS

    def timed(fn):  # (median seconds, output): greedy generation gives the same output every call
        out = fn()  # doubles as the warm-up
        return harness.time_ms(fn, repeats, warmup=0)[1] / 1e3, out

    fp32_out, rows, base = [], [], None
    int8 = quantize_(copy.deepcopy(model), Int8DynamicConfig(embeddings=False))
    with torch.no_grad():  # top-1 probabilities of the fp32 model along its own greedy generations
        top1 = torch.cat([model(out)[0, 31:-1].float().softmax(-1).max(-1).values
                          for out in (model.generate(p, n_new, greedy=True) for p in prompts)])
    quantiles = [round(float(torch.quantile(top1, q)), 4) for q in (0.75, 0.5, 0.25)]
    print(f"top-1 probability along fp32 generations: median {float(top1.median()):.3f}, "
          f"quartiles {quantiles[2]} / {quantiles[0]}")
    cases = [("fp32", None), ("int8", None)] + [(f"dynamic top1>={t}", t) for t in quantiles]
    print(f"\n{'provider':20s} {'int8 steps':>10s} {'ms/token':>9s} {'x fp32':>7s} {'= fp32 tokens':>13s}")
    for name, threshold in cases:
        low_frac, same, secs = [], [], 0.0
        for i, p in enumerate(prompts):
            if threshold is None:
                m = model if name == "fp32" else int8
                s, out = timed(lambda: m.generate(p, n_new, greedy=True))
                low_frac.append(1.0 if name == "int8" else 0.0)
            else:
                cfg = DynamicPrecisionConfig(low=Int8DynamicConfig(), rule="top1", threshold=threshold)
                m = quantize_(copy.deepcopy(model), cfg) if i == 0 else m
                s, (out, stats) = timed(lambda: generate_dynamic(m, p, n_new, cfg))
                low_frac.append(stats["low_fraction"])
            secs += s
            if name == "fp32":
                fp32_out.append(out)
            same.append(float((out[:, 32:] == fp32_out[i][:, 32:]).float().mean()))
        ms = secs / (len(prompts) * n_new) * 1e3
        base = base or ms
        frac, agree = sum(low_frac) / len(low_frac), sum(same) / len(same)
        print(f"{name:20s} {frac:10.2f} {ms:9.3f} {base / ms:6.2f}x {agree:13.3f}")
        rows.append(dict(op="gpt2_generate_64", provider=name, shape="batch=1, 32-token prompts",
                         dtype="int8/fp32" if threshold is not None else ("int8" if name == "int8" else "float32"),
                         mode=f"int8 steps {frac:.3f}; tokens equal to fp32 {agree:.3f}",
                         p50_ms=round(ms, 4), kernel_path=path if name != "fp32" else ""))
    harness.save(rows, args.out, threads=args.threads, machine=machine, versions=versions)


if __name__ == "__main__":
    main()
