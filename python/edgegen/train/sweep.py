"""Seed sweeps and ablations: every variant x seed as a nested MLflow run, then mean +- std, 95%
confidence intervals and paired t-tests against the baseline (alpha 0.05).

A sweep file is an experiment config, or::

    name: vae-ablation
    metric: val_loss            # the final validation metric compared (lower is better)
    baseline: fp32
    base: {task: vae, ...}      # the experiment every variant starts from
    variants:
      fp32: {}
      qat:  {compress: {qat: true}}
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from edgegen import _atomic as atomic
from edgegen.analysis.stats import paired_ttest, summarize
from edgegen.config import load_yaml, merge
from edgegen.train.config import load_experiment

_SWEEP_KEYS = {"name", "metric", "baseline", "base", "variants", "alpha"}


def _mapping_or_none(value, key: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{key}: expected a mapping of config keys (or nothing), got {type(value).__name__} "
                         f"{value!r}")
    return value


def _parse(source) -> dict:
    data = load_yaml(source) if not isinstance(source, dict) else dict(source)
    if "variants" not in data:
        name = data.get("name", "experiment")
        if not isinstance(name, str) or not name:
            raise ValueError(f"name: expected a non-empty string, got {name!r}")
        return {"name": name, "metric": "val_loss", "baseline": "base", "alpha": 0.05,
                "base": data, "variants": {"base": {}}}
    unknown = sorted(set(data) - _SWEEP_KEYS)
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown key in a sweep file (expected {sorted(_SWEEP_KEYS)})")
    if not isinstance(data["variants"], dict) or not data["variants"]:
        raise ValueError("variants: expected a mapping of variant name -> config overrides")
    variants = {v: _mapping_or_none(o, f"variants.{v}") for v, o in data["variants"].items()}
    for key, default in (("name", "sweep"), ("metric", "val_loss")):
        value = data.get(key, default)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{key}: expected a non-empty string, got {value!r}")
    base = data.get("base", {})
    if isinstance(base, str):
        path = Path(base)
        if not path.is_absolute() and not isinstance(source, dict):
            # beside the sweep file; a path that only exists from the working directory still works
            beside = Path(source).parent / path
            path = beside if beside.is_file() or not path.is_file() else path
        base = load_yaml(path)
    base = _mapping_or_none(base, "base")
    alpha = data.get("alpha", 0.05)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise ValueError(f"alpha: expected a number strictly between 0 and 1, got {alpha!r}")
    out = {"name": data.get("name", "sweep"), "metric": data.get("metric", "val_loss"),
           "baseline": data.get("baseline", next(iter(variants))), "alpha": float(alpha),
           "base": base, "variants": variants}
    if out["baseline"] not in out["variants"]:
        raise ValueError(f"baseline: {out['baseline']!r} is not one of the variants {sorted(out['variants'])}")
    if not 0 < out["alpha"] < 1:
        raise ValueError(f"alpha: expected a significance level strictly between 0 and 1, got {out['alpha']}")
    from edgegen.tracking import _metric_name

    by_name: dict[str, str] = {}
    for v in out["variants"]:
        other = by_name.setdefault(_metric_name(v), v)
        if other != v:
            raise ValueError(f"variants: {other!r} and {v!r} both become the MLflow metric name {_metric_name(v)!r}; "
                             "rename one")
    return out


def _fmt(v, spec: str = ".4g") -> str:
    return "n/a" if v is None or v != v else format(v, spec)


def run_sweep(source, seeds, preset=None, overrides=(), resume: bool = False, progress=None, only=None,
              log=None) -> dict:
    """Every variant (or those named in ``only``) x seed, as nested tracked runs. A variant whose
    run fails is recorded (the error in its run and in the summary) and the others go on; the
    summary then says which failed."""
    import sys
    import traceback

    from edgegen.tracking import _metric_name, make_tracker
    from edgegen.train.loop import train_experiment

    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"--seeds: expected distinct seeds, got {seeds}")
    seeded = [o for o in overrides if str(o).split("=", 1)[0].strip() == "train.seed"]
    if seeded:
        raise ValueError(f"--set: {seeded[0]!r}: a sweep sets train.seed for each run from --seeds; give the seeds "
                         "there")
    sw = _parse(source)
    variants = list(sw["variants"])
    if only:
        unknown = [v for v in only if v not in sw["variants"]]
        if unknown:
            raise ValueError(f"--only: unknown variant {unknown[0]!r}; expected names from {variants}")
        variants = [v for v in variants if v in only]
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    configs, reported = {}, set()

    def report(line: str) -> None:  # each replacement once, however many variants and seeds share it
        if line not in reported:
            reported.add(line)
            log(line)

    for variant in variants:
        for seed in seeds:
            data = merge(merge(sw["base"], sw["variants"][variant] or {}),
                         {"name": f"{sw['name']}-{variant}", "train": {"seed": seed}})
            configs[(variant, seed)] = load_experiment(data, preset, overrides, report=report)
    from edgegen.train.tasks import TASKS

    for (variant, _), cfg in configs.items():  # a misspelt metric fails now, not after every run
        names = TASKS[cfg.task].val_metrics
        if sw["metric"] not in names:
            raise ValueError(f"metric: {sw['metric']!r} is not a validation metric of variant {variant!r} (task "
                             f"{cfg.task!r}: {', '.join(names)})")
    first = next(iter(configs.values()))
    out_dir = Path(first.output_dir) / sw["name"]
    if not resume:
        from edgegen.train.loop import check_run_dir_free

        for v, s in configs:
            try:
                check_run_dir_free(out_dir / v / f"seed{s}")
            except FileExistsError as exc:
                raise FileExistsError(f"output_dir: the sweep's folder {out_dir} already holds runs ({exc}); resume "
                                      "them (--resume) or give the sweep another name or output_dir") from None
    from edgegen.train.loop import prepare_run_dir

    prepare_run_dir(out_dir, "output_dir")  # before anything is trained
    parent = make_tracker(first.tracking, sw["name"], out_dir, resume=resume)
    # The summary logged at the end covers every run, earlier selections' too: an earlier
    # command's summary records are moved aside (metrics.<time>.jsonl) rather than repeated.
    parent.start_local_log(None)
    parent.log_params({"sweep.metric": sw["metric"], "sweep.baseline": sw["baseline"]})
    # Tags, not params: a resumed sweep (--only a failed variant) may run another selection.
    parent.set_tags({"sweep.variants": ",".join(variants), "sweep.seeds": ",".join(map(str, seeds))})
    ran_failures: dict[str, str] = {}  # variant -> its first failed seed, of the runs this command did
    store = _Results(out_dir, sw["metric"], log)
    total = len(configs)
    for i, ((variant, seed), cfg) in enumerate(configs.items(), 1):
        run_dir = out_dir / variant / f"seed{seed}"
        log(f"[{i}/{total}] {variant} seed {seed}")
        child = make_tracker(cfg.tracking, f"{variant}/seed{seed}", run_dir, parent=parent, resume=resume)
        try:
            res = train_experiment(cfg, run_dir, child, resume=resume, progress=progress)
            final = res["final"]
            if sw["metric"] not in final:
                raise ValueError(f"metric: {sw['metric']!r} is not among the final metrics {sorted(final)}")
            value = float(final[sw["metric"]])
            if not math.isfinite(value):
                raise FloatingPointError(f"metric: the final {sw['metric']} is {value} (the run diverged)")
            store.put(variant, seed, value=value)
            child.finish("FINISHED")
        except KeyboardInterrupt:  # the records say where it stopped: neither run stays RUNNING
            child.finish("KILLED")
            parent.finish("KILLED")
            raise
        except Exception as exc:  # noqa: BLE001 - one failing variant must not discard the others
            msg = f"{type(exc).__name__}: {exc}"
            ran_failures.setdefault(variant, f"seed {seed}: {msg}")
            store.put(variant, seed, error=msg)
            child.set_tags({"error": msg[:4000], "error.traceback": traceback.format_exc()[-4000:]})
            child.finish("FAILED")
            log(f"  FAILED: {msg.splitlines()[0]}")
    # The summary covers every finished run of the sweep: this selection's and those an earlier
    # selection (--only) left on disk.
    results, failures, all_seeds = store.merged(list(sw["variants"]))
    shown = [v for v in sw["variants"] if v in results]
    seeds = all_seeds or seeds
    rows = []
    base_by_seed = results.get(sw["baseline"], {})
    for variant in shown:
        by_seed = results[variant]
        vals = [by_seed[s] for s in seeds if s in by_seed]
        # the paired test compares the same seeds only (a seed that failed on either side is left out)
        shared = [s for s in seeds if s in by_seed and s in base_by_seed]
        base_vals, var_vals = [base_by_seed[s] for s in shared], [by_seed[s] for s in shared]
        row = {"variant": variant, "metric_name": _metric_name(variant), "n": len(vals),
               "values": " ".join(f"{v:.6g}" for v in vals), "error": failures.get(variant, "")}
        if vals:
            st = summarize(vals)
            row.update(mean=st.mean, std=st.std if st.n > 1 else None,
                       ci95_low=st.ci_low if st.n >= 3 else None, ci95_high=st.ci_high if st.n >= 3 else None)
        if variant != sw["baseline"] and len(shared) >= 3:
            t = paired_ttest(base_vals, var_vals, sw["alpha"])
            row.update({"diff_vs_baseline": t["mean_diff"], "t": t["t"], "p": t["p"], "significant": t["significant"],
                        "paired_seeds": len(shared)})
        elif variant != sw["baseline"] and shared:
            row["diff_vs_baseline"] = sum(var_vals) / len(shared) - sum(base_vals) / len(shared)
            row["paired_seeds"] = len(shared)
        rows.append(row)
    out_dir.mkdir(parents=True, exist_ok=True)
    fields = ["variant", "metric_name", "n", "mean", "std", "ci95_low", "ci95_high", "diff_vs_baseline",
              "paired_seeds", "t", "p", "significant", "values", "error"]
    with atomic.replacing(out_dir / "summary.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k, "")) for k in fields})
    few = len(seeds) < 3
    md = [f"{sw['name']}: final {sw['metric']} over seeds {seeds} (paired t-test vs {sw['baseline']!r}, "
          f"alpha {sw['alpha']})", ""]
    if few:
        md += [f"With {len(seeds)} seed(s) there is no meaningful 95% interval or significance test (at least 3 "
               "are needed); they are shown as n/a.", ""]
    md += ["| variant | n | mean +- std | 95% CI | diff vs baseline | p | significant |",
           "| --- | ---: | --- | --- | ---: | ---: | --- |"]
    for r in rows:
        if not r["n"]:
            md.append(f"| {r['variant']} | 0 | FAILED: {r['error'][:200]} | | | | |")
            continue
        mean_std = _fmt(r["mean"]) + (f" +- {_fmt(r['std'], '.2g')}" if r["std"] is not None else " (n = 1)")
        ci = f"{_fmt(r['ci95_low'])} .. {_fmt(r['ci95_high'])}" if r.get("ci95_low") is not None else "n/a"
        diff = f"{r['diff_vs_baseline']:+.4g}" if r.get("diff_vs_baseline") is not None else ""
        p = _fmt(r.get("p"), ".3g") if "p" in r else ("" if r["variant"] == sw["baseline"] else "n/a")
        sig = ("yes" if r["significant"] else "no") if "significant" in r else \
            ("" if r["variant"] == sw["baseline"] else "n/a")
        err = f" (failed seeds: {r['error'][:120]})" if r["error"] else ""
        alias = f" (MLflow: {r['metric_name']})" if r["metric_name"] != r["variant"] else ""
        md.append(f"| {r['variant']}{alias}{err} | {r['n']} | {mean_std} | {ci} | {diff} | {p} | {sig} |")
    if failures:
        md += ["", "Failed: " + "; ".join(f"{v}: {e.splitlines()[0][:300]}" for v, e in failures.items())]
    text = "\n".join(md) + "\n"
    atomic.write_text(out_dir / "summary.md", text)
    parent.log_artifact(out_dir / "summary.csv")
    parent.log_artifact(out_dir / "summary.md")
    for r in rows:
        if r["n"]:
            m = {f"{r['metric_name']}/mean": r["mean"]}
            if r["std"] is not None:
                m[f"{r['metric_name']}/std"] = r["std"]
            parent.log_metrics(m, 0)
    if ran_failures:
        parent.set_tags({"failed_variants": ",".join(ran_failures)})
    parent.finish("FAILED" if ran_failures else "FINISHED")
    return {"rows": rows, "markdown": text, "dir": str(out_dir), "failed": sorted(ran_failures)}


class _Results:
    """``<sweep folder>/results.json``: the final metric (or the error) of every run the sweep
    did, whichever selection ran it, rewritten after each run so that an interrupted sweep keeps
    what it measured. Earlier runs whose folder no longer holds a checkpoint are left out."""

    FILE = "results.json"

    def __init__(self, out_dir: Path, metric: str, log):
        self.out_dir, self.metric, self.log = out_dir, metric, log
        self.runs: dict[str, dict[str, dict]] = {}
        self.now: set[tuple[str, str]] = set()  # the runs this sweep did (the others are checked on disk)
        path = out_dir / self.FILE
        if path.is_file():
            import json

            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if not isinstance(data, dict) or not isinstance(data.get("runs"), dict):
                    raise ValueError("expected an object with metric and runs")
            except ValueError as exc:
                log(f"  {path}: not readable ({exc}); the summary covers this selection only")
                return
            if data.get("metric") != metric:
                log(f"  {path}: earlier runs compared {data.get('metric')!r}, not {metric!r}; the summary covers "
                    "this selection only")
                return
            self.runs = {str(v): dict(by_seed) for v, by_seed in data["runs"].items() if isinstance(by_seed, dict)}

    def put(self, variant, seed: int, **entry) -> None:
        self.runs.setdefault(str(variant), {})[str(seed)] = entry
        self.now.add((str(variant), str(seed)))
        atomic.write_json(self.out_dir / self.FILE, {"metric": self.metric, "runs": self.runs}, indent=1)

    def _on_disk(self, variant, seed: str, finished: bool) -> bool:
        run = self.out_dir / str(variant) / f"seed{seed}"
        if not finished:  # a failed run may have died before its first checkpoint
            return run.is_dir()
        return (run / "checkpoints" / "last.pt").is_file() or any(run.glob("stage*/checkpoints/last.pt"))

    def merged(self, variants: list) -> tuple[dict, dict[str, str], list[int]]:
        """variant -> seed -> value (every variant with a run, in the file's order), variant -> its
        first failed seed's error, and every seed."""
        values: dict = {}
        errors: dict[str, str] = {}
        seeds: set[int] = set()
        unknown = [f"{variant}/{run.name}" for variant in variants
                   for run in sorted((self.out_dir / str(variant)).glob("seed*"))
                   if run.name[4:].isdigit() and run.name[4:] not in self.runs.get(str(variant), {})
                   and self._on_disk(variant, run.name[4:], True)]
        if unknown:  # finished by an edgegen that kept no results.json: their metric is not known here
            self.log(f"  not in the summary: {', '.join(unknown)} (trained before {self.FILE} was kept; run the "
                     "sweep again with --resume and without --only to add them: finished runs are not trained again)")
        for variant in variants:
            by_seed = self.runs.get(str(variant), {})
            for seed in sorted(by_seed, key=int):
                entry = by_seed[seed]
                if (str(variant), seed) not in self.now and not self._on_disk(variant, seed, "value" in entry):
                    continue  # the run was deleted since
                values.setdefault(variant, {})
                seeds.add(int(seed))
                if "value" in entry:
                    value = entry["value"]  # None: a metric that was not finite (strict JSON has no NaN)
                    values[variant][int(seed)] = float("nan") if value is None else float(value)
                else:
                    errors.setdefault(variant, f"seed {seed}: {entry.get('error', 'failed')}")
        return values, errors, sorted(seeds)
