// The attention's products for bf16 inputs on AVX-512 BF16 (vdpbf16ps), a products policy of
// attention_impl.h (Prod): C[M][N] (+)= A[M][K] B[K][N] with A and B rounded to bf16 (round to
// nearest even) and the products summed in float. For bf16 inputs the operands that come from the
// inputs (Q, K, V, dO) are bf16 values already and convert exactly; what rounds is the softmax
// probabilities P (forward P V, backward dV += P^T dO) and the score gradients dS (dK, dQ), as in
// FlashAttention and PyTorch's CPU flash attention.
//
// The operands are 32-bit words of two bf16 (k = 2w low, 2w + 1 high; bf16_words.h), packed by
// Bf16Pack512 (also the AMX products' packer, gemm_bf16_tiles.h) — the inputs' once per head or
// tile by attention_impl.h, the probabilities and score gradients per call (gemm_a_float):
//   A: word (r, w) at a[r * ra + w * wa] (row-major rows of words, each a multiple of 16 words;
//      for the dot products also columns of words when A's rows are contiguous instead);
//   B: word (w, c) at b[w * np + c], np = N rounded up to 32, zero padded —
// which is vdpbf16ps's operand form: one word of A broadcast, 16 columns of B per vector.
// Included inside the TU's namespace after simd_avx512.h; the TU is built with -mavx512bf16.

#include "bf16_words.h"

struct Bf16Pack512 : Bf16Words {
  static __mmask16 lanes(int64_t n) {
    return n >= 16 ? __mmask16(0xffff) : (n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1));
  }
  static __m512i bits(const float* p, int64_t n) { return Avx512::bf16_bits(_mm512_maskz_loadu_ps(lanes(n), p)); }
  static __m512i pair(__m512i lo, __m512i hi) { return _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)); }

  // A as rows of words, ra = ceil(K / 2) rounded up to 16 words per row, M rounded up to
  // row_multiple rows (zero); any strides (a row's k gathered when not contiguous). Returns ra.
  static int64_t rows(int64_t M, int64_t K, const float* A, int64_t ars, int64_t aks, std::vector<uint32_t>& buf,
                      int64_t row_multiple = 1) {
    const int64_t ra = a_row_words(K), mp = round_up(M, row_multiple);
    buf.resize(size_t(std::max<int64_t>(1, mp * ra)));
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32(int(aks)));
    for (int64_t r = 0; r < mp; ++r) {
      const float* src = A + r * ars;
      uint32_t* dst = buf.data() + r * ra;
      for (int64_t k = 0; k < 2 * ra; k += 16) {  // 16 k per step: 8 words
        __m512i b;
        if (r >= M) b = _mm512_setzero_si512();
        else if (aks == 1) b = bits(src + k, K - k);
        else b = Avx512::bf16_bits(_mm512_mask_i32gather_ps(_mm512_setzero_ps(), lanes(K - k), idx, src + k * aks, 4));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k / 2), _mm512_cvtepi32_epi16(b));
      }
    }
    return ra;
  }

  // A as columns of words (A's rows contiguous, ars == 1): word (r, w) at buf[w * col + r], col =
  // M rounded up to 16. Returns col.
  static int64_t columns(int64_t M, int64_t K, const float* A, int64_t aks, std::vector<uint32_t>& buf) {
    const int64_t k2 = (K + 1) / 2, col = (M + 15) / 16 * 16;
    buf.resize(size_t(std::max<int64_t>(1, k2 * col)));
    for (int64_t w = 0; w < k2; ++w)
      for (int64_t r = 0; r < col; r += 16) {
        const __m512i lo = bits(A + 2 * w * aks + r, M - r);
        const __m512i hi = 2 * w + 1 < K ? bits(A + (2 * w + 1) * aks + r, M - r) : _mm512_setzero_si512();
        _mm512_storeu_si512(buf.data() + w * col + r, pair(lo, hi));
      }
    return col;
  }

  // Bf16Words::b_from_row_words with AVX-512: 16 columns' word w per gather (whole pairs; the
  // lone value of an odd K in scalar, so that nothing past a row is read).
  static void b_from_row_words(int64_t K, int64_t N, const bf16_t* src, int64_t ld, uint32_t* dst, int64_t k2p,
                               int64_t np) {
    // The gathers' offsets are 32-bit: rows too far apart take the scalar form.
    if (ld > (int64_t(INT32_MAX) - 4 * k2p) / (2 * np)) return Bf16Words::b_from_row_words(K, N, src, ld, dst, k2p, np);
    const __m512i first = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                             _mm512_set1_epi32(int(ld * int64_t(sizeof(bf16_t)))));
    const __m512i step = _mm512_set1_epi32(int(16 * ld * int64_t(sizeof(bf16_t))));
    const char* base = reinterpret_cast<const char*>(src);
    for (int64_t w = 0; w < k2p; ++w) {
      __m512i idx = first;
      for (int64_t c = 0; c < np; c += 16, idx = _mm512_add_epi32(idx, step)) {
        __m512i v = _mm512_setzero_si512();
        if (2 * w + 1 < K && c < N) v = _mm512_mask_i32gather_epi32(v, lanes(N - c), idx, base + 4 * w, 1);
        _mm512_storeu_si512(dst + w * np + c, v);
      }
      if (2 * w + 1 == K)
        for (int64_t c = 0; c < N; ++c) dst[w * np + c] = src[c * ld + 2 * w].bits;
    }
  }

  // Bf16Words::b_from_rows with AVX-512: two rows' 16 values widened and paired per store.
  static void b_from_rows(int64_t K, int64_t N, const bf16_t* B, int64_t ldb, uint32_t* dst, int64_t k2p,
                          int64_t np) {
    auto row16 = [&](int64_t k, int64_t c) {
      if (k >= K || c >= N) return _mm512_setzero_si512();
      return _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(lanes(N - c), B + k * ldb + c));
    };
    for (int64_t w = 0; w < k2p; ++w)
      for (int64_t c = 0; c < np; c += 16) _mm512_storeu_si512(dst + w * np + c, pair(row16(2 * w, c), row16(2 * w + 1, c)));
  }

  // B as word rows into dst: k2p rows (>= ceil(K / 2); zero past it) of np words (a multiple of
  // 16, >= N; zero past N).
  static void b_into(int64_t K, int64_t N, const float* B, int64_t ldb, uint32_t* dst, int64_t k2p, int64_t np) {
    const int64_t k2 = (K + 1) / 2;
    for (int64_t w = 0; w < k2p; ++w)
      for (int64_t c = 0; c < np; c += 16) {
        __m512i v = _mm512_setzero_si512();
        if (w < k2) {
          const __m512i lo = bits(B + 2 * w * ldb + c, N - c);
          v = pair(lo, 2 * w + 1 < K ? bits(B + (2 * w + 1) * ldb + c, N - c) : _mm512_setzero_si512());
        }
        _mm512_storeu_si512(dst + w * np + c, v);
      }
  }
};

struct Bf16Dot512 {
  static constexpr int kRows = 8;  // rows per micro-tile (two vectors of columns each)
  // attention_impl.h packs the inputs' operands with Pack, rows padded to kRowMultiple (see Attn).
  static constexpr bool kWords = true;
  static constexpr int64_t kRowMultiple = 1;
  using Pack = Bf16Pack512;

  // The per-call packing of A (the probabilities and score gradients).
  static std::vector<uint32_t>& scratch() {
    static thread_local std::vector<uint32_t> a;
    return a;
  }

  template <int MR>
  static void micro(const uint32_t* a, int64_t ra, int64_t wa, const uint32_t* b, int64_t np, int64_t k2, float* C,
                    int64_t ldc, int64_t N, bool accumulate) {
    for (int64_t c = 0; c < N; c += 32) {
      const __mmask16 m0 = Bf16Pack512::lanes(N - c), m1 = Bf16Pack512::lanes(N - c - 16);
      __m512 c0[MR], c1[MR];
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        c0[r] = accumulate ? _mm512_maskz_loadu_ps(m0, C + r * ldc + c) : _mm512_setzero_ps();
        c1[r] = accumulate ? _mm512_maskz_loadu_ps(m1, C + r * ldc + c + 16) : _mm512_setzero_ps();
      }
      const uint32_t* bw = b + c;
      for (int64_t w = 0; w < k2; ++w, bw += np) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512(bw), b1 = (__m512bh)_mm512_loadu_si512(bw + 16);
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) {
          const __m512bh av = (__m512bh)_mm512_set1_epi32(int(a[r * ra + w * wa]));
          c0[r] = _mm512_dpbf16_ps(c0[r], av, b0);
          c1[r] = _mm512_dpbf16_ps(c1[r], av, b1);
        }
      }
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        _mm512_mask_storeu_ps(C + r * ldc + c, m0, c0[r]);
        _mm512_mask_storeu_ps(C + r * ldc + c + 16, m1, c1[r]);
      }
    }
  }

  // C[M][N] (+)= A B from packed words: A's word (r, w) at a[r * ra + w * wa], B's word (w, c) at
  // b[w * np + c], k2 words of k.
  static void gemm_words(int64_t M, int64_t N, int64_t k2, const uint32_t* a, int64_t ra, int64_t wa,
                         const uint32_t* b, int64_t np, float* C, int64_t ldc, bool accumulate) {
    for_row_tiles<kRows>(M, [&](int64_t r, auto rows) {
      micro<decltype(rows)::value>(a + r * ra, ra, wa, b, np, k2, C + r * ldc, ldc, N, accumulate);
    });
  }

  // A from floats (read through (ars, aks)), B packed (np columns).
  static void gemm_a_float(int64_t M, int64_t N, int64_t K, const float* A, int64_t ars, int64_t aks,
                           const uint32_t* b, int64_t np, float* C, int64_t ldc, bool accumulate) {
    std::vector<uint32_t>& buf = scratch();
    int64_t ra = 1, wa = 1;  // A's words: rows (ra = row length, wa = 1) or columns (ra = 1, wa)
    if (aks == 1 || ars != 1) ra = Pack::rows(M, K, A, ars, aks, buf);
    else wa = Pack::columns(M, K, A, aks, buf);
    gemm_words(M, N, (K + 1) / 2, buf.data(), ra, wa, b, np, C, ldc, accumulate);
  }
};
