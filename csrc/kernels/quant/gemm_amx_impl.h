// The AMX INT8 block of the GEMM and the direct convolution, written once over a tile back end:
//   * AmxTiles (gemm_amx.cpp): the AMX instructions (ldtilecfg, tileloadd, tdpbusd, tilestored);
//   * TileModel (kernels/amx_tiles.h): the same operations in plain C++, following the
//     instructions' definitions, so that any CPU can test the blocking, the tails and the operand
//     layout.
//
// Tiles: C0..C3 (tmm0-3) hold a [32 rows x 32 features] int32 result, A0/A1 (tmm4-5) two 16-row
// blocks of 64 activations (u8), B0/B1 (tmm6-7) two 16-feature blocks of 64 k (s8). A B tile is
// 16 rows of 64 bytes, row q holding k = 4q..4q+3 of 16 features: exactly one panel's 16
// consecutive 64-byte blocks of the packed weights (gemm.h), so the weights are loaded in place,
// with a stride of 64 bytes. tdpbusd adds the four u8 x s8 products of each 32-bit lane into int32,
// exactly, for the whole u8 range.
//
// The C tiles stay in registers over the whole K, which comes as segments (the whole K of a GEMM,
// or one kernel tap after another of a convolution), each walked in steps of 64. A step shorter
// than 64 (a segment's tail) and row blocks of fewer than 16 rows go through zero-padded copies of
// the activations (one tile configuration for everything: a new configuration would clear the
// tiles).
// Included by each TU inside its own namespace (edgegen::kernels::quant::amx_model in gemm.cpp,
// ::amx_tiles in gemm_amx.cpp, ::amx_test in the tests), after <cmath>, <cstdint>, <cstdio>,
// <cstdlib>, <cstring> and kernels/quant/gemm.h, so no inline function compiled for one ISA can be picked by
// the linker for another.

#include "kernels/amx_tiles.h"

// Every tile 16 rows x 64 bytes: C as 16 x 16 int32, A as 16 x 64 u8, B as 16 quads x 16 x 4 s8.
inline TileConfig amx_gemm_config() { return amx_uniform_config(); }

constexpr int kAmxBlockRows = 32;  // rows of one block of C tiles (two A tiles)

namespace amx_detail {

// The A operand of one 16-row half at k0: in place when the half is whole and the 64 bytes lie
// inside the packed K, else a zero-padded copy in buf.
inline const uint8_t* a_operand(const uint8_t* a, int64_t lda, int rows, int64_t k0, int64_t klen, uint8_t* buf,
                                int64_t* stride) {
  if (rows == kAmxTileRows && klen == kAmxTileBytes) {
    *stride = lda;
    return a + k0;
  }
  std::memset(buf, 0, kAmxTileRows * kAmxTileBytes);
  for (int r = 0; r < rows; ++r) std::memcpy(buf + r * kAmxTileBytes, a + r * lda + k0, size_t(klen));
  *stride = kAmxTileBytes;
  return buf;
}

// One K step of 64: loads the operands and adds the products into the C tiles in use.
template <class Tiles>
inline void step(Tiles& tl, const uint8_t* a0, int64_t s0, const uint8_t* a1, int64_t s1, const int8_t* b0,
                 const int8_t* b1) {
  tl.template load<6>(b0, kAmxTileBytes);
  tl.template load<4>(a0, s0);
  tl.template dpbusd<0, 4, 6>();
  if (b1) {
    tl.template load<7>(b1, kAmxTileBytes);
    tl.template dpbusd<1, 4, 7>();
  }
  if (a1) {
    tl.template load<5>(a1, s1);
    tl.template dpbusd<2, 5, 6>();
    if (b1) tl.template dpbusd<3, 5, 7>();
  }
}

}  // namespace amx_detail

// acc[r][c] (row stride acc_ld >= 16 * panels) = sum over the segments of
// sum_{k < len} seg.a[r * lda + k] * w[c][seg.woff + k] for rows r < rows (any count) and the
// 16 * panels features (panels 1 or 2) of `panel` (panel_stride bytes between panels; kp =
// packed_k(K) packed k values each). A GEMM is one segment (a, 0, kp); a direct convolution one
// segment per kernel tap (AmxSegment, gemm.h). acc must have room for `rows` rounded up to 16 rows:
// each C tile is stored whole, and the rows past `rows` are never read back.
//
// A weight window [w, w + 64) of a step is loaded in place when it lies inside the packed K, even
// where the segment ends before it (a tap of fewer than 64 channels): the activations beyond the
// segment are zero in the padded A copy, so the weights they meet add nothing. Only a window that
// crosses kp is copied, zero padded.
template <class Tiles>
void amx_block(const AmxSegment* seg, int64_t nseg, int64_t lda, int64_t rows, const int8_t* panel,
               int64_t panel_stride, int panels, int64_t kp, int32_t* acc, int64_t acc_ld) {
  using amx_detail::a_operand;
  Tiles tl;
  tl.configure(amx_gemm_config());
  alignas(64) uint8_t abuf[2][kAmxTileRows * kAmxTileBytes];
  alignas(64) int8_t btail[2][kAmxTileRows * kAmxTileBytes];
  int64_t btail_at = -1;  // the window btail holds
  const int8_t* b[2] = {panel, panels > 1 ? panel + panel_stride : nullptr};
  auto weights = [&](int p, int64_t w) -> const int8_t* {
    if (w + kAmxTileBytes <= kp) return b[p] + w * kPanel;
    if (btail_at != w) {  // (kp - w) / 4 blocks of 64 bytes, then zeros
      for (int q = 0; q < panels; ++q) {
        std::memset(btail[q], 0, sizeof(btail[q]));
        std::memcpy(btail[q], b[q] + w * kPanel, size_t((kp - w) / 4 * kAmxTileBytes));
      }
      btail_at = w;
    }
    return btail[p];
  };
  for (int64_t i = 0; i < rows; i += kAmxBlockRows) {
    const int r0 = int(rows - i < kAmxTileRows ? rows - i : kAmxTileRows);
    const int r1 = int(rows - i > kAmxTileRows ? (rows - i - kAmxTileRows < kAmxTileRows ? rows - i - kAmxTileRows
                                                                                          : kAmxTileRows)
                                               : 0);
    tl.template zero<0>();
    tl.template zero<1>();
    tl.template zero<2>();
    tl.template zero<3>();
    for (int64_t s = 0; s < nseg; ++s) {
      const uint8_t* ar0 = seg[s].a + i * lda;
      const uint8_t* ar1 = r1 ? ar0 + kAmxTileRows * lda : nullptr;  // only formed when those rows exist
      for (int64_t k0 = 0; k0 < seg[s].len; k0 += kAmxTileBytes) {
        const int64_t klen = seg[s].len - k0 < kAmxTileBytes ? seg[s].len - k0 : kAmxTileBytes;
        int64_t s0 = 0, s1 = 0;
        const uint8_t* a0 = a_operand(ar0, lda, r0, k0, klen, abuf[0], &s0);
        const uint8_t* a1 = r1 ? a_operand(ar1, lda, r1, k0, klen, abuf[1], &s1) : nullptr;
        const int8_t* b0 = weights(0, seg[s].woff + k0);
        const int8_t* b1 = panels > 1 ? weights(1, seg[s].woff + k0) : nullptr;
        amx_detail::step(tl, a0, s0, a1, s1, b0, b1);
      }
    }
    int32_t* c = acc + i * acc_ld;
    const int64_t cs = acc_ld * int64_t(sizeof(int32_t));
    tl.template store<0>(c, cs);
    if (panels > 1) tl.template store<1>(c + kPanel, cs);
    if (r1) {
      tl.template store<2>(c + kAmxTileRows * acc_ld, cs);
      if (panels > 1) tl.template store<3>(c + kAmxTileRows * acc_ld + kPanel, cs);
    }
  }
  tl.release();
}
