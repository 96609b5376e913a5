"""The MLflow trackers: ``MLflowTracker`` (one run, nested runs through ``child``), ``NullTracker``,
and the factories ``make_tracker`` and ``attach_tracker``. The only edgegen module that imports
mlflow, and only inside its methods."""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any

from edgegen import _atomic as atomic
from edgegen.tracking.system import git_commit, system_info


class NullTracker:
    """Logs nothing (tracking disabled, or a non-zero rank)."""

    run_id = None

    def log_config(self, cfg) -> None:
        pass

    def log_params(self, params: dict) -> None:
        pass

    def start_local_log(self, step=None, validated: bool = False) -> None:
        pass

    def log_metrics(self, metrics: dict, step: int) -> None:
        pass

    def log_artifact(self, path) -> None:
        pass

    def set_tags(self, tags: dict) -> None:
        pass

    def child(self, name: str, run_dir=None, resume: bool = False) -> "NullTracker":
        return NullTracker()

    def finish(self, status: str = "FINISHED") -> None:
        pass


# A store that is down must not stall training for minutes: MLflow's HTTP client retries 7 times
# with exponential backoff by default. Bounded here unless the user set these themselves.
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}


def _bound_http_retries() -> None:
    for k, v in _HTTP_DEFAULTS.items():
        os.environ.setdefault(k, v)


RUN_FILE = "mlflow_run.json"


def _read_run_file(run_dir) -> dict | None:
    """The run folder's MLflow link ({run_id, uri, experiment[, opened_by]}), None where there is
    none; a ValueError naming the file when it cannot be read as one."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(info, dict) or not isinstance(info.get("run_id"), str) or "uri" not in info:
            raise ValueError("expected an object with run_id and uri")
    except ValueError as exc:
        raise ValueError(f"{path}: not an MLflow run link ({exc})") from None
    return info


def _write_run_file(run_dir, **info) -> None:
    """The run folder's MLflow link, written atomically."""
    atomic.write_text(Path(run_dir) / RUN_FILE, json.dumps(info))


LOCAL_LOG = "metrics.jsonl"


def start_local_log(run_dir, step: int | None = None, validated: bool = False) -> Path | None:
    """Make ``<run_dir>/metrics.jsonl`` fit the run about to start there, so that a run never adds
    its records to another's. A fresh run (``step`` None) moves an earlier file aside as
    ``metrics.<time>.jsonl`` (kept, never deleted; returned). A run resuming from a checkpoint at
    ``step`` drops the records logged after that step (the steps it will train again), and at that
    step the end-of-run records (``final/*``, logged again at the end) and, unless the checkpoint
    holds that step's validation (``validated``), the validation records."""
    path = Path(run_dir) / LOCAL_LOG
    if not path.is_file():
        return None
    if step is None:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(path.stat().st_mtime))
        dest, n = path.with_name(f"metrics.{stamp}.jsonl"), 1
        while dest.exists():
            dest, n = path.with_name(f"metrics.{stamp}-{n}.jsonl"), n + 1
        path.rename(dest)
        return dest
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
            at = int(rec["step"])
        except (ValueError, TypeError, KeyError):  # a line cut short when the process died
            continue
        names = [k for k in rec if k not in ("step", "time")]
        if at > step:
            continue
        if at == step and names:
            if names[0].startswith(("final/", "final_float/")):
                continue
            if not validated and not names[0].startswith("train/"):
                continue
        kept.append(line)
    atomic.write_text(path, "".join(line + "\n" for line in kept))
    return None


def _metric_name(name: str) -> str:
    """MLflow accepts alphanumerics, _ - . space : / in names; anything else (a variant called
    'prune-50+qat') becomes '_'."""
    return re.sub(r"[^\w\-. :/]", "_", str(name))


def _default_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


class MLflowTracker:
    """One MLflow run. ``MLflowTracker(uri=None, experiment='edgegen', run_name=None,
    run_dir=None, parent=None)``; ``child(name)`` opens a nested run."""

    def __init__(self, uri: str | None = None, experiment: str = "edgegen", run_name: str | None = None,
                 run_dir: str | os.PathLike | None = None, parent: "MLflowTracker | None" = None,
                 run_id: str | None = None):
        """``run_id``: log into that existing run instead of opening a new one."""
        _bound_http_retries()
        self.uri = uri or _default_uri()
        self.experiment = experiment
        self.run_name = run_name
        self.run_dir = Path(run_dir) if run_dir else None
        self.parent = parent
        self.failed = False
        self.buffer: list[tuple[str, Any]] = []
        self.run_id = run_id
        self.reattached = run_id is not None  # logging into a run opened before (a resumed training)
        self._call(self._open, "open the run")

    # --------------------------------------------------------------- plumbing
    def _client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri)

    def _open(self):
        client = self._client()
        if self.run_id is not None:  # an existing run (attach_tracker)
            self.client = client
            return
        exp = client.get_experiment_by_name(self.experiment)
        exp_id = exp.experiment_id if exp is not None else client.create_experiment(self.experiment)
        tags = {"edgegen.git_commit": git_commit()}
        if self.parent is not None and self.parent.run_id:
            tags["mlflow.parentRunId"] = self.parent.run_id
        self.client = client
        self.run_id = client.create_run(exp_id, run_name=self.run_name, tags=tags).info.run_id
        if self.run_dir is not None:  # so that later evaluations log to this run
            _write_run_file(self.run_dir, run_id=self.run_id, uri=self.uri, experiment=self.experiment)

    def _call(self, fn, what: str, record=None) -> None:
        if self.failed:
            if record is not None:
                self.buffer.append(record)
            return
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - tracking must never stop training
            self.failed = True
            if record is not None:
                self.buffer.append(record)
            warnings.warn(f"edgegen.tracking: could not {what} at {self.uri} ({type(exc).__name__}: {exc}); "
                          "training continues, later records are buffered and sent again at the end "
                          "(or written to a local store in the run folder)", RuntimeWarning, stacklevel=3)

    def _local_log(self, record: dict) -> None:
        if self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / LOCAL_LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    # --------------------------------------------------------------- logging
    # Every record goes through _send, live and when buffered records are replayed at the end.
    def _send(self, kind: str, rec) -> None:
        from mlflow.entities import Metric, Param, RunTag

        if kind == "params":
            items = [Param(str(k), str(v)[:6000]) for k, v in rec.items()]
            for i in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=items[i:i + 100])
        elif kind == "tags":
            self.client.log_batch(self.run_id, tags=[RunTag(str(k), str(v)) for k, v in rec.items()])
        elif kind == "metrics":
            clean, step, ts = rec
            self.client.log_batch(self.run_id, metrics=[Metric(k, v, ts, step) for k, v in clean.items()])
        else:
            self.client.log_artifact(self.run_id, rec)

    def _record(self, kind: str, rec, what: str) -> None:
        self._call(lambda: self._send(kind, rec), what, (kind, rec))

    def log_params(self, params: dict) -> None:
        self._record("params", params, "log params")

    def set_tags(self, tags: dict) -> None:
        self._record("tags", tags, "set tags")

    def start_local_log(self, step: int | None = None, validated: bool = False) -> None:
        """See :func:`start_local_log` (nothing without a run folder)."""
        if self.run_dir is not None:
            start_local_log(self.run_dir, step, validated)

    def log_config(self, cfg) -> None:
        """The resolved config as params (dotted keys) and config.yaml, the system info and seed
        as tags."""
        import yaml

        from edgegen.config import flatten, to_dict

        data = to_dict(cfg)
        self.log_params(flatten(data))
        tags = {f"system.{k}": v for k, v in system_info().items()}
        seed = data.get("train", {}).get("seed")
        if seed is not None:
            tags["seed"] = seed
        self.set_tags(tags)
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            path = self.run_dir / "config.yaml"
            path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
            self.log_artifact(path)

    def log_metrics(self, metrics: dict, step: int) -> None:
        ts = int(time.time() * 1000)
        clean = {_metric_name(k): float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        self._local_log({"step": step, "time": ts, **clean})
        self._record("metrics", (clean, step, ts), "log metrics")

    def log_artifact(self, path) -> None:
        self._record("artifact", str(path), "log an artifact")

    def child(self, name: str, run_dir=None, resume: bool = False) -> "MLflowTracker":
        """A nested run; with ``resume``, the training run ``run_dir`` names (``mlflow_run.json``)
        again where there is one (see :func:`make_tracker`)."""
        info = _training_run(run_dir) if resume and run_dir is not None else None
        if info is not None:
            return MLflowTracker(info["uri"], info.get("experiment", self.experiment), name, run_dir,
                                 run_id=info["run_id"])
        return MLflowTracker(self.uri, self.experiment, name, run_dir, parent=self)

    # --------------------------------------------------------------- the end
    def _replay(self) -> None:
        if self.run_id is None:
            self._open()
        for kind, rec in self.buffer:
            self._send(kind, rec)
        self.buffer.clear()

    def finish(self, status: str = "FINISHED") -> None:
        if self.failed:
            try:  # the store may be back
                self._replay()
                self.failed = False
                warnings.warn(f"edgegen.tracking: {self.uri} reachable again; the buffered records were sent",
                              RuntimeWarning, stacklevel=2)
            except Exception as exc:  # noqa: BLE001
                if self.run_dir is None:
                    warnings.warn(f"edgegen.tracking: {self.uri} still unreachable ({exc}); the buffered records "
                                  "are lost to MLflow (no run folder to keep a local store in)", RuntimeWarning,
                                  stacklevel=2)
                    return
                fallback = f"sqlite:///{(self.run_dir / 'mlflow-fallback.db').resolve()}"
                warnings.warn(f"edgegen.tracking: {self.uri} still unreachable ({type(exc).__name__}); writing this "
                              f"run to the local store {fallback} instead (metrics are also in "
                              f"{self.run_dir / 'metrics.jsonl'})", RuntimeWarning, stacklevel=2)
                self.uri, self.run_id, self.parent = fallback, None, None
                try:
                    self._replay()
                except Exception as exc2:  # noqa: BLE001
                    warnings.warn(f"edgegen.tracking: the local fallback store failed too ({exc2})", RuntimeWarning,
                                  stacklevel=2)
                    return
        try:
            self.client.set_terminated(self.run_id, status)
        except Exception as exc:  # noqa: BLE001
            warnings.warn(f"edgegen.tracking: could not close the run at {self.uri} ({exc})", RuntimeWarning,
                          stacklevel=2)


def attach_tracker(run_dir, uri: str | None = None, experiment: str = "edgegen",
                   run_name: str | None = None) -> "MLflowTracker":
    """A tracker that logs into the MLflow run a training run opened (its id is in
    ``<run_dir>/mlflow_run.json``); where there is none, a new run named ``run_name`` tagged with
    the folder, whose id is then written to ``mlflow_run.json`` so that later evaluations of the
    folder log into it too. The caller closes a new run (``finish``; ``tracker.reattached`` is
    False for it) and leaves a reattached one as it was."""
    info = _read_run_file(run_dir)
    if info is not None:
        return MLflowTracker(uri or info["uri"], info.get("experiment", experiment), run_id=info["run_id"])
    # No run_dir for the tracker itself: the folder's metrics.jsonl is the training's record.
    tracker = MLflowTracker(uri, experiment, run_name, None)
    tracker.set_tags({"edgegen.run_dir": str(Path(run_dir).resolve())})
    if tracker.run_id is not None and not tracker.failed:
        _write_run_file(run_dir, run_id=tracker.run_id, uri=tracker.uri, experiment=tracker.experiment,
                        opened_by="eval")
    return tracker


def _training_run(run_dir) -> dict | None:
    """The MLflow link of the training run in ``run_dir`` (None where there is none, with a
    warning where the file names none: damaged, or an evaluation's run)."""
    try:
        info = _read_run_file(run_dir)
        if info is not None and info.get("opened_by") == "eval":  # an evaluation's record, not the training's
            raise ValueError("the run named there was opened by an evaluation")
    except ValueError as exc:
        info = None
        warnings.warn(f"edgegen.tracking: {Path(run_dir) / RUN_FILE} names no training run to continue ({exc}); "
                      "the resumed run gets a new MLflow run", RuntimeWarning, stacklevel=3)
    return info


def make_tracker(tracking_cfg, run_name: str, run_dir=None, parent=None, resume: bool = False):
    """The tracker a run's ``tracking`` section asks for. With ``resume``, a run folder that
    names its MLflow run (``mlflow_run.json``) logs into that run again, so a resumed training
    continues its own record instead of starting a second one without the first steps."""
    if not tracking_cfg.enabled:
        return NullTracker()
    if resume and run_dir is not None:
        info = _training_run(run_dir)
        if info is not None:
            return MLflowTracker(info["uri"], info.get("experiment", tracking_cfg.experiment), run_name, run_dir,
                                 run_id=info["run_id"])
    if parent is not None and not isinstance(parent, NullTracker):
        return parent.child(run_name, run_dir)
    return MLflowTracker(tracking_cfg.uri, tracking_cfg.experiment, run_name, run_dir)
