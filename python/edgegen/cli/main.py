"""The ``edgegen`` command line: the argument parser and what each command runs."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="experiment YAML file")
    p.add_argument("--preset", choices=["paper", "cpu-small", "cpu-smoke"],
                   help="scale the recipe: replaces the file's values (each one printed), under --set")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, dotted for sections (e.g. --set optim.lr=1e-3); repeatable")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="edgegen", description="Train, compress and sweep edgegen experiments "
                                 "defined as YAML configs; every run is tracked in MLflow.")
    sub = ap.add_subparsers(dest="command", required=True)
    for name, help_ in (("train", "train one experiment"),
                        ("compress", "train with the config's compress section (gradual pruning, QAT, post-training "
                                     "quantization at the end), or with --from compress a trained run without "
                                     "training (one-shot pruning and/or post-training quantization)")):
        p = sub.add_parser(name, help=help_, description=help_)
        _common(p)
        p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
        p.add_argument("--run-dir", help="where checkpoints go (default <output_dir>/<name>/seed<seed>)")
        if name == "compress":
            p.add_argument("--from", dest="source", metavar="RUN_DIR",
                           help="compress this trained run (its last checkpoint) without training: one-shot "
                                "pruning (+ shrink) and/or post-training quantization from CONFIG's compress "
                                "section (--set compress.* changes it; --preset and --resume do not apply); "
                                "written to --run-dir (default RUN_DIR-<what>) and tracked as a new MLflow run "
                                "(CONFIG's tracking section, else the source run's)")
    p = sub.add_parser("sweep", help="run variants x seeds and compare them",
                       description="Run every variant of the config (or the config alone) once per seed, as "
                                   "nested MLflow runs, and write mean +- std, 95% CIs and paired t-tests "
                                   "against the baseline to <output_dir>/<name>/summary.{csv,md}.")
    _common(p)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    p.add_argument("--resume", action="store_true", help="resume unfinished runs, skip finished ones")
    p.add_argument("--only", nargs="+", metavar="VARIANT", help="run only these variants")
    p = sub.add_parser("reproduce", help="rebuild the papers' tables beside our measurements (REPORT.md)",
                       description="Train what a table needs (once per preset and seed), measure it, and write "
                                   "OUT/REPORT.md with the published numbers beside ours, figures and results.json; "
                                   "logged to MLflow. Rerunning skips finished steps.")
    p.add_argument("table", help="one of size, latency, memory, power, headline, quality, lightweight, tradeoff, or all")
    p.add_argument("--preset", default="cpu-smoke", help="cpu-smoke (minutes), cpu-small, paper (a GPU machine)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    p.add_argument("--out", default="reproduce", help="output folder (default ./reproduce)")
    p.add_argument("--force", action="store_true", help="recompute every step, even those already done")
    p.add_argument("--data-root", help="datasets folder (default $EDGEGEN_DATA_DIR)")
    p.add_argument("--no-log", action="store_true", help="do not log to MLflow")
    p.add_argument("--download", action="store_true",
                   help="first download CIFAR-10, WikiText-2 and the GPT-2 vocabulary if absent (CelebA and "
                        "OpenWebText are placed by hand)")
    for name, help_ in (("eval", "evaluate trained runs: quality, size, speed, energy; logged to their MLflow run"),
                        ("compare", "evaluate several runs and put them in one table (Markdown, CSV, plot)")):
        p = sub.add_parser(name, help=help_, description=help_)
        if name == "eval":
            p.add_argument("run", help="a run folder (or a checkpoint file inside one)")
        else:
            p.add_argument("runs", nargs="+", help="run folders")
            p.add_argument("--out", help="write compare.md / compare.csv / compare.png here")
        p.add_argument("--metrics", default="",
                       help="comma-separated: fid, kid, prdc (precision, recall, density, coverage), vae (ELBO, "
                            "SSIM/PSNR of reconstructions), ssim, ppl, bleu, text (default: those of the model kind)")
        p.add_argument("--profile", action=argparse.BooleanOptionalAction, default=name == "compare",
                       help="measure parameters, FLOPs, size, latency, memory, energy" +
                            (" (on by default here; --no-profile: off)" if name == "compare" else ""))
        p.add_argument("--device-profile", action="append", default=[], metavar="DEVICE",
                       help="also project latency and energy onto rpi4, jetson-nano or pixel6 (repeatable)")
        p.add_argument("--onnx", action="store_true",
                       help="also export to ONNX (float and ONNX Runtime INT8) and time it in ONNX Runtime "
                            "(needs the export extra)")
        p.add_argument("--samples", type=int, default=1000, help="generated images for FID (default 1000, at least 2)")
        p.add_argument("--data-root", help="datasets folder (default $EDGEGEN_DATA_DIR if set, else the folder the "
                                           "run recorded); evaluation never downloads")
        p.add_argument("--max-tokens", type=int, help="perplexity on this many WikiText-2 tokens (a labelled "
                                                      "prefix) instead of the whole test split")
        p.add_argument("--fid-extractor", choices=["auto", "inception", "proxy"], default="auto",
                       help="auto: the standard Inception weights if $EDGEGEN_FID_WEIGHTS is set, else the proxy "
                            "(reported as FID-proxy)")
        p.add_argument("--which", choices=["last", "best"], default="last", help="which checkpoint")
        p.add_argument("--form", choices=["shipped", "float"], default="shipped",
                       help="the shipped model (quantized / shrunk) or the float weights")
        p.add_argument("--no-log", action="store_true", help="do not log to MLflow")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p = sub.add_parser("sample", help="draw samples of trained runs side by side: image grids from shared seeded "
                                      "latents, text continuations of the same prompts",
                       description="Load each run as it ships (or --form float), draw --n images from latents seeded "
                                   "with --seed (the same latents for every run of one latent size) or continue the "
                                   "prompts, and write OUT/<label>.png or .md (label: config, folder, checkpoint and "
                                   "form), side_by_side-*.png, the Beta-VAEs' reconstructions, samples.md and "
                                   "samples.json.")
    p.add_argument("runs", nargs="+", help="run folders (or checkpoint files inside them)")
    p.add_argument("--out", default="samples", help="output folder (default ./samples)")
    p.add_argument("--n", type=int, default=64, help="images per image run (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the latents and of the text sampler (default 0)")
    p.add_argument("--which", choices=["last", "best"], default="last", help="which checkpoint")
    p.add_argument("--form", choices=["shipped", "float"], default="shipped",
                   help="the shipped model (quantized / shrunk) or the float weights")
    p.add_argument("--prompt", dest="prompts", action="append", metavar="TEXT",
                   help="a text prompt for GPT-2-vocabulary runs (repeatable; default <|endoftext|>: unconditional)")
    p.add_argument("--prompt-ids", action="append", metavar="IDS",
                   help="a prompt as token ids separated by spaces or commas, e.g. '464 2068' (repeatable)")
    p.add_argument("--max-new-tokens", type=int, default=40, help="new tokens per prompt (default 40)")
    p.add_argument("--greedy", action="store_true", help="take the most likely token instead of sampling")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1)")
    p.add_argument("--top-k", type=int, default=50, help="sample from the k most likely tokens (default 50; 0: all)")
    p.add_argument("--top-p", type=float, help="nucleus sampling: the most likely tokens holding this mass")
    p.add_argument("--data-root", help="datasets folder holding gpt2/ (the tokenizer) and the Beta-VAE runs' held-out "
                                       "images (default $EDGEGEN_DATA_DIR, else the run's own)")
    p.add_argument("--reconstructions", choices=["auto", "yes", "no"], default="auto",
                   help="Beta-VAE reconstructions of held-out images: where the data is (auto), required, or none")
    return ap


def _prompt_ids(texts):
    """--prompt-ids values as lists of ints, or a ValueError naming the flag."""
    if not texts:
        return None
    out = []
    for text in texts:
        parts = text.replace(",", " ").split()
        try:
            out.append([int(t) for t in parts])
        except ValueError:
            raise ValueError(f"--prompt-ids: expected token ids separated by spaces or commas, got {text!r}") from None
        if not out[-1]:
            raise ValueError(f"--prompt-ids: expected at least one token id, got {text!r}")
    return out


def _sample(args) -> int:
    from edgegen.eval.run_samples import sample_runs

    if args.top_k is not None and args.top_k < 0:
        raise ValueError(f"--top-k: expected an int >= 0 (0: no top-k filter), got {args.top_k}")
    res = sample_runs(args.runs, args.out, n=args.n, seed=args.seed, which=args.which, form=args.form,
                      prompts=args.prompts, prompt_ids=_prompt_ids(args.prompt_ids),
                      max_new_tokens=args.max_new_tokens, greedy=args.greedy, temperature=args.temperature,
                      top_k=args.top_k or None, top_p=args.top_p, data_root=args.data_root,
                      reconstructions={"auto": None, "yes": True, "no": False}[args.reconstructions])
    for r in res["runs"]:
        print(f"{r['name']} ({r['form']}): " + ", ".join(str(Path(args.out) / f) for f in r["files"]))
        if r.get("non_finite"):
            print(f"edgegen sample: {r['run_dir']} produced {r['non_finite']} non-finite values (drawn black)",
                  file=sys.stderr)
        if r.get("recon_non_finite"):
            print(f"edgegen sample: {r['run_dir']} reconstructed with {r['recon_non_finite']} non-finite values "
                  "(drawn black)", file=sys.stderr)
        if r.get("no_reconstructions"):
            print(f"edgegen sample: {r['run_dir']}: {r['no_reconstructions']}", file=sys.stderr)
    for path in res["side_by_side"]:
        print(f"side by side: {path}")
    for path in res["reconstructions"]:
        print(f"reconstructions: {path}")
    print(f"index: {res['index']}")
    return 0


def _eval_options(args):
    from edgegen.eval.runs import EvalOptions

    return EvalOptions(metrics=tuple(m for m in args.metrics.split(",") if m.strip()), samples=args.samples,
                       fid_extractor=args.fid_extractor, max_tokens=args.max_tokens, profile=args.profile,
                       device_profiles=tuple(args.device_profile), onnx=args.onnx, data_root=args.data_root,
                       progress=not args.no_progress)


def _log_eval(result: dict, run_dir: Path, cfg, saved: Path, command: str) -> None:
    """The evaluation into the run's MLflow run (or a new one, then named in mlflow_run.json):
    metrics ``eval/<eval_id>/<name>``, tags ``eval.<eval_id>.form`` and ``eval.<eval_id>.label.<key>``,
    the saved file as an artifact. A run opened here is closed (FINISHED, or FAILED when logging
    raised); the training's own run is left as its training left it."""
    from edgegen.tracking import attach_tracker

    tracker = attach_tracker(run_dir, cfg.tracking.uri, cfg.tracking.experiment, f"{cfg.name}-eval")
    key = result["eval_id"]
    status = "FAILED"
    try:
        tracker.log_metrics({f"eval/{key}/{k}": v for k, v in result["metrics"].items()}, 0)
        tracker.set_tags({f"eval.{key}.form": result["form"],
                          **{f"eval.{key}.label.{k}": v[:4000] for k, v in result["labels"].items()}})
        tracker.log_artifact(saved)
        status = "FINISHED"
    finally:
        if not tracker.reattached:
            tracker.finish(status)
    if tracker.failed:
        print(f"edgegen {command}: MLflow logging failed; the results are in {saved}", file=sys.stderr)


def _evaluate(args) -> int:
    from edgegen.eval.runs import check_options, compare_runs, evaluate_run, load_run, run_config, save_eval

    opts = _eval_options(args)
    paths = [args.run] if args.command == "eval" else args.runs
    if getattr(args, "out", None):  # a folder that cannot take the table fails before any evaluation
        from edgegen.train.loop import prepare_run_dir

        prepare_run_dir(args.out, "--out")
    for path in paths:  # every option against every run before the first metric (configs only: no model built)
        check_options(run_config(path, args.which), opts)
    results = []
    for path in paths:
        run = load_run(path, which=args.which, form=args.form)
        result = evaluate_run(run, opts)
        saved = save_eval(result, run.run_dir)
        if not args.no_log and run.config.tracking.enabled:
            _log_eval(result, run.run_dir, run.config, saved, args.command)
        results.append(result)
    if args.command == "eval":
        _print_json(results[0])
    else:
        table = compare_runs(results, args.out)
        print(table["markdown"])
        for k, v in table["paths"].items():
            print(f"{k}: {v}")
    return 0


def _print_json(obj) -> None:
    from edgegen import _atomic

    print(_atomic.json_text(obj, indent=2, default=str))


def _compress_from(args) -> int:
    from edgegen.config import apply_overrides, from_dict, load_yaml
    from edgegen.tracking import make_tracker
    from edgegen.train.config import TrackingConfig
    from edgegen.train.loop import prepare_run_dir
    from edgegen.train.posthoc import compress_from

    for flag, given in (("--preset", args.preset), ("--resume", args.resume)):
        if given:
            raise ValueError(f"{flag}: compress --from compresses a trained run as it is, without training, so "
                             f"{flag} does not apply; leave it out (--set compress.<key>=... changes the "
                             "compress section)")
    for text in args.overrides:
        key = str(text).split("=", 1)[0].strip()
        if key.split(".")[0] not in ("compress", "tracking"):
            raise ValueError(f"--set {text!r}: compress --from uses only CONFIG's compress and tracking sections "
                             "(the rest comes from the trained run); expected compress.<key>=... or "
                             "tracking.<key>=...")
    if not Path(args.source).exists():
        raise FileNotFoundError(f"--from: {args.source} does not exist (expected a trained run's folder or a "
                                "checkpoint file)")
    data = apply_overrides(load_yaml(args.config), args.overrides)
    section = data.get("compress")
    if section is None:
        print(f"edgegen compress: {args.config} has no compress section (prune and/or ptq)", file=sys.stderr)
        return 2
    tracking = from_dict(TrackingConfig, data["tracking"], "tracking") if isinstance(data.get("tracking"), dict) \
        else None
    if args.run_dir:
        prepare_run_dir(args.run_dir, "--run-dir")

    def tracker(cfg, out_dir):
        t = make_tracker(tracking or cfg.tracking, cfg.name, out_dir)
        if getattr(t, "run_id", None):
            print(f"edgegen compress: MLflow run {t.run_id} in {t.uri} (experiment {t.experiment!r}); run folder "
                  f"{out_dir}", file=sys.stderr)
        return t

    result = compress_from(args.source, section, args.run_dir, tracker=tracker)
    _print_json(result)
    return 0


def _train(args, require_compress: bool) -> int:
    from edgegen.tracking import NullTracker, make_tracker
    from edgegen.train import load_experiment
    from edgegen.train.loop import check_run_dir_free, default_run_dir, prepare_run_dir, train_experiment

    from edgegen.train.distributed import env_rank

    main_rank = env_rank() == 0  # rank 0 alone writes the MLflow link and prints the result
    cfg = load_experiment(args.config, args.preset, args.overrides,
                          report=lambda line: main_rank and print(f"edgegen {args.command}: {line}", file=sys.stderr))
    if require_compress and cfg.compress is None:
        print(f"edgegen compress: {args.config} has no compress section (prune, qat and/or ptq); without one, "
              "use edgegen train", file=sys.stderr)
        return 2
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(cfg)
    if not args.resume:
        check_run_dir_free(run_dir)  # before a tracker replaces the folder's MLflow link
    # A folder that cannot be written fails here, before a tracker or a model is built.
    prepare_run_dir(run_dir, "--run-dir" if args.run_dir else "output_dir")
    args.resume_dir = run_dir  # for the command that resumes an interrupted run
    # Under torchrun only rank 0 opens the MLflow run, writes its link and prints the result.
    tracker = make_tracker(cfg.tracking, cfg.name, run_dir, resume=args.resume) if main_rank else NullTracker()
    if getattr(tracker, "run_id", None):
        print(f"edgegen {args.command}: MLflow run {tracker.run_id} in {tracker.uri} (experiment "
              f"{tracker.experiment!r}); run folder {run_dir}", file=sys.stderr)
    status = "FAILED"
    try:
        result = train_experiment(cfg, run_dir, tracker, resume=args.resume,
                                  progress=False if args.no_progress else None)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.finish(status)
    if main_rank:
        _print_json(result)
    return 0


def _resume_command(args) -> str | None:
    """The command that continues an interrupted train / compress / sweep, None for the others."""
    if args.command in ("train", "compress") and getattr(args, "resume_dir", None) is not None:
        cmd = ["edgegen", args.command, args.config]
    elif args.command == "sweep":
        cmd = ["edgegen", "sweep", args.config, "--seeds", *map(str, args.seeds)]
        if args.only:
            cmd += ["--only", *args.only]
    else:
        return None
    if args.preset:
        cmd += ["--preset", args.preset]
    for text in args.overrides:
        cmd += ["--set", text]
    if args.command != "sweep":
        cmd += ["--run-dir", str(args.resume_dir)]
    return shlex.join(cmd + ["--resume"])


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "compress" and args.source:
            return _compress_from(args)
        if args.command in ("train", "compress"):
            return _train(args, args.command == "compress")
        if args.command in ("eval", "compare"):
            return _evaluate(args)
        if args.command == "sample":
            return _sample(args)
        if args.command == "reproduce":
            from edgegen.reproduce import reproduce

            # Progress to stderr, as sweep and train report theirs; the report's path is the result.
            res = reproduce(args.table, args.preset, args.seeds, args.out, force=args.force, data_root=args.data_root,
                            track=not args.no_log, download=args.download,
                            log=lambda line: print(line, file=sys.stderr, flush=True))
            failed = [n for n, t in res["tables"].items() if t["error"]]
            print(f"report: {res['report']} ({res['minutes']:.1f} min)")
            if failed:
                print(f"edgegen reproduce: not filled: {', '.join(failed)} (reasons in the report)", file=sys.stderr)
            return 1 if failed else 0
        from edgegen.train.sweep import run_sweep

        summary = run_sweep(args.config, args.seeds, args.preset, args.overrides, resume=args.resume,
                            progress=False if args.no_progress else None, only=args.only)
        print(summary["markdown"])
        print(f"summary: {summary['dir']}/summary.md, summary.csv")
        if summary["failed"]:
            print(f"edgegen sweep: failed variants: {', '.join(summary['failed'])} (errors in the summary and "
                  "their runs)", file=sys.stderr)
            return 1
        return 0
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, ImportError) as exc:
        print(f"edgegen {args.command}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a disk that is full or a folder that became unwritable mid-run
        print(f"edgegen {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"edgegen {args.command}: interrupted", file=sys.stderr)
        again = _resume_command(args)
        if again is not None:
            where = f"the run folder is {args.resume_dir}; " if getattr(args, "resume_dir", None) else ""
            print(f"edgegen {args.command}: {where}continue with: {again}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
