// AMX tiles for the kernels that use them (the INT8 GEMM / convolution block, the attention's bf16
// products), over two back ends with one interface:
//   * TileModel: the AMX-TILE / AMX-INT8 / AMX-BF16 operations in plain C++, following the
//     instructions' definitions, so that any CPU can test the blocking, tails and operand layouts;
//   * AmxTileOps (only where the TU is built with -mamx-tile): ldtilecfg, tileloadd, tilestored,
//     tilezero, tilerelease; each TU adds the dot-product instruction it is built for
//     (tdpbusd with -mamx-int8, tdpbf16ps with -mamx-bf16).
// Included by each TU inside its own namespace (once per TU: #pragma once), after <cmath>,
// <cstdint>, <cstdio>, <cstdlib>, <cstring>, so no inline function compiled for one ISA can be
// picked by the linker for another.
#pragma once

// The 64-byte operand of ldtilecfg (palette 1): bytes per row and rows of each tile.
struct alignas(64) TileConfig {
  uint8_t palette;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};
static_assert(sizeof(TileConfig) == 64, "ldtilecfg reads 64 bytes");

constexpr int kAmxTileRows = 16;   // rows of a tile (A, C: matrix rows; B: k groups)
constexpr int kAmxTileBytes = 64;  // bytes per tile row

// All eight tiles 16 rows x 64 bytes.
inline TileConfig amx_uniform_config() {
  TileConfig c{};
  c.palette = 1;
  for (int t = 0; t < 8; ++t) {
    c.colsb[t] = kAmxTileBytes;
    c.rows[t] = kAmxTileRows;
  }
  return c;
}

// The tile operations on plain memory. Checks what the hardware faults on: a configuration other
// than palette 1 with rows <= 16, bytes per row <= 64 (and a multiple of 4) and zero reserved
// bytes, a use before configuring, a dot product on tiles of inconsistent shapes.
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
  // tdpbusd, C += A . B: C[m][n] += sum_q sum_i u8(A[m][4q + i]) * s8(B[q][4n + i]), int32 with
  // wrap-around.
  template <int C, int A, int B>
  void dpbusd() {
    const int m = shapes<C, A, B>(), n = cfg_.colsb[C] / 4, kq = cfg_.colsb[A] / 4;
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
  // tdpbf16ps, C += A . B in float: for each k pair q, C[m][n] += A[m][2q] B[q][2n], then
  // += A[m][2q + 1] B[q][2n + 1] (bf16 x bf16 products are exact in float), each sum rounded to
  // nearest even; bf16 subnormal inputs read as zero and subnormal results flush to zero.
  template <int C, int A, int B>
  void dpbf16ps() {
    const int m = shapes<C, A, B>(), n = cfg_.colsb[C] / 4, kq = cfg_.colsb[A] / 4;
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        float s;
        std::memcpy(&s, &t_[C][i][4 * j], 4);
        for (int q = 0; q < kq; ++q)
          for (int e = 0; e < 2; ++e) s = flush(s + bf16_at(A, i, 2 * q + e) * bf16_at(B, q, 2 * j + e));
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
  // C: m x (n 32-bit lanes), A: m x (kq 32-bit groups), B: kq x (n 32-bit lanes); returns m.
  template <int C, int A, int B>
  int shapes() const {
    check(C), check(A), check(B);
    const int m = cfg_.rows[C], kq = cfg_.colsb[A] / 4;
    if (cfg_.rows[A] != m || cfg_.rows[B] != kq || cfg_.colsb[B] != cfg_.colsb[C]) fail("tile dot product shapes differ");
    return m;
  }
  static float flush(float x) { return std::fabs(x) < 1.17549435e-38f ? 0.0f * x : x; }
  float bf16_at(int t, int row, int idx) const {
    uint16_t h;
    std::memcpy(&h, &t_[t][row][2 * idx], 2);
    uint32_t u = uint32_t(h) << 16;
    if ((u & 0x7f800000u) == 0) u &= 0x80000000u;  // subnormal input: zero
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  TileConfig cfg_{};
  bool configured_ = false;
  alignas(64) uint8_t t_[8][kAmxTileRows][kAmxTileBytes];
};

#if defined(__AMX_TILE__)
// GCC's tile intrinsics paste the tile number into the instruction text, so each tile's
// operation is spelled with a literal number.
#define EDGEGEN_TILE_CASES(op)        \
  if constexpr (T == 0) op(0);        \
  else if constexpr (T == 1) op(1);   \
  else if constexpr (T == 2) op(2);   \
  else if constexpr (T == 3) op(3);   \
  else if constexpr (T == 4) op(4);   \
  else if constexpr (T == 5) op(5);   \
  else if constexpr (T == 6) op(6);   \
  else op(7)

struct AmxTileOps {
  void configure(const TileConfig& c) { _tile_loadconfig(&c); }
  void release() { _tile_release(); }
  template <int T>
  void zero() {
#define EDGEGEN_OP(t) _tile_zero(t)
    EDGEGEN_TILE_CASES(EDGEGEN_OP);
#undef EDGEGEN_OP
  }
  template <int T>
  void load(const void* p, int64_t stride) {
#define EDGEGEN_OP(t) _tile_loadd(t, p, stride)
    EDGEGEN_TILE_CASES(EDGEGEN_OP);
#undef EDGEGEN_OP
  }
  template <int T>
  void store(void* p, int64_t stride) const {
#define EDGEGEN_OP(t) _tile_stored(t, p, stride)
    EDGEGEN_TILE_CASES(EDGEGEN_OP);
#undef EDGEGEN_OP
  }
};
#undef EDGEGEN_TILE_CASES
#endif
