"""fused_linear_kd_loss equals materialised logits + kd_loss, in values and gradients."""

import pytest
import torch
import torch.nn.functional as F

from edgegen.distill import FusedLinearKDLoss, fused_linear_kd_loss, kd_loss
from edgegen.ops import fused_linear_kd_loss_reference
from tests.helpers import assert_grad_close, assert_loss_close, make_target


def make(n, hs, ht, vocab, dtype, bias=False, lead=None):
    lead = lead or (n,)
    h_s = torch.randn(*lead, hs).to(dtype).requires_grad_()
    w_s = (torch.randn(vocab, hs) / hs**0.5).to(dtype).requires_grad_()
    b_s = (torch.randn(vocab) * 0.1).to(dtype).requires_grad_() if bias else None
    h_t = torch.randn(*lead, ht).to(dtype)
    w_t = (torch.randn(vocab, ht) / ht**0.5).to(dtype)
    b_t = (torch.randn(vocab) * 0.1).to(dtype) if bias else None
    return h_s, w_s, b_s, h_t, w_t, b_t


def materialised(h_s, w_s, b_s, h_t, w_t, b_t, y, **kw):
    """The unfused composition on float64 copies: logits, then the KD loss."""
    leaves = [x.detach().double().requires_grad_() if x is not None else None for x in (h_s, w_s, b_s)]
    s = F.linear(leaves[0], leaves[1], leaves[2])
    t = F.linear(h_t.double(), w_t.double(), None if b_t is None else b_t.double())
    loss = kd_loss(s, t, y, **kw)
    loss.sum().backward()
    return loss, [x.grad if x is not None else None for x in leaves]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("chunk_size", [0, 1, 7, 1000])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("bias", [False, True])
def test_matches_materialised(dtype, chunk_size, reduction, bias):
    n, vocab = 23, 301  # 23 rows: not a multiple of any chunk size above
    h_s, w_s, b_s, h_t, w_t, b_t = make(n, 16, 24, vocab, dtype, bias)
    y = make_target((n,), vocab, "some")
    kw = dict(temperature=2.0, alpha=0.5, reduction=reduction)
    loss = fused_linear_kd_loss(h_s, w_s, h_t, w_t, y, student_bias=b_s, teacher_bias=b_t,
                                chunk_size=chunk_size, **kw)
    loss.sum().backward()
    ref, ref_grads = materialised(h_s, w_s, b_s, h_t, w_t, b_t, y, **kw)
    # bf16 logits are rounded by the bf16 GEMM before the loss sees them: compare loosely there.
    ltol = torch.float32 if dtype == torch.bfloat16 else dtype
    if dtype == torch.bfloat16:
        torch.testing.assert_close(loss.double(), ref, rtol=2e-2, atol=2e-2)
    else:
        assert_loss_close(loss, ref, ltol)
    for got, exp in zip((h_s.grad, w_s.grad, None if b_s is None else b_s.grad), ref_grads):
        if exp is None:
            assert got is None
            continue
        assert got.dtype == dtype
        if dtype == torch.bfloat16:
            torch.testing.assert_close(got.double(), exp, rtol=5e-2, atol=5e-2 * exp.abs().max().item())
        else:
            assert_grad_close(got, exp, torch.float32 if dtype == torch.float32 else dtype)


@pytest.mark.parametrize("settings", [
    dict(temperature=2.0, alpha=0.5, reduction="mean", chunk_size=0, grad_in_forward=True),
    dict(temperature=3.5, alpha=0.3, reduction="sum", chunk_size=4, grad_in_forward=True),
    dict(temperature=1.0, alpha=1.0, reduction="mean", chunk_size=5, grad_in_forward=False),
    dict(temperature=0.7, alpha=0.0, reduction="sum", chunk_size=3, grad_in_forward=True),
    dict(temperature=1.5, alpha=0.8, reduction="none", chunk_size=6, grad_in_forward=False),
], ids=["mean", "sum-chunked", "kd-only-recompute", "ce-only", "none"])
@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_op_equals_its_pure_pytorch_twin(settings, bias, dtype):
    """The C++ op against fused_linear_kd_loss_reference (materialised logits, float64): loss and
    the student's gradients, with a custom ignore_index and a random upstream gradient."""
    n, vocab, ignore = 17, 53, 7
    h_s, w_s, b_s, h_t, w_t, b_t = make(n, 12, 20, vocab, dtype, bias)
    y = make_target((n,), vocab, "none")
    y[::4] = ignore
    kw = {k: v for k, v in settings.items() if k in ("temperature", "alpha", "reduction")}
    loss = fused_linear_kd_loss(h_s, w_s, h_t, w_t, y, ignore_index=ignore, student_bias=b_s, teacher_bias=b_t,
                                chunk_size=settings["chunk_size"], grad_in_forward=settings["grad_in_forward"], **kw)
    up = torch.rand(loss.shape, dtype=torch.float64) + 0.5
    loss.backward(up.to(dtype))
    leaves = [None if x is None else x.detach().double().requires_grad_() for x in (h_s, w_s, b_s)]
    ref = fused_linear_kd_loss_reference(leaves[0], leaves[1], h_t.double(), w_t.double(), y, ignore_index=ignore,
                                         student_bias=leaves[2], teacher_bias=None if b_t is None else b_t.double(),
                                         **kw)
    ref.backward(up)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-5, atol=1e-6)
    assert loss.dtype == dtype and loss.shape == ref.shape
    torch.testing.assert_close(loss.double(), ref.detach(), **tol)
    for got, want in zip((h_s.grad, w_s.grad, None if b_s is None else b_s.grad), leaves):
        if want is None:
            assert got is None
            continue
        assert got.dtype == dtype
        torch.testing.assert_close(got.double(), want.grad, **tol)


def test_three_dimensional_hidden_states_and_all_ignored():
    h_s, w_s, _, h_t, w_t, _ = make(0, 8, 12, 50, torch.float64, lead=(2, 5))
    y = make_target((2, 5), 50, "some")
    loss = fused_linear_kd_loss(h_s, w_s, h_t, w_t, y, chunk_size=3, reduction="none")
    assert loss.shape == (2, 5)
    ref, _ = materialised(h_s, w_s, None, h_t, w_t, None, y, reduction="none")
    torch.testing.assert_close(loss, ref, rtol=1e-11, atol=1e-12)
    y_all = torch.full((2, 5), -100)
    loss = fused_linear_kd_loss(h_s, w_s, h_t, w_t, y_all)
    loss.backward()
    assert loss.item() == 0.0 and torch.all(h_s.grad == 0) and torch.all(w_s.grad == 0)


def test_gradients_reach_student_only():
    h_s, w_s, b_s, h_t, w_t, b_t = make(6, 8, 8, 40, torch.float32, bias=True)
    h_t.requires_grad_()
    w_t.requires_grad_()
    fused_linear_kd_loss(h_s, w_s, h_t, w_t, torch.arange(6), student_bias=b_s, teacher_bias=b_t).backward()
    assert h_s.grad is not None and w_s.grad is not None and b_s.grad is not None
    assert h_t.grad is None and w_t.grad is None


def test_gradcheck_float64():
    h_s, w_s, b_s, h_t, w_t, b_t = make(5, 4, 6, 13, torch.float64, bias=True)
    y = make_target((5,), 13, "some")
    for reduction in ("mean", "none"):
        assert torch.autograd.gradcheck(
            lambda a, b, c: fused_linear_kd_loss(a, b, h_t, w_t, y, student_bias=c, teacher_bias=b_t,
                                                 reduction=reduction, chunk_size=2,
                                                 grad_in_forward=False),
            (h_s, w_s, b_s),
        )


def test_upstream_scaling_and_repeat_backward():
    h_s, w_s, _, h_t, w_t, _ = make(9, 8, 8, 31, torch.float64)
    y = make_target((9,), 31, "none")
    (2.5 * fused_linear_kd_loss(h_s, w_s, h_t, w_t, y)).backward()
    g = h_s.grad.clone(), w_s.grad.clone()
    ref, (rh, rw, _) = materialised(h_s, w_s, None, h_t, w_t, None, y)
    torch.testing.assert_close(g[0], 2.5 * rh)
    torch.testing.assert_close(g[1], 2.5 * rw)
    h_s.grad = w_s.grad = None
    loss = fused_linear_kd_loss(h_s, w_s, h_t, w_t, y)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()


def test_module_accepts_linear_heads():
    student_head = torch.nn.Linear(8, 40, bias=False)
    teacher_head = torch.nn.Linear(12, 40, bias=False)
    h_s, h_t = torch.randn(5, 8), torch.randn(5, 12)
    y = torch.arange(5)
    m = FusedLinearKDLoss(temperature=2.0, alpha=0.5, chunk_size=2)
    got = m(h_s, student_head, h_t, teacher_head, y)
    want = kd_loss(student_head(h_s), teacher_head(h_t), y)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    got.backward()
    assert student_head.weight.grad is not None and teacher_head.weight.grad is None
    with pytest.raises(TypeError, match="student_head"):
        m(h_s, "head", h_t, teacher_head, y)


@pytest.mark.parametrize("grad_in_forward", [True, False], ids=["grad-in-forward", "recompute"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_double_backward_raises_instead_of_dropping_the_kd_term(grad_in_forward, reduction):
    """Backward with create_graph=True raises (the returned gradients are not differentiable, so a
    second-order gradient would silently leave out the KD term); first order is unaffected."""
    torch.manual_seed(0)
    h_s, w_s, b_s, h_t, w_t, b_t = make(5, 4, 6, 11, torch.float64, bias=True)
    y = make_target((5,), 11, "some")
    kw = dict(reduction=reduction, student_bias=b_s, teacher_bias=b_t, grad_in_forward=grad_in_forward)
    loss = fused_linear_kd_loss(h_s, w_s, h_t, w_t, y, **kw).sum() + h_s.pow(2).sum()
    with pytest.raises(RuntimeError,
                       match=r"edgegen::fused_linear_kd_loss: double backward is not supported.*create_graph=True"):
        torch.autograd.grad(loss, (h_s, w_s), create_graph=True)
    grads = torch.autograd.grad(fused_linear_kd_loss(h_s, w_s, h_t, w_t, y, **kw).sum(), (h_s, w_s, b_s))
    _, ref = materialised(h_s, w_s, b_s, h_t, w_t, b_t, y, reduction=reduction)
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-10)
