"""The reproduction pipeline: trained models (cached), measurements (cached steps), tables, the
report and its MLflow record."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from edgegen import _atomic as atomic
__all__ = ["TABLES", "reproduce", "load_papers", "load_recipes"]

TABLES = ("size", "latency", "memory", "power", "headline", "quality", "lightweight", "tradeoff")
DEVICES = ("rpi4", "jetson-nano", "pixel6")
LAMBDAS = (0.25, 0.5, 0.75)
SWEEP = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
HERE = Path(__file__).resolve().parent
# The version of what the steps measure and how their files are laid out, part of the fingerprint
# that keys the cached steps (and the results.json merge): bump it when a step's measurement
# definition changes (2: FLOP counting includes CPU attention; step files record the builds of the
# models they read in "_models"), so that no step file of an earlier definition is reused.
STEPS_VERSION = 2


def _yaml(name: str) -> dict:
    import yaml

    with open(HERE / name, encoding="utf-8") as f:  # a stream, so that YAML errors name the file
        return yaml.safe_load(f)


def load_papers() -> dict:
    """The published numbers (``papers.yaml``)."""
    return _yaml("papers.yaml")


def load_recipes() -> dict:
    """The models and the presets' changes (``recipes.yaml``)."""
    return _yaml("recipes.yaml")


EVAL_KEYS = ("fid_samples", "proxy_epochs", "ppl_max_tokens", "profile_min_time_s")


def check_recipes(recipes) -> dict:
    """``recipes`` if it has the layout of ``recipes.yaml`` (``models``: name -> training config,
    ``presets``: name -> ``models`` (changes per model) and ``eval`` (:data:`EVAL_KEYS`)); a
    ValueError naming the first part that does not, otherwise."""
    def need(cond, where, what):
        if not cond:
            raise ValueError(f"recipes: {where}: expected {what}")

    need(isinstance(recipes, dict), "top level", f"a mapping with 'models' and 'presets', got {type(recipes).__name__}")
    for part in ("models", "presets"):
        need(isinstance(recipes.get(part), dict) and recipes[part], part, "a non-empty mapping")
    for name, spec in recipes["models"].items():
        need(isinstance(spec, dict), f"models.{name}", "a mapping (a training config)")
        base = spec.get("base")
        need(base is None or base in recipes["models"], f"models.{name}.base",
             f"one of the recipes' models, got {base!r}")
    for name in recipes["models"]:
        _bases(recipes["models"], name)
    for name, spec in recipes["presets"].items():
        need(isinstance(spec, dict), f"presets.{name}", "a mapping with 'models' and 'eval'")
        need(isinstance(spec.get("models", {}), dict), f"presets.{name}.models", "a mapping of model -> changes")
        unknown = [m for m in spec.get("models") or {} if m not in recipes["models"]]
        need(not unknown, f"presets.{name}.models", f"names of the recipes' models, got {unknown[:1]}")
        ev = spec.get("eval")
        need(isinstance(ev, dict), f"presets.{name}.eval", f"a mapping with {', '.join(EVAL_KEYS)}")
        missing = [k for k in EVAL_KEYS if k not in ev]
        need(not missing, f"presets.{name}.eval", f"the keys {', '.join(EVAL_KEYS)}; missing {', '.join(missing)}")
    return recipes


def _bases(models: dict, key: str) -> list:
    """``key`` and the recipes it is based on, nearest first; a ValueError naming the base that
    leads back to a recipe already on the chain, and the cycle."""
    chain = [key]
    while (base := models[chain[-1]].get("base")) is not None:
        if base in chain:
            raise ValueError(f"recipes: models.{chain[-1]}.base: expected a chain of bases that ends, got the cycle "
                             + " -> ".join(chain[chain.index(base):] + [base]))
        chain.append(base)
    return chain


def check_seeds(seeds) -> list:
    """``seeds`` as a list of distinct non-negative ints, or a ValueError naming ``seeds``."""
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise ValueError(f"seeds: expected a sequence of non-negative integers, got {seeds!r}")
    seeds = list(seeds)
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or s < 0]
    if bad:
        raise ValueError(f"seeds: expected non-negative integers, got {bad[0]!r}")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: expected at least one seed, each once, got {seeds}")
    return seeds


# ----------------------------------------------------------------------------------- context
@dataclass
class Context:
    preset: str
    seeds: list
    out: Path
    force: bool
    data_root: str | None
    log: Callable[[str], None]
    recipes: dict = field(default_factory=load_recipes)
    done_steps: list = field(default_factory=list)
    skipped_steps: list = field(default_factory=list)
    # What this run has already (re)built: ``force`` recomputes each step, model and compressed
    # model once, not again each time another table asks for it.
    built: set = field(default_factory=set)
    table_notes: dict = field(default_factory=dict)  # table -> departures found while building it
    reading: list = field(default_factory=list)  # per step being computed: model folder -> _identity

    @property
    def data_dir(self) -> str:
        """The data root in effect: ``data_root``, else $EDGEGEN_DATA_DIR ("" when neither is set)."""
        return self.data_root or os.environ.get("EDGEGEN_DATA_DIR", "")

    @property
    def fingerprint(self) -> str:
        """Cached steps are valid only for the same recipes, data root and :data:`STEPS_VERSION`."""
        blob = json.dumps([STEPS_VERSION, self.recipes, self.data_dir], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    @property
    def eval(self) -> dict:
        return self.recipes["presets"][self.preset]["eval"]

    def step(self, name: str, fn: Callable[[], dict]) -> dict:
        """``fn()``'s JSON result, computed once: kept in ``steps/<name>.json`` with the identity of
        every model folder ``fn`` read (:meth:`trained`, :func:`_compressed`), named relative to
        ``out`` (the output folder can be moved).

        A kept result is reused only while each of those models is still the one it measured. A
        model is rebuilt by ``force``, and a forced run killed half-way leaves some models rebuilt
        and the steps measured on their predecessors behind; checking the models each step read
        finds exactly those steps, in this run or any later one, whatever rebuilt the model, where
        dropping the cached steps at the start of a forced run would miss a model rebuilt by a
        forced run of another table and recompute every table's steps."""
        path = self.out / "steps" / self.fingerprint / f"{name}.json"
        if path.is_file() and (not self.force or ("step", name) in self.built):
            kept = json.loads(path.read_text(encoding="utf-8"))
            read = kept.pop("_models", None)  # None: no record of the models it read, so not trusted
            if read is not None and all(_identity(self.out / d) == ident for d, ident in read.items()):
                self.skipped_steps.append(name)
                return kept
            self.log(f"  {name}: " + ("a model it measured was rebuilt since" if read is not None else
                                      "its file does not record which models it measured") + ": measured again")
        t0 = time.perf_counter()
        self.reading.append({})
        try:
            result = fn()
        finally:
            models = self.reading.pop()
        result["_seconds"] = round(time.perf_counter() - t0, 2)
        atomic.write_text(path, json.dumps(dict(result, _models=models), default=float))
        self.built.add(("step", name))
        self.done_steps.append(name)
        self.log(f"  {name}: {result['_seconds']:.1f} s")
        return result

    def read(self, run_dir) -> None:
        """Record that the steps being computed read the model in ``run_dir`` (by its path relative
        to ``out`` when it lies inside, else its absolute path)."""
        where = os.path.relpath(os.path.abspath(run_dir), os.path.abspath(self.out))
        if where == os.pardir or where.startswith(os.pardir + os.sep):
            where = os.path.abspath(run_dir)
        for models in self.reading:
            models[where] = _identity(run_dir)

    # ------------------------------------------------------------------ models
    def model_config(self, key: str, seed: int) -> dict:
        from edgegen.config import merge

        models = self.recipes["models"]
        if key not in models:
            raise ValueError(f"model: unknown recipe {key!r}")
        data: dict = {}
        for k in reversed(_bases(models, key)):
            data = merge(data, {n: v for n, v in models[k].items() if n != "base"})
        data = merge(data, self.recipes["presets"][self.preset]["models"].get(key, {}))
        if self.data_dir:  # in the config, so in the run folder's digest: another data root trains anew
            data = merge(data, {"data": {"root": self.data_dir}})
        data = merge(data, {"name": key, "train": {"seed": seed}, "tracking": {"enabled": False}})
        return data

    def trained(self, key: str, seed: int) -> Path:
        """The run folder of recipe ``key`` trained for this preset and seed (trained on first use)."""
        data = copy.deepcopy(self.model_config(key, seed))  # never write into the recipes themselves
        teachers = (data.get("distill") or {}).get("teachers") or []
        for t in teachers:
            if isinstance(t.get("init_from"), str) and t["init_from"].startswith("@"):
                t["init_from"] = str(self.trained(t["init_from"][1:], seed) / "checkpoints" / "last.pt")
        digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:10]
        run_dir = self.out / "models" / self.preset / f"{key}-{digest}" / f"seed{seed}"
        marker = run_dir / "done.json"
        if marker.is_file() and (not self.force or ("model", str(run_dir)) in self.built):
            self.read(run_dir)
            return run_dir
        from edgegen.train import load_experiment
        from edgegen.train.loop import train_experiment

        cfg = load_experiment(dict(data, output_dir=str(self.out / "models")))
        if self.force and run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)  # retrained from scratch, not over the earlier run
        # A run killed before its marker was written continues where its last checkpoint stands
        # (the folder's name holds the config's digest, so the config is the same).
        resume = (run_dir / "checkpoints" / "last.pt").is_file()
        self.log(f"  training {key} (seed {seed}, preset {self.preset}){' - resumed' if resume else ''}")
        t0 = time.perf_counter()
        res = train_experiment(cfg, run_dir, progress=False, resume=resume)
        atomic.write_text(marker, json.dumps({"seconds": round(time.perf_counter() - t0, 1),
                                              "final": res.get("final"), "build": uuid.uuid4().hex}, default=float))
        self.built.add(("model", str(run_dir)))
        self.read(run_dir)
        return run_dir


def _identity(run_dir) -> str:
    """Which build of a model folder is there: a digest of its ``done.json`` (each build writes a
    new id into it); "" when it has none."""
    marker = Path(run_dir) / "done.json"
    return hashlib.sha256(marker.read_bytes()).hexdigest()[:16] if marker.is_file() else ""


# ----------------------------------------------------------------------------------- measurements
def _paper_architectures(ctx: Context, seed: int) -> dict:
    """The full-size models (random weights, seeded) in each form the efficiency tables compare."""
    from edgegen.config import from_dict
    from edgegen.prune import ChannelConfig, prune_, shrink
    from edgegen.quant import Int8DynamicConfig, quantize_
    from edgegen.models.config import ModelConfig

    paper = Context("paper", ctx.seeds, ctx.out, ctx.force, ctx.data_root, ctx.log, ctx.recipes)

    def build(key):
        torch.manual_seed(seed)
        mc = dict(paper.model_config(key, seed)["model"])
        mc.pop("init_from", None)
        m = from_dict(ModelConfig, mc).build()
        return (m[0] if isinstance(m, tuple) else m).eval()

    g = build("dcgan-cifar10")
    pruned = copy.deepcopy(g)
    prune_(pruned, ChannelConfig(amount=0.5), example_inputs=pruned.example_inputs(2))
    vae = build("vae-celeba")
    student = build("gpt2-student")
    return {
        "dcgan_generator": g,
        "dcgan_generator_pruned50": shrink(pruned, pruned.example_inputs(1)),
        "dcgan_generator_int8": quantize_(copy.deepcopy(g), Int8DynamicConfig()),
        "vae": vae,
        "vae_int8": quantize_(copy.deepcopy(vae), Int8DynamicConfig()),
        "gpt2_teacher": build("gpt2-teacher"),
        "gpt2_student": student,
        "gpt2_student_int8": quantize_(copy.deepcopy(student), Int8DynamicConfig()),
    }


def _inputs(model, seed: int):
    from edgegen.models.gpt2 import GPT2

    g = torch.Generator().manual_seed(seed)
    if isinstance(model, GPT2) or hasattr(model, "wte"):
        n = min(128, model.config.n_positions)
        return (torch.randint(0, model.config.vocab_size, (1, n), generator=g),)
    if hasattr(model, "encode"):
        return (torch.rand(1, 3, 64, 64, generator=g) * 2 - 1,)
    return (torch.randn(1, model.config.nz, generator=g),)


def _profile_dict(model, seed: int, min_time: float) -> dict:
    from edgegen.eval.edge import project
    from edgegen.eval.profile import profile

    rec = profile(model, _inputs(model, seed), repeats=10, min_time_s=min_time)
    d = {k: v for k, v in rec.as_dict().items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    d["energy_method"] = rec.energy_method
    d["disk_format"] = rec.disk_format
    for dev in DEVICES:
        p = project(rec, dev)
        d[f"{dev}_latency_ms_projected"] = p.latency_ms_projected
        d[f"{dev}_energy_j_projected"] = p.energy_j_projected
    return d


def _efficiency(ctx: Context, seed: int) -> dict:
    models = _paper_architectures(ctx, seed)
    return {name: _profile_dict(m, seed, ctx.eval["profile_min_time_s"]) for name, m in models.items()}


def _eval(ctx: Context, run_dir, metrics: tuple, form: str = "shipped", profile: bool = False,
          compress: dict | None = None) -> dict:
    from edgegen.eval.runs import EvalOptions, evaluate_run, load_run

    e = ctx.eval
    run = load_run(run_dir, form=form)
    opts = EvalOptions(metrics=metrics, samples=e["fid_samples"], proxy_epochs=e["proxy_epochs"],
                       max_tokens=e["ppl_max_tokens"], profile=profile, profile_repeats=10,
                       profile_min_time_s=e["profile_min_time_s"], data_root=ctx.data_root,
                       fid_extractor="auto")
    res = evaluate_run(run, opts)
    return {"metrics": res["metrics"], "labels": res["labels"], "form": res["form"]}


# ----------------------------------------------------------------------------------- rows
@dataclass
class Row:
    key: str  # "<row>/<metric>"
    values: list  # one per seed
    label: str  # measured / estimated / projected / FID-proxy ...
    note: str = ""


def _is_finite(v) -> bool:
    """Whether a seed's value is a number to average (None: the seed has none)."""
    return v is not None and math.isfinite(v)


def _stat(values: list) -> dict:
    """Mean, std, n and 95% interval over the seeds with a finite value (a seed without one, None
    or NaN, is left out: n counts the others; no value at all gives mean None, n/a)."""
    from edgegen.analysis.stats import summarize

    vals = [v for v in values if _is_finite(v)]
    if not vals:
        return {"mean": None, "std": None, "n": 0, "ci": None}
    s = summarize(vals)
    return {"mean": s.mean, "std": s.std if s.n > 1 else None, "n": s.n,
            "ci": [s.ci_low, s.ci_high] if s.n >= 3 else None}


def _fmt(v) -> str:
    from edgegen.eval.runs import fmt_number

    return fmt_number(None if v is None else float(v))


def _ours(st: dict) -> str:
    if st["n"] == 0:
        return "n/a (no finite value)"
    if st["n"] == 1:
        return f"{_fmt(st['mean'])} (n = 1: no spread)"
    if st["n"] == 2:
        return f"{_fmt(st['mean'])} +- {_fmt(st['std'])} (n = 2: no interval)"
    return f"{_fmt(st['mean'])} +- {_fmt(st['std'])} [95% CI {_fmt(st['ci'][0])}, {_fmt(st['ci'][1])}]"


def _per_seed(ctx: Context, fn: Callable[[int], dict]) -> list:
    return [fn(s) for s in ctx.seeds]


def _rows_from(results: list, spec: list) -> list:
    """Rows from per-seed result dicts: spec items (row key, path into the dict, label, note). A
    quantity no result has is left out; one that only some have is kept, None for the others (the
    report's note says how many seeds lack it)."""
    rows = []
    for key, getter, label, note in spec:
        vals = [getter(r) for r in results]
        if any(v is not None for v in vals):
            rows.append(Row(key, [None if v is None else float(v) for v in vals], label, note))
    return rows


# ----------------------------------------------------------------------------------- tables
ARCH_NOTE = ("full-size architecture with random weights (size, FLOPs and speed do not depend on the values); measured "
             "on this machine's CPU, not the paper's devices")


def _size_latency_memory_power(ctx: Context, table: str) -> list:
    eff = _per_seed(ctx, lambda s: ctx.step(f"{ctx.preset}/efficiency/seed{s}", lambda: _efficiency(ctx, s)))
    names = [k for k, v in eff[0].items() if isinstance(v, dict)]
    spec = []
    if table == "size":
        for n in names:
            for m in ("params", "nonzero_params", "flops", "macs", "bytes_on_disk"):
                spec.append((f"{n}/{m}", lambda r, n=n, m=m: r[n].get(m), "measured", ARCH_NOTE if m == "params" else ""))

        def red(a, b, m):
            return lambda r: 100.0 * (1 - r[b][m] / r[a][m])

        spec += [("dcgan_generator_pruned50/params_reduction_pct", red("dcgan_generator", "dcgan_generator_pruned50",
                                                                       "params"), "measured", "50% channel pruning, shrunk"),
                 ("dcgan_generator_pruned50/flops_reduction_pct", red("dcgan_generator", "dcgan_generator_pruned50",
                                                                      "flops"), "measured", ""),
                 ("vae_int8/size_reduction_pct", red("vae", "vae_int8", "bytes_on_disk"), "measured",
                  "INT8 weights on disk (save_quantized)"),
                 ("gpt2_student/params_reduction_pct", red("gpt2_teacher", "gpt2_student", "params"), "measured",
                  "teacher 12L/768 -> student 6L/384"),
                 ("gpt2_student/flops_reduction_pct", red("gpt2_teacher", "gpt2_student", "flops"), "measured",
                  "128-token forward")]
    elif table == "latency":
        for n in names:
            spec.append((f"{n}/latency_ms_p50", lambda r, n=n: r[n]["latency_ms_p50"], "measured",
                         "batch 1 (GPT-2: 128 tokens); " + ARCH_NOTE))
            spec.append((f"{n}/throughput_per_s", lambda r, n=n: r[n]["throughput_per_s"], "measured", ""))
            for d in DEVICES:
                spec.append((f"{n}/{d}_latency_ms_projected", lambda r, n=n, d=d: r[n][f"{d}_latency_ms_projected"],
                             "projected", "roofline from public figures (devices.yaml), not measured on the device"))
        for n in ("dcgan_generator", "dcgan_generator_pruned50"):
            spec.append((f"{n}/edge_latency_ms", lambda r, n=n: r[n]["rpi4_latency_ms_projected"], "projected",
                         "our Raspberry Pi 4 projection set beside the paper's edge-device measurement"))
    elif table == "memory":
        for n in names:
            spec.append((f"{n}/bytes_on_disk", lambda r, n=n: r[n]["bytes_on_disk"], "measured",
                         "the file a user ships: " + eff[0][n]["disk_format"]))
            spec.append((f"{n}/peak_memory_bytes", lambda r, n=n: r[n].get("peak_memory_bytes"), "measured",
                         "resident-set high-water mark of one call in a fresh process"))
    else:  # power
        measured = "energy_j" in eff[0][names[0]]
        key = "energy_j" if measured else "energy_j_estimated"
        for n in names:
            spec.append((f"{n}/{key}", lambda r, n=n: r[n].get(key), "measured (RAPL)" if measured else "estimated",
                         eff[0][n]["energy_method"]))
            for d in DEVICES:
                spec.append((f"{n}/{d}_energy_j_projected", lambda r, n=n, d=d: r[n][f"{d}_energy_j_projected"],
                             "projected", "projected latency x the device's typical power"))
    return _rows_from(eff, spec)


def _headline(ctx: Context) -> list:
    eff = _per_seed(ctx, lambda s: ctx.step(f"{ctx.preset}/efficiency/seed{s}", lambda: _efficiency(ctx, s)))
    pairs = [("dcgan_generator", "dcgan_generator_int8"), ("vae", "vae_int8"), ("gpt2_student", "gpt2_student_int8")]
    measured = "energy_j" in eff[0]["vae"]
    ekey = "energy_j" if measured else "energy_j_estimated"

    def mean_red(r, m):
        return sum(100.0 * (1 - r[q][m] / r[f][m]) for f, q in pairs) / len(pairs)

    rows = _rows_from(eff, [
        ("quantization/latency_reduction_pct", lambda r: mean_red(r, "latency_ms_p50"), "measured",
         "mean over the DCGAN generator, the Beta-VAE and the GPT-2 student of 1 - INT8/fp32 latency (edgegen's INT8 "
         "kernels, dynamic activations), this CPU"),
        ("quantization/energy_reduction_pct", lambda r: mean_red(r, ekey),
         "measured (RAPL)" if measured else "estimated",
         "energy per inference, same models: " + ("RAPL package energy" if measured else
                                                  "CPU time x a stated power per core, so this tracks CPU time, not "
                                                  "a power meter") +
         "; the paper's figure is a reduction of power, not of energy per inference")])
    for f, q in pairs:
        rows += _rows_from(eff, [(f"{q}/latency_reduction_pct", lambda r, f=f, q=q: 100 * (1 - r[q]["latency_ms_p50"] /
                                                                                          r[f]["latency_ms_p50"]),
                                  "measured", "")])
    return rows


def _compressed(ctx: Context, src: Path, spec: dict, tag: str) -> str:
    """The run folder of ``src`` compressed after training by ``spec`` (built once per reproduction,
    shared by the tables that need it; built again when ``src`` was rebuilt since)."""
    from edgegen.train.posthoc import compress_from

    dest = Path(f"{src}-{tag}")
    marker = dest / "done.json"
    source = _identity(src)
    stale = not marker.is_file() or json.loads(marker.read_text(encoding="utf-8")).get("source") != source
    if stale or not (dest / "checkpoints" / "last.pt").is_file() or (ctx.force and ("compressed", str(dest))
                                                                     not in ctx.built):
        if dest.exists():  # forced, left half-written by a killed run, or from an earlier build of src: rebuilt
            import shutil

            shutil.rmtree(dest)
        compress_from(src, spec, dest)
        atomic.write_text(marker, json.dumps({"source": source, "build": uuid.uuid4().hex}))
        ctx.built.add(("compressed", str(dest)))
    ctx.read(dest)
    return str(dest)


# The labels of image-quality keys other than the standard FID.
QUALITY_LABELS = {"fid_proxy": "FID-proxy", "fid_nonstandard": "FID-nonstandard"}


def _fid_key(metrics: dict) -> tuple[str, str]:
    """The image-quality key an evaluation produced (standard, non-standard or proxy FID) and the
    label its rows carry."""
    for key in ("fid", "fid_nonstandard", "fid_proxy"):
        if key in metrics:
            return key, QUALITY_LABELS.get(key, "measured")
    raise KeyError(f"no FID, FID-nonstandard or FID-proxy among the evaluation's metrics ({sorted(metrics)})")


def _paired(results: list, baseline: str, variant: str, metric: str, label: str) -> Row | None:
    """The per-seed difference variant - baseline of ``metric``, with a paired t-test over the
    seeds in the note (none below 3 seeds)."""
    from edgegen.analysis.stats import paired_ttest

    try:
        base = [float(r[baseline]["metrics"][metric]) for r in results]
        var = [float(r[variant]["metrics"][metric]) for r in results]
    except KeyError:
        return None
    diffs = [v - b for v, b in zip(var, base)]
    if len(diffs) >= 3:
        t = paired_ttest(base, var)
        note = (f"paired t-test over {len(diffs)} seeds vs {baseline}: p = {t['p']:.3g}, "
                f"{'significant' if t['significant'] else 'not significant'} at alpha 0.05")
    else:
        note = f"{len(diffs)} seed(s): no paired t-test (at least 3 are needed)"
    return Row(f"{variant}/diff_vs_{baseline}_{metric}", diffs, label, note)


# Image models of the quality table, each beside the compressed variant it is paired with.
IMAGE_PAIRS = (("dcgan-cifar10", "dcgan-cifar10-pruned50"), ("dcgan-celeba", "dcgan-celeba-pruned50"),
               ("vae-celeba", "vae-celeba-int8"))
IMAGE_MODELS = tuple(key for pair in IMAGE_PAIRS for key in pair)
SAMPLE_IMAGES = 36  # per grid of the samples figures
TEXT_MODELS = ("gpt2-teacher", "gpt2-student", "gpt2-student-int8")
SAMPLE_TOKENS = 30  # per continuation of <|endoftext|> (fits any context of 32 tokens or more)


def _quality_runs(ctx: Context, seed: int) -> dict:
    """The run folder of each model the quality table measures, for one seed."""
    runs = {key: ctx.trained(key, seed) for key in ("dcgan-cifar10", "dcgan-cifar10-pruned50", "dcgan-celeba",
                                                    "dcgan-celeba-pruned50", "vae-celeba", "gpt2-teacher",
                                                    "gpt2-student")}
    int8 = {"ptq": {"kind": "Int8DynamicConfig"}}
    runs["vae-celeba-int8"] = _compressed(ctx, runs["vae-celeba"], int8, "int8")
    runs["gpt2-student-int8"] = _compressed(ctx, runs["gpt2-student"], int8, "int8")
    return runs


def _samples(ctx: Context, runs: dict) -> None:
    """Samples of each image pair (baseline and compressed variant, the first seed's runs in
    ``runs``, key -> run folder) from the same latents, side by side under figures/samples/, and
    unconditional text samples of the GPT-2s; where they are is a note of the table."""
    from edgegen.eval.run_samples import sample_runs

    seed = ctx.seeds[0]
    made, recon, failed = [], [], []
    for base, variant in IMAGE_PAIRS:
        if base not in runs or variant not in runs:
            continue
        try:
            res = sample_runs([runs[base], runs[variant]], ctx.out / "figures" / "samples" / base, n=SAMPLE_IMAGES,
                              seed=seed, data_root=ctx.data_root)
        except (ValueError, OSError, RuntimeError) as exc:  # the table's numbers stand without the pictures
            failed.append(f"{base}: {exc}")
            continue
        made += [Path(p).relative_to(ctx.out).as_posix() for p in res["side_by_side"]]
        recon += [Path(p).relative_to(ctx.out).as_posix() for p in res["reconstructions"]]
    texts = []
    if all(k in runs for k in TEXT_MODELS):
        try:
            res = sample_runs([runs[k] for k in TEXT_MODELS], ctx.out / "figures" / "samples" / "gpt2",
                              max_new_tokens=SAMPLE_TOKENS, seed=seed)
            texts = [(ctx.out / "figures" / "samples" / "gpt2" / r["files"][0]).relative_to(ctx.out).as_posix()
                     for r in res["runs"]]
        except (ValueError, OSError, RuntimeError) as exc:
            failed.append(f"gpt2: {exc}")
    note = (f"Samples (seed {seed}'s runs, {SAMPLE_IMAGES} images each from the same latents for a model and its "
            "compressed variant, image i beside image i): " + ", ".join(made) + "." if made else "")
    if recon:
        note += (f" Reconstructions of the first {SAMPLE_IMAGES} held-out images by each Beta-VAE and its compressed "
                 "variant, beside the images: " + ", ".join(recon) + ".")
    if texts:
        note += (f" Text samples of the teacher, the student and the INT8 student ({SAMPLE_TOKENS} tokens sampled "
                 "after <|endoftext|>, seed " + str(seed) + "): " + ", ".join(texts) + ".")
    if failed:
        note += " Samples not drawn: " + "; ".join(failed) + "."
    if note:
        ctx.table_notes.setdefault("quality", []).append(note.strip())


def _quality(ctx: Context) -> list:
    def one(seed):
        def compute():
            runs = _quality_runs(ctx, seed)
            out = {}
            for key in IMAGE_MODELS:
                out[key] = _eval(ctx, runs[key], ("fid", "vae", "prdc") if key.startswith("vae") else ("fid", "prdc"))
            for key in TEXT_MODELS:
                out[key] = _eval(ctx, runs[key], ("ppl",))
            out["runs"] = {k: str(v) for k, v in runs.items()}  # for the samples figures
            return out

        # Named for what it measures: a step of an earlier version (without prdc) is not reused.
        return ctx.step(f"{ctx.preset}/quality-fid-prdc-ppl/seed{seed}", compute)

    res = _per_seed(ctx, one)
    fidkey, flabel = _fid_key(res[0]["dcgan-cifar10"]["metrics"])
    suffix = fidkey[len("fid"):]  # precision / recall carry the network's name as FID does
    pplkey = next(k for k in res[0]["gpt2-teacher"]["metrics"] if k.startswith("wikitext2_ppl") and
                  not k.endswith("_tokens"))
    spec = []
    for key in IMAGE_MODELS:
        spec.append((f"{key}/{fidkey}", lambda r, k=key: r[k]["metrics"].get(fidkey),
                     flabel, res[0][key]["labels"].get(fidkey, "")))
        for m in ("precision", "recall"):
            spec.append((f"{key}/{m}{suffix}", lambda r, k=key, m=m: r[k]["metrics"].get(m + suffix), flabel,
                         res[0][key]["labels"].get("prdc", "")))
    for key in ("vae-celeba", "vae-celeba-int8"):
        for m in ("vae_recon_ssim", "vae_neg_elbo"):
            spec.append((f"{key}/{m}", lambda r, k=key, m=m: r[k]["metrics"].get(m), "measured",
                         res[0][key]["labels"].get("vae", "")))
    for key in TEXT_MODELS:
        spec.append((f"{key}/{pplkey}", lambda r, k=key: r[k]["metrics"].get(pplkey), _ppl_label(pplkey),
                     res[0][key]["labels"].get(pplkey, "")))
    rows = _rows_from(res, spec)
    plabel = _ppl_label(pplkey)
    pairs = [(base, var, metric, flabel) for base, var in IMAGE_PAIRS for metric in (fidkey, "recall" + suffix)]
    pairs += [("vae-celeba", "vae-celeba-int8", "vae_recon_ssim", "measured"),
              ("gpt2-teacher", "gpt2-student", pplkey, plabel),
              ("gpt2-student", "gpt2-student-int8", pplkey, plabel)]
    for base, var, metric, label in pairs:
        row = _paired(res, base, var, metric, label)
        if row is not None:
            rows.append(row)
    _samples(ctx, res[0].get("runs", {}))
    return rows


def _lightweight(ctx: Context) -> list:
    from edgegen.analysis.tradeoff import pareto_scores

    def one(seed):
        def compute():
            pairs = {}
            dense = ctx.trained("dcgan-cifar10", seed)
            pairs["dcgan_channel50"] = (_eval(ctx, dense, ("fid",), profile=True),
                                        _eval(ctx, ctx.trained("dcgan-cifar10-pruned50", seed), ("fid",), profile=True))
            vae = ctx.trained("vae-celeba", seed)
            base = _eval(ctx, vae, ("vae",), profile=True)
            mag = _compressed(ctx, vae, {"prune": {"kind": "MagnitudeConfig", "amount": 0.5}}, "mag50")
            q = _compressed(ctx, vae, {"ptq": {"kind": "Int8DynamicConfig"}}, "int8")
            pairs["magnitude_pruning"] = (base, _eval(ctx, mag, ("vae",), profile=True))
            pairs["int8_ptq"] = (base, _eval(ctx, q, ("vae",), profile=True))
            return pairs

        return ctx.step(f"{ctx.preset}/lightweight/seed{seed}", compute)

    res = _per_seed(ctx, one)
    rows = []
    quality = {"dcgan_channel50": None, "magnitude_pruning": "vae_neg_elbo", "int8_ptq": "vae_neg_elbo"}
    for pair, qkey in quality.items():
        if qkey is None:
            qkey = _fid_key(res[0][pair][0]["metrics"])[0]
        ek = "energy_j" if "energy_j" in res[0][pair][0]["metrics"] else "energy_j_estimated"

        def metric(r, i, m, pair=pair):
            return r[pair][i]["metrics"].get(m)

        spec = []
        for i, side in ((0, "existing"), (1, "compressed")):
            for m in ("bytes_on_disk", "latency_ms_p50", "throughput_per_s", "peak_memory_bytes", qkey, ek):
                spec.append((f"{pair}/{side}_{m}", lambda r, i=i, m=m: metric(r, i, m),
                             QUALITY_LABELS.get(m, "estimated" if m == "energy_j_estimated" else "measured"),
                             "energy per sample (batch 1)" if m == ek else ""))
        spec += [
            (f"{pair}/compression_ratio", lambda r: metric(r, 0, "bytes_on_disk") / metric(r, 1, "bytes_on_disk"),
             "measured", "bytes on disk, existing / compressed"),
            (f"{pair}/size_reduction_pct", lambda r: 100 * (1 - metric(r, 1, "bytes_on_disk") /
                                                            metric(r, 0, "bytes_on_disk")), "measured", ""),
            (f"{pair}/quality_loss_pct", lambda r, q=qkey: 100 * (metric(r, 1, q) - metric(r, 0, q)) / abs(metric(r, 0, q)),
             QUALITY_LABELS.get(qkey, "measured"), f"relative increase of {qkey} (lower is better)"),
            (f"{pair}/compressed_pareto_score",
             lambda r, q=qkey: float(pareto_scores([[metric(r, i, q), metric(r, i, "latency_ms_p50"),
                                                     metric(r, i, "bytes_on_disk")] for i in (0, 1)],
                                                   [True, True, True])[1]),
             QUALITY_LABELS.get(qkey, "measured"),
             "edgegen's Pareto score (edgegen.analysis) over (quality, latency, size) of this pair alone: 1 unless "
             "the existing model dominates the compressed one, then below 1 by its normalised distance")]
        rows += _rows_from(res, spec)
    return rows


def _tradeoff(ctx: Context) -> list:
    from edgegen.analysis import plots
    from edgegen.analysis.tradeoff import fit_tradeoff, pareto_front

    def one(seed):
        def compute():
            dense = ctx.trained("dcgan-cifar10", seed)
            points = [dict(ratio=0.0, **_eval(ctx, dense, ("fid",), profile=True)["metrics"])]
            for r in SWEEP:
                out = _compressed(ctx, dense, {"prune": {"kind": "ChannelConfig", "amount": r}}, f"sweep{int(r * 100)}")
                points.append(dict(ratio=r, **_eval(ctx, out, ("fid",), profile=True)["metrics"]))
            return {"points": points}

        return ctx.step(f"{ctx.preset}/tradeoff/seed{seed}", compute)

    res = _per_seed(ctx, one)
    qkey, qlabel = _fid_key(res[0]["points"][0])
    ek = "energy_j" if "energy_j" in res[0]["points"][0] else "energy_j_estimated"
    fits, unfitted = [], []
    for seed, r in zip(ctx.seeds, res):
        pts = r["points"]
        r["front"] = pareto_front([[p[qkey], p["latency_ms_p50"], p["bytes_on_disk"]] for p in pts],
                                  [True, True, True]).tolist()
        try:
            fit = fit_tradeoff([p["params"] for p in pts], [p[qkey] for p in pts], [p["latency_ms_p50"] for p in pts],
                               quality_lower_is_better=True, efficiency_lower_is_better=True)
        except (RuntimeError, ValueError) as exc:  # no fit (scipy), or a sweep it cannot take (a FID of 0, a
            # singular least-squares start): that seed's sweep rows and the other seeds' fits still stand
            unfitted.append(f"seed {seed}: {exc}")
            ctx.log(f"  the trade-off curves could not be fitted to seed {seed}'s sweep ({exc})")
            fits.append(None)
            continue
        c_lo, c_hi = min(p["params"] for p in pts), max(p["params"] for p in pts)
        r["fit"] = fit.as_dict()
        r["cstar"] = {lam: fit.optimal(lam, c_lo, c_hi) for lam in LAMBDAS}
        fits.append((fit, c_lo, c_hi))
    # Figures from the first seed
    pts = res[0]["points"]
    figs = ctx.out / "figures"
    names = [f"{int(p['ratio'] * 100)}%" for p in pts]
    qname = {"fid": "FID"}.get(qkey, qlabel)
    if fits[0] is not None:
        fit, c_lo, c_hi = fits[0]
        plots.plot_fit(fit, [p["params"] for p in pts], [p[qkey] for p in pts], [p["latency_ms_p50"] for p in pts],
                       figs / "tradeoff_fit.png", quality_name=f"1/{qname}", efficiency_name="1/latency (normalised)")
        plots.plot_utility(fit, LAMBDAS, c_lo, c_hi, figs / "tradeoff_utility.png", quality_name=f"1/{qname}")
        plots.plot_optimal_lambda(fit, c_lo, c_hi, figs / "tradeoff_cstar.png", quality_name=f"1/{qname}")
    plots.plot_pareto([[p["latency_ms_p50"], p[qkey]] for p in pts],
                      pareto_front([[p["latency_ms_p50"], p[qkey]] for p in pts], [True, True]), names,
                      ["latency, median (ms, measured)", f"{qname} (lower is better)"], figs / "tradeoff_pareto.png",
                      title="channel-pruning sweep of the DCGAN generator")
    plots.plot_scatter([p["bytes_on_disk"] / 1e6 for p in pts], [p["latency_ms_p50"] for p in pts], names,
                       "size on disk (MB)", "latency, median (ms, measured)", figs / "latency_vs_size.png")
    plots.plot_scatter([pts[0]["bytes_on_disk"] / p["bytes_on_disk"] for p in pts], [p[qkey] for p in pts], names,
                       "compression ratio (bytes)", qname, figs / "fid_vs_compression.png")
    plots.plot_bars([p[ek] for p in pts], names, f"{ek} per sample (J)", figs / "energy_per_sample.png",
                    title="energy per sample" + (" (estimated)" if ek.endswith("estimated") else " (RAPL)"))
    for r in res:
        r["pareto_count"] = len(r["front"])
    # The quality curve, C* and the front all derive from the quality measure: they carry its label.
    # The fit rows are over the seeds whose sweep could be fitted; the others are named.
    fit_spec = [(f"fit/{k}", lambda r, k=k: r["fit"][k], "measured" if k in ("beta", "gamma", "r2_efficiency")
                 else qlabel, f"Q = 1/{qname}, E = 1/latency normalised; complexity = parameters" if k == "alpha" else "")
                for k in ("alpha", "q_max", "beta", "gamma", "r2_quality", "r2_efficiency")]
    fit_spec += [(f"cstar/lambda_{lam}", lambda r, lam=lam: r["cstar"][lam] if lam in r["cstar"] else
                  r["cstar"][str(lam)], qlabel, "parameters maximising F on the swept range") for lam in LAMBDAS]
    fitted = [r for r in res if "fit" in r]
    if unfitted:
        fit_spec = [(k, g, lab, "; ".join(filter(None, (note, f"fitted for {len(fitted)} of {len(res)} seeds"))))
                    for k, g, lab, note in fit_spec]
        ctx.table_notes.setdefault("tradeoff", []).append(
            "The trade-off curves could not be fitted to every seed's sweep (" + "; ".join(unfitted) + "): the fit "
            "and C* rows are over the others" + ("" if fitted else " (none)") + ", the sweep rows over all seeds.")
    spec = [("sweep/pareto_front_size", lambda r: r["pareto_count"], qlabel,
             f"non-dominated of {len(pts)} sweep points on ({qname}, latency, size)")]
    for p in range(len(pts)):
        spec.append((f"sweep_{names[p]}/{qkey}", lambda r, p=p: r["points"][p][qkey], qlabel,
                     "one-shot channel pruning of the trained DCGAN, no fine-tuning"))
        spec.append((f"sweep_{names[p]}/latency_ms_p50", lambda r, p=p: r["points"][p]["latency_ms_p50"], "measured",
                     ""))
    return (_rows_from(fitted, fit_spec) if fitted else []) + _rows_from(res, spec)


BUILDERS = {"size": lambda c: _size_latency_memory_power(c, "size"),
            "latency": lambda c: _size_latency_memory_power(c, "latency"),
            "memory": lambda c: _size_latency_memory_power(c, "memory"),
            "power": lambda c: _size_latency_memory_power(c, "power"),
            "headline": _headline, "quality": _quality, "lightweight": _lightweight, "tradeoff": _tradeoff}


# ----------------------------------------------------------------------------------- report
PRESET_NOTES = {"cpu-smoke": "models scaled down and trained for a few steps on subsets (the Beta-VAE 300, the "
                             "others 12): quality numbers are real measurements of barely trained models",
                "cpu-small": "models scaled down and trained briefly on the CPU",
                "paper": "edgegen's full-scale recipe: the published settings where quoted (batch 32 for images and 8 "
                          "for text, learning rate 2e-4, 100 epochs for the image models and 3 for GPT-2, T = 2), "
                          "edgegen's choices for the rest (optimizer details, schedules, widths, sample counts: "
                          "recipes.yaml)"}


def _departures(ctx: Context, table: str, rows: list) -> list:
    notes = [f"Preset {ctx.preset}: " + PRESET_NOTES.get(ctx.preset, "a preset of the recipes given to this run, "
                                                         "not one of edgegen's own (see its models and eval settings)")
             + ".",
             "Measured on this machine's CPU (" + _cpu() + "); the papers used their own devices; edge figures are "
             "roofline projections."]
    if table in ("size", "latency", "memory", "power", "headline"):
        ours = next((v for r in rows if r.key == "dcgan_generator/params" for v in r.values if _is_finite(v)), None)
        if ours is not None and table == "size":
            notes.append(f"Our DCGAN generator (nz 100, ngf 64, 64x64 output) has {ours / 1e6:.2f} M parameters; "
                         "the paper reports 4.2 M (edgegen's record of the paper does not give the widths behind it).")
        notes.append("Efficiency tables use the full-size architectures (edgegen's: DCGAN nz 100 / ngf 64, Beta-VAE "
                     "with 32 latents, GPT-2 student 6L/384) with random weights at every preset.")
    if table in ("quality", "lightweight", "tradeoff"):
        if any(r.label == "FID-nonstandard" for r in rows):
            notes.append("The Inception weights given ($EDGEGEN_FID_WEIGHTS) are not the official FID weights: image "
                         "quality is FID-nonstandard, not comparable with published FID.")
        if any(r.label == "FID-proxy" for r in rows):
            notes.append("Without the standard Inception weights ($EDGEGEN_FID_WEIGHTS) image quality is FID-proxy, "
                         "not comparable with published FID.")
        notes.append(f"Data: the datasets under {ctx.data_dir or 'the data root'}"
                     " (on the development machines, staged subsets: CIFAR-10 5,085 train / 1,017 test images, "
                     "CelebA 4,000 images, OpenWebText about 0.5 MB, WikiText-2 test); the row labels give the "
                     "sample counts used. CIFAR-10 has no validation split: its test split also served to pick "
                     "the best checkpoint, and the tables use the last one.")
    return notes + ctx.table_notes.get(table, [])


def _cpu() -> str:
    from edgegen.tracking import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} cores"


def _table_markdown(name: str, spec: dict, rows: list, ctx: Context, error: str | None, papers: dict) -> str:
    cited = sorted({pv["cited_from"] for pv in (spec.get("values") or {}).values() if pv.get("cited_from")})
    head = (f"## {name}: {spec['title']}\n\n{papers['papers'][spec['paper']]}, {spec['table']}. Preset "
            f"`{ctx.preset}`, seeds {ctx.seeds}."
            + "".join(f" The paper column's cells marked (cited) are figures of {papers['papers'][c]}, not of this "
                      "table's paper." for c in cited) + "\n\n")
    if error:
        return head + f"**Not filled**: {error}\n"
    lines = ["| quantity | paper | ours (mean +- std over seeds) | n | label | note |", "|---|---|---|---|---|---|"]
    published = spec.get("values") or {}
    # A published value is shown beside our row of the same key, or of the key its ``row`` names
    # (a related quantity: the note says how they differ).
    beside = {pv.get("row", k): pv for k, pv in published.items()}
    for r in rows:
        st = _stat(r.values)
        pv = beside.get(r.key)
        paper = "-" if pv is None else (_fmt(pv["value"]) + (f" +- {_fmt(pv['std'])}" if pv.get("std") else ""))
        lacking = len(r.values) - st["n"]
        note = "; ".join(filter(None, (r.note, f"no finite value for {lacking} of {len(r.values)} seeds (left out of "
                                               "the mean)" if lacking else "")))
        if pv is not None and pv.get("cited_from"):
            paper += " (cited)"
            note = "; ".join(filter(None, (note, f"cited from {papers['papers'][pv['cited_from']]}, not a value of "
                                                 f"this table's paper: {pv['source']}")))
        elif pv is not None:
            note = "; ".join(filter(None, (note, f"published: {pv['source']}")))
        lines.append(f"| {r.key} | {paper} | {_ours(st)} | {st['n']} | {r.label} | {note} |")
    missing = [k for k, pv in published.items() if pv.get("row", k) not in {r.key for r in rows}]
    body = "\n".join(lines) + "\n"
    if missing:
        body += "\nPublished but not measured here: " + ", ".join(missing) + "\n"
    if not published:
        body += ("\nThe paper's numbers for this table are not in edgegen's record of the paper "
                 "(`python/edgegen/reproduce/papers.yaml`); only our measurements are shown.\n")
    body += "\nDepartures:\n" + "\n".join(f"- {n}" for n in _departures(ctx, name, rows)) + "\n"
    return head + body


def fetch_data(root: str | None = None, log: Callable[[str], None] = print) -> list[str]:
    """Download what the reproduction can fetch by itself (official URLs, checksums verified):
    CIFAR-10, WikiText-2 and the GPT-2 vocabulary, each only if absent. CelebA (its terms ask for a
    manual download) and OpenWebText (a dataset export) must be put under the data root by hand.
    Returns what was checked."""
    from edgegen.data.cifar import CIFAR10
    from edgegen.data.tokenizer import download_gpt2_tokenizer
    from edgegen.data.wikitext import WikiText2

    done = []
    for name, fn in (("cifar-10", lambda: CIFAR10(root, "test", download=True)),
                     ("wikitext-2", lambda: WikiText2(root, "test", download=True)),
                     ("gpt2 vocabulary", lambda: download_gpt2_tokenizer(root))):
        log(f"data: {name} (downloaded if absent)")
        fn()
        done.append(name)
    return done


def _tracker(ctx: Context):
    from edgegen.tracking import MLflowTracker

    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(ctx.out / 'mlflow.db').resolve()}"
    return MLflowTracker(uri, "edgegen-reproduce", f"reproduce-{ctx.preset}", ctx.out)


_LABEL_SUFFIX = {"projected": "_projected", "estimated": "_estimated", "FID-proxy": "_proxy",
                 "FID-nonstandard": "_nonstandard", "WikiText-2-nonstandard": "_nonstandard"}


def _ppl_label(key: str) -> str:
    """The report label of a perplexity metric: on the published WikiText-2 file "measured" (its
    first tokens only: "(prefix)"); on another file (edited, truncated: evaluation names it
    ``*_nonstandard``) "WikiText-2-nonstandard"."""
    label = "WikiText-2-nonstandard" if key.endswith("_nonstandard") else "measured"
    return label + (" (prefix)" if "_prefix" in key else "")


def metric_key(key: str, label: str = "measured") -> str:
    """The MLflow metric name of a report row (the characters MLflow allows), with the row's label
    (projected / estimated / FID-proxy) in the name unless the name already carries it."""
    from edgegen.tracking import _metric_name

    name = key.replace("%", "pct")
    suffix = next((v for k, v in _LABEL_SUFFIX.items() if label.startswith(k)), "")
    if suffix and suffix.strip("_") not in name:
        name += suffix
    return _metric_name(name)


def _earlier_tables(ctx: Context, names: list) -> tuple[dict, str]:
    """The tables of ``results.json`` in the output folder that this run does not rebuild, when
    the earlier run had the same preset, seeds and fingerprint (recipes, data root,
    :data:`STEPS_VERSION`); else none, and a sentence
    for the report saying that the earlier results were replaced."""
    path = ctx.out / "results.json"
    if not path.is_file():
        return {}, ""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        same = (old["preset"], old["seeds"]) == (ctx.preset, ctx.seeds)
        held = {n: t for n, t in old["tables"].items() if n in TABLES and n not in names}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return {}, f"The earlier results.json in this folder could not be read ({exc}): replaced, not merged. "
    if same and "fingerprint" not in old:
        return {}, (f"The earlier results.json in this folder (preset {old['preset']}, seeds {old['seeds']}) was "
                    "written without a fingerprint of its recipes, data root and measurement definitions (by an "
                    "earlier edgegen): replaced, not merged. ")
    if not same or old["fingerprint"] != ctx.fingerprint:
        return {}, (f"The earlier results.json in this folder (preset {old['preset']}, seeds {old['seeds']}) came "
                    "from other settings (preset, seeds, recipes, data root or edgegen's measurement definitions): "
                    "replaced, not merged. ")
    return held, ""


def reproduce(table: str = "all", preset: str = "cpu-smoke", seeds=(0, 1, 2), out_dir="reproduce",
              force: bool = False, data_root: str | None = None, log: Callable[[str], None] = print,
              track: bool = True, recipes: dict | None = None, download: bool = False) -> dict:
    """Rebuild ``table`` (one of :data:`TABLES`, or "all") at ``preset``; returns
    ``{"report": path, "tables": {name: {"rows": [...], "error": ..., "notes": [...]}}, "steps_done",
    "steps_skipped"}`` (the tables of this run). ``results.json`` and the report keep the other
    tables an earlier run into ``out_dir`` left, when it had the same preset, seeds, recipes and
    data root (else they are replaced, and the report says so). ``recipes`` replaces
    ``recipes.yaml`` (same layout), e.g. to try other model sizes; ``download`` first fetches the
    datasets that can be fetched (:func:`fetch_data`)."""
    papers = load_papers()
    names = list(TABLES) if table == "all" else [table]
    unknown = [n for n in names if n not in TABLES]
    if unknown:
        raise ValueError(f"table: unknown {unknown[0]!r}; expected one of {', '.join(TABLES)} or all")
    recipes = check_recipes(recipes if recipes is not None else load_recipes())
    if preset not in recipes["presets"]:
        raise ValueError(f"preset: table {table!r} has no preset {preset!r}; expected one of "
                         f"{', '.join(recipes['presets'])}")
    seeds = check_seeds(seeds)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if download:
        fetch_data(data_root, log)
    ctx = Context(preset, seeds, out, force, data_root, log, recipes)
    t0 = time.perf_counter()
    tracker = _tracker(ctx) if track else None
    held, replaced = _earlier_tables(ctx, names)
    if replaced:
        log(replaced.strip())
    results = {}
    for name in names:
        log(f"[{name}] {papers['tables'][name]['title']}")
        try:
            rows = BUILDERS[name](ctx)
            # A value that is not a finite number (an R^2 of a quality that did not vary) is null:
            # n/a in the report, left out of the mean and of MLflow.
            entry = {"rows": [{"key": r.key, "values": [v if _is_finite(v) else None for v in r.values],
                               "label": r.label, "note": r.note, **_stat(r.values)} for r in rows], "error": None}
        except FileNotFoundError as exc:  # a missing dataset: this table cannot be filled, the others can
            entry = {"rows": [], "error": str(exc) or repr(exc)}
        except Exception as exc:  # noqa: BLE001 - recorded in the report and the run, the other tables go on
            entry = {"rows": [], "error": f"{type(exc).__name__}: {exc}"}
            log(traceback.format_exc())
        error = entry["error"]
        results[name] = dict(entry, notes=ctx.table_notes.get(name, []))
        if tracker is not None:
            child = tracker.child(name, None)
            child.log_params({"table": name, "preset": preset, "seeds": ",".join(map(str, seeds))})
            child.log_metrics({metric_key(r["key"], r["label"]): r["mean"] for r in entry["rows"]
                               if r["mean"] is not None}, 0)
            child.set_tags({"error": error[:4000]} if error else {"error": ""})
            child.finish("FAILED" if error else "FINISHED")
        if error:
            log(f"  not filled: {error.splitlines()[0]}")
    minutes = (time.perf_counter() - t0) / 60
    tables = {n: results[n] if n in results else held[n] for n in TABLES if n in results or n in held}
    ctx.table_notes.update({n: t.get("notes", []) for n, t in held.items()})
    sections = [_table_markdown(n, papers["tables"][n], [Row(r["key"], r["values"], r["label"], r["note"])
                                                         for r in t["rows"]], ctx, t["error"], papers)
                for n, t in tables.items()]
    kept = (f"Kept from an earlier run into this folder (same preset, seeds, recipes and data root): "
            f"{', '.join(held)}; this run rebuilt {', '.join(names)}. " if held else "")
    header = (f"# edgegen reproduction: {', '.join(tables)}\n\nPreset `{preset}`, seeds {seeds}, machine: {_cpu()}; "
              f"torch {torch.__version__}. This run: {minutes:.1f} min ({len(ctx.done_steps)} steps computed, "
              f"{len(set(ctx.skipped_steps) - set(ctx.done_steps))} reused from an earlier run). {kept}{replaced}"
              "Labels: measured (this machine), estimated "
              "(no meter: CPU time x a stated power), projected (roofline from public device figures), FID-proxy "
              "(a proxy network, not Inception), FID-nonstandard (Inception with weights other than the official ones), WikiText-2-nonstandard (a WikiText-2 file other than the published one).\n\nFigures: `figures/`. Every number is also in `results.json` "
              "and the MLflow runs under experiment `edgegen-reproduce`.\n\n")
    report = out / "REPORT.md"
    atomic.write_text(report, header + "\n".join(sections))
    atomic.write_json(out / "results.json", {"preset": preset, "seeds": seeds, "fingerprint": ctx.fingerprint,
                                             "tables": tables}, indent=1, default=float)
    if tracker is not None:
        tracker.log_artifact(report)
        tracker.finish("FINISHED")
    return {"report": str(report), "tables": results, "steps_done": ctx.done_steps,
            "steps_skipped": ctx.skipped_steps, "minutes": minutes}
