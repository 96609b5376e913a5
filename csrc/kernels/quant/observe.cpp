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
  // One histogram per thread over a contiguous block of the input (counts are integers, so the
  // sum does not depend on the split); the first thread's is `counts` itself. Scratch is
  // (threads - 1) x bins, never proportional to the input.
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(num_threads, chunks));
  std::vector<int64_t> extra(size_t((parts - 1) * bins), 0), nans(size_t(parts), 0);
  std::fill(counts, counts + bins, int64_t(0));
  const double width = (double(hi) - double(lo)) / double(bins);
  dispatch_float(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* in = static_cast<const T*>(x);
    parallel_for(parts, int(parts), [&](int64_t t) {
      int64_t* h = t == 0 ? counts : extra.data() + (t - 1) * bins;
      for (int64_t i = std::min(n, chunks * t / parts * kChunk); i < std::min(n, chunks * (t + 1) / parts * kChunk); ++i) {
        const double v = double(to_float(in[i]));
        if (v != v) {
          ++nans[size_t(t)];
          continue;
        }
        // Clamped in double before the cast: values below lo (or -inf) count in the first bin,
        // above hi (or +inf) in the last; casting an infinite position to int64 would be undefined.
        const double pos = width > 0 ? std::floor((v - lo) / width) : 0.0;
        ++h[int64_t(std::min(std::max(pos, 0.0), double(bins - 1)))];
      }
    });
  });
  int64_t nan = nans[0];
  for (int64_t t = 1; t < parts; ++t) {
    for (int64_t b = 0; b < bins; ++b) counts[b] += extra[size_t((t - 1) * bins + b)];
    nan += nans[size_t(t)];
  }
  return nan;
}

void affine_qparams(float lo, float hi, int32_t qmin, int32_t qmax, float* scale, int32_t* zero_point) {
  lo = std::min(lo, 0.0f);
  hi = std::max(hi, 0.0f);
  // The width in double (qmax - qmin overflows int32 for the widest ranges) and the clamp too
  // (float(2^31 - 1) rounds to 2^31, out of int32's range); the arithmetic itself stays float.
  float s = (hi - lo) / float(double(qmax) - double(qmin));
  if (!(s > 0.0f) || !std::isfinite(s)) s = 1.0f;
  const float z = float(qmin) - std::nearbyint(lo / s);
  *scale = s;
  *zero_point = int32_t(std::min(double(qmax), std::max(double(qmin), double(z))));
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
  // Per-chunk errors, added to the totals in chunk order (the result does not depend on the
  // thread count), a wave of chunks at a time so that the scratch stays wave x steps.
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  const int64_t wave = std::max<int64_t>(1, int64_t(num_threads)) * 4;
  std::vector<double> err(size_t(std::min(chunks, wave) * steps)), total(size_t(steps), 0.0);
  // In double: the clamp bounds and zero points of the widest int32 ranges are not floats.
  const double dmin = double(qmin), dmax = double(qmax);
  dispatch_float(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* in = static_cast<const T*>(x);
    for (int64_t c0 = 0; c0 < chunks; c0 += wave) {
      const int64_t m = std::min(wave, chunks - c0);
      std::fill(err.begin(), err.end(), 0.0);
      parallel_for(m, num_threads, [&](int64_t j) {
        double* e = err.data() + j * steps;
        const int64_t c = c0 + j;
        for (int64_t i = c * kChunk; i < std::min(n, (c + 1) * kChunk); ++i) {
          const float v = float(to_float(in[i]));
          for (int s = 0; s < steps; ++s) {
            const double z = double(zp[size_t(s)]);
            const double q = std::min(dmax, std::max(dmin, double(std::nearbyint(v * inv[size_t(s)])) + z));
            const double d = double(v) - double(float(q - z) * scale[size_t(s)]);
            e[s] += d * d;
          }
        }
      });
      for (int64_t j = 0; j < m; ++j) {
        for (int s = 0; s < steps; ++s) total[size_t(s)] += err[size_t(j * steps + s)];  // chunk order
      }
    }
  });
  int best = steps - 1;
  double best_err = std::numeric_limits<double>::infinity();
  for (int s = 0; s < steps; ++s) {
    const double t = total[size_t(s)];
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
