// AVX2 tile of the INT8 GEMM (compiled with -mavx2 -mfma). See gemm.h for the packing.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/quant/gemm.h"

namespace edgegen::kernels::quant {

namespace {

// u7 activations: vpmaddubsw (u8 x s8 -> pairs in int16, no saturation since a <= 127), then
// vpmaddwd with ones to int32. Named accumulators rather than arrays: with arrays GCC keeps
// copying (and spilling) them inside the loop.
#define EDGEGEN_U7_ROW(r, c0, c1)                                                            \
  if (R > r) {                                                                               \
    int32_t quad;                                                                            \
    std::memcpy(&quad, a + r * lda + 4 * q, 4);                                              \
    const __m256i av = _mm256_set1_epi32(quad);                                              \
    c0 = _mm256_add_epi32(c0, _mm256_madd_epi16(_mm256_maddubs_epi16(av, w0), ones));        \
    c1 = _mm256_add_epi32(c1, _mm256_madd_epi16(_mm256_maddubs_epi16(av, w1), ones));        \
  }

#define EDGEGEN_LOAD_ACC(r, c0, c1)                                                     \
  if (accumulate && R > r) {                                                          \
    c0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + r * kPanel));      \
    c1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + r * kPanel + 8));  \
  }

template <int R>
void tile_u7(const uint8_t* a, int64_t lda, const int8_t* panel, int64_t kp, int32_t* acc, bool accumulate) {
  __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00,
          c31 = c00;
  EDGEGEN_LOAD_ACC(0, c00, c01)
  EDGEGEN_LOAD_ACC(1, c10, c11)
  EDGEGEN_LOAD_ACC(2, c20, c21)
  EDGEGEN_LOAD_ACC(3, c30, c31)
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t q = 0; q < kp / 4; ++q) {
    const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel + q * 64));
    const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel + q * 64 + 32));
    EDGEGEN_U7_ROW(0, c00, c01)
    EDGEGEN_U7_ROW(1, c10, c11)
    EDGEGEN_U7_ROW(2, c20, c21)
    EDGEGEN_U7_ROW(3, c30, c31)
  }
  const __m256i out[8] = {c00, c01, c10, c11, c20, c21, c30, c31};
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + r * kPanel), out[2 * r]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + r * kPanel + 8), out[2 * r + 1]);
  }
}
#undef EDGEGEN_U7_ROW
#undef EDGEGEN_LOAD_ACC

// Full-range u8 activations: widen both operands to int16 and use vpmaddwd (exact).
// Per 32-bit lane j the packed weights hold (w0 w1 w2 w3) of column j; the activations' quad is
// split into the pairs (a0 a1) and (a2 a3) and each pair meets the matching weight pair.
template <int R>
void tile_u8(const uint8_t* a, int64_t lda, const int8_t* panel, int64_t kp, int32_t* acc, bool accumulate) {
  __m256i c0[R], c1[R];
  for (int r = 0; r < R; ++r) {
    c0[r] = accumulate ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + r * kPanel)) : _mm256_setzero_si256();
    c1[r] = accumulate ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + r * kPanel + 8))
                       : _mm256_setzero_si256();
  }
  for (int64_t q = 0; q < kp / 4; ++q) {
    const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel + q * 64));
    const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel + q * 64 + 32));
    // Even/odd int16 halves of each 32-bit lane: (w0 w1) -> lane as 2 x int16 sign-extended.
    const __m256i w0_lo = _mm256_srai_epi16(_mm256_slli_epi16(w0, 8), 8);  // bytes 0, 2 of each pair
    const __m256i w0_hi = _mm256_srai_epi16(w0, 8);                        // bytes 1, 3
    const __m256i w1_lo = _mm256_srai_epi16(_mm256_slli_epi16(w1, 8), 8);
    const __m256i w1_hi = _mm256_srai_epi16(w1, 8);
    for (int r = 0; r < R; ++r) {
      const uint8_t* ar = a + r * lda + 4 * q;
      // int16 lanes per 32-bit lane: (a0, a2) meet (w0, w2) in the lo form; (a1, a3) the hi form.
      const __m256i a_lo = _mm256_set1_epi32(int32_t(uint32_t(ar[0]) | (uint32_t(ar[2]) << 16)));
      const __m256i a_hi = _mm256_set1_epi32(int32_t(uint32_t(ar[1]) | (uint32_t(ar[3]) << 16)));
      c0[r] = _mm256_add_epi32(c0[r], _mm256_add_epi32(_mm256_madd_epi16(a_lo, w0_lo), _mm256_madd_epi16(a_hi, w0_hi)));
      c1[r] = _mm256_add_epi32(c1[r], _mm256_add_epi32(_mm256_madd_epi16(a_lo, w1_lo), _mm256_madd_epi16(a_hi, w1_hi)));
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + r * kPanel), c0[r]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + r * kPanel + 8), c1[r]);
  }
}

}  // namespace

void tile_avx2(const uint8_t* a, int64_t lda, int rows, const int8_t* panel, int64_t kp, bool u7, int32_t* acc,
               bool accumulate) {
  switch (rows) {
    case 4: u7 ? tile_u7<4>(a, lda, panel, kp, acc, accumulate) : tile_u8<4>(a, lda, panel, kp, acc, accumulate); break;
    case 3: u7 ? tile_u7<3>(a, lda, panel, kp, acc, accumulate) : tile_u8<3>(a, lda, panel, kp, acc, accumulate); break;
    case 2: u7 ? tile_u7<2>(a, lda, panel, kp, acc, accumulate) : tile_u8<2>(a, lda, panel, kp, acc, accumulate); break;
    default: u7 ? tile_u7<1>(a, lda, panel, kp, acc, accumulate) : tile_u8<1>(a, lda, panel, kp, acc, accumulate);
  }
}

}  // namespace edgegen::kernels::quant

namespace edgegen::kernels::quant {

// Epilogue of a full-width tile (16 columns): zero-point compensation, then int32 out, or float
// out = acc * a_scale * w_scale[j] (+ bias[j]), 8 columns at a time; multiply, then add (two
// roundings, as the scalar epilogue and the reference: no FMA, whatever the path).
void store_tile_avx2(const int32_t* acc, int rows, int32_t a_zero_point, const int32_t* row_sum, const GemmOutput& out,
                     int64_t n, int64_t i, int64_t j0) {
  const __m256i zp = _mm256_set1_epi32(a_zero_point);
  for (int h = 0; h < 2; ++h) {
    const int64_t j = j0 + 8 * h;
    const __m256i comp = _mm256_mullo_epi32(zp, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row_sum + j)));
    __m256 scale = _mm256_setzero_ps(), bias = _mm256_setzero_ps();
    if (!out.out_i32) {
      scale = _mm256_mul_ps(_mm256_set1_ps(out.a_scale), _mm256_loadu_ps(out.w_scale + j));
      if (out.bias) bias = _mm256_loadu_ps(out.bias + j);
    }
    for (int r = 0; r < rows; ++r) {
      const __m256i v = _mm256_sub_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + r * kPanel + 8 * h)),
                                         comp);
      const int64_t o = (i + r) * n + j;
      if (out.out_i32) _mm256_storeu_si256(reinterpret_cast<__m256i*>(out.out_i32 + o), v);
      else _mm256_storeu_ps(out.out_f32 + o, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(v), scale), bias));
    }
  }
}

}  // namespace edgegen::kernels::quant

namespace edgegen::kernels::quant {

// Activation quantization on AVX2: the same float operations as the scalar loops (bit-identical
// codes), 8 values at a time, the tail scalar.
// min/max (from *lo, *hi) and whether every value is finite, in one pass.
bool finite_minmax_avx2(const float* x, int64_t n, float* lo, float* hi) {
  __m256 vlo = _mm256_set1_ps(*lo), vhi = _mm256_set1_ps(*hi), bad = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    vlo = _mm256_min_ps(vlo, v);
    vhi = _mm256_max_ps(vhi, v);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_sub_ps(v, v), _mm256_setzero_ps(), _CMP_NEQ_UQ));
  }
  alignas(32) float l[8], h[8];
  _mm256_store_ps(l, vlo);
  _mm256_store_ps(h, vhi);
  float a = *lo, b = *hi;
  for (int t = 0; t < 8; ++t) {
    a = l[t] < a ? l[t] : a;
    b = h[t] > b ? h[t] : b;
  }
  bool ok = _mm256_movemask_ps(bad) == 0;
  for (; i < n; ++i) {
    a = x[i] < a ? x[i] : a;
    b = x[i] > b ? x[i] : b;
    ok &= (x[i] - x[i]) == 0.0f;
  }
  *lo = a;
  *hi = b;
  return ok;
}

void quantize_row_u7_avx2(const float* x, int64_t k, float inv, float zp, uint8_t* out) {
  const __m256 vinv = _mm256_set1_ps(inv), vzp = _mm256_set1_ps(zp), zero = _mm256_setzero_ps(),
               top = _mm256_set1_ps(127.0f);
  int64_t j = 0;
  for (; j + 8 <= k; j += 8) {
    const __m256 r = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + j), vinv),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256i q = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_add_ps(r, vzp), zero), top));
    const __m128i p16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    const __m128i p8 = _mm_packus_epi16(p16, p16);
    std::memcpy(out + j, &p8, 8);
  }
  for (; j < k; ++j) {
    float v = __builtin_nearbyintf(x[j] * inv) + zp;
    v = v < 0.0f ? 0.0f : (v > 127.0f ? 127.0f : v);
    out[j] = uint8_t(v);
  }
}

}  // namespace edgegen::kernels::quant
