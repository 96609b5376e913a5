"""What the scripts' main() writes, with the worker processes replaced by canned results (fast):
row formats, kernel paths and the columns of one-pass totals."""

from __future__ import annotations

import csv
import sys

import pytest

from tests.benchmarks import bench_paths  # noqa: F401  (puts benchmarks/ on sys.path)

import harness  # noqa: E402

TIMED = {"p20_ms": 1.0, "p50_ms": 1.0, "p80_ms": 1.0, "peak_mb": 1.0}


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_main(module, monkeypatch, argv, fake_worker):
    monkeypatch.setattr(harness, "run_worker", fake_worker)
    monkeypatch.setattr(harness, "copy_bandwidth_gbps", lambda threads, mbytes=512: 10.0)
    monkeypatch.setattr(sys, "argv", [module.__file__, *argv])
    module.main()


def attention_quick(tmp_path, monkeypatch):
    import bench_attention

    def fake(script, spec, timeout=3600):
        if spec["provider"] == "sdpa_mask":
            return {"error": ["boom"]}
        return {**TIMED, **(harness.check_result(1e-7, 1e-4) if spec["provider"].startswith("edgegen") else {})}

    out = tmp_path / "a.csv"
    run_main(bench_attention, monkeypatch, ["--quick", "--lengths", "300", "--threads", "1", "--out", str(out)], fake)
    return out


def test_attention_quick_says_flex_is_skipped(tmp_path, monkeypatch, capsys):
    attention_quick(tmp_path, monkeypatch)
    assert "FlexAttention skipped under --quick" in capsys.readouterr().out


def test_attention_failed_rows_have_the_shape_of_measured_ones(tmp_path, monkeypatch):
    out = attention_quick(tmp_path, monkeypatch)
    rows = [r for r in read(out) if r["mode"] == "fwd"]
    failed = [r for r in rows if r["provider"] == "sdpa_mask"]
    ok = [r for r in rows if r["provider"] == "edgegen"]
    assert len(failed) == 1 and len(ok) == 1
    assert failed[0]["shape"] == ok[0]["shape"] == "B=1 H=12 n=300 d=64 w=256 g=4"
    assert failed[0]["error"] == "boom" and failed[0]["p50_ms"] == ""


def test_quant_end_to_end_rows_put_the_model_mode_in_mode_and_sizes_in_shape(tmp_path, monkeypatch):
    import bench_quant

    def fake(script, spec, timeout=3600):
        return {**TIMED, "bytes": 1234}

    out = tmp_path / "q.csv"
    run_main(bench_quant, monkeypatch, ["--quick", "--sections", "3", "--threads", "1", "--out", str(out)], fake)
    rows = read(out)
    assert {r["mode"] for r in rows} == {"prefill", "decode", "batch64"}
    gpt2 = [r for r in rows if r["op"] == "e2e_gpt2-student" and r["mode"] == "decode"]
    assert gpt2 and all(r["shape"] == "batch=1, 1 token after 128 cached; 1234 bytes on disk" for r in gpt2)


def test_kd_fused_rows_name_the_kd_kernel_path(tmp_path, monkeypatch):
    import bench_kd_loss

    import edgegen

    out = tmp_path / "kd.csv"
    def fake(script, spec, timeout=3600):
        return {**TIMED, **(harness.check_result(1e-7, 1e-4) if "edgegen" in spec["provider"] else {})}

    run_main(bench_kd_loss, monkeypatch, ["--quick", "--threads", "1", "--out", str(out)], fake)
    fused = {r["provider"]: r["kernel_path"] for r in read(out) if r["op"] == "fused_linear_kd_loss"}
    path = edgegen.kernel_paths()["kd_loss"]
    assert fused == {"edgegen-fused": path, "materialise+edgegen": path, "materialise+eager": ""}


def test_eval_one_pass_rows_are_totals_not_medians(tmp_path):
    import bench_eval

    rows = []
    bench_eval.bench_fid(rows, 2, 1)
    assert rows and all(r["total_ms"] > 0 and "p50_ms" not in r for r in rows)
    assert all(r["kernel_path"] == bench_eval.KERNEL_PATH for r in rows)


def test_prdc_rows_compare_with_the_peer_on_the_same_numbers():
    import bench_eval

    rows = []
    bench_eval.bench_prdc(rows, 12, 1)
    assert [(r["provider"], r["shape"]) for r in rows] == [
        ("edgegen.eval.manifold_metrics", "12x12x2048"), ("prdc.compute_prdc", "12x12x2048"),
        ("edgegen.eval.manifold_metrics", "12x12x256"), ("prdc.compute_prdc", "12x12x256")]
    assert all(r["check"] == "same" and r["p50_ms"] > 0 for r in rows)


@pytest.mark.parametrize("native,major,cluster", [(True, 9, "cuda cluster kernel"),
                                                  (True, 8, "cuda row kernel (the cluster kernel needs sm_90)"),
                                                  (False, 9, "fallback (PyTorch ops, no CUDA kernel)")],
                         ids=["sm90", "sm80", "no-cuda-kernel"])
def test_gpu_rows_name_the_kernel_they_ran(native, major, cluster):
    import bench_gpu

    assert bench_gpu.kd_paths(native, major)["edgegen-cluster"] == cluster
    assert bench_gpu.attention_paths(native)["edgegen-pipelined"] == (
        "cuda, cp.async pipelined" if native else "fallback (PyTorch ops, no CUDA kernel)")
