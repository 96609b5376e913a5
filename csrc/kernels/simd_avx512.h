// 16-lane AVX-512 (F, BW, DQ, VL) policy, the AVX2 policy's operations at twice the width. Only
// compiled into TUs built with the AVX-512 flags and only called after the run-time check. The
// bf16 and fp16 conversions are exact integer emulation / F16C-equivalent instructions, so stored
// values equal the scalar path's rounding (round to nearest even, NaN kept quiet).
#include <immintrin.h>

struct Avx512 {
  using R = float;
  using F = __m512;
  static constexpr int W = 16;
  static F set1(float v) { return _mm512_set1_ps(v); }
  static F zero() { return _mm512_setzero_ps(); }
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static F load(const bf16_t* p) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  static F load(const fp16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
  // The bf16 bits of each lane (round to nearest even, NaN kept quiet) in its low 16 bits.
  static __m512i bf16_bits(F v) {
    const __m512i u = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(u, _mm512_set1_epi32(0x400000)));
    return _mm512_srli_epi32(r, 16);
  }
  static void store(bf16_t* p, F v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(bf16_bits(v)));
  }
  static void store(fp16_t* p, F v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                        _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F fnmadd(F a, F b, F c) { return _mm512_fnmadd_ps(a, b, c); }
  static F fmsub(F a, F b, F c) { return _mm512_fmsub_ps(a, b, c); }
  // maxps may drop a NaN; callers rely on a NaN input reaching the sums through (x - max).
  static F max(F a, F b) { return _mm512_max_ps(a, b); }

  // Range reduction and polynomial as in the AVX2 policy: x = n ln2 + r, p(r) with c[0..Deg].
  template <int Deg>
  static F reduce_poly(F x, const float* c, F* n) {
    *n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    F r = _mm512_fnmadd_ps(*n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(*n, _mm512_set1_ps(-2.12194440e-4f), r);
    F p = _mm512_set1_ps(c[Deg]);
#pragma GCC unroll 8
    for (int d = Deg - 1; d >= 0; --d) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c[d]));
    return p;
  }

  // e^x as in the AVX2 policy (degree-7 Taylor polynomial); p 2^n in one instruction (vscalefps;
  // n is integral and the result stays normal here), 0 below ln(FLT_MIN).
  static F exp(F x) {
    const F lo = _mm512_set1_ps(-87.33654475f);
    const __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
    x = _mm512_min_ps(_mm512_set1_ps(88.0f), _mm512_max_ps(lo, x));  // NaN passes through
    F n;
    const F p = reduce_poly<7>(x, kExpTaylor7, &n);
    return _mm512_maskz_scalef_ps(__mmask16(~under), p, n);
  }

  // e^x for x <= 0 (differences to a maximum; a rounding's worth above 0 is fine, as is anything
  // up to 88): no upper clamp, -inf and x < -103.3 give 0, (-103.3, -87.3) subnormals, NaN stays
  // NaN. The polynomial for e^r, |r| <= ln2/2, is kExpPoly6 (under 1.5e-7 relative error for the
  // whole function, tested) or, for 16-bit inputs, kExpPoly4 (under 3e-6); see simd_scalar.h.
  template <int Deg>
  static F exp_nonpos_poly(F x) {
    x = _mm512_max_ps(_mm512_set1_ps(-110.0f), x);  // NaN passes through; -110 scales to 0
    F n;
    const F p = reduce_poly<Deg>(x, Deg == 6 ? kExpPoly6 : kExpPoly4, &n);
    return _mm512_scalef_ps(p, n);  // p 2^n, rounded to a subnormal or 0 below FLT_MIN
  }
  static F exp_nonpos(F x) { return exp_nonpos_poly<6>(x); }
  static F exp_nonpos_coarse(F x) { return exp_nonpos_poly<4>(x); }

  // ln x as in the AVX2 policy: x = m 2^e, m in [sqrt(1/2), sqrt(2)), 2 atanh series to s^11.
  static F log(F x) {
    const __m512i bits = _mm512_castps_si512(x);
    __m512i e = _mm512_sub_epi32(_mm512_srli_epi32(bits, 23), _mm512_set1_epi32(127));
    F m = _mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(bits, _mm512_set1_epi32(0x007fffff)),
                                              _mm512_set1_epi32(0x3f800000)));
    const __mmask16 big = _mm512_cmp_ps_mask(m, _mm512_set1_ps(1.41421356f), _CMP_GT_OQ);
    m = _mm512_mask_mul_ps(m, big, m, _mm512_set1_ps(0.5f));
    e = _mm512_mask_add_epi32(e, big, e, _mm512_set1_epi32(1));
    const F f = _mm512_sub_ps(m, _mm512_set1_ps(1.0f));
    const F s = _mm512_div_ps(f, _mm512_add_ps(f, _mm512_set1_ps(2.0f)));
    const F s2 = _mm512_mul_ps(s, s);
    F q = _mm512_set1_ps(1.0f / 11.0f);
    q = _mm512_fmadd_ps(q, s2, _mm512_set1_ps(1.0f / 9.0f));
    q = _mm512_fmadd_ps(q, s2, _mm512_set1_ps(1.0f / 7.0f));
    q = _mm512_fmadd_ps(q, s2, _mm512_set1_ps(1.0f / 5.0f));
    q = _mm512_fmadd_ps(q, s2, _mm512_set1_ps(1.0f / 3.0f));
    q = _mm512_fmadd_ps(q, s2, _mm512_set1_ps(1.0f));
    const F lnm = _mm512_mul_ps(_mm512_add_ps(s, s), q);
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(e), _mm512_set1_ps(0.693147180559945f), lnm);
  }

  static F fmadd_where_positive(F e, F v, F acc) {
    return _mm512_mask3_fmadd_ps(e, v, acc, _mm512_cmp_ps_mask(e, _mm512_setzero_ps(), _CMP_GT_OQ));
  }
  static F onehot(int64_t base, int64_t hot) {
    const int64_t k = hot - base;
    if (k < 0 || k >= W) return _mm512_setzero_ps();
    return _mm512_maskz_mov_ps(__mmask16(1u << k), _mm512_set1_ps(1.0f));
  }
  static float hsum(F v) { return _mm512_reduce_add_ps(v); }
  static float hmax(F v) { return _mm512_reduce_max_ps(v); }
};
