// The AMX back end of the INT8 GEMM / convolution block (gemm_amx_impl.h): compiled with -mamx-tile -mamx-int8
// and reached only on CPUs (and Linux processes) with the tile state enabled.
#include <immintrin.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "kernels/quant/gemm.h"

namespace edgegen::kernels::quant {

namespace amx_tiles {
#include "kernels/quant/gemm_amx_impl.h"
}  // namespace amx_tiles

namespace {

using amx_tiles::TileConfig;

// GCC's tile intrinsics paste the tile number into the instruction text, so each tile's
// operation is spelled with a literal number.
#define EDGEGEN_TILE_CASES(op) \
  if constexpr (T == 0) op(0);   \
  else if constexpr (T == 1) op(1); \
  else if constexpr (T == 2) op(2); \
  else if constexpr (T == 3) op(3); \
  else if constexpr (T == 4) op(4); \
  else if constexpr (T == 5) op(5); \
  else if constexpr (T == 6) op(6); \
  else op(7)

struct AmxTiles {
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
  // The block uses four products: C0 = A0.B0, C1 = A0.B1, C2 = A1.B0, C3 = A1.B1.
  template <int C, int A, int B>
  void dpbusd() {
    static_assert(C >= 0 && C < 4 && A == 4 + C / 2 && B == 6 + C % 2, "C(i,j) = A(i) . B(j) only");
    if constexpr (C == 0) _tile_dpbusd(0, 4, 6);
    else if constexpr (C == 1) _tile_dpbusd(1, 4, 7);
    else if constexpr (C == 2) _tile_dpbusd(2, 5, 6);
    else _tile_dpbusd(3, 5, 7);
  }
};
#undef EDGEGEN_TILE_CASES

}  // namespace

void block_amx(const AmxSegment* seg, int64_t nseg, int64_t lda, int64_t rows, const int8_t* panel,
               int64_t panel_stride, int panels, int64_t kp, int32_t* acc, int64_t acc_ld) {
  amx_tiles::amx_block<AmxTiles>(seg, nseg, lda, rows, panel, panel_stride, panels, kp, acc, acc_ld);
}

}  // namespace edgegen::kernels::quant
