// The AMX INT8 block of the GEMM and the direct convolution, written once over a tile back end:
//   * AmxTiles (gemm_amx.cpp): the AMX instructions (ldtilecfg, tileloadd, tdpbusd, tilestored);
//   * TileModel (below): the same operations in plain C++, following the instructions' definitions,
//     so that any CPU can test the blocking, the tails and the operand layout.
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
// ::amx_tiles in gemm_amx.cpp, ::amx_test in the tests), after <cstdint>, <cstdio>, <cstdlib>,
// <cstring> and kernels/quant/gemm.h, so no inline function compiled for one ISA can be picked by
// the linker for another.

// The 64-byte operand of ldtilecfg (palette 1): bytes per row and rows of each tile.
struct alignas(64) TileConfig {
  uint8_t palette;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};
static_assert(sizeof(TileConfig) == 64, "ldtilecfg reads 64 bytes");

constexpr int kAmxTileRows = 16;   // rows of an A or C tile; k quads of a B tile
constexpr int kAmxTileBytes = 64;  // bytes per tile row
constexpr int kAmxBlockRows = 32;  // rows of one block of C tiles (two A tiles)

// Every tile 16 rows x 64 bytes: C as 16 x 16 int32, A as 16 x 64 u8, B as 16 quads x 16 x 4 s8.
inline TileConfig amx_gemm_config() {
  TileConfig c{};
  c.palette = 1;
  for (int t = 0; t < 8; ++t) {
    c.colsb[t] = kAmxTileBytes;
    c.rows[t] = kAmxTileRows;
  }
  return c;
}

// The tile operations of AMX-TILE / AMX-INT8 on plain memory. Checks what the hardware faults on:
// a configuration other than palette 1 with rows <= 16, bytes per row <= 64 (and a multiple of 4)
// and zero reserved bytes, a use before configuring, tdpbusd on tiles of inconsistent shapes.
class TileModel {
 public:
  void configure(const TileConfig& c) {
    if (c.palette != 1) fail("palette must be 1");
    if (c.start_row != 0) fail("start_row must be 0");
    for (uint8_t r : c.reserved)
      if (r != 0) fail("reserved bytes must be 0");
    for (int t = 0; t < 16; ++t) {
      if (c.rows[t] > kAmxTileRows || c.colsb[t] > kAmxTileBytes || c.colsb[t] % 4 != 0 ||
          (t >= 8 && (c.rows[t] || c.colsb[t])))
        fail("tile shape beyond 16 rows x 64 bytes");
    }
    cfg_ = c;
    std::memset(t_, 0, sizeof(t_));
    configured_ = true;
  }
  void release() { configured_ = false; }
  template <int T>
  void zero() {
    check(T);
    std::memset(t_[T], 0, sizeof(t_[T]));
  }
  template <int T>
  void load(const void* p, int64_t stride) {
    check(T);
    std::memset(t_[T], 0, sizeof(t_[T]));  // bytes beyond the configured shape read as zero
    for (int r = 0; r < cfg_.rows[T]; ++r)
      std::memcpy(t_[T][r], static_cast<const uint8_t*>(p) + r * stride, cfg_.colsb[T]);
  }
  template <int T>
  void store(void* p, int64_t stride) const {
    check(T);
    for (int r = 0; r < cfg_.rows[T]; ++r) std::memcpy(static_cast<uint8_t*>(p) + r * stride, t_[T][r], cfg_.colsb[T]);
  }
  // C += A . B: C[m][n] += sum_q sum_i u8(A[m][4q + i]) * s8(B[q][4n + i]), int32 with wrap-around.
  template <int C, int A, int B>
  void dpbusd() {
    check(C), check(A), check(B);
    const int m = cfg_.rows[C], n = cfg_.colsb[C] / 4, kq = cfg_.colsb[A] / 4;
    if (cfg_.rows[A] != m || cfg_.rows[B] != kq || cfg_.colsb[B] != cfg_.colsb[C]) fail("tdpbusd shapes differ");
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        uint32_t s;
        std::memcpy(&s, &t_[C][i][4 * j], 4);
        for (int q = 0; q < kq; ++q)
          for (int e = 0; e < 4; ++e)
            s += uint32_t(int32_t(t_[A][i][4 * q + e]) * int32_t(int8_t(t_[B][q][4 * j + e])));
        std::memcpy(&t_[C][i][4 * j], &s, 4);
      }
  }

 private:
  [[noreturn]] static void fail(const char* what) {
    std::fprintf(stderr, "TileModel: %s\n", what);
    std::abort();
  }
  void check(int t) const {
    if (!configured_) fail("tile used without a configuration");
    if (t < 0 || t >= 8) fail("tile index out of range");
  }
  TileConfig cfg_{};
  bool configured_ = false;
  alignas(64) uint8_t t_[8][kAmxTileRows][kAmxTileBytes];
};

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
