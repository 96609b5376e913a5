"""edgegen.distill.kd_loss against the float64 PyTorch reference (F.kl_div + F.cross_entropy)."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from edgegen.distill import FusedLinearKDLoss, KDConfig, KDLoss, kd_loss
from edgegen.ops import kd_loss_reference
from tests.helpers import assert_grad_close, assert_loss_close, make_target

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


def run_both(s, teachers, y, **kw):
    """(loss, grad) from edgegen and from the float64 reference on the same inputs."""
    s1 = s.detach().clone().requires_grad_()
    loss = kd_loss(s1, teachers, y, **kw)
    loss.sum().backward()
    s64 = s.detach().double().requires_grad_()
    t64 = [t.double() for t in teachers] if isinstance(teachers, list) else teachers.double()
    ref = kd_loss_reference(s64, t64, y, **kw)
    ref.sum().backward()
    return loss, s1.grad, ref, s64.grad


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 7), (5, 257), (2, 3, 1031)], ids=str)
@pytest.mark.parametrize("temperature", [1.0, 2.0, 3.7])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore", ["none", "some", "all"])
def test_matches_reference(dtype, shape, temperature, alpha, reduction, ignore):
    s = (torch.randn(shape) * 3).to(dtype)
    t = (torch.randn(shape) * 3).to(dtype)
    y = make_target(shape[:-1], shape[-1], ignore)
    kw = dict(temperature=temperature, alpha=alpha, reduction=reduction)
    loss, grad, ref, ref_grad = run_both(s, t, y, **kw)
    assert loss.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert grad.dtype == dtype
    assert_loss_close(loss, ref, dtype)
    assert_grad_close(grad, ref_grad, dtype)
    if ignore == "all":
        assert torch.all(loss == 0) and not torch.isnan(loss).any()
        assert torch.all(grad == 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("n", [1, 3])
def test_gpt2_vocabulary(dtype, n):
    V = 50257
    s = (torch.randn(n, V) * 4).to(dtype)
    t = (torch.randn(n, V) * 4).to(dtype)
    y = make_target((n,), V, "none")
    loss, grad, ref, ref_grad = run_both(s, t, y)
    assert_loss_close(loss, ref, dtype)
    assert_grad_close(grad, ref_grad, dtype)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_multi_teacher_mixture(reduction):
    shape = (6, 301)
    s = torch.randn(shape) * 2
    teachers = [torch.randn(shape) * 2 for _ in range(3)]
    y = make_target(shape[:-1], shape[-1], "some")
    loss, grad, ref, ref_grad = run_both(
        s, teachers, y, teacher_weights=[0.2, 0.5, 0.3], reduction=reduction
    )
    assert_loss_close(loss, ref, torch.float32)
    assert_grad_close(grad, ref_grad, torch.float32)
    # Weights are normalised, and a zero weight drops that teacher.
    a = kd_loss(s, teachers, y, teacher_weights=[2.0, 5.0, 3.0])
    b = kd_loss(s, teachers, y, teacher_weights=[0.2, 0.5, 0.3])
    torch.testing.assert_close(a, b)
    c = kd_loss(s, teachers, y, teacher_weights=[0.0, 1.0, 0.0])
    d = kd_loss(s, teachers[1], y)
    torch.testing.assert_close(c, d, rtol=1e-5, atol=1e-6)


def test_kl_is_zero_for_identical_models_and_never_negative():
    s = torch.randn(64, 999) * 5
    y = make_target((64,), 999, "none")
    loss = kd_loss(s, s.clone(), y, alpha=1.0, reduction="none")
    assert torch.all(loss == 0)
    t = s + 0.01 * torch.randn_like(s)  # nearly identical: KL tiny but must stay >= 0
    assert torch.all(kd_loss(s, t, y, alpha=1.0, reduction="none") >= 0)
    assert torch.all(kd_loss(s, torch.randn_like(s), y, alpha=1.0, reduction="none") >= 0)


def test_temperature_squared_scaling_and_ce_at_unit_temperature():
    s = torch.randn(10, 77, dtype=torch.float64)
    t = torch.randn(10, 77, dtype=torch.float64)
    y = make_target((10,), 77, "none")
    T = 3.0
    kl = F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), log_target=True,
                  reduction="sum") / 10
    got = kd_loss(s, t, y, temperature=T, alpha=1.0)
    torch.testing.assert_close(got, T * T * kl, rtol=1e-12, atol=0)
    # alpha = 0 is plain cross-entropy at T = 1, whatever the distillation temperature.
    for T in (0.5, 2.0, 8.0):
        got = kd_loss(s, t, y, temperature=T, alpha=0.0)
        torch.testing.assert_close(got, F.cross_entropy(s, y), rtol=1e-12, atol=0)


def test_logits_of_magnitude_1e4():
    s = torch.randn(16, 2000, dtype=torch.float64) * 1e4
    t = torch.randn(16, 2000, dtype=torch.float64) * 1e4
    y = make_target((16,), 2000, "some")
    loss, grad, ref, ref_grad = run_both(s.float(), t.float(), y)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert_loss_close(loss, ref, torch.float32)
    assert_grad_close(grad, ref_grad, torch.float32)


def test_negative_infinity_logits():
    V = 40
    s = torch.randn(4, V)
    t = torch.randn(4, V)
    masked = torch.zeros(V, dtype=torch.bool)
    masked[[0, 5, 6, 39]] = True  # a vocabulary mask shared by both models
    s[:, masked] = -math.inf
    t[:, masked] = -math.inf
    t[:, 10] = -math.inf  # the teacher alone rules out token 10
    y = torch.tensor([1, 2, 3, 4])
    s1 = s.clone().requires_grad_()
    loss = kd_loss(s1, t, y, reduction="none")
    loss.sum().backward()
    # Reference on the unmasked columns only: the same distributions.
    keep = ~masked
    s2 = s[:, keep].double().requires_grad_()
    ref = kd_loss_reference(s2, t[:, keep].double(), y - 1, reduction="none")
    ref.sum().backward()
    assert_loss_close(loss, ref, torch.float32)
    assert torch.all(s1.grad[:, masked] == 0)
    assert_grad_close(s1.grad[:, keep], s2.grad, torch.float32)
    # Student -inf where the teacher has mass: the KL is +inf, not NaN ...
    s3 = s.clone()
    s3[:, 20] = -math.inf
    assert torch.all(torch.isposinf(kd_loss(s3, t, y, reduction="none")))
    # ... and with the KL weighted 0 the loss is the (finite) cross-entropy.
    assert torch.isfinite(kd_loss(s3, t, y, alpha=0.0))


def test_ignore_index_inside_vocabulary_and_custom():
    s = torch.randn(6, 10, dtype=torch.float64)
    t = torch.randn(6, 10, dtype=torch.float64)
    y = torch.tensor([0, 3, 3, 9, 3, 1])
    got = kd_loss(s, t, y, ignore_index=3)
    ref = kd_loss_reference(s, t, y, ignore_index=3)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=0)


def test_ignored_rows_get_zero_gradient_and_do_not_count():
    s = torch.randn(6, 50, requires_grad=True)
    t = torch.randn(6, 50)
    y = torch.tensor([1, -100, 2, -100, 3, 4])
    kd_loss(s, t, y).backward()
    assert torch.all(s.grad[[1, 3]] == 0)
    keep = y != -100
    torch.testing.assert_close(kd_loss(s, t, y), kd_loss(s[keep], t[keep], y[keep]))


def test_gradient_flows_to_student_only():
    s = torch.randn(3, 20, requires_grad=True)
    t = torch.randn(3, 20, requires_grad=True)
    kd_loss(s, t, torch.tensor([0, 1, 2])).backward()
    assert s.grad is not None and t.grad is None


def test_upstream_gradient_scales_result():
    s = torch.randn(5, 30, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, 30, dtype=torch.float64)
    y = make_target((5,), 30, "some")
    (3.5 * kd_loss(s, t, y)).backward()
    g = s.grad.clone()
    s.grad = None
    (3.5 * kd_loss_reference(s, t, y)).backward()
    torch.testing.assert_close(g, s.grad, rtol=1e-11, atol=1e-14)
    # 'none' with per-row upstream weights.
    s.grad = None
    w = torch.rand(5, dtype=torch.float64)
    (kd_loss(s, t, y, reduction="none") * w).sum().backward()
    g = s.grad.clone()
    s.grad = None
    (kd_loss_reference(s, t, y, reduction="none") * w).sum().backward()
    torch.testing.assert_close(g, s.grad, rtol=1e-11, atol=1e-14)


def test_second_backward_through_same_graph():
    s = torch.randn(4, 16, requires_grad=True)
    t = torch.randn(4, 16)
    y = torch.tensor([0, 1, 2, 3])
    loss = kd_loss(s, t, y)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="second time through the same graph"):
        loss.backward()
    # The recompute mode supports it, and accumulates correctly.
    s.grad = None
    loss = kd_loss(s, t, y, grad_in_forward=False)
    loss.backward(retain_graph=True)
    g1 = s.grad.clone()
    loss.backward()
    torch.testing.assert_close(s.grad, 2 * g1)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradcheck_float64(reduction):
    s = torch.randn(3, 2, 11, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 2, 11, dtype=torch.float64)
    t2 = torch.randn(3, 2, 11, dtype=torch.float64)
    y = make_target((3, 2), 11, "some")
    for teachers, w in [(t, None), ([t, t2], [0.3, 0.7])]:
        assert torch.autograd.gradcheck(
            lambda x: kd_loss(x, teachers, y, temperature=1.7, alpha=0.4, reduction=reduction,
                              teacher_weights=w, grad_in_forward=False),
            (s,),
        )


def test_deterministic_and_thread_count_independent():
    s = torch.randn(33, 3001)
    t = torch.randn(33, 3001)
    y = make_target((33,), 3001, "some")
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = torch.ops.edgegen.kd_loss(s, [t], [], y, 2.0, 0.5, -100, "none", True)
        torch.set_num_threads(2)
        b = torch.ops.edgegen.kd_loss(s, [t], [], y, 2.0, 0.5, -100, "none", True)
        c = torch.ops.edgegen.kd_loss(s, [t], [], y, 2.0, 0.5, -100, "none", True)
    finally:
        torch.set_num_threads(old)
    for x, z in itertools.chain(zip(a, b), zip(b, c)):
        assert torch.equal(x, z)


def test_non_contiguous_inputs():
    base = torch.randn(7, 64)
    s = base[:, ::2]  # stride 2 on the vocabulary dimension
    t = torch.randn(64, 7).t()[:, :32]
    y = make_target((7,), 32, "none")
    torch.testing.assert_close(kd_loss(s, t, y), kd_loss(s.contiguous(), t.contiguous(), y))


def test_module_and_config():
    cfg = KDConfig(temperature=3.0, alpha=0.25, reduction="sum")
    assert KDConfig.from_dict(cfg.to_dict()) == cfg
    m = KDLoss(config=cfg)
    assert KDLoss(config=cfg.to_dict()).config == cfg and FusedLinearKDLoss(config=cfg).config == cfg
    with pytest.raises(ValueError, match="either a KDConfig"):
        KDLoss(3.0, config=cfg)
    s, t = torch.randn(4, 9), torch.randn(4, 9)
    y = torch.tensor([0, 1, 2, 3])
    torch.testing.assert_close(m(s, t, y), kd_loss(s, t, y, temperature=3.0, alpha=0.25, reduction="sum"))
    assert "temperature=3.0" in repr(m)
    with pytest.raises(ValueError, match="beta: unknown key"):
        KDConfig.from_dict({"temperature": 2.0, "beta": 1})


def test_empty_batch():
    s = torch.randn(0, 10, requires_grad=True)
    loss = kd_loss(s, torch.randn(0, 10), torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0 and s.grad.shape == (0, 10)


def test_peak_memory_is_one_gradient():
    """Forward + backward holds nothing of size [N, V] beyond the gradient itself: no clone when
    autograd adopts it as .grad, no zero tensor materialised for the op's gradient output. With the
    buffer cache holding last step's freed gradient, a step adds nothing: it reuses that buffer."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import gc, torch, edgegen
        from edgegen.distill import kd_loss
        def kb(key):
            for line in open('/proc/self/status'):
                if line.startswith(key):
                    return int(line.split()[1])
        s = torch.randn(256, 50257).requires_grad_()
        t = torch.randn(256, 50257)
        y = torch.randint(0, 50257, (256,))
        def peak_of_one_step():
            gc.collect()
            open('/proc/self/clear_refs', 'w').write('5')
            base = kb('VmRSS')
            kd_loss(s, t, y).backward()
            peak = (kb('VmHWM') - base) * 1024 / (s.numel() * 4)
            s.grad = None
            return peak
        kd_loss(s, t, y).backward()
        s.grad = None
        assert edgegen.memory.cache_info()["held_blocks"] == 1
        warm = peak_of_one_step()                # the held gradient buffer is reused
        assert edgegen.memory.empty_cache() >= s.numel() * 4
        cold = peak_of_one_step()                # a fresh one: the gradient, nothing more
        print(cold, warm)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
    assert r.returncode == 0, r.stderr
    cold, warm = map(float, r.stdout.split())
    assert 0.9 < cold < 1.15, f"peak memory is {cold:.2f} gradients"
    assert warm < 0.1, f"a step with the buffer cache warm added {warm:.2f} gradients"


def test_eager_forward_with_traced_backward():
    # A tracer may take over only the backward (make_fx of autograd.grad here, like compiled
    # autograd): the gradient kept by the eager forward must still be used, out of place.
    from torch.fx.experimental.proxy_tensor import make_fx

    s = torch.randn(3, 17, requires_grad=True)
    t = torch.randn(3, 17)
    y = torch.tensor([0, 5, 16])
    loss = kd_loss(s, t, y)
    up = torch.tensor(2.0)
    traced = make_fx(lambda u: torch.autograd.grad(loss, s, u, retain_graph=True)[0])(up)
    s64 = s.detach().double().requires_grad_()
    kd_loss_reference(s64, t.double(), y).backward()
    torch.testing.assert_close(traced(up).double(), 2.0 * s64.grad, rtol=1e-5, atol=1e-7)
    # The kept gradient is intact for the one eager backward that follows.
    loss.backward()
    torch.testing.assert_close(s.grad.double(), s64.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_every_isa_path_matches_reference(isa, dtype):
    """The scalar, AVX2 and AVX-512 row kernels (each this CPU has; the others skipped by name):
    vocabularies that are not a multiple of 8 or 16 lanes, two teachers, -inf logits, ignored
    rows; within the same tolerances on every path."""
    for shape, teachers in (((3, 1031), 1), ((2, 16), 2), ((4, 50257), 1)):
        s = (torch.randn(shape) * 3).to(dtype)
        ts = [(torch.randn(shape) * 3).to(dtype) for _ in range(teachers)]
        s[0, :5] = -math.inf
        for t in ts:
            t[0, :5] = -math.inf
        y = make_target(shape[:-1], shape[-1], "some")
        y[0] = 7
        loss, grad, ref, ref_grad = run_both(s, ts if teachers > 1 else ts[0], y, reduction="none")
        assert_loss_close(loss, ref, dtype)
        assert_grad_close(grad, ref_grad, dtype)


# ------------------------------------------------------------- double backward, scalar settings
@pytest.mark.parametrize("grad_in_forward", [True, False], ids=["grad-in-forward", "recompute"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_double_backward_raises_instead_of_dropping_the_kd_term(grad_in_forward, reduction):
    """Combined with another loss, a second-order gradient used to leave out the KD term silently
    (the reference's differs); backward with create_graph=True now raises."""
    torch.manual_seed(0)
    s = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 7, dtype=torch.float64)
    y = torch.tensor([1, 4, 6])
    # The reference's second-order term of the KD loss is not zero: dropping it would be wrong.
    (g_ref,) = torch.autograd.grad(kd_loss_reference(s, t, y, reduction=reduction).sum(), s, create_graph=True)
    (h_ref,) = torch.autograd.grad(g_ref.pow(2).sum(), s)
    assert h_ref.abs().max() > 1e-3
    loss = kd_loss(s, t, y, reduction=reduction, grad_in_forward=grad_in_forward).sum() + 0.5 * s.pow(2).sum()
    with pytest.raises(RuntimeError, match=r"edgegen::kd_loss: double backward is not supported.*create_graph=True"):
        torch.autograd.grad(loss, s, create_graph=True)
    # First order is unaffected, and equal to the reference's.
    loss = kd_loss(s, t, y, reduction=reduction, grad_in_forward=grad_in_forward).sum()
    (g,) = torch.autograd.grad(loss, s)
    torch.testing.assert_close(g, g_ref.detach(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("make", [
    lambda np: (np.float32(2.0), np.float64(0.25)),
    lambda np: (torch.tensor(2.0), torch.tensor(0.25, dtype=torch.float64)),
    lambda np: (torch.tensor([2.0]), 0.25),
    lambda np: (2, np.int64(0)),
], ids=["numpy-floats", "0-d-tensors", "one-element-tensor", "ints"])
def test_real_number_scalars_are_accepted(make):
    """NumPy scalars and one-element tensors used to be refused as if out of range."""
    np = pytest.importorskip("numpy")
    temperature, alpha = make(np)
    s, t = torch.randn(4, 10, dtype=torch.float64), torch.randn(4, 10, dtype=torch.float64)
    y = torch.tensor([1, 2, 3, -100])
    expected = kd_loss(s, t, y, temperature=float(temperature), alpha=float(alpha))
    assert torch.equal(kd_loss(s, t, y, temperature=temperature, alpha=alpha), expected)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(temperature="2"), TypeError, r"temperature: expected a real number .*got str"),
    (dict(temperature=True), TypeError, r"temperature: expected a real number .*got bool"),
    (dict(alpha=None), TypeError, r"alpha: expected a real number .*got NoneType"),
    (dict(alpha=torch.tensor([0.5, 0.5])), TypeError,
     r"alpha: expected a real number \(a tensor must hold exactly one"),
    (dict(temperature=torch.tensor(0.001)), ValueError, r"temperature: expected a finite number >= 0.01"),
    (dict(ignore_index=2**70), ValueError, r"ignore_index: expected an int64 value"),
    (dict(ignore_index=-(2**63) - 1), ValueError, r"ignore_index: expected an int64 value"),
], ids=["temperature-str", "temperature-bool", "alpha-none", "alpha-two-values", "temperature-tensor-tiny",
        "ignore-index-huge", "ignore-index-below-int64"])
def test_bad_scalar_settings_name_the_argument(kwargs, exc, match):
    s, t, y = torch.randn(4, 10), torch.randn(4, 10), torch.tensor([1, 2, 3, 4])
    with pytest.raises(exc, match=match):
        kd_loss(s, t, y, **kwargs)


def test_ignore_index_at_the_int64_limits_is_accepted():
    s, t = torch.randn(4, 10, dtype=torch.float64), torch.randn(4, 10, dtype=torch.float64)
    y = torch.tensor([1, 2, 3, 4])
    for ii in (2**63 - 1, -(2**63)):  # no row equals it: the same loss as the default
        assert torch.equal(kd_loss(s, t, y, ignore_index=ii), kd_loss(s, t, y))
