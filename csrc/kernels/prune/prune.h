// Torch-free pruning kernels: magnitude / first-order Taylor scores, exact k-th-smallest selection
// over many tensors at once (radix selection on the float bits, no concatenated copy), fused
// mask generation and application, N:M masks, and per-channel norms.
#pragma once
#include <cstdint>

#include "kernels/cpu_features.h"
#include "kernels/dtypes.h"

namespace edgegen::kernels::prune {

// The path of the float32 magnitude sweeps (selection and masks): avx512 or scalar (the
// baseline, which uses SSE2 on x86-64).
Isa prune_isa();

// One tensor's scores: |w| (grad == nullptr) or |w * g|, evaluated in float32.
struct ScoreSource {
  const void* weight;
  const void* grad;  // nullptr, or n elements of the same dtype
  int64_t n;
  DType dtype;       // F32, BF16 or F16
};

struct Selection {
  float threshold;    // the k-th smallest score (1-based k)
  int64_t num_less;   // scores strictly below the threshold
  int64_t num_nan;    // NaN scores seen; when > 0 nothing else is meaningful
};

// k in [1, total]. Scores of all sources together, as if concatenated in source order.
Selection kth_smallest_score(const ScoreSource* src, int num_src, int64_t k, int num_threads);

// Writes masks[i][j] = 0 for the num_prune smallest scores over all sources and 1 elsewhere.
// Ties at the threshold are pruned in concatenation order (source, then flat index), so exactly
// num_prune entries are 0. When zero_out[i] is not null it must alias source i's weight, and
// pruned weights are set to +0 there in the same sweep. Returns the number of NaN scores (then
// masks and weights are left untouched).
int64_t magnitude_mask(const ScoreSource* src, int num_src, int64_t num_prune, uint8_t* const* masks,
                       void* const* zero_out, int num_threads);

// out[j] = |w[j]| or |w[j] * g[j]|, in the source dtype.
void magnitude_scores(const ScoreSource& src, void* out, int num_threads);

// w viewed as [rows, k], k % m == 0: in every group of m consecutive entries of a row, mask 1 for
// the n largest |w| (ties keep the lower index) and 0 for the others. m <= 64. Returns the number
// of NaN entries (the mask is then meaningless).
int64_t nm_mask(const void* w, DType dtype, int64_t rows, int64_t k, int n, int m, uint8_t* mask,
                int num_threads);

// w (and g, optional) viewed as [outer, channels, inner]; out[c] = p-norm (p = 1 or 2) over
// outer x inner of w (or of w * g), accumulated in double.
void channel_norms(const void* w, const void* g, DType dtype, int64_t outer, int64_t channels,
                   int64_t inner, int p, float* out, int num_threads);

}  // namespace edgegen::kernels::prune
