"""benchmarks/plot.py: one panel per (op, dtype, mode); two rows for one (provider, shape) in a
panel are refused with an error naming them."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest

from tests.benchmarks.bench_paths import BENCH

import plot  # noqa: E402

FIELDS = ["op", "provider", "shape", "dtype", "mode", "p50_ms", "peak_mb", "machine", "versions"]


def row(provider, shape, mode, p50, op="attn", dtype="float32"):
    return dict(op=op, provider=provider, shape=shape, dtype=dtype, mode=mode, p50_ms=str(p50), peak_mb="1",
                machine="m", versions="v")


def write(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)


def test_each_mode_is_its_own_panel():
    rows = [row("edgegen", "n=1024", "fwd", 1.0), row("sdpa", "n=1024", "fwd", 5.0),
            row("edgegen", "n=1024", "fwd+bwd", 3.0), row("edgegen", "n=1024", "decode", 0.1)]
    got = plot.panels(rows)
    assert list(got) == [("attn", "float32", "fwd"), ("attn", "float32", "fwd+bwd"), ("attn", "float32", "decode")]
    assert got[("attn", "float32", "fwd+bwd")][("edgegen", "n=1024")]["p50_ms"] == "3.0"
    assert got[("attn", "float32", "fwd")][("edgegen", "n=1024")]["p50_ms"] == "1.0"


def test_a_repeated_provider_and_shape_in_one_panel_is_refused():
    rows = [row("edgegen", "n=1024", "fwd", 1.0), row("edgegen", "n=1024", "fwd", 2.0)]
    with pytest.raises(ValueError, match="two rows for provider 'edgegen', shape 'n=1024'.*mode 'fwd'"):
        plot.panels(rows)


def run_plot(csv_path, png):
    return subprocess.run([sys.executable, str(BENCH / "plot.py"), str(csv_path), "-o", str(png)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_the_script_refuses_duplicates_with_an_error_naming_the_csv(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "dup.csv"
    write(path, [row("edgegen", "n=1024", "fwd", 1.0), row("edgegen", "n=1024", "fwd", 2.0)])
    r = run_plot(path, tmp_path / "dup.png")
    assert r.returncode == 2
    assert f"csv: {path}: two rows for provider 'edgegen'" in r.stderr
    assert not (tmp_path / "dup.png").exists()


def png_height(path) -> int:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[20:24], "big")  # the IHDR chunk: width, then height


def test_the_script_draws_one_row_of_panels_per_mode(tmp_path):
    pytest.importorskip("matplotlib")
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    write(one, [row("edgegen", "n=1024", "fwd", 1.0)])
    write(two, [row("edgegen", "n=1024", "fwd", 1.0), row("edgegen", "n=1024", "fwd+bwd", 3.0)])
    for path in (one, two):
        r = run_plot(path, path.with_suffix(".png"))
        assert r.returncode == 0, r.stderr
    # 3.6 inches per row of panels at 110 dpi: the second figure has two rows, one per mode.
    assert png_height(two.with_suffix(".png")) == 2 * png_height(one.with_suffix(".png"))
