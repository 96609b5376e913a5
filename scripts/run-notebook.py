"""Run a notebook's code cells top to bottom in this interpreter, as a kernel would (the notebooks
use no magics), without Jupyter: ``python scripts/run-notebook.py notebooks/01_quickstart.ipynb``.

The notebook runs with a temporary folder of its own (``tempfile`` and TMPDIR point into it).
Whatever the notebook leaves there is reported on stderr (torch's own compile cache,
``torchinductor_<user>``, is expected and not reported) and removed, also when a cell fails, so
repeated runs (the tests, CI's wheel check) do not fill the disk."""

import json
import os
import shutil
import sys
import tempfile

if len(sys.argv) != 2:
    sys.exit("usage: run-notebook.py NOTEBOOK.ipynb")
cells = json.load(open(sys.argv[1], encoding="utf-8"))["cells"]
code = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
scratch = tempfile.mkdtemp(prefix="edgegen-notebook-")
os.environ["TMPDIR"] = tempfile.tempdir = scratch
try:
    exec(compile(code, sys.argv[1], "exec"), {"__name__": "__main__"})
finally:
    left = sorted(n for n in os.listdir(scratch) if not n.startswith("torchinductor_"))
    if left:
        print(f"run-notebook: the notebook left {len(left)} entries in its temporary folder: "
              f"{', '.join(left[:5])}{' ...' if len(left) > 5 else ''}", file=sys.stderr)
    shutil.rmtree(scratch, ignore_errors=True)
