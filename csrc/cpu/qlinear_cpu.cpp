// ATen glue for the INT8 GEMM ops.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "cpu/checks.h"
#include "kernels/quant/gemm.h"

namespace edgegen {
namespace {

namespace KQ = edgegen::kernels::quant;

using cpu::check_cpu;

// int32 accumulators are exact while K * 255 * 128 < 2^31.
constexpr int64_t kMaxK = 65000;

std::tuple<at::Tensor, at::Tensor> int8_pack_weight_cpu(const at::Tensor& weight) {
  check_cpu(weight, "weight");
  TORCH_CHECK_TYPE(weight.scalar_type() == at::kChar, "weight: expected an int8 tensor, got ", weight.scalar_type());
  TORCH_CHECK_VALUE(weight.dim() == 2 && weight.size(0) > 0 && weight.size(1) > 0,
                    "weight: expected a non-empty [out_features, in_features] matrix, got shape ", weight.sizes());
  const int64_t n = weight.size(0), k = weight.size(1);
  TORCH_CHECK_VALUE(k <= kMaxK, "weight: in_features ", k, " exceeds ", kMaxK,
                    " (int32 accumulation would no longer be exact)");
  const at::Tensor w = weight.contiguous();
  at::Tensor packed = at::empty({KQ::packed_panels(n), KQ::packed_k(k) / 4, KQ::kPanel, 4}, w.options());
  at::Tensor row_sum = at::empty({n}, w.options().dtype(at::kInt));
  KQ::pack_weight_s8(w.const_data_ptr<int8_t>(), n, k, packed.mutable_data_ptr<int8_t>(),
                     row_sum.mutable_data_ptr<int32_t>());
  return {packed, row_sum};
}

// The last panel's rows past n are padding and hold zeros; a weight packed for more output
// features (same panel count) would otherwise have its last rows silently dropped. Checked on
// every call as one branch-free OR over the padding bytes ((16 - n % 16) x k of them, contiguous
// per 4-column group), then located only when something is set.
void check_padding_rows_zero(const at::Tensor& packed, int64_t n, int64_t k, const std::string& pname) {
  if (n % KQ::kPanel == 0) return;
  const int64_t kp = KQ::packed_k(k), last = KQ::packed_panels(n) - 1, first_pad = n - last * KQ::kPanel;
  const int8_t* w = packed.const_data_ptr<int8_t>() + last * (kp / 4) * KQ::kPanel * 4;
  uint8_t any = 0;
  for (int64_t g = 0; g < kp / 4; ++g) {
    const int8_t* blk = w + g * KQ::kPanel * 4;
    for (int64_t r = first_pad * 4; r < KQ::kPanel * 4; ++r) any |= uint8_t(blk[r]);
  }
  if (any == 0) return;
  for (int64_t g = 0; g < kp / 4; ++g) {
    const int8_t* blk = w + g * KQ::kPanel * 4;
    for (int64_t r = first_pad * 4; r < KQ::kPanel * 4; ++r) {
      TORCH_CHECK_VALUE(blk[r] == 0, pname, ": was packed for more output features than n=", n,
                        " (a non-zero weight in row ", last * KQ::kPanel + r / 4, ")");
    }
  }
}

void check_packed(const at::Tensor& packed, const at::Tensor& row_sum, int64_t n, int64_t k,
                  const std::string& pname = "packed_weight", const std::string& rname = "weight_row_sum") {
  check_cpu(packed, pname);
  check_cpu(row_sum, rname);
  TORCH_CHECK_VALUE(n > 0 && k > 0 && k <= kMaxK, "n, k: expected 0 < n and 0 < k <= ", kMaxK, ", got ", n, ", ", k);
  TORCH_CHECK_TYPE(packed.scalar_type() == at::kChar && packed.is_contiguous(),
                   pname, ": expected the contiguous int8 tensor from int8_pack_weight");
  TORCH_CHECK_VALUE(packed.numel() == KQ::packed_panels(n) * KQ::packed_k(k) * KQ::kPanel,
                    pname, ": has ", packed.numel(), " bytes, expected ",
                    KQ::packed_panels(n) * KQ::packed_k(k) * KQ::kPanel, " for n=", n, ", k=", k);
  TORCH_CHECK_VALUE(row_sum.scalar_type() == at::kInt && row_sum.dim() == 1 && row_sum.size(0) == n &&
                        row_sum.is_contiguous(),
                    rname, ": expected a contiguous int32 tensor of shape [", n, "]");
  check_padding_rows_zero(packed, n, k, pname);
}

// The packed weight's columns that the call does not use (`unused(col)`) must hold zeros: a weight
// packed for more input features or channels than the call supplies would otherwise have those
// silently ignored. Scans only such columns (none when the widths are multiples of 4).
template <class Unused>
void check_unused_columns_zero(const at::Tensor& packed, int64_t n, int64_t kp, const Unused& unused,
                               const char* what) {
  const int8_t* w = packed.const_data_ptr<int8_t>();
  const int64_t panels = KQ::packed_panels(n);
  for (int64_t col = 0; col < kp; ++col) {
    if (!unused(col)) continue;
    for (int64_t pnl = 0; pnl < panels; ++pnl) {
      const int8_t* blk = w + ((pnl * (kp / 4) + col / 4) * KQ::kPanel) * 4 + col % 4;
      for (int64_t r = 0; r < KQ::kPanel; ++r) {
        TORCH_CHECK_VALUE(blk[r * 4] == 0, "packed_weight: was packed for more ", what,
                          " than this call supplies (a non-zero weight in column ", col, ")");
      }
    }
  }
}

// INT8 layers quantize their inputs: NaN or infinity has no 8-bit code (NaN would silently become
// a finite value, infinity would turn the whole scale into infinity), so it is an error.
// x: the contiguous float32 copy the op quantizes. Dynamic activations (a_scale <= 0): their
// quantization parameters, from the same vectorised pass (split over threads) that checks
// finiteness; static ones: the check alone. No temporary tensor either way.
KQ::ActQuant checked_act_params(const at::Tensor& x, double a_scale, int64_t a_zero_point) {
  KQ::ActQuant q{float(a_scale), int32_t(a_zero_point)};
  const bool finite = a_scale <= 0
                          ? KQ::dynamic_act_params_u7(x.const_data_ptr<float>(), x.numel(), &q, at::get_num_threads())
                          : KQ::all_finite(x.const_data_ptr<float>(), x.numel(), at::get_num_threads());
  TORCH_CHECK_VALUE(finite,
                    "input: contains NaN or infinite values; INT8 layers quantize their input and need finite values");
  return q;
}

// A copy of the activations with rows padded to a multiple of 4 bytes (zeros), as the kernel reads.
at::Tensor padded_rows(const at::Tensor& a2d, int64_t k) {
  const int64_t lda = KQ::packed_k(k);
  at::Tensor out = at::zeros({a2d.size(0), lda}, a2d.options());
  out.narrow(1, 0, k).copy_(a2d);
  return out;
}

at::Tensor int8_gemm_cpu(const at::Tensor& a, int64_t a_zero_point, const at::Tensor& packed,
                         const at::Tensor& row_sum, int64_t n, int64_t k) {
  check_cpu(a, "input");
  TORCH_CHECK_TYPE(a.scalar_type() == at::kByte, "input: expected a uint8 tensor, got ", a.scalar_type());
  TORCH_CHECK_VALUE(a.dim() == 2 && a.size(1) == k, "input: expected shape [M, ", k, "], got ", a.sizes());
  TORCH_CHECK_VALUE(a_zero_point >= 0 && a_zero_point <= 255, "a_zero_point: expected a value in [0, 255], got ",
                    a_zero_point);
  check_packed(packed, row_sum, n, k);
  check_unused_columns_zero(packed, n, KQ::packed_k(k), [k](int64_t col) { return col >= k; }, "input features");
  const at::Tensor ap = padded_rows(a, k);
  at::Tensor out = at::empty({a.size(0), n}, a.options().dtype(at::kInt));
  KQ::GemmOutput o{out.mutable_data_ptr<int32_t>(), nullptr, 0.0f, nullptr, nullptr};
  KQ::gemm_u8s8(ap.const_data_ptr<uint8_t>(), ap.size(1), a.size(0), n, k, int32_t(a_zero_point),
                packed.const_data_ptr<int8_t>(), row_sum.const_data_ptr<int32_t>(), o, at::get_num_threads());
  return out;
}

// Shared by the dynamic and static linear ops: a_scale <= 0 means "quantize dynamically".
at::Tensor int8_linear_impl(const at::Tensor& input, double a_scale, int64_t a_zero_point, const at::Tensor& packed,
                            const at::Tensor& row_sum, const at::Tensor& weight_scale,
                            const std::optional<at::Tensor>& bias, int64_t n, int64_t k) {
  check_cpu(input, "input");
  TORCH_CHECK_TYPE(input.is_floating_point(), "input: expected a floating-point tensor, got ", input.scalar_type());
  TORCH_CHECK_VALUE(input.dim() >= 1 && input.size(-1) == k, "input: expected [..., ", k, "], got ", input.sizes());
  check_packed(packed, row_sum, n, k);
  check_unused_columns_zero(packed, n, KQ::packed_k(k), [k](int64_t col) { return col >= k; }, "input features");
  const at::Tensor ws = cpu::float_scales(weight_scale, n, "weight_scale");
  const at::Tensor b = cpu::float_bias(bias, n);
  const at::Tensor x = input.to(at::kFloat).contiguous();
  const KQ::ActQuant q = checked_act_params(x, a_scale, a_zero_point);
  const int64_t m = k == 0 ? 0 : x.numel() / k;
  const int64_t lda = KQ::packed_k(k);
  at::Tensor a = at::empty({m, lda}, x.options().dtype(at::kByte));
  std::vector<int64_t> shape(input.sizes().begin(), input.sizes().end());
  shape.back() = n;
  at::Tensor out = at::empty(shape, x.options());
  if (m > 0) {
    KQ::quantize_activations_static_u7(x.const_data_ptr<float>(), m, k, q, a.mutable_data_ptr<uint8_t>(), lda,
                                       at::get_num_threads());
    KQ::GemmOutput o{nullptr, out.mutable_data_ptr<float>(), q.scale, ws.const_data_ptr<float>(),
                     b.defined() ? b.const_data_ptr<float>() : nullptr};
    KQ::gemm_u8s8(a.const_data_ptr<uint8_t>(), lda, m, n, k, q.zero_point, packed.const_data_ptr<int8_t>(),
                  row_sum.const_data_ptr<int32_t>(), o, at::get_num_threads());
  }
  return input.scalar_type() == at::kFloat ? out : out.to(input.scalar_type());
}

at::Tensor int8_linear_dynamic_cpu(const at::Tensor& input, const at::Tensor& packed, const at::Tensor& row_sum,
                                   const at::Tensor& weight_scale, const std::optional<at::Tensor>& bias, int64_t n,
                                   int64_t k) {
  return int8_linear_impl(input, 0.0, 0, packed, row_sum, weight_scale, bias, n, k);
}

// a_scale <= 0: dynamic activations (a_zero_point unused); else a finite scale and a 7-bit zero point.
void check_static_act(double a_scale, int64_t a_zero_point) {
  TORCH_CHECK_VALUE(!std::isnan(a_scale), "a_scale: expected a finite value (> 0 static, <= 0 dynamic), got nan");
  if (a_scale > 0) {
    TORCH_CHECK_VALUE(std::isfinite(a_scale), "a_scale: expected a finite value > 0, got ", a_scale);
    TORCH_CHECK_VALUE(a_zero_point >= 0 && a_zero_point <= 127, "a_zero_point: expected a value in [0, 127] (7-bit "
                      "activations), got ", a_zero_point);
  }
}

at::Tensor int8_linear_static_cpu(const at::Tensor& input, double a_scale, int64_t a_zero_point,
                                  const at::Tensor& packed, const at::Tensor& row_sum, const at::Tensor& weight_scale,
                                  const std::optional<at::Tensor>& bias, int64_t n, int64_t k) {
  TORCH_CHECK_VALUE(a_scale > 0, "a_scale: expected a finite value > 0 (static activations), got ", a_scale);
  check_static_act(a_scale, a_zero_point);
  return int8_linear_impl(input, a_scale, a_zero_point, packed, row_sum, weight_scale, bias, n, k);
}

constexpr int64_t kMaxSide = int64_t(1) << 24;  // far beyond any image; keeps the index sums small

void check_pair(at::IntArrayRef v, const char* name, int64_t lo, int64_t hi) {
  TORCH_CHECK_VALUE(v.size() == 2 && v[0] >= lo && v[1] >= lo && v[0] <= hi && v[1] <= hi, name,
                    ": expected two values in [", lo, ", ", hi, "], got ", v);
}

at::Tensor int8_conv2d_cpu(const at::Tensor& input, const at::Tensor& packed, const at::Tensor& row_sum,
                           const at::Tensor& weight_scale, const std::optional<at::Tensor>& bias, int64_t out_channels,
                           at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding,
                           at::IntArrayRef dilation, double a_scale, int64_t a_zero_point) {
  check_cpu(input, "input");
  TORCH_CHECK_TYPE(input.is_floating_point(), "input: expected a floating-point tensor, got ", input.scalar_type());
  TORCH_CHECK_VALUE(input.dim() == 4, "input: expected [N, C, H, W], got ", input.sizes());
  // Bounded so that every size product below fits int64 (dilation * (kernel - 1), kernel taps x
  // channels): an unbounded value wrapped around, passed the checks and read out of bounds.
  check_pair(kernel, "kernel_size", 1, 1024);
  check_pair(stride, "stride", 1, 1 << 16);
  check_pair(padding, "padding", 0, kMaxSide);
  check_pair(dilation, "dilation", 1, 1 << 16);
  TORCH_CHECK_VALUE(input.size(2) <= kMaxSide && input.size(3) <= kMaxSide, "input: spatial size ", input.sizes(),
                    " exceeds ", kMaxSide);
  const int64_t b = input.size(0), c = input.size(1), h = input.size(2), w = input.size(3);
  const int64_t cp = (c + 3) / 4 * 4;
  // The last window start: negative when the (padded) input is smaller than the dilated kernel.
  // Checked before dividing: C++ division truncates toward zero, so a span in (-stride, 0) would
  // count one output position.
  const int64_t span_h = h + 2 * padding[0] - dilation[0] * (kernel[0] - 1) - 1;
  const int64_t span_w = w + 2 * padding[1] - dilation[1] * (kernel[1] - 1) - 1;
  TORCH_CHECK_VALUE(span_h >= 0 && span_w >= 0, "input: spatial size ", h, "x", w, " is too small for the kernel ",
                    kernel, " with padding ", padding, " and dilation ", dilation);
  const int64_t ho = span_h / stride[0] + 1, wo = span_w / stride[1] + 1;
  TORCH_CHECK_VALUE(out_channels >= 1, "out_channels: expected a value >= 1, got ", out_channels);
  check_packed(packed, row_sum, out_channels, kernel[0] * kernel[1] * cp);
  check_unused_columns_zero(packed, out_channels, kernel[0] * kernel[1] * cp,
                            [c, cp](int64_t col) { return col % cp >= c; }, "input channels");
  const at::Tensor ws = cpu::float_scales(weight_scale, out_channels, "weight_scale");
  const at::Tensor bf = cpu::float_bias(bias, out_channels);
  check_static_act(a_scale, a_zero_point);
  const at::Tensor x = input.to(at::kFloat).contiguous();
  const KQ::ActQuant q = checked_act_params(x, a_scale, a_zero_point);
  const int64_t hp = h + 2 * padding[0], wp = w + 2 * padding[1];
  at::Tensor a = at::empty({b, hp, wp, cp}, x.options().dtype(at::kByte));
  KQ::quantize_nchw_to_nhwc_u7(x.const_data_ptr<float>(), b, c, h, w, padding[0], padding[0], padding[1], padding[1],
                               cp, q, a.mutable_data_ptr<uint8_t>(), at::get_num_threads());
  at::Tensor out = at::empty({b, out_channels, ho, wo}, x.options());
  const int64_t strides[4] = {out_channels * ho * wo, ho * wo, wo, 1};
  KQ::ConvGeometry g{b, hp, wp, cp, kernel[0], kernel[1], stride[0], stride[1], dilation[0], dilation[1], ho, wo};
  KQ::conv2d_u8s8(a.const_data_ptr<uint8_t>(), g, out_channels, q.zero_point, packed.const_data_ptr<int8_t>(),
                  row_sum.const_data_ptr<int32_t>(), q.scale, ws.const_data_ptr<float>(),
                  bf.defined() ? bf.const_data_ptr<float>() : nullptr, out.mutable_data_ptr<float>(), strides,
                  at::get_num_threads());
  return input.scalar_type() == at::kFloat ? out : out.to(input.scalar_type());
}

// Transposed convolution by output phase (see Int8ConvTranspose2d): the input is quantized once,
// padded by the largest tap count, and each phase's stride-1 convolution writes its strided slice
// of the output directly. phase_info holds, per phase, (ry, rx, taps_y, taps_x).
at::Tensor int8_conv_transpose2d_cpu(const at::Tensor& input, at::TensorList packed, at::TensorList row_sums,
                                     const at::Tensor& weight_scale, const std::optional<at::Tensor>& bias,
                                     int64_t out_channels, at::IntArrayRef phase_info, at::IntArrayRef stride,
                                     at::IntArrayRef padding, at::IntArrayRef output_size, double a_scale,
                                     int64_t a_zero_point) {
  check_cpu(input, "input");
  TORCH_CHECK_TYPE(input.is_floating_point(), "input: expected a floating-point tensor, got ", input.scalar_type());
  TORCH_CHECK_VALUE(input.dim() == 4, "input: expected [N, C, H, W], got ", input.sizes());
  TORCH_CHECK_VALUE(phase_info.size() == 4 * packed.size() && row_sums.size() == packed.size() && !packed.empty(),
                    "phase_info: expected 4 values per phase and one packed weight and row sum per phase");
  check_pair(stride, "stride", 1, 1 << 16);
  check_pair(padding, "padding", 0, kMaxSide);
  check_pair(output_size, "output_size", 1, kMaxSide);
  TORCH_CHECK_VALUE(input.size(2) <= kMaxSide && input.size(3) <= kMaxSide, "input: spatial size ", input.sizes(),
                    " exceeds ", kMaxSide);
  const int64_t b = input.size(0), c = input.size(1), h = input.size(2), w = input.size(3);
  const int64_t cp = (c + 3) / 4 * 4, ho = output_size[0], wo = output_size[1];
  TORCH_CHECK_VALUE(out_channels >= 1, "out_channels: expected a value >= 1, got ", out_channels);
  // The phases: distinct (ry, rx) with 0 <= r < stride, and tap counts that are those of one
  // kernel of size K = the sum of the taps over the residues, cut by this stride:
  // taps(r) = ceil((K - r) / stride) (0 for a residue without a phase).
  std::vector<int64_t> ty_of(size_t(stride[0]), 0), tx_of(size_t(stride[1]), 0);
  std::vector<std::pair<int64_t, int64_t>> seen;
  int64_t tmax = 1;
  for (size_t p = 0; p < packed.size(); ++p) {
    const int64_t ry = phase_info[4 * p], rx = phase_info[4 * p + 1], ty = phase_info[4 * p + 2],
                  tx = phase_info[4 * p + 3];
    TORCH_CHECK_VALUE(ry >= 0 && ry < stride[0] && rx >= 0 && rx < stride[1], "phase_info: phase ", p, " has residue (",
                      ry, ", ", rx, "), expected values in [0, stride) = [0, ", stride[0], ") x [0, ", stride[1], ")");
    TORCH_CHECK_VALUE(ty >= 1 && tx >= 1 && ty <= 1024 && tx <= 1024, "phase_info: phase ", p, " has taps (", ty, ", ",
                      tx, "), expected values in [1, 1024]");
    TORCH_CHECK_VALUE(std::find(seen.begin(), seen.end(), std::make_pair(ry, rx)) == seen.end(), "phase_info: phase ",
                      p, " repeats the residue (", ry, ", ", rx, ")");
    seen.push_back({ry, rx});
    TORCH_CHECK_VALUE((ty_of[size_t(ry)] == 0 || ty_of[size_t(ry)] == ty) && (tx_of[size_t(rx)] == 0 ||
                                                                               tx_of[size_t(rx)] == tx),
                      "phase_info: phase ", p, " gives residue (", ry, ", ", rx, ") other tap counts than an "
                      "earlier phase with the same residue");
    ty_of[size_t(ry)] = ty, tx_of[size_t(rx)] = tx;
    tmax = std::max({tmax, ty, tx});
  }
  int64_t ky = 0, kx = 0;
  for (int64_t t : ty_of) ky += t;
  for (int64_t t : tx_of) kx += t;
  for (int64_t r = 0; r < stride[0]; ++r)
    TORCH_CHECK_VALUE(ty_of[size_t(r)] == std::max<int64_t>(0, (ky - r + stride[0] - 1) / stride[0]),
                      "phase_info: the row taps do not split one kernel of ", ky, " rows by stride ", stride[0],
                      " (residue ", r, " has ", ty_of[size_t(r)], "); were the phases built for another stride?");
  for (int64_t r = 0; r < stride[1]; ++r)
    TORCH_CHECK_VALUE(tx_of[size_t(r)] == std::max<int64_t>(0, (kx - r + stride[1] - 1) / stride[1]),
                      "phase_info: the column taps do not split one kernel of ", kx, " columns by stride ", stride[1],
                      " (residue ", r, " has ", tx_of[size_t(r)], "); were the phases built for another stride?");
  TORCH_CHECK_VALUE(int64_t(seen.size()) == std::min(stride[0], ky) * std::min(stride[1], kx),
                    "phase_info: expected one phase per (row, column) residue that has taps, ",
                    std::min(stride[0], ky) * std::min(stride[1], kx), ", got ", seen.size());
  // output = (in - 1) * stride - 2 padding + kernel + output_padding, output_padding in [0, stride).
  for (int d = 0; d < 2; ++d) {
    const int64_t in = d == 0 ? h : w, kk = d == 0 ? ky : kx, lo = (in - 1) * stride[d] - 2 * padding[d] + kk;
    TORCH_CHECK_VALUE(output_size[d] >= lo && output_size[d] < lo + stride[d], "output_size: ", output_size[d],
                      " is not a transposed-convolution size for input ", in, ", kernel ", kk, ", stride ", stride[d],
                      ", padding ", padding[d], " (expected [", lo, ", ", lo + stride[d] - 1, "])");
  }
  const at::Tensor ws = cpu::float_scales(weight_scale, out_channels, "weight_scale");
  const at::Tensor bf = cpu::float_bias(bias, out_channels);
  check_static_act(a_scale, a_zero_point);
  const at::Tensor x = input.to(at::kFloat).contiguous();
  const KQ::ActQuant q = checked_act_params(x, a_scale, a_zero_point);
  // Enough padding for every phase: a phase reads rows qy - t (t < taps) for its output rows qy.
  const int64_t pad_y = tmax + (ho + padding[0]) / stride[0] + 1 - h, pad_x = tmax + (wo + padding[1]) / stride[1] + 1 - w;
  const int64_t pt = tmax, pb = std::max<int64_t>(pad_y, 0), pl = tmax, pr = std::max<int64_t>(pad_x, 0);
  const int64_t hp = h + pt + pb, wp = w + pl + pr;
  at::Tensor a = at::empty({b, hp, wp, cp}, x.options().dtype(at::kByte));
  KQ::quantize_nchw_to_nhwc_u7(x.const_data_ptr<float>(), b, c, h, w, pt, pb, pl, pr, cp, q,
                               a.mutable_data_ptr<uint8_t>(), at::get_num_threads());
  at::Tensor out = at::empty({b, out_channels, ho, wo}, x.options());
  // Every output position belongs to exactly one phase; only a stride larger than the kernel leaves
  // phases without taps, whose positions get the bias alone.
  if (int64_t(packed.size()) < stride[0] * stride[1]) {
    if (bf.defined()) out.copy_(bf.view({1, out_channels, 1, 1}).expand_as(out));
    else out.zero_();
  }
  for (size_t p = 0; p < packed.size(); ++p) {
    const int64_t ry = phase_info[4 * p], rx = phase_info[4 * p + 1], ty = phase_info[4 * p + 2], tx = phase_info[4 * p + 3];
    // Output o = q * stride + r - padding belongs to phase r; q runs over [ceil((p - r) / s),
    // floor((size - 1 + p - r) / s)].
    auto ceil_div = [](int64_t a, int64_t d) { return a >= 0 ? (a + d - 1) / d : -((-a) / d); };
    auto floor_div = [](int64_t a, int64_t d) { return a >= 0 ? a / d : -((-a + d - 1) / d); };
    const int64_t qy0 = ceil_div(padding[0] - ry, stride[0]), qy1 = floor_div(ho - 1 + padding[0] - ry, stride[0]);
    const int64_t qx0 = ceil_div(padding[1] - rx, stride[1]), qx1 = floor_div(wo - 1 + padding[1] - rx, stride[1]);
    if (qy1 < qy0 || qx1 < qx0) continue;
    check_packed(packed[p], row_sums[p], out_channels, ty * tx * cp, "packed_weights[" + std::to_string(p) + "]",
                 "weight_row_sums[" + std::to_string(p) + "]");
    check_unused_columns_zero(packed[p], out_channels, ty * tx * cp, [c, cp](int64_t col) { return col % cp >= c; },
                              "input channels");
    const int64_t ny = qy1 - qy0 + 1, nx = qx1 - qx0 + 1;
    // Input row of output q, tap window start: q - ty + 1 (unpadded) -> + pt in the buffer.
    const int64_t y0 = qy0 - ty + 1 + pt, x0 = qx0 - tx + 1 + pl;
    // Guaranteed by the checks above; kept as a last guard against an out-of-bounds read.
    TORCH_CHECK(y0 >= 0 && x0 >= 0 && y0 + ny + ty - 1 <= hp && x0 + nx + tx - 1 <= wp,
                "int8_conv_transpose2d: the input padding does not cover phase ", p, " (please report this)");
    const int64_t oy0 = qy0 * stride[0] + ry - padding[0], ox0 = qx0 * stride[1] + rx - padding[1];
    const int64_t os[4] = {out_channels * ho * wo, ho * wo, stride[0] * wo, stride[1]};
    KQ::ConvGeometry g{b, hp, wp, cp, ty, tx, 1, 1, 1, 1, ny, nx};
    const uint8_t* base = a.const_data_ptr<uint8_t>() + (y0 * wp + x0) * cp;
    KQ::conv2d_u8s8(base, g, out_channels, q.zero_point, packed[p].const_data_ptr<int8_t>(),
                    row_sums[p].const_data_ptr<int32_t>(), q.scale, ws.const_data_ptr<float>(),
                    bf.defined() ? bf.const_data_ptr<float>() : nullptr,
                    out.mutable_data_ptr<float>() + oy0 * wo + ox0, os, at::get_num_threads());
  }
  return input.scalar_type() == at::kFloat ? out : out.to(input.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(edgegen, CPU, m) {
  m.impl("int8_conv_transpose2d", &int8_conv_transpose2d_cpu);
  m.impl("int8_conv2d", &int8_conv2d_cpu);
  m.impl("int8_pack_weight", &int8_pack_weight_cpu);
  m.impl("int8_gemm", &int8_gemm_cpu);
  m.impl("int8_linear_dynamic", &int8_linear_dynamic_cpu);
  m.impl("int8_linear_static", &int8_linear_static_cpu);
}

}  // namespace edgegen
