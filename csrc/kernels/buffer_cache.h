// Large buffers for outputs that a kernel streams through once, front to back (the KD loss's
// [N, V] gradient, the fused-linear loss's logit chunks, the attention's output and gradients),
// kept for reuse after they are freed.
//
// A fresh buffer from the OS costs a page fault and a zeroed page per 4 KiB (2 MiB with
// transparent huge pages) on its first write, which for a memory-bound kernel costs about as much
// as the kernel. A training loop frees such a buffer every step (optimizer.zero_grad) and asks for
// one of the same size the next step: handing the freed one back skips the faults, as PyTorch's
// CUDA caching allocator does on GPUs. The cache holds at most `max_blocks` buffers, reuses one
// whose capacity is within [bytes, bytes + bytes / 4], and frees everything it holds before it
// allocates on a miss, so what it holds is bounded by what was freed since the last miss.
// Fresh buffers are 2 MiB aligned and advised for transparent huge pages (unless huge pages are
// turned off). Torch-free; the ATen glue wraps buffers in tensors (cpu/memory.h).
#pragma once
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

namespace edgegen::kernels {

struct BufferCacheStats {
  size_t held_bytes = 0;   // capacity of the buffers held for reuse now
  size_t held_blocks = 0;  // how many
  uint64_t hits = 0;       // acquire() calls served from the cache
  uint64_t misses = 0;     // acquire() calls that allocated
  bool enabled = true;     // whether freed buffers are kept
};

class BufferCache {
 public:
  static constexpr size_t kAlign = size_t(2) << 20;  // 2 MiB: one transparent huge page

  explicit BufferCache(size_t max_blocks = 4, bool enabled = true, bool huge_pages = true)
      : max_blocks_(max_blocks), enabled_(enabled), huge_pages_(huge_pages) {}
  BufferCache(const BufferCache&) = delete;
  BufferCache& operator=(const BufferCache&) = delete;
  ~BufferCache() { clear(); }

  // A buffer of at least `bytes` (> 0), kAlign-aligned; its capacity (a multiple of kAlign) goes
  // to *capacity. nullptr when the allocation fails (the cache is empty then). `huge_pages`: whether
  // a fresh buffer is advised for transparent huge pages (when the cache allows it at all).
  void* acquire(size_t bytes, size_t* capacity, bool huge_pages = true);
  // Takes back a buffer acquire() returned, with the capacity it reported. Kept for reuse while
  // enabled (the oldest freed beyond max_blocks), else freed.
  void release(void* p, size_t capacity);
  // Frees every buffer held; returns their total capacity.
  size_t clear();
  // Disabling frees what is held; release() then frees at once.
  void set_enabled(bool enabled);
  bool enabled() const;
  BufferCacheStats stats() const;
  // Held across fork() by buffer_cache()'s pthread_atfork handlers.
  void lock_for_fork();
  void unlock_after_fork();

 private:
  struct Block {
    void* p;
    size_t capacity;
  };
  static void free_blocks(std::vector<Block>& blocks);

  mutable std::mutex mu_;
  std::vector<Block> blocks_;  // oldest first
  size_t max_blocks_;
  bool enabled_;
  bool huge_pages_;
  uint64_t hits_ = 0, misses_ = 0;
};

// The process's caches, one per pool: the losses' gradients and chunks, and attention's outputs and
// gradients, so that a step that uses both does not free the other's buffers on its misses.
// EDGEGEN_BUFFER_CACHE=0 starts them disabled, EDGEGEN_HUGEPAGES=0 turns the huge-page advice off.
// Never destroyed (tensors freed at exit still hand buffers back to them).
enum class BufferPool { Losses = 0, Attention = 1 };
constexpr int kBufferPools = 2;
BufferCache& buffer_cache(BufferPool pool = BufferPool::Losses);

// f(cache) for every pool's cache, in pool order.
template <class F>
void for_each_buffer_cache(F&& f) {
  for (int i = 0; i < kBufferPools; ++i) f(buffer_cache(static_cast<BufferPool>(i)));
}

}  // namespace edgegen::kernels
