#include "kernels/quant/int4.h"

#include <algorithm>
#include <cstddef>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/parallel.h"

namespace edgegen::kernels::quant {

#if defined(EDGEGEN_HAVE_AVX2)
// int4_avx2.cpp
void int4_rows_avx2(const uint8_t* row, const float* x, int64_t ldx, int m, int64_t k, int64_t group,
                    const float* scale, float* out);
void int4_dequant_row_avx2(const uint8_t* row, int64_t k, int64_t group, const float* scale, const uint8_t* zero,
                           float* w);
#endif

namespace {

float int4_dot_scalar(const uint8_t* packed, const float* x, int64_t len) {
  float acc = 0.0f;
  for (int64_t b = 0; b < len; b += 32) {
    const uint8_t* p = packed + b / 2;
    for (int j = 0; j < 16; ++j) {
      acc += float(p[j] & 0x0f) * x[b + j];
      acc += float(p[j] >> 4) * x[b + 16 + j];
    }
  }
  return acc;
}

}  // namespace

void pack_int4(const uint8_t* q, int64_t n, int64_t k, uint8_t* packed) {
  for (int64_t r = 0; r < n; ++r)
    for (int64_t b = 0; b < k; b += 32)
      for (int j = 0; j < 16; ++j)
        packed[(r * k + b) / 2 + j] = uint8_t((q[r * k + b + j] & 0x0f) | ((q[r * k + b + 16 + j] & 0x0f) << 4));
}

void unpack_int4(const uint8_t* packed, int64_t n, int64_t k, uint8_t* q) {
  for (int64_t r = 0; r < n; ++r)
    for (int64_t b = 0; b < k; b += 32)
      for (int j = 0; j < 16; ++j) {
        const uint8_t v = packed[(r * k + b) / 2 + j];
        q[r * k + b + j] = v & 0x0f;
        q[r * k + b + 16 + j] = v >> 4;
      }
}

void int4_gemv(const float* x, int64_t m, int64_t n, int64_t k, const uint8_t* packed, const float* scale,
               const uint8_t* zero, int64_t group, const float* bias, float* out, int num_threads) {
  const int64_t groups = k / group;
  // Per-group sums of x, for the zero-point term.
  std::vector<float> xsum(size_t(m * groups));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t g = 0; g < groups; ++g) {
      float s = 0.0f;
      for (int64_t t = 0; t < group; ++t) s += x[i * k + g * group + t];
      xsum[size_t(i * groups + g)] = s;
    }
  const bool avx2 = best_isa() == Isa::Avx2;
  (void)avx2;
  parallel_for(n, num_threads, [&](int64_t r) {
    const uint8_t* row = packed + r * k / 2;
    const float* sc = scale + r * groups;
    const uint8_t* zr = zero + r * groups;
    for (int64_t i0 = 0; i0 < m; i0 += 4) {
      const int rows = int(std::min<int64_t>(4, m - i0));
      float dots[4];
#if defined(EDGEGEN_HAVE_AVX2)
      if (avx2) {
        int4_rows_avx2(row, x + i0 * k, k, rows, k, group, sc, dots);
      } else
#endif
      {
        for (int i = 0; i < rows; ++i) {
          float acc = 0.0f;
          for (int64_t g = 0; g < groups; ++g) acc += sc[g] * int4_dot_scalar(row + g * group / 2, x + (i0 + i) * k + g * group, group);
          dots[i] = acc;
        }
      }
      for (int i = 0; i < rows; ++i) {
        float zterm = 0.0f;  // sum_g scale_g * zero_g * sum_{k in g} x_k
        for (int64_t g = 0; g < groups; ++g) zterm += sc[g] * float(zr[g]) * xsum[size_t((i0 + i) * groups + g)];
        out[(i0 + i) * n + r] = dots[i] - zterm + (bias ? bias[r] : 0.0f);
      }
    }
  });
}

void int4_dequantize_rows(const uint8_t* packed, const float* scale, const uint8_t* zero, int64_t k, int64_t group,
                          int64_t n0, int64_t n1, float* w, int num_threads) {
  const int64_t groups = k / group;
  const bool avx2 = best_isa() == Isa::Avx2;
  (void)avx2;
  parallel_for(n1 - n0, num_threads, [&](int64_t rr) {
    const int64_t r = n0 + rr;
    const uint8_t* row = packed + r * k / 2;
    float* o = w + rr * k;
#if defined(EDGEGEN_HAVE_AVX2)
    if (avx2) {
      int4_dequant_row_avx2(row, k, group, scale + r * groups, zero + r * groups, o);
      return;
    }
#endif
    for (int64_t b = 0; b < k; b += 32) {
      for (int j = 0; j < 16; ++j) {
        const uint8_t v = row[b / 2 + j];
        const int64_t g0 = r * groups + (b + j) / group, g1 = r * groups + (b + 16 + j) / group;
        o[b + j] = float(int(v & 0x0f) - int(zero[g0])) * scale[g0];
        o[b + 16 + j] = float(int(v >> 4) - int(zero[g1])) * scale[g1];
      }
    }
  });
}

}  // namespace edgegen::kernels::quant
