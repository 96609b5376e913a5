"""A seeded fuzzer for every torch.ops.edgegen op: each case is a valid call with one mutation
(a layout change, a dtype, a rank or shape change, an empty tensor, NaN/inf, a meta tensor, an
extreme integer or float, a bad string), run in a worker process.

A case passes when the op either raises a clean exception that names one of its arguments, or
returns a result; layout-only mutations must return what the contiguous call returns, and every
result must be the same under two different ``MALLOC_PERTURB_`` fillings of fresh memory (a
difference means uninitialised output). A worker that dies is rerun case by case so the crashing
case is named.

Run as a script: ``python tests/fuzz/fuzz_ops.py SEED COUNT OUT`` (a worker), or through
``tests/fuzz/test_fuzz.py`` (every case, in ``make test``).
"""

from __future__ import annotations

import hashlib
import pickle
import random
import sys

import torch

LAYOUT = ("noncontiguous", "offset", "expanded")


def _base_calls():
    """op name -> (positional args of a valid call). Built with a fixed seed."""
    import edgegen  # noqa: F401
    from edgegen.ops.quant import int8_pack_weight

    ops = torch.ops.edgegen
    torch.manual_seed(0)  # nothing below may depend on the process's own random state
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 16, generator=g)
    s, zp = torch.tensor([0.1]), torch.tensor([0], dtype=torch.int32)
    sc, zc = torch.rand(16, generator=g) + 0.05, torch.zeros(16, dtype=torch.int32)
    packed, rows = int8_pack_weight(torch.randint(-127, 128, (8, 16), dtype=torch.int8, generator=g))
    p4 = ops.int4_pack(torch.randint(0, 16, (8, 64), dtype=torch.uint8, generator=g))
    s4, z4 = torch.rand(8, 1, generator=g) + 0.1, torch.full((8, 1), 8, dtype=torch.uint8)
    q = torch.randn(1, 2, 8, 16, generator=g)
    out, lse = ops.sliding_window_attention(q, q, q, 4, 1, True, None, 0, None, 0)
    student, teacher = torch.randn(4, 10, generator=g), torch.randn(4, 10, generator=g)
    target = torch.tensor([1, 2, 3, 4])
    h, wt = torch.randn(4, 8, generator=g), torch.randn(10, 8, generator=g)
    w = torch.randn(6, 8, generator=g)
    # A direct INT8 convolution (3 input channels padded to 4, 3x3 taps) and a transposed one by
    # phases (stride 2, kernel 4: four phases of 2x2 taps), packed as the modules pack them.
    wc = torch.zeros(8, 3, 3, 4, dtype=torch.int8)
    wc[..., :3] = torch.randint(-127, 128, (8, 3, 3, 3), dtype=torch.int8, generator=g)
    pc, rc = int8_pack_weight(wc.reshape(8, -1))
    xc = torch.randn(1, 3, 6, 5, generator=g)
    phases = [int8_pack_weight(torch.randint(-127, 128, (16, 2 * 2 * 4), dtype=torch.int8, generator=g))
              for _ in range(4)]
    info = [v for ry in range(2) for rx in range(2) for v in (ry, rx, 2, 2)]
    xt = torch.randn(1, 4, 3, 3, generator=g)
    return {
        "magnitude_prune_": [[w.clone(), w.flip(0).clone()], None, 5,
                             [torch.empty(6, 8, dtype=torch.bool), torch.empty(6, 8, dtype=torch.bool)]],
        "int8_pack_weight": [torch.randint(-127, 128, (8, 16), dtype=torch.int8, generator=g)],
        "int4_pack": [torch.randint(0, 16, (8, 64), dtype=torch.uint8, generator=g)],
        "mse_clip_range": [x, -3.0, 3.0, -128, 127, 20],
        "observe_minmax_axis": [x[0], 0],
        "fake_quantize_learnable_backward_axis": [x, x.clone(), sc, zc, -1, -128, 127, 1.0],
        "int8_conv2d": [xc, pc, rc, torch.rand(8, generator=g) + 0.1, torch.randn(8, generator=g), 8, [3, 3], [1, 1],
                        [1, 1], [1, 1], 0.0, 0],
        "int8_conv_transpose2d": [xt, [p for p, _ in phases], [r for _, r in phases], torch.rand(16, generator=g) + 0.1,
                                  torch.randn(16, generator=g), 16, info, [2, 2], [1, 1], [6, 6], 0.0, 0],
        "quantize_affine": [x, s, zp, None, -128, 127, torch.int8],
        "quantize_affine_axis": [x, sc, zc, 1, -128, 127, torch.int8],
        "dequantize_affine": [x.round().clamp(-128, 127).to(torch.int8), s, zp, None, torch.float32],
        "fake_quantize_affine": [x, s, zp, None, -128, 127],
        "fake_quantize_learnable_backward": [x, x.clone(), s, zp, None, -128, 127, 1.0],
        "observe_minmax": [x, None],
        "observe_histogram": [x, 32, -3.0, 3.0],
        "int8_gemm": [torch.randint(0, 255, (3, 16), dtype=torch.uint8, generator=g), 3, packed, rows, 8, 16],
        "int8_linear_dynamic": [x, packed, rows, torch.rand(8, generator=g) + 0.1, torch.randn(8, generator=g), 8,
                                16],
        "int8_linear_static": [x, 0.05, 3, packed, rows, torch.rand(8, generator=g) + 0.1, None, 8, 16],
        "int4_linear": [torch.randn(2, 64, generator=g), p4, s4, z4, None, 64],
        "int4_linear_dynamic": [torch.randn(2, 64, generator=g), p4, s4, z4, None, 64],
        "int4_dequantize": [p4, s4, z4, 64],
        "magnitude_scores": [w, torch.randn(6, 8, generator=g)],
        "kth_smallest_score": [[w, w.flip(0)], None, 5],
        "magnitude_mask": [[w, w.flip(0)], None, 5],
        "nm_mask": [w, 2, 4, 1],
        "channel_norms": [w, 0, 2, None],
        "sliding_window_attention": [q, q.flip(2), q.flip(3), 4, 1, True, None, 0, None, 0],
        "sliding_window_attention_backward": [torch.randn(out.shape, generator=g), q, q, q, out, lse, 4, 1, True, None,
                                              0, None, 0],
        "kd_loss": [student, [teacher], [1.0], target, 2.0, 0.5, -100, "mean", True],
        "fused_linear_kd_loss": [h, wt, None, h.flip(0), wt.flip(0), None, target, 2.0, 0.5, -100, "mean", 0, None,
                                 True],
    }


def _op(name):
    return getattr(torch.ops.edgegen, name.replace("_axis", ""))


def _arg_names(name) -> list[str]:
    return [a.name for a in _op(name).default._schema.arguments]


def _mutations(value):
    if isinstance(value, torch.Tensor):
        out = list(LAYOUT) + ["float64", "float16", "int32", "bool", "complex", "rank+", "rank-", "shape",
                              "empty", "nan", "inf", "meta"]
        return out
    if isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
        return ["list-empty", "list-item-dtype", "list-item-shape", "list-item-noncontiguous"]
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return ["int-neg", "int-zero", "int-2^31", "int-max", "int-min"]
    if isinstance(value, float):
        return ["float-nan", "float-inf", "float-neginf", "float-zero", "float-denorm", "float-huge"]
    if isinstance(value, str):
        return ["str-bad"]
    if value is None:
        return ["none-tensor"]
    return []


def _mutate(value, m, rng: random.Random):
    t = value
    if m == "noncontiguous":
        if t.dim() < 2:
            return torch.stack([t, t], -1)[..., 0]
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if m == "offset":
        big = torch.cat([t.flatten()[:1], t.flatten()]) if t.numel() else t.flatten()
        return big[1:].view(t.shape) if t.numel() else t
    if m == "expanded":
        if t.dim() and t.shape[0] > 1:
            return t[:1].expand(t.shape)
        return t.expand(t.shape)
    if m == "float64":
        return t.double()
    if m == "float16":
        return t.half()
    if m == "int32":
        return t.to(torch.int32)
    if m == "bool":
        return t != 0
    if m == "complex":
        return t.to(torch.complex64) if t.is_floating_point() else t.to(torch.float32).to(torch.complex64)
    if m == "rank+":
        return t.unsqueeze(0)
    if m == "rank-":
        return t.flatten() if t.dim() > 1 else t.sum()
    if m == "shape":
        return t[..., :-1] if t.dim() and t.shape[-1] > 1 else torch.cat([t, t], -1) if t.dim() else t
    if m == "empty":
        return t[:0] if t.dim() else t
    if m == "nan" and t.is_floating_point() and t.numel():
        t = t.clone()
        t.view(-1)[rng.randrange(t.numel())] = float("nan")
        return t
    if m == "inf" and t.is_floating_point() and t.numel():
        t = t.clone()
        t.view(-1)[rng.randrange(t.numel())] = float("inf")
        return t
    if m == "meta":
        return t.to("meta")
    if m == "list-empty":
        return []
    if m == "list-item-dtype":
        return [value[0].double()] + value[1:]
    if m == "list-item-shape":
        return [value[0][..., :-1]] + value[1:]
    if m == "list-item-noncontiguous":
        return [_mutate(value[0], "noncontiguous", rng)] + value[1:]
    if m.startswith("int-"):
        return {"int-neg": -1, "int-zero": 0, "int-2^31": 2**31, "int-max": 2**63 - 1, "int-min": -2**63}[m]
    if m.startswith("float-"):
        return {"float-nan": float("nan"), "float-inf": float("inf"), "float-neginf": -float("inf"),
                "float-zero": 0.0, "float-denorm": 1e-45, "float-huge": 1e308}[m]
    if m == "str-bad":
        return "bogus"
    if m == "none-tensor":
        return torch.ones(3)
    return value


def cases(seed: int, count: int) -> list[tuple[str, int, str]]:
    """``count`` (op, argument index, mutation) triples, deterministic for a seed."""
    base = _base_calls()
    every = [(name, i, m) for name, args in sorted(base.items()) for i, a in enumerate(args) for m in _mutations(a)]
    rng = random.Random(seed)
    if count >= len(every):
        return every
    return rng.sample(every, count)


def _digest(result) -> str:
    h = hashlib.sha256()
    for t in (result if isinstance(result, (tuple, list)) else [result]):
        if isinstance(t, torch.Tensor):
            if t.device.type == "meta":
                h.update(f"meta{tuple(t.shape)}{t.dtype}".encode())
            else:
                h.update(str((tuple(t.shape), t.dtype)).encode())
                flat = t.detach().cpu().reshape(-1).contiguous()
                h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() and t.dtype != torch.bool
                         else flat.numpy().tobytes())
    return h.hexdigest()


def run_case(case) -> dict:
    name, idx, mut = case
    base = _base_calls()
    args = list(base[name])
    rng = random.Random(int(hashlib.sha256(repr(case).encode()).hexdigest()[:8], 16))  # not hash(): salted
    try:
        args[idx] = _mutate(args[idx], mut, rng)
    except Exception as exc:  # noqa: BLE001 - a mutation that does not apply is not a case
        return {"status": "skip", "why": f"mutation: {exc}"}
    try:
        result = _op(name)(*args)
    except Exception as exc:  # noqa: BLE001 - classified below
        return {"status": "error", "type": type(exc).__name__, "message": str(exc).splitlines()[0][:500]}
    out = {"status": "ok", "digest": _digest(result)}
    if mut in LAYOUT:  # the same values in a plain contiguous tensor must give the same result
        plain = list(args)
        plain[idx] = args[idx].contiguous()
        out["same_as_contiguous"] = _close(result, _op(name)(*plain))
    return out


def _close(a, b) -> bool:
    a = a if isinstance(a, (tuple, list)) else [a]
    b = b if isinstance(b, (tuple, list)) else [b]
    for x, y in zip(a, b):
        if isinstance(x, torch.Tensor):
            if x.shape != y.shape or x.dtype != y.dtype:
                return False
            if x.is_floating_point():
                if not torch.allclose(x.double(), y.double(), rtol=1e-5, atol=1e-6, equal_nan=True):
                    return False
            elif not torch.equal(x, y):
                return False
    return True


def main(argv):
    seed, count, path = int(argv[1]), int(argv[2]), argv[3]
    torch.set_num_threads(1)
    todo = cases(seed, count)
    if len(argv) > 4:  # a subset by index (the crash hunt)
        todo = [todo[int(i)] for i in argv[4].split(",")]
    results = {}
    for c in todo:
        results[c] = run_case(c)
        with open(path, "wb") as f:  # written as it goes: a crash keeps the cases before it
            pickle.dump(results, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
