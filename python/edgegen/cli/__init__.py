"""``edgegen`` command line (also ``python -m edgegen``):

    edgegen train CONFIG [--preset P] [--set key=value ...] [--resume] [--run-dir DIR]
    edgegen compress CONFIG ...          (a config with a compress section: prune / QAT in training)
    edgegen sweep CONFIG --seeds 0 1 2   (every variant x seed as nested runs; statistics table)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="experiment YAML file")
    p.add_argument("--preset", choices=["paper", "cpu-small", "cpu-smoke"],
                   help="scale the recipe (applied over the file, under --set)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, dotted for sections (e.g. --set optim.lr=1e-3); repeatable")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="edgegen", description="Train, compress and sweep edgegen experiments "
                                 "defined as YAML configs; every run is tracked in MLflow.")
    sub = ap.add_subparsers(dest="command", required=True)
    for name, help_ in (("train", "train one experiment"),
                        ("compress", "train with the config's compress section (pruning, QAT)")):
        p = sub.add_parser(name, help=help_, description=help_)
        _common(p)
        p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
        p.add_argument("--run-dir", help="where checkpoints go (default <output_dir>/<name>/seed<seed>)")
    p = sub.add_parser("sweep", help="run variants x seeds and compare them",
                       description="Run every variant of the config (or the config alone) once per seed, as "
                                   "nested MLflow runs, and write mean +- std, 95% CIs and paired t-tests "
                                   "against the baseline to <output_dir>/<name>/summary.{csv,md}.")
    _common(p)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    p.add_argument("--resume", action="store_true", help="resume unfinished runs, skip finished ones")
    return ap


def _train(args, require_compress: bool) -> int:
    from edgegen.tracking import make_tracker
    from edgegen.train import load_experiment
    from edgegen.train.loop import default_run_dir, train_experiment

    cfg = load_experiment(args.config, args.preset, args.overrides)
    if require_compress and cfg.compress is None:
        print(f"edgegen compress: {args.config} has no compress section (prune and/or qat)", file=sys.stderr)
        return 2
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(cfg)
    tracker = make_tracker(cfg.tracking, cfg.name, run_dir)
    status = "FAILED"
    try:
        result = train_experiment(cfg, run_dir, tracker, resume=args.resume,
                                  progress=False if args.no_progress else None)
        status = "FINISHED"
    finally:
        tracker.finish(status)
    print(json.dumps(result, indent=2, default=str))
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command in ("train", "compress"):
            return _train(args, args.command == "compress")
        from edgegen.train.sweep import run_sweep

        summary = run_sweep(args.config, args.seeds, args.preset, args.overrides, resume=args.resume,
                            progress=False if args.no_progress else None)
        print(summary["markdown"])
        return 0
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"edgegen {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
