"""Speed of the evaluation instruments against the bare model forward, in one run.

* Perplexity (edgegen.eval.perplexity) of the GPT-2 student on WikiText-2 test (the staged file,
  EDGEGEN_DATA_DIR), context 1024, stride 512, against the same windows fed to the bare model
  forward under no_grad: the metric's overhead (slicing, each new token's log-sum-exp, float64
  sums, bookkeeping) as a share of the forward time. Target: at most 10%. Measured in blocks of
  30 windows, bare then metric, so that drift of the shared machine over several minutes falls on
  both alike (each block is scored as its own sequence: the token counts are the blocks' sum).
* SSIM of 64 reconstructions of 64 x 64 RGB against a Beta-VAE's forward on them (the metric's
  cost beside the model it scores).
* FID feature extraction (edgegen.eval.image_statistics) of 64 x 64 uint8 images, per 1,000
  images, against the bare network forward on the same images already resized and normalised:
  the metric's overhead (range checks, resizing to the network's input, float64 streaming
  statistics) as a share of the forward. Target: at most 10%. For the FID Inception-v3 network
  (randomly initialised here: the standard weights are not on this machine, and the compute does
  not depend on them) and for the FID-proxy CNN. Interleaved per batch of 50.
* Precision / recall / density / coverage (edgegen.eval.manifold_metrics, float64, blocked)
  against the metric authors' package (prdc, float32 on scikit-learn's pairwise distances, the
  whole [N, M] matrix at once), on the same random features: 2,048-d (Inception) and 256-d
  (FID-proxy), N = M = 2,000 (500 with --quick). Both give the same four numbers on these
  features (checked here); the ratio is edgegen's time over prdc's.

The student is randomly initialised (speed does not depend on the weights; its perplexity is
therefore near the vocabulary size and is not a quality number). Prints a table, writes
benchmarks/results/eval.csv (--out, or its older name --csv). The perplexity and FID rows time one
pass over all their data: their CSV column is total_ms (the sum over the blocks), not p50_ms; the
SSIM rows are p20/p50/p80 of repeated calls. None of it runs an edgegen kernel (the metrics and
the models are PyTorch ops): kernel_path says so.

    python benchmarks/bench_eval.py                     # the whole test split, 1,000 FID images
    python benchmarks/bench_eval.py --quick             # 16,384 tokens, 200 FID images
    python benchmarks/bench_eval.py --only perplexity --max-tokens 4096
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

import edgegen  # noqa: E402,F401
from edgegen.eval import perplexity, ssim  # noqa: E402

KERNEL_PATH = "none (PyTorch ops only)"
QUICK_TOKENS, QUICK_FID_IMAGES, QUICK_PRDC = 16384, 200, 500


def _tokens(max_tokens):
    from edgegen.data.tokenizer import GPT2Tokenizer
    from edgegen.data.wikitext import WikiText2

    root = Path(os.environ.get("EDGEGEN_DATA_DIR", "../shared/data"))
    tok = GPT2Tokenizer.from_dir(root / "gpt2")
    ids = torch.from_numpy(WikiText2(root, "test").tokens(tok).astype("int64"))
    return ids[:max_tokens] if max_tokens else ids


def bench_perplexity(rows, max_tokens, threads):
    from edgegen.models.gpt2 import GPT2, GPT2Config

    torch.manual_seed(0)
    model = GPT2(GPT2Config.student()).eval()
    ids = _tokens(max_tokens)
    context, stride = 1024, 512
    # Interleaved in blocks of about 30 windows (bare forward over a block's windows, then
    # perplexity() on the same tokens), so the shared machine's drift over the minutes a whole
    # split takes falls on both sides alike.
    block = 30 * stride
    bare = metric = 0.0
    scored = windows = 0
    with torch.no_grad():
        model(ids[:context][None])  # warm-up
    for b0 in range(0, ids.numel() - 1, block):
        chunk = ids[b0:b0 + block + context - stride]
        if chunk.numel() < 2:
            break
        starts = []
        for b in range(0, chunk.numel(), stride):
            starts.append(b)
            if b + context >= chunk.numel():
                break
        with torch.no_grad():
            t0 = time.perf_counter()
            for b in starts:
                model(chunk[b:b + context][None])
            bare += time.perf_counter() - t0
        t0 = time.perf_counter()
        r = perplexity(model, chunk, context, stride)
        metric += time.perf_counter() - t0
        scored += r.tokens_scored
        windows += r.windows
    overhead = (metric - bare) / bare
    label = "WikiText-2 test" + ("" if not max_tokens else f", first {max_tokens} tokens")
    print(f"perplexity, GPT-2 student (random init), {label} in blocks of 30 windows: {scored} tokens in {windows} "
          f"windows; bare forward {bare:.1f} s, perplexity() {metric:.1f} s, overhead {100 * overhead:+.1f}% "
          "(target <= 10%)")
    for name, sec in (("bare-forward", bare), ("edgegen.eval.perplexity", metric)):
        rows.append(dict(op="perplexity", provider=name, shape=f"{scored} tokens ctx{context} s{stride}",
                         dtype="float32", mode=f"eval, one pass, {windows} windows", total_ms=round(sec * 1e3, 1),
                         threads=threads, kernel_path=KERNEL_PATH))


def bench_ssim(rows, threads):
    from edgegen.models.vae import BetaVAE

    torch.manual_seed(0)
    vae = BetaVAE().eval()
    x = torch.rand(64, 3, 64, 64) * 2 - 1  # the VAE's [-1, 1] images
    with torch.no_grad():
        recon = vae(x)["recon"]
        fwd = harness.time_ms(lambda: vae(x), repeats=harness.MIN_REPEATS)
    a, b = (recon + 1) / 2, (x + 1) / 2  # SSIM on [0, 1]
    metric = harness.time_ms(lambda: ssim(a, b), repeats=harness.MIN_REPEATS)
    print(f"SSIM of 64 x 3 x 64 x 64: {metric[1]:.1f} ms; the Beta-VAE forward on them {fwd[1]:.1f} ms "
          f"({100 * metric[1] / fwd[1]:.0f}% of it)")
    for name, dtype, (p20, p50, p80) in (("edgegen.eval.ssim", "float64", metric),
                                         ("beta-vae-forward", "float32", fwd)):
        rows.append(dict(op="ssim", provider=name, shape="64x3x64x64", dtype=dtype, mode="eval",
                         p20_ms=round(p20, 2), p50_ms=round(p50, 2), p80_ms=round(p80, 2), threads=threads,
                         kernel_path=KERNEL_PATH))


def bench_fid(rows, n_images, threads):
    from edgegen.eval.fid import FeatureExtractor, ProxyNet, image_statistics
    from edgegen.eval.frechet import GaussianStats
    from edgegen.eval.inception import FIDInceptionV3

    torch.manual_seed(0)
    images = torch.randint(0, 256, (n_images, 3, 64, 64), dtype=torch.uint8)
    batch = 50
    for label, net, dim, trunk in (("inception-v3 (random init)", FIDInceptionV3().eval(), 2048, "_trunk"),
                                   ("fid-proxy cnn", ProxyNet(10).eval(), 256, "features")):
        ext = FeatureExtractor(net, label, "FID-nonstandard" if dim == 2048 else "FID-proxy", dim)  # timing only
        bare_fn = getattr(net, trunk)
        with torch.no_grad():
            bare_fn(net.preprocess(images[:batch].float() / 255))  # warm-up
        bare = metric = 0.0
        total = GaussianStats(dim)
        for i in range(0, n_images, batch):
            chunk = images[i:i + batch]
            ready = net.preprocess(chunk.float() / 255)  # outside the bare timing: that is the metric's cost
            with torch.no_grad():
                t0 = time.perf_counter()
                bare_fn(ready)
                bare += time.perf_counter() - t0
            t0 = time.perf_counter()
            st, _ = image_statistics(chunk, ext, batch_size=batch)
            total.merge(st)
            metric += time.perf_counter() - t0
        per_k = 1000 / n_images
        overhead = (metric - bare) / bare
        print(f"FID features, {label}, {n_images} images 64x64 uint8 in batches of {batch}: bare forward "
              f"{bare * per_k:.1f} s per 1,000 images, image_statistics() {metric * per_k:.1f} s per 1,000 images, "
              f"overhead {100 * overhead:+.1f}% (target <= 10%)")
        for name, sec in (("bare-forward", bare), ("edgegen.eval.image_statistics", metric)):
            rows.append(dict(op=f"fid-features {label}", provider=name, shape=f"{n_images}x3x64x64 (per 1000: "
                             f"{sec * per_k * 1e3:.0f} ms)", dtype="float32",
                             mode=f"eval, one pass, batches of {batch}",
                             total_ms=round(sec * 1e3, 1), threads=threads, kernel_path=KERNEL_PATH))


def bench_prdc(rows, n, threads):
    import contextlib
    import io

    import numpy as np

    from edgegen.eval.manifold import manifold_metrics

    try:
        from prdc import compute_prdc
    except ImportError as exc:  # a benchmark peer (requirements-dev.txt)
        print(f"prdc: ERROR {exc}; pip install -r requirements-dev.txt torch==2.13.0")
        rows.append(dict(op="prdc", provider="prdc", error=str(exc)))
        return
    rng = np.random.default_rng(0)
    for dim in (2048, 256):
        real = rng.normal(size=(n, dim)).astype(np.float32)
        gen = (rng.normal(size=(n, dim)) * 1.1 + 0.05).astype(np.float32)
        ours = manifold_metrics(real, gen, k=5)
        with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the sample counts
            theirs = compute_prdc(real, gen, nearest_k=5)
        same = all(abs(getattr(ours, m) - float(theirs[m])) < 1e-9 for m in ("precision", "recall", "density",
                                                                            "coverage"))
        times = {}
        for name, fn in (("edgegen.eval.manifold_metrics", lambda: manifold_metrics(real, gen, k=5)),
                         ("prdc.compute_prdc", lambda: compute_prdc(real, gen, nearest_k=5))):
            with contextlib.redirect_stdout(io.StringIO()):
                times[name] = harness.time_ms(fn, repeats=harness.MIN_REPEATS)
        ratio = times["edgegen.eval.manifold_metrics"][1] / times["prdc.compute_prdc"][1]
        print(f"precision/recall/density/coverage, {n} x {n} samples of {dim} features, k = 5: edgegen "
              f"{times['edgegen.eval.manifold_metrics'][1]:.0f} ms (float64), prdc "
              f"{times['prdc.compute_prdc'][1]:.0f} ms (float32): {ratio:.2f}x prdc's time; same numbers: "
              f"{'yes' if same else 'NO'}")
        for name, dtype in (("edgegen.eval.manifold_metrics", "float64"), ("prdc.compute_prdc", "float32")):
            p20, p50, p80 = times[name]
            rows.append(dict(op="prdc", provider=name, shape=f"{n}x{n}x{dim}", dtype=dtype, mode="k=5",
                             p20_ms=round(p20, 1), p50_ms=round(p50, 1), p80_ms=round(p80, 1), threads=threads,
                             kernel_path=KERNEL_PATH, check="same" if same else "DIFFERENT"))


def token_count(text: str) -> int:
    """--max-tokens: 0 (the whole split) or at least 2 (one window scores a token given the one before)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value != 0 and value < 2:
        raise argparse.ArgumentTypeError(f"expected 0 (the whole split) or an integer >= 2, got {text!r}")
    return value


def arguments(ap):
    ap.add_argument("--max-tokens", type=token_count, default=None,
                    help=f"evaluate a prefix of the test split, >= 2 tokens (0: the whole split; default: 0, "
                         f"{QUICK_TOKENS} with --quick)")
    ap.add_argument("--only", choices=["perplexity", "ssim", "fid", "prdc"], default=None)
    ap.add_argument("--fid-images", type=harness.positive_int, default=None,
                    help=f"images for the FID feature benchmark, >= 1 (default: 1000, {QUICK_FID_IMAGES} with --quick)")


def main():
    args = harness.cli(__doc__, "eval.csv", quick_help=f"the first {QUICK_TOKENS} test tokens and {QUICK_FID_IMAGES} "
                       "FID images (unless --max-tokens / --fid-images say otherwise)", add_arguments=arguments,
                       out_aliases=("--csv",))
    max_tokens = args.max_tokens if args.max_tokens is not None else (QUICK_TOKENS if args.quick else 0)
    fid_images = args.fid_images or (QUICK_FID_IMAGES if args.quick else 1000)
    torch.set_num_threads(args.threads)
    machine, versions = harness.header(args.threads)
    print(f"# kernel path: {KERNEL_PATH}; CPU flags: {harness.cpu_flags()}")
    rows = []
    common = dict(machine=machine, versions=versions, threads=args.threads)
    if args.only in (None, "perplexity"):
        try:
            bench_perplexity(rows, max_tokens, args.threads)
        except (FileNotFoundError, NotADirectoryError) as exc:  # no staged WikiText-2 / GPT-2 tokenizer
            print(f"perplexity: ERROR {exc} (the data root: $EDGEGEN_DATA_DIR, else ../shared/data)")
            rows.append(dict(op="perplexity", provider="edgegen.eval.perplexity", error=str(exc)))
        harness.save(rows, args.out, final=False, **common)
    if args.only in (None, "ssim"):
        bench_ssim(rows, args.threads)
        harness.save(rows, args.out, final=False, **common)
    if args.only in (None, "fid"):
        bench_fid(rows, fid_images, args.threads)
        harness.save(rows, args.out, final=False, **common)
    if args.only in (None, "prdc"):
        bench_prdc(rows, QUICK_PRDC if args.quick else 2000, args.threads)
    harness.save(rows, args.out, lead="", **common)


if __name__ == "__main__":
    main()
