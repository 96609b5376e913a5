// Input checks the ATen glue files share: every message names the argument, and TORCH_CHECK_VALUE /
// _TYPE / _INDEX make Python raise ValueError / TypeError / IndexError.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <optional>
#include <string>

#include "kernels/dtypes.h"

namespace edgegen::cpu {

inline void check_cpu(const at::Tensor& t, const std::string& name) {
  TORCH_CHECK(t.device().is_cpu(), name, ": expected a CPU tensor, got one on ", t.device(),
              " (all inputs must be on the same device)");
}

// The kernels' element type for a floating-point input. Without allow_f64 only the 32/16-bit
// types are accepted (those ops run float64 on their PyTorch reference twins).
inline kernels::DType float_dtype(at::ScalarType t, const std::string& name, bool allow_f64 = true) {
  switch (t) {
    case at::kFloat: return kernels::DType::F32;
    case at::kBFloat16: return kernels::DType::BF16;
    case at::kHalf: return kernels::DType::F16;
    case at::kDouble:
      if (allow_f64) return kernels::DType::F64;
      [[fallthrough]];
    default:
      TORCH_CHECK_TYPE(false, name, ": expected a float32, bfloat16, float16", allow_f64 ? " or float64" : "",
                       " tensor, got ", t,
                       allow_f64 ? "" : " (other dtypes run on the op's PyTorch reference twin)");
  }
}

// `dim` in [-rank, rank) of t, normalised to [0, rank).
inline int64_t normalize_dim(const at::Tensor& t, int64_t dim, const char* name) {
  const int64_t nd = t.dim();
  TORCH_CHECK_INDEX(nd >= 1 && dim >= -nd && dim < nd, name, ": expected a dimension in [", -nd, ", ", nd, "), got ",
                    dim);
  return dim < 0 ? dim + nd : dim;
}

// An optional bias of n values, checked, as a contiguous float32 tensor (undefined when absent).
inline at::Tensor float_bias(const std::optional<at::Tensor>& bias, int64_t n) {
  if (!bias.has_value()) return at::Tensor();
  check_cpu(*bias, "bias");
  TORCH_CHECK_TYPE(bias->is_floating_point(), "bias: expected a floating-point tensor, got ", bias->scalar_type());
  TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == n, "bias: expected shape [", n, "], got ", bias->sizes());
  return bias->to(at::kFloat).contiguous();
}

// A contiguous float32 tensor of n per-output scales, checked.
inline at::Tensor float_scales(const at::Tensor& scale, int64_t n, const char* name) {
  check_cpu(scale, name);
  TORCH_CHECK_VALUE(scale.scalar_type() == at::kFloat && scale.dim() == 1 && scale.size(0) == n, name,
                    ": expected a float32 tensor of shape [", n, "], got ", scale.scalar_type(), " ", scale.sizes());
  return scale.contiguous();
}

}  // namespace edgegen::cpu
