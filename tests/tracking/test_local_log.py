"""<run_dir>/metrics.jsonl holds one run's records: a fresh run moves an earlier file aside, a
resumed run drops the records of the steps it trains again."""

import json

from edgegen.tracking import make_tracker
from edgegen.train import Trainer
from edgegen.train.config import TrackingConfig
from tests.train.helpers import tiny


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_fresh_run_does_not_append_to_a_dead_runs_metrics(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    # What a run that died before its first checkpoint leaves.
    old = [{"step": 1, "time": 0, "train/loss": 123.0}, {"step": 2, "time": 0, "train/loss": 456.0}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    cfg = tiny("vae", tmp_path, train={"steps_per_epoch": 2})
    tracker = make_tracker(TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="x"), "t", run)
    Trainer(cfg, run, tracker, progress=False).fit()
    tracker.finish()
    steps = [r["step"] for r in records(run / "metrics.jsonl") if "train/loss" in r]
    assert steps == [1, 2]  # once each: the new run's
    assert all(r["train/loss"] not in (123.0, 456.0) for r in records(run / "metrics.jsonl") if "train/loss" in r)
    kept = sorted(run.glob("metrics.*.jsonl"))
    assert len(kept) == 1 and records(kept[0]) == old  # the earlier records are kept, not deleted


def test_a_resumed_run_drops_what_it_trains_again(tmp_path):
    from edgegen.tracking.client import start_local_log

    lines = [{"step": 1, "time": 0, "train/loss": 1.0}, {"step": 2, "time": 0, "train/loss": 2.0},
             {"step": 2, "time": 0, "val_loss": 5.0}, {"step": 2, "time": 0, "final/val_loss": 5.0},
             {"step": 3, "time": 0, "train/loss": 3.0}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 4, "ti')  # cut short
    start_local_log(tmp_path, step=2, validated=True)
    assert records(path) == lines[:3]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    start_local_log(tmp_path, step=2, validated=False)  # the checkpoint came before step 2's validation
    assert records(path) == lines[:2]
    assert start_local_log(tmp_path / "none", step=None) is None  # nothing to move


def test_earlier_files_with_the_same_time_are_all_kept(tmp_path):
    """Three fresh runs over files last written in the same second: each is moved aside under its
    own name, none overwritten."""
    import os
    import time

    from edgegen.tracking.client import start_local_log

    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(1_000_000_000))
    moved = []
    for i in (1, 2, 3):
        path = tmp_path / "metrics.jsonl"
        path.write_text(json.dumps({"step": i, "time": 0, "train/loss": float(i)}) + "\n")
        os.utime(path, (1_000_000_000, 1_000_000_000))
        moved.append(start_local_log(tmp_path))
        assert not path.exists()
    names = [f"metrics.{stamp}.jsonl", f"metrics.{stamp}-1.jsonl", f"metrics.{stamp}-2.jsonl"]
    assert moved == [tmp_path / n for n in names]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    for i, name in enumerate(names, 1):
        assert records(tmp_path / name) == [{"step": i, "time": 0, "train/loss": float(i)}]
