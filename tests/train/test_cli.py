"""The edgegen CLI: --help, smoke runs of train / compress / sweep, errors naming the key."""

import json
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
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)


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
