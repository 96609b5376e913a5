// The attention's products for bf16 inputs on AMX-BF16 tiles (tdpbf16ps), a products policy of
// attention_impl.h (Prod), over a tile back end (the AMX instructions, attention_amx.cpp; or
// TileModel, kernels/amx_tiles.h, on any CPU) and an operand packer (Bf16Pack512 with AVX-512, or
// Bf16PackScalar below). The rounding contract is the AVX-512 BF16 products'
// (gemm_bf16_avx512.h): both operands rounded to bf16, products summed in float.
//
// Operands: A as rows of words of two bf16 (k = 2w low, 2w + 1 high), ra words per row (a multiple
// of 16: one tile row of 32 bf16), M rounded up to 16 rows; B as word rows, ceil(K / 2) rounded up
// to 16 rows (one B tile holds 16 of them), np columns (a multiple of 32); all zero padded. C goes
// through a float scratch [M rounded up to 16][np], so partial tiles need no other configuration.
// Blocks of 32 x 32 as in the INT8 block: C tiles 0-3, A 4-5 (two 16-row halves), B 6-7 (two
// 16-column halves); each step of 32 k is four tdpbf16ps.
// Included inside the TU's namespace after kernels/amx_tiles.h (and, for Bf16Pack512,
// gemm_bf16_avx512.h).

#include "bf16_words.h"

// The packer's portable form (the model's): the layouts of bf16_words.h in plain loops.
struct Bf16PackScalar : Bf16Words {
  static uint32_t word(float lo, float hi) { return uint32_t(to_bf16(lo).bits) | uint32_t(to_bf16(hi).bits) << 16; }

  static int64_t rows(int64_t M, int64_t K, const float* A, int64_t ars, int64_t aks, std::vector<uint32_t>& buf,
                      int64_t row_multiple = 1) {
    const int64_t ra = a_row_words(K), mp = round_up(M, row_multiple);
    buf.assign(size_t(std::max<int64_t>(1, mp * ra)), 0u);
    for (int64_t r = 0; r < M; ++r)
      for (int64_t w = 0; 2 * w < K; ++w)
        buf[size_t(r * ra + w)] = word(A[r * ars + 2 * w * aks], 2 * w + 1 < K ? A[r * ars + (2 * w + 1) * aks] : 0.0f);
    return ra;
  }

  static void b_into(int64_t K, int64_t N, const float* B, int64_t ldb, uint32_t* dst, int64_t k2p, int64_t np) {
    std::fill(dst, dst + k2p * np, 0u);
    for (int64_t w = 0; 2 * w < K; ++w)
      for (int64_t c = 0; c < N; ++c)
        dst[w * np + c] = word(B[2 * w * ldb + c], 2 * w + 1 < K ? B[(2 * w + 1) * ldb + c] : 0.0f);
  }
};

template <class Tiles, class PackT>
struct Bf16Tiles {
  // attention_impl.h packs the inputs' operands with Pack, rows padded to kRowMultiple (see Attn).
  static constexpr bool kWords = true;
  static constexpr int64_t kRowMultiple = kAmxTileRows;
  using Pack = PackT;

  struct Scratch {
    std::vector<uint32_t> a;  // the per-call packing of A (probabilities, score gradients)
    std::vector<float> c;     // C padded to whole tiles
  };
  static Scratch& scratch() {
    static thread_local Scratch s;
    return s;
  }

  // C[M][N] (+)= A B from packed words: A as rows of ra words (ra a multiple of 16, rows readable
  // up to M rounded up to 16), B as rows of np words (np a multiple of 32, rows readable up to k2
  // rounded up to 16); k2 words of k.
  static void gemm_words(int64_t M, int64_t N, int64_t k2, const uint32_t* a, int64_t ra, int64_t wa,
                         const uint32_t* b, int64_t np, float* C, int64_t ldc, bool accumulate) {
    if (M <= 0 || N <= 0) return;
    (void)wa;  // rows of words only (Pack::rows)
    const int64_t mp = (M + kAmxTileRows - 1) / kAmxTileRows * kAmxTileRows, k2p = (k2 + 15) / 16 * 16;
    std::vector<float>& cb = scratch().c;
    cb.assign(size_t(mp * np), 0.0f);
    if (accumulate)
      for (int64_t r = 0; r < M; ++r) std::memcpy(cb.data() + r * np, C + r * ldc, size_t(N) * sizeof(float));
    const int64_t as = ra * 4, bs = np * 4, cs = np * 4;  // tile row strides in bytes
    Tiles tl;
    tl.configure(amx_uniform_config());
    for (int64_t i = 0; i < mp; i += 2 * kAmxTileRows) {
      const bool two = i + kAmxTileRows < mp;  // the second 16-row half exists
      const uint32_t* a0 = a + i * ra;
      for (int64_t j = 0; j < np; j += 32) {
        float* c = cb.data() + i * np + j;
        tl.template load<0>(c, cs);
        tl.template load<1>(c + 16, cs);
        if (two) {
          tl.template load<2>(c + kAmxTileRows * np, cs);
          tl.template load<3>(c + kAmxTileRows * np + 16, cs);
        }
        for (int64_t w = 0; w < k2p; w += 16) {
          tl.template load<4>(a0 + w, as);
          tl.template load<6>(b + w * np + j, bs);
          tl.template load<7>(b + w * np + j + 16, bs);
          tl.template dpbf16ps<0, 4, 6>();
          tl.template dpbf16ps<1, 4, 7>();
          if (two) {
            tl.template load<5>(a0 + kAmxTileRows * ra + w, as);
            tl.template dpbf16ps<2, 5, 6>();
            tl.template dpbf16ps<3, 5, 7>();
          }
        }
        tl.template store<0>(c, cs);
        tl.template store<1>(c + 16, cs);
        if (two) {
          tl.template store<2>(c + kAmxTileRows * np, cs);
          tl.template store<3>(c + kAmxTileRows * np + 16, cs);
        }
      }
    }
    tl.release();
    for (int64_t r = 0; r < M; ++r) std::memcpy(C + r * ldc, cb.data() + r * np, size_t(N) * sizeof(float));
  }

  // A from floats (read through (ars, aks)), B packed.
  static void gemm_a_float(int64_t M, int64_t N, int64_t K, const float* A, int64_t ars, int64_t aks,
                           const uint32_t* b, int64_t np, float* C, int64_t ldc, bool accumulate) {
    std::vector<uint32_t>& buf = scratch().a;
    const int64_t ra = Pack::rows(M, K, A, ars, aks, buf, kAmxTileRows);
    gemm_words(M, N, (K + 1) / 2, buf.data(), ra, 1, b, np, C, ldc, accumulate);
  }
};
