#include "buffer_cache.h"

#include <pthread.h>

#include <cstdlib>
#include <cstring>
#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace edgegen::kernels {

namespace {

bool env_off(const char* name) {
  const char* v = std::getenv(name);
  return v && std::strcmp(v, "0") == 0;
}

}  // namespace

void BufferCache::free_blocks(std::vector<Block>& blocks) {
  for (const Block& b : blocks) std::free(b.p);
  blocks.clear();
}

void* BufferCache::acquire(size_t bytes, size_t* capacity, bool huge_pages) {
  if (bytes == 0 || bytes > SIZE_MAX - kAlign) return nullptr;
  std::vector<Block> stale;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // The smallest held buffer that fits without wasting more than a quarter.
    size_t best = blocks_.size();
    for (size_t i = 0; i < blocks_.size(); ++i) {
      const size_t cap = blocks_[i].capacity;
      if (cap >= bytes && cap - bytes <= bytes / 4 && (best == blocks_.size() || cap < blocks_[best].capacity))
        best = i;
    }
    if (best < blocks_.size()) {
      const Block b = blocks_[best];
      blocks_.erase(blocks_.begin() + std::ptrdiff_t(best));
      ++hits_;
      *capacity = b.capacity;
      return b.p;
    }
    ++misses_;
    stale.swap(blocks_);  // sizes changed: what is held would only sit there
  }
  free_blocks(stale);
  const size_t cap = (bytes + kAlign - 1) / kAlign * kAlign;
  void* p = std::aligned_alloc(kAlign, cap);
  if (!p) return nullptr;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  // Before the first touch; where THP is "never" this is a harmless no-op.
  if (huge_pages_ && huge_pages) (void)madvise(p, cap, MADV_HUGEPAGE);
#endif
  *capacity = cap;
  return p;
}

void BufferCache::release(void* p, size_t capacity) {
  if (!p) return;
  std::vector<Block> evicted;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!enabled_ || max_blocks_ == 0) {
      evicted.push_back({p, capacity});
    } else {
      blocks_.push_back({p, capacity});
      while (blocks_.size() > max_blocks_) {
        evicted.push_back(blocks_.front());
        blocks_.erase(blocks_.begin());
      }
    }
  }
  free_blocks(evicted);
}

size_t BufferCache::clear() {
  std::vector<Block> held;
  {
    std::lock_guard<std::mutex> lock(mu_);
    held.swap(blocks_);
  }
  size_t bytes = 0;
  for (const Block& b : held) bytes += b.capacity;
  free_blocks(held);
  return bytes;
}

void BufferCache::set_enabled(bool enabled) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    enabled_ = enabled;
  }
  if (!enabled) clear();
}

bool BufferCache::enabled() const {
  std::lock_guard<std::mutex> lock(mu_);
  return enabled_;
}

BufferCacheStats BufferCache::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  BufferCacheStats s;
  for (const Block& b : blocks_) s.held_bytes += b.capacity;
  s.held_blocks = blocks_.size();
  s.hits = hits_;
  s.misses = misses_;
  s.enabled = enabled_;
  return s;
}

void BufferCache::lock_for_fork() { mu_.lock(); }
void BufferCache::unlock_after_fork() { mu_.unlock(); }

namespace {

BufferCache** pools() {
  static BufferCache** all = [] {
    static BufferCache* c[kBufferPools];
    for (BufferCache*& p : c) p = new BufferCache(4, !env_off("EDGEGEN_BUFFER_CACHE"), !env_off("EDGEGEN_HUGEPAGES"));
    // A fork (a DataLoader worker, say) while another thread holds a lock would leave the child's
    // copy locked for good: take the locks around fork, release them on both sides.
    pthread_atfork([] { for_each_buffer_cache([](BufferCache& b) { b.lock_for_fork(); }); },
                   [] { for_each_buffer_cache([](BufferCache& b) { b.unlock_after_fork(); }); },
                   [] { for_each_buffer_cache([](BufferCache& b) { b.unlock_after_fork(); }); });
    return c;
  }();
  return all;
}

}  // namespace

BufferCache& buffer_cache(BufferPool pool) { return *pools()[static_cast<int>(pool)]; }

}  // namespace edgegen::kernels
