"""The KD losses on CUDA (the native row kernel when built, else the chunked fallback) against the
float64 reference on the CPU: loss and gradient, every reduction, several teachers, both terms
alone, ignored rows, shared-memory and streaming paths, fused-linear chunks, bad input."""

from __future__ import annotations

import pytest
import torch

import edgegen  # noqa: F401
from edgegen.distill import fused_linear_kd_loss, kd_loss
from edgegen.ops._reference import fused_linear_kd_loss_reference, kd_loss_reference
from tests.cuda.conftest import native
from tests.helpers import make_target

DEV = "cuda"
# Relative to max |ref|: fp32 math with fast exponentials; 16-bit gradients are stored rounded.
GRAD_TOL = {torch.float32: 1e-5, torch.float64: 1e-12, torch.bfloat16: 1e-2, torch.float16: 2e-3}
LOSS_TOL = {torch.float32: 2e-5, torch.float64: 1e-12, torch.bfloat16: 2e-5, torch.float16: 2e-5}


def _close(actual, expected, tol):
    actual, expected = actual.double().cpu(), expected.double().cpu()
    assert torch.isfinite(actual).all()
    err = (actual - expected).abs().max().item() if actual.numel() else 0.0
    scale = max(expected.abs().max().item() if expected.numel() else 0.0, 1e-30)
    assert err <= tol * scale + 1e-30, f"max error {err:.3g} vs max |ref| {scale:.3g}"


def _case(rows, vocab, dtype, teachers=1, pattern="some", spread=4.0):
    s = (torch.randn(rows, vocab, dtype=torch.float64) * spread).to(dtype)
    ts = [(torch.randn(rows, vocab, dtype=torch.float64) * spread).to(dtype) for _ in range(teachers)]
    y = make_target((rows,), vocab, pattern)
    return s, ts, y


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64],
                         ids=["f32", "bf16", "f16", "f64"])
@pytest.mark.parametrize("vocab", [100, 50257, 70001], ids=["V100", "V50257", "V70001-streamed"])
def test_kd_loss_matches_reference(dtype, vocab):
    s, ts, y = _case(24, vocab, dtype)
    sd = s.double().clone().requires_grad_()
    ref = kd_loss_reference(sd, [t.double() for t in ts], y)
    ref.backward()
    sc = s.detach().to(DEV).requires_grad_()
    loss = kd_loss(sc, [t.to(DEV) for t in ts], y.to(DEV))
    loss.backward()
    _close(loss, ref.detach(), LOSS_TOL[dtype])
    assert sc.grad.dtype == dtype
    _close(sc.grad, sd.grad, GRAD_TOL[dtype])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0], ids=["ce-only", "mixed", "kl-only"])
@pytest.mark.parametrize("temperature", [1.0, 2.0, 3.5])
def test_kd_loss_settings(reduction, alpha, temperature):
    s, ts, y = _case(16, 1000, torch.float32, teachers=3)
    ts[1][:, :50] = float("-inf")  # a teacher that gives some tokens probability 0
    weights = [0.5, 1.0, 2.5]
    sd = s.double().clone().requires_grad_()
    ref = kd_loss_reference(sd, [t.double() for t in ts], y, temperature, alpha, -100, reduction, weights)
    upstream = torch.rand_like(ref) if reduction == "none" else torch.tensor(1.7, dtype=torch.float64)
    (ref * upstream).sum().backward()
    sc = s.to(DEV).requires_grad_()
    loss = kd_loss(sc, [t.to(DEV) for t in ts], y.to(DEV), temperature, alpha, -100, reduction, weights)
    (loss * upstream.to(DEV, torch.float32)).sum().backward()
    _close(loss, ref.detach(), LOSS_TOL[torch.float32])
    _close(sc.grad, sd.grad, GRAD_TOL[torch.float32])


def test_all_rows_ignored_and_empty():
    s, ts, y = _case(8, 300, torch.float32, pattern="all")
    sc = s.to(DEV).requires_grad_()
    loss = kd_loss(sc, ts[0].to(DEV), y.to(DEV))
    loss.backward()
    assert loss.item() == 0.0 and not sc.grad.any()
    e = torch.randn(0, 300, device=DEV, requires_grad=True)
    loss = kd_loss(e, torch.randn(0, 300, device=DEV), torch.zeros(0, dtype=torch.long, device=DEV))
    loss.backward()
    assert loss.item() == 0.0 and e.grad.shape == (0, 300)


def test_large_logits_stay_finite():
    s, ts, y = _case(4, 5000, torch.float32, spread=1e4)
    sc = s.to(DEV).requires_grad_()
    loss = kd_loss(sc, ts[0].to(DEV), y.to(DEV))
    loss.backward()
    sd = s.double().clone().requires_grad_()
    ref = kd_loss_reference(sd, ts[0].double(), y)
    ref.backward()
    _close(loss, ref.detach(), 1e-5)
    _close(sc.grad, sd.grad, 1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_fused_linear_matches_reference(dtype, reduction):
    hs = torch.randn(3, 40, 64, dtype=torch.float64)
    ws = torch.randn(2003, 64, dtype=torch.float64) * 0.2
    bs = torch.randn(2003, dtype=torch.float64)
    ht = torch.randn(3, 40, 96, dtype=torch.float64)
    wt = torch.randn(2003, 96, dtype=torch.float64) * 0.2
    y = make_target((3, 40), 2003, "some")
    leaves = [t.clone().requires_grad_() for t in (hs, ws, bs)]
    ref = fused_linear_kd_loss_reference(leaves[0], leaves[1], ht, wt, y, 2.0, 0.5, -100, reduction, leaves[2])
    ref.sum().backward()
    dev = [t.to(DEV, dtype).requires_grad_() for t in (hs, ws, bs)]
    loss = fused_linear_kd_loss(dev[0], dev[1], ht.to(DEV, dtype), wt.to(DEV, dtype), y.to(DEV), 2.0, 0.5, -100,
                                reduction, student_bias=dev[2], chunk_size=50)
    loss.sum().backward()
    tol = 1e-4 if dtype == torch.float32 else 3e-2  # the logits come from TF32/bf16 GEMMs
    _close(loss, ref.detach(), tol)
    for a, b in zip(dev, leaves):
        _close(a.grad, b.grad, tol)


@pytest.mark.parametrize("choice", ["0", "1"], ids=["rows", "cluster"])
def test_kernel_choice_follows_the_variable(choice, monkeypatch):
    """EDGEGEN_CUDA_KD_CLUSTER=1 (read per call) runs the cluster kernel on compute capability 9 and
    up, the row kernel below; unset or 0, the row kernel. Seen in the profiler's kernel names."""
    if not native("kd_loss"):
        pytest.skip("this build has no native CUDA KD kernel (EDGEGEN_CUDA=OFF)")
    monkeypatch.setenv("EDGEGEN_CUDA_KD_CLUSTER", choice)
    s, ts, y = _case(8, 50257, torch.float32)
    s, t, y = s.to(DEV).requires_grad_(), ts[0].to(DEV), y.to(DEV)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        kd_loss(s, t, y).backward()
        torch.cuda.synchronize()
    names = {e.name for e in prof.events()}
    cluster = choice == "1" and torch.cuda.get_device_capability()[0] >= 9
    want, other = ("kd_cluster_kernel", "kd_rows_kernel") if cluster else ("kd_rows_kernel", "kd_cluster_kernel")
    assert any(want in n for n in names), sorted(names)
    assert not any(other in n for n in names), sorted(names)


def test_gradcheck_float64():
    s = torch.randn(3, 7, dtype=torch.float64, device=DEV, requires_grad=True)
    t = torch.randn(3, 7, dtype=torch.float64, device=DEV)
    y = torch.tensor([1, -100, 6], device=DEV)
    assert torch.autograd.gradcheck(lambda x: kd_loss(x, t, y, 2.0, 0.3, grad_in_forward=False), (s,))


@pytest.mark.parametrize("with_grad", [True, False])
def test_opcheck(with_grad):
    s = torch.randn(2, 5, 33, device=DEV, requires_grad=True)
    t = torch.randn(2, 5, 33, device=DEV)
    y = make_target((2, 5), 33, "some").to(DEV)
    torch.library.opcheck(torch.ops.edgegen.kd_loss.default, (s, [t], [], y, 2.0, 0.5, -100, "mean", with_grad))


def test_bad_input_names_the_argument():
    s = torch.randn(4, 10, device=DEV)
    with pytest.raises(IndexError, match=r"target: entry 2 is 10"):
        torch.ops.edgegen.kd_loss(s, [s], [], torch.tensor([1, 2, 10, 3], device=DEV), 2.0, 0.5, -100, "mean", True)
    with pytest.raises(RuntimeError, match="target"):
        torch.ops.edgegen.kd_loss(s, [s], [], torch.tensor([1, 2, 3, 3]), 2.0, 0.5, -100, "mean", True)
    with pytest.raises(ValueError, match="reduction"):
        torch.ops.edgegen.kd_loss(s, [s], [], torch.tensor([1, 2, 3, 3], device=DEV), 2.0, 0.5, -100, "avg", True)
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(s, s, torch.tensor([1, 2, 3, 3], device=DEV), temperature=-1.0)


@pytest.mark.parametrize("choice", ["0", "1"], ids=["rows", "cluster"])
@pytest.mark.parametrize("where", ["lane0", "lane1", "row-all-inf"])
def test_a_nan_teacher_makes_the_loss_nan_as_on_the_cpu(choice, where, monkeypatch):
    """A NaN teacher logit (first or second of its 16-byte vector) or a teacher row all -inf: the
    loss is NaN as on the CPU and in eager PyTorch, not a finite number over wrong gradients."""
    monkeypatch.setenv("EDGEGEN_CUDA_KD_CLUSTER", choice)
    s, ts, y = _case(3, 50257, torch.float32, teachers=2)
    if where == "row-all-inf":
        ts[1][0] = -float("inf")
    else:
        ts[0][0, 20 if where == "lane0" else 21] = float("nan")
    cpu = kd_loss(s, ts, y)
    got = kd_loss(s.to(DEV), [t.to(DEV) for t in ts], y.to(DEV))
    assert torch.isnan(cpu) and torch.isnan(got.cpu()), (cpu, got)
