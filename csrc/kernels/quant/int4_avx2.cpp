// AVX2 + FMA kernels for the INT4 linear layers (see int4.h for the packing: the 8 words of a
// 64-feature chunk, shifted by 4t and masked, give 8 lanes ready to convert, no shuffles; its bytes
// masked and shifted give the nibbles facing the prepared 8-bit activation codes).
#include <immintrin.h>

#include <cstdint>

#include "kernels/quant/int4.h"

namespace edgegen::kernels::quant {

namespace {

inline float hsum(__m256 s) {
  __m128 v = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  v = _mm_add_ps(v, _mm_movehl_ps(v, v));
  v = _mm_add_ss(v, _mm_shuffle_ps(v, v, 1));
  return _mm_cvtss_f32(v);
}

inline __m256 nibble_plane(__m256i words, int t) {
  return _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(words, 4 * t), _mm256_set1_epi32(0x0f)));
}

// Per-lane scales of one chunk: lanes 0-3 hold features of its first 32, lanes 4-7 of its second.
inline __m256 chunk_scale(const float* scale, int64_t c, int64_t group) {
  return _mm256_setr_m128(_mm_set1_ps(scale[c / group]), _mm_set1_ps(scale[(c + 32) / group]));
}

// xp: activations permuted to the packed lane order. A accumulators per row break the FMA chain.
template <int M>
void rows_m(const uint8_t* row, const float* xp, int64_t ldx, int64_t k, int64_t group, const float* scale,
            float* out) {
  constexpr int A = M == 1 ? 4 : 2;
  __m256 total[M][A];
  for (int i = 0; i < M; ++i)
    for (int a = 0; a < A; ++a) total[i][a] = _mm256_setzero_ps();
  for (int64_t c = 0; c < k; c += 64) {
    const __m256i words = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + c / 2));
    __m256 acc[M][A];
    for (int i = 0; i < M; ++i)
      for (int a = 0; a < A; ++a) acc[i][a] = _mm256_setzero_ps();
    for (int t = 0; t < 8; ++t) {
      const __m256 w = nibble_plane(words, t);
      for (int i = 0; i < M; ++i)
        acc[i][t % A] = _mm256_fmadd_ps(w, _mm256_loadu_ps(xp + i * ldx + c + 8 * t), acc[i][t % A]);
    }
    const __m256 s = chunk_scale(scale, c, group);  // once per chunk, not per plane
    for (int i = 0; i < M; ++i)
      for (int a = 0; a < A; ++a) total[i][a] = _mm256_fmadd_ps(acc[i][a], s, total[i][a]);
  }
  for (int i = 0; i < M; ++i) {
    __m256 sum = total[i][0];
    for (int a = 1; a < A; ++a) sum = _mm256_add_ps(sum, total[i][a]);
    out[i] = hsum(sum);
  }
}

// The zero points of a chunk as floats, lanes laid out as chunk_scale's.
inline __m256 chunk_zero(const uint8_t* zero, int64_t c, int64_t group) {
  return _mm256_setr_m128(_mm_set1_ps(float(zero[c / group])), _mm_set1_ps(float(zero[(c + 32) / group])));
}

// W4A8: per chunk, vpmaddubsw of the low / high nibbles (u8) with their codes (s8) gives int16
// pair sums of at most 2 * 15 * 127 (no saturation), vpmaddwd with ones the 8 int32 lane dots;
// each lane then adds scale * sx * dot, and the zero points come off once per row:
// sum_g scale_g * zero_g * zero_sum_g.
template <int M>
void rows_a8_m(const uint8_t* row, const A8Rows& a, int64_t i0, int64_t group, const float* scale,
               const uint8_t* zero, float* out) {
  __m256 total[M][2];
  for (int i = 0; i < M; ++i) total[i][0] = total[i][1] = _mm256_setzero_ps();
  const __m256i nib = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
  for (int64_t c = 0; c < a.k / 64; ++c) {
    const int64_t b = c / 2, half = c % 2;
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 32 * c));
    const __m256i lo = _mm256_and_si256(w, nib), hi = _mm256_and_si256(_mm256_srli_epi16(w, 4), nib);
    const __m256 ws = chunk_scale(scale, 64 * c, group);
    for (int i = 0; i < M; ++i) {
      const int64_t blk = (i0 + i) * a.blocks + b;
      const int8_t* cd = a.codes + blk * 128 + 32 * half;
      const __m256i p = _mm256_add_epi16(
          _mm256_maddubs_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cd))),
          _mm256_maddubs_epi16(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cd + 64))));
      const __m256 f = _mm256_mul_ps(ws, _mm256_loadu_ps(a.lane_scale + blk * 16 + 8 * half));
      total[i][half] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones)), f, total[i][half]);
    }
  }
  const int64_t groups = a.k / group;
  for (int i = 0; i < M; ++i) {
    const float* zs = a.zero_sum + (i0 + i) * groups;
    float zterm = 0.0f;
    for (int64_t g = 0; g < groups; ++g) zterm += scale[g] * float(zero[g]) * zs[g];
    out[i] = hsum(_mm256_add_ps(total[i][0], total[i][1])) - zterm;
  }
}

}  // namespace

void int4_rows_a8_avx2(const uint8_t* row, const A8Rows& a, int64_t i0, int m, int64_t group, const float* scale,
                       const uint8_t* zero, float* out) {
  with_rows(m, [&](auto M) { rows_a8_m<decltype(M)::value>(row, a, i0, group, scale, zero, out); });
}

// out[i] = sum_g scale_g * sum_{k in g} q_k x_i[k] for i < m (m <= 4), with xp the activations in
// packed lane order: one weight row against up to four activation rows, unpacked once.
void int4_rows_avx2(const uint8_t* row, const float* xp, int64_t ldx, int m, int64_t k, int64_t group,
                    const float* scale, float* out) {
  with_rows(m, [&](auto M) { rows_m<decltype(M)::value>(row, xp, ldx, k, group, scale, out); });
}

// One dequantised weight row, in natural k order: w[k] = (q_k - zero_g) * scale_g.
void int4_dequant_row_avx2(const uint8_t* row, int64_t k, int64_t group, const float* scale, const uint8_t* zero,
                           float* w) {
  for (int64_t c = 0; c < k; c += 64) {
    const __m256i words = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + c / 2));
    const __m256 s = chunk_scale(scale, c, group);
    const __m256 z = chunk_zero(zero, c, group);
    for (int t = 0; t < 8; ++t) {
      const __m256 v = _mm256_mul_ps(_mm256_sub_ps(nibble_plane(words, t), z), s);
      _mm_storeu_ps(w + c + 4 * t, _mm256_castps256_ps128(v));
      _mm_storeu_ps(w + c + 32 + 4 * t, _mm256_extractf128_ps(v, 1));
    }
  }
}

}  // namespace edgegen::kernels::quant
