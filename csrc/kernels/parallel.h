// The one place kernels reach for threads. Static schedule: each index always lands on the same
// thread for a given thread count, and every kernel here keeps per-index work independent, so
// results do not depend on the schedule at all.
#pragma once
#include <cstdint>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace edgegen::kernels {

template <typename F>
void parallel_for(int64_t n, int num_threads, const F& body) {
  if (n <= 0) return;
#ifdef _OPENMP
  if (num_threads > 1 && n > 1) {
#pragma omp parallel for schedule(static) num_threads(num_threads)
    for (int64_t i = 0; i < n; ++i) body(i);
    return;
  }
#endif
  (void)num_threads;
  for (int64_t i = 0; i < n; ++i) body(i);
}

}  // namespace edgegen::kernels
