"""Quantized modules that run edgegen's integer kernels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgegen.ops import quant as ops
from edgegen.quant.functional import quantize_per_channel


class _Float32Params(nn.Module):
    """Quantization parameters (scales) stay float32 whatever ``module.half()`` / ``.to(dtype)``
    does to the other floating-point buffers: the kernels read float32 scales, and a scale
    rounded to 16 bits would change every output. Devices still change."""

    _float32_buffers: tuple[str, ...] = ()

    def _apply(self, fn, recurse=True):
        kept = {n: self._buffers[n] for n in self._float32_buffers if self._buffers.get(n) is not None}
        out = super()._apply(fn, recurse)
        for n, old in kept.items():
            new = self._buffers[n]
            if new.dtype != old.dtype:
                self._buffers[n] = old.to(device=new.device)
        return out


def symmetric_weight_scales(w: Tensor, qmax: int = 127) -> Tensor:
    """Per-output-row scales max|w| / qmax (float32); an all-zero row gets scale 1."""
    amax = w.detach().abs().amax(dim=tuple(range(1, w.dim()))).to(torch.float32)
    return torch.where(amax > 0, amax / qmax, torch.ones_like(amax))


def _set_static_activations(q: nn.Module, act_qparams) -> None:
    """Fix a module's activation (scale, zero point) for 7-bit quantization; None leaves it dynamic."""
    if act_qparams is None:
        return
    scale, zp = float(act_qparams[0]), int(act_qparams[1])
    if not scale > 0 or not 0 <= zp <= 127:
        raise ValueError(f"act_qparams: expected scale > 0 and a zero point in [0, 127], got {act_qparams}")
    q.act_scale.fill_(scale)
    q.act_zero_point.fill_(zp)
    q.static = True


class Int8Linear(_Float32Params):
    """Linear with int8 weights (symmetric per output feature, range [-127, 127]) and dynamically
    quantized activations (per tensor, per call, 7-bit unsigned: exact on AVX2 without VNNI,
    like PyTorch's x86 reduce_range). The weights are packed once for the GEMM kernel; the state
    dict holds the plain int8 weights and scales, and the packing is rebuilt on load."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=torch.float32))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        # Static activation parameters (scale 0: quantize each call's activations dynamically).
        self.register_buffer("act_scale", torch.zeros((), dtype=torch.float32))
        self.register_buffer("act_zero_point", torch.zeros((), dtype=torch.int64))
        self.static = False
        self.register_buffer("packed_weight", torch.empty(0, dtype=torch.int8), persistent=False)
        self.register_buffer("weight_row_sum", torch.empty(0, dtype=torch.int32), persistent=False)
        self.repack()

    @classmethod
    @torch.no_grad()
    def from_float(cls, linear: nn.Linear, act_qparams: tuple[float, int] | None = None) -> "Int8Linear":
        """``act_qparams=(scale, zero_point)`` of a calibrated activation range quantized to
        [0, 127] makes the layer static; without it activations are quantized per call."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear: expected an nn.Linear, got {type(linear).__name__}")
        return cls._from_weight(linear.weight, linear.bias, act_qparams)

    @classmethod
    @torch.no_grad()
    def _from_weight(cls, weight: Tensor, bias: Tensor | None, act_qparams=None,
                     weight_scale: Tensor | None = None) -> "Int8Linear":
        """``weight_scale`` (one per row) fixes the weight scales (e.g. learned in QAT); by
        default they are max|w| / 127 per row."""
        w = _finite_weight(weight.detach().float().cpu(), "weight")
        q = cls(w.shape[1], w.shape[0], bias=bias is not None)
        _set_static_activations(q, act_qparams)
        scales = symmetric_weight_scales(w) if weight_scale is None else weight_scale.detach().float().cpu().reshape(-1)
        q.weight_int8.copy_(quantize_per_channel(w, scales, torch.zeros(len(scales), dtype=torch.int64), 0,
                                                 torch.int8, -127, 127))
        q.weight_scale.copy_(scales)
        if bias is not None:
            q.bias.copy_(bias.detach().float())
        q.repack()
        return q

    def repack(self) -> None:
        """Packs the int8 weights for the GEMM (on their device; the CPU kernel's layout, which the
        other devices' kernels read too)."""
        self.packed_weight, self.weight_row_sum = ops.int8_pack_weight(self.weight_int8)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.static = bool(self.act_scale > 0)
        self.repack()

    def dequantized_weight(self) -> Tensor:
        return self.weight_int8.float() * self.weight_scale[:, None]

    def forward(self, x: Tensor) -> Tensor:
        n, k = self.out_features, self.in_features
        if self.static:
            return ops.int8_linear_static(x, float(self.act_scale), int(self.act_zero_point), self.packed_weight,
                                          self.weight_row_sum, self.weight_scale, self.bias, n, k)
        return ops.int8_linear_dynamic(x, self.packed_weight, self.weight_row_sum, self.weight_scale, self.bias,
                                       n, k)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"activations={'static' if self.static else 'dynamic'}")


def _check_plain_conv(conv: nn.Module) -> None:
    if conv.groups != 1:
        raise ValueError(f"conv: grouped convolutions (groups={conv.groups}) are not supported by the INT8 GEMM path")
    if conv.padding_mode != "zeros":
        raise ValueError(f"conv: padding_mode {conv.padding_mode!r} is not supported (only 'zeros')")
    if isinstance(conv.padding, str):
        raise ValueError(f"conv: string padding {conv.padding!r} is not supported; give explicit sizes")


def _finite_weight(w: Tensor, what: str) -> Tensor:
    """Weights with NaN or infinity cannot be quantized to a meaningful code: an error naming
    them, never a silently zeroed row."""
    if w.numel() and not bool(torch.isfinite(w).all()):
        bad = int((~torch.isfinite(w)).sum())
        raise ValueError(f"{what}: contains {bad} NaN or infinite weight(s); quantization needs finite weights")
    return w


def _check_channels(x: Tensor, in_channels: int, layer: str) -> None:
    if x.dim() not in (3, 4) or x.shape[-3] != in_channels:
        raise ValueError(f"input: expected [N, {in_channels}, H, W] for this {layer} (or [{in_channels}, H, W] "
                         f"unbatched; built for {in_channels} input channels), got shape {tuple(x.shape)}")


def _nhwc_weight(w: Tensor) -> Tensor:
    """[Cout, Cin, kh, kw] -> [Cout, kh * kw * ceil4(Cin)]: the order the direct INT8 convolution
    reads (tap-major, channels padded to a multiple of 4 with zeros)."""
    co, ci, kh, kw = w.shape
    cp = (ci + 3) // 4 * 4
    out = w.new_zeros(co, kh, kw, cp)
    out[..., :ci] = w.permute(0, 2, 3, 1)
    return out.reshape(co, -1)


def _int8_conv(x: Tensor, gemm: "Int8Linear", bias: Tensor | None, out_channels: int, kernel, stride, padding,
               dilation, act: tuple[float, int] | None) -> Tensor:
    """The direct INT8 convolution op (dynamic activations when ``act`` is None)."""
    a_scale, a_zp = act if act is not None else (0.0, 0)
    return torch.ops.edgegen.int8_conv2d(x, gemm.packed_weight, gemm.weight_row_sum, gemm.weight_scale, bias,
                                         out_channels, list(kernel), list(stride), list(padding), list(dilation),
                                         a_scale, a_zp)


class Int8Conv2d(nn.Module):
    """Conv2d (groups=1) as a direct INT8 convolution: the input is quantized once to 7-bit NHWC and
    every output pixel accumulates its taps with the GEMM micro-kernel (implicit GEMM, no im2col);
    int8 weights per output channel, activations dynamic or calibrated."""

    def __init__(self, gemm: Int8Linear, in_channels, out_channels, kernel_size, stride, padding, dilation):
        super().__init__()
        self.gemm = gemm
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation

    @classmethod
    def from_float(cls, conv: nn.Conv2d, act_qparams=None, weight_scale: Tensor | None = None) -> "Int8Conv2d":
        """Weights symmetric per output channel (``weight_scale`` overrides max|w| / 127)."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"conv: expected an nn.Conv2d, got {type(conv).__name__}")
        _check_plain_conv(conv)
        gemm = Int8Linear._from_weight(_nhwc_weight(conv.weight.detach().float()), conv.bias, act_qparams,
                                       weight_scale)
        return cls(gemm, conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                   conv.dilation)

    def forward(self, x: Tensor) -> Tensor:
        _check_channels(x, self.in_channels, "Int8Conv2d")
        if x.dim() == 3:  # unbatched, as nn.Conv2d takes it
            return self.forward(x.unsqueeze(0)).squeeze(0)
        g = self.gemm
        act = (float(g.act_scale), int(g.act_zero_point)) if g.static else None
        return _int8_conv(x, g, g.bias, self.out_channels, self.kernel_size, self.stride, self.padding,
                          self.dilation, act)


def _dynamic_act_qparams(x: Tensor) -> tuple[float, int]:
    """The per-tensor 7-bit parameters the INT8 kernels compute for dynamic activations."""
    lo, hi = x.detach().float().aminmax()
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
    scale = (hi - lo) / 127.0 if bool(hi > lo) else torch.tensor(1.0)
    zp = int(torch.round(-lo / scale).clamp(0, 127))
    return float(scale), zp


class Int8ConvTranspose2d(_Float32Params):
    """ConvTranspose2d (groups=1) on the INT8 GEMM, weights symmetric per output channel (axis 1 of
    the [Cin, Cout, kh, kw] weight).

    Without dilation the layer is split by output phase (sub-pixel decomposition): the outputs
    whose (row, column) are congruent to (ry, rx) modulo the stride depend only on the kernel taps
    ry + stride * t, so each phase is an ordinary small convolution over the input (the direct
    INT8 convolution) written to a strided slice of the output. No overlapping col2im is needed.
    With dilation it uses one GEMM + ``F.fold`` (col2im) instead. All phases share one activation quantization per call."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, output_padding, dilation,
                 bias: Tensor | None):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.output_padding, self.dilation = output_padding, dilation
        self.register_buffer("bias", bias)
        self.register_buffer("act_scale", torch.zeros((), dtype=torch.float32))
        self.register_buffer("act_zero_point", torch.zeros((), dtype=torch.int64))
        self.static = False
        self.phases = nn.ModuleList()
        self.phase_taps: list[tuple[int, int, int, int]] = []  # (ry, rx, taps_y, taps_x)
        self.gemm: Int8Linear | None = None

    @classmethod
    @torch.no_grad()
    def from_float(cls, conv: nn.ConvTranspose2d, act_qparams=None,
                   weight_scale: Tensor | None = None) -> "Int8ConvTranspose2d":
        """``weight_scale`` (per output channel) overrides max|w| / 127."""
        if not isinstance(conv, nn.ConvTranspose2d):
            raise TypeError(f"conv: expected an nn.ConvTranspose2d, got {type(conv).__name__}")
        _check_plain_conv(conv)
        w = _finite_weight(conv.weight.detach().float(), "conv.weight")
        if weight_scale is None:
            weight_scale = symmetric_weight_scales(w.transpose(0, 1))
        weight_scale = weight_scale.detach().float().reshape(-1)
        bias = None if conv.bias is None else conv.bias.detach().float().clone()
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.output_padding,
                conv.dilation, bias)
        _set_static_activations(q, act_qparams)
        (kh, kw), (sy, sx) = conv.kernel_size, conv.stride
        # Phases whenever there is no dilation: even a 3-channel image head (13 of 16 panel lanes
        # idle) is 2.7-3.3x faster by phases than by one GEMM with N = Cout * kh * kw and col2im,
        # whose float columns and overlap-add cost more than the wasted lanes.
        if tuple(conv.dilation) == (1, 1):
            for ry in range(sy):
                for rx in range(sx):
                    ty, tx = len(range(ry, kh, sy)), len(range(rx, kw, sx))
                    if ty == 0 or tx == 0:
                        continue
                    rows = [ry + sy * (ty - 1 - j) for j in range(ty)]  # unfold window j <-> tap t = T-1-j
                    cols = [rx + sx * (tx - 1 - j) for j in range(tx)]
                    wsub = w[:, :, rows][:, :, :, cols].permute(1, 0, 2, 3)  # a [Cout, Cin, ty, tx] conv weight
                    q.phases.append(Int8Linear._from_weight(_nhwc_weight(wsub), None, None, weight_scale))
                    q.phase_taps.append((ry, rx, ty, tx))
        else:
            kk = kh * kw
            wmat = w.permute(1, 2, 3, 0).reshape(-1, conv.in_channels)  # [Cout*kh*kw, Cin]
            q.gemm = Int8Linear._from_weight(wmat, None, None, weight_scale.repeat_interleave(kk))
        return q

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.static = bool(self.act_scale > 0)


    def forward(self, x: Tensor) -> Tensor:
        _check_channels(x, self.in_channels, "Int8ConvTranspose2d")
        if x.dim() == 3:  # unbatched, as nn.ConvTranspose2d takes it
            return self.forward(x.unsqueeze(0)).squeeze(0)
        b, c, h, w = x.shape
        (kh, kw), (sy, sx), (py, px) = self.kernel_size, self.stride, self.padding
        ho = (h - 1) * sy - 2 * py + self.dilation[0] * (kh - 1) + self.output_padding[0] + 1
        wo = (w - 1) * sx - 2 * px + self.dilation[1] * (kw - 1) + self.output_padding[1] + 1
        static = (float(self.act_scale), int(self.act_zero_point)) if self.static else None
        if self.gemm is None:
            # The op quantizes the input once (dynamically when act is (0, 0)) for every phase.
            info = [v for t in self.phase_taps for v in t]
            a_scale, a_zp = static or (0.0, 0)
            return torch.ops.edgegen.int8_conv_transpose2d(
                x, [p.packed_weight for p in self.phases], [p.weight_row_sum for p in self.phases],
                self.phases[0].weight_scale, self.bias, self.out_channels, info, list(self.stride), list(self.padding),
                [ho, wo], a_scale, a_zp)
        # One GEMM with N = Cout * kh * kw over the pixels, then col2im; one activation
        # quantization for the whole call.
        act = static or _dynamic_act_qparams(x)
        g = self.gemm
        cols = ops.int8_linear_static(x.permute(0, 2, 3, 1).reshape(b, h * w, c), act[0], act[1], g.packed_weight,
                                      g.weight_row_sum, g.weight_scale, None, g.out_features, g.in_features)
        out = F.fold(cols.transpose(1, 2), (ho, wo), self.kernel_size, self.dilation, self.padding, self.stride)
        if self.bias is not None:
            out = out + self.bias[None, :, None, None]
        return out.to(x.dtype)


def _check_int4_layout(width: int, group_size: int, name: str) -> None:
    """The 4-bit packing's constraints: groups of 32, 64 or 128, rows (``name``) in whole chunks of
    64 features and whole groups."""
    if group_size not in (32, 64, 128):
        raise ValueError(f"group_size: expected 32, 64 or 128, got {group_size!r}")
    if width % 64 or width % group_size:
        raise ValueError(f"{name}: {width} must be a multiple of 64 and of group_size {group_size}")


@torch.no_grad()
def _int4_quantize_into(q: nn.Module, weight: Tensor, group_size: int, name: str) -> None:
    """Asymmetric 4-bit codes of ``weight`` [n, k] per group of ``group_size`` consecutive columns
    (scale (max - min) / 15, zero point round(-min / scale)) into q's packed_weight / scale /
    zero_point buffers: Int4Linear's and Int4Embedding's quantization, identical for a tied pair."""
    n, k = weight.shape
    w = _finite_weight(weight.detach().float().cpu(), name).reshape(n * (k // group_size), group_size)
    lo, hi = w.amin(dim=1), w.amax(dim=1)
    scale = torch.where(hi > lo, (hi - lo) / 15.0, torch.ones_like(hi))
    zero = torch.round(-lo / scale).clamp(0, 15).to(torch.int64)
    codes = quantize_per_channel(w, scale, zero, 0, torch.uint8, 0, 15).reshape(n, k)
    q.packed_weight.copy_(ops.int4_pack(codes))
    q.scale.copy_(scale.reshape(n, -1))
    q.zero_point.copy_(zero.reshape(n, -1).to(torch.uint8))


class Int4Linear(_Float32Params):
    """Linear with 4-bit weights (asymmetric, one float32 scale and one 4-bit zero point per
    ``group_size`` input features, two weights per byte). ``activations='float'`` (weight-only):
    the weights are dequantised inside floating-point dot products (small batches) or block by
    block (large). ``activations='int8'`` (W4A8): each call quantizes its input per row and group to
    symmetric int8 and runs integer dot products (``int4_linear_dynamic``). ``in_features`` must be
    a multiple of 64 and of ``group_size``."""

    ACTIVATIONS = ("float", "int8")

    def __init__(self, in_features: int, out_features: int, bias: bool = True, group_size: int = 64,
                 activations: str = "float"):
        super().__init__()
        _check_int4_layout(in_features, group_size, "in_features")
        if activations not in self.ACTIVATIONS:
            raise ValueError(f"activations: expected 'float' or 'int8', got {activations!r}")
        self.in_features, self.out_features, self.group_size = int(in_features), int(out_features), int(group_size)
        self.activations = activations
        groups = in_features // group_size
        self.register_buffer("packed_weight", torch.zeros(out_features, in_features // 2, dtype=torch.uint8))
        self.register_buffer("scale", torch.ones(out_features, groups, dtype=torch.float32))
        self.register_buffer("zero_point", torch.zeros(out_features, groups, dtype=torch.uint8))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    @torch.no_grad()
    def from_float(cls, linear: nn.Linear, group_size: int = 64, activations: str = "float") -> "Int4Linear":
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear: expected an nn.Linear, got {type(linear).__name__}")
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, group_size, activations)
        _int4_quantize_into(q, linear.weight, group_size, "linear.weight")
        if linear.bias is not None:
            q.bias.copy_(linear.bias.detach().float())
        return q

    def dequantized_weight(self) -> Tensor:
        return torch.ops.edgegen.int4_dequantize(self.packed_weight, self.scale, self.zero_point, self.group_size)

    def forward(self, x: Tensor) -> Tensor:
        op = ops.int4_linear_dynamic if self.activations == "int8" else ops.int4_linear
        return op(x, self.packed_weight, self.scale, self.zero_point, self.bias, self.group_size)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"group_size={self.group_size}, activations={self.activations!r}")


def _rows(table: Tensor, idx: Tensor) -> Tensor:
    """``table[idx]`` through the embedding op, which checks the ids in its kernel (indexing alone
    would wrap negative ids around); an id outside [0, rows) is an IndexError naming ``idx``."""
    try:
        return F.embedding(idx, table)
    except IndexError:
        raise IndexError(f"idx: ids must lie in [0, {table.shape[0]})") from None


class _QuantizedEmbedding(_Float32Params):
    """An embedding's rows come out in ``output_dtype``: the float embedding's dtype, then whatever
    ``module.half()`` / ``.to(dtype)`` makes of it (the scales stay float32), as the float table would."""

    output_dtype: torch.dtype = torch.float32

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        self.output_dtype = fn(torch.empty(0, dtype=self.output_dtype)).dtype
        return out


class Int8Embedding(_QuantizedEmbedding):
    """Embedding table stored as int8 rows (symmetric per row, [-127, 127]) with float32 scales;
    a lookup dequantises only the rows it gathers."""

    def __init__(self, num_embeddings: int, embedding_dim: int):
        super().__init__()
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        self.register_buffer("weight_int8", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(num_embeddings, dtype=torch.float32))

    @classmethod
    @torch.no_grad()
    def from_float(cls, emb: nn.Embedding) -> "Int8Embedding":
        if not isinstance(emb, nn.Embedding):
            raise TypeError(f"emb: expected an nn.Embedding, got {type(emb).__name__}")
        if emb.max_norm is not None or emb.sparse:
            raise ValueError("emb: max_norm and sparse embeddings are not supported")
        q = cls(emb.num_embeddings, emb.embedding_dim)
        w = emb.weight.detach().float().cpu()
        scales = symmetric_weight_scales(w)
        q.weight_int8.copy_(quantize_per_channel(w, scales, torch.zeros(len(scales), dtype=torch.int64), 0,
                                                 torch.int8, -127, 127))
        q.weight_scale.copy_(scales)
        q.output_dtype = emb.weight.dtype
        return q

    def forward(self, idx: Tensor) -> Tensor:
        return (_rows(self.weight_int8, idx).float() * _rows(self.weight_scale[:, None], idx)).to(self.output_dtype)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


class Int4Embedding(_QuantizedEmbedding):
    """Embedding table stored as 4-bit rows in :class:`Int4Linear`'s packing and quantization (one
    float32 scale and 4-bit zero point per ``group_size`` features); a lookup dequantises only the
    rows it gathers. A tied output head quantized alike shares its buffers (``quantize_`` ties
    them), so the file holds the table once. ``embedding_dim`` must be a multiple of 64 and of
    ``group_size``."""

    def __init__(self, num_embeddings: int, embedding_dim: int, group_size: int = 64):
        super().__init__()
        _check_int4_layout(embedding_dim, group_size, "embedding_dim")
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        self.group_size = int(group_size)
        groups = embedding_dim // group_size
        self.register_buffer("packed_weight", torch.zeros(num_embeddings, embedding_dim // 2, dtype=torch.uint8))
        self.register_buffer("scale", torch.ones(num_embeddings, groups, dtype=torch.float32))
        self.register_buffer("zero_point", torch.zeros(num_embeddings, groups, dtype=torch.uint8))

    @classmethod
    @torch.no_grad()
    def from_float(cls, emb: nn.Embedding, group_size: int = 64) -> "Int4Embedding":
        if not isinstance(emb, nn.Embedding):
            raise TypeError(f"emb: expected an nn.Embedding, got {type(emb).__name__}")
        if emb.max_norm is not None or emb.sparse:
            raise ValueError("emb: max_norm and sparse embeddings are not supported")
        q = cls(emb.num_embeddings, emb.embedding_dim, group_size)
        _int4_quantize_into(q, emb.weight, group_size, "emb.weight")
        q.output_dtype = emb.weight.dtype
        return q

    def forward(self, idx: Tensor) -> Tensor:
        flat = idx.reshape(-1)
        rows = torch.ops.edgegen.int4_dequantize(_rows(self.packed_weight, flat), _rows(self.scale, flat),
                                                 _rows(self.zero_point, flat), self.group_size)
        return rows.view(*idx.shape, self.embedding_dim).to(self.output_dtype)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, group_size={self.group_size}"


Int8Linear._float32_buffers = ("weight_scale", "act_scale")
Int8ConvTranspose2d._float32_buffers = ("act_scale",)
Int4Linear._float32_buffers = ("scale",)
Int8Embedding._float32_buffers = ("weight_scale",)
Int4Embedding._float32_buffers = ("scale",)


# edgegen's integer layers: they run edgegen's own kernels and have no ONNX or Hugging Face form.
INTEGER_LAYERS = (Int8Linear, Int8Conv2d, Int8ConvTranspose2d, Int4Linear, Int8Embedding, Int4Embedding)
