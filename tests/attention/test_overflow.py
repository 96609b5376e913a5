"""Extreme integer arguments of the attention op: a window or block wider than every distance
means "all", q_offset is bounded so no position sum overflows, a far query offset does not size
the block-layout plan by the offset, and the fake kernel rejects what the real kernel rejects."""

import pytest
import torch

import edgegen  # noqa: F401
from edgegen.ops._reference import sliding_window_attention_reference as reference

op = torch.ops.edgegen.sliding_window_attention
BIG = 2**63 - 1


def _qkv(nq=12, nk=12, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, 2, nq, d, generator=g, dtype=torch.float64),
            torch.randn(1, 2, nk, d, generator=g, dtype=torch.float64),
            torch.randn(1, 2, nk, d, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_huge_window_means_every_key(causal):
    q, k, v = _qkv()
    out, lse = op(q, k, v, BIG, 0, causal, None, 0, None, 0)
    ref_out, ref_lse = op(q, k, v, 12, 0, causal, None, 0, None, 0)  # already every key
    torch.testing.assert_close(out, ref_out, rtol=0, atol=0)
    torch.testing.assert_close(lse, ref_lse, rtol=0, atol=0)
    # and the backward agrees as well
    qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))
    from edgegen.attention import sliding_window_attention

    sliding_window_attention(qq, kk, vv, BIG, causal=causal).sum().backward()
    q2, k2, v2 = (t.clone().requires_grad_() for t in (q, k, v))
    sliding_window_attention(q2, k2, v2, 12, causal=causal).sum().backward()
    for a, b in ((qq, q2), (kk, k2), (vv, v2)):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("q_offset", [2**60, 2**62, BIG - 5], ids=["2^60", "2^62", "max"])
def test_q_offset_beyond_the_bound_is_an_error(q_offset):
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"q_offset: expected a value in \[0, 1152921504606846964\]"):
        op(q, k, v, 4, 0, True, None, q_offset, None, 0)
    with pytest.raises(ValueError, match="q_offset: expected a value in"):
        op(*(t.to("meta") for t in (q, k, v)), 4, 0, True, None, q_offset, None, 0)


def test_largest_allowed_q_offset_works():
    q, k, v = _qkv(nq=4, nk=12)
    qo = 2**60 - 4
    out, lse = op(q, k, v, 3, 2, True, None, qo, None, 0)
    ref_out, ref_lse = reference(q, k, v, 3, 2, True, None, qo)
    torch.testing.assert_close(out, ref_out)
    assert torch.isfinite(lse).all()  # every query sees the two global keys


def test_huge_block_size_with_one_block():
    q, k, v = _qkv()
    layout = torch.tensor([[0, 0]])
    out, _ = op(q, k, v, 1, 0, True, None, 0, layout, 2**63 - 64)
    dense, _ = op(q, k, v, 12, 0, True, None, 0, None, 0)
    torch.testing.assert_close(out, dense, rtol=1e-12, atol=1e-12)


def test_far_query_offset_does_not_size_the_layout_by_it():
    q, k, v = _qkv(nq=16, nk=32)
    qo, bs = 2**31, 16
    qb = qo // bs
    layout = torch.tensor([[qb, 0], [qb, 1], [3, 0]])  # a pair for an earlier query block is valid and unused
    out, lse = op(q, k, v, 1, 0, True, None, qo, layout, bs)
    ref_out, ref_lse = reference(q, k, v, 1, 0, True, None, qo, layout, bs)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(lse.double(), ref_lse.double())
