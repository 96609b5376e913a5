// ATen glue for the INT4 linear ops (weight-only, and 4-bit weights x 8-bit activations).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <torch/library.h>

#include <optional>
#include <vector>

#include "cpu/checks.h"
#include "kernels/quant/gemm.h"
#include "kernels/quant/int4.h"

namespace edgegen {
namespace {

namespace KQ = edgegen::kernels::quant;

using cpu::check_cpu;

at::Tensor int4_pack_cpu(const at::Tensor& q) {
  check_cpu(q, "weight");
  TORCH_CHECK_TYPE(q.scalar_type() == at::kByte, "weight: expected a uint8 tensor of 4-bit values, got ",
                   q.scalar_type());
  TORCH_CHECK_VALUE(q.dim() == 2 && q.size(0) > 0 && q.size(1) > 0 && q.size(1) % 64 == 0,
                    "weight: expected [out_features, in_features] with in_features a multiple of 64, got ",
                    q.sizes());
  const at::Tensor qc = q.contiguous();
  const uint8_t* p = qc.const_data_ptr<uint8_t>();
  for (int64_t i = 0; i < qc.numel(); ++i)
    TORCH_CHECK_VALUE(p[i] <= 15, "weight: entry ", i, " is ", int(p[i]), ", expected a 4-bit value in [0, 15]");
  at::Tensor out = at::empty({q.size(0), q.size(1) / 2}, qc.options());
  KQ::pack_int4(p, q.size(0), q.size(1), out.mutable_data_ptr<uint8_t>());
  return out;
}

struct Int4Args {
  int64_t n, k, group;
};

Int4Args check_int4(const at::Tensor& packed, const at::Tensor& scale, const at::Tensor& zero, int64_t group) {
  check_cpu(packed, "packed_weight");
  check_cpu(scale, "scale");
  check_cpu(zero, "zero_point");
  TORCH_CHECK_VALUE(group == 32 || group == 64 || group == 128, "group_size: expected 32, 64 or 128, got ", group);
  TORCH_CHECK_TYPE(packed.scalar_type() == at::kByte && packed.dim() == 2 && packed.is_contiguous(),
                   "packed_weight: expected the contiguous [N, K / 2] uint8 tensor from int4_pack");
  const int64_t n = packed.size(0), k = packed.size(1) * 2;
  TORCH_CHECK_VALUE(k % group == 0 && k % 64 == 0, "packed_weight: in_features ", k,
                    " must be a multiple of 64 and of group_size ", group);
  TORCH_CHECK_VALUE(scale.scalar_type() == at::kFloat && scale.dim() == 2 && scale.size(0) == n &&
                        scale.size(1) == k / group && scale.is_contiguous(),
                    "scale: expected a contiguous float32 tensor of shape [", n, ", ", k / group, "]");
  TORCH_CHECK_VALUE(zero.scalar_type() == at::kByte && zero.dim() == 2 && zero.size(0) == n &&
                        zero.size(1) == k / group && zero.is_contiguous(),
                    "zero_point: expected a contiguous uint8 tensor of shape [", n, ", ", k / group, "]");
  const uint8_t* z = zero.const_data_ptr<uint8_t>();
  for (int64_t i = 0; i < zero.numel(); ++i)
    TORCH_CHECK_VALUE(z[i] <= 15, "zero_point: expected 4-bit values in [0, 15], got ", int(z[i]), " at index ", i);
  return {n, k, group};
}

at::Tensor int4_dequantize_cpu(const at::Tensor& packed, const at::Tensor& scale, const at::Tensor& zero,
                               int64_t group_size) {
  const Int4Args a = check_int4(packed, scale, zero, group_size);
  at::Tensor w = at::empty({a.n, a.k}, scale.options());
  KQ::int4_dequantize_rows(packed.const_data_ptr<uint8_t>(), scale.const_data_ptr<float>(),
                           zero.const_data_ptr<uint8_t>(), a.k, a.group, 0, a.n, w.mutable_data_ptr<float>(),
                           at::get_num_threads());
  return w;
}

// The checks of both INT4 linear ops; the input as a contiguous float32 [m, k] and the bias.
struct Int4Call {
  Int4Args a;
  at::Tensor x, bias;
};

Int4Call check_int4_linear(const at::Tensor& input, const at::Tensor& packed, const at::Tensor& scale,
                           const at::Tensor& zero, const std::optional<at::Tensor>& bias, int64_t group_size) {
  check_cpu(input, "input");
  TORCH_CHECK_TYPE(input.is_floating_point(), "input: expected a floating-point tensor, got ", input.scalar_type());
  const Int4Args a = check_int4(packed, scale, zero, group_size);
  TORCH_CHECK_VALUE(input.dim() >= 1 && input.size(-1) == a.k, "input: expected [..., ", a.k, "], got ",
                    input.sizes());
  at::Tensor b = cpu::float_bias(bias, a.n);
  return {a, input.to(at::kFloat).contiguous().view({-1, a.k}), b};
}

// [m, n] float32 result -> the input's leading shape and dtype.
at::Tensor int4_output(const at::Tensor& out, const at::Tensor& input) {
  std::vector<int64_t> shape(input.sizes().begin(), input.sizes().end());
  shape.back() = out.size(1);
  at::Tensor res = out.view(shape);
  return input.scalar_type() == at::kFloat ? res : res.to(input.scalar_type());
}

at::Tensor int4_linear_cpu(const at::Tensor& input, const at::Tensor& packed, const at::Tensor& scale,
                           const at::Tensor& zero, const std::optional<at::Tensor>& bias, int64_t group_size) {
  const Int4Call c = check_int4_linear(input, packed, scale, zero, bias, group_size);
  const Int4Args& a = c.a;
  const at::Tensor& x = c.x;
  const at::Tensor& b = c.bias;
  const int64_t m = x.size(0);
  at::Tensor out = at::empty({m, a.n}, x.options());
  constexpr int64_t kGemvRows = 8;  // above this, dequantise blocks of rows and use BLAS
  if (m <= kGemvRows) {
    KQ::int4_gemv(x.const_data_ptr<float>(), m, a.n, a.k, packed.const_data_ptr<uint8_t>(),
                  scale.const_data_ptr<float>(), zero.const_data_ptr<uint8_t>(), a.group,
                  b.defined() ? b.const_data_ptr<float>() : nullptr, out.mutable_data_ptr<float>(),
                  at::get_num_threads());
  } else {
    constexpr int64_t kBlock = 256;
    at::Tensor w = at::empty({std::min(kBlock, a.n), a.k}, x.options());
    for (int64_t n0 = 0; n0 < a.n; n0 += kBlock) {
      const int64_t n1 = std::min(a.n, n0 + kBlock);
      KQ::int4_dequantize_rows(packed.const_data_ptr<uint8_t>(), scale.const_data_ptr<float>(),
                               zero.const_data_ptr<uint8_t>(), a.k, a.group, n0, n1, w.mutable_data_ptr<float>(),
                               at::get_num_threads());
      at::Tensor wb = w.narrow(0, 0, n1 - n0);
      at::Tensor ob = out.narrow(1, n0, n1 - n0);
      if (b.defined()) ob.copy_(at::addmm(b.narrow(0, n0, n1 - n0), x, wb.t()));
      else ob.copy_(at::mm(x, wb.t()));
    }
  }
  return int4_output(out, input);
}

// 4-bit weights x 8-bit activations quantized per row and group (see int4.h): the same codes and
// exact integer group sums for every batch size (from kA8GemmRows rows the vector paths sum the
// scaled groups in another order: float32 rounding differences only).
at::Tensor int4_linear_dynamic_cpu(const at::Tensor& input, const at::Tensor& packed, const at::Tensor& scale,
                                   const at::Tensor& zero, const std::optional<at::Tensor>& bias,
                                   int64_t group_size) {
  const Int4Call c = check_int4_linear(input, packed, scale, zero, bias, group_size);
  const Int4Args& a = c.a;
  const at::Tensor& x = c.x;
  const at::Tensor& b = c.bias;
  TORCH_CHECK_VALUE(KQ::all_finite(x.const_data_ptr<float>(), x.numel(), at::get_num_threads()),
                    "input: contains NaN or infinite values; int4_linear_dynamic and the W4A8 layers quantize their "
                    "input and need finite values");
  const int64_t m = x.size(0);
  at::Tensor out = at::empty({m, a.n}, x.options());
  KQ::int4_linear_a8(x.const_data_ptr<float>(), m, a.n, a.k, packed.const_data_ptr<uint8_t>(),
                     scale.const_data_ptr<float>(), zero.const_data_ptr<uint8_t>(), a.group,
                     b.defined() ? b.const_data_ptr<float>() : nullptr, out.mutable_data_ptr<float>(),
                     at::get_num_threads());
  return int4_output(out, input);
}

}  // namespace

TORCH_LIBRARY_IMPL(edgegen, CPU, m) {
  m.impl("int4_pack", &int4_pack_cpu);
  m.impl("int4_dequantize", &int4_dequantize_cpu);
  m.impl("int4_linear", &int4_linear_cpu);
  m.impl("int4_linear_dynamic", &int4_linear_dynamic_cpu);
}

}  // namespace edgegen
