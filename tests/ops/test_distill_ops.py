"""torch.ops.edgegen KD ops: opcheck, fake tensors, torch.compile, and bad input at op level."""

import pytest
import torch

import edgegen  # noqa: F401
from edgegen.distill import fused_linear_kd_loss, kd_loss
from tests.helpers import make_target

kd_op = torch.ops.edgegen.kd_loss.default
fused_op = torch.ops.edgegen.fused_linear_kd_loss.default


def kd_args(shape=(3, 4, 19), dtype=torch.float32, teachers=1, weights=(), reduction="mean",
            with_grad=True, requires_grad=True):
    s = torch.randn(shape, dtype=dtype, requires_grad=requires_grad)
    ts = [torch.randn(shape, dtype=dtype) for _ in range(teachers)]
    y = make_target(shape[:-1], shape[-1], "some")
    return (s, ts, list(weights), y, 2.0, 0.5, -100, reduction, with_grad)


def fused_args(reduction="mean", with_grad=True, bias=True, dtype=torch.float32):
    hs = torch.randn(2, 5, 8, dtype=dtype, requires_grad=True)
    ws = torch.randn(29, 8, dtype=dtype, requires_grad=True)
    bs = torch.randn(29, dtype=dtype, requires_grad=True) if bias else None
    ht = torch.randn(2, 5, 6, dtype=dtype)
    wt = torch.randn(29, 6, dtype=dtype)
    y = make_target((2, 5), 29, "some")
    return (hs, ws, bs, ht, wt, None, y, 2.0, 0.5, -100, reduction, 3, None, with_grad)


@pytest.mark.parametrize(
    "args",
    [
        kd_args(),
        kd_args(reduction="none"),
        kd_args(reduction="sum", with_grad=False),
        kd_args(teachers=2, weights=(1.0, 3.0)),
        kd_args(dtype=torch.bfloat16),
        kd_args(dtype=torch.float64, reduction="none", with_grad=False),
        kd_args(requires_grad=False, with_grad=False),
    ],
    ids=["mean", "none", "sum-recompute", "two-teachers", "bf16", "f64-none-recompute", "no-grad"],
)
def test_opcheck_kd_loss(args):
    torch.library.opcheck(kd_op, args)


@pytest.mark.parametrize(
    "args",
    [fused_args(), fused_args(reduction="none", with_grad=False), fused_args(bias=False),
     fused_args(reduction="sum", with_grad=False)],
    ids=["mean", "none", "no-bias", "sum-recompute"],
)
def test_opcheck_fused_linear_kd_loss(args):
    torch.library.opcheck(fused_op, args)


def test_fake_tensor_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        s = torch.empty(4, 7, 100, dtype=torch.bfloat16)
        y = torch.empty(4, 7, dtype=torch.long)
        loss, g = kd_op(s, [s], [], y, 2.0, 0.5, -100, "none", True)
        assert loss.shape == (4, 7) and loss.dtype == torch.float32
        assert g.shape == s.shape and g.dtype == torch.bfloat16


def test_torch_compile_matches_eager():
    s = torch.randn(6, 50, requires_grad=True)
    t = torch.randn(6, 50)
    y = make_target((6,), 50, "some")

    def step(s, t, y):
        return kd_loss(s, t, y, temperature=2.0, alpha=0.3) * 1.5

    eager = step(s, t, y)
    eager.backward()
    g_eager = s.grad.clone()
    s.grad = None
    compiled = torch.compile(step, fullgraph=True)(s, t, y)
    compiled.backward()
    torch.testing.assert_close(compiled, eager)
    torch.testing.assert_close(s.grad, g_eager)


def test_torch_compile_fused_linear_aot_eager():
    hs = torch.randn(10, 8, requires_grad=True)
    ws = torch.randn(40, 8, requires_grad=True)
    ht, wt = torch.randn(10, 12), torch.randn(40, 12)
    y = make_target((10,), 40, "none")

    def step(hs, ws):
        return fused_linear_kd_loss(hs, ws, ht, wt, y, chunk_size=4, reduction="none").sum()

    eager = step(hs, ws)
    eager.backward()
    ge = hs.grad.clone(), ws.grad.clone()
    hs.grad = ws.grad = None
    out = torch.compile(step, backend="aot_eager", fullgraph=True)(hs, ws)
    out.backward()
    torch.testing.assert_close(out, eager)
    torch.testing.assert_close(hs.grad, ge[0])
    torch.testing.assert_close(ws.grad, ge[1])


# ---------------------------------------------------------------------------- bad input
S = torch.randn(4, 10)
T = torch.randn(4, 10)
Y = torch.tensor([0, 1, 2, 3])


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(teacher_logits=torch.randn(4, 11)), ValueError, r"teacher_logits\[0\].*shape"),
        (dict(teacher_logits=[T, torch.randn(3, 10)]), ValueError, r"teacher_logits\[1\]"),
        (dict(target=torch.tensor([0, 1, 2, 10])), IndexError, r"target: entry 3 is 10"),
        (dict(target=torch.tensor([0, -1, 2, 3])), IndexError, r"target: entry 1 is -1"),
        (dict(target=torch.tensor([0, 1, 2])), ValueError, r"target: expected shape"),
        (dict(target=Y.float()), TypeError, r"target: expected an int64"),
        (dict(student_logits=S.long()), TypeError, r"student_logits: expected a float32"),
        (dict(teacher_logits=T.double()), TypeError, r"teacher_logits\[0\]: expected dtype"),
        (dict(temperature=0.0), ValueError, r"temperature"),
        (dict(temperature=-1.0), ValueError, r"temperature"),
        (dict(temperature=float("nan")), ValueError, r"temperature"),
        (dict(alpha=1.5), ValueError, r"alpha"),
        (dict(alpha=-0.1), ValueError, r"alpha"),
        (dict(reduction="avg"), ValueError, r"reduction"),
        (dict(teacher_logits=[T, T], teacher_weights=[1.0]), ValueError, r"teacher_weights"),
        (dict(teacher_logits=[T, T], teacher_weights=[1.0, -1.0]), ValueError, r"teacher_weights"),
        (dict(teacher_logits=[T, T], teacher_weights=[0.0, 0.0]), ValueError, r"teacher_weights"),
        (dict(teacher_logits=[T] * 9), ValueError, r"teacher_logits: expected 1 to 8"),
        (dict(teacher_logits=[]), ValueError, r"teacher_logits: expected 1 to 8"),
        (dict(student_logits=torch.randn(4, 0), teacher_logits=torch.randn(4, 0)), ValueError,
         r"student_logits: expected shape \[\.\.\., V\] with V >= 1"),
        (dict(teacher_logits=T.to("meta")), ValueError, r"teacher_logits\[0\]: expected a tensor on cpu"),
        (dict(target=Y.to("meta")), ValueError, r"target: expected a tensor on cpu"),
        (dict(student_logits="logits"), TypeError, r"student_logits: expected a torch.Tensor"),
    ],
)
def test_kd_loss_bad_input(kwargs, exc, match):
    args = dict(student_logits=S, teacher_logits=T, target=Y)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        kd_loss(**args)


def test_op_level_checks_without_python_wrapper():
    # The same checks guard torch.ops.edgegen.kd_loss called directly.
    with pytest.raises(ValueError, match="temperature"):
        kd_op(S, [T], [], Y, 0.0, 0.5, -100, "mean", False)
    with pytest.raises(ValueError, match="reduction"):
        kd_op(S, [T], [], Y, 2.0, 0.5, -100, "avg", False)
    with pytest.raises(IndexError, match="target"):
        kd_op(S, [T], [], torch.tensor([0, 1, 2, 99]), 2.0, 0.5, -100, "mean", False)
    # A meta tensor among the inputs sends the call to the fake kernel, which checks too.
    with pytest.raises(RuntimeError, match="teacher_logits\\[0\\]: expected a tensor on cpu"):
        kd_op(S, [T.to("meta")], [], Y, 2.0, 0.5, -100, "mean", False)
    with pytest.raises(RuntimeError, match="target: expected a CPU tensor"):
        torch.ops.edgegen.kd_loss.default.redispatch(
            torch._C.DispatchKeySet(torch._C.DispatchKey.CPU), S, [T], [], Y.to("meta"), 2.0, 0.5,
            -100, "mean", False)
    s = S.clone().requires_grad_()
    loss, _ = kd_op(s, [T], [], Y, 2.0, 0.5, -100, "mean", True)
    loss.backward()  # with_grad=True works ...
    loss, _ = kd_op(s, [T], [], Y, 2.0, 0.5, -100, "mean", False)
    loss.backward()  # ... and so does the recompute mode


@pytest.mark.parametrize(
    "change, exc, match",
    [
        (dict(student_weight=torch.randn(40, 9)), ValueError, r"student_weight: expected shape \[V, 8\]"),
        (dict(teacher_weight=torch.randn(41, 12)), ValueError, r"teacher_weight: expected shape \[40, 12\]"),
        (dict(teacher_hidden=torch.randn(6, 12)), ValueError, r"teacher_hidden: expected leading shape"),
        (dict(student_bias=torch.randn(39)), ValueError, r"student_bias: expected shape \[40\]"),
        (dict(teacher_weight=torch.randn(40, 12).double()), TypeError, r"teacher_weight: expected dtype"),
        (dict(target=torch.tensor([0, 1, 2, 3, 40])), IndexError, r"target: entry 4 is 40"),
        (dict(chunk_size=-1), ValueError, r"chunk_size"),
        (dict(alpha=2.0), ValueError, r"alpha"),
        (dict(student_weight=torch.randn(40, 8, device="meta")), ValueError, r"student_weight: expected a tensor on cpu"),
    ],
)
def test_fused_linear_bad_input(change, exc, match):
    args = dict(student_hidden=torch.randn(5, 8), student_weight=torch.randn(40, 8),
                teacher_hidden=torch.randn(5, 12), teacher_weight=torch.randn(40, 12),
                target=torch.tensor([0, 1, 2, 3, 4]))
    args.update(change)
    with pytest.raises(exc, match=match):
        fused_linear_kd_loss(**args)


def test_kd_loss_module_compiles_with_dynamic_shapes_and_symbolic_settings():
    """With dynamic=True the module's temperature is traced as a symbolic float: the settings checks
    must not call functions dynamo cannot trace (math.isfinite)."""
    from edgegen.distill import KDLoss

    torch.manual_seed(0)
    s, t, y = torch.randn(7, 13), torch.randn(7, 13), torch.randint(0, 13, (7,))
    m = KDLoss(temperature=3.0)
    got = torch.compile(m, backend="aot_eager", fullgraph=True, dynamic=True)(s, t, y)
    torch.testing.assert_close(got, m(s, t, y))
