// CPU glue for the KD-loss ops: the shared glue (kd_loss_glue.h) with the CPU row kernel.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>
#include <utility>

#include "cpu/checks.h"
#include "cpu/memory.h"
#include "kd_loss_glue.h"
#include "kernels/distill/kd_loss.h"

namespace edgegen {
namespace {

namespace K = edgegen::kernels;
using namespace edgegen::kd_glue;

struct CpuDevice {
  static void check(const at::Tensor& t, const std::string& name) { cpu::check_cpu(t, name); }
  static K::DType dtype(const at::Tensor& t, const char* name) { return cpu::float_dtype(t.scalar_type(), name); }

  // Checks target against the row shape and vocabulary. Returns its contiguous form (what the
  // kernel reads) and the number of non-ignored rows.
  static std::pair<at::Tensor, int64_t> target(const at::Tensor& target, at::IntArrayRef lead, int64_t vocab,
                                               int64_t ignore_index) {
    cpu::check_cpu(target, "target");
    TORCH_CHECK_TYPE(target.scalar_type() == at::kLong,
                     "target: expected an int64 (torch.long) tensor of class indices, got ", target.scalar_type());
    TORCH_CHECK_VALUE(target.sizes() == lead, "target: expected shape ", lead,
                      " (the logits' shape without the vocabulary dimension), got ", target.sizes());
    const at::Tensor tc = target.contiguous();
    const int64_t* y = tc.const_data_ptr<int64_t>();
    const int64_t n = tc.numel();
    int64_t valid = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (y[i] == ignore_index) continue;
      TORCH_CHECK_INDEX(y[i] >= 0 && y[i] < vocab, "target: entry ", i, " is ", y[i],
                        ", expected a class index in [0, ", vocab, ") or ignore_index (", ignore_index, ")");
      ++valid;
    }
    return {tc, valid};
  }

  static at::Tensor empty_out(at::IntArrayRef sizes, const at::TensorOptions& opts) {
    return empty_for_streaming_write(sizes, opts);
  }

  static void run(K::KDLossProblem p) {
    p.num_threads = at::get_num_threads();
    K::kd_loss_rows(p);
  }

  // Row losses are kept in double by the kernel; reduced here in a fixed order (deterministic).
  static at::Tensor reduce(const at::Tensor& row_loss, Reduction red, int64_t valid, at::IntArrayRef lead,
                           at::ScalarType out_dtype) {
    if (red == Reduction::None) return row_loss.to(out_dtype).reshape(lead);
    const double* r = row_loss.const_data_ptr<double>();
    double total = 0.0;
    for (int64_t i = 0; i < row_loss.numel(); ++i) total += r[i];
    if (red == Reduction::Mean) total = valid > 0 ? total / double(valid) : 0.0;
    at::Tensor out = at::empty({}, row_loss.options().dtype(out_dtype));
    if (out_dtype == at::kDouble) *out.mutable_data_ptr<double>() = total;
    else *out.mutable_data_ptr<float>() = float(total);
    return out;
  }
};

std::tuple<at::Tensor, at::Tensor> kd_loss_cpu(const at::Tensor& student_logits, at::TensorList teacher_logits,
                                               at::ArrayRef<double> teacher_weights, const at::Tensor& target,
                                               double temperature, double alpha, int64_t ignore_index,
                                               c10::string_view reduction, bool with_grad) {
  return kd_loss_impl<CpuDevice>(student_logits, teacher_logits, teacher_weights, target, temperature, alpha,
                                 ignore_index, reduction, with_grad);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_linear_kd_loss_cpu(
    const at::Tensor& student_hidden, const at::Tensor& student_weight, const std::optional<at::Tensor>& student_bias,
    const at::Tensor& teacher_hidden, const at::Tensor& teacher_weight, const std::optional<at::Tensor>& teacher_bias,
    const at::Tensor& target, double temperature, double alpha, int64_t ignore_index, c10::string_view reduction,
    int64_t chunk_size, const std::optional<at::Tensor>& grad_row_scale, bool with_grad) {
  return fused_linear_kd_loss_impl<CpuDevice>(student_hidden, student_weight, student_bias, teacher_hidden,
                                              teacher_weight, teacher_bias, target, temperature, alpha, ignore_index,
                                              reduction, chunk_size, grad_row_scale, with_grad);
}

}  // namespace

TORCH_LIBRARY_IMPL(edgegen, CPU, m) {
  m.impl("kd_loss", &kd_loss_cpu);
  m.impl("fused_linear_kd_loss", &fused_linear_kd_loss_cpu);
}

}  // namespace edgegen
