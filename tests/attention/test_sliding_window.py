"""edgegen.attention.sliding_window_attention / block_sparse_attention against dense SDPA with an
explicit boolean mask of the same pattern (float64), forward and every gradient."""

import pytest
import torch
import torch.nn.functional as F

import edgegen  # noqa: F401
from edgegen.attention import (
    block_layout_mask,
    block_sparse_attention,
    sliding_window_attention,
    sliding_window_mask,
)
from edgegen.ops import sliding_window_attention_reference

TILE = 64  # the kernel's tile size (csrc/kernels/attention/attention.h)


def qkv(B, H, n, d, dtype=torch.float32, nk=None, seed=0, grad=True):
    g = torch.Generator().manual_seed(seed)
    nk = n if nk is None else nk
    q = torch.randn(B, H, n, d, generator=g, dtype=torch.float64)
    k = torch.randn(B, H, nk, d, generator=g, dtype=torch.float64)
    v = torch.randn(B, H, nk, d, generator=g, dtype=torch.float64)
    return [t.to(dtype).requires_grad_(grad) for t in (q, k, v)]


def dense_reference(q, k, v, mask, grad_out):
    """SDPA in float64 with the boolean mask; rows with no visible key give 0 (SDPA gives NaN)."""
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    empty = ~mask.any(-1)
    safe = mask | empty[:, None]
    out = F.scaled_dot_product_attention(q64, k64, v64, attn_mask=safe)
    out = out.masked_fill(empty[:, None], 0.0)
    grads = torch.autograd.grad(out, (q64, k64, v64), grad_out.double())
    return out, grads


def check_against_dense(q, k, v, mask, run, rtol):
    out = run(q, k, v)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    ref_out, ref_grads = dense_reference(q, k, v, mask, grad_out)
    grads = torch.autograd.grad(out, (q, k, v), grad_out.to(out.dtype))
    for name, a, b in [("out", out, ref_out)] + list(zip(("dq", "dk", "dv"), grads, ref_grads)):
        err = (a.double() - b).abs().max().item()
        # Inputs are O(1): errors are measured against max(|ref|, 1), since a gradient can be
        # exactly 0 in theory (window 1: dq) and only rounding-small in float32.
        scale = max(b.abs().max().item(), 1.0)
        assert err <= rtol * scale, f"{name}: max error {err:.3e} vs scale {scale:.3e}"


@pytest.mark.parametrize("window", [1, TILE - 1, TILE, TILE + 1, 150])
@pytest.mark.parametrize("num_global", [0, 1, 4])
@pytest.mark.parametrize("causal", [True, False])
def test_equals_masked_sdpa(window, num_global, causal):
    n = 150  # not a multiple of the tile; window 150 = n (full attention)
    q, k, v = qkv(2, 3, n, 32)
    mask = sliding_window_mask(n, n, window, num_global, causal)
    check_against_dense(q, k, v, mask, lambda a, b, c: sliding_window_attention(a, b, c, window, num_global, causal),
                        2e-5)


def test_window_convention_counts_keys():
    # causal window w: query p sees keys p-w+1 .. p (w keys) and the first g positions.
    m = sliding_window_mask(10, 10, 3, 2, True)
    assert m[9].nonzero().flatten().tolist() == [0, 1, 7, 8, 9]
    assert m[1].nonzero().flatten().tolist() == [0, 1]
    m = sliding_window_mask(10, 10, 3, 1, False)
    assert m[5].nonzero().flatten().tolist() == [0, 3, 4, 5, 6, 7]
    assert m[0].all()  # a global query sees every key
    # And the kernel follows it: one-hot values read back which keys each query attended.
    n = 10
    q = torch.zeros(1, 1, n, n)
    k = torch.zeros(1, 1, n, n)
    v = torch.eye(n).reshape(1, 1, n, n)
    out = sliding_window_attention(q, k, v, 3, 2)
    seen = out[0, 0] > 0
    assert torch.equal(seen, sliding_window_mask(n, n, 3, 2, True))


def test_non_contiguous_and_large_heads():
    # [B, n, H, d] storage viewed as [B, H, n, d] (what GPT-2's split heads give), head_dim 80.
    base = torch.randn(2, 130, 3, 80, dtype=torch.float64)
    q = base.transpose(1, 2).float().requires_grad_()
    k = (base * 0.5 + 1).transpose(1, 2).float().requires_grad_()
    v = torch.randn(2, 3, 80, 130).transpose(-1, -2).requires_grad_()
    assert not q.is_contiguous() and not v.is_contiguous()
    mask = sliding_window_mask(130, 130, 40, 4, True)
    check_against_dense(q, k, v, mask, lambda a, b, c: sliding_window_attention(a, b, c, 40, 4), 2e-5)


@pytest.mark.parametrize("d", [64, 23])
def test_bf16_layouts_give_identical_results(d):
    """bf16 inputs whose head_dim is contiguous are packed for the bf16 products straight from
    memory, others through float copies: both must give the same words, so contiguous, [B, n, H, d]
    views and a strided head_dim give bit-identical outputs and gradients (odd d: a lone last
    value per row). Meaningful for the packing where the CPU has AVX-512 BF16 (elsewhere bf16
    inputs take float products and this checks the layouts of those); the GoogleTest
    Bf16WordsThroughFloatCopies covers the packing on the tile model on every CPU."""
    g = torch.Generator().manual_seed(3)
    base = [torch.randn(1, 150, 2, d, generator=g).to(torch.bfloat16) for _ in range(4)]

    def spread(t):  # the same values at every other element of a wider buffer
        wide = torch.zeros(*t.shape[:-1], 2 * d, dtype=t.dtype)
        wide[..., ::2] = t
        return wide[..., ::2]

    layouts = {
        "contiguous": lambda t: t.transpose(1, 2).contiguous(),
        "packed": lambda t: t.transpose(1, 2),  # [B, n, H, d] storage: sn = H d, unit head_dim stride
        "strided": lambda t: spread(t).transpose(1, 2),  # head_dim stride 2: the float-copy route
    }
    results = {}
    for name, view in layouts.items():
        q, k, v, go = (view(t) for t in base)
        q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
        assert (name == "contiguous") == q.is_contiguous()
        out = sliding_window_attention(q, k, v, 70, 3)
        out.backward(go)
        results[name] = [out.detach(), q.grad, k.grad, v.grad]
    for name in ("packed", "strided"):
        for a, b, what in zip(results[name], results["contiguous"], ("out", "dq", "dk", "dv")):
            assert torch.equal(a, b), f"{name} {what} differs from the contiguous call"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_accumulate_in_float32(dtype):
    q, k, v = qkv(1, 2, 100, 64, dtype=dtype)
    mask = sliding_window_mask(100, 100, 30, 2, True)
    check_against_dense(q, k, v, mask, lambda a, b, c: sliding_window_attention(a, b, c, 30, 2), 2e-2)
    out, lse = sliding_window_attention(q, k, v, 30, 2, return_lse=True)
    assert out.dtype == dtype and lse.dtype == torch.float32


def test_lse_matches_reference_and_scale():
    q, k, v = qkv(1, 2, 90, 16, grad=False)
    out, lse = sliding_window_attention(q, k, v, 20, 3, scale=0.3, return_lse=True)
    ref_out, ref_lse = sliding_window_attention_reference(q.double(), k.double(), v.double(), 20, 3, True, 0.3)
    torch.testing.assert_close(out.double(), ref_out, rtol=0, atol=2e-5)
    torch.testing.assert_close(lse.double(), ref_lse, rtol=0, atol=2e-5)


def test_float64_gradcheck_causal_and_not():
    for causal in (True, False):
        q, k, v = qkv(1, 2, 19, 5, dtype=torch.float64)
        torch.autograd.gradcheck(lambda a, b, c: sliding_window_attention(a, b, c, 4, 2, causal), (q, k, v))
    layout = [[0, 0], [1, 0], [1, 1], [2, 2], [2, 0]]
    q, k, v = qkv(1, 1, 20, 4, dtype=torch.float64)
    torch.autograd.gradcheck(lambda a, b, c: block_sparse_attention(a, b, c, layout, 7, causal=True), (q, k, v))


def test_causality_by_perturbation():
    q, k, v = qkv(1, 2, 200, 16, grad=False)
    t = 120
    base = sliding_window_attention(q, k, v, 50, 4)
    for tensor in (q, k, v):
        tensor[:, :, t] += 3.0
        moved = sliding_window_attention(q, k, v, 50, 4)
        tensor[:, :, t] -= 3.0
        assert torch.equal(moved[:, :, :t], base[:, :, :t])
        assert not torch.equal(moved[:, :, t], base[:, :, t])


def test_decode_steps_equal_the_full_forward():
    q, k, v = qkv(2, 2, 150, 16, grad=False)
    full = sliding_window_attention(q, k, v, 33, 4)
    for i in (0, 3, 64, 149):
        step = sliding_window_attention(q[:, :, i:i + 1], k[:, :, :i + 1], v[:, :, :i + 1], 33, min(4, i + 1),
                                        q_offset=i)
        torch.testing.assert_close(step, full[:, :, i:i + 1], rtol=0, atol=1e-6)
    # A chunk of queries after a cache (chunked prefill).
    chunk = sliding_window_attention(q[:, :, 100:], k, v, 33, 4, q_offset=100)
    torch.testing.assert_close(chunk, full[:, :, 100:], rtol=0, atol=1e-6)


def test_rows_without_keys_give_zero_and_no_nan():
    q, k, v = qkv(1, 2, 10, 8)
    # Queries at positions 40..49 with a causal window of 5 see none of the 30 keys.
    k30 = torch.randn(1, 2, 30, 8, requires_grad=True)
    v30 = torch.randn(1, 2, 30, 8, requires_grad=True)
    out, lse = sliding_window_attention(q, k30, v30, 5, q_offset=40, return_lse=True)
    assert torch.equal(out, torch.zeros_like(out)) and bool(torch.isneginf(lse).all())
    grads = torch.autograd.grad(out.sum(), (q, k30, v30))
    assert all(torch.equal(g, torch.zeros_like(g)) for g in grads)
    # Mixed: some rows see keys, some do not.
    out = sliding_window_attention(q, k30, v30, 5, q_offset=27)
    assert not torch.isnan(out).any() and torch.equal(out[:, :, 7:], torch.zeros_like(out[:, :, 7:]))


def test_reused_buffers_are_written_whole():
    """Outputs and gradients above 32 MiB come from the buffer cache: a buffer that held another call's
    results must come back fully overwritten, rows that see no key included (a fresh buffer's zero
    pages would hide an element the kernel skips)."""
    import edgegen.memory as mem

    def run(seed):
        q, k, v = qkv(1, 17, 8192, 64, seed=seed)  # 34 MiB per tensor in float32
        if seed:
            q, k, v = (t.detach().mul(50).requires_grad_() for t in (q, k, v))
        # Queries at 4096.. with a causal window of 300: rows past 4396 see no key of the 8192.
        out = sliding_window_attention(q, k, v, 300, 0, q_offset=4096)
        grads = torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
        return [out.detach(), *grads]

    was = mem.cache_info()["enabled"]
    mem.set_buffer_cache_enabled(True)
    try:
        mem.empty_cache()
        first = [t.clone() for t in run(0)]
        assert all(torch.isfinite(t).all() for t in run(1))  # poison: other values in the buffers
        hits = mem.cache_info()["hits"]
        again = run(0)
        assert mem.cache_info()["hits"] >= hits + 4  # out, dq, dk, dv from the cache
        assert torch.equal(first[0][:, :, 4400:], torch.zeros_like(first[0][:, :, 4400:]))
        for name, a, b in zip(("out", "dq", "dk", "dv"), first, again):
            assert torch.equal(a, b), name
    finally:
        mem.empty_cache()
        mem.set_buffer_cache_enabled(was)


def test_thread_count_does_not_change_the_forward():
    q, k, v = qkv(1, 1, 300, 32, grad=False)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = sliding_window_attention(q, k, v, 70, 2)
        torch.set_num_threads(2)
        two = sliding_window_attention(q, k, v, 70, 2)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(one, two)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("block_size", [16, 64, 100])
def test_block_sparse_layout_equals_masked_sdpa(causal, block_size):
    n = 230
    nb = -(-n // block_size)
    pairs = [(i, i) for i in range(nb)] + [(i, 0) for i in range(nb)] + [(i, i - 2) for i in range(2, nb)]
    if not causal:
        pairs += [(i, i + 1) for i in range(nb - 1)]
    pairs += pairs[:3]  # duplicates are ignored
    layout = torch.tensor(pairs)
    q, k, v = qkv(1, 2, n, 16)
    mask = block_layout_mask(n, n, layout, block_size, causal)
    check_against_dense(q, k, v, mask, lambda a, b, c: block_sparse_attention(a, b, c, layout, block_size, causal),
                        2e-5)


def test_block_sparse_can_express_the_window_pattern():
    # Local blocks (i, i-1), (i, i) plus block 0 is a block-granular sliding window.
    n, bs = 256, 32
    layout = [(i, j) for i in range(n // bs) for j in {0, max(i - 1, 0), i}]
    q, k, v = qkv(1, 1, n, 16, grad=False)
    a = block_sparse_attention(q, k, v, layout, bs, causal=True)
    mask = block_layout_mask(n, n, torch.tensor(layout), bs, True)
    b = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(a, b, rtol=0, atol=2e-6)


# --------------------------------------------------------------------------- bad input
def test_bad_input_names_the_argument():
    q, k, v = qkv(1, 2, 20, 8, grad=False)
    cases = [
        (lambda: sliding_window_attention(q, k, v, 0), ValueError, "window"),
        (lambda: sliding_window_attention(q, k, v, -3), ValueError, "window"),
        (lambda: sliding_window_attention(q, k, v, 2.5), TypeError, "window"),
        (lambda: sliding_window_attention(q, k, v, True), TypeError, "window"),
        (lambda: sliding_window_attention(q, k, v, 4, 21), ValueError, "num_global"),
        (lambda: sliding_window_attention(q, k, v, 4, -1), ValueError, "num_global"),
        (lambda: sliding_window_attention(q[0], k[0], v[0], 4), ValueError, "q"),
        (lambda: sliding_window_attention(q, k[:, :, :10], v, 4), ValueError, "v"),
        (lambda: sliding_window_attention(q, k[..., :4], v[..., :4], 4), ValueError, "k"),
        (lambda: sliding_window_attention(q, k[:, :1], v[:, :1], 4), ValueError, "k"),
        (lambda: sliding_window_attention(q, k.double(), v, 4), TypeError, "k, v"),
        (lambda: sliding_window_attention(q.long(), k.long(), v.long(), 4), TypeError, "q"),
        (lambda: sliding_window_attention(q, k, v, 4, scale=0.0), ValueError, "scale"),
        (lambda: sliding_window_attention(q, k, v, 4, scale=float("nan")), ValueError, "scale"),
        (lambda: sliding_window_attention(q, k, v, 4, q_offset=-1), ValueError, "q_offset"),
        (lambda: block_sparse_attention(q, k, v, [(0, 0)], 0), ValueError, "block_size"),
        (lambda: block_sparse_attention(q, k, v, [(0, 5)], 8), IndexError, "block_layout"),
        (lambda: block_sparse_attention(q, k, v, [0, 1, 2], 8), ValueError, "block_layout"),
    ]
    for fn, exc, name in cases:
        with pytest.raises(exc, match=name):
            fn()


def test_op_level_checks_name_the_argument():
    q, k, v = qkv(1, 2, 20, 8, grad=False)
    op = torch.ops.edgegen.sliding_window_attention
    with pytest.raises(ValueError, match="window"):
        op(q, k, v, 0, 0, True, None, 0, None, 0)
    with pytest.raises(ValueError, match="num_global"):
        op(q, k, v, 3, 99, True, None, 0, None, 0)
    with pytest.raises(ValueError, match="block_size"):
        op(q, k, v, 3, 0, True, None, 0, None, 4)
    with pytest.raises(IndexError, match="block_layout"):
        op(q, k, v, 1, 0, True, None, 0, torch.tensor([[0, 9]]), 4)
    out, lse = op(q, k, v, 3, 0, True, None, 0, None, 0)
    bwd = torch.ops.edgegen.sliding_window_attention_backward
    with pytest.raises(ValueError, match="lse"):
        bwd(out, q, k, v, out, lse[:, :, :5], 3, 0, True, None, 0, None, 0)
    with pytest.raises(ValueError, match="grad_out"):
        bwd(out[:, :, :5], q, k, v, out, lse, 3, 0, True, None, 0, None, 0)


# --------------------------------------------------------------------- torch.library / compile
@pytest.mark.parametrize("args", [
    dict(window=5, num_global=2, causal=True, scale=None, q_offset=0, block_layout=None, block_size=0),
    dict(window=70, num_global=0, causal=False, scale=0.2, q_offset=0, block_layout=None, block_size=0),
    dict(window=3, num_global=1, causal=True, scale=None, q_offset=4, block_layout=None, block_size=0),
    dict(window=1, num_global=0, causal=True, scale=None, q_offset=0,
         block_layout=torch.tensor([[0, 0], [1, 0], [1, 1]]), block_size=16),
], ids=["causal", "non-causal", "offset", "layout"])
def test_opcheck(args):
    q, k, v = qkv(1, 2, 30, 8)
    if args["q_offset"]:
        k, v = (torch.randn(1, 2, 34, 8, requires_grad=True) for _ in range(2))
    torch.library.opcheck(torch.ops.edgegen.sliding_window_attention, (q, k, v, *args.values()))


def test_torch_compile_forward_and_backward():
    q, k, v = qkv(1, 2, 100, 16)

    def f(a, b, c):
        return (sliding_window_attention(a, b, c, 20, 2) * 2).sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    eager_grads = torch.autograd.grad(f(q, k, v), (q, k, v))
    comp_grads = torch.autograd.grad(compiled(q, k, v), (q, k, v))
    for a, b in zip(eager_grads, comp_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_reference_fallback_matches_kernel():
    # What non-CPU devices run: same values and gradients.
    q, k, v = qkv(1, 2, 70, 8, dtype=torch.float64)
    out_k = sliding_window_attention(q, k, v, 9, 3, causal=False)
    out_r, _ = sliding_window_attention_reference(q, k, v, 9, 3, False)
    torch.testing.assert_close(out_k, out_r, rtol=0, atol=1e-12)
    gk = torch.autograd.grad(out_k.sum(), (q, k, v))
    gr = torch.autograd.grad(out_r.sum(), (q, k, v))
    for a, b in zip(gk, gr):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("d", [8, 24, 40, 64, 80])
@pytest.mark.parametrize("causal", [True, False])
def test_every_isa_path_equals_masked_sdpa(isa, d, causal):
    """The scalar, AVX2 and AVX-512 kernels (each this CPU has; the others skipped by name) for head
    sizes that are not multiples of 16 lanes (24, 40, 80: padded to whole vectors, never a column
    skipped), tiles that end mid-vector, global tokens, a block layout; forward and every gradient."""
    n = 150
    q, k, v = qkv(1, 2, n, d, seed=d)
    mask = sliding_window_mask(n, n, 37, 3, causal)
    check_against_dense(q, k, v, mask, lambda a, b, c: sliding_window_attention(a, b, c, 37, 3, causal), 2e-5)
    layout = torch.tensor([[0, 0], [1, 0], [1, 1], [2, 1], [2, 2], [2, 0]])
    bmask = block_layout_mask(n, n, layout, 64, causal)
    check_against_dense(q, k, v, bmask, lambda a, b, c: block_sparse_attention(a, b, c, layout, 64, causal), 2e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_every_isa_path_in_half_precision(isa, dtype):
    q, k, v = qkv(1, 2, 100, 24, dtype=dtype)
    mask = sliding_window_mask(100, 100, 30, 2, True)
    check_against_dense(q, k, v, mask, lambda a, b, c: sliding_window_attention(a, b, c, 30, 2), 2e-2)


def test_bf16_products_follow_the_level_and_the_cpu(isa):
    """bf16 inputs are multiplied in bf16 (vdpbf16ps) from the avx512 level on CPUs with AVX-512
    BF16, on AMX tiles at the amx level when EDGEGEN_AMX=1, in float elsewhere."""
    import os

    import edgegen

    flags = open("/proc/cpuinfo").read().split()
    amx_on = os.environ.get("EDGEGEN_AMX") == "1"
    want = "float"
    if isa == "amx" and amx_on:
        want = "amx_bf16"
    elif isa in ("avx512", "avx512_vnni", "amx") and "avx512_bf16" in flags:
        want = "avx512_bf16"
    assert edgegen._C.attention_bf16_products() == want


# --------------------------------------------------------------------- double backward, argument types
@pytest.mark.parametrize("wrt", [0, 1, 2], ids=["q", "k", "v"])
def test_double_backward_raises_instead_of_silent_zeros(wrt):
    """create_graph=True gives the reference's first-order gradient; differentiating it again
    raises (it used to contribute zeros silently: gradgradcheck failed against the reference)."""
    q, k, v = qkv(1, 1, 6, 8, dtype=torch.float64)
    out = sliding_window_attention(q, k, v, 3)
    (g,) = torch.autograd.grad((out ** 2).sum(), (q, k, v)[wrt], create_graph=True)
    ref, _ = sliding_window_attention_reference(q, k, v, 3)
    (g_ref,) = torch.autograd.grad((ref ** 2).sum(), (q, k, v)[wrt], create_graph=True)
    torch.testing.assert_close(g, g_ref, rtol=0, atol=1e-12)
    (h_ref,) = torch.autograd.grad(g_ref.pow(2).sum(), (q, k, v)[wrt])
    assert h_ref.abs().max() > 0.1  # the derivative the kernel would have dropped is not zero
    with pytest.raises(RuntimeError, match="double backward is not supported.*create_graph=True"):
        torch.autograd.grad(g.pow(2).sum(), (q, k, v)[wrt])


def test_gradgradcheck_raises_rather_than_fails_silently():
    q, k, v = qkv(1, 1, 5, 4, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.gradgradcheck(lambda a, b, c: sliding_window_attention(a, b, c, 3), (q, k, v))


LAYOUT = [[0, 0], [1, 0], [1, 1]]


@pytest.mark.parametrize("layout", [
    torch.tensor(LAYOUT, dtype=torch.int32),
    torch.tensor(LAYOUT, dtype=torch.uint8),
    [tuple(p) for p in LAYOUT],
    "numpy-int32",
], ids=["int32-tensor", "uint8-tensor", "tuples", "numpy-int32"])
def test_integer_block_layouts_of_any_kind_equal_int64(layout):
    if isinstance(layout, str):
        np = pytest.importorskip("numpy")
        layout = np.array(LAYOUT, dtype=np.int32)
    q, k, v = qkv(1, 2, 32, 8, grad=False)
    expected = block_sparse_attention(q, k, v, torch.tensor(LAYOUT), 16, causal=True)
    assert torch.equal(block_sparse_attention(q, k, v, layout, 16, causal=True), expected)


@pytest.mark.parametrize("layout", [
    torch.tensor(LAYOUT, dtype=torch.float32),
    torch.tensor([[0.0, 0.0], [1.0, 0.7]]),
    torch.tensor(LAYOUT, dtype=torch.bool),
    [[0, 0], [1, 0.5]],
    [[0, 0], [True, False]],
    "numpy-float",
    "01",
], ids=["float-tensor-integral", "float-tensor-fraction", "bool-tensor", "float-list", "bool-list", "numpy-float",
        "string"])
def test_non_integer_block_layouts_are_refused(layout):
    """A float layout used to be truncated ([1, 0.7] read as [1, 0]) and a bool one read as blocks
    0 and 1; both are refused by type, whatever their values."""
    if layout == "numpy-float":
        np = pytest.importorskip("numpy")
        layout = np.array(LAYOUT, dtype=np.float64)
    q, k, v = qkv(1, 2, 32, 8, grad=False)
    with pytest.raises(TypeError, match="block_layout: expected an integer"):
        block_sparse_attention(q, k, v, layout, 16)


@pytest.mark.parametrize("call,name", [
    (lambda q, k, v: sliding_window_attention(q, k, v, 2**64), "window"),
    (lambda q, k, v: sliding_window_attention(q, k, v, 4, 2**64), "num_global"),
    (lambda q, k, v: sliding_window_attention(q, k, v, 4, q_offset=2**70), "q_offset"),
    (lambda q, k, v: block_sparse_attention(q, k, v, [[0, 0]], 2**64), "block_size"),
    (lambda q, k, v: block_sparse_attention(q, k, v, [[0, 2**70]], 16), "block_layout"),
], ids=["window", "num_global", "q_offset", "block_size", "layout-entry"])
def test_integers_beyond_int64_name_the_argument(call, name):
    """Not the dispatcher's "Expected a value of type 'int'" (a RuntimeError naming nothing)."""
    q, k, v = qkv(1, 1, 20, 8, grad=False)
    with pytest.raises(ValueError, match=f"^{name}: expected"):
        call(q, k, v)


def test_sparse_attention_config_refuses_window_beyond_int64():
    from edgegen.attention import SparseAttentionConfig

    assert SparseAttentionConfig(window=2**63 - 1, num_global=0).window == 2**63 - 1
    with pytest.raises(ValueError, match=r"window: expected None \(dense\) or an int in \[1, 2\*\*63 - 1\]"):
        SparseAttentionConfig(window=2**64)
    with pytest.raises(ValueError, match=r"num_global: expected an int in \[0, 2\*\*63 - 1\]"):
        SparseAttentionConfig(window=4, num_global=2**64)
