"""The PyTorch kernels the dispatcher uses on devices without a C++ kernel (edgegen.ops._fallback):
equal to the float64 reference twins and their autograd gradients, chunking included, bad input
named; and the dispatch table routes each device to the right kernel."""

from __future__ import annotations

import math

import pytest
import torch

import edgegen  # noqa: F401
from edgegen.ops import _fallback as fb
from edgegen.ops._reference import (
    fused_linear_kd_loss_reference,
    kd_loss_reference,
    sliding_window_attention_reference,
)
from tests.helpers import make_target

F64 = torch.float64


@pytest.mark.parametrize("op", ["kd_loss", "fused_linear_kd_loss", "sliding_window_attention",
                                "sliding_window_attention_backward"])
def test_dispatch_table(op):
    """CPU runs the C++ kernel; a device with no kernel of its own (XPU stands for any) gets the
    PyTorch fallback through the dispatcher; no Python device branch is involved."""
    table = dict(line.split(": ", 1) for line in torch._C._dispatch_dump_table(f"edgegen::{op}").splitlines()
                 if ": " in line)
    assert "csrc/cpu/" in table["CPU"]
    assert "_fallback.py" in table["XPU"]
    if not torch._C._dispatch_has_kernel_for_dispatch_key(f"edgegen::{op}", "CUDA"):
        assert "_fallback.py" in table["CUDA"]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("alpha", [0.0, 0.4, 1.0], ids=["ce-only", "mixed", "kl-only"])
@pytest.mark.parametrize("teachers", [1, 3])
def test_kd_loss_fallback_matches_reference(reduction, alpha, teachers, monkeypatch):
    monkeypatch.setattr(fb, "_CHUNK_LOGITS", 97 * 3)  # 3 rows per chunk: several chunks
    s = torch.randn(4, 5, 97, dtype=F64, requires_grad=True)
    ts = [torch.randn(4, 5, 97, dtype=F64) * 3 for _ in range(teachers)]
    ts[0][0, 0, :10] = -math.inf  # teacher probability 0: contributes nothing
    y = make_target((4, 5), 97, "some")
    weights = [1.0, 0.0, 2.0][:teachers] if teachers > 1 else []
    loss, grad = fb.kd_loss_fallback(s.detach(), ts, weights, y, 3.0, alpha, -100, reduction, True)
    ref = kd_loss_reference(s, ts, y, 3.0, alpha, -100, reduction, weights or None)
    (gref,) = torch.autograd.grad(ref.sum(), s)
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, gref, rtol=1e-12, atol=1e-12)


def test_kd_loss_fallback_float32_and_all_ignored():
    s = torch.randn(6, 300)
    t = torch.randn(6, 300)
    y = make_target((6,), 300, "none")
    loss, grad = fb.kd_loss_fallback(s, [t], [], y, 2.0, 0.5, -100, "mean", True)
    ref = kd_loss_reference(s.double().requires_grad_(), t.double(), y)
    assert loss.dtype == torch.float32 and grad.dtype == torch.float32
    torch.testing.assert_close(loss.double(), ref.detach(), rtol=2e-6, atol=1e-6)
    y_all = make_target((6,), 300, "all")
    loss, grad = fb.kd_loss_fallback(s, [t], [], y_all, 2.0, 0.5, -100, "mean", True)
    assert loss.item() == 0.0 and not grad.any()


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
def test_fused_linear_fallback_matches_reference(reduction, bias):
    hs = torch.randn(3, 7, 8, dtype=F64, requires_grad=True)
    ws = torch.randn(41, 8, dtype=F64, requires_grad=True)
    bs = torch.randn(41, dtype=F64, requires_grad=True) if bias else None
    ht, wt = torch.randn(3, 7, 6, dtype=F64), torch.randn(41, 6, dtype=F64)
    bt = torch.randn(41, dtype=F64) if bias else None
    y = make_target((3, 7), 41, "some")
    row_scale = torch.rand(21, dtype=F64) if reduction == "none" else None
    loss, dh, dw, db = fb.fused_linear_kd_loss_fallback(hs.detach(), ws.detach(), None if bs is None else bs.detach(),
                                                       ht, wt, bt, y, 2.0, 0.5, -100, reduction, 4, row_scale, True)
    ref = fused_linear_kd_loss_reference(hs, ws, ht, wt, y, 2.0, 0.5, -100, reduction, bs, bt)
    upstream = row_scale.reshape(3, 7) if row_scale is not None else torch.ones((), dtype=F64)
    wrt = (hs, ws) + ((bs,) if bias else ())
    grads = torch.autograd.grad((ref * upstream).sum(), wrt)
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dh, grads[0], rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(dw, grads[1], rtol=1e-11, atol=1e-12)
    if bias:
        torch.testing.assert_close(db, grads[2], rtol=1e-11, atol=1e-12)
    else:
        assert db.numel() == 0


@pytest.mark.parametrize("case", [
    dict(window=5, num_global=2, causal=True, q_offset=0),
    dict(window=3, num_global=0, causal=False, q_offset=0),
    dict(window=4, num_global=1, causal=True, q_offset=30),  # decode-like: queries past the keys
], ids=["causal", "non-causal", "offset-empty-rows"])
def test_attention_fallback_matches_reference_and_autograd(case):
    q = torch.randn(2, 3, 20, 8, dtype=F64, requires_grad=True)
    k = torch.randn(2, 3, 24, 8, dtype=F64, requires_grad=True)
    v = torch.randn(2, 3, 24, 8, dtype=F64, requires_grad=True)
    args = (case["window"], case["num_global"], case["causal"], 0.4, case["q_offset"], None, 0)
    out, lse = fb.swa_fallback(q.detach(), k.detach(), v.detach(), *args)
    ref_out, ref_lse = sliding_window_attention_reference(q, k, v, *args)
    torch.testing.assert_close(out, ref_out.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(lse, ref_lse.detach(), rtol=0, atol=1e-12)
    go = torch.randn_like(out)
    dq, dk, dv = fb.swa_backward_fallback(go, q.detach(), k.detach(), v.detach(), out, lse, *args)
    rq, rk, rv = torch.autograd.grad(ref_out, (q, k, v), go)
    for a, b in ((dq, rq), (dk, rk), (dv, rv)):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)


def test_attention_fallback_block_layout():
    q, k, v = (torch.randn(1, 2, 40, 16, dtype=F64, requires_grad=True) for _ in range(3))
    layout = torch.tensor([[0, 0], [1, 0], [1, 1], [2, 2], [3, 0]])
    args = (1, 0, True, None, 0, layout, 10)
    out, lse = fb.swa_fallback(q.detach(), k.detach(), v.detach(), *args)
    ref_out, _ = sliding_window_attention_reference(q, k, v, *args)
    torch.testing.assert_close(out, ref_out.detach(), rtol=0, atol=1e-12)
    go = torch.randn_like(out)
    grads = fb.swa_backward_fallback(go, q.detach(), k.detach(), v.detach(), out, lse, *args)
    for a, b in zip(grads, torch.autograd.grad(ref_out, (q, k, v), go)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)


def test_fallback_bad_input_names_the_argument():
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    y = torch.tensor([1, 2, 10, 3])
    with pytest.raises(IndexError, match=r"target: entry 2 is 10"):
        fb.kd_loss_fallback(s, [t], [], y, 2.0, 0.5, -100, "mean", True)
    with pytest.raises(ValueError, match="temperature"):
        fb.kd_loss_fallback(s, [t], [], y.clamp(max=9), 0.0, 0.5, -100, "mean", True)
    with pytest.raises(ValueError, match="teacher_logits"):
        fb.kd_loss_fallback(s, [], [], y.clamp(max=9), 2.0, 0.5, -100, "mean", True)
    with pytest.raises(ValueError, match=r"teacher_logits\[0\]"):
        fb.kd_loss_fallback(s, [torch.randn(4, 11)], [], y.clamp(max=9), 2.0, 0.5, -100, "mean", True)
    with pytest.raises(ValueError, match="teacher_weights"):
        fb.kd_loss_fallback(s, [t, t], [1.0, -1.0], y.clamp(max=9), 2.0, 0.5, -100, "mean", True)
    with pytest.raises(TypeError, match="target"):
        fb.kd_loss_fallback(s, [t], [], y.float(), 2.0, 0.5, -100, "mean", True)
    q = torch.randn(1, 1, 8, 16)
    with pytest.raises(ValueError, match="window"):
        fb.swa_fallback(q, q, q, 0, 0, True, None, 0, None, 0)
    with pytest.raises(ValueError, match="num_global"):
        fb.swa_fallback(q, q, q, 4, 9, True, None, 0, None, 0)
    with pytest.raises(ValueError, match="block_size"):
        fb.swa_fallback(q, q, q, 4, 0, True, None, 0, None, 16)
    with pytest.raises(IndexError, match="block_layout"):
        fb.swa_fallback(q, q, q, 1, 0, True, None, 0, torch.tensor([[0, 0], [2, 0]]), 4)


@pytest.mark.parametrize("shape", [(1, 8, 8), (5, 13, 9), (40, 64, 24)], ids=["tiny", "ragged", "tiles"])
@pytest.mark.parametrize("seven_bit", [False, True], ids=["u8", "u7"])
def test_int8_gemm_through_int_mm_is_exact(shape, seven_bit):
    """The GPU form of the INT8 GEMM (torch._int_mm, padded, split into 2h + l for full-range
    uint8) equals the exact int64 product; run here on the CPU's _int_mm."""
    from edgegen.ops._reference import int8_gemm_int_mm

    m, k, n = shape
    top = 127 if seven_bit else 255
    a = torch.randint(0, top + 1, (m, k), dtype=torch.uint8)
    a[0, 0], a[-1, -1] = 0, top
    w = torch.randint(-127, 128, (n, k), dtype=torch.int8)
    for zp in (0, 1, top // 2, top):
        expected = ((a.long() - zp) @ w.long().t()).int()
        assert torch.equal(int8_gemm_int_mm(a, zp, w, seven_bit), expected), zp


def test_int8_fallbacks_share_the_cpu_kernels_reduction_limit():
    """The fallbacks (every device but the CPU) refuse the in_features the CPU kernel refuses:
    beyond 65,000 the int32 sums of 255 x 128 products can wrap around."""
    from edgegen.ops._fallback_quant import int8_gemm_fallback, int8_pack_weight_fallback

    ok = torch.full((1, 65000), -128, dtype=torch.int8)
    packed, row_sum = int8_pack_weight_fallback(ok)
    acc = int8_gemm_fallback(torch.full((1, 65000), 255, dtype=torch.uint8), 0, packed, row_sum, 1, 65000)
    assert int(acc) == 65000 * 255 * -128  # exact at the limit
    for pack in (int8_pack_weight_fallback, torch.ops.edgegen.int8_pack_weight):
        with pytest.raises(ValueError, match="in_features 65001 exceeds 65000"):
            pack(torch.zeros(1, 65001, dtype=torch.int8))
