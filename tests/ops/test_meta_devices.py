"""Mixing meta tensors with real ones is an error naming the argument, for every op: the
dispatcher sends such a call to the fake kernel, which must not answer with uninitialised memory
on the real tensor's device. All-meta calls still infer shapes."""

import pytest
import torch

import edgegen  # noqa: F401  (registers the ops)
from edgegen.ops.quant import int8_pack_weight

ops = torch.ops.edgegen


def _cases():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, generator=g)
    s, zp = torch.tensor([0.1]), torch.tensor([0], dtype=torch.int32)
    packed, rows = int8_pack_weight(torch.randint(-128, 128, (8, 16), dtype=torch.int8, generator=g))
    w_scale, bias = torch.rand(8) + 0.1, torch.randn(8)
    p4 = ops.int4_pack(torch.randint(0, 16, (8, 64), dtype=torch.uint8, generator=g))
    s4, z4 = torch.rand(8, 1) + 0.1, torch.full((8, 1), 8, dtype=torch.uint8)
    q = torch.randn(1, 2, 8, 16, generator=g)
    out, lse = ops.sliding_window_attention(q, q, q, 4, 0, True, None, 0, None, 0)
    student, teacher = torch.randn(4, 10, generator=g), torch.randn(4, 10, generator=g)
    target = torch.tensor([1, 2, 3, 4])
    h, wt = torch.randn(4, 8, generator=g), torch.randn(10, 8, generator=g)
    w = torch.randn(6, 8, generator=g)
    return {
        "quantize_affine": (ops.quantize_affine, [x, s, zp, None, -128, 127, torch.int8]),
        "dequantize_affine": (ops.dequantize_affine, [x.to(torch.int8), s, zp, None, torch.float32]),
        "fake_quantize_affine": (ops.fake_quantize_affine, [x, s, zp, None, -128, 127]),
        "fake_quantize_learnable_backward": (ops.fake_quantize_learnable_backward,
                                             [x, x, s, zp, None, -128, 127, 1.0]),
        "int8_gemm": (ops.int8_gemm, [torch.randint(0, 255, (2, 16), dtype=torch.uint8), 3, packed, rows, 8, 16]),
        "int8_linear_dynamic": (ops.int8_linear_dynamic, [x, packed, rows, w_scale, bias, 8, 16]),
        "int8_linear_static": (ops.int8_linear_static, [x, 0.05, 3, packed, rows, w_scale, bias, 8, 16]),
        "int4_linear": (ops.int4_linear, [torch.randn(2, 64), p4, s4, z4, None, 64]),
        "int4_dequantize": (ops.int4_dequantize, [p4, s4, z4, 64]),
        "magnitude_scores": (ops.magnitude_scores, [w, torch.randn(6, 8)]),
        "kth_smallest_score": (ops.kth_smallest_score, [[w, w.clone()], None, 5]),
        "magnitude_mask": (ops.magnitude_mask, [[w, w.clone()], None, 5]),
        "channel_norms": (ops.channel_norms, [w, 0, 2, torch.randn(6, 8)]),
        "sliding_window_attention": (ops.sliding_window_attention, [q, q, q, 4, 0, True, None, 0, None, 0]),
        "sliding_window_attention_backward": (ops.sliding_window_attention_backward,
                                              [torch.randn_like(out), q, q, q, out, lse, 4, 0, True, None, 0, None,
                                               0]),
        "kd_loss": (ops.kd_loss, [student, [teacher], [1.0], target, 2.0, 0.5, -100, "mean", True]),
        "fused_linear_kd_loss": (ops.fused_linear_kd_loss, [h, wt, None, h.clone(), wt.clone(), None, target, 2.0,
                                                            0.5, -100, "mean", 0, torch.ones(4), True]),
    }


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


@pytest.mark.parametrize("name", sorted(CASES))
def test_mixed_meta_and_cpu_is_an_error(name):
    op, args = CASES[name]
    slots = list(_tensor_slots(args))
    assert len(slots) >= 2
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
    fake = op(*meta)
    real = real if isinstance(real, (tuple, list)) else (real,)
    fake = fake if isinstance(fake, (tuple, list)) else (fake,)
    for r, f in zip(real, fake):
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
