// AVX2 + FMA kernels for the INT4 weight-only linear layer (see int4.h for the packing).
#include <immintrin.h>

#include <cstdint>

namespace edgegen::kernels::quant {

namespace {

inline float hsum(__m256 s) {
  __m128 v = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  v = _mm_add_ps(v, _mm_movehl_ps(v, v));
  v = _mm_add_ss(v, _mm_shuffle_ps(v, v, 1));
  return _mm_cvtss_f32(v);
}

// The 32 weights of one packed block as four vectors of 8 floats (k order).
inline void unpack_block(const uint8_t* p, __m256 w[4]) {
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i low4 = _mm_set1_epi8(0x0f);
  const __m128i lo = _mm_and_si128(bytes, low4);
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), low4);
  w[0] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
  w[1] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
  w[2] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
  w[3] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
}

// A independent accumulators per activation row (the four FMAs of a block would otherwise form
// one dependency chain: FMA latency, not throughput, would set the pace at small M).
template <int M>
void rows_m(const uint8_t* row, const float* x, int64_t ldx, int64_t k, int64_t group, const float* scale,
            float* out) {
  constexpr int A = M == 1 ? 4 : 2;
  __m256 total[M];
  for (int i = 0; i < M; ++i) total[i] = _mm256_setzero_ps();
  for (int64_t g0 = 0; g0 < k; g0 += group) {
    __m256 acc[M][A];
    for (int i = 0; i < M; ++i)
      for (int a = 0; a < A; ++a) acc[i][a] = _mm256_setzero_ps();
    for (int64_t b = g0; b < g0 + group; b += 32) {
      __m256 w[4];
      unpack_block(row + b / 2, w);
      for (int i = 0; i < M; ++i) {
        const float* xi = x + i * ldx + b;
        for (int t = 0; t < 4; ++t) acc[i][t % A] = _mm256_fmadd_ps(w[t], _mm256_loadu_ps(xi + 8 * t), acc[i][t % A]);
      }
    }
    const __m256 s = _mm256_set1_ps(scale[g0 / group]);
    for (int i = 0; i < M; ++i) {
      __m256 sum = acc[i][0];
      for (int a = 1; a < A; ++a) sum = _mm256_add_ps(sum, acc[i][a]);
      total[i] = _mm256_fmadd_ps(sum, s, total[i]);
    }
  }
  for (int i = 0; i < M; ++i) out[i] = hsum(total[i]);
}

}  // namespace

// out[i] = sum_g scale_g * sum_{k in g} q_k x_i[k] for i < m (m <= 4): one weight row against up to
// four activation rows, the weights unpacked once.
void int4_rows_avx2(const uint8_t* row, const float* x, int64_t ldx, int m, int64_t k, int64_t group,
                    const float* scale, float* out) {
  switch (m) {
    case 4: rows_m<4>(row, x, ldx, k, group, scale, out); break;
    case 3: rows_m<3>(row, x, ldx, k, group, scale, out); break;
    case 2: rows_m<2>(row, x, ldx, k, group, scale, out); break;
    default: rows_m<1>(row, x, ldx, k, group, scale, out); break;
  }
}

// One dequantised weight row: w[k] = (q_k - zero_g) * scale_g.
void int4_dequant_row_avx2(const uint8_t* row, int64_t k, int64_t group, const float* scale, const uint8_t* zero,
                           float* w) {
  for (int64_t b = 0; b < k; b += 32) {
    __m256 v[4];
    unpack_block(row + b / 2, v);
    const int64_t g = b / group;
    const __m256 z = _mm256_set1_ps(float(zero[g])), s = _mm256_set1_ps(scale[g]);
    for (int t = 0; t < 4; ++t) _mm256_storeu_ps(w + b + 8 * t, _mm256_mul_ps(_mm256_sub_ps(v[t], z), s));
  }
}

}  // namespace edgegen::kernels::quant
