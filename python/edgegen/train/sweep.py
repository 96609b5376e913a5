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
from pathlib import Path

from edgegen.analysis.stats import paired_ttest, summarize
from edgegen.config import load_yaml, merge
from edgegen.train.config import load_experiment

_SWEEP_KEYS = {"name", "metric", "baseline", "base", "variants", "alpha"}


def _parse(source) -> dict:
    data = load_yaml(source) if not isinstance(source, dict) else dict(source)
    if "variants" not in data:
        return {"name": data.get("name", "experiment"), "metric": "val_loss", "baseline": "base", "alpha": 0.05,
                "base": data, "variants": {"base": {}}}
    unknown = sorted(set(data) - _SWEEP_KEYS)
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown key in a sweep file (expected {sorted(_SWEEP_KEYS)})")
    if not isinstance(data["variants"], dict) or not data["variants"]:
        raise ValueError("variants: expected a mapping of variant name -> config overrides")
    base = data.get("base", {})
    if isinstance(base, str):
        base = load_yaml(base)
    out = {"name": data.get("name", "sweep"), "metric": data.get("metric", "val_loss"),
           "baseline": data.get("baseline", next(iter(data["variants"]))), "alpha": float(data.get("alpha", 0.05)),
           "base": base, "variants": data["variants"]}
    if out["baseline"] not in out["variants"]:
        raise ValueError(f"baseline: {out['baseline']!r} is not one of the variants {sorted(out['variants'])}")
    return out


def run_sweep(source, seeds, preset=None, overrides=(), resume: bool = False, progress=None) -> dict:
    from edgegen.tracking import make_tracker
    from edgegen.train.loop import train_experiment

    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"--seeds: expected distinct seeds, got {seeds}")
    sw = _parse(source)
    configs = {}
    for variant, changes in sw["variants"].items():
        for seed in seeds:
            data = merge(merge(sw["base"], changes or {}), {"name": f"{sw['name']}-{variant}", "train": {"seed": seed}})
            configs[(variant, seed)] = load_experiment(data, preset, overrides)
    first = next(iter(configs.values()))
    out_dir = Path(first.output_dir) / sw["name"]
    parent = make_tracker(first.tracking, sw["name"], out_dir)
    parent.log_params({"sweep.variants": ",".join(sw["variants"]), "sweep.seeds": ",".join(map(str, seeds)),
                       "sweep.metric": sw["metric"], "sweep.baseline": sw["baseline"]})
    results: dict[str, list[float]] = {v: [] for v in sw["variants"]}
    status = "FAILED"
    try:
        for (variant, seed), cfg in configs.items():
            run_dir = out_dir / variant / f"seed{seed}"
            child = make_tracker(cfg.tracking, f"{variant}/seed{seed}", run_dir, parent=parent)
            child_status = "FAILED"
            try:
                res = train_experiment(cfg, run_dir, child, resume=resume, progress=progress)
                child_status = "FINISHED"
            finally:
                child.finish(child_status)
            final = res["final"]
            if sw["metric"] not in final:
                raise ValueError(f"metric: {sw['metric']!r} is not among the final metrics {sorted(final)}")
            results[variant].append(float(final[sw["metric"]]))
        status = "FINISHED"
    finally:
        if status != "FINISHED":
            parent.finish(status)
    rows = []
    base_vals = results[sw["baseline"]]
    for variant, vals in results.items():
        s = summarize(vals)
        row = {"variant": variant, "n": s.n, "mean": s.mean, "std": s.std, "ci95_low": s.ci_low,
               "ci95_high": s.ci_high, "values": " ".join(f"{v:.6g}" for v in vals)}
        if variant != sw["baseline"] and len(vals) >= 2:
            t = paired_ttest(base_vals, vals, sw["alpha"])
            row.update({"diff_vs_baseline": t["mean_diff"], "t": t["t"], "p": t["p"], "significant": t["significant"]})
        rows.append(row)
    out_dir.mkdir(parents=True, exist_ok=True)
    fields = ["variant", "n", "mean", "std", "ci95_low", "ci95_high", "diff_vs_baseline", "t", "p", "significant",
              "values"]
    with open(out_dir / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in fields})
    md = [f"{sw['name']}: final {sw['metric']} over seeds {seeds} (paired t-test vs {sw['baseline']!r}, "
          f"alpha {sw['alpha']})", "",
          "| variant | mean +- std | 95% CI | diff vs baseline | p | significant |",
          "| --- | --- | --- | ---: | ---: | --- |"]
    for r in rows:
        ci = f"{r['ci95_low']:.4g} .. {r['ci95_high']:.4g}" if r["n"] > 1 else "n/a"
        diff = f"{r['diff_vs_baseline']:+.4g}" if "diff_vs_baseline" in r else ""
        p = f"{r['p']:.3g}" if "p" in r else ""
        sig = ("yes" if r["significant"] else "no") if "significant" in r else ""
        md.append(f"| {r['variant']} | {r['mean']:.4g} +- {r['std']:.2g} | {ci} | {diff} | {p} | {sig} |")
    text = "\n".join(md) + "\n"
    (out_dir / "summary.md").write_text(text, encoding="utf-8")
    parent.log_artifact(out_dir / "summary.csv")
    parent.log_artifact(out_dir / "summary.md")
    for r in rows:
        parent.log_metrics({f"{r['variant']}/mean": r["mean"], f"{r['variant']}/std": r["std"]}, 0)
    parent.finish("FINISHED")
    return {"rows": rows, "markdown": text, "dir": str(out_dir)}
