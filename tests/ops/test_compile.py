"""torch.compile(fullgraph=True) of the quantization and pruning ops: each op is traced into the
graph through its fake kernel (no graph break) and the compiled call returns exactly what the
eager call returns. Backend: inductor, as tests/quant/test_linear.py and tests/ops/test_prune_ops.py
use: the ops stay opaque kernels in the generated code, so after the first graph each compiles in
a fraction of a second.

Not here: mse_clip_range, whose result (two Python floats) depends on the values, so its fake
kernel refuses to trace it (tests/ops/test_argument_checks.py)."""

import pytest
import torch

import edgegen  # noqa: F401
from edgegen.ops.quant import int8_pack_weight

ops = torch.ops.edgegen


def _calls():
    """op name -> (tensor arguments, the call with the other arguments fixed)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 16, generator=g)
    s, zp = torch.tensor([0.1]), torch.tensor([3], dtype=torch.int32)
    sc, zc = torch.rand(16, generator=g) + 0.05, torch.randint(-5, 6, (16,), dtype=torch.int32, generator=g)
    packed, rows = int8_pack_weight(torch.randint(-127, 128, (8, 16), dtype=torch.int8, generator=g))
    p4 = ops.int4_pack(torch.randint(0, 16, (8, 64), dtype=torch.uint8, generator=g))
    s4, z4 = torch.rand(8, 2, generator=g) + 0.1, torch.randint(0, 16, (8, 2), dtype=torch.uint8, generator=g)
    w = torch.randn(6, 8, generator=g)
    # A direct INT8 convolution (3 input channels padded to 4, 3x3 taps) and a transposed one by
    # phases (stride 2, kernel 4: four phases of 2x2 taps), packed as the modules pack them.
    wc = torch.zeros(8, 3, 3, 4, dtype=torch.int8)
    wc[..., :3] = torch.randint(-127, 128, (8, 3, 3, 3), dtype=torch.int8, generator=g)
    pc, rc = int8_pack_weight(wc.reshape(8, -1))
    phases = [int8_pack_weight(torch.randint(-127, 128, (16, 2 * 2 * 4), dtype=torch.int8, generator=g))
              for _ in range(4)]
    info = [v for ry in range(2) for rx in range(2) for v in (ry, rx, 2, 2)]
    q8 = torch.randint(-128, 128, (3, 16), dtype=torch.int8, generator=g)
    bias8, bias16 = torch.randn(8, generator=g), torch.randn(16, generator=g)
    return {
        "quantize_affine": ((x, s, zp), lambda a, b, c: ops.quantize_affine(a, b, c, None, -128, 127, torch.int8)),
        "quantize_affine-axis": ((x, sc, zc + 128), lambda a, b, c: ops.quantize_affine(a, b, c, 1, 0, 255,
                                                                                          torch.uint8)),
        "dequantize_affine": ((q8, s, zp), lambda a, b, c: ops.dequantize_affine(a, b, c, None, torch.float32)),
        "dequantize_affine-axis": ((q8, sc, zc), lambda a, b, c: ops.dequantize_affine(a, b, c, 1, torch.float32)),
        "observe_minmax": ((x,), lambda a: ops.observe_minmax(a, None)),
        "observe_minmax-axis": ((x,), lambda a: ops.observe_minmax(a, 1)),
        "int4_pack": ((torch.randint(0, 16, (8, 64), dtype=torch.uint8, generator=g),), ops.int4_pack),
        "int4_dequantize": ((p4, s4, z4), lambda a, b, c: ops.int4_dequantize(a, b, c, 32)),
        "int4_linear": ((torch.randn(2, 64, generator=g), p4, s4, z4, bias8),
                        lambda a, b, c, d, e: ops.int4_linear(a, b, c, d, e, 32)),
        "int4_linear_dynamic": ((torch.randn(2, 64, generator=g), p4, s4, z4),
                                lambda a, b, c, d: ops.int4_linear_dynamic(a, b, c, d, None, 32)),
        "int8_linear_static": ((x, packed, rows, torch.rand(8, generator=g) + 0.1, bias8),
                               lambda a, b, c, d, e: ops.int8_linear_static(a, 0.05, 3, b, c, d, e, 8, 16)),
        "int8_conv2d": ((torch.randn(2, 3, 6, 5, generator=g), pc, rc, torch.rand(8, generator=g) + 0.1, bias8),
                        lambda a, b, c, d, e: ops.int8_conv2d(a, b, c, d, e, 8, [3, 3], [1, 1], [1, 1], [1, 1], 0.0,
                                                              0)),
        "int8_conv_transpose2d": (
            (torch.randn(1, 4, 3, 3, generator=g), [p for p, _ in phases], [r for _, r in phases],
             torch.rand(16, generator=g) + 0.1, bias16),
            lambda a, b, c, d, e: ops.int8_conv_transpose2d(a, b, c, d, e, 16, info, [2, 2], [1, 1], [6, 6], 0.0, 0)),
        "kth_smallest_score": (([w, torch.randn(7, generator=g)],), lambda a: ops.kth_smallest_score(a, None, 5)),
        "kth_smallest_score-grads": (([w], [torch.randn(6, 8, generator=g)]),
                                     lambda a, b: ops.kth_smallest_score(a, b, 11)),
        "channel_norms": ((w,), lambda a: ops.channel_norms(a, 0, 2, None)),
        "channel_norms-grad": ((w, torch.randn(6, 8, generator=g)), lambda a, b: ops.channel_norms(a, 1, 1, b)),
        "magnitude_scores": ((w,), lambda a: ops.magnitude_scores(a, None)),
        "magnitude_scores-grad": ((w, torch.randn(6, 8, generator=g)), ops.magnitude_scores),
    }


CALLS = _calls()


def _as_list(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


@pytest.mark.parametrize("name", list(CALLS), ids=list(CALLS))
def test_compiled_fullgraph_equals_eager(name):
    args, call = CALLS[name]
    op = name.split("-")[0]
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return torch._dynamo.lookup_backend("inductor")(gm, example_inputs)

    torch._dynamo.reset()  # every op compiles afresh: no recompilation limit across the parametrization
    eager = _as_list(call(*args))
    compiled = _as_list(torch.compile(call, backend=backend, fullgraph=True)(*args))
    assert len(graphs) == 1
    traced = [str(n.target) for n in graphs[0].graph.nodes if n.op == "call_function"]
    assert any(t.startswith(f"edgegen.{op}") for t in traced), traced
    assert len(compiled) == len(eager)
    for got, want in zip(compiled, eager):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert torch.equal(got, want)
