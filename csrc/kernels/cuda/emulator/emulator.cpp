// The host emulator's fibers, synchronisation and warp-collective operations (see emulator.h).
#include "emulator.h"

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define EDGEGEN_EMULATOR_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EDGEGEN_EMULATOR_ASAN 1
#endif
#endif
#ifdef EDGEGEN_EMULATOR_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

float __expf(float x) { return std::exp(x); }

namespace edgegen_cuda_emulator {
namespace {

constexpr size_t kStackBytes = size_t(256) << 10;
constexpr int kMaxThreads = 1024;

enum class State { Ready, AtBarrier, AtCluster, AtWarp, Done };

// One cp.async copy of 16 bytes: `bytes` from src, zeros for the rest.
struct AsyncCopy {
  unsigned char* dst;
  const unsigned char* src;
  int bytes;
};

struct Fiber {
  ucontext_t ctx;
  Thread id;
  State state = State::Ready;
  uint64_t gen = 0;  // the generation of the barrier it waits at
  const char* site_file = nullptr;  // ... and the source position of the call
  int site_line = 0;
  std::vector<AsyncCopy> issued;                  // cp.async copies not committed yet
  std::vector<std::vector<AsyncCopy>> committed;  // groups, oldest first, not waited for yet
};

struct Warp {
  unsigned arrived = 0, exited = 0;
  uint64_t gen = 0;
  unsigned char slots[2][32][kSlotBytes];  // by generation parity: no lane overwrites unread ones
  Op ops[2][32];
};

// A fiber's stack: mapped once, reused by every launch, with a guard page below it.
struct Stack {
  void* base = nullptr;  // the guard page
  size_t bytes = 0;
  char* bottom() const { return static_cast<char*>(base) + page(); }
  size_t usable() const { return bytes - page(); }
  static size_t page() { return size_t(sysconf(_SC_PAGESIZE)); }
};

struct Block {
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  ucontext_t sched;
  int cur = -1;
  unsigned rank = 0;  // in its cluster
  unsigned live = 0, exited = 0, bar_arrived = 0;
  uint64_t bar_gen = 0;
  unsigned char* shared = nullptr;
  size_t shared_bytes = 0;
  const std::function<void()>* body = nullptr;
  std::string fault;
#ifdef EDGEGEN_EMULATOR_ASAN
  const void* sched_stack = nullptr;
  size_t sched_stack_size = 0;
#endif
};

// The blocks of the cluster running now and its barrier (counted in threads).
struct Cluster {
  std::vector<Block> blocks;
  unsigned live = 0, exited = 0, arrived = 0;
  uint64_t gen = 0;
};

struct Global {
  Schedule schedule = Schedule::Forward;
  CopyLanding landing = CopyLanding::AtWait;
  Device device;
  std::string fault;
  Counters counters;
  int last_error = 0;
  std::map<const void*, int> max_dynamic_shared;
  std::vector<Stack> stacks;
  std::vector<std::vector<unsigned char>> shared;  // one buffer per cluster rank
  Cluster* cluster = nullptr;                      // the cluster running now
  Block* block = nullptr;                          // the block running now
};

Global& g() {
  static Global s;
  return s;
}

Block& block() { return *g().block; }
Cluster& cluster() { return *g().cluster; }
Fiber& self() { return block().fibers[size_t(block().cur)]; }
unsigned linear(const Thread& t) { return t.thread_idx.x + t.block_dim.x * (t.thread_idx.y + t.block_dim.y * t.thread_idx.z); }

void ensure_stacks(size_t n) {
  auto& st = g().stacks;
  while (st.size() < n) {
    Stack s;
    s.bytes = kStackBytes + Stack::page();
    s.base = mmap(nullptr, s.bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (s.base == MAP_FAILED) {
      std::fprintf(stderr, "cuda emulator: cannot map a fiber stack\n");
      std::abort();
    }
    mprotect(s.base, Stack::page(), PROT_NONE);
    st.push_back(s);
  }
}

// Switches from `from` to `to` (a fiber or the scheduler), telling AddressSanitizer which stack
// the next code runs on.
void switch_to(ucontext_t* from, ucontext_t* to, const void* to_stack, size_t to_size) {
#ifdef EDGEGEN_EMULATOR_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, to_stack, to_size);
  swapcontext(from, to);
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
  (void)to_stack, (void)to_size;
  swapcontext(from, to);
#endif
}

void to_scheduler() {
  Block& b = block();
#ifdef EDGEGEN_EMULATOR_ASAN
  switch_to(&self().ctx, &b.sched, b.sched_stack, b.sched_stack_size);
#else
  switch_to(&self().ctx, &b.sched, nullptr, 0);
#endif
}

// Records the fault, "block (x, y, z) thread (x, y, z): " and the printf-formatted text, and
// leaves the fiber for good: the launch ends. (The text is formatted into a buffer: nothing the
// abandoned fiber's frames own would ever be freed.)
[[noreturn]] __attribute__((format(printf, 1, 2))) void fail(const char* format, ...) {
  Block& b = block();
  const Thread& t = self().id;
  char buf[512];
  int n = std::snprintf(buf, sizeof buf, "block (%u, %u, %u) thread (%u, %u, %u): ", t.block_idx.x, t.block_idx.y,
                        t.block_idx.z, t.thread_idx.x, t.thread_idx.y, t.thread_idx.z);
  va_list args;
  va_start(args, format);
  std::vsnprintf(buf + n, sizeof buf - size_t(n), format, args);
  va_end(args);
  if (b.fault.empty()) b.fault = buf;
  self().state = State::Done;
  for (;;) to_scheduler();
}

void fiber_main() {
  Block& b = block();
#ifdef EDGEGEN_EMULATOR_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &b.sched_stack, &b.sched_stack_size);
#endif
  (*b.body)();
  Fiber& f = self();
  Cluster& c = cluster();
  const unsigned w = linear(f.id) / 32;
  f.state = State::Done;
  --b.live;
  ++b.exited;
  ++b.warps[w].exited;
  --c.live;
  ++c.exited;
  if (b.live == 0)  // the block is gone: what other blocks of its cluster read of it now is poison
    std::fill(b.shared, b.shared + b.shared_bytes, static_cast<unsigned char>(0xff));
  if (b.bar_arrived > 0)
    fail("exited while %u threads of its block wait at __syncthreads (they would hang)", b.bar_arrived);
  if (c.arrived > 0)
    fail("exited while %u threads of its cluster wait at the cluster barrier (the emulator asks every thread "
         "of a cluster to arrive; PTX lets exited threads off)", c.arrived);
  if (b.warps[w].arrived > 0)
    fail("exited while %u lanes of its warp wait at a warp-collective operation", b.warps[w].arrived);
  if (!f.issued.empty() || !f.committed.empty())
    fail("exited with cp.async copies it never waited for (%zu groups committed, %zu copies not)",
         f.committed.size(), f.issued.size());
#ifdef EDGEGEN_EMULATOR_ASAN
  __sanitizer_start_switch_fiber(nullptr, b.sched_stack, b.sched_stack_size);
#endif
  // returning resumes uc_link, the scheduler
}

bool runnable(const Block& b, const Fiber& f) {
  switch (f.state) {
    case State::Ready: return true;
    case State::AtBarrier: return f.gen != b.bar_gen;
    case State::AtCluster: return f.gen != g().cluster->gen;
    case State::AtWarp: return f.gen != b.warps[linear(f.id) / 32].gen;
    case State::Done: return false;
  }
  return false;
}

std::string deadlock(const Cluster& c) {
  int at_bar = 0, at_cluster = 0, at_warp = 0;
  for (const Block& b : c.blocks)
    for (const Fiber& f : b.fibers) {
      at_bar += f.state == State::AtBarrier;
      at_cluster += f.state == State::AtCluster;
      at_warp += f.state == State::AtWarp;
    }
  const Thread& t = c.blocks.front().fibers.front().id;
  char buf[320];
  std::snprintf(buf, sizeof buf,
                "deadlock in %s (%u, %u, %u): %d threads wait at __syncthreads, %d at the cluster barrier and %d "
                "at warp-collective operations, and no thread can go on (a barrier not every thread reaches)",
                c.blocks.size() > 1 ? "the cluster of block" : "block", t.block_idx.x, t.block_idx.y, t.block_idx.z,
                at_bar, at_cluster, at_warp);
  return buf;
}

// Runs the blocks of one cluster (block indices first.x .. first.x + cluster size - 1) to their
// end; returns the fault ("" if none).
std::string run_cluster(Cluster& c, const std::function<void()>& body, dim3 grid, dim3 blk, uint3 first) {
  const unsigned n = blk.x * blk.y * blk.z, nb = unsigned(c.blocks.size()), total = n * nb;
  c.live = total, c.exited = 0, c.arrived = 0, c.gen = 0;
  for (unsigned j = 0; j < nb; ++j) {
    Block& b = c.blocks[j];
    b.body = &body;
    b.rank = j;
    b.fibers.resize(n);
    b.warps.assign((n + 31) / 32, Warp{});
    b.live = n, b.exited = 0, b.bar_arrived = 0, b.bar_gen = 0, b.cur = -1;
    b.fault.clear();
    std::fill(b.shared, b.shared + b.shared_bytes, static_cast<unsigned char>(0xff));
    for (unsigned i = 0; i < n; ++i) {
      Fiber& f = b.fibers[i];
      const Stack& s = g().stacks[j * n + i];
#ifdef EDGEGEN_EMULATOR_ASAN
      ASAN_UNPOISON_MEMORY_REGION(s.bottom(), s.usable());  // frames a faulted launch left behind
#endif
      getcontext(&f.ctx);
      f.ctx.uc_stack.ss_sp = s.bottom();
      f.ctx.uc_stack.ss_size = s.usable();
      f.ctx.uc_link = &b.sched;
      makecontext(&f.ctx, fiber_main, 0);
      f.id.thread_idx = uint3{i % blk.x, (i / blk.x) % blk.y, i / (blk.x * blk.y)};
      f.id.block_idx = uint3{first.x + j, first.y, first.z};
      f.id.block_dim = blk;
      f.id.grid_dim = grid;
      f.state = State::Ready;
      f.gen = 0;
      f.issued.clear();
      f.committed.clear();
    }
  }
  const bool reverse = g().schedule == Schedule::Reverse, greedy = g().schedule == Schedule::Greedy;
  while (c.live > 0) {
    bool progressed = false;
    for (unsigned k = 0; k < total; ++k) {
      const unsigned idx = reverse ? total - 1 - k : k, j = idx / n, i = idx % n;
      Block& b = c.blocks[j];
      Fiber& f = b.fibers[i];
      if (!runnable(b, f)) continue;
      g().block = &b;
      b.cur = int(i);
      f.state = State::Ready;
      const Stack& s = g().stacks[idx];
      switch_to(&b.sched, &f.ctx, s.bottom(), s.usable());
      progressed = true;
      if (!b.fault.empty()) return b.fault;
      if (greedy) break;  // start again from the first thread of rank 0
    }
    if (!progressed && c.live > 0) return deadlock(c);
  }
  return "";
}

}  // namespace

void set_schedule(Schedule s) { g().schedule = s; }
void reset() {
  Global& gl = g();
  gl.schedule = Schedule::Forward;
  gl.landing = CopyLanding::AtWait;
  gl.device = Device{};
  gl.fault.clear();
  gl.counters = Counters{};
  gl.last_error = 0;
  gl.max_dynamic_shared.clear();
}
void set_copy_landing(CopyLanding when) { g().landing = when; }
void set_device(const Device& d) { g().device = d; }
const Device& device() { return g().device; }
const std::string& last_fault() { return g().fault; }
void clear_fault() { g().fault.clear(); }
const Counters& counters() { return g().counters; }
void reset_counters() { g().counters = Counters{}; }
const Thread& current() { return self().id; }
unsigned char* dynamic_shared() { return block().shared; }
unsigned lane_id() { return linear(self().id) % 32; }

namespace {
// Faults unless the threads [first, last) waiting at `state` are all at the same call; `what`
// names the barrier and the threads in the message.
void check_sites(const Fiber* first, const Fiber* last, State state, const char* what) {
  const Fiber* ref = nullptr;
  for (const Fiber* o = first; o != last; ++o) {
    if (o->state != state) continue;
    if (ref == nullptr) ref = o;
    else if (o->site_line != ref->site_line || std::strcmp(o->site_file, ref->site_file) != 0)
      fail("%s at different calls (%s:%d and %s:%d)", what, ref->site_file, ref->site_line, o->site_file,
           o->site_line);
  }
}

// This thread arrives at a barrier (`arrived` of `live` threads so far, generation `gen`) from
// file:line and waits; the last to arrive runs check() and lets everyone go on, in the
// schedule's order.
template <class Check>
void arrive_and_wait(unsigned& arrived, unsigned live, uint64_t& gen, State state, const char* file, int line,
                     const Check& check) {
  Fiber& f = self();
  f.gen = gen;
  f.state = state;
  f.site_file = file, f.site_line = line;
  if (++arrived == live) {
    check();
    arrived = 0;
    ++gen;
  }
  to_scheduler();
}
}  // namespace

void syncthreads(const char* file, int line) {
  Block& b = block();
  ++g().counters.syncthreads;
  if (b.exited > 0)
    fail("reached __syncthreads after %u threads of its block exited", b.exited);
  arrive_and_wait(b.bar_arrived, b.live, b.bar_gen, State::AtBarrier, file, line, [&] {
    check_sites(b.fibers.data(), b.fibers.data() + b.fibers.size(), State::AtBarrier, "threads of a block at __syncthreads");
  });
}

void cluster_sync(const char* file, int line) {
  Cluster& c = cluster();
  ++g().counters.cluster_syncs;
  if (c.exited > 0)
    fail("reached the cluster barrier after %u threads of its cluster exited", c.exited);
  arrive_and_wait(c.arrived, c.live, c.gen, State::AtCluster, file, line, [&] {
    for (const Block& b : c.blocks)  // .aligned: the lanes of each warp at the same call
      for (size_t w = 0; w * 32 < b.fibers.size(); ++w)
        check_sites(b.fibers.data() + w * 32, b.fibers.data() + std::min(b.fibers.size(), w * 32 + 32),
                    State::AtCluster, "lanes of a warp at the cluster barrier");
  });
}

const void* cluster_map(const void* p, unsigned rank) {
  Block& b = block();
  Cluster& c = cluster();
  const auto* q = static_cast<const unsigned char*>(p);
  if (q < b.shared || q >= b.shared + b.shared_bytes)
    fail("cluster_map of an address outside the block's dynamic shared memory");
  if (rank >= c.blocks.size()) fail("cluster_map to rank %u of a cluster of %zu blocks", rank, c.blocks.size());
  const Block& t = c.blocks[rank];
  if (t.live == 0) fail("cluster_map into the block of rank %u, whose threads have all exited", rank);
  return t.shared + (q - b.shared);
}

void warp_exchange(Op op, const void* in, size_t bytes, unsigned char (*all)[kSlotBytes]) {
  Block& b = block();
  Fiber& f = self();
  ++g().counters.collectives;
  const unsigned t = linear(f.id), w = t / 32, lane = t % 32;
  Warp& wp = b.warps[w];
  if (b.fibers.size() < size_t(32) * (w + 1))
    fail("a warp-collective operation in a warp of fewer than 32 threads");
  if (wp.exited > 0)
    fail("a warp-collective operation after %u lanes of its warp exited", wp.exited);
  const int parity = int(wp.gen & 1);
  std::memcpy(wp.slots[parity][lane], in, bytes);
  wp.ops[parity][lane] = op;
  f.gen = wp.gen;
  f.state = State::AtWarp;
  if (++wp.arrived == 32) {  // the last lane: the warp goes on, in the schedule's order
    wp.arrived = 0;
    ++wp.gen;
  }
  to_scheduler();
  for (unsigned l = 0; l < 32; ++l)
    if (wp.ops[parity][l] != op)
      fail("the lanes of its warp are at different warp-collective operations (lane %u at operation %d, this "
           "one at %d)",
           l, int(wp.ops[parity][l]), int(op));
  std::memcpy(all, wp.slots[parity], sizeof(wp.slots[parity]));
}

void check_shfl(unsigned mask, int width) {
  if (mask != 0xffffffffu || width != 32)
    fail("only full-warp shuffles are emulated (mask 0xffffffff, width 32)");
}

namespace {
float element(uint32_t reg, int half, bool bf16) {
  const uint16_t bits = uint16_t(half ? reg >> 16 : reg & 0xffffu);
  return bf16 ? edgegen::kernels::to_float(edgegen::kernels::bf16_t{bits})
              : edgegen::kernels::to_float(edgegen::kernels::fp16_t{bits});
}
}  // namespace

void mma_m16n8k16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1, bool bf16) {
  uint32_t mine[6] = {a[0], a[1], a[2], a[3], b0, b1};
  unsigned char all[32][kSlotBytes];
  warp_exchange(bf16 ? Op::MmaBf16 : Op::MmaF16, mine, sizeof mine, all);
  auto reg = [&](unsigned lane, int r) {
    uint32_t v;
    std::memcpy(&v, all[lane] + 4 * r, 4);
    return v;
  };
  // PTX ISA, mma.m16n8k16 with 16-bit floats (g = lane / 4, t = lane % 4): A element (row, k) is
  // in lane (row % 8) * 4 + (k % 8) / 2, register (row >= 8) + 2 (k >= 8), half k % 2; B element
  // (k, n) in lane n * 4 + (k % 8) / 2, register 4 + (k >= 8), half k % 2; C element i of a lane
  // is (g + 8 (i >= 2), 2 t + i % 2).
  auto A = [&](int row, int k) { return element(reg(unsigned((row % 8) * 4 + (k % 8) / 2), (row >= 8) + 2 * (k >= 8)), k % 2, bf16); };
  auto B = [&](int k, int n) { return element(reg(unsigned(n * 4 + (k % 8) / 2), 4 + (k >= 8)), k % 2, bf16); };
  const int lane = int(lane_id()), gi = lane / 4, ti = lane % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = gi + 8 * (i >= 2), col = 2 * ti + i % 2;
    double acc = c[i];
    for (int k = 0; k < 16; ++k) acc += double(A(row, k)) * double(B(k, col));
    c[i] = float(acc);
  }
}

void ldmatrix_x4_trans(uint32_t r[4], const void* row) {
  Block& b = block();
  const auto* p = static_cast<const unsigned char*>(row);
  if (p < b.shared || p + 16 > b.shared + b.shared_bytes)
    fail("ldmatrix row address outside the block's dynamic shared memory");
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0)
    fail("ldmatrix row address not 16-byte aligned");
  unsigned char all[32][kSlotBytes];
  warp_exchange(Op::LdmatrixX4Trans, &p, sizeof p, all);
  // Matrix j's row `row` is at the address of lane 8 j + row; .trans: this lane receives
  // elements (2 t, g) and (2 t + 1, g) of each matrix (g = lane / 4, t = lane % 4).
  const unsigned lane = lane_id(), gi = lane / 4, ti = lane % 4;
  auto at = [&](unsigned j, unsigned rr, unsigned col) {
    const unsigned char* a;
    std::memcpy(&a, all[8 * j + rr], sizeof a);
    uint16_t v;
    std::memcpy(&v, a + 2 * col, 2);
    return uint32_t(v);
  };
  for (unsigned j = 0; j < 4; ++j) r[j] = at(j, 2 * ti, gi) | at(j, 2 * ti + 1, gi) << 16;
}

namespace {
void land(const AsyncCopy& c) {
  if (c.bytes > 0) std::memcpy(c.dst, c.src, size_t(c.bytes));
  std::memset(c.dst + c.bytes, 0, size_t(16 - c.bytes));
}
}  // namespace

void cp_async_16(void* dst, const void* src, int src_bytes) {
  Block& b = block();
  auto* d = static_cast<unsigned char*>(dst);
  if (d < b.shared || d + 16 > b.shared + b.shared_bytes)
    fail("cp.async destination outside the block's dynamic shared memory");
  if (reinterpret_cast<uintptr_t>(d) % 16 != 0 || reinterpret_cast<uintptr_t>(src) % 16 != 0)
    fail("cp.async of 16 bytes between addresses not both 16-byte aligned");
  if (src_bytes < 0 || src_bytes > 16) fail("cp.async source size %d outside [0, 16]", src_bytes);
  const auto* s = static_cast<const unsigned char*>(src);
  ++g().counters.async_copies;
  if (g().landing == CopyLanding::AtIssue) {
    land(AsyncCopy{d, s, src_bytes});
    self().issued.push_back(AsyncCopy{d, s, -1});  // landed: kept for the group bookkeeping only
  } else {
    self().issued.push_back(AsyncCopy{d, s, src_bytes});
  }
}

void cp_async_commit() {
  Fiber& f = self();
  f.committed.push_back(std::move(f.issued));
  f.issued.clear();
}

void cp_async_wait(int pending) {
  Fiber& f = self();
  while (f.committed.size() > size_t(std::max(pending, 0))) {  // the oldest groups land now
    for (const AsyncCopy& c : f.committed.front())
      if (c.bytes >= 0) land(c);
    f.committed.erase(f.committed.begin());
  }
}

int set_max_dynamic_shared(const void* kernel, int bytes) {
  if (bytes < 0 || bytes > g().device.max_shared_per_block) return cudaErrorInvalidValue;
  g().max_dynamic_shared[kernel] = bytes;
  return cudaSuccess;
}

int max_active_clusters(int* n, unsigned threads, size_t smem, unsigned cluster) {
  const Device& d = g().device;
  if (threads == 0 || threads > unsigned(kMaxThreads) || cluster == 0 || cluster > 8) return cudaErrorInvalidValue;
  if (d.compute_major < 9) return cudaErrorNotSupported;
  const size_t by_memory = size_t(d.max_shared_per_sm) / (smem + size_t(d.reserved_shared_per_block));
  const size_t by_threads = 2048 / threads;
  *n = int(size_t(d.sms) * std::min(by_memory, by_threads) / cluster);
  return cudaSuccess;
}

int run_grid(const void* kernel, dim3 grid, dim3 blk, size_t smem, unsigned cluster,
             const std::function<void()>& body) {
  Global& gl = g();
  auto result = [&](int e) {
    gl.last_error = e;
    return e;
  };
  const uint64_t threads = uint64_t(blk.x) * blk.y * blk.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0 || threads > uint64_t(kMaxThreads))
    return result(cudaErrorInvalidConfiguration);
  if (grid.x > 2147483647u || grid.y > unsigned(gl.device.max_grid_y) || grid.z > unsigned(gl.device.max_grid_z))
    return result(cudaErrorInvalidConfiguration);  // the grid limits
  if (cluster == 0 || cluster > 8 || grid.x % cluster != 0) return result(cudaErrorInvalidClusterSize);
  if (cluster > 1 && gl.device.compute_major < 9) return result(cudaErrorNotSupported);
  const auto allowed = gl.max_dynamic_shared.find(kernel);
  const size_t limit = allowed == gl.max_dynamic_shared.end() ? size_t(48) << 10 : size_t(allowed->second);
  if (smem > limit || smem > size_t(gl.device.max_shared_per_block)) return result(cudaErrorInvalidValue);
  ensure_stacks(size_t(threads) * cluster);
  Cluster c;
  c.blocks.resize(cluster);
  gl.shared.resize(std::max<size_t>(gl.shared.size(), cluster));
  for (unsigned j = 0; j < cluster; ++j) {
    std::vector<unsigned char>& buf = gl.shared[j];
    buf.assign(smem + 16, 0);
    c.blocks[j].shared = buf.data() + (16 - reinterpret_cast<uintptr_t>(buf.data()) % 16) % 16;
    c.blocks[j].shared_bytes = smem;
  }
  ++gl.counters.launches;
  if (cluster > 1) ++gl.counters.cluster_launches;
  gl.counters.max_cluster = std::max(gl.counters.max_cluster, int64_t(cluster));
  gl.counters.max_dynamic_shared_bytes = std::max(gl.counters.max_dynamic_shared_bytes, int64_t(smem));
  gl.cluster = &c;
  auto done = [&](int e) {
    gl.cluster = nullptr;
    gl.block = nullptr;
    return result(e);
  };
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; x += cluster) {
        gl.counters.blocks += cluster;
        std::string fault = run_cluster(c, body, grid, blk, uint3{x, y, z});
        if (!fault.empty()) {
          if (gl.fault.empty()) gl.fault = fault;
          return done(cudaErrorLaunchFailure);
        }
      }
  return done(cudaSuccess);
}

}  // namespace edgegen_cuda_emulator

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorNotSupported: return "operation not supported";
    case cudaErrorInvalidClusterSize: return "invalid cluster size";
  }
  return "unknown error";
}

cudaError_t cudaGetLastError() {
  const int e = edgegen_cuda_emulator::g().last_error;
  edgegen_cuda_emulator::g().last_error = 0;
  return cudaError_t(e);
}

cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return cudaErrorInvalidValue;
  const edgegen_cuda_emulator::Device& d = edgegen_cuda_emulator::device();
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = d.sms; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = d.max_shared_per_block; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor: *value = d.compute_major; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *value = d.max_shared_per_sm; return cudaSuccess;
    case cudaDevAttrReservedSharedMemoryPerBlock: *value = d.reserved_shared_per_block; return cudaSuccess;
    case cudaDevAttrMaxGridDimY: *value = d.max_grid_y; return cudaSuccess;
    case cudaDevAttrMaxGridDimZ: *value = d.max_grid_z; return cudaSuccess;
  }
  return cudaErrorInvalidValue;
}
