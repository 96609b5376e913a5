"""The notebooks keep working: each one's code cells run top to bottom in a fresh process (as a
kernel would run them; no magics are used), and the repository holds them stripped (no outputs,
no execution counts) with cell ids, as nbformat 4.5 requires."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
RUNNER = ROOT / "scripts" / "run-notebook.py"  # what CI's wheel test and users run too


def _code(path: Path) -> str:
    nb = json.loads(path.read_text())
    return "\n\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


def test_notebooks_are_stripped_and_carry_cell_ids():
    assert len(NOTEBOOKS) >= 4
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text())
        assert (nb["nbformat"], nb["nbformat_minor"]) >= (4, 5), path.name
        ids = [c.get("id") for c in nb["cells"]]
        assert all(ids) and len(set(ids)) == len(ids), f"{path.name}: every cell needs a unique id"
        for c in nb["cells"]:
            if c["cell_type"] == "code":
                assert c["outputs"] == [] and c["execution_count"] is None, f"{path.name}: outputs not stripped"
        assert not any("%" == line.lstrip()[:1] or "!" == line.lstrip()[:1]
                       for line in _code(path).splitlines()), f"{path.name}: a magic or shell line"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, tmp_path):
    """... and cleans up after itself: nothing is left in the temporary folder, neither by the
    notebook (its last cell removes its scratch folder) nor by the runner."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    r = subprocess.run([sys.executable, str(RUNNER), str(path)], cwd=tmp_path, env={**os.environ, "TMPDIR": str(tmp)},
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{path.name} failed:\n{r.stderr[-3000:]}"
    assert "run-notebook: the notebook left" not in r.stderr, r.stderr[-2000:]
    assert sorted(os.listdir(tmp)) == []


def test_the_runner_removes_what_a_failing_notebook_leaves(tmp_path):
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "code", "id": "a", "metadata": {}, "outputs": [], "execution_count": None,
         "source": ["import tempfile\n", "open(tempfile.mkdtemp() + '/x', 'w').write('x')\n", "raise SystemExit(3)"]}]}
    path = tmp_path / "leaky.ipynb"
    path.write_text(json.dumps(nb))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    r = subprocess.run([sys.executable, str(RUNNER), str(path)], cwd=tmp_path, env={**os.environ, "TMPDIR": str(tmp)},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 3
    assert "run-notebook: the notebook left 1 entries in its temporary folder: tmp" in r.stderr
    assert sorted(os.listdir(tmp)) == []


def test_every_notebook_draws_what_it_measures():
    for path in NOTEBOOKS:
        assert "plt.show()" in _code(path), f"{path.name}: no figure"


@pytest.mark.slow
def test_quickstart_runs_without_the_staged_data(tmp_path):
    """No datasets: generated images stand in, and the notebook says so."""
    path = next(p for p in NOTEBOOKS if p.stem == "01_quickstart")
    env = {**os.environ, "EDGEGEN_DATA_DIR": str(tmp_path / "empty")}
    r = subprocess.run([sys.executable, str(RUNNER), str(path)], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "NOTE, generated images stand in" in r.stdout
