"""Imports of the benchmark scripts (benchmarks/ is not a package: its scripts import harness as a
top-level module)."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))
