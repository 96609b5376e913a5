// The attention's products for bf16 inputs on AVX-512 BF16 (vdpbf16ps), a products policy of
// attention_impl.h (Prod): C[M][N] (+)= A[M][K] B[K][N] with A and B rounded to bf16 (round to
// nearest even) and the products summed in float. For bf16 inputs the operands that come from the
// inputs (Q, K, V, dO) are bf16 values already and convert exactly; what rounds is the softmax
// probabilities P (forward P V, backward dV += P^T dO) and the score gradients dS (dK, dQ), as in
// FlashAttention and PyTorch's CPU flash attention.
//
// Both operands are converted per call into 32-bit words of two bf16 (k = 2w low, 2w + 1 high):
//   A: word (r, w) at a[r * ra + w * wa] (row-major rows of words when A's k is contiguous, else
//      columns of words: whichever the source reads with unit stride);
//   B: word (w, c) at b[w * np + c], np = N rounded up to 32, zero padded —
// which is vdpbf16ps's operand form: one word of A broadcast, 16 columns of B per vector.
// Included inside the TU's namespace after simd_avx512.h; the TU is built with -mavx512bf16.

struct Bf16Dot512 {
  static constexpr int kRows = 8;  // rows per micro-tile (two vectors of columns each)

  struct Scratch {
    std::vector<uint32_t> a, b;
  };
  static Scratch& scratch() {
    static thread_local Scratch s;
    return s;
  }

  static __mmask16 lanes(int64_t n) {
    return n >= 16 ? __mmask16(0xffff) : (n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1));
  }
  static __m512i bits(const float* p, int64_t n) { return Avx512::bf16_bits(_mm512_maskz_loadu_ps(lanes(n), p)); }
  static __m512i pair(__m512i lo, __m512i hi) { return _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)); }

  // A's words; sets the strides ra, wa.
  static void pack_a(int64_t M, int64_t K, const float* A, int64_t ars, int64_t aks, std::vector<uint32_t>& buf,
                     int64_t* ra, int64_t* wa) {
    const int64_t k2 = (K + 1) / 2;
    if (aks == 1) {  // rows: 32 consecutive k per step, stored as 16 words
      const int64_t row = (k2 + 15) / 16 * 16;
      buf.resize(size_t(std::max<int64_t>(1, M * row)));
      for (int64_t r = 0; r < M; ++r) {
        const float* src = A + r * ars;
        uint32_t* dst = buf.data() + r * row;
        for (int64_t k = 0; k < 2 * row; k += 16)
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k / 2), _mm512_cvtepi32_epi16(bits(src + k, K - k)));
      }
      *ra = row, *wa = 1;
      return;
    }
    // columns (A's rows contiguous, ars == 1: the transposed operand): 16 rows per step
    const int64_t col = (M + 15) / 16 * 16;
    buf.resize(size_t(std::max<int64_t>(1, k2 * col)));
    for (int64_t w = 0; w < k2; ++w)
      for (int64_t r = 0; r < col; r += 16) {
        const __m512i lo = ars == 1 ? bits(A + 2 * w * aks + r, M - r) : gather_bits(A, ars, aks, 2 * w, r, M);
        const __m512i hi = 2 * w + 1 >= K ? _mm512_setzero_si512()
                           : ars == 1    ? bits(A + (2 * w + 1) * aks + r, M - r)
                                         : gather_bits(A, ars, aks, 2 * w + 1, r, M);
        _mm512_storeu_si512(buf.data() + w * col + r, pair(lo, hi));
      }
    *ra = 1, *wa = col;
  }
  // Column k, rows r0..r0 + 16 (zero past M), of an A with any strides.
  static __m512i gather_bits(const float* A, int64_t ars, int64_t aks, int64_t k, int64_t r0, int64_t M) {
    alignas(64) float v[16];
    for (int u = 0; u < 16; ++u) v[u] = r0 + u < M ? A[(r0 + u) * ars + k * aks] : 0.0f;
    return Avx512::bf16_bits(_mm512_load_ps(v));
  }

  static int64_t pack_b(int64_t K, int64_t N, const float* B, int64_t ldb, std::vector<uint32_t>& buf) {
    const int64_t k2 = (K + 1) / 2, np = (N + 31) / 32 * 32;
    buf.resize(size_t(std::max<int64_t>(1, k2 * np)));
    for (int64_t w = 0; w < k2; ++w)
      for (int64_t c = 0; c < np; c += 16) {
        const __m512i lo = bits(B + 2 * w * ldb + c, N - c);
        const __m512i hi = 2 * w + 1 < K ? bits(B + (2 * w + 1) * ldb + c, N - c) : _mm512_setzero_si512();
        _mm512_storeu_si512(buf.data() + w * np + c, pair(lo, hi));
      }
    return np;
  }

  template <int MR>
  static void micro(const uint32_t* a, int64_t ra, int64_t wa, const uint32_t* b, int64_t np, int64_t k2, float* C,
                    int64_t ldc, int64_t N, bool accumulate) {
    for (int64_t c = 0; c < N; c += 32) {
      const __mmask16 m0 = lanes(N - c), m1 = lanes(N - c - 16);
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

  // attention_impl.h's product: C[M][N] (+)= A[M][K] B[K][N], A read through (ars, aks).
  static void gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t ars, int64_t aks, const float* B,
                   int64_t ldb, float* C, int64_t ldc, bool accumulate) {
    Scratch& s = scratch();
    int64_t ra = 0, wa = 0;
    pack_a(M, K, A, ars, aks, s.a, &ra, &wa);
    const int64_t np = pack_b(K, N, B, ldb, s.b), k2 = (K + 1) / 2;
    const uint32_t* a = s.a.data();
    int64_t r = 0;
    for (; r + kRows <= M; r += kRows)
      micro<kRows>(a + r * ra, ra, wa, s.b.data(), np, k2, C + r * ldc, ldc, N, accumulate);
    a += r * ra;
    float* c = C + r * ldc;
    switch (M - r) {
      case 7: micro<7>(a, ra, wa, s.b.data(), np, k2, c, ldc, N, accumulate); break;
      case 6: micro<6>(a, ra, wa, s.b.data(), np, k2, c, ldc, N, accumulate); break;
      case 5: micro<5>(a, ra, wa, s.b.data(), np, k2, c, ldc, N, accumulate); break;
      case 4: micro<4>(a, ra, wa, s.b.data(), np, k2, c, ldc, N, accumulate); break;
      case 3: micro<3>(a, ra, wa, s.b.data(), np, k2, c, ldc, N, accumulate); break;
      case 2: micro<2>(a, ra, wa, s.b.data(), np, k2, c, ldc, N, accumulate); break;
      case 1: micro<1>(a, ra, wa, s.b.data(), np, k2, c, ldc, N, accumulate); break;
      default: break;
    }
  }
};
