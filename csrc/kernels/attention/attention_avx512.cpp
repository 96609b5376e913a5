// Built with the AVX-512 F/BW/DQ/VL flags (see CMakeLists.txt); reached only through
// attention_isa() / forward_isa(), and never for float64 inputs.
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
namespace isa_avx512 {
#include "../simd_scalar.h"
#include "../simd_avx512.h"
#include "attention_impl.h"
}  // namespace isa_avx512

void forward_avx512(const Problem& p, const Plan& plan, void* out, void* lse) {
  isa_avx512::forward_float<isa_avx512::Avx512>(p, plan, out, lse);
}

void backward_avx512(const Problem& p, const Plan& plan, const Strided& dout, const Strided& out, const void* lse,
                     void* dq, void* dk, void* dv) {
  isa_avx512::backward_float<isa_avx512::Avx512>(p, plan, dout, out, lse, dq, dk, dv);
}

}  // namespace edgegen::kernels::attention
