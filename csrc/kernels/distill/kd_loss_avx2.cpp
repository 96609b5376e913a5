// Built with -mavx2 -mfma -mf16c (see CMakeLists.txt); reached only through best_isa().
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "../parallel.h"
#include "kd_loss.h"

namespace edgegen::kernels {
namespace isa_avx2 {
#include "../simd_scalar.h"
#include "../simd_avx2.h"
#include "kd_loss_impl.h"
}  // namespace isa_avx2

void kd_loss_rows_avx2(const KDLossProblem& p) { isa_avx2::kd_loss_rows_impl<isa_avx2::Avx2>(p); }
void kd_exp_nonpos_avx2(const float* x, float* y, int64_t n, bool coarse) {
  isa_avx2::exp_nonpos_array<isa_avx2::Avx2>(x, y, n, coarse);
}

}  // namespace edgegen::kernels
