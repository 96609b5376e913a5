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

// Byte offset (within a row) and shift of the nibble holding input feature k.
inline void nibble_at(int64_t k, int64_t* byte, int* shift) {
  const int64_t chunk = k / 64, r = k % 64, half = r / 32, t = (r % 32) / 4, lane = r % 4;
  const int64_t word = half * 4 + lane;
  *byte = chunk * 32 + word * 4 + t / 2;
  *shift = int(t % 2) * 4;
}

float int4_dot_scalar(const uint8_t* row, int64_t k0, const float* x, int64_t len) {
  float acc = 0.0f;
  for (int64_t kk = k0; kk < k0 + len; ++kk) {
    int64_t byte;
    int shift;
    nibble_at(kk, &byte, &shift);
    acc += float((row[byte] >> shift) & 0x0f) * x[kk - k0];
  }
  return acc;
}

}  // namespace

Isa int4_isa() {
  return pick_isa({Isa::Avx2, Isa::Scalar});
}

void pack_int4(const uint8_t* q, int64_t n, int64_t k, uint8_t* packed) {
  for (int64_t r = 0; r < n; ++r) {
    uint8_t* row = packed + r * k / 2;
    for (int64_t i = 0; i < k / 2; ++i) row[i] = 0;
    for (int64_t kk = 0; kk < k; ++kk) {
      int64_t byte;
      int shift;
      nibble_at(kk, &byte, &shift);
      row[byte] = uint8_t(row[byte] | ((q[r * k + kk] & 0x0f) << shift));
    }
  }
}

void unpack_int4(const uint8_t* packed, int64_t n, int64_t k, uint8_t* q) {
  for (int64_t r = 0; r < n; ++r)
    for (int64_t kk = 0; kk < k; ++kk) {
      int64_t byte;
      int shift;
      nibble_at(kk, &byte, &shift);
      q[r * k + kk] = (packed[r * k / 2 + byte] >> shift) & 0x0f;
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
  const bool avx2 = int4_isa() == Isa::Avx2;
  // The activations in the lane order of the packed words (see int4.h), for the vector path.
  std::vector<float> xp;
  if (avx2) {
    xp.resize(size_t(m * k));
    for (int64_t i = 0; i < m; ++i)
      for (int64_t c = 0; c < k; c += 64)
        for (int t = 0; t < 8; ++t)
          for (int l = 0; l < 8; ++l)
            xp[size_t(i * k + c + 8 * t + l)] = x[i * k + c + (l < 4 ? 4 * t + l : 32 + 4 * t + l - 4)];
  }
  parallel_for(n, num_threads, [&](int64_t r) {
    const uint8_t* row = packed + r * k / 2;
    const float* sc = scale + r * groups;
    const uint8_t* zr = zero + r * groups;
    for (int64_t i0 = 0; i0 < m; i0 += 4) {
      const int rows = int(std::min<int64_t>(4, m - i0));
      float dots[4];
#if defined(EDGEGEN_HAVE_AVX2)
      if (avx2) {
        int4_rows_avx2(row, xp.data() + i0 * k, k, rows, k, group, sc, dots);
      } else
#endif
      {
        for (int i = 0; i < rows; ++i) {
          float acc = 0.0f;
          for (int64_t g = 0; g < groups; ++g)
            acc += sc[g] * int4_dot_scalar(row, g * group, x + (i0 + i) * k + g * group, group);
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
  const bool avx2 = int4_isa() == Isa::Avx2;
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
    for (int64_t kk = 0; kk < k; ++kk) {
      int64_t byte;
      int shift;
      nibble_at(kk, &byte, &shift);
      const int64_t g = r * groups + kk / group;
      o[kk] = float(int((row[byte] >> shift) & 0x0f) - int(zero[g])) * scale[g];
    }
  });
}

}  // namespace edgegen::kernels::quant
