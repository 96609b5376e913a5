// Activation quantization helpers on AVX-512 F/BW (compiled without VNNI: they run at the plain
// avx512 level). See gemm.cpp's ActPath.
#include <immintrin.h>

#include <cstdint>

namespace edgegen::kernels::quant {

// Activation quantization on AVX-512 (F/BW): the same float operations as the scalar loops, so
// the codes are bit-identical on every path.
// min/max (from *lo, *hi) and whether every value is finite, in one pass (lo/hi are meaningless
// when it returns false).
bool finite_minmax_avx512(const float* x, int64_t n, float* lo, float* hi) {
  __m512 vlo = _mm512_set1_ps(*lo), vhi = _mm512_set1_ps(*hi);
  const __m512 zero = _mm512_setzero_ps();
  __mmask16 bad = 0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    vlo = _mm512_min_ps(vlo, v);
    vhi = _mm512_max_ps(vhi, v);
    bad |= _mm512_cmp_ps_mask(_mm512_sub_ps(v, v), zero, _CMP_NEQ_UQ);
  }
  if (i < n) {
    const __mmask16 m = __mmask16((1u << (n - i)) - 1u);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    vlo = _mm512_mask_min_ps(vlo, m, vlo, v);
    vhi = _mm512_mask_max_ps(vhi, m, vhi, v);
    bad |= _mm512_mask_cmp_ps_mask(m, _mm512_sub_ps(v, v), zero, _CMP_NEQ_UQ);
  }
  *lo = _mm512_reduce_min_ps(vlo);
  *hi = _mm512_reduce_max_ps(vhi);
  return bad == 0;
}

// out[j] = clamp(nearbyint(x[j] * inv) + zp, 0, 127).
void quantize_row_u7_avx512(const float* x, int64_t k, float inv, float zp, uint8_t* out) {
  const __m512 vinv = _mm512_set1_ps(inv), vzp = _mm512_set1_ps(zp), zero = _mm512_setzero_ps(),
               top = _mm512_set1_ps(127.0f);
  int64_t j = 0;
  for (; j < k; j += 16) {
    const int64_t w = k - j < 16 ? k - j : 16;
    const __mmask16 m = __mmask16(w == 16 ? 0xffffu : (1u << w) - 1u);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + j);
    const __m512 r = _mm512_roundscale_ps(_mm512_mul_ps(v, vinv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 c = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(r, vzp), zero), top);
    _mm_mask_storeu_epi8(out + j, m, _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(c)));
  }
}

}  // namespace edgegen::kernels::quant
