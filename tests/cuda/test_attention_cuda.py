"""Sliding-window attention on CUDA against the float64 reference on the CPU: the native
tensor-core kernels (bfloat16/float16, head_dim 32, 64, 80, 96, 128) forward and backward over windows, global
tokens, causal and not, lengths off the tile grid, decode offsets and rows with no key; the
FlexAttention and reference routes for everything else, the lse's gradient on each; every output
element written; memory linear in n; bad input."""

from __future__ import annotations

import pytest
import torch

import edgegen  # noqa: F401
from edgegen.attention import block_sparse_attention, sliding_window_attention
from edgegen.ops._fallback import NATIVE_HEAD_DIMS
from edgegen.ops._reference import sliding_window_attention_reference
from tests.cuda.conftest import native

DEV = "cuda"
# Relative to max |ref|: 16-bit inputs and P, dS rounded to 16 bits before the second products.
TOL = {torch.bfloat16: 2e-2, torch.float16: 4e-3, torch.float32: 2e-3}


def _qkv(B, H, n, d, dtype, nk=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    nk = n if nk is None else nk
    ts = [torch.randn(B, H, m, d, generator=g, dtype=torch.float64) for m in (n, nk, nk)]
    return [t.to(dtype).double() for t in ts]  # values representable in dtype


def _close(actual, expected, tol, name):
    a, e = actual.double().cpu(), expected.double().cpu()
    assert a.shape == e.shape, f"{name}: shape {tuple(a.shape)} vs {tuple(e.shape)}"
    assert torch.isfinite(a).all(), f"{name}: non-finite values"
    if a.numel() == 0:
        return
    err = (a - e).abs().max().item()
    scale = max(e.abs().max().item(), 1.0)
    assert err <= tol * scale, f"{name}: max error {err:.3g} (max |ref| {scale:.3g})"


def _poison():
    """Leave NaN in the memory the caching allocator hands out next."""
    x = torch.full((64 << 20,), float("nan"), device=DEV)
    del x


def _check(q64, k64, v64, dtype, window, num_global, causal, q_offset=0, layout=None, block_size=0, tol=None):
    tol = TOL[dtype] if tol is None else tol
    q, k, v = (t.to(DEV, dtype).requires_grad_() for t in (q64, k64, v64))
    _poison()
    if layout is None:
        out, lse = sliding_window_attention(q, k, v, window, num_global, causal, q_offset=q_offset, return_lse=True)
    else:
        out, lse = block_sparse_attention(q, k, v, layout, block_size, causal, q_offset=q_offset, return_lse=True)
    go = torch.randn(out.shape, dtype=torch.float64).to(dtype)
    rq, rk, rv = (t.clone().requires_grad_() for t in (q64, k64, v64))
    ref_out, ref_lse = sliding_window_attention_reference(rq, rk, rv, window, num_global, causal, None, q_offset,
                                                          layout, block_size)
    # The lse is differentiated too (merging key chunks by lse needs it); rows with no key have -inf.
    gl = torch.randn(lse.shape, dtype=torch.float64).masked_fill(torch.isinf(ref_lse.detach()), 0)
    _poison()
    ((out * go.to(DEV)).sum() + (lse.masked_fill(gl.to(DEV) == 0, 0) * gl.to(DEV, lse.dtype)).sum()).backward()
    ((ref_out * go.double()).sum() + (ref_lse.masked_fill(gl == 0, 0) * gl).sum()).backward()
    _close(out, ref_out.detach(), tol, "out")
    lse_c, ref_l = lse.double().cpu(), ref_lse.detach()
    assert torch.equal(torch.isinf(lse_c), torch.isinf(ref_l)), "lse: -inf rows differ"
    fin = torch.isfinite(ref_l)
    _close(lse_c[fin], ref_l[fin], 1e-3, "lse")
    for name, a, b in (("dq", q.grad, rq.grad), ("dk", k.grad, rk.grad), ("dv", v.grad, rv.grad)):
        _close(a, b, tol * 2, name)


NATIVE_CASES = [
    dict(window=1, num_global=0, causal=True),
    dict(window=63, num_global=4, causal=True),
    dict(window=64, num_global=0, causal=True),
    dict(window=65, num_global=70, causal=True),
    dict(window=256, num_global=1, causal=True),
    dict(window=40, num_global=4, causal=False),
    dict(window=150, num_global=0, causal=False),
]


@pytest.mark.parametrize("case", NATIVE_CASES, ids=lambda c: f"w{c['window']}-g{c['num_global']}-"
                         + ("causal" if c["causal"] else "bidir"))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
def test_native_matches_reference(case, dtype):
    q, k, v = _qkv(2, 3, 150, 64, dtype)
    _check(q, k, v, dtype, **case)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("d", [d for d in NATIVE_HEAD_DIMS if d != 64])
def test_native_other_head_dims(d, causal):
    q, k, v = _qkv(1, 2, 200, d, torch.bfloat16)
    _check(q, k, v, torch.bfloat16, 70, 3, causal)


def test_native_head_dims_are_the_kernels():
    """The head sizes routed to the native kernels are exactly those the op takes on CUDA."""
    if not native("sliding_window_attention"):
        pytest.skip("this build has no native CUDA attention (EDGEGEN_CUDA=OFF)")
    for d in (16, 32, 48, 64, 80, 96, 112, 128, 256):
        q = torch.randn(1, 1, 8, d, device=DEV, dtype=torch.bfloat16)
        call = lambda: torch.ops.edgegen.sliding_window_attention(q, q, q, 4, 0, True, None, 0, None, 0)  # noqa: E731
        if d in NATIVE_HEAD_DIMS:
            out, _ = call()
            assert out.shape == q.shape
        else:
            with pytest.raises(NotImplementedError, match="head_dim"):
                call()


@pytest.mark.parametrize("num_global,causal", [(4, True), (70, True), (3, False), (70, False)],
                         ids=["g4-causal", "g70-causal", "g3-bidir", "g70-bidir"])
def test_native_split_global_tiles(num_global, causal):
    """Every query sees the global keys, so the backward spreads their key tiles over several
    blocks (18 query tiles here: 3 splits) and sums the partials; not causal, the global queries
    see every key, so the forward and dQ passes spread their query tiles (one or two) likewise.
    The result must not change."""
    q, k, v = _qkv(1, 2, 1100, 64, torch.bfloat16, seed=2)
    _check(q, k, v, torch.bfloat16, 64, num_global, causal)


def test_native_decode_and_chunked_prefill():
    q, k, v = _qkv(1, 4, 1, 64, torch.bfloat16, nk=300)
    _check(q, k, v, torch.bfloat16, 64, 4, True, q_offset=299)  # one decode step over a cache of 300
    q, k, v = _qkv(1, 4, 100, 64, torch.bfloat16, nk=300, seed=1)
    _check(q, k, v, torch.bfloat16, 64, 4, True, q_offset=200)  # the last 100 positions of a prefill


def test_native_rows_with_no_key():
    # Queries at positions 400.. see keys only within 16 positions, and there are 300 keys.
    q, k, v = _qkv(1, 2, 70, 64, torch.float16, nk=300)
    _check(q, k, v, torch.float16, 16, 0, True, q_offset=400)


def test_native_strided_inputs():
    g = torch.Generator().manual_seed(3)
    base = torch.randn(2, 130, 3, 64, generator=g).to(torch.bfloat16)  # [B, n, H, d] -> transposed view
    q = base.to(DEV).transpose(1, 2).requires_grad_()
    out = sliding_window_attention(q, q, q, 33, 2)
    ref, _ = sliding_window_attention_reference(*(base.double().transpose(1, 2),) * 3, 33, 2)
    _close(out, ref, TOL[torch.bfloat16], "out")
    out.sum().backward()
    assert q.grad.shape == q.shape and torch.isfinite(q.grad).all()


def test_native_is_used_and_memory_is_linear():
    if not native("sliding_window_attention"):
        pytest.skip("this build has no native CUDA attention kernel (EDGEGEN_CUDA=OFF)")
    peaks = []
    for n in (4096, 16384):
        q, k, v = (torch.randn(1, 12, n, 64, device=DEV, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        sliding_window_attention(q, k, v, 256, 4).sum().backward()
        torch.cuda.synchronize()
        peaks.append(torch.cuda.max_memory_allocated() - base)
    # 4x the length: about 4x the memory (inputs' gradients, out, lse), nothing quadratic.
    assert peaks[1] < 5 * peaks[0], peaks
    assert peaks[1] < 200 * 2**20, peaks


@pytest.mark.parametrize("dtype,d", [(torch.float32, 64), (torch.float32, 80), (torch.bfloat16, 32)],
                         ids=["f32-flex", "f32-d80-reference", "bf16-d32-flex"])
def test_other_routes_match_reference(dtype, d):
    q, k, v = _qkv(1, 2, 140, d, dtype)
    _check(q, k, v, dtype, 30, 2, True)


def test_block_layout_on_cuda():
    q, k, v = _qkv(1, 2, 128, 64, torch.bfloat16)
    layout = torch.tensor([[0, 0], [1, 0], [1, 1], [2, 2], [3, 0], [3, 3]])
    _check(q, k, v, torch.bfloat16, 1, 0, True, layout=layout, block_size=32)


def test_torch_compile_native():
    q, k, v = (torch.randn(1, 2, 128, 64, device=DEV, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    f = torch.compile(lambda a, b, c: sliding_window_attention(a, b, c, 32, 2), fullgraph=True)
    out = f(q, k, v)
    torch.testing.assert_close(out, sliding_window_attention(q, k, v, 32, 2), rtol=0, atol=0)
    out.sum().backward()
    assert torch.isfinite(q.grad).all()


def test_bad_input_names_the_argument():
    q = torch.randn(1, 1, 8, 64, device=DEV, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="window"):
        torch.ops.edgegen.sliding_window_attention(q, q, q, 0, 0, True, None, 0, None, 0)
    with pytest.raises(ValueError, match="num_global"):
        torch.ops.edgegen.sliding_window_attention(q, q, q, 4, 9, True, None, 0, None, 0)
    with pytest.raises(RuntimeError, match="device"):
        sliding_window_attention(q, q.cpu(), q, 4)


def test_more_batch_heads_than_a_grid_axis_holds():
    """B x H above CUDA's grid.y limit (65,535): the launches are split (was: invalid configuration)."""
    q64, k64, v64 = _qkv(2, 32769, 3, 32, torch.bfloat16)
    _check(q64, k64, v64, torch.bfloat16, window=2, num_global=1, causal=True)
