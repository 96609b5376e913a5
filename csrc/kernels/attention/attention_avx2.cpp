// Built with -mavx2 -mfma -mf16c (see CMakeLists.txt); reached only through attention_isa(), and
// never for float64 inputs.
#include <immintrin.h>

#include <algorithm>
#include <memory>
#include <cmath>
#include <type_traits>
#include <vector>

#include "../parallel.h"
#include "attention.h"
#include "plan.h"

namespace edgegen::kernels::attention {
namespace isa_avx2 {
#include "../simd_scalar.h"
#include "../simd_avx2.h"
#include "attention_impl.h"
}  // namespace isa_avx2

void forward_avx2(const Problem& p, const Plan& plan, void* out, void* lse) {
  isa_avx2::forward_float<isa_avx2::Avx2>(p, plan, out, lse);
}

void backward_avx2(const Problem& p, const Plan& plan, const Strided& dout, const Strided& out, const void* lse,
                   void* dq, void* dk, void* dv) {
  isa_avx2::backward_float<isa_avx2::Avx2>(p, plan, dout, out, lse, dq, dk, dv);
}

}  // namespace edgegen::kernels::attention
