#include "kernels/quant/observe.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels/parallel.h"

namespace edgegen::kernels::quant {
namespace {

constexpr int64_t kChunk = 1 << 16;

}  // namespace

int64_t observe_minmax(const void* x, DType dtype, Layout l, float* lo, float* hi, int num_threads) {
  const int64_t rows = l.outer * l.channels;
  std::vector<float> rlo(static_cast<size_t>(rows)), rhi(static_cast<size_t>(rows));
  std::vector<int64_t> rnan(size_t(rows), 0);
  dispatch_float(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* in = static_cast<const T*>(x);
    parallel_for(rows, num_threads, [&](int64_t r) {
      float a = std::numeric_limits<float>::infinity(), b = -a;
      int64_t nan = 0;
      for (int64_t i = r * l.inner; i < (r + 1) * l.inner; ++i) {
        const float v = float(to_float(in[i]));
        nan += v != v;
        a = std::min(a, v);
        b = std::max(b, v);
      }
      rlo[size_t(r)] = a;
      rhi[size_t(r)] = b;
      rnan[size_t(r)] = nan;
    });
  });
  int64_t nan = 0;
  for (int64_t c = 0; c < l.channels; ++c) {
    lo[c] = std::numeric_limits<float>::infinity();
    hi[c] = -lo[c];
  }
  for (int64_t r = 0; r < rows; ++r) {
    lo[r % l.channels] = std::min(lo[r % l.channels], rlo[size_t(r)]);
    hi[r % l.channels] = std::max(hi[r % l.channels], rhi[size_t(r)]);
    nan += rnan[size_t(r)];
  }
  return nan;
}

int64_t observe_histogram(const void* x, DType dtype, int64_t n, int64_t bins, float lo, float hi, int64_t* counts,
                          int num_threads) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<int64_t> part(size_t(chunks * bins), 0), nans(size_t(chunks), 0);
  const double width = (double(hi) - double(lo)) / double(bins);
  dispatch_float(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* in = static_cast<const T*>(x);
    parallel_for(chunks, num_threads, [&](int64_t c) {
      int64_t* h = part.data() + c * bins;
      for (int64_t i = c * kChunk; i < std::min(n, (c + 1) * kChunk); ++i) {
        const double v = double(to_float(in[i]));
        if (v != v) {
          ++nans[size_t(c)];
          continue;
        }
        // Clamped in double before the cast: values below lo (or -inf) count in the first bin,
        // above hi (or +inf) in the last; casting an infinite position to int64 would be undefined.
        const double pos = width > 0 ? std::floor((v - lo) / width) : 0.0;
        ++h[int64_t(std::min(std::max(pos, 0.0), double(bins - 1)))];
      }
    });
  });
  int64_t nan = 0;
  for (int64_t b = 0; b < bins; ++b) counts[b] = 0;
  for (int64_t c = 0; c < chunks; ++c) {
    for (int64_t b = 0; b < bins; ++b) counts[b] += part[size_t(c * bins + b)];
    nan += nans[size_t(c)];
  }
  return nan;
}

void affine_qparams(float lo, float hi, int32_t qmin, int32_t qmax, float* scale, int32_t* zero_point) {
  lo = std::min(lo, 0.0f);
  hi = std::max(hi, 0.0f);
  float s = (hi - lo) / float(qmax - qmin);
  if (!(s > 0.0f) || !std::isfinite(s)) s = 1.0f;
  const float z = float(qmin) - std::nearbyint(lo / s);
  *scale = s;
  *zero_point = int32_t(std::min(float(qmax), std::max(float(qmin), z)));
}

double mse_clip_range(const void* x, DType dtype, int64_t n, float lo, float hi, int32_t qmin, int32_t qmax,
                      int steps, float* best_lo, float* best_hi, int num_threads) {
  std::vector<float> scale(static_cast<size_t>(steps)), inv(static_cast<size_t>(steps));
  std::vector<int32_t> zp(static_cast<size_t>(steps));
  for (int s = 0; s < steps; ++s) {
    const float f = float(s + 1) / float(steps);
    affine_qparams(lo * f, hi * f, qmin, qmax, &scale[size_t(s)], &zp[size_t(s)]);
    inv[size_t(s)] = 1.0f / scale[size_t(s)];
  }
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> err(size_t(chunks * steps), 0.0);
  dispatch_float(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* in = static_cast<const T*>(x);
    parallel_for(chunks, num_threads, [&](int64_t c) {
      double* e = err.data() + c * steps;
      for (int64_t i = c * kChunk; i < std::min(n, (c + 1) * kChunk); ++i) {
        const float v = float(to_float(in[i]));
        for (int s = 0; s < steps; ++s) {
          const float q = std::min(float(qmax), std::max(float(qmin), std::nearbyint(v * inv[size_t(s)]) + float(zp[size_t(s)])));
          const double d = double(v) - double((q - float(zp[size_t(s)])) * scale[size_t(s)]);
          e[s] += d * d;
        }
      }
    });
  });
  int best = steps - 1;
  double best_err = std::numeric_limits<double>::infinity();
  for (int s = 0; s < steps; ++s) {
    double t = 0.0;
    for (int64_t c = 0; c < chunks; ++c) t += err[size_t(c * steps + s)];  // chunk order: deterministic
    if (t < best_err) {
      best_err = t;
      best = s;
    }
  }
  const float f = float(best + 1) / float(steps);
  *best_lo = lo * f;
  *best_hi = hi * f;
  return best_err;
}

}  // namespace edgegen::kernels::quant
