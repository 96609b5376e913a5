// AVX-512 VNNI tiles of the INT8 GEMM (compiled with -mavx512f -mavx512bw -mavx512dq -mavx512vl
// -mavx512vnni; reached only when the CPU has them). See gemm.h for the packing: one 64-byte block
// holds 4 consecutive k of 16 output features, exactly the operand layout of vpdpbusd.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/quant/gemm.h"

namespace edgegen::kernels::quant {

namespace {

// R rows x P panels of accumulators, kept in registers. vpdpbusd has a latency of several cycles,
// so with few rows the K loop keeps U independent sets of accumulators (consecutive k quads go
// to different sets) and adds them at the end: R * P * U <= 24 of the 32 ZMM registers (beside
// P weight vectors and one broadcast). 8 rows x 3 panels: 11 loads per 24 vpdpbusd.
template <int R, int P, int U>
void tile(const uint8_t* a, int64_t lda, const int8_t* panel, int64_t ps, int64_t kp, int32_t* acc, int64_t acc_ld,
          bool accumulate) {
  __m512i c[U][R][P];
#pragma GCC unroll 4
  for (int u = 0; u < U; ++u)
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 3
      for (int p = 0; p < P; ++p)
        c[u][r][p] = (u == 0 && accumulate) ? _mm512_loadu_si512(acc + r * acc_ld + p * kPanel)
                                            : _mm512_setzero_si512();
  const int64_t nq = kp / 4;
  int64_t q = 0;
  for (; q + U <= nq; q += U) {
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) {
      __m512i w[P];
#pragma GCC unroll 3
      for (int p = 0; p < P; ++p) w[p] = _mm512_loadu_si512(panel + p * ps + (q + u) * 64);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        int32_t quad;
        std::memcpy(&quad, a + r * lda + 4 * (q + u), 4);
        const __m512i av = _mm512_set1_epi32(quad);
#pragma GCC unroll 3
        for (int p = 0; p < P; ++p) c[u][r][p] = _mm512_dpbusd_epi32(c[u][r][p], av, w[p]);
      }
    }
  }
  for (; q < nq; ++q) {
    __m512i w[P];
#pragma GCC unroll 3
    for (int p = 0; p < P; ++p) w[p] = _mm512_loadu_si512(panel + p * ps + q * 64);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      int32_t quad;
      std::memcpy(&quad, a + r * lda + 4 * q, 4);
      const __m512i av = _mm512_set1_epi32(quad);
#pragma GCC unroll 3
      for (int p = 0; p < P; ++p) c[0][r][p] = _mm512_dpbusd_epi32(c[0][r][p], av, w[p]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 3
    for (int p = 0; p < P; ++p) {
      __m512i v = c[0][r][p];
#pragma GCC unroll 4
      for (int u = 1; u < U; ++u) v = _mm512_add_epi32(v, c[u][r][p]);
      _mm512_storeu_si512(acc + r * acc_ld + p * kPanel, v);
    }
}

template <int P>
void tile_rows(int rows, const uint8_t* a, int64_t lda, const int8_t* panel, int64_t ps, int64_t kp, int32_t* acc,
               int64_t acc_ld, bool accumulate) {
  constexpr int U1 = P == 3 ? 4 : 8 / P, U2 = P == 3 ? 2 : 4 / P, U3 = P == 1 ? 2 : 1;  // independent chains for few rows
  switch (rows) {
    case 8: return tile<8, P, 1>(a, lda, panel, ps, kp, acc, acc_ld, accumulate);
    case 7: return tile<7, P, 1>(a, lda, panel, ps, kp, acc, acc_ld, accumulate);
    case 6: return tile<6, P, 1>(a, lda, panel, ps, kp, acc, acc_ld, accumulate);
    case 5: return tile<5, P, 1>(a, lda, panel, ps, kp, acc, acc_ld, accumulate);
    case 4: return tile<4, P, 1>(a, lda, panel, ps, kp, acc, acc_ld, accumulate);
    case 3: return tile<3, P, U3>(a, lda, panel, ps, kp, acc, acc_ld, accumulate);
    case 2: return tile<2, P, U2>(a, lda, panel, ps, kp, acc, acc_ld, accumulate);
    default: return tile<1, P, U1>(a, lda, panel, ps, kp, acc, acc_ld, accumulate);
  }
}

}  // namespace

void tile_avx512_vnni(const uint8_t* a, int64_t lda, int rows, const int8_t* panel, int64_t panel_stride, int panels,
                      int64_t kp, bool, int32_t* acc, int64_t acc_ld, bool accumulate) {
  if (panels == 3) return tile_rows<3>(rows, a, lda, panel, panel_stride, kp, acc, acc_ld, accumulate);
  if (panels == 2) return tile_rows<2>(rows, a, lda, panel, panel_stride, kp, acc, acc_ld, accumulate);
  tile_rows<1>(rows, a, lda, panel, panel_stride, kp, acc, acc_ld, accumulate);
}

// Zero-point compensation, then int32 out or float out = acc * a_scale * w_scale[j] (+ bias[j]);
// 16 columns at a time, the last ones masked; multiply, then add (rounded as the scalar epilogue).
void store_tile_avx512(const int32_t* acc, int64_t acc_ld, int rows, int64_t cols, int32_t a_zero_point,
                       const int32_t* row_sum, const GemmOutput& out, int64_t n, int64_t i, int64_t j0) {
  const __m512i zp = _mm512_set1_epi32(a_zero_point);
  for (int64_t c0 = 0; c0 < cols; c0 += kPanel) {
    const int64_t w = cols - c0 < kPanel ? cols - c0 : kPanel;
    const __mmask16 m = __mmask16((1u << w) - 1u);
    const int64_t j = j0 + c0;
    const __m512i comp = _mm512_mullo_epi32(zp, _mm512_maskz_loadu_epi32(m, row_sum + j));
    __m512 scale = _mm512_setzero_ps(), bias = _mm512_setzero_ps();
    if (!out.out_i32) {
      scale = _mm512_mul_ps(_mm512_set1_ps(out.a_scale), _mm512_maskz_loadu_ps(m, out.w_scale + j));
      if (out.bias) bias = _mm512_maskz_loadu_ps(m, out.bias + j);
    }
    for (int r = 0; r < rows; ++r) {
      const __m512i v = _mm512_sub_epi32(_mm512_loadu_si512(acc + r * acc_ld + c0), comp);
      const int64_t o = (i + r) * n + j;
      if (out.out_i32) _mm512_mask_storeu_epi32(out.out_i32 + o, m, v);
      else _mm512_mask_storeu_ps(out.out_f32 + o, m, _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(v), scale), bias));
    }
  }
}

}  // namespace edgegen::kernels::quant
