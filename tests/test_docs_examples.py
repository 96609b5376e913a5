"""Every Python code block of the README and the docs runs as written: each block on its own, in
a fresh process, in an empty working directory (files a block writes land there)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _blocks() -> list[tuple[str, str]]:
    out = []
    for path in DOCS:
        for i, code in enumerate(re.findall(r"^```python\n(.*?)^```", path.read_text(), re.S | re.M)):
            out.append((f"{path.relative_to(ROOT)}-{i}", code))
    return out


BLOCKS = _blocks()


def test_the_docs_have_code_to_run():
    assert len(BLOCKS) >= 14 and any(name.startswith("README.md") for name, _ in BLOCKS)


@pytest.mark.slow
@pytest.mark.parametrize("name,code", BLOCKS, ids=[name for name, _ in BLOCKS])
def test_code_block_runs_as_written(name, code, tmp_path):
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=dict(os.environ), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, f"{name} failed:\n{r.stderr[-3000:]}"
