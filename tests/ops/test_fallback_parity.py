"""The kernel every device without a C++ kernel gets (the PyTorch fallback, also behind the meta /
fake kernels) against the CPU kernel and the float64 reference where the two could part: an
ignore_index inside the vocabulary, teacher weights and counts the CPU kernel refuses, every key
global, key blocks out of range, bf16 weight gradients accumulated over many chunks, and the
attention op's metadata in half precision."""

import pytest
import torch

import edgegen  # noqa: F401
from edgegen.ops import _fallback as fb
from edgegen.ops._reference import fused_linear_kd_loss_reference, kd_loss_reference

DK = torch._C.DispatchKey
KD = torch.ops.edgegen.kd_loss.default
SWA = torch.ops.edgegen.sliding_window_attention.default


def other(op, *a):
    """``op`` through the kernel every device without a C++ kernel gets."""
    return op._op_dk(DK.CompositeExplicitAutograd, *a)


def test_fallback_bf16_weight_gradient_accumulates_in_float32():
    g = torch.Generator().manual_seed(0)
    N, H, V = 512, 16, 64
    hs, ws = torch.randn(N, H, generator=g), torch.randn(V, H, generator=g) / 4
    ht, wt = torch.randn(N, H, generator=g), torch.randn(V, H, generator=g) / 4
    y = torch.randint(0, V, (N,), generator=g)
    b = [x.bfloat16() for x in (hs, ws, ht, wt)]
    _, _, dw, _ = fb.fused_linear_kd_loss_fallback(b[0], b[1], None, b[2], b[3], None, y, 2.0, 0.5, -100, "sum",
                                                   1, None, True)
    l64 = [x.double().requires_grad_(i < 2) for i, x in enumerate(b)]
    fused_linear_kd_loss_reference(*l64, y, reduction="sum").backward()
    ref = l64[1].grad
    assert (dw.double() - ref).abs().max() <= 8e-3 * ref.abs().max()  # one bf16 rounding, not 512


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_fallback_ignore_index_inside_the_vocabulary(reduction):
    s, t = torch.randn(6, 10, dtype=torch.float64), torch.randn(6, 10, dtype=torch.float64)
    y = torch.tensor([0, 3, 3, 9, 3, 1])
    loss, _ = other(KD, s, [t], [], y, 2.0, 0.5, 3, reduction, True)
    torch.testing.assert_close(loss, kd_loss_reference(s, t, y, ignore_index=3, reduction=reduction),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("teachers, weights, match", [
    (2, [0.0, 0.0], "teacher_weights: expected a positive sum"),
    (2, [float("inf"), 1.0], "teacher_weights: expected finite values"),
    (2, [float("nan"), 1.0], "teacher_weights: expected finite values"),
    (9, [], "teacher_logits: expected 1 to 8"),
])
def test_fallback_refuses_what_the_cpu_kernel_refuses(teachers, weights, match):
    s, t, y = torch.randn(4, 10), torch.randn(4, 10), torch.tensor([1, 2, 3, 4])
    for run in (lambda *a: KD(*a), lambda *a: other(KD, *a)):
        with pytest.raises(ValueError, match=match):
            run(s, [t] * teachers, weights, y, 2.0, 0.5, -100, "mean", True)


def test_every_key_global_is_accepted_by_every_kernel():
    q = torch.randn(1, 1, 8, 16)
    want = SWA(q, q, q, 2, 8, True, None, 0, None, 0)
    got = other(SWA, q, q, q, 2, 8, True, None, 0, None, 0)
    torch.testing.assert_close(got, want)
    out, lse = SWA(*(t.to("meta") for t in (q, q, q)), 2, 8, True, None, 0, None, 0)
    assert out.shape == q.shape and lse.shape == q.shape[:3]


def test_fallback_block_layout_key_block_out_of_range_names_the_argument():
    q = torch.randn(1, 1, 8, 16)
    with pytest.raises(IndexError, match=r"block_layout: expected query blocks in \[0, 2\) and key blocks in \[0, 2\)"):
        fb.swa_fallback(q, q, q, 1, 0, True, None, 0, torch.tensor([[0, 2]]), 4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_opcheck_attention_half_precision(dtype):
    q, k, v = (torch.randn(1, 2, 30, 16, dtype=dtype, requires_grad=True) for _ in range(3))
    torch.library.opcheck(SWA, (q, k, v, 5, 1, True, None, 0, None, 0))
