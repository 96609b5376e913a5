"""torch.ops.edgegen pruning ops vs their reference twins, torch.kthvalue and torch.nn.utils.prune;
opcheck, torch.compile, and bad input."""

import pytest
import torch
import torch.nn.utils.prune as tprune

import edgegen  # noqa: F401
from tests.helpers import opcheck_ids
from edgegen.ops import _reference as ref
from edgegen.ops import prune as P
from edgegen.ops._fallback import magnitude_prune_fallback
from edgegen.ops._reference import (
    channel_norms_reference,
    kth_smallest_score_reference,
    magnitude_mask_reference,
    nm_mask_reference,
)

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
SHAPE_SETS = [[(7,)], [(3, 5), (1,), (4, 2, 3)], [(70000,), (130, 700)], [(0,), (5, 4)]]


def _weights(shapes, dtype, ties=False):
    if ties:  # few distinct magnitudes, many exact ties (and zeros)
        return [torch.randint(-3, 4, s).to(dtype) for s in shapes]
    return [torch.randn(s).to(dtype) for s in shapes]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", SHAPE_SETS)
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("frac", [0.0, 0.01, 0.5, 0.999, 1.0])
def test_magnitude_mask_equals_reference(dtype, shapes, ties, frac):
    ws = _weights(shapes, dtype, ties)
    total = sum(w.numel() for w in ws)
    k = round(frac * total)
    got = P.magnitude_mask(ws, k)
    want = magnitude_mask_reference(ws, None, k)
    assert [g.dtype for g in got] == [torch.bool] * len(ws)
    for g, w_, w in zip(got, want, ws):
        assert g.shape == w.shape
        assert torch.equal(g, w_)
    assert sum(int((~g).sum()) for g in got) == k  # exactly the requested count, ties or not


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_taylor_scores_mask_equals_reference(dtype):
    ws = _weights([(40, 30), (17,)], dtype)
    gs = _weights([(40, 30), (17,)], dtype)
    for k in (0, 1, 300, 1217):
        got = P.magnitude_mask(ws, k, gs)
        for g, r in zip(got, magnitude_mask_reference(ws, gs, k)):
            assert torch.equal(g, r)
    s = P.magnitude_scores(ws[0], gs[0])
    assert torch.equal(s, (ws[0].float() * gs[0].float()).abs().to(dtype) if dtype != torch.float64
                       else (ws[0] * gs[0]).abs())


def test_magnitude_mask_equals_torch_prune_on_tie_free_data():
    layers = [torch.nn.Linear(30, 20), torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(20, 5)]
    # Layer-wise: l1_unstructured.
    for layer in layers:
        k = round(0.37 * layer.weight.numel())
        mine = P.magnitude_mask([layer.weight], k)[0]
        tprune.l1_unstructured(layer, "weight", amount=0.37)
        assert torch.equal(mine, layer.weight_mask.bool())
        tprune.remove(layer, "weight")
    # Global: global_unstructured over all three.
    params = [(m, "weight") for m in layers]
    ws = [m.weight.detach().clone() for m in layers]
    total = sum(w.numel() for w in ws)
    mine = P.magnitude_mask(ws, round(0.6 * total))
    tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=0.6)
    for m, mask in zip(layers, mine):
        assert torch.equal(mask, m.weight_mask.bool())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_kth_smallest_score_equals_kthvalue_of_concatenation(dtype):
    ws = _weights([(1000, 70), (3,), (65537,)], dtype)
    cat = torch.cat([w.float().abs().flatten() for w in ws])
    for k in (1, 2, 70001, cat.numel() // 2, cat.numel()):
        got = P.kth_smallest_score(ws, k)
        assert got.dtype == torch.float32 and got.dim() == 0
        assert got.item() == cat.kthvalue(k).values.item()
        assert got.item() == kth_smallest_score_reference(ws, None, k).item()


@pytest.mark.parametrize("ties", [False, True])
def test_magnitude_prune_zeros_exactly_the_pruned_entries(ties):
    ws = _weights([(300, 200), (77,)], torch.float32, ties)
    before = [w.clone() for w in ws]
    k = round(0.45 * sum(w.numel() for w in ws))
    masks = P.magnitude_prune_(ws, k)
    for w, b, m, r in zip(ws, before, masks, magnitude_mask_reference(before, None, k)):
        assert torch.equal(m, r)
        assert torch.equal(w, torch.where(m, b, torch.zeros_like(b)))


def test_non_contiguous_inputs():
    w = torch.randn(30, 40).t()
    assert not w.is_contiguous()
    assert torch.equal(P.magnitude_mask([w], 500)[0], magnitude_mask_reference([w], None, 500)[0])
    assert torch.equal(P.nm_mask(w, 2, 4, 0), nm_mask_reference(w, 2, 4, 0))
    assert torch.allclose(P.channel_norms(w, 1, 2), channel_norms_reference(w, 1, 2), rtol=1e-6)
    # In place on a non-contiguous weight: the op zeroes through the weight's own strides.
    b = w.clone()
    m = P.magnitude_prune_([w], 500)[0]
    assert torch.equal(w, torch.where(m, b, torch.zeros_like(b)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_in_place_op_takes_non_contiguous_weights_and_masks(dtype):
    ws = [torch.randn(20, 30, dtype=dtype).t(), torch.randn(50, dtype=dtype)[::2]]
    masks = [torch.ones(20, 30, dtype=torch.bool).t(), torch.ones(50, dtype=torch.bool)[::2]]
    before = [w.clone() for w in ws]
    torch.ops.edgegen.magnitude_prune_(ws, None, 123, masks)
    for w, b, m, r in zip(ws, before, masks, magnitude_mask_reference(before, None, 123)):
        assert torch.equal(m, r)
        assert torch.equal(w, torch.where(r, b, torch.zeros_like(b)))


def test_float64_runs_on_the_cpu_op_itself():
    """float64 is the op's own CPU path (no wrapper-side reroute): equal to the float64 twins."""
    w, g = torch.randn(12, 16, dtype=torch.float64), torch.randn(12, 16, dtype=torch.float64)
    # Two values equal in float32 but not in float64: the float64 order must decide.
    w[0, 0], w[0, 1] = 1.0 + 2.0 ** -40, 1.0
    assert torch.equal(torch.ops.edgegen.nm_mask(w, 1, 2, 1), nm_mask_reference(w, 1, 2, 1))
    assert bool(torch.ops.edgegen.nm_mask(w, 1, 2, 1)[0, 0]) and not bool(torch.ops.edgegen.nm_mask(w, 1, 2, 1)[0, 1])
    for k in (0, 1, 77, 192):
        got = torch.ops.edgegen.magnitude_mask([w, w[:3]], [g, g[:3]], k)
        for a, b in zip(got, magnitude_mask_reference([w, w[:3]], [g, g[:3]], k)):
            assert torch.equal(a, b)
    assert torch.equal(torch.ops.edgegen.magnitude_scores(w, g), (w * g).abs())
    assert torch.ops.edgegen.kth_smallest_score([w], None, 5).item() == kth_smallest_score_reference([w], None, 5).item()
    torch.testing.assert_close(torch.ops.edgegen.channel_norms(w, 1, 2, g), channel_norms_reference(w, 1, 2, g),
                               rtol=1e-6, atol=0)
    assert torch.equal(torch.ops.edgegen.channel_norms(w[:0], 1, 1, None), torch.zeros(16))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4), (0, 2), (3, 3)])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_nm_mask_has_n_of_every_m_and_equals_reference(dtype, n, m, dim):
    shape = [24, 48, 3] if dim != -1 else [5, 6, 24]
    for ties in (False, True):
        w = _weights([tuple(shape)], dtype, ties)[0]
        got = P.nm_mask(w, n, m, dim)
        assert torch.equal(got, nm_mask_reference(w, n, m, dim))
        groups = got.movedim(dim, -1).reshape(-1, m)
        assert bool((groups.sum(1) == n).all())


def test_nm_mask_hand_worked_ties_keep_lower_index():
    w = torch.tensor([[-3.0, 1.0, 2.0, -2.0, 0.0, 0.0, 0.0, 0.0]])
    assert P.nm_mask(w, 2, 4, 1).tolist() == [[True, False, True, False, True, True, False, False]]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [0, 1, 3])
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("taylor", [False, True])
def test_channel_norms_equal_float64_reference(dtype, dim, p, taylor):
    w = torch.randn(6, 5, 3, 4).to(dtype)
    g = torch.randn(6, 5, 3, 4).to(dtype) if taylor else None
    got = P.channel_norms(w, dim, p, g)
    want = channel_norms_reference(w, dim, p, g)
    assert got.dtype == torch.float32 and got.shape == (w.shape[dim],)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)


OPCHECK_ARGS = [
    (torch.ops.edgegen.magnitude_mask, ([torch.randn(5, 4), torch.randn(7)], None, 9)),
    (torch.ops.edgegen.magnitude_mask, ([torch.randn(5, 4).bfloat16()], [torch.randn(5, 4).bfloat16()], 3)),
    (torch.ops.edgegen.magnitude_prune_, ([torch.randn(5, 4), torch.randn(7)], None, 9,
                                          [torch.empty(5, 4, dtype=torch.bool), torch.empty(7, dtype=torch.bool)])),
    (torch.ops.edgegen.kth_smallest_score, ([torch.randn(5, 4), torch.randn(7)], None, 4)),
    (torch.ops.edgegen.magnitude_scores, (torch.randn(5, 4), torch.randn(5, 4))),
    (torch.ops.edgegen.magnitude_scores, (torch.randn(5, 4).half(), None)),
    (torch.ops.edgegen.nm_mask, (torch.randn(6, 8), 2, 4, 1)),
    (torch.ops.edgegen.nm_mask, (torch.randn(8, 3, 2), 4, 8, 0)),
    (torch.ops.edgegen.channel_norms, (torch.randn(4, 3, 2), 1, 2, None)),
    (torch.ops.edgegen.channel_norms, (torch.randn(4, 3, 2), 0, 1, torch.randn(4, 3, 2))),
    (torch.ops.edgegen.channel_norms, (torch.randn(4, 3, 2).double(), 2, 2, None)),
    (torch.ops.edgegen.nm_mask, (torch.randn(6, 8).double(), 2, 4, 1)),
    (torch.ops.edgegen.magnitude_mask, ([torch.randn(5, 4).double(), torch.randn(7)], None, 9)),
    (torch.ops.edgegen.magnitude_scores, (torch.randn(5, 4).double(), torch.randn(5, 4).double())),
]


@pytest.mark.parametrize("op,args", OPCHECK_ARGS, ids=opcheck_ids(OPCHECK_ARGS))
def test_opcheck(op, args):
    torch.library.opcheck(op, args)


def test_torch_compile_fullgraph():
    def masks(a, b):
        return torch.ops.edgegen.magnitude_mask([a, b], None, 20), torch.ops.edgegen.nm_mask(a, 2, 4, 1)

    a, b = torch.randn(8, 8), torch.randn(13)
    eager = masks(a, b)
    compiled = torch.compile(masks, fullgraph=True, backend="inductor")(a, b)
    for x, y in zip(eager[0], compiled[0]):
        assert torch.equal(x, y)
    assert torch.equal(eager[1], compiled[1])


@pytest.mark.parametrize("call,exc,match", [
    (lambda: P.magnitude_mask([torch.tensor([1.0, float("nan")])], 1), ValueError, "NaN"),
    (lambda: P.magnitude_mask([torch.randn(4)], 5), ValueError, "num_prune"),
    (lambda: P.magnitude_mask([torch.randn(4)], -1), ValueError, "num_prune"),
    (lambda: P.magnitude_mask([torch.randn(4)], 1, [torch.randn(4), torch.randn(4)]), ValueError, "grads"),
    (lambda: P.magnitude_mask([torch.randn(4)], 1, [torch.randn(5)]), ValueError, r"grads\[0\]"),
    (lambda: torch.ops.edgegen.magnitude_mask([torch.arange(4)], None, 1), TypeError, r"weights\[0\]"),
    (lambda: torch.ops.edgegen.magnitude_mask([torch.randn(4)], [torch.randn(4).double()], 1), TypeError, r"grads\[0\]"),
    (lambda: torch.ops.edgegen.magnitude_prune_([torch.randn(4, 4)], None, 1,
                                                [torch.empty(4, 3, dtype=torch.bool)]), ValueError, r"masks\[0\]"),
    (lambda: torch.ops.edgegen.magnitude_prune_([torch.randn(4)], None, 1, [torch.empty(4)]), TypeError, r"masks\[0\]"),
    (lambda: torch.ops.edgegen.magnitude_prune_([torch.randn(4)], None, 1, []), ValueError, "masks"),
    (lambda: P.kth_smallest_score([torch.randn(4)], 0), ValueError, "k"),
    (lambda: P.kth_smallest_score([], 1), ValueError, "weights"),
    (lambda: P.nm_mask(torch.randn(4, 8), 3, 2, 1), ValueError, "n:"),
    (lambda: P.nm_mask(torch.randn(4, 6), 2, 4, 1), ValueError, "multiple of m"),
    (lambda: P.nm_mask(torch.randn(4, 8), 2, 4, 2), IndexError, "dim"),
    (lambda: P.nm_mask(torch.randn(4, 8), 2, 65, 1), ValueError, "m:"),
    (lambda: P.nm_mask(torch.tensor([[1.0, float("nan"), 0.0, 2.0]]), 2, 4, 1), ValueError, "NaN"),
    (lambda: P.channel_norms(torch.randn(4, 8), 0, 3), ValueError, "p:"),
    (lambda: P.channel_norms(torch.randn(4, 8), 0, 1, torch.randn(8, 4)), ValueError, "grad"),
], ids=lambda x: x if isinstance(x, str) else "")
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_large_inputs_take_the_sampled_path_exactly(dtype):
    # >= 4,194,304 scores: selection brackets the threshold from a sample (see docs/prune.md).
    ws = [torch.randn(3_000_000).to(dtype), torch.randn(1500, 1000).to(dtype)]
    gs = [torch.randn(w.shape).to(dtype) for w in ws]
    total = sum(w.numel() for w in ws)
    for k, grads in ((total // 2, None), (123, None), (total - 5, gs)):
        for g, r in zip(P.magnitude_mask(ws, k, grads), magnitude_mask_reference(ws, grads, k)):
            assert torch.equal(g, r)
    cat = torch.cat([w.float().abs().flatten() for w in ws])
    assert P.kth_smallest_score(ws, total // 3).item() == cat.kthvalue(total // 3).values.item()


_PRUNE_IMPLS = {"cpu-kernel": lambda ws, k, ms: torch.ops.edgegen.magnitude_prune_(ws, None, k, ms),
                "fallback": lambda ws, k, ms: magnitude_prune_fallback(ws, None, k, ms)}


@pytest.mark.parametrize("impl", list(_PRUNE_IMPLS))
def test_weights_that_share_memory_are_refused_and_disjoint_views_are_not(impl):
    run = _PRUNE_IMPLS[impl]
    w = torch.tensor([[0.1, -2.0, 3.0, 0.05]])
    base = torch.randn(10)
    for ws in ([w, w], [base[:6], base[4:]], [w, w.view(-1)[1:3]]):
        masks = [torch.empty(t.shape, dtype=torch.bool) for t in ws]
        before = [t.clone() for t in ws]
        with pytest.raises(ValueError, match=r"weights\[0\] and weights\[1\]: share memory"):
            run(ws, 2, masks)
        assert all(torch.equal(a, b) for a, b in zip(ws, before))  # nothing written
    shared = torch.empty(4, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"masks\[0\] and masks\[1\]: share memory"):
        run([torch.randn(4), torch.randn(4)], 2, [shared, shared])
    a = torch.randn(4, 6)
    halves = [a[:2], a[2:]]  # one storage, disjoint rows: fine
    masks = [torch.empty(2, 6, dtype=torch.bool) for _ in halves]
    run(halves, 5, masks)
    expected = ref.magnitude_mask_reference([a[:2].clone(), a[2:].clone()], None, 5)
    assert all(torch.equal(m, e) for m, e in zip(masks, expected)) and int((a == 0).sum()) >= 5


def test_pruning_in_place_bumps_the_version_counter():
    """A graph that saved the weight before pruning must refuse to backpropagate with the pruned
    values, on the fused contiguous path as on the strided one."""
    for w in (torch.randn(3, 3), torch.randn(3, 3).t()):
        x = torch.randn(3, requires_grad=True)
        y = (x @ w).sum()
        v0 = w._version
        masks = P.magnitude_prune_([w], 4)
        assert w._version > v0 and masks[0]._version > 0
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.backward()
