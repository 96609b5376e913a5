"""Mixing meta tensors with real ones is an error naming the argument, for every op: the
dispatcher sends such a call to the fake kernel, which must not answer with uninitialised memory
on the real tensor's device. All-meta calls still infer shapes."""

import pytest
import torch

import edgegen  # noqa: F401  (registers the ops)
ops = torch.ops.edgegen


def _cases():
    """Valid calls of every op (the fuzz suite's base calls)."""
    from tests.fuzz.fuzz_ops import _base_calls, _op

    return {name: (_op(name), args) for name, args in _base_calls().items()}


def _tensor_slots(args):
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            yield i, None
        elif isinstance(a, list) and a and isinstance(a[0], torch.Tensor):
            for j in range(len(a)):
                yield i, j


def _with_meta(args, i, j):
    out = list(args)
    if j is None:
        out[i] = args[i].to("meta")
    else:
        out[i] = [t.to("meta") if jj == j else t for jj, t in enumerate(args[i])]
    return out


CASES = _cases()
MIXABLE = sorted(n for n, (_, args) in CASES.items() if len(list(_tensor_slots(args))) >= 2)


def test_every_op_with_two_tensors_is_covered():
    assert {"quantize_affine", "int8_linear_dynamic", "int4_linear", "magnitude_mask", "sliding_window_attention",
            "fused_linear_kd_loss", "fake_quantize_learnable_backward", "kd_loss"} \
        <= set(MIXABLE)


@pytest.mark.parametrize("name", MIXABLE)
def test_mixed_meta_and_cpu_is_an_error(name):
    op, args = CASES[name]
    slots = list(_tensor_slots(args))
    for i, j in slots:
        with pytest.raises(RuntimeError, match=r"expected a tensor on (cpu|meta) like \w+.*, got one on (meta|cpu)"):
            op(*_with_meta(args, i, j))


@pytest.mark.parametrize("name", sorted(CASES))
def test_all_meta_infers_shapes(name):
    op, args = CASES[name]
    meta = [a.to("meta") if isinstance(a, torch.Tensor) else
            ([t.to("meta") for t in a] if isinstance(a, list) and a and isinstance(a[0], torch.Tensor) else a)
            for a in args]
    real = op(*args)
    if name == "mse_clip_range":  # two numbers that depend on the data: refused, never invented
        with pytest.raises(RuntimeError, match="cannot be computed from meta or fake tensors"):
            op(*meta)
        return
    fake = op(*meta)
    real = real if isinstance(real, (tuple, list)) else (real,)
    fake = fake if isinstance(fake, (tuple, list)) else (fake,)
    for r, f in zip(real, fake):
        if r is None:  # an in-place op returns nothing on either
            assert f is None
            continue
        assert f.device.type == "meta" and f.shape == r.shape and f.dtype == r.dtype


def test_public_function_from_the_report():
    from edgegen.quant import fake_quantize_learnable

    with pytest.raises(RuntimeError, match="scale: expected a tensor on cpu like input, got one on meta"):
        fake_quantize_learnable(torch.randn(2, 4), torch.tensor([0.1], device="meta"), torch.tensor([0.0]), -128, 127)


@pytest.mark.parametrize("kind", ["conv2d", "conv_transpose2d"])
def test_int8_convolutions_with_a_meta_input(kind):
    from edgegen.quant import Int8Conv2d, Int8ConvTranspose2d

    torch.manual_seed(0)
    if kind == "conv2d":
        m = Int8Conv2d.from_float(torch.nn.Conv2d(4, 8, 3, padding=1))
    else:
        m = Int8ConvTranspose2d.from_float(torch.nn.ConvTranspose2d(4, 8, 4, 2, 1))
    # the dynamic activation range is read before the op: an error about meta tensors, never garbage
    with pytest.raises(RuntimeError, match="meta"):
        m(torch.randn(1, 4, 6, 6, device="meta"))


def test_magnitude_prune_with_meta_masks():
    w = [torch.randn(6, 8)]
    with pytest.raises(RuntimeError, match=r"masks\[0\]: expected a tensor on cpu like weights\[0\], got one on meta"):
        ops.magnitude_prune_(w, None, 5, [torch.ones(6, 8, dtype=torch.bool, device="meta")])
