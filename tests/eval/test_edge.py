"""Edge projection: the device data carries a source for every figure, the roofline matches hand
arithmetic, and bad input is named."""

from types import SimpleNamespace

import pytest

from edgegen.eval.edge import PRECISIONS, device_profiles, project


def _record(flops=0, size=0, fmt="safetensors"):
    return SimpleNamespace(flops=flops, bytes_on_disk=size, disk_format=fmt)


def test_every_figure_has_a_kind_and_a_source():
    profiles = device_profiles()
    assert set(profiles) == {"rpi4", "jetson-nano", "pixel6"}
    for p in profiles.values():
        figures = [p.memory_gbps, p.power_w, p.efficiency] + [p.peak_gflops[k] for k in PRECISIONS]
        for f in figures:
            assert f.value > 0 and f.kind in ("spec", "derived", "assumption") and len(f.source) > 20


def test_compute_bound_roofline_matches_hand_arithmetic():
    # rpi4 fp32: 48 GFLOPS at efficiency 0.3 -> 14.4 GFLOP take one second.
    p = project(_record(flops=14_400_000_000, size=1000), "rpi4")
    assert p.compute_ms_projected == pytest.approx(1000.0)
    assert p.memory_ms_projected == pytest.approx(1000 / (12.8e9 * 0.3) * 1e3)
    assert p.bound == "compute" and p.latency_ms_projected == pytest.approx(1000.0)
    assert p.energy_j_projected == pytest.approx(6.4)
    assert "projected" in p.label and "not measured" in p.label
    assert set(p.as_dict("edge/")) >= {"edge/latency_ms_projected", "edge/energy_j_projected"}


def test_memory_bound_and_precision():
    # 25.6 GB/s at efficiency 1: 25.6 MB take one millisecond on the Jetson Nano.
    p = project(_record(flops=1000, size=25_600_000), "jetson-nano", efficiency=1.0)
    assert p.bound == "memory" and p.latency_ms_projected == pytest.approx(1.0)
    q = project(_record(flops=472_000_000), "jetson-nano", precision="fp16", efficiency=1.0)
    assert q.compute_ms_projected == pytest.approx(1.0)
    # The record's compute precision (profile() infers it from the layer types) unless told
    # otherwise; the disk format does not decide it, and a record without one is fp32.
    r = project(SimpleNamespace(flops=10**9, bytes_on_disk=0, compute_precision="int8",
                                compute_precision_basis="INT8 layers"), "pixel6")
    assert r.precision == "int8" and "int8 inferred from the model's layers: INT8 layers" in r.label
    bare = project(_record(flops=10**9, fmt="edgegen quantized safetensors"), "pixel6")
    assert bare.precision == "fp32" and "fp32 assumed: the record states no compute precision" in bare.label
    assert "fp16 given by the caller" in q.label


def test_bytes_moved_replaces_the_bytes_on_disk():
    # Jetson Nano: 25.6 GB/s (data sheet) at efficiency 1, so 51.2 MB moved take two milliseconds,
    # whatever the size on disk; the 10 W power mode gives the energy.
    p = project(_record(flops=10, size=0), "jetson-nano", efficiency=1.0, bytes_moved=51_200_000)
    assert p.memory_ms_projected == pytest.approx(51_200_000 / 25.6e9 * 1e3, rel=1e-12)
    assert p.bound == "memory" and p.latency_ms_projected == pytest.approx(2.0, rel=1e-12)
    assert p.energy_j_projected == pytest.approx(2e-3 * 10.0, rel=1e-12)
    # No traffic given: nothing to wait for on memory even with a large file on disk.
    q = project(_record(flops=236_000_000, size=25_600_000), "jetson-nano", efficiency=1.0, bytes_moved=0)
    assert q.memory_ms_projected == 0.0 and q.bound == "compute"
    assert q.latency_ms_projected == pytest.approx(1.0, rel=1e-12)  # 236 GFLOPS fp32


def test_label_names_the_assumed_efficiency():
    # Jetson Nano fp16: peak, bandwidth and power are all vendor specifications; the 0.3
    # efficiency is an assumption, and the label must say so.
    p = project(_record(flops=10**9), "jetson-nano", precision="fp16")
    dev = device_profiles()["jetson-nano"]
    assert {dev.peak_gflops["fp16"].kind, dev.memory_gbps.kind, dev.power_w.kind} == {"spec"}
    assert dev.efficiency.kind == "assumption" and p.efficiency == dev.efficiency.value
    assert "roofline at 0.3 of peak (efficiency: assumption)" in p.label and "(assumption, spec)" in p.label
    q = project(_record(flops=10**9), "jetson-nano", precision="fp16", efficiency=0.5)
    assert "roofline at 0.5 of peak (efficiency: given by the caller)" in q.label and "(spec)" in q.label


@pytest.mark.parametrize("kwargs, match", [
    (dict(device="rpi5"), "device: expected one of"),
    (dict(device="rpi4", precision="int4"), "precision: expected one of"),
    (dict(device="rpi4", efficiency=0.0), r"efficiency: expected a value in \(0, 1\]"),
    (dict(device="rpi4", efficiency=1.5), r"efficiency: expected a value in \(0, 1\]"),
    (dict(device="rpi4", bytes_moved=-1), "bytes_moved: expected an int >= 0"),
], ids=["device", "precision", "efficiency-0", "efficiency-big", "bytes"])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        project(_record(flops=10), **kwargs)


def test_bad_record_and_bad_device_file(tmp_path):
    with pytest.raises(ValueError, match="record: expected a profile record"):
        project(SimpleNamespace(flops=None, bytes_on_disk=0), "rpi4")
    with pytest.raises(ValueError, match="record: expected compute_precision one of .*, got 'int4'"):
        project(SimpleNamespace(flops=1, bytes_on_disk=0, compute_precision="int4"), "rpi4")
    bad = tmp_path / "devices.yaml"
    bad.write_text("x:\n  name: X\n  peak_gflops: {fp32: {value: 1, kind: guess, source: s}}\n")
    with pytest.raises(ValueError, match="x.peak_gflops.fp32: expected a positive value, kind spec"):
        device_profiles(bad)
    bad.write_text("x:\n  name: X\n  peak_gflops: {fp32: {value: 1, kind: spec, source: s}}\n")
    with pytest.raises(ValueError, match="device 'x' lacks 'fp16'"):
        device_profiles(bad)


def _layers_profile(config):
    import copy

    import torch
    from torch import nn

    from edgegen.eval import profile
    from edgegen.quant import (Bf16Config, Fp16Config, Int4DynamicConfig, Int4WeightOnlyConfig, Int8DynamicConfig,
                               Int8StaticConfig, quantize_)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 128)).eval()
    x = torch.randn(8, 128)
    configs = {"int8-dynamic": Int8DynamicConfig(), "int8-static": Int8StaticConfig(),
               "int4-weight-only": Int4WeightOnlyConfig(group_size=64), "int4-w4a8": Int4DynamicConfig(group_size=64),
               "fp16": Fp16Config(), "bf16": Bf16Config()}
    if config != "float":
        model = copy.deepcopy(model)
        quantize_(model, configs[config], calibration=[x] if config == "int8-static" else None)
    return profile(model, x, repeats=1, warmup=0, measure_memory=False)


@pytest.mark.parametrize("config, compute, projected, basis", [
    ("float", "fp32", "fp32", "no quantized or 16-bit layers"),
    ("int8-dynamic", "int8", "int8", "INT8 layers (int8 arithmetic)"),
    ("int8-static", "int8", "int8", "INT8 layers (int8 arithmetic)"),
    ("int4-weight-only", "fp32", "fp32", "INT4 weight-only layers (weights dequantised into fp32 arithmetic)"),
    ("int4-w4a8", "int8", "int8", "INT4 W4A8 layers (int8 arithmetic)"),
    ("fp16", "fp16", "fp16", "fp16 layers (fp16 arithmetic)"),
    ("bf16", "bf16", "fp16", "bf16 assumed to run at the device's fp16 rate (no bf16 figure)"),
], ids=["float", "int8-dynamic", "int8-static", "int4-weight-only", "int4-w4a8", "fp16", "bf16"])
def test_projection_precision_follows_the_layer_types(config, compute, projected, basis):
    """INT4 weight-only layers do float arithmetic (int8 rate would be 4x too fast on the Pixel 6);
    16-bit layers are found (LowPrecision lives in edgegen.quant.api) and projected at the fp16
    rate, bf16 by a stated assumption."""
    rec = _layers_profile(config)
    assert rec.compute_precision == compute
    p = project(rec, "pixel6")
    dev = device_profiles()["pixel6"]
    assert p.precision == projected and basis in p.label and p.label.startswith("projected for")
    assert p.compute_ms_projected == pytest.approx(rec.flops / (dev.peak_gflops[projected].value * 1e9 * 0.3) * 1e3)
    assert (rec.disk_format == "safetensors") == (config == "float")
