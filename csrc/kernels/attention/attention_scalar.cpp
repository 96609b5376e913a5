// The portable path (any CPU; float64 inputs always come here), and the AMX products on the
// software tile model (tests).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "../parallel.h"
#include "attention.h"
#include "plan.h"

namespace edgegen::kernels::attention {
namespace isa_scalar {
#include "../simd_scalar.h"
#include "attention_impl.h"
#include "../amx_tiles.h"
#include "gemm_bf16_tiles.h"
}  // namespace isa_scalar

namespace {
using A64 = isa_scalar::Attn<isa_scalar::ScalarOf<double>>;
using ModelTiles = isa_scalar::Bf16Tiles<isa_scalar::TileModel, isa_scalar::Bf16PackScalar>;
}  // namespace

void forward_tile_model(const Problem& p, const Plan& plan, void* out, void* lse) {
  isa_scalar::forward_bf16<isa_scalar::ScalarOf<float>, ModelTiles>(p, plan, out, lse);
}

void backward_tile_model(const Problem& p, const Plan& plan, const Strided& dout, const Strided& out, const void* lse,
                         void* dq, void* dk, void* dv) {
  isa_scalar::backward_bf16<isa_scalar::ScalarOf<float>, ModelTiles>(p, plan, dout, out, lse, dq, dk, dv);
}

void forward_scalar(const Problem& p, const Plan& plan, void* out, void* lse) {
  if (p.dtype == DType::F64)
    return A64::forward_typed(p, plan, static_cast<double*>(out), static_cast<double*>(lse));
  isa_scalar::forward_float<isa_scalar::ScalarOf<float>>(p, plan, out, lse);
}

void backward_scalar(const Problem& p, const Plan& plan, const Strided& dout, const Strided& out, const void* lse,
                     void* dq, void* dk, void* dv) {
  if (p.dtype == DType::F64)
    return A64::backward_typed(p, plan, dout, out, static_cast<const double*>(lse), static_cast<double*>(dq),
                               static_cast<double*>(dk), static_cast<double*>(dv));
  isa_scalar::backward_float<isa_scalar::ScalarOf<float>>(p, plan, dout, out, lse, dq, dk, dv);
}

}  // namespace edgegen::kernels::attention
