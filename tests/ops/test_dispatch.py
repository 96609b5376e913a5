"""One dispatch point: every op has its C++ CPU kernel and a PyTorch kernel that the dispatcher
gives every other device; both accept and refuse the same calls and agree on the results; and the
modules built on the ops call nothing else (run whole with the other devices' kernels, they give
the CPU results)."""

from __future__ import annotations

import hashlib
import random

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import edgegen  # noqa: F401
from edgegen.ops import prune as P
from edgegen.ops._fallback_quant import int8_pack_weight_fallback
from tests.fuzz import fuzz_ops as fz

DK = torch._C.DispatchKey


def _tensor_ops() -> list[str]:
    names = []
    for full in torch._C._dispatch_get_all_op_names():
        if full.startswith("edgegen::"):
            name = full.split("::")[1].split(".")[0]
            schema = getattr(torch.ops.edgegen, name).default._schema
            if any("Tensor" in str(a.type) for a in schema.arguments):
                names.append(name)
    return sorted(set(names))


TENSOR_OPS = _tensor_ops()


def test_every_tensor_op_is_listed():
    assert len(TENSOR_OPS) >= 26 and "cpu_isa" not in TENSOR_OPS


@pytest.mark.parametrize("op", TENSOR_OPS)
def test_dispatch_table_has_a_cpu_kernel_and_a_kernel_for_every_other_device(op):
    table = dict(line.split(": ", 1) for line in torch._C._dispatch_dump_table(f"edgegen::{op}").splitlines()
                 if ": " in line)
    assert "csrc/cpu/" in table["CPU"]
    for device in ("XPU", "MPS", "PrivateUse1"):  # stand-ins for any device without a C++ kernel
        assert "ops/_fallback" in table[device], (device, table[device])
    if not torch._C._dispatch_has_kernel_for_dispatch_key(f"edgegen::{op}", "CUDA"):
        assert "ops/_fallback" in table["CUDA"]


def _fresh(v):
    """A copy of an in-place op's arguments (each kernel gets its own)."""
    if isinstance(v, torch.Tensor):
        return v.clone()
    if isinstance(v, list):
        return [_fresh(t) for t in v]
    return v


def _call(name: str, args: list, fallback: bool):
    op = fz._op(name).default
    if name.endswith("_"):
        args = [_fresh(a) for a in args]
    try:
        return "ok", (op._op_dk(DK.CompositeExplicitAutograd, *args) if fallback else op(*args))
    except Exception as exc:  # noqa: BLE001 - compared below
        return "error", type(exc).__name__, str(exc).splitlines()[0]


def _close(a, b) -> bool:
    """Equal integers and shapes; floats within 1e-5 of the larger result's scale (the two kernels
    sum in different orders)."""
    a = a if isinstance(a, (tuple, list)) else [a]
    b = b if isinstance(b, (tuple, list)) else [b]
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if not isinstance(x, torch.Tensor):
            if x != y and not (x != x and y != y):
                return False
            continue
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if x.is_floating_point():
            scale = float(y.double().abs().nan_to_num(0.0, 0.0, 0.0).max()) if y.numel() else 0.0
            if not torch.allclose(x.double(), y.double(), rtol=0.0, atol=1e-5 * scale + 1e-6, equal_nan=True):
                return False
        elif not torch.equal(x, y):
            return False
    return True


def _parity_cases():
    base = fz._base_calls()
    cases = [(name, -1, "valid") for name in sorted(base)]
    cases += [(name, i, m) for name, args in sorted(base.items()) for i, a in enumerate(args)
              for m in fz._mutations(a) if m != "meta"]  # meta tensors go to the fake kernels
    return cases


PARITY = _parity_cases()


@pytest.mark.parametrize("op_names", sorted({c[0] for c in PARITY}))
def test_cpu_kernel_and_other_device_kernel_accept_refuse_and_answer_alike(op_names):
    """Over the fuzz suite's valid calls and every single-argument mutation of them: both kernels
    raise (the same exception class) or both answer, with the same result; NaN/inf inputs only
    need the same decision (their NaN patterns depend on summation order)."""
    base = fz._base_calls()
    failures = []
    for name, idx, mut in (c for c in PARITY if c[0] == op_names):
        args = list(base[name])
        if idx >= 0:
            rng = random.Random(int(hashlib.sha256(repr((name, idx, mut)).encode()).hexdigest()[:8], 16))
            try:
                args[idx] = fz._mutate(args[idx], mut, rng)
            except Exception:  # noqa: BLE001 - a mutation that does not apply to this value
                continue
        cpu, other = _call(name, args, False), _call(name, args, True)
        if cpu[0] != other[0]:
            failures.append(f"{(name, idx, mut)}: CPU {cpu[0]} {cpu[1:] if cpu[0] == 'error' else ''} | other "
                            f"{other[0]} {other[1:] if other[0] == 'error' else ''}")
        elif cpu[0] == "error" and cpu[1] != other[1]:
            failures.append(f"{(name, idx, mut)}: CPU raises {cpu[1]} ({cpu[2]}), other {other[1]} ({other[2]})")
        elif cpu[0] == "ok" and mut not in ("nan", "inf") and not _close(cpu[1], other[1]):
            failures.append(f"{(name, idx, mut)}: different results")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("n,k", [(1, 1), (16, 4), (17, 29), (40, 130)])
def test_the_portable_packing_equals_the_cpu_packing(n, k):
    w = torch.randint(-128, 128, (n, k), dtype=torch.int8)
    w[0, 0] = -128
    packed, rows = torch.ops.edgegen.int8_pack_weight(w)
    p2, r2 = int8_pack_weight_fallback(w)
    assert torch.equal(packed, p2) and torch.equal(rows, r2)


class OtherDeviceKernels(TorchDispatchMode):
    """Routes every edgegen op to the kernel the dispatcher gives devices without a C++ kernel,
    and records which ops ran: a CPU stand-in for a GPU, MPS or XPU run."""

    def __init__(self):
        super().__init__()
        self.ran: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "edgegen":
            self.ran.add(func._schema.name.split("::")[1])
            return func._op_dk(DK.CompositeExplicitAutograd, *args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


def _both(fn):
    """fn() on the CPU kernels and on the other devices' kernels; the ops the latter ran."""
    torch.manual_seed(0)
    cpu = fn()
    torch.manual_seed(0)
    with OtherDeviceKernels() as mode:
        other = fn()
    return cpu, other, mode.ran


def _int8_layers():
    from edgegen.quant import Int4Linear, Int8Conv2d, Int8ConvTranspose2d, Int8Linear

    torch.manual_seed(1)
    return {
        "Int8Linear": (Int8Linear.from_float(nn.Linear(29, 24)), torch.randn(3, 5, 29)),
        "Int8Linear-static": (Int8Linear.from_float(nn.Linear(32, 16), act_qparams=(0.05, 64)), torch.randn(4, 32)),
        "Int8Conv2d": (Int8Conv2d.from_float(nn.Conv2d(3, 16, 4, 2, 1)), torch.randn(2, 3, 9, 8)),
        "Int8ConvTranspose2d-phases": (Int8ConvTranspose2d.from_float(nn.ConvTranspose2d(8, 16, 4, 2, 1)),
                                       torch.randn(2, 8, 5, 6)),
        "Int8ConvTranspose2d-rgb": (Int8ConvTranspose2d.from_float(nn.ConvTranspose2d(8, 3, 4, 2, 1)),
                                    torch.randn(2, 8, 5, 6)),
        "Int8ConvTranspose2d-col2im": (Int8ConvTranspose2d.from_float(nn.ConvTranspose2d(8, 5, 3, 2, 1, dilation=2)),
                                       torch.randn(2, 8, 5, 6)),
        "Int4Linear": (Int4Linear.from_float(nn.Linear(128, 24), group_size=32), torch.randn(3, 128)),
        "Int4Linear-a8": (Int4Linear.from_float(nn.Linear(192, 24), 64, "int8"), torch.randn(5, 192)),
    }


@pytest.mark.parametrize("layer", sorted(_int8_layers()))
def test_quantized_layers_run_only_through_the_ops(layer):
    module, x = _int8_layers()[layer]
    cpu, other, ran = _both(lambda: module(x))
    assert ran, "the module called no edgegen op"
    # The integer accumulations are exact on both; only the float epilogue's order may differ.
    torch.testing.assert_close(other, cpu, rtol=1e-5, atol=1e-5)


def test_observers_and_fake_quantization_run_only_through_the_ops():
    from edgegen.quant.functional import fake_quantize
    from edgegen.quant.observers import MinMaxObserver, MSEObserver, PercentileObserver

    x = torch.randn(64, 16) * 3

    def run():
        out = []
        for obs in (MinMaxObserver(axis=1), PercentileObserver(bins=256), MSEObserver(steps=20)):
            obs(x)
            obs(x * 2)
            out += list(obs.calculate_qparams())
        xr = x.clone().requires_grad_(True)
        y = fake_quantize(xr, 0.05, 3, -128, 127)
        y.sum().backward()
        return out + [y.detach(), xr.grad]

    cpu, other, ran = _both(run)
    assert {"observe_minmax", "observe_histogram", "mse_clip_range", "fake_quantize_affine"} <= ran
    for a, b in zip(cpu, other):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)


def test_pruning_runs_only_through_the_ops():
    ws = [torch.randn(30, 20), torch.randn(45)]

    def run():
        w = [t.clone() for t in ws]
        masks = P.magnitude_prune_(w, 300)
        return masks + w + [P.nm_mask(ws[0], 2, 4, 1), P.channel_norms(ws[0], 1, 2), P.magnitude_scores(ws[1]),
                            P.kth_smallest_score(ws, 17)]

    cpu, other, ran = _both(run)
    assert {"magnitude_prune_", "nm_mask", "channel_norms", "magnitude_scores", "kth_smallest_score"} <= ran
    for a, b in zip(cpu, other):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=0)


# --- the numerical policy, on both kernels ----------------------------------------------------

BOTH = pytest.mark.parametrize("kernel", ["cpu", "other-devices"])


def _op(kernel, name, *args):
    op = getattr(torch.ops.edgegen, name).default
    return op(*args) if kernel == "cpu" else op._op_dk(DK.CompositeExplicitAutograd, *args)


@BOTH
def test_quantize_refuses_nan_and_saturates_infinities(kernel):
    s, z = torch.tensor([0.1]), torch.tensor([3])
    with pytest.raises(ValueError, match="input: 1 values are NaN"):
        _op(kernel, "quantize_affine", torch.tensor([1.0, float("nan")]), s, z, None, -128, 127, torch.int8)
    q = _op(kernel, "quantize_affine", torch.tensor([float("inf"), -float("inf"), 1e30]), s, z, None, -128, 127,
            torch.int8)
    assert q.tolist() == [127, -128, 127]


@BOTH
def test_fake_quantize_keeps_nan_and_passes_it_no_gradient(kernel):
    x = torch.tensor([0.26, float("nan"), float("inf"), -2.0])
    out, mask = _op(kernel, "fake_quantize_affine", x, torch.tensor([0.1]), torch.tensor([0]), None, -10, 10)
    assert out[0].item() == pytest.approx(0.3) and out[1].isnan() and out[2].item() == pytest.approx(1.0)
    assert out[3].item() == pytest.approx(-1.0)
    assert mask.tolist() == [True, False, False, False]


@BOTH
def test_learnable_backward_refuses_nan_input(kernel):
    x = torch.tensor([0.5, float("nan")])
    with pytest.raises(ValueError, match="input: 1 values are NaN"):
        _op(kernel, "fake_quantize_learnable_backward", torch.ones(2), x, torch.tensor([0.1]), torch.tensor([0]),
            None, -10, 10, 1.0)


@BOTH
def test_learnable_backward_zero_point_gradient_ignores_unclamped_nan_gradients(kernel):
    """dz sums -scale * dy over the clamped entries only: a NaN upstream gradient at an unclamped
    entry leaves it finite (0 * NaN is not formed)."""
    x = torch.tensor([0.5, 5.0])  # the first inside [-1, 1], the second clamped
    dy = torch.tensor([float("nan"), 2.0])
    dx, ds, dz = _op(kernel, "fake_quantize_learnable_backward", dy, x, torch.tensor([0.1]), torch.tensor([0]),
                     None, -10, 10, 1.0)
    assert dz.item() == pytest.approx(-0.2) and ds.isnan().all() and dx[1].item() == 0.0
