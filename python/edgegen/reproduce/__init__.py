"""``edgegen reproduce``: the papers' measurable tables rebuilt beside their published numbers.

``reproduce(table, preset, seeds, out_dir)`` trains the models a table needs (once per preset,
seed and resolved config; reused by every table), measures them with ``edgegen.eval``, and writes
``<out_dir>/REPORT.md`` (every table: paper value | ours as mean +- std over seeds | n | label |
note), ``<out_dir>/results.json`` and the figures, logging each table to MLflow as a nested run
(embedded SQLite ``<out_dir>/mlflow.db`` unless ``$MLFLOW_TRACKING_URI`` is set). Every finished
step is recorded under ``<out_dir>/steps``; a rerun after a kill skips them (``force=True``
recomputes), unless a model they measured was rebuilt since. A table run alone joins the tables an
earlier run with the same settings left in ``results.json``, and the report shows them all.

Which numbers are published is data (``papers.yaml``); which models are trained and how each
preset scales them is data too (``recipes.yaml``).
"""

from edgegen.reproduce.runner import TABLES, reproduce

__all__ = ["TABLES", "reproduce"]
