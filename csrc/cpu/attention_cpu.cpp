// ATen glue for sliding-window / block-sparse attention: validate, describe the strided inputs,
// turn a block layout (pairs) into CSR, call the torch-free kernels.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "attention_args.h"
#include "cpu/checks.h"
#include "cpu/memory.h"
#include "kernels/attention/attention.h"

namespace edgegen {
namespace {

namespace KA = edgegen::kernels::attention;

using cpu::check_cpu;

KA::Strided strided(const at::Tensor& t) {
  return KA::Strided{t.const_data_ptr(), t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}


// Everything about a call but the tensors' data, checked. `layout_csr` keeps the CSR alive.
struct Call {
  KA::Problem p;
  std::vector<int64_t> layout_ptr, layout_idx;
};

Call make_call(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t window, int64_t num_global,
               bool causal, std::optional<double> scale, int64_t q_offset, const std::optional<at::Tensor>& layout,
               int64_t block_size) {
  attention_args::check_qkv(q, k, v, check_cpu);
  Call call;
  KA::Problem& p = call.p;
  p.dtype = cpu::float_dtype(q.scalar_type(), "q");
  p.B = q.size(0), p.H = q.size(1), p.nq = q.size(2), p.nk = k.size(2), p.d = q.size(3);
  const int64_t kernel_window = attention_args::check_scalars(window, num_global, q_offset, p.nq, p.nk);
  if (scale.has_value()) {
    TORCH_CHECK_VALUE(std::isfinite(*scale) && *scale > 0, "scale: expected a finite value > 0, got ", *scale);
    p.scale = *scale;
  } else {
    p.scale = 1.0 / std::sqrt(double(p.d));
  }
  p.pattern.window = kernel_window;
  p.pattern.num_global = num_global;
  p.pattern.causal = causal;
  p.pattern.q_offset = q_offset;
  if (layout.has_value()) {
    const at::Tensor& l = *layout;
    check_cpu(l, "block_layout");
    TORCH_CHECK_VALUE(block_size >= 1, "block_size: expected >= 1 with a block_layout, got ", block_size);
    TORCH_CHECK_TYPE(l.scalar_type() == at::kLong, "block_layout: expected an int64 tensor, got ", l.scalar_type());
    TORCH_CHECK_VALUE(l.dim() == 2 && l.size(1) == 2, "block_layout: expected shape [pairs, 2] of (query block, "
                      "key block), got ", l.sizes());
    // A block wider than every position puts them all in block 0, whatever its size: clamped,
    // so that the block arithmetic stays small.
    const int64_t span = std::max<int64_t>({q_offset + p.nq, p.nk, 1});
    const int64_t bs = std::min(block_size, span);
    const int64_t nqb = (q_offset + p.nq + bs - 1) / bs;
    const int64_t nkb = (p.nk + bs - 1) / bs;
    const int64_t qb0 = q_offset / bs;  // blocks before it hold no query of this call
    const at::Tensor lc = l.contiguous();
    const int64_t* e = lc.const_data_ptr<int64_t>();
    std::vector<std::pair<int64_t, int64_t>> pairs;
    pairs.reserve(size_t(l.size(0)));
    for (int64_t i = 0; i < l.size(0); ++i) {
      const int64_t qb = e[2 * i], kb = e[2 * i + 1];
      TORCH_CHECK_INDEX(qb >= 0 && qb < nqb && kb >= 0 && kb < nkb, "block_layout: pair ", i, " is (", qb, ", ", kb,
                        "), expected query blocks in [0, ", nqb, ") and key blocks in [0, ", nkb, ")");
      if (qb >= qb0) pairs.push_back({qb, kb});
    }
    std::sort(pairs.begin(), pairs.end());
    pairs.erase(std::unique(pairs.begin(), pairs.end()), pairs.end());
    // Offsets only for the query blocks this call's queries fall in (not for all q_offset / bs).
    call.layout_ptr.assign(size_t(nqb - qb0 + 1), 0);
    for (auto& pr : pairs) ++call.layout_ptr[size_t(pr.first - qb0 + 1)];
    for (int64_t b = 0; b < nqb - qb0; ++b) call.layout_ptr[size_t(b + 1)] += call.layout_ptr[size_t(b)];
    for (auto& pr : pairs) call.layout_idx.push_back(pr.second);
    call.layout_idx.push_back(0);  // never read; keeps data() non-null for an empty layout
    p.pattern.block_size = bs;
    p.pattern.num_qblocks = nqb;
    p.pattern.qblock_base = qb0;
    p.pattern.layout_ptr = call.layout_ptr.data();
    p.pattern.layout_idx = call.layout_idx.data();
  } else {
    TORCH_CHECK_VALUE(block_size == 0, "block_size: only meaningful with a block_layout (pass 0), got ", block_size);
  }
  p.q = strided(q);
  p.k = strided(k);
  p.v = strided(v);
  p.num_threads = at::get_num_threads();
  return call;
}

// The output and the backward's gradients, written once, tile by tile. Above glibc's largest
// dynamic mmap threshold (32 MiB on 64-bit), malloc maps every such buffer afresh, and its page
// faults took about a fifth of the time at n = 16384 (float32, B = 1, H = 12, d = 64): those come
// from the buffer cache, in attention's own pool and without the huge-page advice (cpu/memory.h).
// Below it, malloc reuses its own heap, and the cache's buffers measured slower (bfloat16 at
// n = 16384, 25 MB each: fwd+bwd 205-217 against 184-195 ms on an AMD Zen 5).
const StreamingWrite kAttentionOutput{(size_t(32) << 20) + 1, false, kernels::BufferPool::Attention};

at::ScalarType lse_dtype(const at::Tensor& q) { return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

std::tuple<at::Tensor, at::Tensor> sliding_window_attention_cpu(const at::Tensor& q, const at::Tensor& k,
                                                                const at::Tensor& v, int64_t window,
                                                                int64_t num_global, bool causal,
                                                                std::optional<double> scale, int64_t q_offset,
                                                                const std::optional<at::Tensor>& block_layout,
                                                                int64_t block_size) {
  const Call call = make_call(q, k, v, window, num_global, causal, scale, q_offset, block_layout, block_size);
  const auto& p = call.p;
  at::Tensor out = empty_for_streaming_write({p.B, p.H, p.nq, p.d}, q.options(), kAttentionOutput);
  at::Tensor lse = at::empty({p.B, p.H, p.nq}, q.options().dtype(lse_dtype(q)));
  if (out.numel() > 0) KA::forward(p, out.mutable_data_ptr(), lse.mutable_data_ptr());
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sliding_window_attention_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, int64_t window, int64_t num_global, bool causal, std::optional<double> scale,
    int64_t q_offset, const std::optional<at::Tensor>& block_layout, int64_t block_size) {
  const Call call = make_call(q, k, v, window, num_global, causal, scale, q_offset, block_layout, block_size);
  const auto& p = call.p;
  attention_args::check_backward_inputs(grad_out, out, lse, q, lse_dtype(q), check_cpu);
  at::Tensor dq = empty_for_streaming_write({p.B, p.H, p.nq, p.d}, q.options(), kAttentionOutput);
  at::Tensor dk = empty_for_streaming_write({p.B, p.H, p.nk, p.d}, q.options(), kAttentionOutput);
  at::Tensor dv = empty_for_streaming_write({p.B, p.H, p.nk, p.d}, q.options(), kAttentionOutput);
  if (p.B * p.H * p.d > 0 && (p.nq > 0 || p.nk > 0)) {
    const at::Tensor lc = lse.contiguous();
    KA::backward(p, strided(grad_out), strided(out), lc.const_data_ptr(), dq.mutable_data_ptr(),
                 dk.mutable_data_ptr(), dv.mutable_data_ptr());
  }
  return {dq, dk, dv};
}

}  // namespace

TORCH_LIBRARY_IMPL(edgegen, CPU, m) {
  m.impl("sliding_window_attention", &sliding_window_attention_cpu);
  m.impl("sliding_window_attention_backward", &sliding_window_attention_backward_cpu);
}

}  // namespace edgegen
