// CUDA glue for the KD-loss ops: the shared glue (kd_loss_glue.h) with the CUDA row kernel. Plain
// C++: streams and device guards come through c10's device-generic interface, so this file needs
// neither CUDA headers nor torch's CUDA headers; the kernel is launched on torch's current stream.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/logical_and.h>
#include <ATen/ops/nonzero.h>
#include <ATen/ops/stack.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>
#include <utility>

#include "cpu/checks.h"
#include "kd_loss_glue.h"
#include "kernels/cuda/errors.h"
#include "kernels/cuda/kd_loss_cuda.h"

namespace edgegen {
namespace {

namespace K = edgegen::kernels;
using namespace edgegen::kd_glue;

struct CudaDevice {
  static void check(const at::Tensor& t, const std::string& name) {
    TORCH_CHECK(t.device().is_cuda(), name, ": expected a CUDA tensor, got one on ", t.device(),
                " (all inputs must be on the same device)");
  }
  static K::DType dtype(const at::Tensor& t, const char* name) { return cpu::float_dtype(t.scalar_type(), name); }

  // One device-to-host copy gives both the number of non-ignored rows and whether any target is
  // out of range; the first bad entry is then looked up for the message.
  static std::pair<at::Tensor, int64_t> target(const at::Tensor& target, at::IntArrayRef lead, int64_t vocab,
                                               int64_t ignore_index) {
    check(target, "target");
    TORCH_CHECK_TYPE(target.scalar_type() == at::kLong,
                     "target: expected an int64 (torch.long) tensor of class indices, got ", target.scalar_type());
    TORCH_CHECK_VALUE(target.sizes() == lead, "target: expected shape ", lead,
                      " (the logits' shape without the vocabulary dimension), got ", target.sizes());
    const at::Tensor tc = target.contiguous();
    if (tc.numel() == 0) return {tc, 0};
    const at::Tensor flat = tc.reshape({-1});
    const at::Tensor kept = flat.ne(ignore_index);
    const at::Tensor bad = at::logical_and(kept, flat.lt(0).logical_or(flat.ge(vocab)));
    const at::Tensor counts = at::stack({kept.sum(), bad.sum()}).cpu();
    const int64_t* c = counts.const_data_ptr<int64_t>();
    if (c[1] > 0) {
      const int64_t i = at::nonzero(bad).select(0, 0).item<int64_t>();
      TORCH_CHECK_INDEX(false, "target: entry ", i, " is ", flat.select(0, i).item<int64_t>(),
                        ", expected a class index in [0, ", vocab, ") or ignore_index (", ignore_index, ")");
    }
    return {tc, c[0]};
  }

  static at::Tensor empty_out(at::IntArrayRef sizes, const at::TensorOptions& opts) { return at::empty(sizes, opts); }

  static void run(const K::KDLossProblem& p) {
    const c10::Device device = c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)->getDevice();
    void* stream = c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)->getStream(device).native_handle();
    const int err = K::cuda::kd_loss_rows_cuda(p, stream);
    TORCH_CHECK(err == 0, "edgegen::kd_loss: CUDA kernel launch failed: ", K::cuda::cuda_error_text(err));
  }

  // Deterministic for a given size (torch's CUDA sum has a fixed reduction order).
  static at::Tensor reduce(const at::Tensor& row_loss, Reduction red, int64_t valid, at::IntArrayRef lead,
                           at::ScalarType out_dtype) {
    if (red == Reduction::None) return row_loss.to(out_dtype).reshape(lead);
    at::Tensor total = row_loss.sum();
    if (red == Reduction::Mean) total = total.mul(valid > 0 ? 1.0 / double(valid) : 0.0);
    return total.to(out_dtype);
  }
};

void same_device(const at::Tensor& ref, const at::Tensor& t, const std::string& name) {
  TORCH_CHECK(t.device() == ref.device(), name, ": expected a tensor on ", ref.device(), ", got one on ", t.device(),
              " (all inputs must be on the same device)");
}

std::tuple<at::Tensor, at::Tensor> kd_loss_cuda(const at::Tensor& student_logits, at::TensorList teacher_logits,
                                                at::ArrayRef<double> teacher_weights, const at::Tensor& target,
                                                double temperature, double alpha, int64_t ignore_index,
                                                c10::string_view reduction, bool with_grad) {
  CudaDevice::check(student_logits, "student_logits");
  for (size_t k = 0; k < teacher_logits.size(); ++k)
    same_device(student_logits, teacher_logits[k], "teacher_logits[" + std::to_string(k) + "]");
  same_device(student_logits, target, "target");
  const c10::DeviceGuard guard(student_logits.device());
  return kd_loss_impl<CudaDevice>(student_logits, teacher_logits, teacher_weights, target, temperature, alpha,
                                  ignore_index, reduction, with_grad);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_linear_kd_loss_cuda(
    const at::Tensor& student_hidden, const at::Tensor& student_weight, const std::optional<at::Tensor>& student_bias,
    const at::Tensor& teacher_hidden, const at::Tensor& teacher_weight, const std::optional<at::Tensor>& teacher_bias,
    const at::Tensor& target, double temperature, double alpha, int64_t ignore_index, c10::string_view reduction,
    int64_t chunk_size, const std::optional<at::Tensor>& grad_row_scale, bool with_grad) {
  CudaDevice::check(student_hidden, "student_hidden");
  same_device(student_hidden, student_weight, "student_weight");
  same_device(student_hidden, teacher_hidden, "teacher_hidden");
  same_device(student_hidden, teacher_weight, "teacher_weight");
  same_device(student_hidden, target, "target");
  if (student_bias) same_device(student_hidden, *student_bias, "student_bias");
  if (teacher_bias) same_device(student_hidden, *teacher_bias, "teacher_bias");
  if (grad_row_scale) same_device(student_hidden, *grad_row_scale, "grad_row_scale");
  const c10::DeviceGuard guard(student_hidden.device());
  return fused_linear_kd_loss_impl<CudaDevice>(student_hidden, student_weight, student_bias, teacher_hidden,
                                               teacher_weight, teacher_bias, target, temperature, alpha,
                                               ignore_index, reduction, chunk_size, grad_row_scale, with_grad);
}

}  // namespace

TORCH_LIBRARY_IMPL(edgegen, CUDA, m) {
  m.impl("kd_loss", &kd_loss_cuda);
  m.impl("fused_linear_kd_loss", &fused_linear_kd_loss_cuda);
}

}  // namespace edgegen
