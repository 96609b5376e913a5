#include "kernels/quant/quantize.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "kernels/parallel.h"

namespace edgegen::kernels::quant {
namespace {

// Runs body(c, begin, end) over every contiguous [outer, c, :] row, in parallel over rows.
template <class F>
void for_rows(Layout l, int num_threads, const F& body) {
  parallel_for(l.outer * l.channels, num_threads, [&](int64_t r) {
    const int64_t c = r % l.channels;
    body(c, r * l.inner, (r + 1) * l.inner);
  });
}

// nearbyint(x * inv) in float, as an int64 that cannot overflow (saturated far outside any
// integer range, NaN to 0 like the reference's cast would be undefined: callers reject NaN).
inline int64_t round_scaled(float x, float inv) {
  const float v = std::nearbyint(x * inv);
  if (!(v > -1e18f)) return v != v ? 0 : INT64_MIN / 2;
  if (v > 1e18f) return INT64_MAX / 2;
  return int64_t(v);
}

}  // namespace

void quantize(const void* x, DType dtype, Layout l, const float* scale, const int32_t* zero_point, int32_t qmin,
              int32_t qmax, bool is_unsigned, void* out, int num_threads) {
  dispatch_float(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* in = static_cast<const T*>(x);
    for_rows(l, num_threads, [&](int64_t c, int64_t b, int64_t e) {
      const float inv = 1.0f / scale[c];
      const int64_t zp = zero_point[c];
      for (int64_t i = b; i < e; ++i) {
        const int64_t q = std::min<int64_t>(std::max<int64_t>(round_scaled(float(to_float(in[i])), inv) + zp, qmin), qmax);
        if (is_unsigned) static_cast<uint8_t*>(out)[i] = uint8_t(q);
        else static_cast<int8_t*>(out)[i] = int8_t(q);
      }
    });
  });
}

void dequantize(const void* q, bool is_unsigned, Layout l, const float* scale, const int32_t* zero_point,
                DType out_dtype, void* out, int num_threads) {
  dispatch_float(out_dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    T* o = static_cast<T*>(out);
    for_rows(l, num_threads, [&](int64_t c, int64_t b, int64_t e) {
      const float s = scale[c];
      const int64_t zp = zero_point[c];  // int64: v - zp overflows int32 for extreme zero points
      for (int64_t i = b; i < e; ++i) {
        const int32_t v = is_unsigned ? int32_t(static_cast<const uint8_t*>(q)[i]) : int32_t(static_cast<const int8_t*>(q)[i]);
        store_float(o + i, float(v - zp) * s);
      }
    });
  });
}

void fake_quantize(const void* x, DType dtype, Layout l, const float* scale, const int32_t* zero_point,
                   int32_t qmin, int32_t qmax, void* out, uint8_t* mask, int num_threads) {
  dispatch_float(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* in = static_cast<const T*>(x);
    T* o = static_cast<T*>(out);
    for_rows(l, num_threads, [&](int64_t c, int64_t b, int64_t e) {
      const float s = scale[c], inv = 1.0f / s;
      const int64_t zp = zero_point[c];
      for (int64_t i = b; i < e; ++i) {
        const float xv = float(to_float(in[i]));
        if (xv != xv) {  // NaN stays NaN and passes no gradient
          store_float(o + i, xv);
          if (mask) mask[i] = 0;
          continue;
        }
        const int64_t q = round_scaled(xv, inv) + zp;
        const int64_t qc = std::min<int64_t>(std::max<int64_t>(q, qmin), qmax);
        store_float(o + i, float(qc - zp) * s);
        if (mask) mask[i] = uint8_t(q >= qmin && q <= qmax);
      }
    });
  });
}

void fake_quantize_learnable_backward(const void* x, const void* dy, DType dtype, Layout l, const float* scale,
                                      const int32_t* zero_point, int32_t qmin, int32_t qmax, double grad_factor,
                                      void* dx, double* dscale, double* dzero_point, int num_threads) {
  // Per-row partial sums, reduced in row order afterwards: deterministic for any thread count.
  const int64_t rows = l.outer * l.channels;
  std::vector<double> ds(size_t(rows), 0.0), dz(size_t(rows), 0.0);
  dispatch_float(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* in = static_cast<const T*>(x);
    const T* g = static_cast<const T*>(dy);
    T* o = static_cast<T*>(dx);
    parallel_for(rows, num_threads, [&](int64_t r) {
      const int64_t c = r % l.channels;
      const float s = scale[c], inv = 1.0f / s;
      const int64_t zp = zero_point[c];
      double acc_s = 0.0, acc_z = 0.0;
      for (int64_t i = r * l.inner; i < (r + 1) * l.inner; ++i) {
        const float xv = float(to_float(in[i])), gv = float(to_float(g[i]));
        const int64_t qu = round_scaled(xv, inv) + zp;
        const int64_t q = std::min<int64_t>(std::max<int64_t>(qu, qmin), qmax);
        if (qu < qmin || qu > qmax) {
          store_float(o + i, 0.0f);
          acc_s += double(gv) * double(q - zp);
          acc_z += -double(gv) * double(s);
        } else {
          o[i] = g[i];  // passed through unchanged (a float64 gradient keeps its precision)
          const float xhat = float(q - zp) * s;
          acc_s += double(gv) * double((xhat - xv) * inv);
        }
      }
      ds[size_t(r)] = acc_s;
      dz[size_t(r)] = acc_z;
    });
  });
  for (int64_t c = 0; c < l.channels; ++c) dscale[c] = dzero_point[c] = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    dscale[r % l.channels] += ds[size_t(r)] * grad_factor;
    dzero_point[r % l.channels] += dz[size_t(r)] * grad_factor;
  }
}

}  // namespace edgegen::kernels::quant
