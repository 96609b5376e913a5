#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "../parallel.h"
#include "kd_loss.h"

namespace edgegen::kernels {
namespace isa_scalar {
#include "../simd_scalar.h"
#include "kd_loss_impl.h"
}  // namespace isa_scalar

void kd_loss_rows_scalar(const KDLossProblem& p) { isa_scalar::kd_loss_rows_impl<isa_scalar::Scalar>(p); }
void kd_exp_nonpos_scalar(const float* x, float* y, int64_t n, bool coarse) {
  isa_scalar::exp_nonpos_array<isa_scalar::Scalar>(x, y, n, coarse);
}

}  // namespace edgegen::kernels
