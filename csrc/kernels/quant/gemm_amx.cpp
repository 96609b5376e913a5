// The AMX back end of the INT8 GEMM / convolution block (gemm_amx_impl.h): compiled with -mamx-tile -mamx-int8
// and reached only on CPUs (and Linux processes) with the tile state enabled.
#include <immintrin.h>

#include <cmath>
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

// The block's four products: C0 = A0.B0, C1 = A0.B1, C2 = A1.B0, C3 = A1.B1.
struct AmxTiles : amx_tiles::AmxTileOps {
  template <int C, int A, int B>
  void dpbusd() {
    static_assert(C >= 0 && C < 4 && A == 4 + C / 2 && B == 6 + C % 2, "C(i,j) = A(i) . B(j) only");
    if constexpr (C == 0) _tile_dpbusd(0, 4, 6);
    else if constexpr (C == 1) _tile_dpbusd(1, 4, 7);
    else if constexpr (C == 2) _tile_dpbusd(2, 5, 6);
    else _tile_dpbusd(3, 5, 7);
  }
};

}  // namespace

void block_amx(const AmxSegment* seg, int64_t nseg, int64_t lda, int64_t rows, const int8_t* panel,
               int64_t panel_stride, int panels, int64_t kp, int32_t* acc, int64_t acc_ld) {
  amx_tiles::amx_block<AmxTiles>(seg, nseg, lda, rows, panel, panel_stride, panels, kp, acc, acc_ld);
}

}  // namespace edgegen::kernels::quant
