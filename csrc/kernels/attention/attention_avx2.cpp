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

namespace {
using A = isa_avx2::Attn<isa_avx2::Avx2>;
}  // namespace

void forward_avx2(const Problem& p, const Plan& plan, void* out, void* lse) {
  dispatch_float<false>(p.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    A::forward_typed(p, plan, static_cast<T*>(out), static_cast<float*>(lse));
  });
}

void backward_avx2(const Problem& p, const Plan& plan, const Strided& dout, const Strided& out, const void* lse,
                   void* dq, void* dk, void* dv) {
  dispatch_float<false>(p.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    A::backward_typed(p, plan, dout, out, static_cast<const float*>(lse), static_cast<T*>(dq), static_cast<T*>(dk),
                      static_cast<T*>(dv));
  });
}

}  // namespace edgegen::kernels::attention
