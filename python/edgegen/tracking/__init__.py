"""Experiment tracking with MLflow: the only edgegen package that imports mlflow.

Every run logs its resolved config (as params and as ``config.yaml``), metrics per step and per
epoch, system information (torch version, CPU flags, threads, GPU), the git commit and the seed,
and its checkpoints as artifacts; sweeps and seeds are nested runs under a parent.

The default store is embedded: SQLite (``mlflow.db``) in the working directory;
``MLFLOW_TRACKING_URI`` (or ``tracking.uri``) points it at any MLflow server. Tracking never
stops training: the first failed call warns, later records are buffered in memory, and at the
end they are sent to the store again or, if it is still unreachable, to a local SQLite store in
the run folder (the warning says where). Every metric is also appended to
``<run_dir>/metrics.jsonl`` whatever happens to the store.
"""

# Beside __all__, edgegen's own modules import attach_tracker, cpu_model, RUN_FILE and _metric_name from here.
from edgegen.tracking.client import (  # noqa: F401
    RUN_FILE, MLflowTracker, NullTracker, _metric_name, attach_tracker, make_tracker)
from edgegen.tracking.system import cpu_model, git_commit, system_info  # noqa: F401

__all__ = ["MLflowTracker", "NullTracker", "system_info", "git_commit", "make_tracker"]
