"""Training runs and their folders: a folder that holds a run is never trained over, the final
metrics are those of the model as training stopped, damaged or foreign checkpoints are named,
post-hoc compression keeps its own folder, sweeps refuse what would make their statistics wrong."""

import math

import pytest
import torch

from edgegen.train import Trainer
from edgegen.train import checkpoint as ckpt
from edgegen.train.sweep import run_sweep
from tests.train.helpers import tiny


def test_a_folder_holding_a_run_is_not_trained_over(tmp_path):
    cfg = tiny("vae", tmp_path, train={"steps_per_epoch": 2})
    Trainer(cfg, tmp_path / "run", progress=False).fit()
    before = (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(FileExistsError, match="run_dir: .* already holds a run .*resume"):
        Trainer(tiny("vae", tmp_path, optim={"lr": 0.5}), tmp_path / "run", progress=False).fit()
    assert (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes() == before
    assert Trainer(cfg, tmp_path / "run", progress=False).fit(resume=True)["steps"] == 2


def test_max_steps_inside_an_epoch_validates_the_final_model(tmp_path):
    cfg = tiny("vae", tmp_path, train={"epochs": 2, "steps_per_epoch": 5, "max_steps": 7})
    t = Trainer(cfg, tmp_path / "run", progress=False)
    out = t.fit()
    assert out["steps"] == 7
    # The final metrics are those of the step-7 model, not the epoch-1 validation.
    again = t.task.validate(t.batches.val_batches())
    assert out["final"]["val_loss"] == pytest.approx(again["val_loss"], rel=1e-12)
    assert [h["step"] for h in t.state.history] == [5, 7]
    short = Trainer(tiny("vae", tmp_path, train={"steps_per_epoch": 5, "max_steps": 3}), tmp_path / "short",
                    progress=False).fit()
    assert math.isfinite(short["best_val_loss"]) and short["final"]["step"] == 3  # was: {} and inf
    assert (tmp_path / "short" / "checkpoints" / "best.pt").is_file()


def test_damaged_and_foreign_checkpoints_are_named(tmp_path):
    cfg = tiny("vae", tmp_path, train={"steps_per_epoch": 1})
    Trainer(cfg, tmp_path / "vae", progress=False).fit()
    last = tmp_path / "vae" / "checkpoints" / "last.pt"
    cut = tmp_path / "cut.pt"
    cut.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(ValueError, match="cut.pt: not a readable checkpoint"):
        ckpt.load(cut)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.pt: not a readable checkpoint"):
        ckpt.load(tmp_path / "empty.pt")
    lm = tiny("lm", tmp_path, model={"init_from": str(last)})
    with pytest.raises(ValueError, match="init_from: .* is a 'vae' run's checkpoint \\(model 'vae'\\), not a GPT-2's"):
        Trainer(lm, tmp_path / "lm", progress=False)


class _RunsCode:
    """Unpickling this calls ``Path.touch`` on ``marker``: a file that would run code when read."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_checkpoints_are_read_without_running_code_from_them(tmp_path):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"modules": {"model": {"w": torch.ones(2)}}, "extra": _RunsCode(marker)}, evil)
    with pytest.raises(ValueError, match=r"evil.pt: holds objects other than tensors and plain data \(.*pathlib.*\), "
                                         r"which edgegen does not unpickle"):
        ckpt.load(evil)
    assert not marker.exists()
    lm = tiny("lm", tmp_path, model={"init_from": str(evil)})  # a user-supplied file takes the same road
    with pytest.raises(ValueError, match="evil.pt: holds objects other than tensors"):
        Trainer(lm, tmp_path / "lm", progress=False)
    assert not marker.exists()


def test_rng_state_is_plain_data_and_older_numpy_state_still_resumes(tmp_path):
    import random

    import numpy as np

    ckpt.seed_everything(3)
    state = ckpt.rng_state()
    ahead = (torch.rand(3), random.random(), np.random.rand(3))
    path = tmp_path / "rng.pt"
    ckpt.save_atomic({"rng": state}, path)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []  # nothing but tensors and plain data
    older = tmp_path / "older.pt"  # NumPy's state as np.random.get_state() gives it, as earlier versions wrote it
    ckpt.seed_everything(3)
    torch.save({"rng": {**state, "numpy": np.random.get_state()}}, older)
    for f in (path, older):
        ckpt.seed_everything(99)
        ckpt.set_rng_state(ckpt.load(f)["rng"])
        again = (torch.rand(3), random.random(), np.random.rand(3))
        assert torch.equal(again[0], ahead[0]) and again[1] == ahead[1] and np.array_equal(again[2], ahead[2])


def test_post_hoc_compression_keeps_its_own_folder(tmp_path):
    from edgegen.train.posthoc import compress_from

    Trainer(tiny("vae", tmp_path, train={"steps_per_epoch": 1}), tmp_path / "src", progress=False).fit()
    before = (tmp_path / "src" / "checkpoints" / "last.pt").read_bytes()
    spec = {"ptq": {"kind": "Int8DynamicConfig"}}
    with pytest.raises(ValueError, match="run_dir: .* is the source run itself"):
        compress_from(tmp_path / "src", spec, tmp_path / "src")
    assert (tmp_path / "src" / "checkpoints" / "last.pt").read_bytes() == before
    compress_from(tmp_path / "src", spec, tmp_path / "int8")
    with pytest.raises(FileExistsError, match="run_dir: .*int8 already holds a run"):
        compress_from(tmp_path / "src", spec, tmp_path / "int8")


def _sweep(tmp_path, variants, **extra):
    base = tiny("vae", tmp_path, train={"steps_per_epoch": 1})
    from edgegen.config import to_dict

    return {"name": "sw", "metric": "val_loss", "base": to_dict(base), "variants": variants, **extra}


def test_sweeps_refuse_what_would_spoil_their_statistics(tmp_path):
    sw = _sweep(tmp_path, {"a": {}})
    with pytest.raises(ValueError, match="--set: 'train.seed=5': a sweep sets train.seed for each run"):
        run_sweep(sw, [0, 1], overrides=["train.seed=5"], log=lambda m: None)
    with pytest.raises(ValueError, match="alpha: expected a significance level strictly between 0 and 1"):
        run_sweep(_sweep(tmp_path, {"a": {}}, alpha=5), [0, 1], log=lambda m: None)
    with pytest.raises(ValueError, match="variants: 'p\\+q' and 'p_q' both become the MLflow metric name 'p_q'"):
        run_sweep(_sweep(tmp_path, {"p+q": {}, "p_q": {}}), [0], log=lambda m: None)
    assert not (tmp_path / "runs" / "sw").exists()  # refused before any training


def test_a_diverged_variant_fails_and_the_summary_is_written(tmp_path):
    sw = _sweep(tmp_path, {"ok": {}, "diverged": {"optim": {"lr": 1e30}}})
    out = run_sweep(sw, [0, 1], log=lambda m: None, progress=False)
    assert out["failed"] == ["diverged"] and "the run diverged" in out["markdown"]
    assert (tmp_path / "runs" / "sw" / "summary.md").is_file()
    ok = next(r for r in out["rows"] if r["variant"] == "ok")
    assert ok["n"] == 2 and math.isfinite(ok["mean"])
    with pytest.raises(FileExistsError, match="already holds runs"):
        run_sweep(sw, [0, 1], log=lambda m: None, progress=False)  # a rerun resumes or goes elsewhere
    assert run_sweep(sw, [0, 1], log=lambda m: None, progress=False, resume=True)["rows"][0]["n"] == 2


def test_logged_loss_of_accumulated_micro_batches_is_the_batch_mean(tmp_path):
    # One process: the logged value is the micro-batch mean, as before (no process group).
    a = Trainer(tiny("vae", tmp_path, train={"steps_per_epoch": 2}), tmp_path / "a", progress=False)
    b = Trainer(tiny("vae", tmp_path, train={"steps_per_epoch": 2}, optim={"grad_accum": 2}), tmp_path / "b",
                progress=False)
    a.fit(), b.fit()
    # The VAE's posterior noise is drawn for the whole batch: accumulation sees the same noise.
    assert [c[1] for c in b.state.curve] == pytest.approx([c[1] for c in a.state.curve], rel=1e-5)
    for p, q in zip(a.task.modules["model"].parameters(), b.task.modules["model"].parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=2e-5)


def test_a_checkpoint_of_other_random_streams_warns_on_resume(tmp_path):
    cfg = tiny("vae", tmp_path, train={"epochs": 2, "steps_per_epoch": 2})
    t = Trainer(cfg, tmp_path / "run", progress=False)
    t.fit()
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    snap = ckpt.load(last)
    assert snap["streams"] == 3
    del snap["streams"]  # as written before the stream version was recorded
    snap["state"]["epoch"], snap["state"]["step"] = 1, 2
    ckpt.save_atomic(snap, last)
    with pytest.warns(UserWarning, match="stream version 1, now 3"):
        Trainer(cfg, tmp_path / "run", progress=False).fit(resume=True)
    # Version 3 changed only token batches past a stream's batches per epoch: an image run of
    # version 2 resumes on the batches it would have seen, without a warning.
    snap["streams"] = 2
    ckpt.save_atomic(snap, last)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer(cfg, tmp_path / "run", progress=False).fit(resume=True)


class _Stop(Exception):
    pass


def _stop_at(step):
    def cb(trainer, metrics):
        if trainer.state.step == step:
            raise _Stop()
    return cb


def test_an_epoch_longer_than_the_token_stream_draws_fresh_batches_and_resumes_exactly(tmp_path):
    # 600 tokens: 3 batches of 8 x 16 per pass over the training part, 6 steps per epoch.
    cfg = tiny("lm", tmp_path, data={"limit": 600}, train={"epochs": 2, "steps_per_epoch": 6, "checkpoint_every": 2})
    full = Trainer(cfg, tmp_path / "full", progress=False)
    assert full.batches.batches_per_epoch == 3
    seen, draw = [], full.batches.train_batch

    def recorded(epoch, index):
        seen.append(draw(epoch, index))
        return seen[-1]
    full.batches.train_batch = recorded
    full.fit()
    assert len(seen) == 12
    for epoch in (seen[:6], seen[6:]):  # every batch of an epoch its own draw (they came round again)
        assert not any(torch.equal(a[0], b[0]) for k, a in enumerate(epoch) for b in epoch[k + 1:])
    # Stopped after step 8 (epoch 1, batch 2: past the stream's 3 batches) and resumed: bit for
    # bit the unbroken run.
    with pytest.raises(_Stop):
        Trainer(cfg, tmp_path / "split", progress=False, callbacks=[_stop_at(8)]).fit()
    split = Trainer(cfg, tmp_path / "split", progress=False)
    split.fit(resume=True)
    a = ckpt.load(tmp_path / "full" / "checkpoints" / "last.pt")
    b = ckpt.load(tmp_path / "split" / "checkpoints" / "last.pt")
    for key, t in a["modules"]["model"].items():
        assert torch.equal(t, b["modules"]["model"][key]), key
    for i, state in a["optimizers"]["model"]["state"].items():
        assert all(torch.equal(torch.as_tensor(v), torch.as_tensor(b["optimizers"]["model"]["state"][i][k]))
                   for k, v in state.items())
    assert a["state"]["curve"] == b["state"]["curve"] and a["state"]["history"] == b["state"]["history"]
    # A version-2 checkpoint of such a run was drawing other batches: resuming it says so.
    snap = ckpt.load(tmp_path / "split" / "checkpoints" / "last.pt")
    snap["streams"], snap["state"]["step"], snap["state"]["epoch"], snap["state"]["batch_in_epoch"] = 2, 8, 1, 2
    ckpt.save_atomic(snap, tmp_path / "split" / "checkpoints" / "last.pt")
    with pytest.warns(UserWarning, match="stream version 2, now 3"):
        Trainer(cfg, tmp_path / "split", progress=False).fit(resume=True)


def test_temporary_files_a_killed_checkpoint_write_left_are_removed_at_the_next_start(tmp_path):
    cfg = tiny("vae", tmp_path, train={"epochs": 2, "steps_per_epoch": 2})
    with pytest.raises(_Stop):
        Trainer(cfg, tmp_path / "run", progress=False, callbacks=[_stop_at(3)]).fit()
    # What a process killed while writing leaves: temporary files named after its pid.
    stale = [tmp_path / "run" / "checkpoints" / ".last.4242-0123456789ab.tmp.pt",
             tmp_path / "run" / "checkpoints" / ".best.4242-0123456789ab.tmp.pt",
             tmp_path / "run" / ".model.4242-0123456789ab.tmp.pt"]
    for p in stale:
        p.write_bytes(b"partial")
    other = tmp_path / "run" / "checkpoints" / "notes.tmp.pt"  # not ours: kept
    other.write_bytes(b"")
    Trainer(cfg, tmp_path / "run", progress=False).fit(resume=True)
    assert not any(p.exists() for p in stale) and other.exists()
    left = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert left == ["best.pt", "last.pt", "notes.tmp.pt"]


def test_the_cli_refuses_a_taken_folder_before_touching_its_mlflow_link(tmp_path, monkeypatch, capsys):
    import json

    import yaml

    from edgegen.cli.main import main
    from edgegen.config import to_dict

    monkeypatch.chdir(tmp_path)
    data = to_dict(tiny("vae", tmp_path, train={"steps_per_epoch": 1}))
    data["tracking"] = {"enabled": True, "experiment": "t"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    assert main(["train", "c.yaml", "--run-dir", "run", "--no-progress"]) == 0
    link = (tmp_path / "run" / "mlflow_run.json").read_text()
    assert main(["train", "c.yaml", "--run-dir", "run", "--no-progress"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "run" / "mlflow_run.json").read_text() == link
    assert json.loads(link)["run_id"]


def test_a_resumed_training_does_not_take_over_an_evaluations_mlflow_run(tmp_path):
    import json

    from edgegen.tracking import make_tracker
    from edgegen.train.config import TrackingConfig

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # What `edgegen eval` leaves in a folder whose training recorded no MLflow run.
    (run_dir / "mlflow_run.json").write_text(json.dumps({"run_id": "0" * 32, "uri": uri, "experiment": "x",
                                                         "opened_by": "eval"}))
    with pytest.warns(RuntimeWarning, match="opened by an evaluation"):
        tracker = make_tracker(TrackingConfig(uri=uri, experiment="x"), "t", run_dir, resume=True)
    assert not tracker.reattached and tracker.run_id != "0" * 32
    tracker.finish("FINISHED")


def test_a_resumed_progressive_distillation_logs_into_its_stages_runs_again(tmp_path):
    import json

    from mlflow.tracking import MlflowClient

    from edgegen.tracking import make_tracker
    from edgegen.train.loop import train_experiment

    Trainer(tiny("lm", tmp_path, name="t", train={"steps_per_epoch": 2}), tmp_path / "t", progress=False).fit()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    gpt = {"kind": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2, "vocab_size": 64, "n_positions": 32}
    cfg = tiny("lm", tmp_path, task="distill", name="p", tracking={"enabled": True, "uri": uri, "experiment": "prog"},
               train={"steps_per_epoch": 4, "checkpoint_every": 1},
               distill={"teachers": [{**gpt, "init_from": str(tmp_path / "t" / "checkpoints" / "last.pt")}],
                        "stages": [gpt]})
    calls = []

    def kill_in_stage1(trainer, metrics):  # stage 0's 4 steps, then stage 1's first 2 (checkpointed)
        calls.append(trainer.state.step)
        if len(calls) == 6:
            raise _Stop()

    # Killed in stage 1, then resumed as `edgegen train --resume` does.
    tracker = make_tracker(cfg.tracking, "p", tmp_path / "p")
    with pytest.raises(_Stop):
        train_experiment(cfg, tmp_path / "p", tracker, progress=False, callbacks=(kill_in_stage1,))
    tracker.finish("KILLED")
    tracker = make_tracker(cfg.tracking, "p", tmp_path / "p", resume=True)
    train_experiment(cfg, tmp_path / "p", tracker, resume=True, progress=False)
    tracker.finish()
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("prog").experiment_id])
    children = {r.info.run_name: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    # One run per stage (none opened again), each with every training step once, and the stage
    # folder's link naming it.
    assert len(runs) == 3 and sorted(children) == ["stage0-1L", "stage1-1L"]
    for i, name in enumerate(sorted(children)):
        r = children[name]
        assert r.info.status == "FINISHED"
        assert sorted(m.step for m in client.get_metric_history(r.info.run_id, "train/loss")) == [1, 2, 3, 4]
        assert json.loads((tmp_path / "p" / f"stage{i}" / "mlflow_run.json").read_text())["run_id"] == r.info.run_id
