"""Quantized linear layers on CPU.

1. INT8 Linear on GPT-2 shapes (M in {1, 8, 64, 512}; K x N in {768x2304, 768x3072, 3072x768}):
   edgegen Int8Linear (dynamic activation quantization included) vs fp32 nn.Linear, vs PyTorch's
   own int8 path (torch.ao dynamic quantized Linear, x86/fbgemm engine) and vs ONNX Runtime's
   integer MatMul (onnxruntime.quantization.quantize_dynamic of the same layer, per-channel int8
   weights; ORT fuses it into DynamicQuantizeMatMul).
2. INT4 GEMV (M = 1) vs fp32 and INT8, the same shapes plus GPT-2's output head (768 x 50257),
   with weights in cache and streamed from DRAM: weight-only (float activations) and W4A8
   (activations quantized per call to int8 per group: integer dot products), and both at M = 8
   and at M = 128 (a prefill).
3. End to end, fp32 vs INT8 dynamic (and INT4 weight-only / W4A8 for GPT-2): the GPT-2 student
   (6L/384) prefill of 128 tokens and one cached decode step, the Beta-VAE decoder and the DCGAN
   generator and discriminator (batch 64); latency and bytes on disk.
4. edgegen's INT8 paths against each other (section 1's layers, section 3's models) in one
   process, in alternating rounds: ratios that hold on a machine whose speed drifts; and the W4A8
   INT4 paths likewise (layers at M = 1 and 8, a GPT-2 student decode step).

    python benchmarks/bench_quant.py               # full run (several minutes)
    python benchmarks/bench_quant.py --quick       # M in {1, 64}, one shape
    python benchmarks/bench_quant.py --sections 23 # only the INT4 and end-to-end sections
    python benchmarks/bench_quant.py --sections 4  # only edgegen's INT8 paths, alternating in one process

Medians after warm-up, each (provider, case) in its own process, at the machine's full thread
count (ONNX Runtime gets the same intra-op thread count). Results: benchmarks/results/quant.csv.
Needs requirements-bench.txt for the ONNX Runtime rows (skipped, with a message, without it).

Correctness: every edgegen row's output is checked once, in its timing process and outside the
timed loop (section 4: in its process, before the rounds). max_err = max |out - ref| / max |ref|.
Layers (sections 1, 2, 4) against the dequantized eager layer (float64 x @ W_deq^T + b: what the
kernel computes save for the activations' own quantization): tolerance 0.06 where activations are
quantized to int8 (INT8, W4A8), 1e-4 for INT4 weight-only (float activations). Models (sections
3, 4) against the same fp32 model on the same inputs: tolerance 0.2 for INT8, 0.5 for INT4
(seeded untrained weights, 4-bit embedding table included; what these bounds catch is a broken
kernel, not a quality loss). A row over its tolerance fails the run.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

SHAPES = [(768, 2304), (768, 3072), (3072, 768)]

# Tolerances of the checks (see the docstring): layers against the dequantized layer, models
# against the fp32 model.
LAYER_TOL = {"int8": 0.06, "int4": 1e-4, "int4a8": 0.06}
MODEL_TOL = {"int8": 0.2, "int4": 0.5, "int4a8": 0.5}


def rel_error(out, ref) -> float:
    """max |out - ref| / max |ref| (ref in float64)."""
    return float((out.double() - ref).abs().max() / ref.abs().max().clamp(min=1e-30))


def layer_check(q, lin, x, out, kind: str) -> dict:
    """A quantized layer's output ``out`` on ``x`` against its dequantized weights in float64."""
    import torch.nn.functional as F

    ref = F.linear(x.double(), q.dequantized_weight().double(), lin.bias.detach().double())
    return harness.check_result(rel_error(out, ref), LAYER_TOL[kind])


def logits(out):
    """A model's output tensor (GPT-2 with a cache returns (logits, past))."""
    return out[0] if isinstance(out, (tuple, list)) else out


def model_check(spec: dict, out) -> dict:
    """A quantized model's output against the same model in fp32 on the same inputs."""
    import torch

    ref_f, _ = e2e_case({**spec, "provider": "fp32"})
    with torch.no_grad():
        ref = logits(ref_f()).double()
    kind = "int8" if spec["provider"].startswith("int8") else spec["provider"]
    return harness.check_result(rel_error(logits(out), ref), MODEL_TOL[kind])


def ort_session(lin, threads: int, quantized: bool):
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    k, n = lin.in_features, lin.out_features
    w = numpy_helper.from_array(lin.weight.detach().numpy().T.copy(), "W")
    b = numpy_helper.from_array(lin.bias.detach().numpy().astype(np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["XW"]), helper.make_node("Add", ["XW", "B"], ["Y"])], "linear",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["M", k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["M", n])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    d = tempfile.mkdtemp()
    path = os.path.join(d, "linear.onnx")
    onnx.save(model, path)
    if quantized:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        qpath = os.path.join(d, "linear_int8.onnx")
        quantize_dynamic(path, qpath, weight_type=QuantType.QInt8, per_channel=True)
        path = qpath
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    shutil.rmtree(d)  # the session holds the model in memory
    return session


def int4_layer(lin, provider: str, group: int):
    """The INT4 layer of a provider: weight-only ("edgegen-int4") or W4A8 ("edgegen-int4a8")."""
    from edgegen.quant import Int4Linear

    return Int4Linear.from_float(lin, group, "int8" if provider.endswith("a8") else "float")


def linear_worker(spec: dict) -> dict:
    import torch
    from torch import nn

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    k, n, m = spec["k"], spec["n"], spec["m"]
    if spec.get("cold"):
        return cold_worker(spec)
    lin = nn.Linear(k, n).eval()
    x = torch.randn(m, k)
    p = spec["provider"]
    if p == "fp32":
        f = lambda: lin(x)  # noqa: E731
    elif p.startswith("edgegen-int8"):
        from edgegen.quant import Int8Linear

        q = Int8Linear.from_float(lin)
        f = lambda: q(x)  # noqa: E731
    elif p in ("edgegen-int4", "edgegen-int4a8"):
        q = int4_layer(lin, p, spec.get("group", 64))
        f = lambda: q(x)  # noqa: E731
    elif p == "torch-int8":
        import warnings

        warnings.filterwarnings("ignore")
        from torch.ao.quantization import quantize_dynamic

        q = quantize_dynamic(nn.Sequential(lin), {nn.Linear}, dtype=torch.qint8)
        f = lambda: q(x)  # noqa: E731
    elif p in ("onnxruntime-int8", "onnxruntime-fp32"):
        sess = ort_session(lin, spec["threads"], p == "onnxruntime-int8")
        xn = x.numpy()
        f = lambda: sess.run(None, {"X": xn})  # noqa: E731
    else:
        raise ValueError(p)
    with torch.no_grad():
        out = f()
        check = {}
        if p.startswith("edgegen") and spec["measure"] == "time":  # edgegen's layers, once, outside the timed loop
            check = layer_check(q, lin, x, out, p.replace("edgegen-", "").split("[")[0])
        return {**harness.measure(spec, f, warmup=3), **check}


def cold_worker(spec: dict) -> dict:
    """Like a decode step through many layers: enough distinct copies of the layer (>= 256 MB of
    fp32 weights, far beyond the 32 MB L3) are called in turn, so weights stream from DRAM."""
    import torch
    from torch import nn

    torch.set_num_threads(spec["threads"])
    k, n = spec["k"], spec["n"]
    copies = max(2, (256 << 20) // (4 * k * n))
    layers = []
    first = None
    for _ in range(copies):
        lin = nn.Linear(k, n)
        if first is None:
            first = lin  # the float layer of layers[0], the one checked
        if spec["provider"] in ("edgegen-int4", "edgegen-int4a8"):
            lin = int4_layer(lin, spec["provider"], 64)
        elif spec["provider"] == "edgegen-int8":
            from edgegen.quant import Int8Linear

            lin = Int8Linear.from_float(lin)
        layers.append(lin)
    x = torch.randn(1, k)
    it = iter(range(1 << 62))

    def f():
        return layers[next(it) % copies](x)

    with torch.no_grad():
        out = f()  # layers[0]
        check = {}
        if spec["provider"] != "fp32" and spec["measure"] == "time":
            check = layer_check(layers[0], first, x, out, spec["provider"].replace("edgegen-", ""))
        for _ in range(copies - 1):
            f()
        return {**harness.measure(spec, f, warmup=copies, repeats=max(60, 2 * copies)), **check}


def e2e_worker(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    f, size = e2e_case(spec)
    with torch.no_grad():
        out = f()
    check = {}
    if spec["provider"] != "fp32" and spec["measure"] == "time":  # once, outside the timed loop
        check = model_check(spec, out)
    del out
    with torch.no_grad():
        return {**harness.measure(spec, f, warmup=2), "bytes": size, **check}


# What each end-to-end model runs on (the shape column of its rows).
E2E_SHAPES = {"prefill": "batch=1, 128 tokens", "decode": "batch=1, 1 token after 128 cached",
              "batch64": "batch=64"}


def e2e_case(spec: dict):
    """(f, bytes): one forward of the case's model (run it under torch.no_grad()) and the size of
    its saved weights."""
    import torch

    torch.manual_seed(0)
    from edgegen.quant import Int4DynamicConfig, Int4WeightOnlyConfig, Int8DynamicConfig, quantize_, save_quantized

    if spec["model"] == "gpt2-student":
        from edgegen.models.gpt2 import GPT2, GPT2Config

        model = GPT2(GPT2Config.student()).eval()
        idx = torch.randint(0, 50257, (1, 128))
    elif spec["model"] == "beta-vae-decoder":
        from edgegen.models.vae import BetaVAE

        model = BetaVAE().eval()
        z = torch.randn(64, model.config.latent_dim)
    else:  # dcgan-generator / dcgan-discriminator
        from edgegen.models.dcgan import DCGANDiscriminator, DCGANGenerator

        model = (DCGANGenerator() if spec["model"] == "dcgan-generator" else DCGANDiscriminator()).eval()
        inputs = model.example_inputs(64)
    if spec["provider"].startswith("int8"):
        quantize_(model, Int8DynamicConfig())
    elif spec["provider"] == "int4":
        quantize_(model, Int4WeightOnlyConfig(64))
    elif spec["provider"] == "int4a8":
        quantize_(model, Int4DynamicConfig(64))
    with tempfile.TemporaryDirectory() as d:
        size = save_quantized(model.decoder if spec["model"] == "beta-vae-decoder" else model, Path(d) / "m.st")
    with torch.no_grad():
        if spec["model"] == "gpt2-student":
            if spec["mode"] == "prefill":
                f = lambda: model(idx)  # noqa: E731
            else:
                _, past = model(idx, use_cache=True)
                nxt = idx[:, -1:]
                f = lambda: model(nxt, past_key_values=past, use_cache=True)  # noqa: E731
        elif spec["model"] == "beta-vae-decoder":
            f = lambda: model.decode(z)  # noqa: E731
        else:
            f = lambda: model(*inputs)  # noqa: E731
    return f, size


def int8_ceiling_tops(threads: int) -> float:
    """PyTorch's own best INT8 matmul here (torch._int_mm, oneDNN: VNNI or AMX where the CPU has
    them) on a large square, in TOPS: the ceiling the INT8 GEMM is compared against."""
    import torch

    torch.set_num_threads(threads)
    n = 2048
    a = torch.randint(-128, 128, (n, n), dtype=torch.int8)
    b = torch.randint(-128, 128, (n, n), dtype=torch.int8)
    _, p50, _ = harness.time_ms(lambda: torch._int_mm(a, b), repeats=10, warmup=2)
    return 2 * n ** 3 / (p50 * 1e-3) / 1e12


def worker(spec: dict) -> dict:
    return e2e_worker(spec) if spec["op"] == "e2e" else linear_worker(spec)


def main():
    args = harness.cli(__doc__, "quant.csv", worker, add_arguments=lambda ap: ap.add_argument(
        "--sections", default="1234", type=harness.section_digits("1234"),
        help="which sections to run, digits of 1-4, e.g. 23 (default: all)"))
    try:
        import onnxruntime  # noqa: F401
        have_ort = True
    except ImportError:
        have_ort = False
        print("# onnxruntime not installed (pip install -r requirements-bench.txt torch==2.13.0): its rows are skipped")

    machine, versions = harness.header(args.threads)
    import edgegen

    kp = edgegen.kernel_paths()  # the best path of each family (section 1 runs each INT8 path in turn)
    rows = []

    def record(op, provider, shape, res, mode="", flops=None, path=None):
        if "error" in res:
            print(f"{op} {provider} {shape} ERROR {res['error']}")
            rows.append(dict(op=op, provider=provider, shape=shape, dtype="float32 in/out", mode=mode,
                             kernel_path=path or "", error=harness.error_text(res)))
            return None
        row = dict(op=op, provider=provider, shape=shape, dtype="float32 in/out", mode=mode, kernel_path=path or "",
                   **harness.measured(res, 4))
        if flops:
            row["gflops"] = round(flops / (res["p50_ms"] * 1e-3) / 1e9, 2)
        rows.append(row)
        return row

    ms = (1, 64) if args.quick else (1, 8, 64, 512)
    shapes = SHAPES[:1] if args.quick else SHAPES
    # edgegen's INT8 GEMM once per ISA path this CPU has (each under its own EDGEGEN_MAX_ISA), the
    # best path last: the ratios are the best path's.
    levels = harness.kernel_levels("int8_gemm")
    int8 = [f"edgegen-int8[{lv}]" for lv in harness.above_scalar(levels)]
    best = int8[-1]
    harness.print_paths("int8_gemm", levels)
    providers = ["fp32", *int8, "torch-int8"] + (["onnxruntime-int8"] if have_ort else [])
    if "1" in args.sections:
        print("\n## INT8 Linear (forward, dynamic activation quantization included); speed-up = time / edgegen's "
              f"{best} time")
        print(f"{'M':>4s} {'K x N':>11s} " + " ".join(f"{p:>26s}" for p in providers)
              + "   edgegen vs fp32 / torch / ORT; % of the INT8 ceiling")
    ceiling = None
    for k, n in shapes if "1" in args.sections else []:
        for m in ms:
            res = {}
            for p in providers:
                isa = harness.isa_of(p)
                spec = dict(op="linear", provider=p, k=k, n=n, m=m, threads=args.threads, repeats=200 if m <= 8 else 30,
                            isa=isa)
                r = record("int8_linear", p, f"M={m} K={k} N={n}", harness.run_worker(__file__, spec),
                           flops=2 * m * k * n, path=isa)
                if r:
                    res[p] = r["p50_ms"]
            if best not in res:
                continue
            e = res[best]
            cells = " ".join(f"{res.get(p, float('nan')):26.4f}" for p in providers)
            vs = " / ".join(f"{res[p] / e:.2f}x" if p in res else "-" for p in ("fp32", "torch-int8", "onnxruntime-int8"))
            if ceiling is None and m >= 64:
                try:
                    ceiling = int8_ceiling_tops(args.threads)
                except RuntimeError as exc:  # no CPU torch._int_mm in this torch build
                    print(f"# INT8 ceiling not measured: {exc}")
                    ceiling = float("nan")
            pct = (f"; {2 * m * k * n / (e * 1e-3) / 1e12 / ceiling * 100:.0f}% of {ceiling:.2f} TOPS"
                   if m >= 64 and ceiling == ceiling else "")
            print(f"{m:4d} {f'{k}x{n}':>11s} {cells}   {vs}{pct}")
    save = lambda: harness.save(rows, args.out, final=False, threads=args.threads, machine=machine,  # noqa: E731
                                versions=versions)
    save()

    int4 = ("edgegen-int4", "edgegen-int4a8")
    if "2" in args.sections:
        print("\n## INT4 layers (group 64; M = 1 and 8: GEMV, M = 128: prefill) vs fp32 and INT8: weight-only (int4) "
              "and W4A8 (int4a8: activations "
              "quantized per call to int8 per group); 'hot': the same layer again and again (weights in cache); "
              "'cold': >= 256 MB of distinct layers in turn (weights from DRAM, as in decoding)")
        gemv_paths = {"edgegen-int8": kp["int8_gemm"], "edgegen-int4": kp["int4"], "edgegen-int4a8": kp["int4_a8"]}
        print(f"# paths: int8 {kp['int8_gemm']}, int4 {kp['int4']}, int4a8 {kp['int4_a8']}; "
              f"CPU flags: {harness.cpu_flags()}")
        print(f"{'M':>3s} {'K x N':>11s} {'cache':5s} {'fp32 ms':>9s} {'int8 ms':>9s} {'int4 ms':>9s} {'int4a8 ms':>9s} "
              f"{'int4a8 vs fp32 / int4 / int8':>30s}")
        cases = [(1, s) for s in shapes + [(768, 50257)]] + [(8, s) for s in shapes[:1] + [(768, 50257)]]
        cases += [(128, s) for s in shapes[:1] + ([] if args.quick else shapes[2:] + [(768, 50257)])]  # prefill
        for m, (k, n) in cases:
            for cold in (False, True):
                if cold and (n > 10000 or m > 1):
                    continue
                res = {}
                for p in ("fp32", "edgegen-int8", *int4):
                    spec = dict(op="linear", provider=p, k=k, n=n, m=m, threads=args.threads, cold=cold,
                                repeats=(200 if m < 128 else 30) if n < 10000 else (30 if m < 128 else 7))
                    r = record("gemv_" + ("cold" if cold else "hot"), p, f"M={m} K={k} N={n} group=64",
                               harness.run_worker(__file__, spec), flops=2 * m * k * n, path=gemv_paths.get(p))
                    if r:
                        res[p] = r["p50_ms"]
                if len(res) == 4:
                    a8 = res["edgegen-int4a8"]
                    print(f"{m:3d} {f'{k}x{n}':>11s} {'cold' if cold else 'hot':5s} {res['fp32']:9.4f} "
                          f"{res['edgegen-int8']:9.4f} {res['edgegen-int4']:9.4f} {a8:9.4f} "
                          f"{res['fp32'] / a8:12.2f}x / {res['edgegen-int4'] / a8:.2f}x / {res['edgegen-int8'] / a8:.2f}x")
        save()

    if "3" in args.sections:
        int4_paths = {"int4": kp["int4"], "int4a8": kp["int4_a8"]}
        print("\n## End to end, fp32 vs INT8 dynamic (Linear and convolution layers) and INT4 weight-only / W4A8 (Linear)")
        print(f"{'model':18s} {'mode':8s} {'quant':17s} {'fp32 ms':>9s} {'q ms':>9s} {'speed-up':>9s} {'fp32 MB':>8s} "
              f"{'q MB':>8s}")
        q8 = [p.replace("edgegen-", "") for p in int8]  # int8[<path>] for every INT8 path of this CPU
        cases = [("gpt2-student", "prefill", q) for q in q8] + [("gpt2-student", "decode", q) for q in q8]
        cases += [("gpt2-student", mode, q) for mode in ("prefill", "decode") for q in ("int4", "int4a8")]
        cases += [(m, "batch64", q) for m in ("beta-vae-decoder", "dcgan-generator", "dcgan-discriminator") for q in q8]
        fp32_cache = {}
        for model, mode, quant in cases:
            res = {}
            for p in ("fp32", quant):
                if p == "fp32" and (model, mode) in fp32_cache:
                    res[p] = fp32_cache[(model, mode)]
                    continue
                isa = harness.isa_of(p)
                path = isa or int4_paths.get(p)
                spec = dict(op="e2e", model=model, mode=mode, provider=p, threads=args.threads,
                            repeats=50 if mode == "decode" else 10, isa=isa)
                r = harness.run_worker(__file__, spec)
                shape = E2E_SHAPES[mode] + (f"; {r['bytes']} bytes on disk" if "bytes" in r else "")
                row = record(f"e2e_{model}", p, shape, r, mode=mode, path=path)
                if row:
                    res[p] = r
                    if p == "fp32":
                        fp32_cache[(model, mode)] = r
            if len(res) == 2:
                f, q = res["fp32"], res[quant]
                print(f"{model:18s} {mode:8s} {quant:17s} {f['p50_ms']:9.2f} {q['p50_ms']:9.2f} "
                      f"{f['p50_ms'] / q['p50_ms']:8.2f}x {f['bytes'] / 1e6:8.1f} {q['bytes'] / 1e6:8.1f}")
        save()
    if "4" in args.sections:
        interleaved_paths(args, levels, shapes, ms, rows)
    harness.save(rows, args.out, threads=args.threads, machine=machine, versions=versions)


def interleaved_paths(args, levels, shapes, ms, rows):
    """Section 4: edgegen's INT8 paths against each other in one process, in alternating rounds
    (each round runs every path once; the median over rounds of each path's per-round median), so
    that a machine whose speed drifts during the run (shared hosts) moves every path alike. The
    peers are left out: ONNX Runtime's spinning thread pool would slow whoever runs after it."""
    import statistics
    import time

    import torch
    from torch import nn

    import edgegen
    from edgegen.quant import Int8Linear

    torch.set_num_threads(args.threads)
    paths = harness.above_scalar(levels)
    rounds = harness.MIN_REPEATS if args.quick else 7

    def compare(fns: dict, calls: int) -> dict:
        per = {p: [] for p in fns}
        with torch.no_grad():
            for p, f in fns.items():
                with edgegen.max_isa(p):
                    f()  # warm-up (packing, caches)
            for _ in range(rounds):
                for p, f in fns.items():
                    with edgegen.max_isa(p):
                        t = []
                        for _ in range(calls):
                            t0 = time.perf_counter()
                            f()
                            t.append(time.perf_counter() - t0)
                    per[p].append(statistics.median(t) * 1e3)
        return {p: statistics.median(v) for p, v in per.items()}

    print(f"\n## edgegen's INT8 paths in one process, alternating ({rounds} rounds); ms, and the ratio of "
          f"the {paths[0]} path's time to each path's")
    print(f"{'case':34s} " + " ".join(f"{p:>20s}" for p in paths))

    def checks(f, paths, error, tol):
        """Each path's error(output of f()) under its cap, once, before the rounds."""
        out = {}
        with torch.no_grad():
            for p in paths:
                with edgegen.max_isa(p):
                    out[p] = harness.measured(harness.check_result(error(f()), tol))
        return out

    def report(op, case, res, checked, quant="int8"):
        b = next(iter(res))  # the lowest path: the ratios are its time over each path's
        print(f"{case:34s} " + " ".join(f"{t:9.3f} ({res[b] / t:5.2f}x)" for t in res.values()))
        for p, t in res.items():
            rows.append(dict(op=op, provider=f"edgegen-{quant}[{p}]", shape=case, dtype="float32 in/out",
                             mode=f"interleaved, {rounds} rounds", kernel_path=p, p50_ms=round(t, 4), **checked[p]))

    def layer_error(layer, lin, x):
        import torch.nn.functional as F

        ref = F.linear(x.double(), layer.dequantized_weight().double(), lin.bias.detach().double())
        return lambda out: rel_error(out, ref)

    def model_error(spec):
        ref_f, _ = e2e_case({**spec, "provider": "fp32"})
        with torch.no_grad():
            ref = logits(ref_f()).double()
        return lambda out: rel_error(logits(out), ref)

    for k, n in shapes:
        for m in ms:
            torch.manual_seed(0)
            lin = nn.Linear(k, n)
            layer, x = Int8Linear.from_float(lin), torch.randn(m, k)
            checked = checks(lambda: layer(x), paths, layer_error(layer, lin, x), LAYER_TOL["int8"])
            res = compare({p: (lambda: layer(x)) for p in paths}, 31 if m <= 8 else 9)
            report("int8_linear", f"linear M={m} K={k} N={n}", res, checked)
    models = [("gpt2-student", "prefill"), ("beta-vae-decoder", "batch64"), ("dcgan-generator", "batch64"),
              ("dcgan-discriminator", "batch64")]
    for model, mode in models[:1] if args.quick else models:
        spec = dict(model=model, mode=mode, provider="int8", threads=args.threads)
        f, _ = e2e_case(spec)
        checked = checks(f, paths, model_error(spec), MODEL_TOL["int8"])
        report(f"e2e_{model}", f"{model} {mode}", compare({p: f for p in paths}, 3), checked)

    # The W4A8 INT4 rows (int4_a8 family) likewise: one layer at decode sizes, and a decode step.
    paths = harness.above_scalar(harness.kernel_levels("int4_a8"))
    harness.print_paths("int4_a8", paths)
    print(f"{'case':34s} " + " ".join(f"{p:>20s}" for p in paths))
    for k, n in shapes[:1] if args.quick else shapes:
        for m in (1, 8):
            torch.manual_seed(0)
            lin = nn.Linear(k, n)
            layer, x = int4_layer(lin, "edgegen-int4a8", 64), torch.randn(m, k)
            checked = checks(lambda: layer(x), paths, layer_error(layer, lin, x), LAYER_TOL["int4a8"])
            report("int4a8_linear", f"W4A8 M={m} K={k} N={n}", compare({p: (lambda: layer(x)) for p in paths}, 31),
                   checked, "int4a8")
    spec = dict(model="gpt2-student", mode="decode", provider="int4a8", threads=args.threads)
    f, _ = e2e_case(spec)
    checked = checks(f, paths, model_error(spec), MODEL_TOL["int4a8"])
    report("e2e_gpt2-student", "gpt2-student decode, W4A8", compare({p: f for p in paths}, 15), checked, "int4a8")


if __name__ == "__main__":
    main()
