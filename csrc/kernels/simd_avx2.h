// 8-lane AVX2 + FMA + F16C policy. Only compiled into TUs built with -mavx2 -mfma -mf16c and
// only called after best_isa() has confirmed the CPU supports them.
#include <immintrin.h>

struct Avx2 {
  using R = float;
  using F = __m256;
  static constexpr int W = 8;
  static F set1(float v) { return _mm256_set1_ps(v); }
  static F zero() { return _mm256_setzero_ps(); }
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static F load(const bf16_t* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  static F load(const fp16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static void store(float* p, F v) { _mm256_storeu_ps(p, v); }
  static void store(bf16_t* p, F v) {
    // Round to nearest even on the dropped 16 bits; NaN keeps a quiet-NaN pattern.
    const __m256i u = _mm256_castps_si256(v);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    r = _mm256_blendv_epi8(r, _mm256_or_si256(u, _mm256_set1_epi32(0x400000)), nan);
    r = _mm256_srli_epi32(r, 16);
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
  }
  static void store(fp16_t* p, F v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                     _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F fmadd(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F fnmadd(F a, F b, F c) { return _mm256_fnmadd_ps(a, b, c); }
  static F fmsub(F a, F b, F c) { return _mm256_fmsub_ps(a, b, c); }
  // maxps may drop a NaN; callers rely on a NaN input reaching the sums through (x - max).
  static F max(F a, F b) { return _mm256_max_ps(a, b); }

  // Range reduction x = n ln2 + r, |r| <= ln2/2 (ln2 split in two for exact n ln2), then the
  // polynomial c[0] + c[1] r + ... + c[Deg] r^Deg; n goes to *n.
  template <int Deg>
  static F reduce_poly(F x, const float* c, F* n) {
    *n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    F r = _mm256_fnmadd_ps(*n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(*n, _mm256_set1_ps(-2.12194440e-4f), r);
    F p = _mm256_set1_ps(c[Deg]);
#pragma GCC unroll 8
    for (int d = Deg - 1; d >= 0; --d) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c[d]));
    return p;
  }
  // p 2^n for integral n in [-126, 127], built in the exponent bits; 0 where `under`.
  static F scale_pow2(F p, F n, F under) {
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
  }

  // e^x for x <= 88; -inf and x < ln(FLT_MIN) give 0, NaN gives NaN. Degree-7 Taylor polynomial
  // (kExpTaylor7: truncation error below 6e-9 relative, under one float ulp).
  static F exp(F x) {
    const F lo = _mm256_set1_ps(-87.33654475f);
    const F under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_set1_ps(88.0f), _mm256_max_ps(lo, x));  // NaN passes through
    F n;
    const F p = reduce_poly<7>(x, kExpTaylor7, &n);
    return scale_pow2(p, n, under);
  }

  // e^x for x <= 0 (differences to a maximum; a rounding's worth above 0 is fine, as is anything
  // up to 88): exp() without its upper clamp and with a minimax polynomial: kExpPoly6 (under
  // 1.5e-7 relative error for the whole function, tested) or, for 16-bit inputs, kExpPoly4 (under
  // 3e-6); see simd_scalar.h. -inf and x < ln(FLT_MIN) give 0, NaN gives NaN.
  template <int Deg>
  static F exp_nonpos_poly(F x) {
    const F lo = _mm256_set1_ps(-87.33654475f);
    const F under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    F n;
    const F p = reduce_poly<Deg>(_mm256_max_ps(lo, x), Deg == 6 ? kExpPoly6 : kExpPoly4, &n);  // NaN passes
    return scale_pow2(p, n, under);
  }
  static F exp_nonpos(F x) { return exp_nonpos_poly<6>(x); }
  static F exp_nonpos_coarse(F x) { return exp_nonpos_poly<4>(x); }

  // ln x for normal x > 0 (subnormals give a finite, inexact value; callers weight the result
  // by x itself, so those terms are below 1e-37). x = m 2^e with m in [sqrt(1/2), sqrt(2)),
  // ln m = 2 atanh(s), s = (m-1)/(m+1), |s| <= 0.1716, odd series to s^11.
  static F log(F x) {
    const __m256i bits = _mm256_castps_si256(x);
    __m256i e = _mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(127));
    F m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x007fffff)),
                                              _mm256_set1_epi32(0x3f800000)));
    const F big = _mm256_cmp_ps(m, _mm256_set1_ps(1.41421356f), _CMP_GT_OQ);
    m = _mm256_blendv_ps(m, _mm256_mul_ps(m, _mm256_set1_ps(0.5f)), big);
    e = _mm256_sub_epi32(e, _mm256_castps_si256(big));  // mask is -1 where big: e += 1
    const F f = _mm256_sub_ps(m, _mm256_set1_ps(1.0f));
    const F s = _mm256_div_ps(f, _mm256_add_ps(f, _mm256_set1_ps(2.0f)));
    const F s2 = _mm256_mul_ps(s, s);
    F q = _mm256_set1_ps(1.0f / 11.0f);
    q = _mm256_fmadd_ps(q, s2, _mm256_set1_ps(1.0f / 9.0f));
    q = _mm256_fmadd_ps(q, s2, _mm256_set1_ps(1.0f / 7.0f));
    q = _mm256_fmadd_ps(q, s2, _mm256_set1_ps(1.0f / 5.0f));
    q = _mm256_fmadd_ps(q, s2, _mm256_set1_ps(1.0f / 3.0f));
    q = _mm256_fmadd_ps(q, s2, _mm256_set1_ps(1.0f));
    const F lnm = _mm256_mul_ps(_mm256_add_ps(s, s), q);
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(e), _mm256_set1_ps(0.693147180559945f), lnm);
  }

  static F fmadd_where_positive(F e, F v, F acc) {
    return _mm256_blendv_ps(acc, _mm256_fmadd_ps(e, v, acc), _mm256_cmp_ps(e, _mm256_setzero_ps(), _CMP_GT_OQ));
  }
  static F onehot(int64_t base, int64_t hot) {
    const int64_t k = hot - base;
    if (k < 0 || k >= W) return _mm256_setzero_ps();
    alignas(32) static const float table[16] = {0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_loadu_ps(table + 7 - k);
  }
  static float hsum(F v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static float hmax(F v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};
