// Allocation helpers for the ATen glue.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <c10/core/CPUAllocator.h>

#include "kernels/buffer_cache.h"

namespace edgegen {

// How a streamed output is allocated. `min_bytes`: smaller ones are plain at::empty. `huge_pages`:
// advise a fresh buffer for huge pages; a large buffer written in one sweep gains (the KD loss's
// gradient, N = 2048: 54-68 ms fresh with the advice, 173-177 ms without, on an AMD Zen 5 VM with
// THP "madvise"), attention's outputs, written tile by tile, lost there (n = 16384 forward:
// 127-149 ms with, 82-100 without, 79-87 through at::empty). `pool`: which of the process's caches
// (kernels/buffer_cache.h) serves and takes back the buffer.
struct StreamingWrite {
  size_t min_bytes = 4 * kernels::BufferCache::kAlign;  // 8 MiB
  bool huge_pages = true;
  kernels::BufferPool pool = kernels::BufferPool::Losses;
};

// at::empty for large outputs that the kernel writes once, front to back (the KD loss's gradient,
// the fused-linear chunks, the attention's output and gradients): the buffer comes from the
// process's buffer cache (kernels/buffer_cache.h), so a training loop that frees last step's
// gradient gets it back instead of a fresh buffer to fault in page by page; fresh ones are 2 MiB
// aligned. EDGEGEN_BUFFER_CACHE=0 turns the reuse off, EDGEGEN_HUGEPAGES=0 the advice.
inline at::Tensor empty_for_streaming_write(at::IntArrayRef sizes, const at::TensorOptions& opts,
                                            const StreamingWrite& how = {}) {
  int64_t numel = 1;
  for (int64_t s : sizes) numel *= s;
  const size_t bytes = size_t(numel) * opts.dtype().itemsize();
  if (bytes < how.min_bytes) return at::empty(sizes, opts);
  const kernels::BufferPool pool = how.pool;
  size_t capacity = 0;
  kernels::BufferCache& cache = kernels::buffer_cache(pool);
  void* p = cache.acquire(bytes, &capacity, how.huge_pages);
  if (!p) return at::empty(sizes, opts);  // out of memory: let the allocator report it
  try {
    // Resizable like at::empty's storage: growing it moves the data to the CPU allocator's memory
    // and hands this buffer back to the cache.
    return at::for_blob(p, sizes)
        .deleter([capacity, pool](void* q) { kernels::buffer_cache(pool).release(q, capacity); })
        .options(opts)
        .allocator(c10::GetCPUAllocator())
        .resizeable_storage()
        .make_tensor();
  } catch (...) {
    cache.release(p, capacity);
    throw;
  }
}

}  // namespace edgegen
