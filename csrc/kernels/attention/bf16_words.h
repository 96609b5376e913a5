// The layout of the attention's bf16 operands, shared by their packers (Bf16Pack512,
// gemm_bf16_avx512.h; Bf16PackScalar, gemm_bf16_tiles.h): 32-bit words of two bf16 (k = 2w low,
// 2w + 1 high). A: rows of a_row_words(K) words (a multiple of 16: one AMX tile row), the row
// count rounded up to a multiple; B: b_rows(K) rows of b_cols(N) words (a multiple of 32: two
// 16-column vectors or tiles). Padding words are zero. Included inside the TU's namespace (once:
// #pragma once) before the packers.
#pragma once

struct Bf16Words {
  static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
  static int64_t a_row_words(int64_t K) { return round_up((K + 1) / 2, 16); }
  static int64_t b_rows(int64_t K, int64_t row_multiple) { return round_up((K + 1) / 2, row_multiple); }
  static int64_t b_cols(int64_t N) { return round_up(N, 32); }

  // Straight from bf16 inputs (unit column stride), no rounding: ---------------------------------
  // A as rows of words from M rows of K bf16 (row r at A + r * ars): the words are the bf16 pairs
  // as they lie in memory. Rows up to M rounded up to row_multiple, zero padded. Returns ra.
  static int64_t rows_bf16(int64_t M, int64_t K, const bf16_t* A, int64_t ars, std::vector<uint32_t>& buf,
                           int64_t row_multiple = 1) {
    const int64_t ra = a_row_words(K), mp = round_up(M, row_multiple);
    buf.assign(size_t(std::max<int64_t>(1, mp * ra)), 0u);
    for (int64_t r = 0; r < M; ++r) std::memcpy(buf.data() + r * ra, A + r * ars, size_t(K) * sizeof(bf16_t));
    return ra;
  }
  // B (K x N) whose column c is row c of src (K^T from the rows of K): word (w, c) is word w of
  // src's row c. k2p rows of np words, zero past K and N.
  static void b_from_row_words(int64_t K, int64_t N, const bf16_t* src, int64_t ld, uint32_t* dst, int64_t k2p,
                               int64_t np) {
    std::fill(dst, dst + k2p * np, 0u);
    for (int64_t c = 0; c < N; ++c)
      for (int64_t k = 0; k < K; ++k) dst[(k / 2) * np + c] |= uint32_t(src[c * ld + k].bits) << (16 * (k % 2));
  }
  // B (K x N) from K rows of N bf16 (row k at B + k * ldb): word (w, c) = B[2w][c] | B[2w+1][c] << 16.
  static void b_from_rows(int64_t K, int64_t N, const bf16_t* B, int64_t ldb, uint32_t* dst, int64_t k2p,
                          int64_t np) {
    std::fill(dst, dst + k2p * np, 0u);
    for (int64_t k = 0; k < K; ++k)
      for (int64_t c = 0; c < N; ++c) dst[(k / 2) * np + c] |= uint32_t(B[k * ldb + c].bits) << (16 * (k % 2));
  }
};
