"""The bounded fuzz run of every edgegen op (tests/fuzz/fuzz_ops.py): no crash, no uninitialised
output, layout-only changes give the contiguous call's result, and every error names one of the
op's arguments. Every (op, argument, mutation) case runs by default (about 1,100, seconds);
``EDGEGEN_FUZZ_CASES`` caps them (a seeded sample) and ``EDGEGEN_FUZZ_SEED`` picks the sample."""

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # some 1,500 cases in worker processes: about 10 s on 2 cores

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SEED = int(os.environ.get("EDGEGEN_FUZZ_SEED", "0"))
COUNT = int(os.environ.get("EDGEGEN_FUZZ_CASES", "5000"))


def _worker(tmp_path: Path, perturb: int, subset=None) -> tuple[dict, int]:
    out = tmp_path / f"fuzz-{perturb}-{'all' if subset is None else subset[0]}.pkl"
    out.unlink(missing_ok=True)
    env = dict(os.environ, MALLOC_PERTURB_=str(perturb), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    argv = [sys.executable, str(HERE / "fuzz_ops.py"), str(SEED), str(COUNT), str(out)]
    if subset is not None:
        argv.append(",".join(map(str, subset)))
    rc = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900).returncode
    results = pickle.loads(out.read_bytes()) if out.is_file() else {}
    return results, rc


def _resume(tmp_path, perturb, cases, done) -> list:
    """Run the cases a worker did not reach, in one worker per stretch: when a worker dies, the
    first case it did not finish is the crashing one; the next worker starts after it."""
    bad, i = [], 0
    while i < len(cases):
        while i < len(cases) and cases[i] in done:
            i += 1
        if i >= len(cases):
            break
        res, rc = _worker(tmp_path, perturb, list(range(i, len(cases))))
        done.update(res)
        j = i
        while j < len(cases) and cases[j] in done:
            j += 1
        if j < len(cases):  # the worker stopped before cases[j]
            bad.append((cases[j], f"the worker died (exit {rc}) on this case"))
            done[cases[j]] = {"status": "crash"}
        i = j + 1
    return bad


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    sys.path.insert(0, str(HERE))
    import fuzz_ops

    tmp = tmp_path_factory.mktemp("fuzz")
    cases = fuzz_ops.cases(SEED, COUNT)
    a, rc_a = _worker(tmp, 85)
    b, rc_b = _worker(tmp, 170)
    crashes = []
    if rc_a != 0 or len(a) < len(cases):
        crashes += _resume(tmp, 85, cases, a)
    if rc_b != 0 or len(b) < len(cases):
        crashes += _resume(tmp, 170, cases, b)
    names = {n: fuzz_ops._arg_names(n) for n in {c[0] for c in cases}}
    return cases, a, b, crashes, names


def test_no_crash(runs):
    cases, a, b, crashes, _ = runs
    assert not crashes, f"{len(crashes)} crashing cases, first: {crashes[:5]}"
    assert len(cases) >= min(COUNT, 1000)


def test_no_uninitialised_output(runs):
    cases, a, b, _, _ = runs
    differ = [c for c in cases if c in a and c in b and a[c]["status"] == "ok" and b[c]["status"] == "ok"
              and a[c]["digest"] != b[c]["digest"]]
    assert not differ, f"results depend on the fill of fresh memory (uninitialised output): {differ[:10]}"


def test_layout_changes_give_the_contiguous_result(runs):
    cases, a, _, _, _ = runs
    wrong = [c for c in cases if c in a and a[c].get("same_as_contiguous") is False]
    assert not wrong, f"non-contiguous / offset / expanded inputs change the result: {wrong[:10]}"


def test_every_error_names_an_argument(runs):
    cases, a, _, _, names = runs
    unnamed = []
    for c in cases:
        r = a.get(c)
        if r is None or r["status"] != "error":
            continue
        if not any(re.search(rf"(?<![\w.]){re.escape(n)}(?![\w])", r["message"]) for n in names[c[0]]):
            unnamed.append((c, r["type"], r["message"][:160]))
    assert not unnamed, f"{len(unnamed)} errors name no argument, e.g. {unnamed[:8]}"
