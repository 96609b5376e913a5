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
};
