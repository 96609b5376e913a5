// AVX-512 VNNI kernel of the W4A8 INT4 linear layer (compiled with -mavx512f -mavx512bw
// -mavx512dq -mavx512vl -mavx512vnni; reached only when the CPU has them). One 64-byte load holds
// two packed chunks (128 features); its bytes masked and shifted give the low and high nibbles,
// and vpdpbusd adds each 32-bit lane's four nibble x code products exactly (u8 x s8 -> s32).
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

// Lane L of a block belongs to chunk L / 8 and, within it, to half (L % 8) / 4: the index of its
// group among the block's groups.
template <int G>
inline __m512i group_index() {
  if (G == 32) return _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
  if (G == 64) return _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  return _mm512_setzero_si512();
}

// One block's contribution to M rows' accumulators: the weights of two chunks (one for the last
// block of a K that is an odd number of chunks) unpacked once, then per row two vpdpbusd and the
// float epilogue scale * sx * dot (the zero points come off once per row, in rows_m).
template <int M, int G>
inline void block(const uint8_t* row, const A8Rows& a, int64_t i0, int64_t b, bool two, const float* scale,
                  __m512* total) {
  const __m512i nib = _mm512_set1_epi8(0x0f);
  const __m512i w = two ? _mm512_loadu_si512(row + 64 * b)
                        : _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 64 * b)));
  const __m512i lo = _mm512_and_si512(w, nib), hi = _mm512_and_si512(_mm512_srli_epi16(w, 4), nib);
  // The block's groups: 4 (2) of 32, 2 (1) of 64, or 1 of 128 features, for two chunks (one).
  constexpr int kFull = G == 128 ? 1 : 128 / G;
  const int count = two ? kFull : (G == 128 ? 1 : 64 / G);
  const __mmask16 mask = __mmask16((1u << count) - 1u);
  const int64_t g0 = 128 / G * b;
  const __m512 ws = _mm512_permutexvar_ps(group_index<G>(), _mm512_maskz_loadu_ps(mask, scale + g0));
#pragma GCC unroll 4
  for (int i = 0; i < M; ++i) {
    const int64_t blk = (i0 + i) * a.blocks + b;
    const int8_t* cd = a.codes + blk * 128;
    __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(cd));
    d = _mm512_dpbusd_epi32(d, hi, _mm512_loadu_si512(cd + 64));
    total[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_mul_ps(ws, _mm512_loadu_ps(a.lane_scale + blk * 16)),
                               total[i]);
  }
}

// Blocks in pairs with separate accumulators (two independent FMA chains per row).
template <int M, int G>
void rows_m(const uint8_t* row, const A8Rows& a, int64_t i0, const float* scale, const uint8_t* zero, float* out) {
  __m512 even[M], odd[M];
#pragma GCC unroll 4
  for (int i = 0; i < M; ++i) even[i] = odd[i] = _mm512_setzero_ps();
  const int64_t full = a.k / 128;  // blocks of two chunks
  int64_t b = 0;
  for (; b + 2 <= full; b += 2) {
    block<M, G>(row, a, i0, b, true, scale, even);
    block<M, G>(row, a, i0, b + 1, true, scale, odd);
  }
  if (b < full) block<M, G>(row, a, i0, b++, true, scale, even);
  if (b < a.blocks) block<M, G>(row, a, i0, b, false, scale, odd);
  // Zero points: minus sum_g scale_g * zero_g * zero_sum_g, 16 groups at a time.
  const int64_t groups = a.k / G;
  for (int64_t g = 0; g < groups; g += 16) {
    const __mmask16 mask = groups - g >= 16 ? __mmask16(0xffff) : __mmask16((1u << (groups - g)) - 1u);
    const __m512 sz = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, scale + g),
                                    _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, zero + g))));
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i)
      even[i] = _mm512_fnmadd_ps(sz, _mm512_maskz_loadu_ps(mask, a.zero_sum + (i0 + i) * groups + g), even[i]);
  }
#pragma GCC unroll 4
  for (int i = 0; i < M; ++i) out[i] = _mm512_reduce_add_ps(_mm512_add_ps(even[i], odd[i]));
}

}  // namespace

void int4_rows_a8_avx512_vnni(const uint8_t* row, const A8Rows& a, int64_t i0, int m, int64_t group,
                              const float* scale, const uint8_t* zero, float* out) {
  with_rows(m, [&](auto M) {
    if (group == 32) return rows_m<decltype(M)::value, 32>(row, a, i0, scale, zero, out);
    if (group == 64) return rows_m<decltype(M)::value, 64>(row, a, i0, scale, zero, out);
    rows_m<decltype(M)::value, 128>(row, a, i0, scale, zero, out);
  });
}


// The 8-bit activations of W4A8 in feature order (int4.h): per row and group sx = max|x| / 127 (1
// for an all-zero group), code = round-half-even(x / sx) clamped to [-127, 127], and
// zero_sum = sx * (sum of the codes). The same IEEE division and rounding as the scalar loop, so
// the codes are identical.
void int4_a8_codes_avx512(const float* x, int64_t m, int64_t k, int64_t group, int8_t* natural, float* group_scale,
                          float* zero_sum, int num_threads) {
  const int64_t groups = k / group;
  parallel_for(m, num_threads, [&](int64_t i) {
    for (int64_t g = 0; g < groups; ++g) {
      const float* xg = x + i * k + g * group;
      __m512 amax = _mm512_setzero_ps();
      for (int64_t t = 0; t < group; t += 16) amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_loadu_ps(xg + t)));
      float s = _mm512_reduce_max_ps(amax) / 127.0f;
      if (!(s > 0.0f)) s = 1.0f;
      const __m512 sv = _mm512_set1_ps(s), hi = _mm512_set1_ps(127.0f), lo = _mm512_set1_ps(-127.0f);
      __m512i sum = _mm512_setzero_si512();
      for (int64_t t = 0; t < group; t += 16) {
        const __m512 q = _mm512_roundscale_ps(_mm512_div_ps(_mm512_loadu_ps(xg + t), sv),
                                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __m512i c = _mm512_cvtps_epi32(_mm512_min_ps(hi, _mm512_max_ps(lo, q)));
        sum = _mm512_add_epi32(sum, c);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(natural + i * k + g * group + t), _mm512_cvtsepi32_epi8(c));
      }
      group_scale[i * groups + g] = s;
      zero_sum[i * groups + g] = s * float(_mm512_reduce_add_epi32(sum));
    }
  });
}


// ---------------------------------------------------------------------------------------------
// W4A8 for many rows: the GEMM form (int4_a8_gemm_impl.h) with 512-bit vpdpbusd tiles of up to
// 8 rows x 32 features.
namespace isa_avx512 {
#include "kernels/quant/int4_a8_gemm_impl.h"

// Rows [i, i + R) x the 32 features of panels (p, p + 1), every group. au: the codes + 128 as u8,
// [m][k]. The int32 sums of a group stay in registers; the float accumulators in f (L1).
template <int R>
void gemm_tile(const A8Gemm& g, const A8Rows& a, const uint8_t* au, int64_t i, int64_t p, const float* bias,
               float* out) {
  alignas(64) float f[R][32] = {};
  const int8_t* w0 = g.w + p * g.kq * 64;
  const int8_t* w1 = w0 + g.kq * 64;
  const int64_t qg = g.group / 4;
  for (int64_t gi = 0; gi < g.groups; ++gi) {
    __m512i c[R][2];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) c[r][0] = c[r][1] = _mm512_setzero_si512();
    for (int64_t q = gi * qg; q < (gi + 1) * qg; ++q) {
      const __m512i b0 = _mm512_loadu_si512(w0 + q * 64), b1 = _mm512_loadu_si512(w1 + q * 64);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        int32_t quad;
        std::memcpy(&quad, au + (i + r) * g.k + 4 * q, 4);
        const __m512i av = _mm512_set1_epi32(quad);
        c[r][0] = _mm512_dpbusd_epi32(c[r][0], av, b0);
        c[r][1] = _mm512_dpbusd_epi32(c[r][1], av, b1);
      }
    }
    const int64_t o = gi * g.ld + p * kA8Panel;
    const __m512i s0 = _mm512_loadu_si512(g.wsum.data() + o), s1 = _mm512_loadu_si512(g.wsum.data() + o + 16);
    const __m512 ws0 = _mm512_loadu_ps(g.wscale.data() + o), ws1 = _mm512_loadu_ps(g.wscale.data() + o + 16);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 sx = _mm512_set1_ps(a.group_scale[(i + r) * g.groups + gi]);
      _mm512_store_ps(f[r], _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(c[r][0], s0)), _mm512_mul_ps(ws0, sx),
                                            _mm512_load_ps(f[r])));
      _mm512_store_ps(f[r] + 16, _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(c[r][1], s1)),
                                                 _mm512_mul_ps(ws1, sx), _mm512_load_ps(f[r] + 16)));
    }
  }
  const int64_t j0 = p * kA8Panel;
  for (int h = 0; h < 2; ++h) {
    const int64_t j = j0 + 16 * h, cols = std::min<int64_t>(16, g.n - j);
    if (cols <= 0) break;
    const __mmask16 mask = __mmask16((1u << cols) - 1u);
    const __m512 b = bias ? _mm512_maskz_loadu_ps(mask, bias + j) : _mm512_setzero_ps();
    for (int r = 0; r < R; ++r)
      _mm512_mask_storeu_ps(out + (i + r) * g.n + j, mask, _mm512_add_ps(_mm512_load_ps(f[r] + 16 * h), b));
  }
}

template <int... Rs>
void gemm_rows(int rows, std::integer_sequence<int, Rs...>, const A8Gemm& g, const A8Rows& a, const uint8_t* au,
               int64_t i, int64_t p, const float* bias, float* out) {
  ((rows == Rs ? (gemm_tile<Rs>(g, a, au, i, p, bias, out), true) : false) || ...);
}

}  // namespace isa_avx512

void int4_linear_a8_gemm_avx512_vnni(const A8Rows& a, int64_t n, const uint8_t* packed, const float* scale,
                                     const uint8_t* zero, int64_t group, const float* bias, float* out,
                                     int num_threads) {
  using namespace isa_avx512;
  a8_gemm_run<2, 8>(a, n, packed, scale, zero, group, num_threads,
                    [&](const A8Gemm& g, const A8Rows& ar, const uint8_t* au, int64_t i, int64_t p, int rows) {
                      gemm_rows(rows, std::integer_sequence<int, 8, 7, 6, 5, 4, 3, 2, 1>{}, g, ar, au, i, p, bias,
                                out);
                    });
}

}  // namespace edgegen::kernels::quant
