#include "kd_loss.h"

#include "../cpu_features.h"

namespace edgegen::kernels {

Isa kd_loss_isa() {
  return pick_isa({Isa::Avx512, Isa::Avx2, Isa::Scalar});
}

void kd_loss_rows(const KDLossProblem& p) {
#ifdef EDGEGEN_HAVE_AVX2
  switch (kd_loss_isa()) {
    case Isa::Avx512: return kd_loss_rows_avx512(p);
    case Isa::Avx2: return kd_loss_rows_avx2(p);
    default: break;
  }
#endif
  kd_loss_rows_scalar(p);
}

}  // namespace edgegen::kernels
