// Argument checks shared by the attention glue of every device; `check_device(tensor, name)` is
// the device's own check (CPU, or the same CUDA device as q).
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>

namespace edgegen::attention_args {

template <class CheckDevice>
void check_4d(const at::Tensor& t, const char* name, const CheckDevice& check_device) {
  check_device(t, name);
  TORCH_CHECK_VALUE(t.dim() == 4, name, ": expected a 4-D tensor [batch, heads, length, head_dim], got ", t.dim(),
                    "-D of shape ", t.sizes());
}

// q [B, H, n, d], k and v [B, H, nk, d] of one dtype.
template <class CheckDevice>
void check_qkv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const CheckDevice& check_device) {
  check_4d(q, "q", check_device);
  check_4d(k, "k", check_device);
  check_4d(v, "v", check_device);
  TORCH_CHECK_TYPE(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
                   "k, v: expected the dtype of q (", q.scalar_type(), "), got ", k.scalar_type(), " and ",
                   v.scalar_type());
  TORCH_CHECK_VALUE(k.sizes() == v.sizes(), "v: expected the shape of k ", k.sizes(), ", got ", v.sizes());
  TORCH_CHECK_VALUE(q.size(0) == k.size(0) && q.size(1) == k.size(1) && q.size(3) == k.size(3),
                    "k: expected the batch, heads and head_dim of q ", q.sizes(), ", got ", k.sizes());
  TORCH_CHECK_VALUE(q.size(3) >= 1, "q: head_dim must be >= 1, got shape ", q.sizes());
}

// The backward's extra inputs: grad_out and out shaped and typed like q, lse [B, H, n] of lse_dtype.
template <class CheckDevice>
void check_backward_inputs(const at::Tensor& grad_out, const at::Tensor& out, const at::Tensor& lse,
                           const at::Tensor& q, at::ScalarType lse_dtype, const CheckDevice& check_device) {
  check_4d(grad_out, "grad_out", check_device);
  check_4d(out, "out", check_device);
  check_device(lse, "lse");
  TORCH_CHECK_VALUE(grad_out.sizes() == q.sizes() && out.sizes() == q.sizes(),
                    "grad_out, out: expected the shape of q ", q.sizes(), ", got ", grad_out.sizes(), " and ",
                    out.sizes());
  TORCH_CHECK_TYPE(grad_out.scalar_type() == q.scalar_type() && out.scalar_type() == q.scalar_type(),
                   "grad_out, out: expected the dtype of q (", q.scalar_type(), "), got ", grad_out.scalar_type(),
                   " and ", out.scalar_type());
  TORCH_CHECK_VALUE(lse.scalar_type() == lse_dtype && lse.dim() == 3 && lse.size(0) == q.size(0) &&
                        lse.size(1) == q.size(1) && lse.size(2) == q.size(2),
                    "lse: expected the ", lse_dtype, " log-sum-exp of shape [", q.size(0), ", ", q.size(1), ", ",
                    q.size(2), "] from the forward op, got ", lse.scalar_type(), " ", lse.sizes());
}

// Positions stay below 2^60, so that every sum the kernels form (a position plus a window, the
// "all keys" sentinel of 2^61) fits in int64.
constexpr int64_t kMaxPosition = int64_t(1) << 60;

// window, num_global and q_offset for nq queries and nk keys. Returns the window the kernels use:
// one wider than every query-key distance sees exactly the same keys, so it is clamped to that.
inline int64_t check_scalars(int64_t window, int64_t num_global, int64_t q_offset, int64_t nq, int64_t nk) {
  TORCH_CHECK_VALUE(window >= 1, "window: expected an integer >= 1, got ", window);
  TORCH_CHECK_VALUE(num_global >= 0 && num_global <= nk, "num_global: expected a value in [0, ", nk,
                    "] (the number of keys), got ", num_global);
  TORCH_CHECK_VALUE(q_offset >= 0 && q_offset <= kMaxPosition - nq, "q_offset: expected a value in [0, ",
                    kMaxPosition - nq, "] (2^60 - the number of queries), got ", q_offset);
  return std::min<int64_t>(window, q_offset + nq + nk + 1);
}

}  // namespace edgegen::attention_args
