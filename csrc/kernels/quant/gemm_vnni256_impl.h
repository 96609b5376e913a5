// The INT8 GEMM tile on 256-bit vpdpbusd, written once and compiled twice, each time inside the
// TU's own namespace after it defines EDGEGEN_DPBUSD256(c, a, w) (c + four u8 x s8 products per
// int32 lane, exact):
//   vnni256_vex.cpp   AVX-VNNI, VEX encoding (-mavxvnni): Intel client cores without AVX-512;
//   vnni256_evex.cpp  AVX-512 VNNI + VL, EVEX encoding: the same instruction on AVX-512 CPUs,
//                     which is also how a machine without AVX-VNNI runs this tile.
// A [R <= 6 rows x 16 features] tile: per k quad, one panel block (64 bytes = two YMM), one
// broadcast activation quad per row and two vpdpbusd per row; 12 accumulators, two weight and one
// activation register fit the 16 YMM registers of the VEX encoding. With few rows the K loop
// spreads consecutive quads over U independent accumulator sets (vpdpbusd has a latency of
// several cycles), added at the end.

template <int R, int U>
void vnni256_tile(const uint8_t* a, int64_t lda, const int8_t* panel, int64_t kp, int32_t* acc, int64_t acc_ld,
                  bool accumulate) {
  __m256i c[U][R][2];
#pragma GCC unroll 4
  for (int u = 0; u < U; ++u)
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r)
      for (int h = 0; h < 2; ++h)
        c[u][r][h] = (u == 0 && accumulate)
                         ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + r * acc_ld + 8 * h))
                         : _mm256_setzero_si256();
  const int64_t nq = kp / 4;
  int64_t q = 0;
  for (; q + U <= nq; q += U) {
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) {
      const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel + (q + u) * 64));
      const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel + (q + u) * 64 + 32));
#pragma GCC unroll 6
      for (int r = 0; r < R; ++r) {
        int32_t quad;
        std::memcpy(&quad, a + r * lda + 4 * (q + u), 4);
        const __m256i av = _mm256_set1_epi32(quad);
        c[u][r][0] = EDGEGEN_DPBUSD256(c[u][r][0], av, w0);
        c[u][r][1] = EDGEGEN_DPBUSD256(c[u][r][1], av, w1);
      }
    }
  }
  for (; q < nq; ++q) {
    const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel + q * 64));
    const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel + q * 64 + 32));
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      int32_t quad;
      std::memcpy(&quad, a + r * lda + 4 * q, 4);
      const __m256i av = _mm256_set1_epi32(quad);
      c[0][r][0] = EDGEGEN_DPBUSD256(c[0][r][0], av, w0);
      c[0][r][1] = EDGEGEN_DPBUSD256(c[0][r][1], av, w1);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r)
    for (int h = 0; h < 2; ++h) {
      __m256i v = c[0][r][h];
#pragma GCC unroll 4
      for (int u = 1; u < U; ++u) v = _mm256_add_epi32(v, c[u][r][h]);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + r * acc_ld + 8 * h), v);
    }
}

// One [rows <= 6, 16] tile over kp (a multiple of 4) of the packed K; acc rows acc_ld apart.
inline void vnni256_tile_rows(const uint8_t* a, int64_t lda, int rows, const int8_t* panel, int64_t kp, int32_t* acc,
                              int64_t acc_ld, bool accumulate) {
  switch (rows) {
    case 6: return vnni256_tile<6, 1>(a, lda, panel, kp, acc, acc_ld, accumulate);
    case 5: return vnni256_tile<5, 1>(a, lda, panel, kp, acc, acc_ld, accumulate);
    case 4: return vnni256_tile<4, 1>(a, lda, panel, kp, acc, acc_ld, accumulate);
    case 3: return vnni256_tile<3, 2>(a, lda, panel, kp, acc, acc_ld, accumulate);
    case 2: return vnni256_tile<2, 3>(a, lda, panel, kp, acc, acc_ld, accumulate);
    default: return vnni256_tile<1, 6>(a, lda, panel, kp, acc, acc_ld, accumulate);
  }
}
