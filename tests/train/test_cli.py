"""The edgegen CLI: --help, smoke runs of train / compress / sweep, errors naming the key."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgegen.cli import main

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path, data, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def vae_config(tmp_path, **extra):
    data = {"name": "cli-vae", "task": "vae", "model": {"kind": "vae", "latent_dim": 4},
            "data": {"name": "synthetic-images", "synthetic_size": 64, "val_batches": 1},
            "output_dir": str(tmp_path / "runs"),
            "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "cli"}}
    data.update(extra)
    return data


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["compress", "--help"], ["sweep", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    assert "usage: edgegen" in capsys.readouterr().out


def test_module_entry_point_help():
    r = subprocess.run([sys.executable, "-m", "edgegen", "--help"], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert r.returncode == 0 and "train" in r.stdout and "sweep" in r.stdout


def test_train_smoke_then_resume(tmp_path, capsys):
    cfg = write(tmp_path, vae_config(tmp_path))
    assert main(["train", cfg, "--preset", "cpu-smoke", "--set", "train.batch_size=4", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["steps"] == 4 and Path(out["checkpoint"]).is_file()
    # Resuming a finished run does no more steps.
    assert main(["train", cfg, "--preset", "cpu-smoke", "--set", "train.batch_size=4", "--resume",
                 "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 4
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("cli").experiment_id])
    # The resumed training logs into the run it started (mlflow_run.json), not into a second one.
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run_file = json.loads((Path(out["checkpoint"]).parents[1] / "mlflow_run.json").read_text())
    assert runs[0].info.run_id == run_file["run_id"]
    assert runs[0].data.params and "train/loss" in runs[0].data.metrics
    assert runs[0].data.tags.get("synthetic_data") == "true"  # random data is labelled in the run


def test_compress_needs_a_compress_section(tmp_path, capsys):
    cfg = write(tmp_path, vae_config(tmp_path))
    assert main(["compress", cfg, "--preset", "cpu-smoke", "--no-progress"]) == 2
    assert "compress section" in capsys.readouterr().err
    cfg = write(tmp_path, vae_config(tmp_path, compress={"qat": True}), "qat.yaml")
    assert main(["compress", cfg, "--preset", "cpu-smoke", "--set", "train.batch_size=4", "--no-progress"]) == 0
    assert Path(json.loads(capsys.readouterr().out)["quantized"]).is_file()


def test_bad_config_names_the_key(tmp_path, capsys):
    cfg = write(tmp_path, vae_config(tmp_path, optim={"learning_rate": 1.0}))
    assert main(["train", cfg]) == 2
    assert "optim.learning_rate" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert main(["train", write(tmp_path, vae_config(tmp_path), "ok.yaml"), "--set", "train.epochs=zero"]) == 2
    assert "train.epochs" in capsys.readouterr().err


def test_config_edges_a_new_user_hits(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: vae\nmodel: {kind: vae\n")
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.yaml:3:" in err and "invalid YAML" in err and "Traceback" not in err
    sweep = write(tmp_path, {"base": vae_config(tmp_path), "variants": {"a": {}}}, "sweep.yaml")
    assert main(["train", sweep]) == 2
    assert "sweep file" in capsys.readouterr().err
    nodata = vae_config(tmp_path)
    del nodata["data"]
    assert main(["train", write(tmp_path, nodata, "nodata.yaml")]) == 2
    assert "data: required key missing" in capsys.readouterr().err
    (tmp_path / "empty.yaml").write_text("")
    assert main(["train", str(tmp_path / "empty.yaml")]) == 2
    assert "empty" in capsys.readouterr().err
    # the preset's replacements of file values are printed
    cfg = write(tmp_path, vae_config(tmp_path, train={"epochs": 7}, tracking={"enabled": False}), "p.yaml")
    assert main(["train", cfg, "--preset", "cpu-smoke", "--set", "train.batch_size=4", "--no-progress"]) == 0
    assert "preset cpu-smoke replaces train.epochs: 7 -> 1" in capsys.readouterr().err


@pytest.mark.slow
def test_sweep_variants_and_seeds_with_statistics(tmp_path, capsys):
    base = vae_config(tmp_path)
    sweep = {"name": "abl", "metric": "val_loss", "baseline": "fp32",
             "base": {k: v for k, v in base.items() if k != "name"},
             "variants": {"fp32": {}, "pruned": {"compress": {"prune": {"kind": "MagnitudeConfig", "amount": 0.5},
                                                             "prune_begin": 0, "prune_end": 2,
                                                             "prune_frequency": 1}}}}
    path = write(tmp_path, sweep, "sweep.yaml")
    assert main(["sweep", path, "--seeds", "0", "1", "2", "--preset", "cpu-smoke", "--set", "train.batch_size=4",
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "| fp32 |" in text and "| pruned |" in text
    import csv

    rows = list(csv.DictReader(open(tmp_path / "runs" / "abl" / "summary.csv")))
    assert [r["variant"] for r in rows] == ["fp32", "pruned"]
    assert rows[0]["n"] == "3" and rows[1]["p"] != "" and rows[1]["significant"] in ("True", "False")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("cli").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 6
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)


def test_sweep_records_a_failing_variant_and_keeps_the_others(tmp_path, capsys):
    base = vae_config(tmp_path)
    sweep = {"name": "fails", "metric": "val_loss", "baseline": "fp32",
             "base": {k: v for k, v in base.items() if k != "name"},
             "variants": {"fp32": {}, "no-gpu": {"train": {"device": "cuda:7"}}, "a+b": {}}}
    path = write(tmp_path, sweep, "sweep.yaml")
    rc = main(["sweep", path, "--seeds", "0", "1", "--preset", "cpu-smoke", "--set", "train.batch_size=4",
               "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 1 and "failed variants: no-gpu" in err
    assert "| fp32 | 2 |" in out and "| no-gpu | 0 | FAILED: seed 0: ValueError: train.device" in out
    assert "no meaningful 95% interval" in out and "| n/a |" in out  # 2 seeds: no CI, no significance
    import csv

    rows = {r["variant"]: r for r in csv.DictReader(open(tmp_path / "runs" / "fails" / "summary.csv"))}
    assert rows["no-gpu"]["n"] == "0" and "train.device" in rows["no-gpu"]["error"]
    assert rows["fp32"]["ci95_low"] == "" and rows["a+b"]["p"] == ""
    assert rows["a+b"]["metric_name"] == "a_b" and "(MLflow: a_b)" in out
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("cli").experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert "a_b/mean" in parent.data.metrics and parent.data.tags["failed_variants"] == "no-gpu"
    failed = [r for r in runs if r.data.tags.get("error")]
    assert len(failed) == 2 and all(r.info.status == "FAILED" for r in failed)


def test_sweep_only_selects_variants(tmp_path, capsys):
    base = vae_config(tmp_path)
    sweep = {"name": "only", "metric": "val_loss", "baseline": "fp32",
             "base": {k: v for k, v in base.items() if k != "name"}, "variants": {"fp32": {}, "other": {}}}
    path = write(tmp_path, sweep, "sweep.yaml")
    assert main(["sweep", path, "--seeds", "0", "--only", "other", "--preset", "cpu-smoke",
                 "--set", "train.batch_size=4", "--no-progress"]) == 0
    assert "| other | 1 |" in capsys.readouterr().out
    assert main(["sweep", path, "--seeds", "0", "--only", "nope"]) == 2
    assert "--only: unknown variant 'nope'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dcgan_cifar10_ablation", "vae_celeba_ablation"])
def test_shipped_image_ablations_end_to_end(name, tmp_path, capsys):
    """Every variant of the shipped image ablations trains in cpu-smoke, the combined channel
    pruning + QAT one included (the channel tracer sees through the QAT wrappers); synthetic images
    stand in for the staged data."""
    src = yaml.safe_load((ROOT / "experiments" / f"{name}.yaml").read_text())
    src["base"].update({"output_dir": str(tmp_path / "runs"), "tracking": {"enabled": False},
                        "data": {"name": "synthetic-images", "synthetic_size": 64, "val_batches": 1}})
    path = write(tmp_path, src, "sweep.yaml")
    assert main(["sweep", path, "--seeds", "0", "--preset", "cpu-smoke", "--set", "train.batch_size=4",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "FAILED" not in out
    for variant in src["variants"]:
        assert f"| {variant}" in out


def test_paired_test_uses_the_seeds_both_sides_have(tmp_path, monkeypatch):
    """A seed that fails on one side is left out of the pairing, never paired with another seed."""
    import edgegen.train.loop as loop
    from edgegen.train.sweep import run_sweep

    def fake(cfg, run_dir, tracker=None, resume=False, progress=None):
        seed, name = cfg.train.seed, cfg.name
        if (name.endswith("base") and seed == 1) or (name.endswith("var") and seed == 3):
            raise RuntimeError("boom")
        return {"final": {"val_loss": float(seed * 10 + (1 if name.endswith("var") else 0))}}

    monkeypatch.setattr(loop, "train_experiment", fake)
    base = vae_config(tmp_path, tracking={"enabled": False})
    sweep = {"name": "pairs", "metric": "val_loss", "baseline": "base",
             "base": {k: v for k, v in base.items() if k != "name"}, "variants": {"base": {}, "var": {}}}
    out = run_sweep(sweep, [0, 1, 2, 3, 4], log=lambda m: None)
    var = next(r for r in out["rows"] if r["variant"] == "var")
    assert var["paired_seeds"] == 3  # seeds 0, 2, 4
    assert var["diff_vs_baseline"] == pytest.approx(1.0)  # each pair differs by exactly 1
    # a constant non-zero difference has no spread: t is +inf (variant above baseline), p is 0
    assert var["p"] == 0.0 and var["significant"] is True
    assert var["t"] == math.inf
    assert out["failed"] == ["base", "var"]
