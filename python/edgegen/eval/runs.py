"""Trained runs as models, evaluated and compared: ``load_run`` turns a run folder (or one of its
checkpoints) into the model a user would ship, ``evaluate_run`` measures its quality and
efficiency with the instruments of ``edgegen.eval``, ``compare_runs`` puts several runs in one
table.

A run folder is what ``edgegen train``/``compress``/``sweep`` write: ``checkpoints/{last,best}.pt``
(config, module states with pruning masks), and the shipped artifacts beside them:
``model-ptq.safetensors`` / ``model-int8.safetensors`` (quantized, ``save_quantized``),
``model-shrunk.safetensors`` (a channel/head-pruned model physically shrunk: its tensors, the
architecture being what ``shrink`` makes of the checkpoint), ``model-sparse.safetensors``
(unstructured sparsity, ``save_sparse``). Nothing in a run folder is unpickled.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgegen import _atomic as atomic
from edgegen.train.compression import SHRUNK_FILE as SHRUNK_ARTIFACT
__all__ = ["LoadedRun", "load_run", "EvalOptions", "evaluate_run", "check_options", "compare_runs", "save_eval",
           "eval_file", "MAIN_MODULE", "QUANTIZED_ARTIFACTS"]

MAIN_MODULE = {"gan": "generator", "vae": "model", "lm": "model", "distill": "model"}
QUANTIZED_ARTIFACTS = ("model-int8.safetensors", "model-ptq.safetensors")
# What wrote each quantized artifact: QAT converted at the end of training, or post-training quantization.
ARTIFACT_ORIGIN = {"model-int8.safetensors": "qat", "model-ptq.safetensors": "ptq"}
PICKLED_SHIPPED = "model-shipped.pt"  # earlier versions of compress --from; not loaded
KIND_METRICS = {"dcgan": ("fid",), "vae": ("vae", "fid"), "gpt2": ("ppl", "text")}
ALL_METRICS = ("fid", "kid", "prdc", "vae", "ssim", "ppl", "bleu", "text")
MANIFOLD_K = 5  # neighbours of precision / recall / density / coverage (Naeem et al.)


@dataclass
class LoadedRun:
    """``model``: the run's main model in eval mode, in the ``form`` asked for; ``config``: its
    ExperimentConfig; ``form``: what the model is (float, pruned, shrunk, int8 ...); ``source``: the
    files it was built from; ``requested``: the form asked for ("shipped" or "float")."""

    model: nn.Module
    config: object
    run_dir: Path
    checkpoint: Path
    form: str
    source: list[str] = field(default_factory=list)
    requested: str = "shipped"

    @property
    def eval_id(self) -> str:
        """The evaluation's key in the run folder and in MLflow: checkpoint and requested form
        ("last-shipped", "last-float", "best-float"), so evaluations of one run never overwrite
        each other."""
        return _slug(f"{self.checkpoint.stem}-{self.requested}")

    @property
    def kind(self) -> str:
        return self.config.model.kind

    @property
    def name(self) -> str:
        return self.config.name


def _resolve(path, which: str) -> tuple[Path, Path]:
    p = Path(path).expanduser()
    if p.is_dir():
        ck = p / "checkpoints" / f"{which}.pt"
        if not ck.is_file():
            found = sorted(x.name for x in (p / "checkpoints").glob("*.pt")) if (p / "checkpoints").is_dir() else []
            raise FileNotFoundError(f"run_dir: {p} has no checkpoints/{which}.pt (found {found or 'no checkpoints'}); "
                                    "expected a folder written by edgegen train/compress")
        return p, ck
    if p.is_file():
        run = p.parent.parent if p.parent.name == "checkpoints" else p.parent
        return run, p
    raise FileNotFoundError(f"run_dir: {p} does not exist")


def _build_float(cfg, state: dict) -> nn.Module:
    from edgegen.prune.masks import load_pruned_state_dict

    mc = cfg.model
    if mc.kind == "dcgan":
        model = mc.build()[0]
    elif mc.kind == "vae":
        model = mc.build()
    else:
        from dataclasses import replace

        try:
            model = replace(mc, init_from=None).build()
            load_pruned_state_dict(model, state)
            return model
        except (RuntimeError, KeyError, ValueError):
            if not mc.init_from:
                raise
            from edgegen.train.checkpoint import load_gpt2

            model = load_gpt2(mc)  # the architecture is the init checkpoint's
    if cfg.compress is not None and cfg.compress.qat:
        from edgegen.quant import prepare_qat_

        prepare_qat_(model)
    load_pruned_state_dict(model, state)
    return model


def load_run(path, which: str = "last", form: str = "shipped", device: str | torch.device = "cpu") -> LoadedRun:
    """The trained model of a run folder (or a checkpoint file inside one).

    ``which``: "last" or "best" checkpoint. ``form``: "shipped" (the run's quantized artifact if it
    has one; else a pruned model with its masks baked in and, for channel/head pruning, physically
    shrunk; else the float model) or "float" (the trained weights before quantization, masks baked
    in). The model is returned in eval mode on ``device``. Everything is read as tensors and plain
    data (nothing in the folder is unpickled): the architecture comes from the checkpoint's config
    (shrunk by ``shrink`` where channel/head pruning shrinks it, deterministically), the shipped
    tensors from the artifact.
    """
    from edgegen.train import checkpoint as ckpt

    if which not in ("last", "best"):
        raise ValueError(f"which: expected 'last' or 'best', got {which!r}")
    if form not in ("shipped", "float"):
        raise ValueError(f"form: expected 'shipped' or 'float', got {form!r}")
    run_dir, ck = _resolve(path, which)
    snap = ckpt.load(ck)
    if not isinstance(snap, dict) or "config" not in snap or "modules" not in snap:
        raise ValueError(f"run_dir: {ck} is not an edgegen run checkpoint (no config/modules)")
    cfg = ckpt.experiment_config(snap)
    key = MAIN_MODULE[cfg.task]
    state = snap["modules"].get(key)
    if state is None:
        raise ValueError(f"run_dir: {ck} holds no '{key}' module")
    sources = [str(ck)]
    posthoc = "posthoc_tag" in snap  # written by compress --from: the state is pruned and baked, not masked
    artifacts = [a for a in (*QUANTIZED_ARTIFACTS, SHRUNK_ARTIFACT) if (run_dir / a).is_file()]
    # On the checkpoint actually resolved: a path to checkpoints/best.pt must not get around it.
    from_last = ck.resolve() == (run_dir / "checkpoints" / "last.pt").resolve()
    if form == "shipped" and artifacts and not from_last:
        arg = "which" if Path(path).expanduser().is_dir() else "path"
        raise ValueError(f"{arg}: the shipped artifacts of {run_dir} ({', '.join(artifacts)}) were made from the last "
                         f"checkpoint (checkpoints/last.pt), not from {ck.name}; use which='last', or form='float' "
                         f"for the float weights of {ck.name}")
    posthoc_form = "compressed after training: " + str(snap.get("posthoc_tag"))
    # Its quantized model (unlike a pruned one, which the checkpoint rebuilds) is in that file alone.
    if form == "shipped" and posthoc and not artifacts and (run_dir / PICKLED_SHIPPED).is_file() and \
            cfg.compress.ptq is not None:
        raise ValueError(f"run_dir: {run_dir} holds its compressed model only as {PICKLED_SHIPPED}, a pickle written "
                         "by an earlier edgegen, which is not loaded (unpickling runs code from the file); compress "
                         f"the source run again (edgegen compress --from {snap.get('source')}), or use form='float'")
    if form == "shipped":
        for art in QUANTIZED_ARTIFACTS:
            if (run_dir / art).is_file():
                from edgegen.quant import load_quantized

                what = posthoc_form if posthoc else f"{quantized_form(run_dir / art)} ({ARTIFACT_ORIGIN[art]})"
                # compress --from quantizes the shrunk model; training quantizes the full architecture.
                base = _shrunk(_build_float(cfg, state)) if posthoc and _structured(cfg) else _plain_float(cfg, state)
                model = load_quantized(base, run_dir / art)
                return LoadedRun(model.to(device).eval(), cfg, run_dir, ck, what, sources + [str(run_dir / art)], form)
    model = _build_float(cfg, state)
    from edgegen.prune.masks import finalize_

    pruned = any(torch.nn.utils.parametrize.is_parametrized(m) for m in model.modules())
    finalize_(model)
    from edgegen.quant import QATModule

    if any(isinstance(m, QATModule) for m in model.modules()):
        form_name = "float (QAT-trained, fake quantization kept)"
    else:
        form_name = "float, pruned (masks baked in)" if pruned else "float"
    if (pruned or posthoc) and form == "shipped" and _structured(cfg):
        model = _shrunk(model)
        form_name = "pruned, shrunk"
        if (run_dir / SHRUNK_ARTIFACT).is_file():
            _load_tensors(model, run_dir / SHRUNK_ARTIFACT)
            sources.append(str(run_dir / SHRUNK_ARTIFACT))
    if posthoc and form == "shipped":
        form_name = posthoc_form
    return LoadedRun(model.to(device).eval(), cfg, run_dir, ck, form_name, sources, form)


def _shrunk(model: nn.Module) -> nn.Module:
    """The physically smaller model a pruned float model (masks or baked zeros) ships as: what
    training and compress --from wrote, rebuilt (``shrink`` removes the same channels and heads)."""
    from edgegen.prune import shrink
    from edgegen.prune.masks import finalize_

    model = finalize_(model).eval()
    return shrink(model, model.example_inputs(1))


def _load_tensors(model: nn.Module, path: Path) -> None:
    """The tensors of a shipped safetensors file into ``model``, whose architecture was rebuilt
    from the checkpoint: names and shapes must match exactly (a file from another run is refused)."""
    from edgegen.tensor_files import read_safetensors

    state, _ = read_safetensors(path)
    want = model.state_dict()
    wrong = sorted(set(want) ^ set(state)) or sorted(k for k in want if tuple(want[k].shape) != tuple(state[k].shape))
    if wrong:
        raise ValueError(f"{path}: does not match the model the run's checkpoint shrinks to (first differing tensors: "
                         f"{', '.join(wrong[:3])}); the file and the checkpoint come from different runs?")
    model.load_state_dict(state)


_LOW_PRECISION_NAMES = {"float16": "fp16", "bfloat16": "bf16"}


def quantized_form(path) -> str:
    """What a ``save_quantized`` file holds, from its layout (``edgegen_quant_layout``): "int8",
    "int4 weight-only", "int4 W4A8" (4-bit weights, 8-bit activations), "fp16", "bf16", or
    several joined by " + " for a mixed-precision model."""
    from edgegen.tensor_files import read_safetensors_metadata

    meta = read_safetensors_metadata(path)
    if "edgegen_quant_layout" not in meta:
        raise ValueError(f"{path}: was not written by edgegen.quant.save_quantized (no edgegen_quant_layout)")
    try:
        layout = json.loads(meta["edgegen_quant_layout"])
        specs = list(layout.values())
    except (ValueError, AttributeError) as exc:
        raise ValueError(f"{path}: edgegen_quant_layout is not a JSON object of layer specs ({exc})") from None
    names = []
    for spec in specs:
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind in ("Int8Linear", "Int8Conv2d", "Int8ConvTranspose2d", "Int8Embedding"):
            name = "int8"
        elif kind == "Int4Linear":
            name = "int4 W4A8" if spec.get("activations") == "int8" else "int4 weight-only"
        elif kind == "Int4Embedding":
            name = "int4 weight-only"
        elif kind == "LowPrecision":
            name = _LOW_PRECISION_NAMES.get(str(spec.get("dtype")), str(spec.get("dtype")))
        else:
            raise ValueError(f"{path}: unknown layer type {kind!r} in edgegen_quant_layout")
        if name not in names:
            names.append(name)
    return " + ".join(names) if names else "float (no layer quantized)"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "run"


def _plain_float(cfg, state: dict) -> nn.Module:
    """A fresh float model of the run's architecture (the quantized artifact brings the weights)."""
    from dataclasses import replace

    mc = cfg.model
    if mc.kind == "dcgan":
        return mc.build()[0]
    if mc.kind == "vae":
        return mc.build()
    try:
        return replace(mc, init_from=None).build()
    except (RuntimeError, ValueError):
        return _build_float(cfg, state)


def _structured(cfg) -> bool:
    cc = cfg.compress
    return bool(cc and cc.prune and cc.prune.shrinks)


# ------------------------------------------------------------------------------------ evaluation
@dataclass
class EvalOptions:
    """What ``evaluate_run`` measures and how much of it.

    ``metrics``: names from fid, kid, prdc (precision, recall, density, coverage on the FID
    features), vae (ELBO terms + SSIM/PSNR of reconstructions), ssim (alias of vae), ppl, bleu,
    text (distinct-n, repetition); empty: the defaults for the model kind.
    ``samples``: generated images for FID (and real images, capped by the held-out split).
    ``fid_extractor``: auto / inception / proxy. ``max_tokens``: perplexity on a labelled prefix.
    ``profile``: efficiency record (+ generation latency for GPT-2); ``device_profiles``: edge
    projections of that record; ``onnx``: the model exported to ONNX (float, and INT8 by ONNX
    Runtime's dynamic quantizer), checked against PyTorch and timed in ONNX Runtime beside
    edgegen's own latency."""

    metrics: tuple = ()
    samples: int = 1000
    batch_size: int = 50
    fid_extractor: str = "auto"
    proxy_epochs: int = 20
    max_tokens: int | None = None
    context: int | None = None
    stride: int | None = None
    text_prompts: int = 8
    text_new_tokens: int = 32
    profile: bool = False
    profile_repeats: int = 10
    profile_min_time_s: float = 1.0
    device_profiles: tuple = ()
    onnx: bool = False
    seed: int = 0
    data_root: str | None = None
    progress: bool = False


def _data_root(cfg, opts: EvalOptions):
    """Where the evaluation reads data: an explicit ``data_root`` (--data-root), else
    $EDGEGEN_DATA_DIR if set, else the root the run recorded (None: the readers' default). Data
    moves between machines; a root given now is meant over the one written at training time."""
    from edgegen.data.root import ENV_VAR

    return opts.data_root or os.environ.get(ENV_VAR) or (cfg.data.root if cfg is not None else None)


def _real_images(cfg, opts: EvalOptions) -> tuple[torch.Tensor, str]:
    """Held-out real images [N, 3, 64, 64] uint8 and what they are."""
    name = cfg.data.name
    root = _data_root(cfg, opts)
    if name == "cifar10":
        from edgegen.data.cifar import CIFAR10

        imgs = CIFAR10(root, "test", image_size=64).images
        what = "CIFAR-10 test split"
    elif name == "celeba":
        from edgegen.data.celeba import CelebA

        imgs = CelebA(root, "test", image_size=64).images
        what = "CelebA test split"
    elif name == "synthetic-images":
        from edgegen.train.data import SyntheticImages

        x = SyntheticImages(cfg.data.synthetic_size, seed=1234).images[:opts.samples]  # the training distribution
        return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8), f"{len(x)} images of the synthetic set"
    else:
        raise ValueError(f"metrics: FID needs an image dataset, the run trained on {name!r}")
    n = min(opts.samples, len(imgs))
    return torch.from_numpy(np.array(imgs[:n])), f"{what}, first {n} images"


def _fid_metrics(run: LoadedRun, opts: EvalOptions, with_kid: bool, with_manifold: bool, out: dict,
                 labels: dict) -> None:
    from edgegen.eval.fid import fid, get_extractor
    from edgegen.eval.samples import generate_images

    proxy_ds = "celeba" if run.config.data.name == "celeba" else "cifar10"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the label carries the same message
        ext = get_extractor(opts.fid_extractor, proxy_dataset=proxy_ds, root=_data_root(run.config, opts),
                            epochs=opts.proxy_epochs)
    real, what = _real_images(run.config, opts)
    n_real = len(real)
    if n_real < 2:  # --samples >= 2 is checked up front: this is the data's own size
        raise ValueError(f"metrics: the held-out split has {n_real} images; FID needs at least 2")
    if with_manifold and n_real <= MANIFOLD_K:
        raise ValueError(f"metrics: the held-out split has {n_real} images; prdc needs more than {MANIFOLD_K}")
    if not (with_kid or with_manifold) and run.config.data.name in ("cifar10", "celeba"):
        from edgegen.eval.fid import real_statistics

        # The same images, their statistics cached per extractor and data (a digest of the images).
        real = real_statistics(run.config.data.name, ext, split="test", limit=n_real,
                               root=_data_root(run.config, opts))
    res = fid(generate_images(run.model, run.kind, opts.samples, opts.batch_size, opts.seed), real, ext,
              batch_size=opts.batch_size, value_range=(-1, 1), kid=with_kid,
              kid_subset_size=_kid_subset(opts.samples, n_real), seed=opts.seed, manifold=with_manifold,
              manifold_k=MANIFOLD_K)
    out.update(res.as_metrics())
    labels[res.key] = f"{res.label}; {res.n_generated} generated vs {what}" + (
        "" if res.reliable else f"; UNRELIABLE: {res.unreliable_reason}")
    if with_manifold:
        labels["prdc"] = (f"precision, recall, density, coverage (Naeem et al. 2020; k = {MANIFOLD_K}) on the "
                          f"{res.metric} network's features, {res.n_generated} generated vs {what}; biased at "
                          "small sample counts, comparable only at equal counts")


def _kid_subset(n_generated: int, n_real: int) -> int:
    """KID's subset size: 1,000 as usual, but at most half the smaller side, so the subsets differ
    and their spread means something (subsets of every sample would all give the same value)."""
    return max(2, min(1000, min(n_generated, n_real) // 2))


def _vae_metrics(run: LoadedRun, opts: EvalOptions, out: dict, labels: dict) -> None:
    from edgegen.eval.vae import vae_metrics

    real, what = _real_images(run.config, opts)
    x = real.float() / 127.5 - 1.0
    m = vae_metrics(run.model, [x[i:i + opts.batch_size] for i in range(0, len(x), opts.batch_size)], seed=opts.seed)
    n = int(m.pop("images"))
    out.update({"vae_" + k: v for k, v in m.items()})
    labels["vae"] = f"{n} held-out images ({what}); ELBO terms with one posterior sample per image (seed {opts.seed})"


def gpt2_tokenizer(root=None):
    """GPT-2's tokenizer from ``<data root>/gpt2``. Never downloads: missing files are a
    FileNotFoundError naming the folder and the call that fetches them."""
    from edgegen.data.root import data_root
    from edgegen.data.tokenizer import GPT2Tokenizer

    try:
        return GPT2Tokenizer.from_dir(data_root(root) / "gpt2")
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{exc}; fetch them with edgegen.data.download_gpt2_tokenizer({str(data_root(root))!r}) "
                                "(edgegen's evaluation and sampling never download)") from None


def _lm_tokens(opts: EvalOptions, cfg=None) -> tuple:
    """WikiText-2 raw test as GPT-2 token ids, the tokenizer, and the ``WikiText2`` read (its
    ``official`` says whether the file is the published one). Never downloads: a missing
    folder is a FileNotFoundError naming it and how to get it."""
    from edgegen.data.wikitext import WikiText2

    root = _data_root(cfg, opts)
    text = WikiText2(root, "test")  # its error names the folder expected and the archive to unpack there
    tok = gpt2_tokenizer(root)
    ids = text.tokens(tok)
    return torch.from_numpy(np.array(ids, dtype=np.int64)), tok, text


def _wikitext_name(text) -> tuple[str, str]:
    """The metric-name suffix and the description of the evaluation text: "" and "WikiText-2 raw
    test" for the official file; otherwise "_nonstandard" and a description naming the file and
    its SHA-256 (as FID-nonstandard names non-standard Inception weights)."""
    if text.official:
        return "", "WikiText-2 raw test"
    from edgegen.data.wikitext import SHA256

    return "_nonstandard", (f"WikiText-2-nonstandard ({text.path}, sha256 {text.sha256[:16]}..., not the official "
                            f"test split {SHA256['test'][:16]}...; not comparable with published perplexities)")


def _ppl_metrics(run: LoadedRun, opts: EvalOptions, tokens, text, out: dict, labels: dict) -> None:
    from edgegen.eval.text import perplexity

    n_pos = run.model.config.n_positions
    context = opts.context or n_pos
    stride = opts.stride or max(1, context // 2)
    res = perplexity(run.model, tokens, context=context, stride=stride, max_tokens=opts.max_tokens,
                     progress=opts.progress)
    suffix, what = _wikitext_name(text)
    key = ("wikitext2_ppl" if res.label == "full" else "wikitext2_ppl_prefix") + suffix
    out[key] = res.perplexity
    out[key + "_tokens"] = float(res.tokens_scored)
    labels[key] = (f"{what}, sliding window context {context} stride {stride}, "
                   f"{res.tokens_scored} tokens scored ({res.label})")


def _text_metrics(run: LoadedRun, opts: EvalOptions, tokens, tok, text, want_bleu: bool, out: dict,
                  labels: dict) -> None:
    from edgegen.eval.text import bleu, distinct_n, repetition_rate

    prompt_len, new = 32, opts.text_new_tokens
    span = prompt_len + new
    starts = np.linspace(0, max(0, len(tokens) - span - 1), opts.text_prompts).astype(int)
    g = torch.Generator().manual_seed(opts.seed)
    hyps, refs, samples = [], [], []
    for s in starts:
        prompt = tokens[s:s + prompt_len].unsqueeze(0)
        with torch.no_grad():
            outp = run.model.generate(prompt, new, temperature=1.0, top_k=50, generator=g)
        cont = outp[0, prompt_len:].tolist()
        samples.append(cont)
        hyps.append(tok.decode(cont))
        refs.append(tok.decode(tokens[s + prompt_len:s + span].tolist()))
    out["distinct_2"] = distinct_n(samples, 2)
    out["repetition_rate_4"] = repetition_rate(samples, 4)
    note = "" if text.official else f" of {_wikitext_name(text)[1]}"
    labels["text"] = (f"{len(samples)} continuations of {new} tokens (top-k 50, T=1, seed {opts.seed}) from "
                      f"{prompt_len}-token WikiText-2 test prompts{note}")
    if want_bleu:
        out["bleu"] = bleu(hyps, refs)
        labels["bleu"] = f"sacreBLEU of the sampled continuations against the true WikiText-2 continuations{note}"


def _wanted(run: LoadedRun, metrics) -> list[str]:
    names = [m.strip() for m in (metrics or ()) if m.strip()] or list(KIND_METRICS[run.kind])
    bad = [m for m in names if m not in ALL_METRICS]
    if bad:
        raise ValueError(f"metrics: unknown {bad}; expected names from {ALL_METRICS}")
    image = {"fid", "kid", "prdc", "vae", "ssim"}
    if run.kind == "gpt2" and image & set(names):
        raise ValueError(f"metrics: {sorted(image & set(names))} are image metrics; {run.name} is a GPT-2 run")
    if run.kind != "gpt2" and {"ppl", "bleu", "text"} & set(names):
        raise ValueError(f"metrics: {sorted({'ppl', 'bleu', 'text'} & set(names))} are text metrics; {run.name} is "
                         f"a {run.kind} run")
    if run.kind == "dcgan" and ({"vae", "ssim"} & set(names)):
        raise ValueError("metrics: vae/ssim measure reconstructions; a DCGAN has no encoder")
    return names


def _example_inputs(run: LoadedRun, batch: int = 1):
    if run.kind == "gpt2":
        n = min(128, run.model.config.n_positions)
        return (torch.randint(0, run.model.config.vocab_size, (batch, n), generator=torch.Generator().manual_seed(0)),)
    if run.kind == "dcgan":
        return (torch.randn(batch, run.model.config.nz, generator=torch.Generator().manual_seed(0)),)
    return (torch.rand(batch, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1,)


def _int_at_least(opts: EvalOptions, name: str, low: int, why: str = "") -> None:
    """``why``: the command-line flag and the reason, when there are any."""
    v = getattr(opts, name)
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"{name}: expected an int >= {low}{f' ({why})' if why else ''}, got {v!r}")


def run_config(path, which: str = "last"):
    """The ExperimentConfig of the run at ``path`` (a run folder or checkpoint), without building
    its model: what :func:`check_options` needs to check options against many runs up front."""
    from edgegen.train import checkpoint as ckpt

    return ckpt.experiment_config(ckpt.load(_resolve(path, which)[1]))


def check_options(run, options: EvalOptions | None = None) -> list[str]:
    """Check every option against the run (a :class:`LoadedRun`, or a run's ExperimentConfig from
    :func:`run_config`) before anything is measured; returns the metric names to compute. Each
    error names the option (and its command-line flag)."""
    if not isinstance(run, LoadedRun):  # a config: what the checks read of a run is its kind and name
        from types import SimpleNamespace

        run = SimpleNamespace(kind=run.model.kind, name=run.name)
    opts = options or EvalOptions()
    if not isinstance(opts, EvalOptions):
        raise TypeError(f"options: expected an EvalOptions, got {type(opts).__name__}")
    names = _wanted(run, opts.metrics)
    images = {"fid", "kid", "prdc"} & set(names)
    if "prdc" in names:
        _int_at_least(opts, "samples", MANIFOLD_K + 1,
                      f"--samples; prdc's balls need more than k = {MANIFOLD_K} generated images")
    _int_at_least(opts, "samples", 2 if images else 1,
                  "--samples; FID/KID compare two sets of at least 2 images" if images else "--samples")
    for name in ("batch_size", "proxy_epochs", "text_prompts", "text_new_tokens", "profile_repeats"):
        _int_at_least(opts, name, 1)
    if opts.fid_extractor not in ("auto", "inception", "proxy"):
        raise ValueError(f"fid_extractor: expected 'auto', 'inception' or 'proxy' (--fid-extractor), got "
                         f"{opts.fid_extractor!r}")
    if opts.max_tokens is not None:
        _int_at_least(opts, "max_tokens", 2, "--max-tokens; a perplexity needs at least one predicted token")
    for name in ("context", "stride"):
        if getattr(opts, name) is not None:
            _int_at_least(opts, name, 1)
    t = opts.profile_min_time_s
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not t >= 0:
        raise ValueError(f"profile_min_time_s: expected a number >= 0, got {t!r}")
    if isinstance(opts.device_profiles, str):
        raise TypeError("device_profiles: expected a tuple of device keys, got a string")
    if opts.device_profiles:
        from edgegen.eval.edge import device_profiles

        known = sorted(device_profiles())
        bad = [d for d in opts.device_profiles if d not in known]
        if bad:
            raise ValueError(f"device_profiles: unknown device {bad[0]!r} (--device-profile); expected some of {known}")
    if opts.onnx:
        from edgegen.export.onnx import _require_ort

        _require_ort()  # ImportError naming the export extra, before hours of metrics
    return names


def evaluate_run(run: LoadedRun | str | os.PathLike, options: EvalOptions | None = None) -> dict:
    """Quality (and, with ``options.profile``, efficiency) of one run: a dict with ``run``,
    ``name``, ``kind``, ``form``, ``eval_id`` (checkpoint and requested form: "last-shipped",
    "last-float", ...), ``metrics`` (flat numbers, units and labels in the names: fid,
    fid_nonstandard or fid_proxy, wikitext2_ppl or wikitext2_ppl_prefix (``_nonstandard`` added where
    the test file is not the official one), *_ms, *_bytes, energy_j or
    energy_j_estimated, *_projected), ``labels`` (what each number is) and ``seconds``. Every
    option is checked (:func:`check_options`) before the first metric. With ``options.onnx``, an
    export that fails is recorded in ``labels["onnx"]`` with its reason, and the other metrics
    are kept."""
    opts = options or EvalOptions()
    if not isinstance(run, LoadedRun):
        run = load_run(run)
    names = check_options(run, opts)
    t0 = time.perf_counter()
    metrics: dict[str, float] = {}
    labels: dict[str, str] = {}
    if {"fid", "kid", "prdc"} & set(names):
        _fid_metrics(run, opts, "kid" in names, "prdc" in names, metrics, labels)
    if "vae" in names or "ssim" in names:
        _vae_metrics(run, opts, metrics, labels)
    if {"ppl", "bleu", "text"} & set(names):
        tokens, tok, text = _lm_tokens(opts, run.config)
        if "ppl" in names:
            _ppl_metrics(run, opts, tokens, text, metrics, labels)
        if "bleu" in names or "text" in names:
            _text_metrics(run, opts, tokens, tok, text, "bleu" in names, metrics, labels)
    if opts.profile or opts.device_profiles:
        _profile(run, opts, metrics, labels)
    if opts.onnx:
        try:
            _onnx_metrics(run, opts, metrics, labels)
        except Exception as exc:  # noqa: BLE001 - an optional add-on must not lose the metrics measured before it
            reason = f"{type(exc).__name__}: {exc}"
            labels["onnx"] = f"ONNX unavailable for this run: {reason}"
            warnings.warn(f"evaluate_run: no ONNX metrics for {run.run_dir} ({reason}); the other metrics are kept",
                          RuntimeWarning, stacklevel=2)
    return {"run": str(run.run_dir), "name": run.name, "kind": run.kind, "form": run.form,
            "eval_id": run.eval_id, "checkpoint": str(run.checkpoint), "metrics": metrics, "labels": labels,
            "seconds": round(time.perf_counter() - t0, 2)}


def _onnx_source(run: LoadedRun) -> tuple[nn.Module, str]:
    """The model to export and what it is. edgegen's integer layers and QAT's fake quantization
    have no ONNX form, bf16 layers none that ONNX Runtime's CPU provider runs, and ONNX Runtime
    quantizes the float model itself: such runs export their float weights, QAT wrappers removed."""
    from edgegen.quant import INTEGER_LAYERS, LowPrecision, QATModule

    found = {type(m).__name__ for m in run.model.modules() if isinstance(m, (*INTEGER_LAYERS, LowPrecision, QATModule))}
    if not found:
        return run.model, f"the {run.form} model"
    model = load_run(run.checkpoint, form="float").model
    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, QATModule)]
    for name, m in targets:  # the trained float weights, without fake quantization
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, m.module)
    why = f"its {', '.join(sorted(found))} layers are edgegen's own, ONNX Runtime quantizes the float model itself" + (
        "; QAT's fake quantization removed" if targets else "")
    return model.eval(), f"the run's float weights ({why}; the other metrics measure the {run.form} model)"


def _profile(run: LoadedRun, opts: EvalOptions, metrics: dict, labels: dict) -> None:
    from edgegen.eval.edge import project
    from edgegen.eval.profile import profile, profile_generation

    rec = profile(run.model, _example_inputs(run), repeats=opts.profile_repeats, min_time_s=opts.profile_min_time_s)
    d = rec.as_dict()
    keep = ("params", "nonzero_params", "flops", "macs", "bytes_on_disk", "peak_memory_bytes", "latency_ms_p50",
            "latency_ms_p90", "throughput_per_s", "energy_j", "energy_j_estimated")
    metrics.update({k: float(d[k]) for k in keep if k in d and d[k] is not None})
    metrics["sparsity"] = 1.0 - rec.nonzero_params / max(rec.params, 1)
    labels["profile"] = (f"batch {rec.batch_size}, {rec.threads} threads, >= {opts.profile_repeats} calls over >= "
                         f"{opts.profile_min_time_s:g} s; disk "
                         f"format {rec.disk_format}; memory: {rec.peak_memory_method}; energy: {rec.energy_method}")
    if run.kind == "gpt2":
        n = run.model.config.n_positions
        gp = profile_generation(run.model, prompt_tokens=min(64, n // 2), new_tokens=min(16, n // 4), repeats=2)
        metrics["prefill_ms_p50"] = gp.prefill_ms_p50
        metrics["decode_ms_per_token_p50"] = gp.decode_ms_per_token_p50
        metrics["decode_tokens_per_s"] = gp.decode_tokens_per_s
    for dev in opts.device_profiles:
        p = project(rec, dev)
        metrics.update({f"{dev}_latency_ms_projected": p.latency_ms_projected,
                        f"{dev}_energy_j_projected": p.energy_j_projected})
        labels[f"{dev}_projected"] = p.label


def _onnx_metrics(run: LoadedRun, opts: EvalOptions, metrics: dict, labels: dict) -> None:
    import tempfile

    from edgegen.export import export_onnx, onnx_latency, onnx_target, quantize_onnx, quantized_weights

    model, source = _onnx_source(run)
    _, inputs, _, _ = onnx_target(model, batch=1)
    with tempfile.TemporaryDirectory() as d:
        fp32 = export_onnx(model, path=Path(d) / "model.onnx")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            int8_bytes = quantize_onnx(fp32.path, Path(d) / "model-int8.onnx", mode="dynamic")
        n_q, n_w = quantized_weights(fp32.path, Path(d) / "model-int8.onnx")
        lat32 = onnx_latency(fp32.path, inputs, repeats=max(opts.profile_repeats, 5))
        lat8 = onnx_latency(Path(d) / "model-int8.onnx", inputs, repeats=max(opts.profile_repeats, 5))
    metrics.update({"onnx_fp32_bytes": float(fp32.bytes), "onnx_max_abs_diff": fp32.max_abs_diff,
                    "onnxruntime_fp32_latency_ms_p50": lat32["latency_ms_p50"],
                    "onnx_int8_dynamic_bytes": float(int8_bytes),
                    "onnxruntime_int8_dynamic_latency_ms_p50": lat8["latency_ms_p50"]})
    note = "; ONNX Runtime's dynamic quantizer left it float" if caught else ""
    metrics["onnx_int8_quantized_weight_fraction"] = n_q / max(n_w, 1)
    labels["onnx"] = (f"ONNX (opset {fp32.opset}) of {source}, batch 1, {lat32['threads']} threads, ONNX Runtime "
                      f"CPU; INT8 by ONNX Runtime's dynamic quantizer: {n_q} of {n_w} weight tensors in 8 bits"
                      f"{note}")


# ------------------------------------------------------------------------------------ comparison
COLUMNS = ("fid", "fid_nonstandard", "fid_proxy", "kid", "kid_nonstandard", "kid_proxy",
           *(f"{m}{s}" for m in ("precision", "recall", "coverage") for s in ("", "_nonstandard", "_proxy")),
           "vae_recon_ssim",
           "vae_recon_psnr_db", "vae_neg_elbo", "wikitext2_ppl", "wikitext2_ppl_prefix", "wikitext2_ppl_nonstandard",
           "wikitext2_ppl_prefix_nonstandard", "bleu", "distinct_2",
           "bytes_on_disk", "params", "sparsity", "flops", "latency_ms_p50", "peak_memory_bytes", "energy_j",
           "energy_j_estimated", "decode_ms_per_token_p50", "onnxruntime_fp32_latency_ms_p50",
           "onnxruntime_int8_dynamic_latency_ms_p50")


def fmt_number(v) -> str:
    """A table cell: "-" for missing/NaN, scientific for very large or small magnitudes, 4
    significant digits otherwise (integers as they are). Shared by compare_runs and REPORT.md."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if not isinstance(v, float):
        return str(v)
    a = abs(v)
    if a != 0 and (a >= 1e5 or a < 1e-3):
        return f"{v:.3e}"
    return f"{v:.4g}"


def compare_runs(results: list[dict], out_dir: str | os.PathLike | None = None) -> dict:
    """One row per evaluated run (``evaluate_run`` results): Markdown and CSV tables of quality,
    size, parameters, sparsity, FLOPs, latency, memory and energy (columns present in any row), and,
    with ``out_dir``, ``compare.md``, ``compare.csv`` and ``compare.png`` (quality against latency)
    written there. Returns {"markdown", "csv", "columns", "paths"}.

    Rows are keyed by run folder (several runs of one config, seeds or compressed variants, stay
    apart): ``run`` is the shortest trailing part of the folder path that tells the rows apart
    (with the form added where one folder is evaluated in two forms), beside ``config`` (the
    config's name), ``kind``, ``preset`` (where a result records one) and ``form``. Labels that
    differ between rows are listed per row. Rows of different model kinds or presets get a note
    (and a RuntimeWarning): their numbers are not measurements of one model family at one scale."""
    import csv
    import io

    if not results:
        raise ValueError("results: expected at least one evaluated run")
    ids = _row_ids(results)
    cols = [c for c in COLUMNS if any(c in r["metrics"] for r in results)]
    with_preset = any(r.get("preset") for r in results)
    meta = ["run", "config", "kind"] + (["preset"] if with_preset else []) + ["form"]
    header = meta + cols
    rows = [[rid, r.get("name"), r.get("kind")] + ([r.get("preset")] if with_preset else []) + [r.get("form")]
            + [r["metrics"].get(c) for c in cols] for rid, r in zip(ids, results)]
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(fmt_number(v) for v in row) + " |" for row in rows]
    notes = []
    for what, key in (("model kinds", "kind"), ("presets", "preset")):
        values = sorted({str(r[key]) for r in results if r.get(key)})
        if len(values) > 1:
            text = (f"NOTE: these rows mix {what} ({', '.join(values)}): a number of one is not comparable with "
                    "the same number of another")
            notes.append(text)
            warnings.warn(f"compare_runs: {text}", RuntimeWarning, stacklevel=2)
    for k in sorted({k for r in results for k in r["labels"]}):
        texts = {rid: r["labels"][k] for rid, r in zip(ids, results) if k in r["labels"]}
        if len(set(texts.values())) == 1:
            notes.append(f"{k}: {next(iter(texts.values()))}")
        else:
            notes += [f"{k} ({rid}): {text}" for rid, text in texts.items()]
    markdown = "\n".join(md) + ("\n\n" + "\n".join(f"- {n}" for n in notes) if notes else "") + "\n"
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows([["" if v is None else v for v in row] for row in rows])
    paths = {}
    if out_dir is not None:
        from edgegen.train.loop import prepare_run_dir

        out = prepare_run_dir(out_dir, "out_dir")
        (out / "compare.md").write_text(markdown, encoding="utf-8")
        (out / "compare.csv").write_text(buf.getvalue(), encoding="utf-8")
        paths = {"markdown": str(out / "compare.md"), "csv": str(out / "compare.csv")}
        plot = _plot(results, ids, out / "compare.png")
        if plot:
            paths["plot"] = plot
    return {"markdown": markdown, "csv": buf.getvalue(), "columns": header, "paths": paths}


def _row_ids(results: list[dict]) -> list[str]:
    """A unique short name per row: the run folder's last path part, more parts where two folders
    end alike (runs/a/seed0, runs/b/seed0 -> a/seed0, b/seed0), the evaluation (checkpoint and
    form: last-shipped, best-float ...) added where one folder appears in two, a number where a row
    repeats another. Results without a folder (built
    by hand) are named by their config name."""
    paths = [Path(r["run"]).expanduser().resolve() if r.get("run") else None for r in results]
    depth = [1] * len(results)

    def name(i):
        if paths[i] is None:
            return str(results[i].get("name", f"row {i + 1}"))
        return "/".join(paths[i].parts[-depth[i]:])

    while True:
        groups: dict[str, set] = {}
        for i in range(len(results)):
            groups.setdefault(name(i), set()).add(paths[i])
        grow = [i for i in range(len(results)) if paths[i] is not None and len(groups[name(i)]) > 1
                and depth[i] < len(paths[i].parts)]
        if not grow:
            break
        for i in grow:
            depth[i] += 1
    base = [name(i) for i in range(len(results))]
    def which(i):  # checkpoint and form (last-shipped, best-float ...), else the form
        return results[i].get("eval_id") or results[i].get("form")

    ids = [f"{rid} [{which(i)}]"
           if len({which(j) for j, other in enumerate(base) if other == rid}) > 1 else rid
           for i, rid in enumerate(base)]
    seen: dict[str, int] = {}
    out = []
    for rid in ids:
        if ids.count(rid) > 1:
            seen[rid] = seen.get(rid, 0) + 1
            rid = f"{rid} #{seen[rid]}"
        out.append(rid)
    return out


def _plot(results: list[dict], ids: list[str], path: Path) -> str | None:
    quality = next((q for q in ("fid", "fid_nonstandard", "fid_proxy", "wikitext2_ppl", "wikitext2_ppl_prefix",
                                "wikitext2_ppl_nonstandard", "wikitext2_ppl_prefix_nonstandard", "vae_neg_elbo")
                    if all(q in r["metrics"] for r in results)), None)
    if quality is None or not all("latency_ms_p50" in r["metrics"] for r in results):
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 4))
    kinds = sorted({str(r.get("kind", "?")) for r in results})
    markers = dict(zip(kinds, "osD^v<>ph*"))
    for rid, r in zip(ids, results):
        x, y = r["metrics"]["latency_ms_p50"], r["metrics"][quality]
        kind = str(r.get("kind", "?"))
        ax.scatter([x], [y], marker=markers.get(kind, "o"), label=kind)
        ax.annotate(rid, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("latency, median (ms, this machine)")
    ax.set_ylabel(quality + " (lower is better)")
    if len(kinds) > 1:  # said on the figure too: the points are not one model family
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys(), fontsize=7, title="kind", title_fontsize=7)
        ax.set_title(f"quality against latency (mixed model kinds: {', '.join(kinds)})", fontsize=9)
    else:
        ax.set_title("quality against latency")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def eval_file(result: dict) -> str:
    """The file name of an evaluation in its run folder: ``eval-<eval_id>.json`` (for example
    ``eval-last-shipped.json``, ``eval-last-float.json``), one per checkpoint and form."""
    key = result.get("eval_id") or _slug(result.get("form", "run"))
    return f"eval-{_slug(key)}.json"


def save_eval(result: dict, run_dir: str | os.PathLike) -> Path:
    """Write the result into the run folder as :func:`eval_file` names it (atomically; an
    evaluation of another checkpoint or form keeps its own file) and return its path."""
    return atomic.write_json(Path(run_dir) / eval_file(result), result, indent=2, default=str)
