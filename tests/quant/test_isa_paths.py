"""The INT8 layers on every ISA path this CPU has (scalar, AVX2, AVX-512 VNNI; the rest skipped
by name): the same integer codes and accumulations on each, so every path equals the kernel that
other devices use (exact integer convolution / GEMM, the same float epilogue) bit for bit (INT4:
to float32 rounding); and the activation quantizer's codes are bit-identical across paths, rounding ties
included."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import edgegen
from edgegen.quant import Int4Linear, Int8Conv2d, Int8ConvTranspose2d, Int8Linear
from tests.ops.test_dispatch import OtherDeviceKernels


def _layers():
    torch.manual_seed(3)
    return {
        "linear-dynamic": (Int8Linear.from_float(nn.Linear(77, 40)), torch.randn(2, 19, 77) * 3),
        "linear-static": (Int8Linear.from_float(nn.Linear(64, 50), act_qparams=(0.04, 60)), torch.randn(33, 64)),
        "linear-decode": (Int8Linear.from_float(nn.Linear(768, 96)), torch.randn(1, 768)),
        "conv2d": (Int8Conv2d.from_float(nn.Conv2d(5, 40, 3, 2, 1)), torch.randn(2, 5, 11, 23)),
        "conv-transpose-phases": (Int8ConvTranspose2d.from_float(nn.ConvTranspose2d(12, 40, 4, 2, 1)),
                                  torch.randn(2, 12, 5, 9)),
        "conv-transpose-rgb": (Int8ConvTranspose2d.from_float(nn.ConvTranspose2d(12, 3, 4, 2, 1)),
                               torch.randn(2, 12, 5, 9)),
        "conv-transpose-col2im": (Int8ConvTranspose2d.from_float(nn.ConvTranspose2d(12, 3, 3, 2, 1, dilation=2)),
                                  torch.randn(2, 12, 5, 9)),
        "int4": (Int4Linear.from_float(nn.Linear(256, 40), group_size=64), torch.randn(5, 256)),
        # W4A8: two full blocks and a one-chunk tail; row tiles of 4 and a rest; one decode row
        "int4-a8": (Int4Linear.from_float(nn.Linear(320, 40), 64, "int8"), torch.randn(6, 320)),
        "int4-a8-g32-decode": (Int4Linear.from_float(nn.Linear(192, 33), 32, "int8"), torch.randn(1, 192)),
        "int4-a8-g128": (Int4Linear.from_float(nn.Linear(256, 17), 128, "int8"), torch.randn(2, 3, 256)),
        # 70 rows: the AVX-512 VNNI and AVX2 paths' GEMM form (from 32 rows), 40 features (a padded panel)
        "int4-a8-gemm": (Int4Linear.from_float(nn.Linear(320, 40), 64, "int8"), torch.randn(70, 320)),
        "int4-a8-gemm-g32": (Int4Linear.from_float(nn.Linear(192, 33), 32, "int8"), torch.randn(2, 40, 192)),
    }


LAYERS = _layers()


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_every_path_equals_the_exact_integer_kernel(isa, layer):
    module, x = LAYERS[layer]
    with torch.no_grad():
        got = module(x)
        with OtherDeviceKernels():
            want = module(x)
    if layer.startswith("int4"):  # float dequantized products: summation order differs by path
        scale = float(want.abs().max())
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6 * scale)
    else:  # integer products and one float epilogue (multiply, then add; no FMA on any path)
        assert torch.equal(got, want)


def test_activation_codes_are_identical_on_every_path_including_ties(isa):
    # Values on exact rounding ties (k + 0.5 steps) and both ends of the range.
    scale = 0.25
    x = (torch.arange(-40, 90, dtype=torch.float32) + 0.5) * scale
    x = torch.cat([x, torch.tensor([0.0, -0.0, 100.0, -10.0])]).reshape(1, -1)
    w = torch.eye(x.shape[1], dtype=torch.int8)  # the GEMM returns the codes minus the zero point
    p, s = torch.ops.edgegen.int8_pack_weight(w)
    got = torch.ops.edgegen.int8_linear_static(x, scale, 40, p, s, torch.ones(x.shape[1]), None, x.shape[1],
                                               x.shape[1])
    codes = (torch.round(x / scale) + 40).clamp(0, 127) - 40
    assert torch.equal(got, codes * scale)
    # Dynamic quantization (min/max, scale, zero point and codes) as the scalar path computes it;
    # with identity weights and unit scales the output is codes x scale, one rounding, on every path.
    dyn = torch.ops.edgegen.int8_linear_dynamic(x, p, s, torch.ones(x.shape[1]), None, x.shape[1], x.shape[1])
    with edgegen.max_isa("scalar"):
        ref = torch.ops.edgegen.int8_linear_dynamic(x, p, s, torch.ones(x.shape[1]), None, x.shape[1], x.shape[1])
    assert torch.equal(dyn, ref)


@pytest.mark.parametrize("to", ["half", "bfloat16", "double"])
def test_dtype_conversion_keeps_float32_scales(to):
    """`.half()` (or any float dtype) converts weights and biases but not the quantization
    scales: the forward on converted inputs equals the float32 module's to the input rounding."""
    torch.manual_seed(0)
    layers = [(Int8Linear.from_float(nn.Linear(64, 32)), torch.randn(4, 64)),
              (Int4Linear.from_float(nn.Linear(128, 24), group_size=32), torch.randn(3, 128)),
              (Int8ConvTranspose2d.from_float(nn.ConvTranspose2d(8, 16, 4, 2, 1), act_qparams=(0.05, 60)),
               torch.randn(2, 8, 5, 6))]
    for q, x in layers:
        want = q(x)
        scales = {n: b.clone() for n, b in q.named_buffers() if n.endswith("scale")}
        getattr(q, to)()
        for n, b in q.named_buffers():
            if n in scales:
                assert b.dtype == torch.float32 and torch.equal(b, scales[n]), n
        dt = {"half": torch.float16, "bfloat16": torch.bfloat16, "double": torch.float64}[to]
        got = q(x.to(dt)).float()
        ref = q.float()(x.to(dt).float())  # the same rounded input through the float32 module
        # 16-bit: the output (and the bias) carry the dtype's rounding (ulp 2^-10 / 2^-7 relative)
        tol = {torch.float16: 2e-3, torch.bfloat16: 1e-2, torch.float64: 1e-6}[dt]
        torch.testing.assert_close(got, ref, rtol=tol, atol=tol)
        if dt == torch.float64:  # a lossless round trip: the module computes exactly what it did
            assert torch.equal(ref, want)


_AMX_PROBE = """
import json, torch
from torch import nn
import edgegen
from edgegen.quant import Int8Conv2d, Int8ConvTranspose2d, Int8Linear
torch.manual_seed(0)
cases = [(Int8Linear.from_float(nn.Linear(200, 40)), torch.randn(70, 200) * 2),
         (Int8Conv2d.from_float(nn.Conv2d(70, 40, 3, stride=2, padding=1)), torch.randn(2, 70, 9, 40)),
         (Int8ConvTranspose2d.from_float(nn.ConvTranspose2d(64, 24, 4, stride=2, padding=1)), torch.randn(2, 64, 5, 37))]
err = 0.0
with torch.no_grad():
    for layer, x in cases:
        got = layer(x)
        with edgegen.max_isa("scalar"):
            want = layer(x)
        err = max(err, float((got - want).abs().max() / want.abs().max()))
print(json.dumps({"path": edgegen.kernel_paths()["int8_gemm"], "levels": edgegen.cpu_levels(), "err": err}))
"""


@pytest.mark.parametrize("opt_in", ["unset", "1"])
def test_amx_gemm_runs_only_when_asked_for_and_equals_the_scalar_path(opt_in):
    # The AMX INT8 GEMM / convolution has so far run only on the tile model: EDGEGEN_AMX=1
    # turns it on (where the CPU has AMX); without it, or without AMX, the path is the one below it.
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("EDGEGEN_AMX", "EDGEGEN_MAX_ISA")}
    if opt_in != "unset":
        env["EDGEGEN_AMX"] = opt_in
    res = json.loads(subprocess.run([sys.executable, "-c", _AMX_PROBE], env=env, capture_output=True, text=True,
                                    check=True, timeout=120).stdout)
    has_amx = "amx" in res["levels"]
    below = [lv for lv in ("avx512_vnni", "avx2_vnni", "avx2") if lv in res["levels"]]
    want_path = "amx" if (opt_in == "1" and has_amx) else (below[0] if below else "scalar")
    assert res["path"] == want_path
    assert res["err"] < 1e-6


@pytest.mark.parametrize("name,value,message", [
    ("EDGEGEN_AMX", "yes", "EDGEGEN_AMX: expected 0 or 1, got 'yes'"),
    ("EDGEGEN_AMX_GEMM", "1", "EDGEGEN_AMX_GEMM: no longer read; set EDGEGEN_AMX=0 or 1 instead"),
], ids=["misspelt-value", "former-name"])
def test_a_misspelt_amx_switch_is_a_clear_error(name, value, message):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("EDGEGEN_MAX_ISA", "EDGEGEN_AMX", "EDGEGEN_AMX_GEMM")}
    env[name] = value
    r = subprocess.run([sys.executable, "-c", "import edgegen; print(edgegen.kernel_paths()['int8_gemm'])"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert message in r.stderr
