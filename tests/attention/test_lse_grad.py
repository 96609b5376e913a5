"""The log-sum-exp the attention op returns is differentiable: merging attention over key chunks by
their lse (split-KV, ring attention) gives the gradients of attention over all keys, and every
pattern's lse gradient matches the float64 reference twin's (plain PyTorch autograd)."""

import pytest
import torch

from edgegen.attention import block_sparse_attention, sliding_window_attention
from edgegen.ops._reference import sliding_window_attention_reference

op = torch.ops.edgegen.sliding_window_attention


def _qkv(n=24, nk=None, d=8, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    nk = n if nk is None else nk
    return [torch.randn(2, 3, m, d, generator=g, dtype=dtype).requires_grad_() for m in (n, nk, nk)]


def test_merging_key_chunks_by_lse_gives_the_full_gradients():
    q, k, v = _qkv(n=16)
    full = sliding_window_attention(q, k, v, window=16, causal=False)
    g = torch.randn_like(full)
    want = torch.autograd.grad(full, (q, k, v), g)
    parts = [sliding_window_attention(q, k[:, :, s], v[:, :, s], window=64, causal=False, return_lse=True)
             for s in (slice(0, 7), slice(7, 16))]
    lse = torch.logsumexp(torch.stack([p[1] for p in parts]), dim=0)
    merged = sum(torch.exp(l - lse).unsqueeze(-1) * o for o, l in parts)
    torch.testing.assert_close(merged, full)
    got = torch.autograd.grad(merged, (q, k, v), g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


CASES = {
    "causal-window-global": dict(window=5, num_global=2, causal=True),
    "non-causal": dict(window=4, num_global=1, causal=False),
    "decode-offset-empty-rows": dict(window=3, num_global=0, causal=True, q_offset=20),  # last rows past the keys
    "scale": dict(window=7, num_global=0, causal=True, scale=0.3),
}


@pytest.mark.parametrize("kw", CASES.values(), ids=list(CASES))
@pytest.mark.parametrize("use", ["lse-only", "out-and-lse"])
def test_lse_gradient_matches_the_reference(kw, use):
    q, k, v = _qkv(n=12, nk=28 if "q_offset" in kw else 12)
    args = (kw["window"], kw["num_global"], kw["causal"], kw.get("scale"), kw.get("q_offset", 0), None, 0)
    out, lse = op(q, k, v, *args)
    ro, rl = sliding_window_attention_reference(q, k, v, *args)
    torch.testing.assert_close(lse, rl)
    wl = torch.randn(lse.shape, dtype=lse.dtype).masked_fill(torch.isinf(rl), 0)
    wo = torch.randn_like(out)

    def objective(o, l):
        l = torch.where(torch.isinf(rl), torch.zeros_like(l), l)  # a row that sees no key has lse -inf
        return (l * wl).sum() + ((o * wo).sum() if use == "out-and-lse" else 0)

    got = torch.autograd.grad(objective(out, lse), (q, k, v), allow_unused=True)
    want = torch.autograd.grad(objective(ro, rl), (q, k, v), allow_unused=True)
    for name, a, b in zip("qkv", got, want):
        if b is None or (use == "lse-only" and name == "v"):
            assert a is None or not bool(a.abs().sum()), name
        else:
            torch.testing.assert_close(a, b, msg=lambda m: f"d{name}: {m}")


def test_block_sparse_lse_gradient_matches_the_reference():
    q, k, v = _qkv(n=16)
    layout = torch.tensor([[0, 0], [1, 0], [1, 1], [2, 1], [2, 2], [3, 0], [3, 2], [3, 3]])  # (query, key) blocks
    out, lse = block_sparse_attention(q, k, v, layout, 4, causal=True, return_lse=True)
    ro, rl = sliding_window_attention_reference(q, k, v, 1, 0, True, None, 0, layout, 4)
    got = torch.autograd.grad(lse.sum() + out.sum(), (q, k, v))
    want = torch.autograd.grad(rl.sum() + ro.sum(), (q, k, v))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_gradcheck_of_out_and_lse():
    q, k, v = (t.detach()[:1, :1, :9, :4].requires_grad_() for t in _qkv(n=9))

    def f(a, b, c):
        out, lse = op(a, b, c, 3, 1, True, None, 0, None, 0)
        return out * lse.unsqueeze(-1)  # both outputs reach the result

    torch.autograd.gradcheck(f, (q, k, v))


def test_bf16_lse_gradient_is_close_to_float32():
    q, k, v = _qkv(n=32, d=16, dtype=torch.float32, seed=3)
    lo = [t.detach().bfloat16().requires_grad_() for t in (q, k, v)]
    _, lse = op(q, k, v, 8, 1, True, None, 0, None, 0)
    _, lse16 = op(*lo, 8, 1, True, None, 0, None, 0)
    want = torch.autograd.grad(lse.sum(), (q, k))
    got = torch.autograd.grad(lse16.sum(), lo[:2])
    for a, b in zip(got, want):
        assert a.dtype == torch.bfloat16
        torch.testing.assert_close(a.float(), b, rtol=3e-2, atol=3e-2)


def test_float64_lse_gradient_keeps_float64_precision():
    q, k, v = _qkv(n=20)
    _, lse = op(q, k, v, 6, 1, True, None, 0, None, 0)
    _, rl = sliding_window_attention_reference(q, k, v, 6, 1, True, None, 0, None, 0)
    got = torch.autograd.grad(lse.sum(), (q, k))
    want = torch.autograd.grad(rl.sum(), (q, k))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
