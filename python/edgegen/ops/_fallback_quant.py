"""The quantization and single-tensor pruning ops written in PyTorch, registered as the ops'
``CompositeExplicitAutograd`` kernels: they serve every device the C++ extension has no kernel
for (CUDA, MPS, ...), so modules and wrappers call ``torch.ops.edgegen.*`` and nothing else.

The INT8 ops take the CPU kernel's packed weight layout (panels of 16 rows, K in groups of 4) and
unpack it here, so one module state serves every device. Integer arithmetic stays exact: the
GEMMs through the reference twins (``torch._int_mm`` on CUDA), the convolutions on the integer
codes in float64 (every partial sum is an integer far below 2^53).
"""

from __future__ import annotations

import collections
import math
import weakref

import torch
import torch.nn.functional as F
from torch import Tensor

from edgegen.ops import _reference as ref

_PANEL = 16
_FLOAT32_MAX = float(torch.finfo(torch.float32).max)
_MAX_K = 65000  # the CPU kernels' limit on the reduction length: K * 255 * 128 < 2^31 (exact int32 sums)


# ------------------------------------------------------------------------------- shared checks

def _check_same_device(first: Tensor, **named: Tensor | None) -> None:
    for name, t in named.items():
        if t is not None and t.device != first.device:
            raise RuntimeError(f"{name}: expected a tensor on {first.device} (the input's device), got one on "
                               f"{t.device}")


def _check_float(t: Tensor, name: str) -> None:
    if not t.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {t.dtype}")


_KERNEL_FLOATS = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def _kernel_float(dtype: torch.dtype, name: str) -> None:
    """The element types the CPU quantization kernels read and write."""
    if dtype not in _KERNEL_FLOATS:
        raise TypeError(f"{name}: expected a float32, bfloat16, float16 or float64 tensor, got {dtype}")


def _qparams(x: Tensor, scale: Tensor, zero_point: Tensor, axis: int | None) -> None:
    """The per-tensor or per-channel (scale, zero_point) checks of the CPU kernels."""
    if axis is not None and not -x.dim() <= axis < x.dim():
        raise IndexError(f"axis: expected a dimension in [{-x.dim()}, {x.dim()}), got {axis}")
    c = 1 if axis is None else x.shape[axis]
    what = " values (one per channel along axis)" if axis is not None else " value (per-tensor)"
    if scale.dim() > 1 or scale.numel() != c:
        raise ValueError(f"scale: expected {c}{what}, got shape {list(scale.shape)}")
    if zero_point.dim() > 1 or zero_point.numel() != c:
        raise ValueError(f"zero_point: expected {c} values, got shape {list(zero_point.shape)}")
    _check_float(scale, "scale")
    if zero_point.is_floating_point() or zero_point.dtype == torch.bool or zero_point.is_complex():
        raise TypeError(f"zero_point: expected an integer tensor, got {zero_point.dtype}")
    s = scale.detach().to(torch.float32)
    if c and not bool(((s > 0) & torch.isfinite(s)).all()):
        raise ValueError(f"scale: expected finite values > 0, got {scale.detach().cpu().tolist()}")
    z = zero_point.detach().to(torch.int64)
    if c and not bool(((z >= -(1 << 31)) & (z < (1 << 31))).all()):
        raise ValueError("zero_point: a value is out of the int32 range")


def _like(t: Tensor | None, of: Tensor, name: str, of_name: str) -> None:
    """t (when given) has the dtype (TypeError) and shape (ValueError) of `of`."""
    if t is None:
        return
    if t.dtype != of.dtype:
        raise TypeError(f"{name}: expected dtype {of.dtype} (that of {of_name}), got {t.dtype}")
    if t.shape != of.shape:
        raise ValueError(f"{name}: expected shape {list(of.shape)} (that of {of_name}), got {list(t.shape)}")


def _range(qmin: int, qmax: int, lo: int, hi: int, what: str) -> None:
    if not (lo <= qmin < qmax <= hi):
        raise ValueError(f"quant_min/quant_max: expected {lo} <= quant_min < quant_max <= {hi} for {what}, "
                         f"got [{qmin}, {qmax}]")


def _zero_points_in(zero_point: Tensor, qmin: int, qmax: int) -> None:
    z = zero_point.detach().to(torch.int64).reshape(-1)
    bad = ((z < qmin) | (z > qmax)).nonzero()
    if bad.numel():
        i = int(bad[0, 0])
        raise ValueError(f"zero_point: value {int(z[i])} at index {i} is outside [quant_min, quant_max] = "
                         f"[{qmin}, {qmax}]")


_PRUNE_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def _prune_dtype(t: Tensor, name: str) -> None:
    if t.dtype not in _PRUNE_DTYPES:
        raise TypeError(f"{name}: expected a float32, bfloat16, float16 or float64 tensor, got {t.dtype}")


def _no_nan_input(x: Tensor, what: str) -> None:
    if x.numel() and bool(torch.isnan(x).any()):
        raise ValueError(f"input: {int(torch.isnan(x).sum())} values are NaN; {what}")


def _no_nan(x: Tensor) -> None:
    if x.numel() and bool(torch.isnan(x).any()):
        raise ValueError(f"input: {int(torch.isnan(x).sum())} values are NaN; observers need NaN-free calibration "
                         "data")


# ------------------------------------------------------------------------------- pruning

def magnitude_scores_fallback(weight, grad):
    _check_same_device(weight, grad=grad)
    _prune_dtype(weight, "weight")
    _like(grad, weight, "grad", "weight")
    return ref.magnitude_scores_reference(weight, grad)


def nm_mask_fallback(weight, n, m, dim):
    _prune_dtype(weight, "weight")
    if not -weight.dim() <= dim < max(weight.dim(), 1):
        raise IndexError(f"dim: expected a dimension in [{-weight.dim()}, {weight.dim()}), got {dim}")
    mask = ref.nm_mask_reference(weight, n, m, dim)
    if weight.numel() and bool(torch.isnan(weight).any()):
        raise ValueError(f"weight: {int(torch.isnan(weight).sum())} entries are NaN; N:M pruning needs non-NaN "
                         "weights")
    return mask


def channel_norms_fallback(weight, dim, p, grad):
    _check_same_device(weight, grad=grad)
    _prune_dtype(weight, "weight")
    if not -weight.dim() <= dim < max(weight.dim(), 1):
        raise IndexError(f"dim: expected a dimension in [{-weight.dim()}, {weight.dim()}), got {dim}")
    _like(grad, weight, "grad", "weight")
    if weight.numel() == 0:
        if p not in (1, 2):
            raise ValueError(f"p: expected 1 (L1) or 2 (L2), got {p}")
        return torch.zeros(weight.shape[dim], dtype=torch.float32, device=weight.device)
    return ref.channel_norms_reference(weight, dim, p, grad)


# ------------------------------------------------------------------------------- affine quantization

def quantize_affine_fallback(input, scale, zero_point, axis, quant_min, quant_max, dtype):
    _check_same_device(input, scale=scale, zero_point=zero_point)
    _kernel_float(input.dtype, "input")
    if dtype not in (torch.int8, torch.uint8):
        raise TypeError(f"dtype: expected torch.int8 or torch.uint8, got {dtype}")
    unsigned = dtype == torch.uint8
    _range(quant_min, quant_max, 0 if unsigned else -128, 255 if unsigned else 127, "uint8" if unsigned else "int8")
    _qparams(input, scale, zero_point, axis)
    _zero_points_in(zero_point, quant_min, quant_max)
    _no_nan_input(input, "NaN has no integer code")
    return ref.quantize_affine_reference(input, scale, zero_point, axis, quant_min, quant_max, dtype)


def dequantize_affine_fallback(input, scale, zero_point, axis, out_dtype):
    _check_same_device(input, scale=scale, zero_point=zero_point)
    if input.dtype not in (torch.int8, torch.uint8):
        raise TypeError(f"input: expected an int8 or uint8 tensor of quantized values, got {input.dtype}")
    _kernel_float(out_dtype, "out_dtype")
    _qparams(input, scale, zero_point, axis)
    return ref.dequantize_affine_reference(input, scale, zero_point, axis, out_dtype)


def fake_quantize_affine_fallback(input, scale, zero_point, axis, quant_min, quant_max):
    _check_same_device(input, scale=scale, zero_point=zero_point)
    _kernel_float(input.dtype, "input")
    _range(quant_min, quant_max, -(1 << 31), (1 << 31) - 1, "fake quantization")
    _qparams(input, scale, zero_point, axis)
    _zero_points_in(zero_point, quant_min, quant_max)
    return ref.fake_quantize_affine_reference(input, scale, zero_point, axis, quant_min, quant_max)


def fake_quantize_learnable_backward_fallback(grad, input, scale, zero_point, axis, quant_min, quant_max, grad_factor):
    _check_same_device(input, grad=grad, scale=scale, zero_point=zero_point)
    _kernel_float(input.dtype, "input")
    _like(grad, input, "grad", "input")
    if not (math.isfinite(grad_factor) and grad_factor > 0):
        raise ValueError(f"grad_factor: expected a finite value > 0, got {grad_factor}")
    _range(quant_min, quant_max, -(1 << 31), (1 << 31) - 1, "fake quantization")
    _qparams(input, scale, zero_point, axis)
    _zero_points_in(zero_point, quant_min, quant_max)
    _no_nan_input(input, "the scale and zero-point gradients are undefined at NaN")
    dx, ds, dz = ref.fake_quantize_learnable_backward_reference(grad, input, scale, zero_point, axis, quant_min,
                                                                quant_max, grad_factor)
    return dx.contiguous(), ds, dz


# ------------------------------------------------------------------------------- observers

def observe_minmax_fallback(input, axis):
    _kernel_float(input.dtype, "input")
    if input.numel() == 0:
        raise ValueError("input: expected a non-empty tensor")
    x = input.detach()
    if axis is not None and not -x.dim() <= axis < x.dim():
        raise IndexError(f"axis: expected a dimension in [{-x.dim()}, {x.dim()}), got {axis}")
    _no_nan(input)
    if axis is None:
        return x.min().float().reshape(1), x.max().float().reshape(1)
    dims = [d for d in range(x.dim()) if d != axis % x.dim()]
    if not dims:  # a 1-D tensor per channel: every value is its own channel
        return x.float().clone(), x.float().clone()
    return x.amin(dim=dims).float(), x.amax(dim=dims).float()


def _check_bounds(lo: float, hi: float) -> None:
    """Calibration bounds: finite as float32 (the kernels' type; 1e39 would become infinity)."""
    if not (abs(lo) <= _FLOAT32_MAX and abs(hi) <= _FLOAT32_MAX and lo <= hi):
        raise ValueError(f"lo/hi: expected finite lo <= hi within float32's range, got [{lo}, {hi}]")


def observe_histogram_fallback(input, bins, lo, hi):
    _kernel_float(input.dtype, "input")
    if not 1 <= bins <= (1 << 24):
        raise ValueError(f"bins: expected a value in [1, 2^24], got {bins}")
    _check_bounds(lo, hi)
    _no_nan(input)
    # The CPU kernel's binning: float32 bounds, each value as it is (exact in float64, float64
    # values unrounded), positions in float64, outside values (and infinities) in the end bins.
    lo32, hi32 = float(torch.tensor(lo, dtype=torch.float32)), float(torch.tensor(hi, dtype=torch.float32))
    width = (hi32 - lo32) / bins
    v = input.detach().reshape(-1).to(torch.float64)
    pos = torch.floor((v - lo32) / width) if width > 0 else torch.zeros_like(v)
    idx = pos.clamp(0, bins - 1).to(torch.int64)
    return torch.bincount(idx, minlength=bins)


def mse_clip_range_fallback(input, lo, hi, quant_min, quant_max, steps):
    # A calibration statistic (two numbers): computed by the CPU kernel on a host copy.
    return torch.ops.edgegen.mse_clip_range(input.detach().cpu(), lo, hi, quant_min, quant_max, steps)


# ------------------------------------------------------------------------------- INT8

def int8_pack_weight_fallback(weight):
    if weight.dtype != torch.int8:
        raise TypeError(f"weight: expected an int8 tensor, got {weight.dtype}")
    if weight.dim() != 2 or weight.shape[0] == 0 or weight.shape[1] == 0:
        raise ValueError(f"weight: expected a non-empty [out_features, in_features] matrix, got shape "
                         f"{list(weight.shape)}")
    n, k = weight.shape
    if k > _MAX_K:
        raise ValueError(f"weight: in_features {k} exceeds {_MAX_K} (int32 accumulation would no longer be exact)")
    panels, kp = -(-n // _PANEL), -(-k // 4) * 4
    w = F.pad(weight, (0, kp - k, 0, panels * _PANEL - n))
    packed = w.reshape(panels, _PANEL, kp // 4, 4).permute(0, 2, 1, 3).contiguous()
    return packed, weight.to(torch.int32).sum(dim=1, dtype=torch.int32)


def _check_packed(packed: Tensor, row_sum: Tensor, n: int, k: int, pname: str = "packed_weight",
                  rname: str = "weight_row_sum") -> None:
    """The layout of a packed weight and its row sums (int8_pack_weight's) for n x k."""
    if not (0 < n and 0 < k <= _MAX_K):
        raise ValueError(f"n, k: expected 0 < n and 0 < k <= {_MAX_K}, got {n}, {k}")
    panels, kp = -(-n // _PANEL), -(-k // 4) * 4
    if packed.dtype != torch.int8 or not packed.is_contiguous():
        raise TypeError(f"{pname}: expected the contiguous int8 tensor from int8_pack_weight")
    if packed.numel() != panels * kp * _PANEL:
        raise ValueError(f"{pname}: has {packed.numel()} bytes, expected {panels * kp * _PANEL} for n={n}, k={k}")
    if row_sum.dtype != torch.int32 or row_sum.dim() != 1 or row_sum.shape[0] != n or not row_sum.is_contiguous():
        raise ValueError(f"{rname}: expected a contiguous int32 tensor of shape [{n}]")


def _unpacked(packed: Tensor, row_sum: Tensor, n: int, k: int, cols: int | None = None,
              pname: str = "packed_weight", rname: str = "weight_row_sum", padding: bool = True) -> Tensor:
    """The [n, cols] int8 matrix a packed weight holds (cols defaults to k), its layout checked
    and (``padding``) its padding rows too: a data-dependent check, left out where the forward
    pass has made it already (a backward formula, which may be traced)."""
    cols = k if cols is None else cols
    _check_packed(packed, row_sum, n, k, pname, rname)
    panels, kp = -(-n // _PANEL), -(-k // 4) * 4
    w = packed.reshape(panels, kp // 4, _PANEL, 4).permute(0, 2, 1, 3).reshape(panels * _PANEL, kp)
    bad = (w[n:] != 0).any(dim=1).nonzero() if padding else None  # the last panel's rows past n hold zeros
    if bad is not None and bad.numel():
        raise ValueError(f"{pname}: was packed for more output features than n={n} (a non-zero weight in row "
                         f"{n + int(bad[0, 0])})")
    return w[:n, :cols]


def _unused_zero(w_full: Tensor, used: Tensor, what: str) -> None:
    """Columns of the packed weight the call does not use must be zero (see the CPU glue)."""
    if bool((~used).any()):
        bad = (w_full[:, ~used] != 0).any(dim=0).nonzero()
        if bad.numel():
            col = int((~used).nonzero()[int(bad[0, 0]), 0])
            raise ValueError(f"packed_weight: was packed for more {what} than this call supplies (a non-zero weight "
                             f"in column {col})")


def _weight_scale(ws: Tensor, n: int) -> None:
    if ws.dtype != torch.float32 or ws.dim() != 1 or ws.shape[0] != n:
        raise ValueError(f"weight_scale: expected a float32 tensor of shape [{n}], got {ws.dtype} {list(ws.shape)}")


def _bias(bias: Tensor | None, n: int) -> None:
    if bias is None:
        return
    _check_float(bias, "bias")
    if bias.dim() != 1 or bias.shape[0] != n:
        raise ValueError(f"bias: expected shape [{n}], got {list(bias.shape)}")


def _not_finite(who: str = "INT8 layers quantize") -> ValueError:
    return ValueError(f"input: contains NaN or infinite values; {who} their input and need finite values")


def _finite_input(x: Tensor, who: str = "INT8 layers quantize") -> None:
    # Checked in float32, as the CPU kernels do (a float64 beyond float32's range is infinite there).
    if x.numel() and not bool(torch.isfinite(x.to(torch.float32)).all()):
        raise _not_finite(who)


def _static_act(a_scale: float, a_zero_point: int) -> None:
    if math.isnan(a_scale):
        raise ValueError("a_scale: expected a finite value (> 0 static, <= 0 dynamic), got nan")
    if a_scale > 0:
        if not math.isfinite(a_scale):
            raise ValueError(f"a_scale: expected a finite value > 0, got {a_scale}")
        if not 0 <= a_zero_point <= 127:
            raise ValueError(f"a_zero_point: expected a value in [0, 127] (7-bit activations), got {a_zero_point}")


def int8_gemm_fallback(input, a_zero_point, packed_weight, weight_row_sum, n, k):
    _check_same_device(input, packed_weight=packed_weight, weight_row_sum=weight_row_sum)
    if input.dtype != torch.uint8:
        raise TypeError(f"input: expected a uint8 tensor, got {input.dtype}")
    if input.dim() != 2 or input.shape[1] != k:
        raise ValueError(f"input: expected shape [M, {k}], got {list(input.shape)}")
    if not 0 <= a_zero_point <= 255:
        raise ValueError(f"a_zero_point: expected a value in [0, 255], got {a_zero_point}")
    full = _unpacked(packed_weight, weight_row_sum, n, k, -(-k // 4) * 4)
    _unused_zero(full, torch.arange(full.shape[1], device=full.device) < k, "input features")
    return ref.int8_gemm_reference(input, a_zero_point, full[:, :k])


class _LinearWeight:
    """A packed Linear weight unpacked and checked once: w, the [n, k] int8 matrix (a view of mm,
    its copy zero-padded to multiples of 8 for torch._int_mm, once that is made); state, what the
    packed tensor was when unpacked (address, version counter, n, k)."""

    def __init__(self, packed: Tensor, w: Tensor, state: tuple):
        self.packed = weakref.ref(packed)
        self.w = w
        self.mm: Tensor | None = None
        self.state = state
        self.finalizer: weakref.finalize | None = None

    def int_mm(self, codes: Tensor) -> Tensor:
        """codes [m, k] int8 @ w^T, int32, through torch._int_mm (its shape rules: more than 16
        rows, K and N multiples of 8, met by zero padding): exact."""
        n, k = self.w.shape
        if self.mm is None:
            self.mm = F.pad(self.w, (0, -k % 8, 0, -n % 8)).contiguous()
            self.w = self.mm[:n, :k]  # one copy of the weight besides the packed one
        m = codes.shape[0]
        if m <= 16 or k % 8:
            codes = F.pad(codes, (0, -k % 8, 0, max(0, 17 - m)))
        return torch._int_mm(codes, self.mm.t())[:m, :n]


# Unpacked weights by packed tensor, least recently used last out: a model's layers on a GPU unpack
# and check their weights once, not at every call. An entry is keyed by the tensor's identity and
# holds what it was unpacked from (address, version counter, n, k): an in-place change the version
# counter sees (any PyTorch operation on the tensor) or a new address unpacks afresh and replaces
# the entry; the entry goes when its tensor does. Writes the counter does not see (through
# `.data`, DLPack or foreign kernels) are not noticed; inference tensors (no version counter),
# meta tensors and tensor subclasses are not cached.
_LINEAR_WEIGHTS: collections.OrderedDict[int, _LinearWeight] = collections.OrderedDict()
_LINEAR_WEIGHTS_MAX = 1024


def _forget(key: int, entry: _LinearWeight) -> None:
    if _LINEAR_WEIGHTS.get(key) is entry:
        del _LINEAR_WEIGHTS[key]


def _linear_weight(packed: Tensor, row_sum: Tensor, n: int, k: int) -> _LinearWeight:
    cacheable = type(packed) is torch.Tensor and packed.device.type != "meta" and not packed.is_inference()
    key = id(packed)
    state = (packed.data_ptr(), packed._version, n, k) if cacheable else None
    if cacheable:
        hit = _LINEAR_WEIGHTS.get(key)
        if hit is not None and hit.packed() is packed and hit.state == state:
            _check_packed(packed, row_sum, n, k)
            _LINEAR_WEIGHTS.move_to_end(key)
            return hit
    full = _unpacked(packed, row_sum, n, k, -(-k // 4) * 4)
    _unused_zero(full, torch.arange(full.shape[1], device=full.device) < k, "input features")
    entry = _LinearWeight(packed, full[:, :k], state)
    if cacheable:
        old = _LINEAR_WEIGHTS.pop(key, None)
        if old is not None and old.finalizer is not None:
            old.finalizer.detach()
        while len(_LINEAR_WEIGHTS) >= _LINEAR_WEIGHTS_MAX:
            _, evicted = _LINEAR_WEIGHTS.popitem(last=False)
            if evicted.finalizer is not None:
                evicted.finalizer.detach()
        _LINEAR_WEIGHTS[key] = entry
        entry.finalizer = weakref.finalize(packed, _forget, key, entry)
    return entry


def _use_int_mm(codes: Tensor) -> bool:
    """Integer GEMMs through torch._int_mm (the GPU's integer tensor cores) on CUDA; elsewhere
    through int64 matmul (the reference twins' way)."""
    return codes.is_cuda


def _int8_linear(input, a_scale, a_zero_point, packed_weight, weight_row_sum, weight_scale, bias, n, k):
    """The INT8 Linear with one host synchronisation (the input's range, which also answers
    whether it is finite) and the weight unpacked once (_linear_weight); the same arithmetic as
    the reference twins (int8_linear_static_reference / int8_linear_dynamic_reference), so the
    same results."""
    _check_same_device(input, packed_weight=packed_weight, weight_row_sum=weight_row_sum, weight_scale=weight_scale,
                       bias=bias)
    _check_float(input, "input")
    if input.dim() < 1 or input.shape[-1] != k:
        raise ValueError(f"input: expected [..., {k}], got {list(input.shape)}")
    weight = _linear_weight(packed_weight, weight_row_sum, n, k)
    _weight_scale(weight_scale, n)
    _bias(bias, n)
    x = input.detach().reshape(-1, k).to(torch.float32)
    lo, hi = torch.stack(torch.aminmax(x)).tolist() if x.numel() else (0.0, 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi)):  # NaN propagates into both
        raise _not_finite()
    if a_scale > 0:
        s, zp = torch.tensor(a_scale, dtype=torch.float32), a_zero_point
    else:
        s, zp = ref.u7_params(lo, hi)
    # (q - zp) of the 7-bit codes q = clamp(round(x / s) + zp, 0, 127): in [-127, 127], int8.
    d = (torch.round(x * (1.0 / s)) + zp).clamp_(0, 127).sub_(zp).to(torch.int8)
    if _use_int_mm(d):
        acc = weight.int_mm(d)
    else:
        acc = (d.to(torch.int64) @ weight.w.to(torch.int64).t()).to(torch.int32)
    out = acc.to(torch.float32) * (s * weight_scale.to(torch.float32))
    if bias is not None:
        out = out + bias.to(torch.float32)
    return out.reshape(*input.shape[:-1], n).to(input.dtype)


def int8_linear_dynamic_fallback(input, packed_weight, weight_row_sum, weight_scale, bias, n, k):
    return _int8_linear(input, 0.0, 0, packed_weight, weight_row_sum, weight_scale, bias, n, k)


def int8_linear_static_fallback(input, a_scale, a_zero_point, packed_weight, weight_row_sum, weight_scale, bias, n,
                                k):
    if not a_scale > 0:
        raise ValueError(f"a_scale: expected a finite value > 0 (static activations), got {a_scale}")
    _static_act(a_scale, a_zero_point)
    return _int8_linear(input, a_scale, a_zero_point, packed_weight, weight_row_sum, weight_scale, bias, n, k)


def _act_codes(x: Tensor, a_scale: float, a_zero_point: int) -> tuple[Tensor, float]:
    """(q - zero_point) of the 7-bit activations as float64, and the activation scale; dynamic
    (per tensor, as the CPU kernels compute it) when a_scale <= 0."""
    xf = x.detach().to(torch.float32)
    if a_scale > 0:
        s = torch.tensor(a_scale, dtype=torch.float32)
        q = (torch.round(xf * (1.0 / s)) + a_zero_point).clamp(0, 127)
        return (q - a_zero_point).to(torch.float64), a_scale
    q, s, zp = ref.quantize_activations_u7_reference(xf)
    return (q.to(torch.float64) - zp), s


def _conv_epilogue(acc: Tensor, a_scale: float, weight_scale: Tensor, bias: Tensor | None) -> Tensor:
    out = acc.to(torch.float32) * (torch.tensor(a_scale, dtype=torch.float32) * weight_scale)[None, :, None, None]
    if bias is not None:
        out = out + bias.to(torch.float32)[None, :, None, None]
    return out


def _pair(v, name: str, lo: int, hi: int = 1 << 24) -> None:
    if len(v) != 2 or not all(lo <= int(e) <= hi for e in v):
        raise ValueError(f"{name}: expected two values in [{lo}, {hi}], got {list(v)}")


def _conv_weight(packed: Tensor, row_sum: Tensor, cout: int, kernel, cin: int, pname: str = "packed_weight",
                 rname: str = "weight_row_sum") -> Tensor:
    """The [Cout, Cin, kh, kw] float64 integer weight codes of a packed direct-convolution weight."""
    kh, kw = kernel
    cp = -(-cin // 4) * 4
    if cout < 1:
        raise ValueError(f"out_channels: expected a value >= 1, got {cout}")
    full = _unpacked(packed, row_sum, cout, kh * kw * cp, None, pname, rname)
    _unused_zero(full, torch.arange(full.shape[1], device=full.device) % cp < cin, "input channels")
    return full.reshape(cout, kh, kw, cp)[..., :cin].permute(0, 3, 1, 2).to(torch.float64)


def int8_conv2d_fallback(input, packed_weight, weight_row_sum, weight_scale, bias, out_channels, kernel_size, stride,
                         padding, dilation, a_scale, a_zero_point):
    _check_same_device(input, packed_weight=packed_weight, weight_row_sum=weight_row_sum, weight_scale=weight_scale,
                       bias=bias)
    _check_float(input, "input")
    if input.dim() != 4:
        raise ValueError(f"input: expected [N, C, H, W], got {list(input.shape)}")
    if out_channels < 1:
        raise ValueError(f"out_channels: expected a value >= 1, got {out_channels}")
    _pair(kernel_size, "kernel_size", 1, 1024)  # the CPU kernel's bounds: its size products fit int64
    _pair(stride, "stride", 1, 1 << 16)
    _pair(padding, "padding", 0)
    _pair(dilation, "dilation", 1, 1 << 16)
    h, w_in = input.shape[2], input.shape[3]
    ho = (h + 2 * padding[0] - dilation[0] * (kernel_size[0] - 1) - 1) // stride[0] + 1
    wo = (w_in + 2 * padding[1] - dilation[1] * (kernel_size[1] - 1) - 1) // stride[1] + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"input: spatial size {h}x{w_in} is too small for the kernel {list(kernel_size)} with padding "
                         f"{list(padding)} and dilation {list(dilation)}")
    w = _conv_weight(packed_weight, weight_row_sum, out_channels, kernel_size, input.shape[1])
    _weight_scale(weight_scale, out_channels)
    _bias(bias, out_channels)
    _static_act(a_scale, a_zero_point)
    _finite_input(input)
    d, s = _act_codes(input, a_scale, a_zero_point)
    acc = F.conv2d(d, w, None, list(stride), list(padding), list(dilation))  # integers, exact in float64
    return _conv_epilogue(acc, s, weight_scale, bias).to(input.dtype)


def _check_phases(phases, stride, padding, in_size, output_size) -> None:
    """The phases are distinct residues in [0, stride) whose tap counts split one kernel by the
    stride, one per residue with taps, and output_size is a transposed-convolution size (the
    CPU kernel's checks)."""
    taps = [[0] * stride[0], [0] * stride[1]]
    seen = set()
    for i, (ry, rx, ty, tx) in enumerate(phases):
        if not (0 <= ry < stride[0] and 0 <= rx < stride[1]):
            raise ValueError(f"phase_info: phase {i} has residue ({ry}, {rx}), expected values in [0, stride) = "
                             f"[0, {stride[0]}) x [0, {stride[1]})")
        if not (1 <= ty <= 1024 and 1 <= tx <= 1024):
            raise ValueError(f"phase_info: phase {i} has taps ({ty}, {tx}), expected values in [1, 1024]")
        if (ry, rx) in seen:
            raise ValueError(f"phase_info: phase {i} repeats the residue ({ry}, {rx})")
        seen.add((ry, rx))
        for d, (r, t) in enumerate(((ry, ty), (rx, tx))):
            if taps[d][r] not in (0, t):
                raise ValueError(f"phase_info: phase {i} has {t} taps where an earlier phase with the same residue "
                                 f"has {taps[d][r]}")
            taps[d][r] = t
    kernel = [sum(taps[0]), sum(taps[1])]
    for d, what in ((0, "row"), (1, "column")):
        for r in range(stride[d]):
            if taps[d][r] != max(0, -(-(kernel[d] - r) // stride[d])):
                raise ValueError(f"phase_info: the {what} taps do not split one kernel of {kernel[d]} by stride "
                                 f"{stride[d]} (residue {r} has {taps[d][r]}); were the phases built for another "
                                 "stride?")
    want = min(stride[0], kernel[0]) * min(stride[1], kernel[1])
    if len(seen) != want:
        raise ValueError(f"phase_info: expected one phase per (row, column) residue that has taps, {want}, got "
                         f"{len(seen)}")
    for d in range(2):
        lo = (in_size[d] - 1) * stride[d] - 2 * padding[d] + kernel[d]
        if not lo <= output_size[d] < lo + stride[d]:
            raise ValueError(f"output_size: {output_size[d]} is not a transposed-convolution size for input "
                             f"{in_size[d]}, kernel {kernel[d]}, stride {stride[d]}, padding {padding[d]} (expected "
                             f"[{lo}, {lo + stride[d] - 1}])")


def int8_conv_transpose2d_fallback(input, packed_weights, weight_row_sums, weight_scale, bias, out_channels,
                                   phase_info, stride, padding, output_size, a_scale, a_zero_point):
    _check_same_device(input, weight_scale=weight_scale, bias=bias)
    _check_float(input, "input")
    if input.dim() != 4:
        raise ValueError(f"input: expected [N, C, H, W], got {list(input.shape)}")
    if not packed_weights or len(phase_info) != 4 * len(packed_weights) or len(weight_row_sums) != len(packed_weights):
        raise ValueError("phase_info: expected 4 values per phase and one packed weight and row sum per phase")
    _pair(stride, "stride", 1, 1 << 16)
    _pair(padding, "padding", 0)
    _pair(output_size, "output_size", 1)
    if out_channels < 1:
        raise ValueError(f"out_channels: expected a value >= 1, got {out_channels}")
    _weight_scale(weight_scale, out_channels)
    _bias(bias, out_channels)
    _static_act(a_scale, a_zero_point)
    _finite_input(input)
    b, c, h, w = input.shape
    (sy, sx), (py, px), (ho, wo) = stride, padding, output_size
    phases = [tuple(phase_info[4 * i:4 * i + 4]) for i in range(len(packed_weights))]
    _check_phases(phases, (sy, sx), (py, px), (h, w), (ho, wo))
    d, s = _act_codes(input, a_scale, a_zero_point)  # one quantization shared by every phase
    acc = d.new_zeros((b, out_channels, ho, wo))
    weights = [_conv_weight(packed, row_sum, out_channels, (ty, tx), c, f"packed_weights[{i}]",
                            f"weight_row_sums[{i}]")
               for i, ((_, _, ty, tx), packed, row_sum) in enumerate(zip(phases, packed_weights, weight_row_sums))]
    for (ry, rx, ty, tx), wt in zip(phases, weights):
        # Output rows o = q * sy + ry - py of this phase, q in [qy0, qy1]; the phase convolution
        # reads input rows q - ty + 1 .. q (zero outside the input).
        qy0, qy1 = -((ry - py) // sy), (ho - 1 + py - ry) // sy
        qx0, qx1 = -((rx - px) // sx), (wo - 1 + px - rx) // sx
        if qy1 < qy0 or qx1 < qx0:
            continue
        ny, nx = qy1 - qy0 + 1, qx1 - qx0 + 1
        top, left = -(qy0 - ty + 1), -(qx0 - tx + 1)
        bottom, right = qy1 - (h - 1), qx1 - (w - 1)
        dp = F.pad(d, (max(left, 0), max(right, 0), max(top, 0), max(bottom, 0)))
        dp = dp[:, :, max(-top, 0):, max(-left, 0):][:, :, :ny + ty - 1, :nx + tx - 1]
        oy0, ox0 = qy0 * sy + ry - py, qx0 * sx + rx - px
        acc[:, :, oy0::sy, ox0::sx][:, :, :ny, :nx] = F.conv2d(dp, wt)
    return _conv_epilogue(acc, s, weight_scale, bias).to(input.dtype)


# ------------------------------------------------------------------------------- INT4

def _int4_args(packed: Tensor, scale: Tensor, zero_point: Tensor, group_size: int) -> None:
    if packed.dtype != torch.uint8 or packed.dim() != 2 or not packed.is_contiguous():
        raise TypeError("packed_weight: expected the contiguous [N, K / 2] uint8 tensor from int4_pack")
    n, k = packed.shape[0], packed.shape[1] * 2
    if group_size not in (32, 64, 128) or k % 64 or k % group_size:
        raise ValueError(f"group_size: expected 32, 64 or 128 dividing in_features {k} (a multiple of 64), got "
                         f"{group_size}")
    g = k // group_size
    if scale.dtype != torch.float32 or tuple(scale.shape) != (n, g) or not scale.is_contiguous():
        raise ValueError(f"scale: expected a contiguous float32 tensor of shape [{n}, {g}]")
    if zero_point.dtype != torch.uint8 or tuple(zero_point.shape) != (n, g) or not zero_point.is_contiguous():
        raise ValueError(f"zero_point: expected a contiguous uint8 tensor of shape [{n}, {g}]")
    if zero_point.numel() and int(zero_point.max()) > 15:
        raise ValueError(f"zero_point: expected 4-bit values in [0, 15], got {int(zero_point.max())}")


def int4_pack_fallback(weight):
    if weight.dtype != torch.uint8:
        raise TypeError(f"weight: expected a uint8 tensor of 4-bit values, got {weight.dtype}")
    if weight.dim() != 2 or weight.shape[0] == 0 or weight.shape[1] == 0 or weight.shape[1] % 64:
        raise ValueError(f"weight: expected [out_features, in_features] with in_features a multiple of 64, got "
                         f"{list(weight.shape)}")
    if weight.numel() and (int(weight.min()) < 0 or int(weight.max()) > 15):
        raise ValueError("weight: expected 4-bit codes in [0, 15]")
    return ref.int4_pack_reference(weight)


def int4_dequantize_fallback(packed_weight, scale, zero_point, group_size):
    _check_same_device(packed_weight, scale=scale, zero_point=zero_point)
    _int4_args(packed_weight, scale, zero_point, group_size)
    return ref.int4_dequantize_reference(packed_weight, scale, zero_point, group_size)


def _int4_linear_args(input, packed_weight, scale, zero_point, bias, group_size) -> None:
    """The checks both INT4 linear ops make, in the CPU kernels' order."""
    _check_same_device(input, packed_weight=packed_weight, scale=scale, zero_point=zero_point, bias=bias)
    _check_float(input, "input")
    _int4_args(packed_weight, scale, zero_point, group_size)
    k = packed_weight.shape[1] * 2
    if input.dim() < 1 or input.shape[-1] != k:
        raise ValueError(f"input: expected [..., {k}], got {list(input.shape)}")
    _bias(bias, packed_weight.shape[0])


def int4_linear_fallback(input, packed_weight, scale, zero_point, bias, group_size):
    _int4_linear_args(input, packed_weight, scale, zero_point, bias, group_size)
    return ref.int4_linear_reference(input, packed_weight, scale, zero_point, bias, group_size)


def int4_linear_dynamic_fallback(input, packed_weight, scale, zero_point, bias, group_size):
    _int4_linear_args(input, packed_weight, scale, zero_point, bias, group_size)
    _finite_input(input, "int4_linear_dynamic and the W4A8 layers quantize")
    return ref.int4_linear_dynamic_reference(input, packed_weight, scale, zero_point, bias, group_size)


FALLBACKS = {
    "magnitude_scores": magnitude_scores_fallback,
    "nm_mask": nm_mask_fallback,
    "channel_norms": channel_norms_fallback,
    "quantize_affine": quantize_affine_fallback,
    "dequantize_affine": dequantize_affine_fallback,
    "fake_quantize_affine": fake_quantize_affine_fallback,
    "fake_quantize_learnable_backward": fake_quantize_learnable_backward_fallback,
    "observe_minmax": observe_minmax_fallback,
    "observe_histogram": observe_histogram_fallback,
    "mse_clip_range": mse_clip_range_fallback,
    "int8_pack_weight": int8_pack_weight_fallback,
    "int8_gemm": int8_gemm_fallback,
    "int8_linear_dynamic": int8_linear_dynamic_fallback,
    "int8_linear_static": int8_linear_static_fallback,
    "int8_conv2d": int8_conv2d_fallback,
    "int8_conv_transpose2d": int8_conv_transpose2d_fallback,
    "int4_pack": int4_pack_fallback,
    "int4_dequantize": int4_dequantize_fallback,
    "int4_linear": int4_linear_fallback,
    "int4_linear_dynamic": int4_linear_dynamic_fallback,
}
