"""The benchmark harness: interpolated quantiles, the repeat floor, worker time limits, the
correctness columns, versions, and what save() writes or refuses."""

from __future__ import annotations

import csv
import sys

import pytest

from tests.benchmarks import bench_paths  # noqa: F401  (puts benchmarks/ on sys.path)

import harness  # noqa: E402


def test_quantiles_are_interpolated_and_unordered_input_is_fine():
    """Hand-worked: p20/p50/p80 of 1..5 fall on ranks 0.8, 2 and 3.2 (linear interpolation); the
    median of two is their mean, not the smaller (nearest rank with banker's rounding gave that)."""
    assert harness.quantiles([5.0, 1.0, 4.0, 2.0, 3.0]) == pytest.approx((1.8, 3.0, 4.2))
    assert harness.quantiles([1.0, 3.0])[1] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="samples: expected at least one timing"):
        harness.quantiles([])


def test_time_ms_times_at_least_five_runs_whatever_is_asked():
    calls = []
    harness.time_ms(lambda: calls.append(1), repeats=2, warmup=1)
    assert len(calls) == 1 + 5  # one warm-up, then the floor of timed runs


def test_run_once_turns_a_worker_past_its_time_limit_into_an_error(tmp_path):
    script = tmp_path / "sleeper.py"
    script.write_text("import time\ntime.sleep(60)\n")
    res = harness.run_once(str(script), {"measure": "time"}, timeout=1)
    assert set(res) == {"error"} and "timed out" in res["error"][0]


def test_measured_turns_a_check_into_max_err_and_a_verdict(capsys):
    ok = harness.measured({"p50_ms": 1.23456, **harness.check_result(1.234567e-6, 1e-4)})
    assert ok == {"p50_ms": 1.235, "max_err": 1.23e-6, "check": "ok (<= 0.0001)"}
    bad = harness.measured({"p50_ms": 1.0, **harness.check_result(0.5, 0.06)})
    assert bad["check"] == "FAILED (> 0.06)" and bad["max_err"] == 0.5
    assert "CHECK FAILED" in capsys.readouterr().out


def test_a_nan_error_fails_the_check():
    assert harness.verdict(float("nan"), 1.0).startswith("FAILED")


def test_versions_name_numpy_and_onnxruntime():
    v = harness.versions()
    assert "numpy " in v and ("onnxruntime " in v or "onnxruntime absent" in v) and "torch " in v


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_save_with_nothing_measured_exits_1_and_keeps_the_old_csv(tmp_path, capsys):
    out = tmp_path / "r.csv"
    out.write_text("the previous run\n")
    rows = [dict(op="x", provider="p", shape="s", error="timed out")]
    with pytest.raises(SystemExit) as exc:
        harness.save(rows, str(out))
    assert exc.value.code == 1
    assert out.read_text() == "the previous run\n"
    assert "no case was measured" in capsys.readouterr().err


def test_save_after_a_section_with_nothing_yet_writes_nothing_and_goes_on(tmp_path):
    out = tmp_path / "r.csv"
    harness.save([], str(out), final=False)
    assert not out.exists()
    harness.save([dict(op="x", provider="p", p50_ms=1.0)], str(out), final=False, machine="m")
    assert [r["p50_ms"] for r in _read(out)] == ["1.0"]


def test_save_writes_error_rows_beside_measured_ones(tmp_path):
    out = tmp_path / "r.csv"
    harness.save([dict(op="x", provider="a", p50_ms=2.0), dict(op="x", provider="b", error="timed out")], str(out))
    rows = _read(out)
    assert [(r["provider"], r["p50_ms"], r["error"]) for r in rows] == [("a", "2.0", ""), ("b", "", "timed out")]


def test_save_writes_then_exits_1_when_a_check_failed(tmp_path, capsys):
    out = tmp_path / "r.csv"
    rows = [dict(op="x", provider="a", p50_ms=2.0, **harness.measured(harness.check_result(0.5, 0.06)))]
    with pytest.raises(SystemExit) as exc:
        harness.save(rows, str(out))
    assert exc.value.code == 1
    assert _read(out)[0]["check"] == "FAILED (> 0.06)"
    assert "FAILED the correctness check" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-2", "two"], ids=["zero", "negative", "word"])
def test_cli_refuses_threads_below_one(value, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["bench.py", "--threads", value])
    with pytest.raises(SystemExit) as exc:
        harness.cli("doc", "x.csv")
    assert exc.value.code == 2
    assert "argument --threads: expected an integer >= 1" in capsys.readouterr().err
