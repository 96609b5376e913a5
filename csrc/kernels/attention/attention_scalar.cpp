// The portable path (any CPU; float64 inputs always come here).
#include <algorithm>
#include <memory>
#include <cmath>
#include <type_traits>
#include <vector>

#include "../parallel.h"
#include "attention.h"
#include "plan.h"

namespace edgegen::kernels::attention {
namespace isa_scalar {
#include "../simd_scalar.h"
#include "attention_impl.h"
}  // namespace isa_scalar

namespace {
using A32 = isa_scalar::Attn<isa_scalar::ScalarOf<float>>;
using A64 = isa_scalar::Attn<isa_scalar::ScalarOf<double>>;
}  // namespace

void forward_scalar(const Problem& p, const Plan& plan, void* out, void* lse) {
  if (p.dtype == DType::F64)
    return A64::forward_typed(p, plan, static_cast<double*>(out), static_cast<double*>(lse));
  dispatch_float<false>(p.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    A32::forward_typed(p, plan, static_cast<T*>(out), static_cast<float*>(lse));
  });
}

void backward_scalar(const Problem& p, const Plan& plan, const Strided& dout, const Strided& out, const void* lse,
                     void* dq, void* dk, void* dv) {
  if (p.dtype == DType::F64)
    return A64::backward_typed(p, plan, dout, out, static_cast<const double*>(lse), static_cast<double*>(dq),
                               static_cast<double*>(dk), static_cast<double*>(dv));
  dispatch_float<false>(p.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    A32::backward_typed(p, plan, dout, out, static_cast<const float*>(lse), static_cast<T*>(dq), static_cast<T*>(dk),
                        static_cast<T*>(dv));
  });
}

}  // namespace edgegen::kernels::attention
