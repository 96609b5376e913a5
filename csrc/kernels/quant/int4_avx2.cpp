// AVX2 + FMA kernels for the INT4 linear layers (see int4.h for the packing: the 8 words of a
// 64-feature chunk, shifted by 4t and masked, give 8 lanes ready to convert, no shuffles; its bytes
// masked and shifted give the nibbles facing the prepared 8-bit activation codes).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "kernels/buffer_cache.h"
#include "kernels/parallel.h"
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


// The 8-bit activations of W4A8 in feature order, as int4_a8_codes_avx512 (the scalar loop's
// division and rounding: identical codes).
void int4_a8_codes_avx2(const float* x, int64_t m, int64_t k, int64_t group, int8_t* natural, float* group_scale,
                        float* zero_sum, int num_threads) {
  const int64_t groups = k / group;
  parallel_for(m, num_threads, [&](int64_t i) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int64_t g = 0; g < groups; ++g) {
      const float* xg = x + i * k + g * group;
      __m256 amax = _mm256_setzero_ps();
      for (int64_t t = 0; t < group; t += 8) amax = _mm256_max_ps(amax, _mm256_and_ps(absmask, _mm256_loadu_ps(xg + t)));
      __m128 h = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
      h = _mm_max_ps(h, _mm_movehl_ps(h, h));
      h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
      float s = _mm_cvtss_f32(h) / 127.0f;
      if (!(s > 0.0f)) s = 1.0f;
      const __m256 sv = _mm256_set1_ps(s), hi = _mm256_set1_ps(127.0f), lo = _mm256_set1_ps(-127.0f);
      __m256i sum = _mm256_setzero_si256();
      for (int64_t t = 0; t < group; t += 8) {
        const __m256 q = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(xg + t), sv),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __m256i c = _mm256_cvtps_epi32(_mm256_min_ps(hi, _mm256_max_ps(lo, q)));
        sum = _mm256_add_epi32(sum, c);
        const __m128i c16 = _mm_packs_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
        const __m128i c8 = _mm_packs_epi16(c16, c16);
        std::memcpy(natural + i * k + g * group + t, &c8, 8);
      }
      __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
      s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
      s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
      group_scale[i * groups + g] = s;
      zero_sum[i * groups + g] = s * float(_mm_cvtsi128_si32(s4));
    }
  });
}

// ---------------------------------------------------------------------------------------------
// W4A8 for many rows: the GEMM form (int4_a8_gemm_impl.h) with vpmaddubsw tiles of up to 4 rows x
// 16 features: per k quad and row, (c + 128) x (q - zero) pairs into int16 (at most 7650, no
// saturation), vpmaddwd with ones into the int32 lanes.
namespace isa_avx2_gemm {
#include "kernels/quant/int4_a8_gemm_impl.h"

template <int R>
void gemm_tile(const A8Gemm& g, const A8Rows& a, const uint8_t* au, int64_t i, int64_t p, const float* bias,
               float* out) {
  alignas(32) float f[R][16] = {};
  const int8_t* w = g.w + p * g.kq * 64;
  const int64_t qg = g.group / 4;
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t gi = 0; gi < g.groups; ++gi) {
    __m256i c[R][2];
    for (int r = 0; r < R; ++r) c[r][0] = c[r][1] = _mm256_setzero_si256();
    for (int64_t q = gi * qg; q < (gi + 1) * qg; ++q) {
      const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + q * 64));
      const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + q * 64 + 32));
      for (int r = 0; r < R; ++r) {
        int32_t quad;
        std::memcpy(&quad, au + (i + r) * g.k + 4 * q, 4);
        const __m256i av = _mm256_set1_epi32(quad);
        c[r][0] = _mm256_add_epi32(c[r][0], _mm256_madd_epi16(_mm256_maddubs_epi16(av, w0), ones));
        c[r][1] = _mm256_add_epi32(c[r][1], _mm256_madd_epi16(_mm256_maddubs_epi16(av, w1), ones));
      }
    }
    const int64_t o = gi * g.ld + p * kA8Panel;
    for (int h = 0; h < 2; ++h) {
      const __m256i s = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g.wsum.data() + o + 8 * h));
      const __m256 ws = _mm256_loadu_ps(g.wscale.data() + o + 8 * h);
      for (int r = 0; r < R; ++r) {
        const __m256 sx = _mm256_set1_ps(a.group_scale[(i + r) * g.groups + gi]);
        _mm256_store_ps(f[r] + 8 * h, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(c[r][h], s)),
                                                      _mm256_mul_ps(ws, sx), _mm256_load_ps(f[r] + 8 * h)));
      }
    }
  }
  const int64_t j0 = p * kA8Panel, cols = std::min<int64_t>(16, g.n - j0);
  for (int r = 0; r < R; ++r)
    for (int64_t c = 0; c < cols; ++c) out[(i + r) * g.n + j0 + c] = f[r][c] + (bias ? bias[j0 + c] : 0.0f);
}

template <int... Rs>
void gemm_rows(int rows, std::integer_sequence<int, Rs...>, const A8Gemm& g, const A8Rows& a, const uint8_t* au,
               int64_t i, int64_t p, const float* bias, float* out) {
  ((rows == Rs ? (gemm_tile<Rs>(g, a, au, i, p, bias, out), true) : false) || ...);
}
}  // namespace isa_avx2_gemm

void int4_linear_a8_gemm_avx2(const A8Rows& a, int64_t n, const uint8_t* packed, const float* scale,
                              const uint8_t* zero, int64_t group, const float* bias, float* out, int num_threads) {
  using namespace isa_avx2_gemm;
  a8_gemm_run<1, 4>(a, n, packed, scale, zero, group, num_threads,
                    [&](const A8Gemm& g, const A8Rows& ar, const uint8_t* au, int64_t i, int64_t p, int rows) {
                      gemm_rows(rows, std::integer_sequence<int, 4, 3, 2, 1>{}, g, ar, au, i, p, bias, out);
                    });
}

}  // namespace edgegen::kernels::quant
