// AVX-512 VNNI kernel of the W4A8 INT4 linear layer (compiled with -mavx512f -mavx512bw
// -mavx512dq -mavx512vl -mavx512vnni; reached only when the CPU has them). One 64-byte load holds
// two packed chunks (128 features); its bytes masked and shifted give the low and high nibbles,
// and vpdpbusd adds each 32-bit lane's four nibble x code products exactly (u8 x s8 -> s32).
#include <immintrin.h>

#include <cstdint>

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

}  // namespace edgegen::kernels::quant
