#include "kd_loss.h"

#include "../cpu_features.h"

namespace edgegen::kernels {

void kd_loss_rows(const KDLossProblem& p) {
#ifdef EDGEGEN_HAVE_AVX2
  if (best_isa() == Isa::Avx2) return kd_loss_rows_avx2(p);
#endif
  kd_loss_rows_scalar(p);
}

}  // namespace edgegen::kernels
