// Torch-free affine quantization kernels: quantize, dequantize, fake-quantize (straight-through
// mask) and the learnable fake-quantize backward (LSQ; scale and zero-point gradients).
//
// Conventions (those of torch.fake_quantize_per_*_affine): q = clamp(nearbyint(x * inv_scale) +
// zero_point, qmin, qmax) with inv_scale = 1.0f / scale in float32, round half to even, the zero
// point added after rounding; x_hat = (q - zero_point) * scale.
//
// Every tensor is viewed as [outer, channels, inner]; scale[c] and zero_point[c] apply to
// channel c (channels == 1: per tensor).
#pragma once
#include <cstdint>

#include "kernels/dtypes.h"

namespace edgegen::kernels::quant {

struct Layout {
  int64_t outer, channels, inner;
  int64_t numel() const { return outer * channels * inner; }
};

// out: int8 (is_unsigned false) or uint8 values.
void quantize(const void* x, DType dtype, Layout l, const float* scale, const int32_t* zero_point, int32_t qmin,
              int32_t qmax, bool is_unsigned, void* out, int num_threads);

// out[i] = (q[i] - zero_point[c]) * scale[c], computed in float32, stored in out_dtype.
void dequantize(const void* q, bool is_unsigned, Layout l, const float* scale, const int32_t* zero_point,
                DType out_dtype, void* out, int num_threads);

// out = fake-quantized x (same dtype); mask[i] = 1 where nearbyint(x * inv_scale) + zero_point
// lies in [qmin, qmax] (the straight-through gradient passes there), may be null.
// NaN inputs give NaN outputs and mask 0.
void fake_quantize(const void* x, DType dtype, Layout l, const float* scale, const int32_t* zero_point,
                   int32_t qmin, int32_t qmax, void* out, uint8_t* mask, int num_threads);

// Backward of learnable fake-quantization (Esser et al. 2020, as torch's
// _fake_quantize_learnable_per_*_affine defines it): with q the rounded value before clamping and
// q_c the clamped one,
//   q outside [qmin, qmax]: dx = 0,  dscale += dy * (q_c - zp) * g, dzp += -dy * scale * g
//   otherwise:              dx = dy, dscale += dy * (x_hat - x) / scale * g
// where g = grad_factor. dscale / dzero_point are per-channel sums (double accumulation).
void fake_quantize_learnable_backward(const void* x, const void* dy, DType dtype, Layout l, const float* scale,
                                      const int32_t* zero_point, int32_t qmin, int32_t qmax, double grad_factor,
                                      void* dx, double* dscale, double* dzero_point, int num_threads);

}  // namespace edgegen::kernels::quant
