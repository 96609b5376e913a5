// GoogleTest of the buffer cache's reuse policy (kernels/buffer_cache.h).
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "kernels/buffer_cache.h"

namespace K = edgegen::kernels;

namespace {
constexpr size_t kMiB = size_t(1) << 20;

// Whether the mapping that holds `p` carries the MADV_HUGEPAGE flag ("hg" in /proc/self/smaps'
// VmFlags); -1 when smaps cannot be read or holds no such mapping.
int advised_for_huge_pages(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2 && line.find('-') < line.find(' ')) {
      inside = a >= lo && a < hi;
    } else if (inside && line.rfind("VmFlags:", 0) == 0) {
      return (line + " ").find(" hg ") != std::string::npos ? 1 : 0;
    }
  }
  return -1;
}
}  // namespace

// A fresh buffer is advised for transparent huge pages unless the call (or the cache) says not to.
TEST(BufferCache, HugePageAdviceFollowsTheCallAndTheCache) {
  if (!std::ifstream("/sys/kernel/mm/transparent_hugepage/enabled"))
    GTEST_SKIP() << "this kernel has no transparent huge pages (no /sys/kernel/mm/transparent_hugepage)";
  K::BufferCache cache(4, /*enabled=*/false);
  size_t cap = 0;
  void* p = cache.acquire(16 * kMiB, &cap);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(advised_for_huge_pages(p), 1);
  cache.release(p, cap);
  p = cache.acquire(16 * kMiB, &cap, /*huge_pages=*/false);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(advised_for_huge_pages(p), 0);
  cache.release(p, cap);
  K::BufferCache plain(4, /*enabled=*/false, /*huge_pages=*/false);
  p = plain.acquire(16 * kMiB, &cap);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(advised_for_huge_pages(p), 0);
  plain.release(p, cap);
}

TEST(BufferCache, FreedBufferComesBackForTheSameSize) {
  K::BufferCache cache;
  size_t cap = 0;
  void* p = cache.acquire(50 * kMiB + 3, &cap);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(cap, 52 * kMiB);  // rounded up to 2 MiB
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % K::BufferCache::kAlign, 0u);
  std::memset(p, 1, cap);  // the whole capacity is usable
  cache.release(p, cap);
  EXPECT_EQ(cache.stats().held_bytes, cap);
  size_t cap2 = 0;
  EXPECT_EQ(cache.acquire(50 * kMiB, &cap2), p);  // within a quarter: reused
  EXPECT_EQ(cap2, cap);
  const K::BufferCacheStats st = cache.stats();
  EXPECT_EQ(st.hits, 1u);
  EXPECT_EQ(st.misses, 1u);
  EXPECT_EQ(st.held_blocks, 0u);
  cache.release(p, cap2);
}

TEST(BufferCache, OtherSizeFreesWhatIsHeld) {
  K::BufferCache cache;
  size_t c1 = 0, c2 = 0;
  void* big = cache.acquire(64 * kMiB, &c1);
  cache.release(big, c1);
  // Half the size: reusing 64 MiB would waste more than a quarter, so it is a miss, and the held
  // buffer is freed rather than kept beside the new one.
  void* half = cache.acquire(32 * kMiB, &c2);
  ASSERT_NE(half, nullptr);
  EXPECT_EQ(c2, 32 * kMiB);
  EXPECT_EQ(cache.stats().held_blocks, 0u);
  EXPECT_EQ(cache.stats().misses, 2u);
  // Larger than anything held: a miss too.
  cache.release(half, c2);
  size_t c3 = 0;
  void* larger = cache.acquire(40 * kMiB, &c3);
  EXPECT_EQ(c3, 40 * kMiB);
  EXPECT_EQ(cache.stats().held_blocks, 0u);
  cache.release(larger, c3);
}

TEST(BufferCache, SmallestFittingBufferIsChosen) {
  K::BufferCache cache;
  size_t ca = 0, cb = 0, cc = 0;
  void* a = cache.acquire(24 * kMiB, &ca);
  void* b = cache.acquire(20 * kMiB, &cb);
  cache.release(a, ca);
  cache.release(b, cb);
  EXPECT_EQ(cache.acquire(20 * kMiB, &cc), b);
  EXPECT_EQ(cc, cb);
  size_t cd = 0;
  EXPECT_EQ(cache.acquire(20 * kMiB, &cd), a);  // 24 MiB for 20 MiB: within a quarter
  cache.release(a, cd);
  cache.release(b, cc);
}

TEST(BufferCache, HoldsAtMostMaxBlocksOldestFreedFirst) {
  K::BufferCache cache(2);
  std::vector<std::pair<void*, size_t>> bufs(3);
  for (auto& [p, c] : bufs) p = cache.acquire(8 * kMiB, &c);
  for (auto& [p, c] : bufs) cache.release(p, c);
  const K::BufferCacheStats st = cache.stats();
  EXPECT_EQ(st.held_blocks, 2u);
  EXPECT_EQ(st.held_bytes, 16 * kMiB);
  size_t c = 0;
  void* p = cache.acquire(8 * kMiB, &c);
  EXPECT_TRUE(p == bufs[1].first || p == bufs[2].first);  // bufs[0] was freed
  cache.release(p, c);
  EXPECT_EQ(cache.clear(), 16 * kMiB);
  EXPECT_EQ(cache.stats().held_blocks, 0u);
}

TEST(BufferCache, DisabledCacheHoldsNothing) {
  K::BufferCache cache(4, /*enabled=*/false);
  size_t c = 0;
  void* p = cache.acquire(8 * kMiB, &c);
  cache.release(p, c);
  EXPECT_EQ(cache.stats().held_blocks, 0u);
  cache.set_enabled(true);
  p = cache.acquire(8 * kMiB, &c);
  cache.release(p, c);
  EXPECT_EQ(cache.stats().held_blocks, 1u);
  cache.set_enabled(false);  // frees what is held
  EXPECT_EQ(cache.stats().held_blocks, 0u);
  EXPECT_FALSE(cache.enabled());
}

TEST(BufferCache, RefusesZeroAndImpossibleSizes) {
  K::BufferCache cache;
  size_t c = 123;
  EXPECT_EQ(cache.acquire(0, &c), nullptr);
  EXPECT_EQ(cache.acquire(SIZE_MAX, &c), nullptr);
  EXPECT_EQ(cache.acquire(SIZE_MAX - K::BufferCache::kAlign / 2, &c), nullptr);
  EXPECT_EQ(c, 123u);
  cache.release(nullptr, 0);  // a no-op
  EXPECT_EQ(cache.stats().held_blocks, 0u);
}

TEST(BufferCache, ConcurrentAcquireAndRelease) {
  K::BufferCache cache(3);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&cache, t] {
      for (int i = 0; i < 200; ++i) {
        size_t c = 0;
        void* p = cache.acquire((8 + 2 * size_t((t + i) % 2)) * kMiB, &c);
        ASSERT_NE(p, nullptr);
        static_cast<unsigned char*>(p)[0] = static_cast<unsigned char>(t);  // owned by this thread now
        static_cast<unsigned char*>(p)[c - 1] = static_cast<unsigned char>(i);
        cache.release(p, c);
      }
    });
  }
  for (auto& th : threads) th.join();
  const K::BufferCacheStats st = cache.stats();
  EXPECT_EQ(st.hits + st.misses, 800u);
  EXPECT_LE(st.held_blocks, 3u);
}

// The process's pools are separate caches: a miss of another size in one (which frees what that
// pool holds) leaves the other's buffers held.
TEST(BufferCache, PoolsDoNotFreeEachOthersBuffers) {
  K::BufferCache& attention = K::buffer_cache(K::BufferPool::Attention);
  K::BufferCache& losses = K::buffer_cache(K::BufferPool::Losses);
  ASSERT_NE(&attention, &losses);
  attention.set_enabled(true);
  losses.set_enabled(true);
  size_t ca = 0, cl = 0;
  void* a = attention.acquire(40 * kMiB, &ca);
  ASSERT_NE(a, nullptr);
  attention.release(a, ca);
  void* l = losses.acquire(90 * kMiB, &cl);  // a miss of another size in the other pool
  ASSERT_NE(l, nullptr);
  EXPECT_EQ(attention.stats().held_blocks, 1u);
  size_t ca2 = 0;
  EXPECT_EQ(attention.acquire(40 * kMiB, &ca2), a);
  attention.release(a, ca2);
  losses.release(l, cl);
  attention.clear();
  losses.clear();
}
