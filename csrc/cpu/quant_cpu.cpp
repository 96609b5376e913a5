// ATen glue for the quantization ops: validate, lay out raw pointers, call the torch-free kernels.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/isnan.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "cpu/checks.h"
#include "kernels/quant/observe.h"
#include "kernels/quant/quantize.h"

namespace edgegen {
namespace {

namespace K = edgegen::kernels;
namespace KQ = edgegen::kernels::quant;

using cpu::check_cpu;
using cpu::float_dtype;

// The [outer, channels, inner] view of x for per-channel parameters along axis (per tensor: one
// channel).
KQ::Layout layout_of(const at::Tensor& x, std::optional<int64_t> axis) {
  if (!axis.has_value()) return {1, 1, x.numel()};
  const int64_t a = cpu::normalize_dim(x, *axis, "axis");
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < a; ++d) outer *= x.size(d);
  for (int64_t d = a + 1; d < x.dim(); ++d) inner *= x.size(d);
  return {outer, x.size(a), inner};
}

// The [outer, channels, inner] view and the per-channel parameters, validated.
struct Params {
  KQ::Layout layout;
  std::vector<float> scale;
  std::vector<int32_t> zero_point;
};

Params params(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point,
              std::optional<int64_t> axis) {
  check_cpu(scale, "scale");
  check_cpu(zero_point, "zero_point");
  Params p;
  p.layout = layout_of(x, axis);
  const int64_t c = p.layout.channels;
  TORCH_CHECK_VALUE(scale.dim() <= 1 && scale.numel() == c, "scale: expected ", c,
                    axis.has_value() ? " values (one per channel along axis)" : " value (per-tensor)", ", got shape ",
                    scale.sizes());
  TORCH_CHECK_VALUE(zero_point.dim() <= 1 && zero_point.numel() == c, "zero_point: expected ", c,
                    " values, got shape ", zero_point.sizes());
  TORCH_CHECK_TYPE(scale.is_floating_point(), "scale: expected a floating-point tensor, got ", scale.scalar_type());
  TORCH_CHECK_TYPE(!zero_point.is_floating_point() && !zero_point.is_complex() && zero_point.scalar_type() != at::kBool,
                   "zero_point: expected an integer tensor, got ", zero_point.scalar_type());
  const at::Tensor sd = scale.to(at::kDouble).contiguous();
  const at::Tensor zd = zero_point.to(at::kLong).contiguous();
  const double* s = sd.const_data_ptr<double>();
  const int64_t* z = zd.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < c; ++i) {
    const float sf = float(s[i]);
    TORCH_CHECK_VALUE(std::isfinite(sf) && sf > 0.0f, "scale: expected finite values > 0, got ", s[i],
                      " at index ", i);
    TORCH_CHECK_VALUE(z[i] >= INT32_MIN && z[i] <= INT32_MAX, "zero_point: value ", z[i], " at index ", i,
                      " is out of the int32 range");
    p.scale.push_back(sf);
    p.zero_point.push_back(int32_t(z[i]));
  }
  return p;
}

void check_range(int64_t qmin, int64_t qmax, int64_t lo, int64_t hi, const char* what) {
  TORCH_CHECK_VALUE(qmin >= lo && qmax <= hi && qmin < qmax, "quant_min/quant_max: expected ", lo,
                    " <= quant_min < quant_max <= ", hi, " for ", what, ", got [", qmin, ", ", qmax, "]");
}

// NaN has no integer code and no defined scale or zero-point gradient: those ops refuse it.
void check_no_nan_input(const at::Tensor& x, const char* why) {
  if (x.numel() == 0) return;
  const int64_t nan = at::isnan(x).sum().item<int64_t>();
  TORCH_CHECK_VALUE(nan == 0, "input: ", nan, " values are NaN; ", why);
}

void check_zero_points_in_range(const Params& p, int64_t qmin, int64_t qmax) {
  for (size_t i = 0; i < p.zero_point.size(); ++i) {
    TORCH_CHECK_VALUE(p.zero_point[i] >= qmin && p.zero_point[i] <= qmax, "zero_point: value ", p.zero_point[i],
                      " at index ", i, " is outside [quant_min, quant_max] = [", qmin, ", ", qmax, "]");
  }
}

at::Tensor quantize_affine_cpu(const at::Tensor& input, const at::Tensor& scale, const at::Tensor& zero_point,
                               std::optional<int64_t> axis, int64_t quant_min, int64_t quant_max,
                               at::ScalarType dtype) {
  check_cpu(input, "input");
  const K::DType dt = float_dtype(input.scalar_type(), "input");
  TORCH_CHECK_TYPE(dtype == at::kChar || dtype == at::kByte, "dtype: expected torch.int8 or torch.uint8, got ",
                   dtype);
  const bool is_unsigned = dtype == at::kByte;
  check_range(quant_min, quant_max, is_unsigned ? 0 : -128, is_unsigned ? 255 : 127, is_unsigned ? "uint8" : "int8");
  const Params p = params(input, scale, zero_point, axis);
  check_zero_points_in_range(p, quant_min, quant_max);
  const at::Tensor x = input.contiguous();
  check_no_nan_input(x, "NaN has no integer code");
  at::Tensor out = at::empty(x.sizes(), x.options().dtype(dtype));
  KQ::quantize(x.const_data_ptr(), dt, p.layout, p.scale.data(), p.zero_point.data(), int32_t(quant_min),
               int32_t(quant_max), is_unsigned, out.mutable_data_ptr(), at::get_num_threads());
  return out;
}

at::Tensor dequantize_affine_cpu(const at::Tensor& q, const at::Tensor& scale, const at::Tensor& zero_point,
                                 std::optional<int64_t> axis, at::ScalarType out_dtype) {
  check_cpu(q, "input");
  TORCH_CHECK_TYPE(q.scalar_type() == at::kChar || q.scalar_type() == at::kByte,
                   "input: expected an int8 or uint8 tensor of quantized values, got ", q.scalar_type());
  const K::DType odt = float_dtype(out_dtype, "out_dtype");
  const Params p = params(q, scale, zero_point, axis);
  const at::Tensor qc = q.contiguous();
  at::Tensor out = at::empty(qc.sizes(), qc.options().dtype(out_dtype));
  KQ::dequantize(qc.const_data_ptr(), q.scalar_type() == at::kByte, p.layout, p.scale.data(), p.zero_point.data(),
                 odt, out.mutable_data_ptr(), at::get_num_threads());
  return out;
}

std::tuple<at::Tensor, at::Tensor> fake_quantize_affine_cpu(const at::Tensor& input, const at::Tensor& scale,
                                                            const at::Tensor& zero_point, std::optional<int64_t> axis,
                                                            int64_t quant_min, int64_t quant_max) {
  check_cpu(input, "input");
  const K::DType dt = float_dtype(input.scalar_type(), "input");
  check_range(quant_min, quant_max, INT32_MIN, INT32_MAX, "fake quantization");
  const Params p = params(input, scale, zero_point, axis);
  check_zero_points_in_range(p, quant_min, quant_max);
  const at::Tensor x = input.contiguous();
  at::Tensor out = at::empty_like(x);
  at::Tensor mask = at::empty(x.sizes(), x.options().dtype(at::kBool));
  KQ::fake_quantize(x.const_data_ptr(), dt, p.layout, p.scale.data(), p.zero_point.data(), int32_t(quant_min),
                    int32_t(quant_max), out.mutable_data_ptr(),
                    reinterpret_cast<uint8_t*>(mask.mutable_data_ptr<bool>()), at::get_num_threads());
  return {out, mask};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fake_quantize_learnable_backward_cpu(
    const at::Tensor& grad, const at::Tensor& input, const at::Tensor& scale, const at::Tensor& zero_point,
    std::optional<int64_t> axis, int64_t quant_min, int64_t quant_max, double grad_factor) {
  check_cpu(input, "input");
  check_cpu(grad, "grad");
  const K::DType dt = float_dtype(input.scalar_type(), "input");
  TORCH_CHECK_TYPE(grad.scalar_type() == input.scalar_type(), "grad: expected dtype ", input.scalar_type(), ", got ",
                   grad.scalar_type());
  TORCH_CHECK_VALUE(grad.sizes() == input.sizes(), "grad: expected shape ", input.sizes(), ", got ", grad.sizes());
  TORCH_CHECK_VALUE(std::isfinite(grad_factor) && grad_factor > 0, "grad_factor: expected a finite value > 0, got ",
                    grad_factor);
  check_range(quant_min, quant_max, INT32_MIN, INT32_MAX, "fake quantization");
  const Params p = params(input, scale, zero_point, axis);
  check_zero_points_in_range(p, quant_min, quant_max);
  const at::Tensor x = input.contiguous(), g = grad.contiguous();
  check_no_nan_input(x, "the scale and zero-point gradients are undefined at NaN");
  at::Tensor dx = at::empty_like(x);
  std::vector<double> ds(size_t(p.layout.channels)), dz(size_t(p.layout.channels));
  KQ::fake_quantize_learnable_backward(x.const_data_ptr(), g.const_data_ptr(), dt, p.layout, p.scale.data(),
                                       p.zero_point.data(), int32_t(quant_min), int32_t(quant_max), grad_factor,
                                       dx.mutable_data_ptr(), ds.data(), dz.data(), at::get_num_threads());
  at::Tensor dscale = at::empty({p.layout.channels}, x.options().dtype(at::kFloat));
  at::Tensor dzp = at::empty({p.layout.channels}, x.options().dtype(at::kFloat));
  for (int64_t c = 0; c < p.layout.channels; ++c) {
    dscale.mutable_data_ptr<float>()[c] = float(ds[size_t(c)]);
    dzp.mutable_data_ptr<float>()[c] = float(dz[size_t(c)]);
  }
  return {dx, dscale, dzp};
}

void check_no_nan(int64_t nan) {
  TORCH_CHECK_VALUE(nan == 0, "input: ", nan, " values are NaN; observers need NaN-free calibration data");
}

std::tuple<at::Tensor, at::Tensor> observe_minmax_cpu(const at::Tensor& input, std::optional<int64_t> axis) {
  check_cpu(input, "input");
  const K::DType dt = float_dtype(input.scalar_type(), "input");
  TORCH_CHECK_VALUE(input.numel() > 0, "input: expected a non-empty tensor");
  const KQ::Layout l = layout_of(input, axis);
  const at::Tensor x = input.contiguous();
  at::Tensor lo = at::empty({l.channels}, x.options().dtype(at::kFloat));
  at::Tensor hi = at::empty({l.channels}, x.options().dtype(at::kFloat));
  check_no_nan(KQ::observe_minmax(x.const_data_ptr(), dt, l, lo.mutable_data_ptr<float>(), hi.mutable_data_ptr<float>(),
                                  at::get_num_threads()));
  return {lo, hi};
}

// Calibration bounds: finite as float32, the kernels' type (1e39 would become infinity there).
void check_bounds(double lo, double hi) {
  const double max = double(std::numeric_limits<float>::max());
  TORCH_CHECK_VALUE(std::abs(lo) <= max && std::abs(hi) <= max && lo <= hi,
                    "lo/hi: expected finite lo <= hi within float32's range, got [", lo, ", ", hi, "]");
}

at::Tensor observe_histogram_cpu(const at::Tensor& input, int64_t bins, double lo, double hi) {
  check_cpu(input, "input");
  const K::DType dt = float_dtype(input.scalar_type(), "input");
  TORCH_CHECK_VALUE(bins >= 1 && bins <= (int64_t(1) << 24), "bins: expected a value in [1, 2^24], got ", bins);
  check_bounds(lo, hi);
  const at::Tensor x = input.contiguous();
  at::Tensor counts = at::empty({bins}, x.options().dtype(at::kLong));
  check_no_nan(KQ::observe_histogram(x.const_data_ptr(), dt, x.numel(), bins, float(lo), float(hi),
                                     counts.mutable_data_ptr<int64_t>(), at::get_num_threads()));
  return counts;
}

std::tuple<double, double> mse_clip_range_cpu(const at::Tensor& input, double lo, double hi, int64_t quant_min,
                                              int64_t quant_max, int64_t steps) {
  check_cpu(input, "input");
  const K::DType dt = float_dtype(input.scalar_type(), "input");
  TORCH_CHECK_VALUE(steps >= 1 && steps <= 4096, "steps: expected a value in [1, 4096], got ", steps);
  check_bounds(lo, hi);
  check_range(quant_min, quant_max, INT32_MIN, INT32_MAX, "the quantized range");
  // No values, no error to minimise: the range would be arbitrary.
  TORCH_CHECK_VALUE(input.numel() > 0, "input: expected a non-empty tensor");
  const at::Tensor x = input.contiguous();
  TORCH_CHECK_VALUE(!at::isnan(x).any().item<bool>(),
                    "input: contains NaN values; the observers need NaN-free calibration data");
  float best_lo = 0.0f, best_hi = 0.0f;
  KQ::mse_clip_range(x.const_data_ptr(), dt, x.numel(), float(lo), float(hi), int32_t(quant_min), int32_t(quant_max),
                     int(steps), &best_lo, &best_hi, at::get_num_threads());
  return {double(best_lo), double(best_hi)};
}

}  // namespace

TORCH_LIBRARY_IMPL(edgegen, CPU, m) {
  m.impl("observe_minmax", &observe_minmax_cpu);
  m.impl("observe_histogram", &observe_histogram_cpu);
  m.impl("mse_clip_range", &mse_clip_range_cpu);
  m.impl("quantize_affine", &quantize_affine_cpu);
  m.impl("dequantize_affine", &dequantize_affine_cpu);
  m.impl("fake_quantize_affine", &fake_quantize_affine_cpu);
  m.impl("fake_quantize_learnable_backward", &fake_quantize_learnable_backward_cpu);
}

}  // namespace edgegen
