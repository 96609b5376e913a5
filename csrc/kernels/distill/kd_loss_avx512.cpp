// Built with the AVX-512 flags (see CMakeLists.txt); reached only through kd_loss_isa().
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "../parallel.h"
#include "kd_loss.h"

namespace edgegen::kernels {
namespace isa_avx512 {
#include "../simd_scalar.h"
#include "../simd_avx512.h"
#include "kd_loss_impl.h"
}  // namespace isa_avx512

void kd_loss_rows_avx512(const KDLossProblem& p) { isa_avx512::kd_loss_rows_impl<isa_avx512::Avx512>(p); }
void kd_exp_nonpos_avx512(const float* x, float* y, int64_t n, bool coarse) {
  isa_avx512::exp_nonpos_array<isa_avx512::Avx512>(x, y, n, coarse);
}

}  // namespace edgegen::kernels
