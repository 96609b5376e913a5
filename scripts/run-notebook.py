"""Run a notebook's code cells top to bottom in this interpreter, as a kernel would (the notebooks
use no magics), without Jupyter: ``python scripts/run-notebook.py notebooks/01_quickstart.ipynb``."""

import json
import sys

if len(sys.argv) != 2:
    sys.exit("usage: run-notebook.py NOTEBOOK.ipynb")
cells = json.load(open(sys.argv[1], encoding="utf-8"))["cells"]
code = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
exec(compile(code, sys.argv[1], "exec"), {"__name__": "__main__"})
