// Calibration statistics for quantization observers: per-channel min/max, histograms, and the
// clipping range that minimises the fake-quantization mean squared error.
#pragma once
#include <cstdint>

#include "kernels/dtypes.h"
#include "kernels/quant/quantize.h"

namespace edgegen::kernels::quant {

// lo[c], hi[c] over channel c of x (Layout as in quantize.h). Returns the number of NaNs seen
// (then lo/hi are meaningless). Empty channels give +inf / -inf.
int64_t observe_minmax(const void* x, DType dtype, Layout l, float* lo, float* hi, int num_threads);

// counts[b] of the values in bin b of [lo, hi] split into `bins` equal bins; values outside land
// in the first or last bin. NaNs are counted apart (returned).
int64_t observe_histogram(const void* x, DType dtype, int64_t n, int64_t bins, float lo, float hi, int64_t* counts,
                          int num_threads);

// Among the ranges [lo * s / steps, hi * s / steps], s = 1..steps, the one whose affine
// quantization to [qmin, qmax] (qparams as calculate_qparams computes them) has the smallest sum
// of squared errors over x. Writes the chosen range and returns its error (double).
double mse_clip_range(const void* x, DType dtype, int64_t n, float lo, float hi, int32_t qmin, int32_t qmax,
                      int steps, float* best_lo, float* best_hi, int num_threads);

// Affine qparams of [lo, hi] (extended to include 0): scale = (hi - lo) / (qmax - qmin) (1 when
// the range is empty), zero_point = clamp(qmin - round(lo / scale), qmin, qmax).
void affine_qparams(float lo, float hi, int32_t qmin, int32_t qmax, float* scale, int32_t* zero_point);

}  // namespace edgegen::kernels::quant
