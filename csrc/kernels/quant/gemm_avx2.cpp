// AVX2 tile of the INT8 GEMM (compiled with -mavx2 -mfma). See gemm.h for the packing.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/quant/gemm.h"

namespace edgegen::kernels::quant {

namespace {

// u7 activations: vpmaddubsw (u8 x s8 -> pairs in int16, no saturation since a <= 127), then
// vpmaddwd with ones to int32.
template <int R>
void tile_u7(const uint8_t* a, int64_t lda, const int8_t* panel, int64_t kp, int32_t* acc) {
  __m256i c0[R], c1[R];
  for (int r = 0; r < R; ++r) c0[r] = c1[r] = _mm256_setzero_si256();
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t q = 0; q < kp / 4; ++q) {
    const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel + q * 64));
    const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel + q * 64 + 32));
    for (int r = 0; r < R; ++r) {
      int32_t quad;
      std::memcpy(&quad, a + r * lda + 4 * q, 4);
      const __m256i av = _mm256_set1_epi32(quad);
      c0[r] = _mm256_add_epi32(c0[r], _mm256_madd_epi16(_mm256_maddubs_epi16(av, w0), ones));
      c1[r] = _mm256_add_epi32(c1[r], _mm256_madd_epi16(_mm256_maddubs_epi16(av, w1), ones));
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + r * kPanel), c0[r]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + r * kPanel + 8), c1[r]);
  }
}

// Full-range u8 activations: widen both operands to int16 and use vpmaddwd (exact).
// Per 32-bit lane j the packed weights hold (w0 w1 w2 w3) of column j; the activations' quad is
// split into the pairs (a0 a1) and (a2 a3) and each pair meets the matching weight pair.
template <int R>
void tile_u8(const uint8_t* a, int64_t lda, const int8_t* panel, int64_t kp, int32_t* acc) {
  __m256i c0[R], c1[R];
  for (int r = 0; r < R; ++r) c0[r] = c1[r] = _mm256_setzero_si256();
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

void tile_avx2(const uint8_t* a, int64_t lda, int rows, const int8_t* panel, int64_t kp, bool u7, int32_t* acc) {
  switch (rows) {
    case 4: u7 ? tile_u7<4>(a, lda, panel, kp, acc) : tile_u8<4>(a, lda, panel, kp, acc); break;
    case 3: u7 ? tile_u7<3>(a, lda, panel, kp, acc) : tile_u8<3>(a, lda, panel, kp, acc); break;
    case 2: u7 ? tile_u7<2>(a, lda, panel, kp, acc) : tile_u8<2>(a, lda, panel, kp, acc); break;
    default: u7 ? tile_u7<1>(a, lda, panel, kp, acc) : tile_u8<1>(a, lda, panel, kp, acc); break;
  }
}

}  // namespace edgegen::kernels::quant
