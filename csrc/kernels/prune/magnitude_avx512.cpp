// AVX-512 sweeps of the magnitude selection for plain float32 weights (compiled with -mavx512f
// -mavx512bw -mavx512dq -mavx512vl; reached only when the CPU has them). Scores are the float bits
// with the sign cleared, non-negative int32s, so integer compares order them; the gathering sweep
// packs the scores inside the bracket with vpcompressd (in a register, then one full store: the
// memory form and masked stores are slow on some CPUs, AMD Zen 4 among them), and tails are masked.
// Same results as the baseline sweeps in magnitude.cpp, entry for entry. The gathering sweep may
// write up to 16 entries past the ones it keeps (the caller leaves room).
#include <immintrin.h>

#include <cstdint>

namespace edgegen::kernels::prune {

void gather_f32_avx512(const float* w, int64_t b, int64_t e, uint32_t lo, uint32_t hi, uint32_t* out, int64_t* n,
                       int64_t* lt, int64_t* nan) {
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), lo_v = _mm512_set1_epi32(int32_t(lo)),
                hi_v = _mm512_set1_epi32(int32_t(hi < 0x7fffffffu ? hi : 0x7fffffffu)),
                inf_v = _mm512_set1_epi32(0x7f800000);
  int64_t count = *n, below = 0, nans = 0;
  for (int64_t i = b; i < e; i += 16) {
    const __mmask16 valid = e - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (e - i)) - 1u);
    const __m512i x = _mm512_and_si512(_mm512_maskz_loadu_epi32(valid, w + i), abs_mask);
    const __mmask16 is_lt = _mm512_mask_cmplt_epi32_mask(valid, x, lo_v);
    const __mmask16 inside = _mm512_mask_cmple_epi32_mask(valid, x, hi_v) & __mmask16(~is_lt);
    below += __builtin_popcount(unsigned(is_lt));
    nans += __builtin_popcount(unsigned(_mm512_mask_cmpgt_epi32_mask(valid, x, inf_v)));
    _mm512_storeu_si512(out + count, _mm512_maskz_compress_epi32(inside, x));
    count += __builtin_popcount(unsigned(inside));
  }
  *n = count;
  *lt += below;
  *nan += nans;
}

int64_t mask_f32_avx512(const float* w, int64_t b, int64_t e, uint32_t thr, uint8_t* m, float* zw) {
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), thr_v = _mm512_set1_epi32(int32_t(thr));
  const __m128i one = _mm_set1_epi8(1);
  int64_t ties = 0;
  for (int64_t i = b; i < e; i += 16) {
    const __mmask16 valid = e - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (e - i)) - 1u);
    const __m512i raw = _mm512_maskz_loadu_epi32(valid, w + i), x = _mm512_and_si512(raw, abs_mask);
    const __mmask16 keep = _mm512_mask_cmpge_epi32_mask(valid, x, thr_v);
    ties += __builtin_popcount(unsigned(_mm512_mask_cmpeq_epi32_mask(valid, x, thr_v)));
    if (valid == 0xffff) {  // kept weights rewritten unchanged: full stores, no masked ones
      _mm_storeu_si128(reinterpret_cast<__m128i*>(m + i), _mm_maskz_mov_epi8(keep, one));
      if (zw) _mm512_storeu_si512(zw + i, _mm512_maskz_mov_epi32(keep, raw));
    } else {
      _mm_mask_storeu_epi8(m + i, valid, _mm_maskz_mov_epi8(keep, one));
      if (zw) _mm512_mask_storeu_epi32(zw + i, __mmask16(valid & ~keep), _mm512_setzero_si512());
    }
  }
  return ties;
}

}  // namespace edgegen::kernels::prune
