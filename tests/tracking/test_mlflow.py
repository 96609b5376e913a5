"""MLflow tracking: a real `mlflow server` on 127.0.0.1 round-trip, the embedded SQLite store,
and a store that goes away mid-run (training goes on; records land in a local fallback store)."""

import socket
import subprocess
import sys
import time
import warnings

import pytest

from edgegen.train import Trainer
from edgegen.tracking import MLflowTracker, system_info
from tests.train.helpers import tiny


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--default-artifact-root", str(tmp_path / "artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    import urllib.request

    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited: {proc.stderr.read()[-2000:]}")
        try:
            urllib.request.urlopen(uri + "/health", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("mlflow server did not start within 120 s")
    yield uri, proc
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.mark.integration
def test_round_trip_through_a_real_server(tmp_path, mlflow_server):
    uri, _ = mlflow_server
    from mlflow.tracking import MlflowClient

    cfg = tiny("vae", tmp_path, train={"steps_per_epoch": 3}, tracking={"uri": uri, "experiment": "it"})
    tracker = MLflowTracker(uri, "it", "vae-run", tmp_path / "run")
    Trainer(cfg, tmp_path / "run", tracker, progress=False).fit()
    tracker.finish()
    client = MlflowClient(uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["optim.lr"] == str(cfg.optim.lr) and run.data.params["task"] == "vae"
    assert run.data.tags["seed"] == "0" and "system.torch" in run.data.tags and "edgegen.git_commit" in run.data.tags
    history = client.get_metric_history(tracker.run_id, "train/loss")
    assert [m.step for m in history] == [1, 2, 3]
    assert "val_loss" in run.data.metrics and "final/val_loss" in run.data.metrics
    names = {a.path for a in client.list_artifacts(tracker.run_id)}
    assert {"config.yaml", "model.pt", "curves.png"} <= names  # the model once, not every checkpoint
    assert not {"last.pt", "best.pt"} & names
    assert run.data.tags["checkpoint.last"].endswith("last.pt")


def test_embedded_sqlite_store_and_nested_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    parent = MLflowTracker(experiment="e")
    assert parent.uri.startswith("sqlite:///") and parent.uri.endswith("mlflow.db")
    child = parent.child("seed0")
    child.log_metrics({"x": 1.0}, 1)
    child.finish()
    parent.finish()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(parent.uri)
    assert client.get_run(child.run_id).data.tags["mlflow.parentRunId"] == parent.run_id
    assert (tmp_path / "mlflow.db").is_file()


@pytest.mark.integration
def test_server_down_mid_run_training_continues_and_falls_back(tmp_path, mlflow_server):
    uri, proc = mlflow_server
    run_dir = tmp_path / "run"
    tracker = MLflowTracker(uri, "down", "run", run_dir)
    cfg = tiny("lm", tmp_path, train={"steps_per_epoch": 6})

    def stop_server(trainer, metrics):
        if trainer.state.step == 2:
            proc.terminate()
            proc.wait(timeout=30)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = Trainer(cfg, run_dir, tracker, callbacks=[stop_server], progress=False).fit()
        tracker.finish()
    assert result["steps"] == 6 and (run_dir / "checkpoints" / "last.pt").is_file()
    text = " ".join(str(w.message) for w in caught)
    assert "could not" in text and "local store" in text
    fallback = run_dir / "mlflow-fallback.db"
    assert fallback.is_file()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{fallback}")
    run = client.search_runs([client.get_experiment_by_name("down").experiment_id])[0]
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss"))
    assert steps and steps[-1] == 6  # the buffered steps after the outage
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len([ln for ln in lines if '"train/loss"' in ln]) == 6  # every step kept locally


def test_system_info_names_the_machine():
    info = system_info()
    assert info["torch"] and info["threads"].isdigit() and "gpu" in info


def test_cpu_model_is_the_model_name_with_family_and_model():
    from pathlib import Path

    from edgegen.tracking import cpu_model

    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    first = text.split("\n\n", 1)[0].splitlines()
    field: dict[str, str] = {}
    for ln in first:
        if ":" in ln:  # the first value of a key, as cpu_model() reads it
            field.setdefault(ln.split(":", 1)[0].strip(), ln.split(":", 1)[1].strip())
    if "model name" in field:
        expected = field["model name"]
        if "cpu family" in field and "model" in field:
            expected += f" (family {field['cpu family']}, model {field['model']})"
        assert cpu_model() == expected and system_info()["cpu"] == expected
    else:
        assert cpu_model()


def test_cpu_model_reads_a_cpuinfo_file(monkeypatch):
    import builtins
    import io

    from edgegen.tracking import cpu_model

    text = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\n"
            "model name\t: AMD EPYC\nflags\t\t: fpu avx2\n\nprocessor\t: 1\ncpu family\t: 99\n")
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open",
                        lambda p, *a, **k: io.StringIO(text) if p == "/proc/cpuinfo" else real_open(p, *a, **k))
    assert cpu_model() == "AMD EPYC (family 26, model 2)"
    monkeypatch.setattr(builtins, "open", lambda p, *a, **k: io.StringIO("model name\t: Some CPU\n")
                        if p == "/proc/cpuinfo" else real_open(p, *a, **k))
    assert cpu_model() == "Some CPU"


def test_git_commit_of_a_checkout_or_of_the_build(tmp_path):
    import json
    import subprocess

    from edgegen.tracking import git_commit

    # an installed package (not a checkout's python/edgegen): the commit recorded at build time
    pkg = tmp_path / "site-packages" / "edgegen"
    pkg.mkdir(parents=True)
    assert git_commit(pkg) == "unknown"
    (pkg / "build_info.json").write_text(json.dumps({"git_commit": "abc123"}))
    assert git_commit(pkg) == "abc123"
    # a checkout: git's answer, even when the working directory is another repository
    repo = tmp_path / "repo"
    (repo / "python" / "edgegen").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "f.txt").write_text("x")
    subprocess.run(["git", "-C", str(repo), "add", "f.txt"], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "c"],
                   check=True)
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert git_commit(repo / "python" / "edgegen") == head
    (repo / "f.txt").write_text("y")
    assert git_commit(repo / "python" / "edgegen") == head + "-dirty"
