"""The correctness checks of the benchmark workers: each compares edgegen's result with a
reference once, returns max_err and its tolerance, and catches a wrong result."""

from __future__ import annotations

import pytest
import torch

from tests.benchmarks import bench_paths  # noqa: F401  (puts benchmarks/ on sys.path)

import bench_attention  # noqa: E402
import bench_kd_loss  # noqa: E402
import bench_prune  # noqa: E402
import bench_quant  # noqa: E402


def spec(**kw):
    return dict(threads=1, repeats=5, measure="time", **kw)


# ------------------------------------------------------------------------------------ KD loss
def kd_inputs(dtype, n=6, v=97):
    g = torch.Generator().manual_seed(0)
    s = (torch.randn(n, v, generator=g) * 2).to(dtype).requires_grad_()
    t = (torch.randn(n, v, generator=g) * 2).to(dtype)
    y = torch.randint(0, v, (n,), generator=g)
    y[::3] = -100
    return s, t, y


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_kd_logits_check_passes_edgegen_and_catches_a_wrong_gradient(dtype):
    from edgegen.distill import kd_loss

    s, t, y = kd_inputs(dtype)
    loss = kd_loss(s, t, y, temperature=bench_kd_loss.T, alpha=bench_kd_loss.ALPHA)
    loss.backward()
    tol = bench_kd_loss.TOLERANCE[str(dtype).split(".")[-1]]
    assert bench_kd_loss.check_logits(s, t, y, loss) <= tol
    s.grad[1, 5] += 10 * s.grad.abs().max()
    assert bench_kd_loss.check_logits(s, t, y, loss) > 1


def test_kd_logits_check_catches_a_wrong_loss():
    from edgegen.distill import kd_loss

    s, t, y = kd_inputs(torch.float32)
    loss = kd_loss(s, t, y, temperature=bench_kd_loss.T, alpha=bench_kd_loss.ALPHA)
    loss.backward()
    assert bench_kd_loss.check_logits(s, t, y, loss * 1.01) == pytest.approx(0.01, rel=1e-3)


def test_fused_check_covers_the_head_weight_gradient():
    from edgegen.distill import fused_linear_kd_loss

    g = torch.Generator().manual_seed(1)
    n, v, hs_dim, ht_dim = 6, 97, 16, 24
    hs = torch.randn(n, hs_dim, generator=g).requires_grad_()
    ws = (torch.randn(v, hs_dim, generator=g) * hs_dim**-0.5).requires_grad_()
    ht, wt = torch.randn(n, ht_dim, generator=g), torch.randn(v, ht_dim, generator=g) * ht_dim**-0.5
    y = torch.randint(0, v, (n,), generator=g)
    loss = fused_linear_kd_loss(hs, ws, ht, wt, y, temperature=bench_kd_loss.T, alpha=bench_kd_loss.ALPHA)
    loss.backward()
    assert bench_kd_loss.check_linear(hs, ws, ht, wt, y, loss) <= bench_kd_loss.TOLERANCE["float32"]
    ws.grad[3, 2] += ws.grad.abs().max()
    assert bench_kd_loss.check_linear(hs, ws, ht, wt, y, loss) > 0.5


@pytest.mark.parametrize("op", ["kd_loss", "linear_kd_loss"])
def test_kd_worker_checks_edgegen_rows_only(op):
    mine = bench_kd_loss.worker(spec(op=op, provider="edgegen" if op == "kd_loss" else "edgegen-fused", n=4,
                                     dtype="float32"))
    assert mine["max_err"] <= mine["tol"] == bench_kd_loss.TOLERANCE["float32"] and mine["p50_ms"] > 0
    peer = bench_kd_loss.worker(spec(op=op, provider="eager" if op == "kd_loss" else "materialise+eager", n=4,
                                     dtype="float32"))
    assert "max_err" not in peer and peer["p50_ms"] > 0


# --------------------------------------------------------------------------------- quantization
@pytest.mark.parametrize("provider", ["edgegen-int8", "edgegen-int4", "edgegen-int4a8"])
def test_quant_layer_worker_checks_edgegen_against_the_dequantized_layer(provider):
    res = bench_quant.linear_worker(spec(op="linear", provider=provider, k=128, n=64, m=3))
    kind = provider.removeprefix("edgegen-")
    assert res["tol"] == bench_quant.LAYER_TOL[kind] and res["max_err"] <= res["tol"]
    # the peers (torch.ao's int8 layer has no dequantized weight to compare with) are timed unchecked
    peer = bench_quant.linear_worker(spec(op="linear", provider="torch-int8", k=128, n=64, m=3))
    assert peer["p50_ms"] > 0 and "max_err" not in peer


def test_quant_layer_check_catches_a_wrong_output():
    from torch import nn

    from edgegen.quant import Int8Linear

    lin = nn.Linear(128, 64)
    q, x = Int8Linear.from_float(lin), torch.randn(3, 128)
    with torch.no_grad():
        out = q(x)
    assert bench_quant.layer_check(q, lin, x, out, "int8")["max_err"] <= bench_quant.LAYER_TOL["int8"]
    assert bench_quant.layer_check(q, lin, x, out * 1.5, "int8")["max_err"] > bench_quant.LAYER_TOL["int8"]


def test_quant_model_worker_checks_against_the_fp32_model():
    res = bench_quant.e2e_worker(spec(op="e2e", model="beta-vae-decoder", mode="batch64", provider="int8"))
    assert res["tol"] == bench_quant.MODEL_TOL["int8"] and res["max_err"] <= res["tol"]
    assert "max_err" not in bench_quant.e2e_worker(spec(op="e2e", model="beta-vae-decoder", mode="batch64",
                                                        provider="fp32"))


# ------------------------------------------------------------------------------------ attention
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd", "decode"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_attention_check_passes_edgegen_in_every_timed_mode(mode, dtype):
    err = bench_attention.check_error("edgegen", 300, mode, dtype)
    assert err <= bench_attention.TOLERANCE[str(dtype).split(".")[-1]]


def test_attention_check_catches_another_pattern():
    assert bench_attention.check_error("sdpa_causal", 300, "fwd", torch.float32) > 0.01


def test_attention_check_covers_the_gradients(monkeypatch):
    real = bench_attention.attention_fn

    def right_forward_wrong_gradient(provider, n, mode):
        f = real("edgegen", n, mode)
        return lambda q, k, v: f(q, k, v) + 0.5 * (q - q.detach())

    monkeypatch.setattr(bench_attention, "attention_fn", right_forward_wrong_gradient)
    assert bench_attention.check_error("edgegen", 300, "fwd", torch.float32) <= 1e-4
    assert bench_attention.check_error("edgegen", 300, "fwd+bwd", torch.float32) > 0.1


@pytest.mark.parametrize("provider", ["edgegen", "sdpa_mask"])
def test_attention_worker_checks_the_pattern_providers(provider):
    res = bench_attention.worker(spec(n=300, provider=provider, mode="decode", dtype="float32"))
    assert res["p50_ms"] > 0
    assert res["max_err"] <= res["tol"] == bench_attention.TOLERANCE["float32"]
    # dense causal SDPA computes another pattern: timed, not checked
    assert "max_err" not in bench_attention.worker(spec(n=300, provider="sdpa_causal", mode="decode", dtype="float32"))


# -------------------------------------------------------------------------------------- pruning
def test_prune_worker_enforces_an_exact_mask_for_edgegen_only():
    shapes = [[64, 64], [32], [16, 8]]
    mine = bench_prune.mask_worker(spec(op="global_magnitude_prune", provider="edgegen", shapes=shapes, check=True))
    assert mine["max_err"] == 0 and mine["tol"] == 0
    peer = bench_prune.mask_worker(spec(op="global_magnitude_prune", provider="kthvalue(cat)", shapes=shapes,
                                        check=True))
    assert "max_err" not in peer and peer["mask_mismatch"] == 0
