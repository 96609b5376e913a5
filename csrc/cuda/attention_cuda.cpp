// CUDA glue for sliding-window + global-token attention: validate, describe the strided inputs,
// call the torch-free tensor-core kernels on torch's current stream. The native kernels take
// bfloat16/float16 with head_dim 32, 64, 80, 96 or 128 and no block layout; edgegen.ops routes every other
// call on CUDA to FlexAttention or the reference before it gets here (see ops/_fallback.py).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <tuple>

#include "attention_args.h"
#include "kernels/cuda/attention_cuda.h"
#include "kernels/cuda/errors.h"

namespace edgegen {
namespace {

namespace KC = edgegen::kernels::cuda;

// A check that t is on `device` (all inputs on q's CUDA device).
struct SameDevice {
  at::Device device;
  void operator()(const at::Tensor& t, const char* name) const {
    TORCH_CHECK(t.device() == device, name, ": expected a tensor on ", device, ", got one on ", t.device(),
                " (all inputs must be on the same device)");
  }
};

// The tensor as the kernels read it: head_dim contiguous, other strides multiples of 8 elements,
// data 16-byte aligned; a contiguous copy otherwise.
at::Tensor kernel_layout(const at::Tensor& t) {
  const bool ok = t.stride(3) == 1 && t.stride(0) % 8 == 0 && t.stride(1) % 8 == 0 && t.stride(2) % 8 == 0 &&
                  reinterpret_cast<uintptr_t>(t.const_data_ptr()) % 16 == 0;
  return ok ? t : t.contiguous();
}

KC::AttnTensor describe(const at::Tensor& t) {
  return KC::AttnTensor{t.const_data_ptr(), t.stride(0), t.stride(1), t.stride(2)};
}

void* current_stream(const at::Device& device) {
  return c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)->getStream(device).native_handle();
}

struct Call {
  KC::AttnProblem p;
  at::Tensor q, k, v;  // in kernel layout
};

Call make_call(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t window, int64_t num_global,
               bool causal, std::optional<double> scale, int64_t q_offset, const std::optional<at::Tensor>& layout,
               int64_t block_size) {
  TORCH_CHECK(q.device().is_cuda(), "q: expected a CUDA tensor, got one on ", q.device());
  attention_args::check_qkv(q, k, v, SameDevice{q.device()});
  const int64_t kernel_window = attention_args::check_scalars(window, num_global, q_offset, q.size(2), k.size(2));
  if (scale.has_value())
    TORCH_CHECK_VALUE(std::isfinite(*scale) && *scale > 0, "scale: expected a finite value > 0, got ", *scale);
  const bool half = q.scalar_type() == at::kBFloat16 || q.scalar_type() == at::kHalf;
  TORCH_CHECK_NOT_IMPLEMENTED(
      half && KC::attention_cuda_supports(int(q.size(3))) && !layout.has_value() && block_size == 0,
      "edgegen::sliding_window_attention: the native CUDA kernel takes bfloat16/float16 inputs with head_dim 32, "
      "64, 80, 96 or 128 and no block layout, got ", q.scalar_type(), " with head_dim ", q.size(3),
      layout.has_value() ? " and a block layout" : "",
      "; call it through edgegen.attention (or with autograd), which routes such inputs to FlexAttention or the "
      "reference");
  Call c;
  c.q = kernel_layout(q);
  c.k = kernel_layout(k);
  c.v = kernel_layout(v);
  KC::AttnProblem& p = c.p;
  p.dtype = q.scalar_type() == at::kBFloat16 ? KC::AttnDType::BF16 : KC::AttnDType::F16;
  p.B = q.size(0), p.H = q.size(1), p.nq = q.size(2), p.nk = k.size(2), p.d = int(q.size(3));
  p.window = kernel_window;
  p.num_global = num_global;
  p.q_offset = q_offset;
  p.causal = causal;
  p.scale = float(scale.has_value() ? *scale : 1.0 / std::sqrt(double(p.d)));
  p.q = describe(c.q);
  p.k = describe(c.k);
  p.v = describe(c.v);
  p.pipelined = KC::attention_cuda_pipeline_default();
  return c;
}

void check_launch(int err, const char* what) {
  TORCH_CHECK(err == 0, "edgegen::", what, ": CUDA kernel launch failed: ", KC::cuda_error_text(err));
}

std::tuple<at::Tensor, at::Tensor> sliding_window_attention_cuda(const at::Tensor& q, const at::Tensor& k,
                                                                 const at::Tensor& v, int64_t window,
                                                                 int64_t num_global, bool causal,
                                                                 std::optional<double> scale, int64_t q_offset,
                                                                 const std::optional<at::Tensor>& block_layout,
                                                                 int64_t block_size) {
  const Call c = make_call(q, k, v, window, num_global, causal, scale, q_offset, block_layout, block_size);
  const c10::DeviceGuard guard(q.device());
  at::Tensor out = at::empty({c.p.B, c.p.H, c.p.nq, c.p.d}, q.options());
  at::Tensor lse = at::empty({c.p.B, c.p.H, c.p.nq}, q.options().dtype(at::kFloat));
  if (out.numel() > 0) {
    const int64_t ws_bytes = int64_t(KC::attention_forward_workspace_bytes(c.p));
    at::Tensor workspace;  // only when a query tile is split (not causal, with global queries)
    if (ws_bytes > 0) workspace = at::empty({(ws_bytes + 3) / 4}, q.options().dtype(at::kFloat));
    check_launch(KC::attention_forward_cuda(c.p, out.mutable_data_ptr(), lse.mutable_data_ptr<float>(),
                                            ws_bytes > 0 ? workspace.mutable_data_ptr<float>() : nullptr,
                                            current_stream(q.device())),
                 "sliding_window_attention");
  }
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sliding_window_attention_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, int64_t window, int64_t num_global, bool causal, std::optional<double> scale,
    int64_t q_offset, const std::optional<at::Tensor>& block_layout, int64_t block_size) {
  const Call c = make_call(q, k, v, window, num_global, causal, scale, q_offset, block_layout, block_size);
  attention_args::check_backward_inputs(grad_out, out, lse, q, at::kFloat, SameDevice{q.device()});
  const auto& p = c.p;
  const c10::DeviceGuard guard(q.device());
  at::Tensor dq = at::empty({p.B, p.H, p.nq, p.d}, q.options());
  at::Tensor dk = at::empty({p.B, p.H, p.nk, p.d}, q.options());
  at::Tensor dv = at::empty({p.B, p.H, p.nk, p.d}, q.options());
  if (p.B * p.H == 0) return {dq, dk, dv};
  if (p.nq == 0) {  // no query: nothing reaches k or v
    dk.zero_();
    dv.zero_();
    return {dq, dk, dv};
  }
  const at::Tensor go = kernel_layout(grad_out);
  const at::Tensor lc = lse.contiguous();
  const at::Tensor oc = kernel_layout(out);
  at::Tensor delta = at::empty({p.B, p.H, p.nq}, q.options().dtype(at::kFloat));
  const int64_t ws_bytes = int64_t(KC::attention_backward_workspace_bytes(p));
  at::Tensor workspace = at::empty({(ws_bytes + 3) / 4}, q.options().dtype(at::kFloat));
  check_launch(KC::attention_backward_cuda(p, describe(go), describe(oc), lc.const_data_ptr<float>(),
                                           delta.mutable_data_ptr<float>(), dq.mutable_data_ptr(),
                                           dk.mutable_data_ptr(), dv.mutable_data_ptr(),
                                           workspace.mutable_data_ptr<float>(), current_stream(q.device())),
               "sliding_window_attention_backward");
  return {dq, dk, dv};
}

}  // namespace

TORCH_LIBRARY_IMPL(edgegen, CUDA, m) {
  m.impl("sliding_window_attention", &sliding_window_attention_cuda);
  m.impl("sliding_window_attention_backward", &sliding_window_attention_backward_cuda);
}

}  // namespace edgegen
