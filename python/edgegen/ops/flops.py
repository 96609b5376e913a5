"""FLOP counting with torch.utils.flop_counter, taught edgegen's own ops.

Convention: the counter's, 2 FLOPs per multiply-add (MACs = FLOPs / 2, reported beside them since
papers mix the two). Registered formulas:

* INT8/INT4 linear and INT8 GEMM: 2 M N K, the multiply-adds of the integer (or dequantised)
  product, as for the float layer they replace;
* INT8 convolution and transposed convolution: the float layer's count (2 x output pixels x
  Cout x Cin x kh x kw for the convolution, 2 x input pixels x Cin x Cout x kh x kw for the
  transposed one, as torch counts them);
* sliding-window / block-sparse attention: only the visible (query, key) pairs, 4 d per pair
  forward (Q K^T and P V), 10 d per pair backward (scores recomputed, dP, dS->dQ, dK, dV);
* torch's CPU kernel of ``F.scaled_dot_product_attention``
  (``aten._scaled_dot_product_flash_attention_for_cpu`` and its backward), which the counter has
  no formula for: torch's own sdpa formulas, as for the CUDA kernels, so every (query, key) pair is
  counted, causal or masked ones included (torch's convention for sdpa);
* the KD losses: no matrix products (the fused-linear form's head GEMMs are its own; not
  counted), so 0, like torch's softmax.
"""

from __future__ import annotations

import threading
import warnings

import torch
from torch import Tensor

__all__ = ["count_flops", "visible_pairs"]

_REGISTERED = False
_LOCK = threading.Lock()


def visible_pairs(nq: int, nk: int, window: int, num_global: int = 0, causal: bool = True, q_offset: int = 0,
                  block_layout: Tensor | None = None, block_size: int = 0) -> int:
    """How many (query, key) pairs the attention pattern lets through (per batch and head), without
    building the [nq, nk] mask: the sliding-window rule of edgegen.attention, or a block layout."""
    if nq <= 0 or nk <= 0:
        return 0
    p = torch.arange(q_offset, q_offset + nq, dtype=torch.int64)
    if block_layout is not None:
        total = 0
        pairs = torch.unique(block_layout.reshape(-1, 2).to(torch.int64), dim=0)
        for qb, kb in pairs.tolist():
            q_lo, q_hi = max(qb * block_size, q_offset), min((qb + 1) * block_size, q_offset + nq)
            k_lo, k_hi = kb * block_size, min((kb + 1) * block_size, nk)
            if q_lo >= q_hi or k_lo >= k_hi:
                continue
            pos = torch.arange(q_lo, q_hi, dtype=torch.int64)
            if causal:
                total += int((torch.clamp(torch.minimum(pos + 1, torch.tensor(k_hi)) - k_lo, min=0)).sum())
            else:
                total += (q_hi - q_lo) * (k_hi - k_lo)
        return total
    g = min(num_global, nk)
    if causal:
        hi = torch.clamp(p, max=nk - 1)  # keys j <= p
        lo = torch.clamp(p - window + 1, min=0)
        win = torch.clamp(hi - lo + 1, min=0)
        # Global keys left of the window: j < g, j < lo, j <= hi.
        glob = torch.clamp(torch.minimum(torch.minimum(torch.tensor(g), lo), hi + 1), min=0)
        return int((win + glob).sum())
    lo = torch.clamp(p - window + 1, min=0)
    hi = torch.clamp(p + window - 1, max=nk - 1)
    win = torch.clamp(hi - lo + 1, min=0)
    left = torch.clamp(torch.minimum(torch.tensor(g), lo), min=0)  # global keys before the window
    right = torch.clamp(g - torch.clamp(hi + 1, min=0), min=0)      # global keys after it
    counts = torch.where(win > 0, win + left + right, torch.tensor(g))
    counts = torch.where(p < num_global, torch.tensor(nk), counts)  # global queries see every key
    return int(counts.sum())


def _register() -> None:
    """The formulas below into torch's counter, once per process; threads that count at the same
    time wait for the first (torch refuses a second registration of an op)."""
    global _REGISTERED
    if _REGISTERED:
        return
    with _LOCK:
        if not _REGISTERED:
            _register_formulas()
            _REGISTERED = True


def _register_formulas() -> None:
    from torch.utils.flop_counter import register_flop_formula

    ops = torch.ops.edgegen

    def rows(x: Tensor, k: int) -> int:
        return x.numel() // max(k, 1)

    @register_flop_formula(ops.int8_linear_dynamic, get_raw=True)
    def _(input, packed_weight, weight_row_sum, weight_scale, bias, n, k, *args, **kwargs):
        return 2 * rows(input, k) * n * k

    @register_flop_formula(ops.int8_linear_static, get_raw=True)
    def _(input, a_scale, a_zero_point, packed_weight, weight_row_sum, weight_scale, bias, n, k, *args,
          out_shape=None, **kwargs):
        return 2 * rows(input, k) * n * k

    @register_flop_formula(ops.int8_gemm, get_raw=True)
    def _(input, a_zero_point, packed_weight, weight_row_sum, n, k, *args, **kwargs):
        return 2 * input.shape[0] * n * k

    @register_flop_formula([ops.int4_linear, ops.int4_linear_dynamic], get_raw=True)
    def _(input, packed_weight, scale, zero_point, bias, group_size, *args, **kwargs):
        n, k = packed_weight.shape[0], packed_weight.shape[1] * 2
        return 2 * rows(input, k) * n * k

    @register_flop_formula(ops.int8_conv2d, get_raw=True)
    def _(input, packed_weight, weight_row_sum, weight_scale, bias, out_channels, kernel_size, stride, padding,
          dilation, a_scale, a_zero_point, *args, out_val=None, **kwargs):
        n, c = input.shape[0], input.shape[1]
        ho, wo = out_val.shape[-2], out_val.shape[-1]
        return 2 * n * ho * wo * out_channels * c * kernel_size[0] * kernel_size[1]

    @register_flop_formula(ops.int8_conv_transpose2d, get_raw=True)
    def _(input, packed_weights, weight_row_sums, weight_scale, bias, out_channels, phase_info, stride, padding,
          output_size, a_scale, a_zero_point, *args, **kwargs):
        n, c, h, w = input.shape
        taps = sum(phase_info[i + 2] * phase_info[i + 3] for i in range(0, len(phase_info), 4))  # = kh * kw
        return 2 * n * c * h * w * out_channels * taps

    def attention_flops(q, k, window, num_global, causal, q_offset, block_layout, block_size, per_pair):
        b, h, nq, d = q.shape
        pairs = visible_pairs(nq, k.shape[2], window, num_global, causal, q_offset, block_layout, block_size)
        return per_pair * d * pairs * b * h

    @register_flop_formula(ops.sliding_window_attention, get_raw=True)
    def _(q, k, v, window, num_global, causal, scale, q_offset, block_layout, block_size, *args, out_shape=None,
          **kwargs):
        return attention_flops(q, k, window, num_global, causal, q_offset, block_layout, block_size, 4)

    @register_flop_formula(ops.sliding_window_attention_backward, get_raw=True)
    def _(grad_out, q, k, v, out, lse, window, num_global, causal, scale, q_offset, block_layout, block_size,
          *args, **kwargs):
        return attention_flops(q, k, window, num_global, causal, q_offset, block_layout, block_size, 10)

    _register_cpu_sdpa()


def _register_cpu_sdpa() -> None:
    """torch's sdpa formulas for the CPU flash kernel and its backward, where this torch has the
    kernel and the formulas and has not registered them itself (guarded: older and newer torch)."""
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    fwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    bwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if fwd is not None and hasattr(fc, "sdpa_flop_count") and fwd not in fc.flop_registry:
        @fc.register_flop_formula(fwd)
        def _(query, key, value, *args, out_shape=None, **kwargs):  # dropout_p, is_causal, attn_mask, scale
            return fc.sdpa_flop_count(query, key, value)

    if bwd is not None and hasattr(fc, "sdpa_backward_flop_count") and bwd not in fc.flop_registry:
        @fc.register_flop_formula(bwd)
        def _(grad_out, query, key, value, *args, out_shape=None, **kwargs):  # out, logsumexp, ...
            return fc.sdpa_backward_flop_count(grad_out, query, key, value)


def count_flops(model, example_inputs, backward: bool = False) -> int:
    """FLOPs of one call ``model(*example_inputs)`` (and of a backward of its summed output when
    ``backward``), counted by torch.utils.flop_counter with edgegen's ops included. Warns when a
    model with parameters counts 0 (an op without a formula)."""
    from torch.utils.flop_counter import FlopCounterMode

    _register()
    inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    mode = FlopCounterMode(display=False)
    with mode:
        if backward:
            out = model(*inputs)
            out = out[0] if isinstance(out, (tuple, list)) else out
            out.float().sum().backward()
        else:
            with torch.no_grad():
                model(*inputs)
    total = int(mode.get_total_flops())
    if total == 0 and isinstance(model, torch.nn.Module) and any(t.numel() for t in (*model.parameters(), *model.buffers())):
        warnings.warn("count_flops: the model counted 0 FLOPs; it runs ops the counter has no formula for",
                      RuntimeWarning, stacklevel=2)
    return total
