// The 256-bit VNNI tile of the INT8 GEMM (gemm_vnni256_impl.h) in its AVX-VNNI (VEX)
// encoding. Compiled with -mavx2 -mfma -mavxvnni, reached only on CPUs with AVX-VNNI.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/quant/gemm.h"

namespace edgegen::kernels::quant {
namespace isa_avx_vnni {
#define EDGEGEN_DPBUSD256(c, a, w) _mm256_dpbusd_avx_epi32(c, a, w)
#include "kernels/quant/gemm_vnni256_impl.h"
#undef EDGEGEN_DPBUSD256
}  // namespace isa_avx_vnni

void tile_avx2_vnni_vex(const uint8_t* a, int64_t lda, int rows, const int8_t* panel, int64_t kp, int32_t* acc,
                        int64_t acc_ld, bool accumulate) {
  isa_avx_vnni::vnni256_tile_rows(a, lda, rows, panel, kp, acc, acc_ld, accumulate);
}

}  // namespace edgegen::kernels::quant
