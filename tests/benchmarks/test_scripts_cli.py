"""Bad command lines of the benchmark scripts end at once with an argparse error naming the
argument (exit status 2), and write no CSV."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.benchmarks.bench_paths import BENCH

CASES = [
    ("bench_quant.py", ["--sections", "9"], "--sections"),
    ("bench_quant.py", ["--sections", ""], "--sections"),
    ("bench_methods.py", ["--sections", "17"], "--sections"),
    ("bench_reduce.py", ["--threads", "0", "--quick"], "--threads"),
    ("bench_kd_loss.py", ["--threads", "0"], "--threads"),
    ("bench_prune.py", ["--threads", "-1"], "--threads"),
    ("bench_attention.py", ["--threads", "0", "--quick"], "--threads"),
    ("bench_eval.py", ["--fid-images", "0"], "--fid-images"),
    ("bench_eval.py", ["--max-tokens", "1", "--only", "perplexity"], "--max-tokens"),
]


@pytest.mark.parametrize("script,args,name", CASES,
                         ids=[f"{s.removesuffix('.py')}-{'-'.join(a) or 'empty'}".replace("--", "") for s, a, _ in CASES])
def test_bad_argument_is_an_argparse_error_and_writes_nothing(script, args, name, tmp_path):
    out = tmp_path / "out.csv"
    r = subprocess.run([sys.executable, str(BENCH / script), *args, "--out", str(out)], capture_output=True,
                       text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert f"argument {name}: expected" in r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()


def test_eval_takes_csv_as_another_name_for_out(tmp_path):
    """--csv is parsed as --out (an unknown option would be an "unrecognized arguments" error)."""
    import harness

    args = harness.cli("doc", "eval.csv", out_aliases=("--csv",), argv=["--csv", str(tmp_path / "x.csv")])
    assert args.out == str(tmp_path / "x.csv")
    r = subprocess.run([sys.executable, str(BENCH / "bench_eval.py"), "--csv", str(tmp_path / "x.csv"), "--only",
                        "bogus"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2 and "unrecognized arguments" not in r.stderr and "--only" in r.stderr
