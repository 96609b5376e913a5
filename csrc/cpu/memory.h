// Allocation helpers for the ATen glue.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace edgegen {

// at::empty for large outputs that the kernel writes once, front to back: asks the kernel for
// transparent huge pages before the first touch. A fresh [N, 50257] gradient otherwise costs one
// page fault per 4 KiB, which on CPU takes longer than computing it. Only the 2 MiB-aligned
// interior is advised; where THP is off ("never") the call is a harmless no-op.
// EDGEGEN_HUGEPAGES=0 in the environment turns the advice off.
inline bool huge_pages_wanted() {
  static const bool wanted = [] {
    const char* v = std::getenv("EDGEGEN_HUGEPAGES");
    return !(v && std::strcmp(v, "0") == 0);
  }();
  return wanted;
}

inline at::Tensor empty_for_streaming_write(at::IntArrayRef sizes, const at::TensorOptions& opts) {
  at::Tensor t = at::empty(sizes, opts);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (!huge_pages_wanted()) return t;
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const size_t bytes = size_t(t.numel()) * t.element_size();
  if (bytes >= 4 * kHuge) {
    const uintptr_t p = reinterpret_cast<uintptr_t>(t.mutable_data_ptr());
    const uintptr_t lo = (p + kHuge - 1) & ~(kHuge - 1);
    const uintptr_t hi = (p + bytes) & ~(kHuge - 1);
    if (hi > lo) (void)madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
  }
#endif
  return t;
}

}  // namespace edgegen
