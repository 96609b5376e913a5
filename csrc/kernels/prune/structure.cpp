// N:M masks and per-channel norms.
#include <cmath>
#include <type_traits>
#include <vector>

#include "kernels/parallel.h"
#include "kernels/prune/prune.h"

namespace edgegen::kernels::prune {
int64_t nm_mask(const void* w, DType dtype, int64_t rows, int64_t k, int n, int m, uint8_t* mask,
                int num_threads) {
  std::vector<int64_t> nan_rows(size_t(rows), 0);
  dispatch_float<false>(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* x = static_cast<const T*>(w);
    parallel_for(rows, num_threads, [&](int64_t r) {
      float s[64];
      for (int64_t g = 0; g < k; g += m) {
        const int64_t base = r * k + g;
        for (int j = 0; j < m; ++j) {
          s[j] = std::fabs(to_float(x[base + j]));
          nan_rows[r] += std::isnan(s[j]);
        }
        // Entry j survives when fewer than n entries outrank it (larger, or equal and earlier).
        for (int j = 0; j < m; ++j) {
          int rank = 0;
          for (int i = 0; i < m; ++i) rank += (s[i] > s[j]) || (s[i] == s[j] && i < j);
          mask[base + j] = uint8_t(rank < n);
        }
      }
    });
  });
  int64_t nans = 0;
  for (int64_t v : nan_rows) nans += v;
  return nans;
}

void channel_norms(const void* w, const void* g, DType dtype, int64_t outer, int64_t channels,
                   int64_t inner, int p, float* out, int num_threads) {
  dispatch_float<false>(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* x = static_cast<const T*>(w);
    const T* y = static_cast<const T*>(g);
    parallel_for(channels, num_threads, [&](int64_t c) {
      double acc = 0.0;
      for (int64_t o = 0; o < outer; ++o) {
        const int64_t base = (o * channels + c) * inner;
        for (int64_t i = 0; i < inner; ++i) {
          double v = to_float(x[base + i]);
          if (y) v *= double(to_float(y[base + i]));
          acc += p == 1 ? std::fabs(v) : v * v;
        }
      }
      out[c] = float(p == 1 ? acc : std::sqrt(acc));
    });
  });
}

}  // namespace edgegen::kernels::prune
