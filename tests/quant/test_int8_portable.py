"""The INT8 Linear's PyTorch kernel (what every device without a C++ kernel runs: CUDA, MPS, ...)
computes exactly what the reference twins compute, from one range reduction of the input, and
unpacks a packed weight once: later calls reuse it until the tensor changes or goes away."""

from __future__ import annotations

import gc

import pytest
import torch

import edgegen  # noqa: F401
from edgegen.ops import _fallback_quant as fq
from edgegen.ops._reference import int8_linear_dynamic_reference, int8_linear_static_reference

DK = torch._C.DispatchKey


def _portable(name, *args):
    return getattr(torch.ops.edgegen, name).default._op_dk(DK.CompositeExplicitAutograd, *args)


def _layer(n, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=g)
    packed, row_sum = torch.ops.edgegen.int8_pack_weight(w)
    scale = torch.rand(n, generator=g) * 0.01 + 0.001
    bias = torch.randn(n, generator=g)
    return w, packed, row_sum, scale, bias


# (m, n, k): odd sizes (n, k not multiples of 4 or 8), one row, no row, a GPT-2 shape
SHAPES = [(7, 13, 30), (1, 40, 96), (0, 16, 24), (33, 24, 768)]


@pytest.mark.parametrize("m,n,k", SHAPES, ids=[f"{m}x{n}x{k}" for m, n, k in SHAPES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("int_mm", [False, True], ids=["int64-matmul", "int-mm"])
def test_equals_the_reference_twins_bit_for_bit(m, n, k, dtype, int_mm, monkeypatch):
    # int_mm: the torch._int_mm branch (the GPU's) taken on the CPU, padding included.
    monkeypatch.setattr(fq, "_use_int_mm", lambda t: int_mm)
    w, packed, row_sum, scale, bias = _layer(n, k)
    x = (torch.randn(3, m, k) * 2 + 0.5).to(dtype)
    for b in (bias, None):
        got = _portable("int8_linear_dynamic", x, packed, row_sum, scale, b, n, k)
        want = int8_linear_dynamic_reference(x, w, scale, b)
        assert got.dtype == dtype and torch.equal(got, want)
        got = _portable("int8_linear_static", x, 0.02, 61, packed, row_sum, scale, b, n, k)
        want = int8_linear_static_reference(x, 0.02, 61, w, scale, b)
        assert torch.equal(got, want)
    if m:  # and what the CPU kernel computes, to its float rounding
        cpu = torch.ops.edgegen.int8_linear_dynamic(x.float(), packed, row_sum, scale, bias, n, k)
        torch.testing.assert_close(_portable("int8_linear_dynamic", x.float(), packed, row_sum, scale, bias, n, k),
                                   cpu, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_refuses_a_non_finite_input(bad):
    _, packed, row_sum, scale, bias = _layer(8, 12)
    x = torch.randn(4, 12)
    x[2, 5] = float(bad)
    with pytest.raises(ValueError, match="input: contains NaN or infinite values"):
        _portable("int8_linear_dynamic", x, packed, row_sum, scale, bias, 8, 12)
    with pytest.raises(ValueError, match="input: contains NaN or infinite values"):
        _portable("int8_linear_static", x, 0.1, 3, packed, row_sum, scale, bias, 8, 12)
    # float64 beyond float32's range is infinite in float32, as in the CPU kernel
    with pytest.raises(ValueError, match="input: contains NaN or infinite values"):
        _portable("int8_linear_dynamic", torch.full((2, 12), 1e300, dtype=torch.float64), packed, row_sum, scale,
                  None, 8, 12)


def test_a_packed_weight_is_unpacked_once_and_again_after_it_changes(monkeypatch):
    w, packed, row_sum, scale, _ = _layer(20, 40, seed=3)
    x = torch.randn(5, 40)
    unpacks = []
    real = fq._unpacked
    monkeypatch.setattr(fq, "_unpacked", lambda *a, **kw: unpacks.append(1) or real(*a, **kw))
    first = _portable("int8_linear_dynamic", x, packed, row_sum, scale, None, 20, 40)
    again = _portable("int8_linear_dynamic", x, packed, row_sum, scale, None, 20, 40)
    assert len(unpacks) == 1 and torch.equal(first, again)
    before = fq._LINEAR_WEIGHTS[id(packed)]
    # An in-place change of the packed tensor (its version moves): unpacked afresh.
    w2 = w.clone()
    w2[3] = -w2[3]
    p2, r2 = torch.ops.edgegen.int8_pack_weight(w2)
    packed.copy_(p2)
    got = _portable("int8_linear_dynamic", x, packed, r2, scale, None, 20, 40)
    assert len(unpacks) == 2
    assert torch.equal(got, int8_linear_dynamic_reference(x, w2, scale, None))
    # ... replacing its entry (one per tensor; the old entry's finalizer let go)
    assert sum(e.packed() is packed for e in fq._LINEAR_WEIGHTS.values()) == 1
    assert fq._LINEAR_WEIGHTS[id(packed)] is not before and not before.finalizer.alive
    # The same bytes in another tensor: its own entry (identity, not just the address, is checked).
    other = packed.view(-1)
    _portable("int8_linear_dynamic", x, other, r2, scale, None, 20, 40)
    assert len(unpacks) == 3
    # Bad row sums are refused on a cached weight too.
    with pytest.raises(ValueError, match=r"weight_row_sum: expected a contiguous int32 tensor of shape \[20\]"):
        _portable("int8_linear_dynamic", x, packed, r2[:19], scale, None, 20, 40)


def test_the_cache_lets_go_of_a_weight_that_is_gone():
    _, packed, row_sum, scale, _ = _layer(16, 16, seed=4)
    _portable("int8_linear_dynamic", torch.randn(2, 16), packed, row_sum, scale, None, 16, 16)
    keys = [key for key, entry in fq._LINEAR_WEIGHTS.items() if entry.packed() is packed]
    assert len(keys) == 1
    del packed
    gc.collect()
    assert keys[0] not in fq._LINEAR_WEIGHTS


def test_a_weight_packed_for_more_inputs_is_refused_once_cached_too():
    w, packed, row_sum, scale, _ = _layer(8, 12, seed=5)
    _portable("int8_linear_dynamic", torch.randn(2, 12), packed, row_sum, scale, None, 8, 12)
    # k = 10 reads the same 12-wide packing; columns 10 and 11 are not zero
    with pytest.raises(ValueError, match="packed_weight: was packed for more input features"):
        _portable("int8_linear_dynamic", torch.randn(2, 10), packed, row_sum, scale, None, 8, 10)


def test_the_cache_keeps_the_most_recently_used_weights(monkeypatch):
    monkeypatch.setattr(fq, "_LINEAR_WEIGHTS", type(fq._LINEAR_WEIGHTS)())
    monkeypatch.setattr(fq, "_LINEAR_WEIGHTS_MAX", 2)
    layers = [_layer(8, 16, seed=s) for s in range(3)]
    x = torch.randn(2, 16)
    call = lambda i: _portable("int8_linear_dynamic", x, layers[i][1], layers[i][2], layers[i][3], None, 8, 16)  # noqa: E731
    call(0), call(1), call(0)
    second = fq._LINEAR_WEIGHTS[id(layers[1][1])]
    call(2)  # 1 is the least recently used when 2 arrives
    assert set(fq._LINEAR_WEIGHTS) == {id(layers[0][1]), id(layers[2][1])}
    assert not second.finalizer.alive  # an evicted entry holds nothing alive
