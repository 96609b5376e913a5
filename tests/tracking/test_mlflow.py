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


@pytest.mark.parametrize("name, expected", [
    ("prune-50+qat", "prune-50_qat"),
    ("prune-50+qat-int8/mean", "prune-50_qat-int8/mean"),
    ("eval/last-shipped/fid_proxy", "eval/last-shipped/fid_proxy"),
    ("a b.c:d/e-f_g9", "a b.c:d/e-f_g9"),
    ("val loss (nats)", "val loss _nats_"),
    ("x@y#z%,w=1;", "x_y_z__w_1_"),
    ("tab\there", "tab_here"),
    (7, "7"),
], ids=["plus", "plus-nested", "allowed-path", "allowed-all", "parens", "punctuation", "tab", "int"])
def test_metric_names_keep_what_mlflow_accepts_and_replace_the_rest(name, expected):
    from edgegen.tracking import _metric_name

    assert _metric_name(name) == expected


@pytest.mark.parametrize("content, why", [
    (b"{not json", r"Expecting property name enclosed in double quotes: line 1 column 2 \(char 1\)"),
    (b"[]", "expected an object with run_id and uri"),
    (b'{"run_id": 5, "uri": "sqlite:///x.db"}', "expected an object with run_id and uri"),
    (b'{"run_id": "abc"}', "expected an object with run_id and uri"),
    (b"\xff\xfe{", "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
], ids=["not-json", "list", "id-not-text", "no-uri", "not-utf8"])
def test_a_damaged_run_link_is_named_and_opens_no_run(tmp_path, content, why):
    import re

    from edgegen.tracking import attach_tracker

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "mlflow_run.json").write_bytes(content)
    with pytest.raises(ValueError, match=f"^{re.escape(str(run_dir / 'mlflow_run.json'))}: not an MLflow run "
                                         f"link \\({why}\\)$"):
        attach_tracker(run_dir, f"sqlite:///{tmp_path / 'mlflow.db'}", "e", "run-eval")
    assert (run_dir / "mlflow_run.json").read_bytes() == content  # left as it was
    assert not (tmp_path / "mlflow.db").exists()


def test_attach_tracker_logs_into_the_folders_run_or_opens_and_links_one(tmp_path):
    import json

    from mlflow.tracking import MlflowClient

    from edgegen.tracking import attach_tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    trained = tmp_path / "trained"
    training = MLflowTracker(uri, "exp", "train-run", trained)  # a training run writes the folder's link
    training.finish()
    assert json.loads((trained / "mlflow_run.json").read_text()) == {"run_id": training.run_id, "uri": uri,
                                                                     "experiment": "exp"}
    again = attach_tracker(trained, None, "other", "train-run-eval")  # the link's store and experiment
    assert again.reattached and (again.run_id, again.uri, again.experiment) == (training.run_id, uri, "exp")
    again.log_metrics({"eval/last-shipped/prune-50+qat": 1.5}, 0)
    assert not again.failed
    client = MlflowClient(uri)
    assert client.get_run(training.run_id).data.metrics == {"eval/last-shipped/prune-50_qat": 1.5}
    # A folder without a link: a new run named run_name, tagged with the folder, and linked.
    bare = tmp_path / "bare"
    bare.mkdir()
    first = attach_tracker(bare, uri, "exp", "bare-eval")
    assert not first.reattached and not first.failed and first.run_id != training.run_id
    assert json.loads((bare / "mlflow_run.json").read_text()) == {"run_id": first.run_id, "uri": uri,
                                                                  "experiment": "exp", "opened_by": "eval"}
    first.finish()
    run = client.get_run(first.run_id)
    assert run.info.run_name == "bare-eval" and run.info.status == "FINISHED"
    assert run.data.tags["edgegen.run_dir"] == str(bare.resolve())
    second = attach_tracker(bare, uri, "exp", "bare-eval")  # a later evaluation: the same run
    assert second.reattached and second.run_id == first.run_id
    exp_id = client.get_experiment_by_name("exp").experiment_id
    assert sorted(r.info.run_name for r in client.search_runs([exp_id])) == ["bare-eval", "train-run"]
    assert client.get_experiment_by_name("other") is None
