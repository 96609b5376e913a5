"""The experiment files: every variant of every sweep validates (as written and under each
preset), and a smoke sweep on the staged real data runs end to end."""

import os
from pathlib import Path

import pytest

from edgegen.config import merge
from edgegen.train import load_experiment
from edgegen.train.sweep import _parse, run_sweep

EXPERIMENTS = sorted((Path(__file__).resolve().parents[2] / "experiments").glob("*.yaml"))
REAL = Path(os.environ.get("EDGEGEN_DATA_DIR", "/nonexistent"))


def test_there_are_experiment_files():
    assert len(EXPERIMENTS) >= 4


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
@pytest.mark.parametrize("preset", [None, "paper", "cpu-small", "cpu-smoke"])
def test_every_variant_validates(path, preset):
    sw = _parse(str(path))
    for name, changes in sw["variants"].items():
        cfg = load_experiment(merge(sw["base"], changes or {}), preset)
        assert cfg.task in ("gan", "vae", "lm", "distill"), name


@pytest.mark.slow
@pytest.mark.skipif(not (REAL / "celeba").is_dir(), reason="EDGEGEN_DATA_DIR does not hold celeba/")
def test_vae_ablation_smoke_on_real_celeba(tmp_path):
    sw = _parse(str(next(p for p in EXPERIMENTS if p.name == "vae_celeba_ablation.yaml")))
    sw["variants"] = {k: sw["variants"][k] for k in ("baseline", "ptq-int8-dynamic", "prune-50")}
    sw["base"] = merge(sw["base"], {"output_dir": str(tmp_path / "runs"), "data": {"root": str(REAL)},
                                    "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}})
    out = run_sweep(sw, [0, 1], "cpu-smoke", ["train.batch_size=4", "data.limit=40"], progress=False)
    assert [r["variant"] for r in out["rows"]] == ["baseline", "ptq-int8-dynamic", "prune-50"]
    assert all(r["n"] == 2 for r in out["rows"]) and (tmp_path / "runs" / "vae-celeba-ablation" / "summary.md").is_file()


@pytest.mark.slow
@pytest.mark.skipif(not (REAL / "openwebtext").is_dir() or not (REAL / "gpt2").is_dir(),
                    reason="EDGEGEN_DATA_DIR does not hold openwebtext/ and gpt2/")
def test_gpt2_teacher_then_every_student_variant_smoke(tmp_path, monkeypatch):
    """The shipped GPT-2 files as a user runs them: the teacher first, then every variant of the
    student ablation distilled from its checkpoint (the relative init_from path), in cpu-smoke."""
    from edgegen.train.loop import train_experiment

    monkeypatch.chdir(tmp_path)
    root = {"data": {"root": str(REAL)}, "tracking": {"enabled": False}}
    teacher = load_experiment(merge(_load(EXPERIMENTS, "gpt2_teacher.yaml"), root), "cpu-smoke")
    train_experiment(teacher, Path("runs/gpt2-teacher/seed0"), progress=False)
    sw = _parse(str(next(p for p in EXPERIMENTS if p.name == "gpt2_student_ablation.yaml")))
    sw["base"] = merge(sw["base"], root)
    out = run_sweep(sw, [0], "cpu-smoke", ["train.batch_size=4"], progress=False, log=lambda m: None)
    assert out["failed"] == [] and [r["n"] for r in out["rows"]] == [1] * len(sw["variants"])


def _load(paths, name):
    from edgegen.config import load_yaml

    return load_yaml(str(next(p for p in paths if p.name == name)))
