// Sliding-window + global-token attention on a CUDA GPU (torch-free; including this needs no CUDA
// header). Same pattern, conventions and empty-row rules as the CPU kernel
// (kernels/attention/attention.h): query i sits at position q_offset + i, key j at j; causal: j <= p
// and (p - j < window or j < num_global); non-causal: |p - j| < window or j < num_global or
// p < num_global. A query that sees no key gets output 0 and lse -inf.
//
// FlashAttention-2 style on the tensor cores (mma.sync m16n8k16, bfloat16/float16 in, float32
// accumulation): a block of 4 warps owns 64 queries (forward, dQ) or 64 keys (dK/dV); tiles of 64
// keys/queries pass through shared memory; only the tiles inside the window or holding global
// tokens are visited; online softmax in the exp2 domain; lse out. The backward is two
// deterministic passes without atomics: dK/dV per key tile (over the query tiles that see it) and
// dQ per query tile (over the key tiles it sees), from lse and delta = rowsum(dO * O). Tiles that
// see (or are seen by) everything — the key tiles holding global keys in the dK/dV pass, the
// query tiles holding global queries when not causal in the forward and dQ passes — are split
// over several blocks whose float32 partials a second kernel merges in a fixed order (workspace).
#pragma once
#include <cstddef>
#include <cstdint>

namespace edgegen::kernels::cuda {

enum class AttnDType : int { BF16 = 0, F16 = 1 };

struct AttnTensor {
  const void* data = nullptr;      // device memory; the head_dim dimension is contiguous
  int64_t sb = 0, sh = 0, sn = 0;  // strides (elements) of batch, head and position; multiples of 8
};

struct AttnProblem {
  AttnDType dtype = AttnDType::BF16;
  int64_t B = 0, H = 0, nq = 0, nk = 0;
  int d = 64;  // 32, 64, 80, 96 or 128 (attention_cuda_supports)
  int64_t window = 1, num_global = 0, q_offset = 0;  // window clamped by the caller to <= nk + q_offset + nq
  bool causal = true;
  float scale = 0.125f;
  AttnTensor q, k, v;
  // The kernels whose next tile's loads are in flight (cp.async, two shared-memory slots per
  // streamed tile) while the current one is used; false: load, then use (the measured default).
  bool pipelined = false;
};

// Whether the kernels handle this element type and head_dim (others go elsewhere).
bool attention_cuda_supports(int d);

// What the glue sets AttnProblem::pipelined to: EDGEGEN_CUDA_ATTENTION_PIPELINE=1 (read per call,
// so a benchmark can compare both in one process); unset or anything else: false.
bool attention_cuda_pipeline_default();

// Bytes of device scratch the forward needs (the split query tiles' partial outputs, maxima and
// sums; 0 when none is split).
size_t attention_forward_workspace_bytes(const AttnProblem& p);

// out [B, H, nq, d] contiguous (q's dtype), lse float32 [B, H, nq] contiguous, workspace of
// attention_forward_workspace_bytes(p). Returns 0 or a cudaError_t.
int attention_forward_cuda(const AttnProblem& p, void* out, float* lse, void* workspace, void* stream);

// Bytes of device scratch the backward needs (float32 partial sums of the split key tiles, then
// of the split query tiles; 0 when none is split).
size_t attention_backward_workspace_bytes(const AttnProblem& p);

// grad_out and out as AttnTensor (strides as above); lse float32 [B, H, nq] contiguous; delta a
// float32 [B, H, nq] scratch buffer (filled with rowsum(grad_out * out)); dq [B, H, nq, d], dk, dv
// [B, H, nk, d] contiguous; workspace of attention_backward_workspace_bytes(p). Returns 0 or a
// cudaError_t.
int attention_backward_cuda(const AttnProblem& p, const AttnTensor& grad_out, const AttnTensor& out,
                            const float* lse, float* delta, void* dq, void* dk, void* dv, void* workspace,
                            void* stream);

}  // namespace edgegen::kernels::cuda
