"""Checkpoints: a run killed (SIGKILL) mid-training and resumed ends with exactly the weights of
an uninterrupted run; a crash while writing a checkpoint leaves the previous one intact."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgegen.config import to_dict
from edgegen.train import Trainer
from edgegen.train import checkpoint as ckpt
from tests.train.helpers import tiny

ROOT = Path(__file__).resolve().parents[2]

KILLER = """
import json, os, signal, sys
from edgegen.train import Trainer, load_experiment
cfg = load_experiment(json.loads(sys.argv[1]))
kill_at = int(sys.argv[3])
def killer(trainer, metrics):
    if trainer.state.step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
Trainer(cfg, sys.argv[2], progress=False, callbacks=[killer]).fit(resume=True)
"""


def run_script(cfg, run_dir, kill_at):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", KILLER, json.dumps(to_dict(cfg)), str(run_dir), str(kill_at)],
                          env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.integration
@pytest.mark.parametrize("task, extra", [
    ("vae", {}),
    ("gan", {}),
    ("lm", {"model": {"dropout": 0.1}, "optim": {"schedule": "cosine", "warmup_steps": 2}}),
])
def test_kill_and_resume_gives_the_uninterrupted_weights(tmp_path, task, extra):
    cfg = tiny(task, tmp_path, train={"epochs": 2, "steps_per_epoch": 5, "checkpoint_every": 2, "threads": 2},
               **extra)
    # Uninterrupted, in a subprocess too (same thread settings): kill_at beyond the end.
    full = run_script(cfg, tmp_path / "full", 10_000)
    assert full.returncode == 0, full.stderr
    # Killed at step 7 (last checkpoint: step 6), then resumed to the end.
    killed = run_script(cfg, tmp_path / "killed", 7)
    assert killed.returncode == -9, killed.stderr
    state = ckpt.load(tmp_path / "killed" / "checkpoints" / "last.pt")["state"]
    assert state["step"] == 6 and state["epoch"] == 1 and state["batch_in_epoch"] == 1
    resumed = run_script(cfg, tmp_path / "killed", 10_000)
    assert resumed.returncode == 0, resumed.stderr
    a = ckpt.load(tmp_path / "full" / "checkpoints" / "last.pt")
    b = ckpt.load(tmp_path / "killed" / "checkpoints" / "last.pt")
    assert a["state"]["step"] == b["state"]["step"] == 10
    for name in a["modules"]:
        for key, t in a["modules"][name].items():
            assert torch.equal(t, b["modules"][name][key]), f"{name}.{key} differs after resume"
    for name in a["optimizers"]:
        sa, sb = a["optimizers"][name]["state"], b["optimizers"][name]["state"]
        for i in sa:
            for k in sa[i]:
                assert torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k]))
    assert a["state"]["history"] == b["state"]["history"] and a["state"]["curve"] == b["state"]["curve"]


def test_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c" / "last.pt"
    ckpt.save_atomic({"step": 1}, path)

    def exploding_save(obj, f):
        f.write(b"partial checkpoint bytes")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(ckpt.torch, "save", exploding_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_atomic({"step": 2}, path)
    monkeypatch.undo()
    assert ckpt.load(path) == {"step": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temporary left behind


def test_resume_refuses_a_different_config(tmp_path):
    cfg = tiny("vae", tmp_path, train={"steps_per_epoch": 2})
    Trainer(cfg, tmp_path / "r", progress=False).fit()
    other = tiny("vae", tmp_path, train={"steps_per_epoch": 2}, optim={"lr": 0.5})
    with pytest.raises(ValueError, match="different config"):
        Trainer(other, tmp_path / "r", progress=False).fit(resume=True)


def test_best_checkpoint_tracks_validation_loss(tmp_path):
    cfg = tiny("vae", tmp_path, train={"epochs": 3, "steps_per_epoch": 4})
    trainer = Trainer(cfg, tmp_path / "r", progress=False)
    trainer.fit()
    hist = trainer.state.history
    best = ckpt.load(tmp_path / "r" / "checkpoints" / "best.pt")
    assert best["state"]["best_val"] == min(h["val_loss"] for h in hist)
    assert len(hist) == 3 and [h["epoch"] for h in hist] == [0, 1, 2]
