// CUDA sliding-window + global-token attention, forward and backward (see attention_cuda.h).
//
// Fragment layouts of mma.sync.m16n8k16 (g = lane / 4, t = lane % 4):
//   A 16x16 (row major): a0 (g, 2t..2t+1), a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..)
//   B 16x8 (k x n):      b0 (k = 2t..2t+1, n = g), b1 (k = 2t+8.., n = g)
//   C 16x8 (float):      c0, c1 (g, 2t..2t+1), c2, c3 (g+8, 2t..2t+1)
// Two neighbouring C tiles (columns 0-7 and 8-15) hold exactly an A tile's worth of values, so
// probabilities go from one product to the next in registers.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "kernels/cuda/attention_cuda.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/memory_ops.h"

namespace edgegen::kernels::cuda {
namespace {

constexpr int kTile = 64;      // queries per block (forward, dQ) and keys per tile
constexpr int kWarps = 4;      // each warp owns 16 rows of the block's tile
constexpr int kThreads = kWarps * 32;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// The tensor-core product and the 16-bit conversions for T = __nv_bfloat16 or __half.
// mma.sync.aligned.m16n8k16.row.col.f32.<types>.f32: C (+)= A B in place.
#define EDGEGEN_MMA_M16N8K16(types)                                                                 \
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." types ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, " \
               "{%8,%9}, {%0,%1,%2,%3};\n"                                                          \
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])                                     \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1))
template <class T>
struct Mma {
  static constexpr bool kBf16 = std::is_same_v<T, __nv_bfloat16>;
  static_assert(kBf16 || std::is_same_v<T, __half>, "bfloat16 or float16");
  static __device__ __forceinline__ void run(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
#ifdef EDGEGEN_CUDA_EMULATE
    ::edgegen_cuda_emulator::mma_m16n8k16(c, a, b0, b1, kBf16);
#else
    if constexpr (kBf16) EDGEGEN_MMA_M16N8K16("bf16.bf16");
    else EDGEGEN_MMA_M16N8K16("f16.f16");
#endif
  }
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    uint32_t r;
    if constexpr (kBf16) {
      const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
      memcpy(&r, &v, 4);
    } else {
      const __half2 v = __floats2half2_rn(lo, hi);
      memcpy(&r, &v, 4);
    }
    return r;
  }
  static __device__ __forceinline__ T cast(float x) {
    if constexpr (kBf16) return __float2bfloat16_rn(x);
    else return __float2half_rn(x);
  }
};
#undef EDGEGEN_MMA_M16N8K16

template <class T>
__device__ __forceinline__ uint32_t ld32(const T* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}
// Four transposed 8x8 blocks of 16-bit values from shared memory (rows 16-byte aligned).
template <class T>
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const T* p) {
#ifdef EDGEGEN_CUDA_EMULATE
  ::edgegen_cuda_emulator::ldmatrix_x4_trans(r, p);
#else
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
#endif
}

__device__ __forceinline__ int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
__device__ __forceinline__ int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

struct Pattern {
  int64_t window, num_global, q_offset, nq, nk;
  bool causal;
  __device__ __forceinline__ bool visible(int64_t p, int64_t j) const {
    if (causal) return j <= p && (p - j < window || j < num_global);
    const int64_t dist = p >= j ? p - j : j - p;
    return dist < window || j < num_global || p < num_global;
  }
};

// Key index intervals [a0, a1) and [b0, b1) (global, window) a query tile of positions
// [p0, p1] may see; a1 <= b0 after trimming, so the tiles of the two are visited once each.
struct TwoRanges {
  int64_t a0, a1, b0, b1;
};

__device__ __forceinline__ TwoRanges keys_for_queries(const Pattern& P, int64_t p0, int64_t p1) {
  TwoRanges r{0, 0, 0, 0};
  const int64_t nk = P.nk;
  if (P.causal) {
    r.a1 = imin(imin(P.num_global, nk), p1 + 1);
    r.b0 = imax(0, p0 - P.window + 1);
    r.b1 = imin(nk, p1 + 1);
  } else if (p0 < P.num_global) {
    r.b0 = 0;
    r.b1 = nk;
  } else {
    r.a1 = imin(P.num_global, nk);
    r.b0 = imax(0, p0 - P.window + 1);
    r.b1 = imin(nk, p1 + P.window);
  }
  return r;
}

// Query index intervals that may see the keys [j0, j1].
__device__ __forceinline__ TwoRanges queries_for_keys(const Pattern& P, int64_t j0, int64_t j1) {
  TwoRanges r{0, 0, 0, 0};
  const int64_t off = P.q_offset, nq = P.nq;
  auto to_index = [&](int64_t p) { return p - off; };
  if (j0 < P.num_global) {  // global keys: every query at or after them (all, non-causal)
    r.b0 = P.causal ? imax(0, to_index(j0)) : 0;
    r.b1 = nq;
    return r;
  }
  if (P.causal) {
    r.b0 = imax(0, to_index(j0));
    r.b1 = imin(nq, to_index(j1) + P.window);
  } else {
    r.a1 = imin(nq, imax(0, to_index(P.num_global)));  // global queries see every key
    r.b0 = imax(0, to_index(j0 - P.window + 1));
    r.b1 = imin(nq, to_index(j1 + P.window));
  }
  return r;
}

// The tiles of kTile indices overlapping [a0, a1) or [b0, b1), each once, in order: next() gives
// the next tile's first index, or -1 after the last. Keeping `keep` of every `every` tiles (a
// split tile's blocks: every splits-th tile of the other side); every = 1 keeps all.
struct TileSeq {
  int64_t a, a_end, b, b_end, count = 0, every = 1, keep = 0;
  __device__ __forceinline__ explicit TileSeq(const TwoRanges& r, int64_t every_ = 1, int64_t keep_ = 0)
      : every(every_), keep(keep_) {
    a = (r.a0 / kTile) * kTile;
    a_end = r.a1 > r.a0 ? r.a1 : a;
    const int64_t after_a = r.a1 > r.a0 ? ((r.a1 + kTile - 1) / kTile) * kTile : 0;
    b = imax((r.b0 / kTile) * kTile, after_a);
    b_end = r.b1 > r.b0 ? r.b1 : b;
  }
  __device__ __forceinline__ int64_t next() {
    for (;;) {
      int64_t t = -1;
      if (a < a_end) t = a, a += kTile;
      else if (b < b_end) t = b, b += kTile;
      if (t < 0 || count++ % every == keep) return t;
    }
  }
};

// Copies rows [r0, r0 + kTile) of a [n, D] strided matrix into shared memory (row pitch LD),
// zero-filling rows past n. 16-byte accesses; kAsync: cp.async (landing at the next wait),
// else plain loads and stores.
template <bool kAsync, class T, int D, int LD>
__device__ __forceinline__ void load_tile(T* dst, const T* src, int64_t stride, int64_t r0, int64_t n) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  for (int c = threadIdx.x; c < kTile * kChunks; c += kThreads) {
    const int row = c / kChunks, col = (c % kChunks) * 8;
    const bool in = r0 + row < n;
    if constexpr (kAsync) {
      cp_async_16(dst + row * LD + col, in ? src + (r0 + row) * stride + col : src, in ? 16 : 0);
    } else {
      uint4 v = make_uint4(0, 0, 0, 0);
      if (in) v = *reinterpret_cast<const uint4*>(src + (r0 + row) * stride + col);
      *reinterpret_cast<uint4*>(dst + row * LD + col) = v;
    }
  }
}

// The key tile from j0 and then the value tile into `slot` (two tiles, row pitch LD).
template <bool kAsync, class T, int D, int LD, class Args>
__device__ __forceinline__ void load_kv(T* slot, const T* K, const T* V, const Args& A, int64_t j0) {
  load_tile<kAsync, T, D, LD>(slot, K, A.k.sn, j0, A.pat.nk);
  load_tile<kAsync, T, D, LD>(slot + kTile * LD, V, A.v.sn, j0, A.pat.nk);
}

// Walks the tiles of `seq` through shared-memory slots: load(tile, slot) fills slot 0 or 1 (with
// load_tile<kPipe>), use(tile, slot) runs once the whole block sees that slot's data. kPipe: the
// next tile's copies are in flight (cp.async) while the current tile is used, two slots; else one
// slot, loaded and then used.
template <bool kPipe, class Load, class Use>
__device__ __forceinline__ void walk_tiles(TileSeq seq, const Load& load, const Use& use) {
  if constexpr (!kPipe) {
    for (int64_t t = seq.next(); t >= 0; t = seq.next()) {
      __syncthreads();  // the previous tile's users are done with the slot
      load(t, 0);
      __syncthreads();
      use(t, 0);
    }
  } else {
    int64_t cur = seq.next();
    if (cur >= 0) load(cur, 0);
    cp_async_commit();
    for (int slot = 0; cur >= 0; slot ^= 1) {
      const int64_t nxt = seq.next();
      __syncthreads();  // the previous tile's users are done with the other slot
      if (nxt >= 0) load(nxt, slot ^ 1);
      cp_async_commit();
      cp_async_wait<1>();  // this thread's copies of `cur` have landed ...
      __syncthreads();     // ... and everyone's
      use(cur, slot);
      cur = nxt;
    }
    cp_async_wait<0>();  // (the last group is empty)
  }
}

// The A fragment of k-step kk (16 rows x 16) of a shared-memory tile (row pitch LD) from row r.
template <class T, int LD>
__device__ __forceinline__ void load_a_step(uint32_t f[4], const T* s, int r, int kk, int g, int t) {
  const T* base = s + (r + g) * LD + kk * 16 + 2 * t;
  f[0] = ld32(base);
  f[1] = ld32(base + 8 * LD);
  f[2] = ld32(base + 8);
  f[3] = ld32(base + 8 * LD + 8);
}

// A fragments of 16 rows x D of a shared-memory tile (row pitch LD) starting at row r.
template <class T, int D, int LD>
__device__ __forceinline__ void load_a(uint32_t f[D / 16][4], const T* s, int r, int g, int t) {
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) load_a_step<T, LD>(f[kk], s, r, kk, g, t);
}

// c[n] (16 x 64 scores) = A (16 x D) x rows of `s`^T (64 rows, row pitch LD), A's fragment of
// k-step kk from a_step(kk, frag).
template <class T, int D, int LD, class AStep>
__device__ __forceinline__ void mma_abt_with(float c[8][4], const AStep& a_step, const T* s, int g, int t) {
#pragma unroll
  for (int n = 0; n < 8; ++n) c[n][0] = c[n][1] = c[n][2] = c[n][3] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t a[4];
    a_step(kk, a);
#pragma unroll
    for (int n = 0; n < 8; ++n) {
      const T* base = s + (n * 8 + g) * LD + kk * 16 + 2 * t;
      Mma<T>::run(c[n], a, ld32(base), ld32(base + 8));
    }
  }
}

// ... with A's fragments held in registers.
template <class T, int D, int LD>
__device__ __forceinline__ void mma_abt(float c[8][4], const uint32_t a[D / 16][4], const T* s, int g, int t) {
  mma_abt_with<T, D, LD>(
      c, [&](int kk, uint32_t f[4]) { f[0] = a[kk][0], f[1] = a[kk][1], f[2] = a[kk][2], f[3] = a[kk][3]; }, s, g, t);
}

// ... with A's rows r .. r + 15 read from shared memory (`sa`, row pitch LD) one k-step at a time
// instead: for the dK/dV pass past head_dim 64, whose K and V fragments next to its accumulators
// would not fit in the registers.
template <class T, int D, int LD>
__device__ __forceinline__ void mma_abt_shared(float c[8][4], const T* sa, int r, const T* s, int g, int t) {
  mma_abt_with<T, D, LD>(c, [&](int kk, uint32_t f[4]) { load_a_step<T, LD>(f, sa, r, kk, g, t); }, s, g, t);
}

// acc (16 x D) += P (16 x 64, as C fragments) x `s` (64 rows x D, row pitch LD).
template <class T, int D, int LD>
__device__ __forceinline__ void mma_pv(float acc[D / 8][4], const float pc[8][4], const T* s, int g, int t) {
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    uint32_t a[4];
    a[0] = Mma<T>::pack(pc[2 * kk][0], pc[2 * kk][1]);
    a[1] = Mma<T>::pack(pc[2 * kk][2], pc[2 * kk][3]);
    a[2] = Mma<T>::pack(pc[2 * kk + 1][0], pc[2 * kk + 1][1]);
    a[3] = Mma<T>::pack(pc[2 * kk + 1][2], pc[2 * kk + 1][3]);
    // ldmatrix.trans: lane l addresses row (l % 8) of 8x8 block l / 8 = (keys +0/+8, columns
    // +0/+8); it receives b0, b1 of two neighbouring column tiles.
    const int lane = threadIdx.x % 32, blk = lane / 8;
    const T* row = s + (kk * 16 + (blk & 1) * 8 + lane % 8) * LD + (blk >> 1) * 8;
#pragma unroll
    for (int dn = 0; dn < D / 8; dn += 2) {
      uint32_t b[4];
      ldmatrix_x4_trans(b, row + dn * 8);
      Mma<T>::run(acc[dn], a, b[0], b[1]);
      Mma<T>::run(acc[dn + 1], a, b[2], b[3]);
    }
  }
}

struct Args {
  Pattern pat;
  int64_t H;
  float scale_log2;  // scale * log2(e)
  float scale;
  AttnTensor q, k, v, dout;
  void* out;
  float* lse;
  const float* delta;
  void *dq, *dk, *dv;
  float* workspace;          // float32 partials of the split tiles (forward; backward: dK, dV, then dQ)
  int64_t heavy_tiles = 0;   // key tiles holding global keys (split when splits > 1)
  int64_t splits = 1;
  int64_t heavy_q = 0;       // query tiles holding non-causal global queries (split when splits_q > 1)
  int64_t splits_q = 1;
  int64_t y_base = 0;        // the grid's y (batch x head, or batch) of blockIdx.y = 0: see launch()
};

constexpr int64_t kMaxSplits = 64;  // blocks per split tile

// Tiles that n_other tiles of the other side all see (or are all seen by), `heavy` per head,
// split over blocks that take about 8 of those each, at most 64 blocks per tile and, over the B H
// heads, about 8 per SM: with more heads than that the other blocks already outlast a heavy
// tile's walk, and the split would only cost workspace. How many blocks share each (0 heavy
// tiles and 1 when none is split).
void split_heavy(const AttnProblem& p, int64_t n_other, int64_t& heavy, int64_t& splits) {
  splits = heavy > 0 ? std::min<int64_t>(kMaxSplits, std::max<int64_t>(1, (n_other + 7) / 8)) : 1;
  int device = 0, sms = 0;
  if (splits > 1 && cudaGetDevice(&device) == cudaSuccess &&
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) == cudaSuccess && sms > 0)
    splits = std::max<int64_t>(1, std::min<int64_t>(splits, 8 * int64_t(sms) / std::max<int64_t>(1, p.B * p.H * heavy)));
  if (splits == 1) heavy = 0;
}

// Key tiles holding global keys (every query at or after them sees them).
void split_plan(const AttnProblem& p, int64_t& heavy, int64_t& splits) {
  heavy = (std::min(p.num_global, p.nk) + kTile - 1) / kTile;
  split_heavy(p, (p.nq + kTile - 1) / kTile, heavy, splits);
}

// Query tiles holding global queries, which see every key when not causal (forward and dQ).
void query_split_plan(const AttnProblem& p, int64_t& heavy, int64_t& splits) {
  heavy = p.causal || p.num_global <= p.q_offset ? 0 : (std::min(p.num_global - p.q_offset, p.nq) + kTile - 1) / kTile;
  split_heavy(p, (p.nk + kTile - 1) / kTile, heavy, splits);
}

// Floats of one split's forward partial: the unnormalised output [kTile, D], then the rows'
// running maxima and sums.
template <int D>
constexpr int64_t kForwardPartial = int64_t(kTile) * D + 2 * kTile;

// The tile and split of a block; a split block takes every splits-th tile of the other side and
// writes float32 partials for a second kernel to merge.
struct BlockTile {
  int64_t tile, split;
  bool partial;
};

// dK/dV pass: blocks [0, n_tiles) take one key tile each (split 0), the rest the further splits of
// the first `heavy` tiles.
__device__ __forceinline__ BlockTile block_tile(int64_t n_tiles, int64_t heavy, int64_t splits) {
  BlockTile r{int64_t(blockIdx.x), 0, false};
  if (r.tile >= n_tiles) {
    r.tile = (int64_t(blockIdx.x) - n_tiles) / (splits - 1);
    r.split = 1 + (int64_t(blockIdx.x) - n_tiles) % (splits - 1);
  }
  r.partial = splits > 1 && r.tile < heavy;
  return r;
}

// Forward and dQ passes, two launches: kSplit, every split of the first heavy_q query tiles (block
// x: tile x / splits_q, split x % splits_q); else one block per other query tile. (Separate
// instantiations: the unsplit kernels keep the registers they had before the split existed.)
template <bool kSplit>
__device__ __forceinline__ BlockTile query_block(const Args& A) {
  if constexpr (kSplit) return BlockTile{int64_t(blockIdx.x) / A.splits_q, int64_t(blockIdx.x) % A.splits_q, true};
  else return BlockTile{int64_t(blockIdx.x) + A.heavy_q, 0, false};
}

template <class T>
__device__ __forceinline__ const T* head_ptr(const AttnTensor& a, int64_t b, int64_t h) {
  return static_cast<const T*>(a.data) + b * a.sb + h * a.sh;
}

// ------------------------------------------------------------------------------------- forward

// Shared memory: the query tile, then per slot (kPipe: two) the key tile and the value tile.
template <class T, int D, bool kPipe, bool kSplit>
__global__ void __launch_bounds__(kThreads) attn_forward_kernel(const Args A) {
  constexpr int LD = D + 8;  // padded row pitch: conflict-free 32-bit fragment loads
  EDGEGEN_DYNAMIC_SHARED(smem);
  T* sQ = reinterpret_cast<T*>(smem);
  auto slot_k = [&](int slot) { return sQ + kTile * LD * (1 + 2 * slot); };
  const Pattern& P = A.pat;
  const int64_t bh = A.y_base + blockIdx.y, b = bh / A.H, h = bh % A.H;
  const BlockTile bt = query_block<kSplit>(A);
  const int64_t i0 = bt.tile * kTile;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const T* Q = head_ptr<T>(A.q, b, h);
  const T* K = head_ptr<T>(A.k, b, h);
  const T* V = head_ptr<T>(A.v, b, h);

  load_tile<false, T, D, LD>(sQ, Q, A.q.sn, i0, P.nq);
  __syncthreads();
  uint32_t qf[D / 16][4];
  load_a<T, D, LD>(qf, sQ, warp * 16, g, t);

  float o[D / 8][4];
#pragma unroll
  for (int dn = 0; dn < D / 8; ++dn) o[dn][0] = o[dn][1] = o[dn][2] = o[dn][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  const int64_t pos[2] = {P.q_offset + i0 + warp * 16 + g, P.q_offset + i0 + warp * 16 + g + 8};
  const int64_t p0 = P.q_offset + i0, p1 = P.q_offset + imin(i0 + kTile, P.nq) - 1;

  auto load = [&](int64_t j0, int slot) { load_kv<kPipe, T, D, LD>(slot_k(slot), K, V, A, j0); };
  const TileSeq seq(keys_for_queries(P, p0, p1), kSplit ? A.splits_q : 1, kSplit ? bt.split : 0);
  walk_tiles<kPipe>(seq, load, [&](int64_t j0, int slot) {
    const T* sK = slot_k(slot);
    const T* sV = sK + kTile * LD;
    float s[8][4];
    mma_abt<T, D, LD>(s, qf, sK, g, t);
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t j = j0 + n * 8 + 2 * t + (e & 1);
        s[n][e] = (j < P.nk && P.visible(pos[e >> 1], j)) ? s[n][e] * A.scale_log2 : -INFINITY;
      }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = -INFINITY;
#pragma unroll
      for (int n = 0; n < 8; ++n) mx = fmaxf(mx, fmaxf(s[n][2 * r], s[n][2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float mn = fmaxf(m[r], mx);
      const float alpha = mn == -INFINITY ? 1.0f : exp2f(m[r] - mn);
      m[r] = mn;
      l[r] *= alpha;
#pragma unroll
      for (int dn = 0; dn < D / 8; ++dn) {
        o[dn][2 * r] *= alpha;
        o[dn][2 * r + 1] *= alpha;
      }
#pragma unroll
      for (int n = 0; n < 8; ++n)
#pragma unroll
        for (int e = 2 * r; e < 2 * r + 2; ++e) {
          const float pv = mn == -INFINITY ? 0.0f : exp2f(s[n][e] - mn);
          s[n][e] = pv;
          l[r] += pv;
        }
    }
    mma_pv<T, D, LD>(o, s, sV, g, t);
  });

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }
  if constexpr (kSplit) {  // unnormalised output, running maximum (exp2 domain) and sum per row
    float* ws = A.workspace + ((bh * A.heavy_q + bt.tile) * A.splits_q + bt.split) * kForwardPartial<D>;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = warp * 16 + g + 8 * r;
#pragma unroll
      for (int dn = 0; dn < D / 8; ++dn)
        *reinterpret_cast<float2*>(ws + row * D + dn * 8 + 2 * t) = make_float2(o[dn][2 * r], o[dn][2 * r + 1]);
      if (t == 0) ws[kTile * D + row] = m[r], ws[kTile * D + kTile + row] = l[r];
    }
    return;
  }
  T* out = static_cast<T*>(A.out) + (b * A.H + h) * P.nq * D;
  float* lse = A.lse + (b * A.H + h) * P.nq;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t i = i0 + warp * 16 + g + 8 * r;
    if (i >= P.nq) continue;
    const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn) {
      const uint32_t v = Mma<T>::pack(o[dn][2 * r] * inv, o[dn][2 * r + 1] * inv);
      *reinterpret_cast<uint32_t*>(out + i * D + dn * 8 + 2 * t) = v;
    }
    if (t == 0) lse[i] = l[r] > 0.0f ? m[r] * kLn2 + logf(l[r]) : -INFINITY;
  }
}

// Output and lse of the split query tiles: the partials of every split merged in split order.
template <class T, int D>
__global__ void __launch_bounds__(kThreads) attn_forward_combine_kernel(const Args A) {
  const Pattern& P = A.pat;
  const int64_t qt = blockIdx.x, bh = A.y_base + blockIdx.y;
  const float* ws = A.workspace + (bh * A.heavy_q + qt) * A.splits_q * kForwardPartial<D>;
  T* out = static_cast<T*>(A.out) + bh * P.nq * D;
  float* lse = A.lse + bh * P.nq;
  // Per row once: each split's weight 2^(m_z - max) / sum (0 for a split that saw no key), lse.
  __shared__ float w[kMaxSplits][kTile];
  for (int row = threadIdx.x; row < kTile; row += kThreads) {
    const int64_t i = qt * kTile + row;
    float mx = -INFINITY, l = 0.0f;
    for (int z = 0; z < A.splits_q; ++z) mx = fmaxf(mx, ws[z * kForwardPartial<D> + kTile * D + row]);
    for (int z = 0; z < A.splits_q; ++z) {
      const float* part = ws + z * kForwardPartial<D>;
      w[z][row] = mx == -INFINITY ? 0.0f : exp2f(part[kTile * D + row] - mx);
      l += part[kTile * D + kTile + row] * w[z][row];
    }
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    for (int z = 0; z < A.splits_q; ++z) w[z][row] *= inv;
    if (i < P.nq) lse[i] = l > 0.0f ? mx * kLn2 + logf(l) : -INFINITY;
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < kTile * D; idx += kThreads) {
    const int row = idx / D;
    const int64_t i = qt * kTile + row;
    if (i >= P.nq) break;
    float o = 0.0f;
    for (int z = 0; z < A.splits_q; ++z) o += ws[z * kForwardPartial<D> + idx] * w[z][row];
    out[i * D + idx % D] = Mma<T>::cast(o);
  }
}

// ------------------------------------------------------------------------------------ backward

// dQ for 64 queries per block, over the key tiles they see. Shared memory: Q, dO, then per slot
// (kPipe: two) K and V.
template <class T, int D, bool kPipe, bool kSplit>
__global__ void __launch_bounds__(kThreads) attn_backward_dq_kernel(const Args A) {
  constexpr int LD = D + 8;
  EDGEGEN_DYNAMIC_SHARED(smem);
  T* sQ = reinterpret_cast<T*>(smem);
  T* sO = sQ + kTile * LD;  // dO
  auto slot_k = [&](int slot) { return sQ + kTile * LD * (2 + 2 * slot); };
  const Pattern& P = A.pat;
  const int64_t bh = A.y_base + blockIdx.y, b = bh / A.H, h = bh % A.H;
  const BlockTile bt = query_block<kSplit>(A);
  const int64_t i0 = bt.tile * kTile;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const T* K = head_ptr<T>(A.k, b, h);
  const T* V = head_ptr<T>(A.v, b, h);
  load_tile<false, T, D, LD>(sQ, head_ptr<T>(A.q, b, h), A.q.sn, i0, P.nq);
  load_tile<false, T, D, LD>(sO, head_ptr<T>(A.dout, b, h), A.dout.sn, i0, P.nq);
  __syncthreads();
  uint32_t qf[D / 16][4], of[D / 16][4];
  load_a<T, D, LD>(qf, sQ, warp * 16, g, t);
  load_a<T, D, LD>(of, sO, warp * 16, g, t);
  float lse2[2], dl[2];
  int64_t pos[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t i = i0 + warp * 16 + g + 8 * r;
    const bool in = i < P.nq;
    const float ls = in ? A.lse[(b * A.H + h) * P.nq + i] : -INFINITY;
    lse2[r] = ls * kLog2e;
    dl[r] = in ? A.delta[(b * A.H + h) * P.nq + i] : 0.0f;
    pos[r] = P.q_offset + i;
  }
  float acc[D / 8][4];
#pragma unroll
  for (int dn = 0; dn < D / 8; ++dn) acc[dn][0] = acc[dn][1] = acc[dn][2] = acc[dn][3] = 0.0f;
  const int64_t p0 = P.q_offset + i0, p1 = P.q_offset + imin(i0 + kTile, P.nq) - 1;

  auto load = [&](int64_t j0, int slot) { load_kv<kPipe, T, D, LD>(slot_k(slot), K, V, A, j0); };
  const TileSeq seq(keys_for_queries(P, p0, p1), kSplit ? A.splits_q : 1, kSplit ? bt.split : 0);
  walk_tiles<kPipe>(seq, load, [&](int64_t j0, int slot) {
    const T* sK = slot_k(slot);
    const T* sV = sK + kTile * LD;
    float s[8][4], dp[8][4];
    mma_abt<T, D, LD>(s, qf, sK, g, t);
    mma_abt<T, D, LD>(dp, of, sV, g, t);
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1;
        const int64_t j = j0 + n * 8 + 2 * t + (e & 1);
        const bool vis = j < P.nk && lse2[r] != -INFINITY && P.visible(pos[r], j);
        const float pr = vis ? exp2f(s[n][e] * A.scale_log2 - lse2[r]) : 0.0f;
        s[n][e] = pr * (dp[n][e] - dl[r]);  // dS
      }
    mma_pv<T, D, LD>(acc, s, sK, g, t);  // dQ += dS K
  });

  if constexpr (kSplit) {
    float* ws = A.workspace + ((bh * A.heavy_q + bt.tile) * A.splits_q + bt.split) * kTile * D;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = warp * 16 + g + 8 * r;
#pragma unroll
      for (int dn = 0; dn < D / 8; ++dn)
        *reinterpret_cast<float2*>(ws + row * D + dn * 8 + 2 * t) = make_float2(acc[dn][2 * r], acc[dn][2 * r + 1]);
    }
    return;
  }
  T* dq = static_cast<T*>(A.dq) + (b * A.H + h) * P.nq * D;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t i = i0 + warp * 16 + g + 8 * r;
    if (i >= P.nq) continue;
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn)
      *reinterpret_cast<uint32_t*>(dq + i * D + dn * 8 + 2 * t) =
          Mma<T>::pack(acc[dn][2 * r] * A.scale, acc[dn][2 * r + 1] * A.scale);
  }
}

// dK and dV for 64 keys per block, over the query tiles that see them.
template <class T, int D, bool kPipe>
__global__ void __launch_bounds__(kThreads) attn_backward_dkv_kernel(const Args A) {
  constexpr int LD = D + 8;
  EDGEGEN_DYNAMIC_SHARED(smem);
  // Shared memory: K, V, then per slot (kPipe: two) Q and dO, then per slot lse * log2(e) and
  // delta of the query tile (kTile floats each).
  constexpr int kSlots = kPipe ? 2 : 1;
  T* sK = reinterpret_cast<T*>(smem);
  T* sV = sK + kTile * LD;
  auto slot_q = [&](int slot) { return sV + kTile * LD * (1 + 2 * slot); };
  float* sLD = reinterpret_cast<float*>(sK + kTile * LD * (2 + 2 * kSlots));
  const Pattern& P = A.pat;
  const int64_t bh = A.y_base + blockIdx.y, b = bh / A.H, h = bh % A.H;
  // Blocks [0, key tiles) take one key tile each (split 0); the tiles holding global keys, which
  // every query sees, are also spread over A.splits blocks that take every splits-th query tile
  // and leave float32 partial sums for attn_backward_reduce_kernel (a fixed-order sum).
  const BlockTile bt = block_tile((P.nk + kTile - 1) / kTile, A.heavy_tiles, A.splits);
  const int64_t kt = bt.tile, split = bt.split;
  const bool partial = bt.partial;
  const int64_t j0 = kt * kTile;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const T* Q = head_ptr<T>(A.q, b, h);
  const T* dO = head_ptr<T>(A.dout, b, h);
  const float* lse = A.lse + (b * A.H + h) * P.nq;
  const float* delta = A.delta + (b * A.H + h) * P.nq;
  load_kv<false, T, D, LD>(sK, head_ptr<T>(A.k, b, h), head_ptr<T>(A.v, b, h), A, j0);  // sV follows sK
  __syncthreads();
  // K and V as A fragments: in registers up to head_dim 64, else read from shared memory per
  // product (kept, they would spill: see docs/gpu.md).
  constexpr bool kHoldKV = D <= 64;
  uint32_t kf[kHoldKV ? D / 16 : 1][4], vf[kHoldKV ? D / 16 : 1][4];
  if constexpr (kHoldKV) {
    load_a<T, D, LD>(kf, sK, warp * 16, g, t);
    load_a<T, D, LD>(vf, sV, warp * 16, g, t);
  }
  const int64_t key[2] = {j0 + warp * 16 + g, j0 + warp * 16 + g + 8};
  float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
  for (int dn = 0; dn < D / 8; ++dn)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[dn][e] = dv[dn][e] = 0.0f;
  const int64_t j1 = imin(j0 + kTile, P.nk) - 1;

  auto load = [&](int64_t i0, int slot) {
    load_tile<kPipe, T, D, LD>(slot_q(slot), Q, A.q.sn, i0, P.nq);
    load_tile<kPipe, T, D, LD>(slot_q(slot) + kTile * LD, dO, A.dout.sn, i0, P.nq);
    float* sL = sLD + 2 * kTile * slot;
    for (int c = threadIdx.x; c < kTile; c += kThreads) {
      const bool in = i0 + c < P.nq;
      sL[c] = in ? lse[i0 + c] * kLog2e : -INFINITY;
      sL[kTile + c] = in ? delta[i0 + c] : 0.0f;
    }
  };
  // A split block takes every splits-th query tile (block-uniform).
  const TileSeq seq(queries_for_keys(P, j0, j1), partial ? A.splits : 1, partial ? split : 0);
  walk_tiles<kPipe>(seq, load, [&](int64_t i0, int slot) {
    const T* sQ = slot_q(slot);
    const T* sO = sQ + kTile * LD;  // dO
    const float* sL = sLD + 2 * kTile * slot;
    const float* sD = sL + kTile;
    float s[8][4], dp[8][4];
    if constexpr (kHoldKV) {
      mma_abt<T, D, LD>(s, kf, sQ, g, t);   // S^T: keys x queries
      mma_abt<T, D, LD>(dp, vf, sO, g, t);  // dP^T = V dO^T
    } else {
      mma_abt_shared<T, D, LD>(s, sK, warp * 16, sQ, g, t);
      mma_abt_shared<T, D, LD>(dp, sV, warp * 16, sO, g, t);
    }
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int c = n * 8 + 2 * t + (e & 1);
        const int64_t i = i0 + c;
        const float l2 = sL[c];
        const bool vis = i < P.nq && key[e >> 1] < P.nk && l2 != -INFINITY && P.visible(P.q_offset + i, key[e >> 1]);
        const float pr = vis ? exp2f(s[n][e] * A.scale_log2 - l2) : 0.0f;
        s[n][e] = pr;
        dp[n][e] = pr * (dp[n][e] - sD[c]);  // dS^T
      }
    mma_pv<T, D, LD>(dv, s, sO, g, t);   // dV += P^T dO
    mma_pv<T, D, LD>(dk, dp, sQ, g, t);  // dK += dS^T Q
  });

  if (partial) {
    float* ws = A.workspace + ((bh * A.heavy_tiles + kt) * A.splits + split) * 2 * kTile * D;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = warp * 16 + g + 8 * r;
#pragma unroll
      for (int dn = 0; dn < D / 8; ++dn) {
        *reinterpret_cast<float2*>(ws + row * D + dn * 8 + 2 * t) = make_float2(dk[dn][2 * r], dk[dn][2 * r + 1]);
        *reinterpret_cast<float2*>(ws + (kTile + row) * D + dn * 8 + 2 * t) =
            make_float2(dv[dn][2 * r], dv[dn][2 * r + 1]);
      }
    }
    return;
  }
  T* dkp = static_cast<T*>(A.dk) + (b * A.H + h) * P.nk * D;
  T* dvp = static_cast<T*>(A.dv) + (b * A.H + h) * P.nk * D;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (key[r] >= P.nk) continue;
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn) {
      *reinterpret_cast<uint32_t*>(dkp + key[r] * D + dn * 8 + 2 * t) =
          Mma<T>::pack(dk[dn][2 * r] * A.scale, dk[dn][2 * r + 1] * A.scale);
      *reinterpret_cast<uint32_t*>(dvp + key[r] * D + dn * 8 + 2 * t) = Mma<T>::pack(dv[dn][2 * r], dv[dn][2 * r + 1]);
    }
  }
}

// dK, dV of the split key tiles: the float32 partials summed in split order.
template <class T, int D>
__global__ void __launch_bounds__(kThreads) attn_backward_reduce_kernel(const Args A) {
  const int64_t kt = blockIdx.x, bh = A.y_base + blockIdx.y;
  const float* ws = A.workspace + (bh * A.heavy_tiles + kt) * A.splits * 2 * kTile * D;
  T* dk = static_cast<T*>(A.dk) + bh * A.pat.nk * D;
  T* dv = static_cast<T*>(A.dv) + bh * A.pat.nk * D;
  for (int idx = threadIdx.x; idx < kTile * D; idx += kThreads) {
    const int64_t j = kt * kTile + idx / D;
    if (j >= A.pat.nk) break;
    float sk = 0.0f, sv = 0.0f;
    for (int z = 0; z < A.splits; ++z) {
      sk += ws[z * 2 * kTile * D + idx];
      sv += ws[(z * 2 + 1) * kTile * D + idx];
    }
    dk[j * D + idx % D] = Mma<T>::cast(sk * A.scale);
    dv[j * D + idx % D] = Mma<T>::cast(sv);
  }
}

// dQ of the split query tiles: the float32 partials summed in split order.
template <class T, int D>
__global__ void __launch_bounds__(kThreads) attn_backward_dq_reduce_kernel(const Args A) {
  const int64_t qt = blockIdx.x, bh = A.y_base + blockIdx.y;
  const float* ws = A.workspace + (bh * A.heavy_q + qt) * A.splits_q * kTile * D;
  T* dq = static_cast<T*>(A.dq) + bh * A.pat.nq * D;
  for (int idx = threadIdx.x; idx < kTile * D; idx += kThreads) {
    const int64_t i = qt * kTile + idx / D;
    if (i >= A.pat.nq) break;
    float sum = 0.0f;
    for (int z = 0; z < A.splits_q; ++z) sum += ws[z * kTile * D + idx];
    dq[i * D + idx % D] = Mma<T>::cast(sum * A.scale);
  }
}

// delta[b, h, i] = sum_d dO[i, d] O[i, d] in float32: one warp per row.
template <class T, int D>
__global__ void __launch_bounds__(kThreads) attn_delta_kernel(const Args A, AttnTensor out, float* delta) {
  const Pattern& P = A.pat;
  const int64_t row = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= A.H * P.nq) return;
  const int64_t b = A.y_base + blockIdx.y, h = row / P.nq, i = row % P.nq;
  const T* go = head_ptr<T>(A.dout, b, h) + i * A.dout.sn;
  const T* o = head_ptr<T>(out, b, h) + i * out.sn;
  float acc = 0.0f;
#pragma unroll
  for (int c = lane; c < D; c += 32) acc += float(go[c]) * float(o[c]);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if (lane == 0) delta[(b * A.H + h) * P.nq + i] = acc;
}

// The device's largest grid.y (CUDA's is 65,535): a grid.y (batch x head, or batch) beyond it runs
// as several launches of at most that many, each told its first y (Args::y_base).
unsigned max_grid_y() {
  int device = 0, value = 0;
  if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetAttribute(&value, cudaDevAttrMaxGridDimY, device) != cudaSuccess ||
      value <= 0)
    return 65535;
  return unsigned(value);
}

// `kernel(Args, extra...)` over `grid`, split along y where the device needs it (see max_grid_y).
template <class Kernel, class... Extra>
int launch(Kernel kernel, dim3 grid, size_t smem, const Args& a, cudaStream_t stream, const Extra&... extra) {
  if (grid.x == 0 || grid.y == 0) return 0;
  if (smem > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (e != cudaSuccess) return int(e);
  }
  const unsigned most = max_grid_y();
  for (unsigned y0 = 0; y0 < grid.y; y0 += most) {
    Args part = a;
    part.y_base = y0;
    EDGEGEN_LAUNCH(kernel, dim3(grid.x, std::min(most, grid.y - y0)), kThreads, smem, stream, part, extra...);
    const int e = int(cudaGetLastError());
    if (e) return e;
  }
  return 0;
}

Args make_args(const AttnProblem& p) {
  Args a{};
  a.splits = 1;
  a.pat = Pattern{p.window, p.num_global, p.q_offset, p.nq, p.nk, p.causal};
  a.H = p.H;
  a.scale = p.scale;
  a.scale_log2 = p.scale * kLog2e;
  a.q = p.q;
  a.k = p.k;
  a.v = p.v;
  return a;
}

// Shared-memory tiles of kTile rows (pitch D + 8) per slot count: kPipe doubles the streamed ones.
template <class T, int D>
constexpr size_t tile_bytes(int tiles) {
  return size_t(tiles) * kTile * (D + 8) * sizeof(T);
}

template <class T, int D, bool kPipe>
int forward_typed(const AttnProblem& p, void* out, float* lse, void* workspace, cudaStream_t stream) {
  Args a = make_args(p);
  a.out = out;
  a.lse = lse;
  a.workspace = static_cast<float*>(workspace);
  query_split_plan(p, a.heavy_q, a.splits_q);
  const int64_t n_qt = (p.nq + kTile - 1) / kTile;
  const unsigned bh = unsigned(p.B * p.H);
  constexpr int kSlots = kPipe ? 2 : 1;
  constexpr size_t smem = tile_bytes<T, D>(1 + 2 * kSlots);
  int e = launch(attn_forward_kernel<T, D, kPipe, true>, dim3(unsigned(a.heavy_q * a.splits_q), bh), smem, a, stream);
  if (!e) e = launch(attn_forward_kernel<T, D, kPipe, false>, dim3(unsigned(n_qt - a.heavy_q), bh), smem, a, stream);
  if (e || a.heavy_q == 0) return e;
  return launch(attn_forward_combine_kernel<T, D>, dim3(unsigned(a.heavy_q), unsigned(p.B * p.H)), 0, a, stream);
}

template <class T, int D, bool kPipe>
int backward_typed(const AttnProblem& p, const AttnTensor& dout, const AttnTensor& out, const float* lse,
                   float* delta, void* dq, void* dk, void* dv, void* workspace, cudaStream_t stream) {
  Args a = make_args(p);
  a.dout = dout;
  a.lse = const_cast<float*>(lse);
  a.delta = delta;
  int e = launch(attn_delta_kernel<T, D>, dim3(unsigned((p.H * p.nq + kWarps - 1) / kWarps), unsigned(p.B)), 0, a,
                 stream, out, delta);
  if (e) return e;
  a.dq = dq;
  a.dk = dk;
  a.dv = dv;
  a.workspace = static_cast<float*>(workspace);
  split_plan(p, a.heavy_tiles, a.splits);
  constexpr int kSlots = kPipe ? 2 : 1;
  const size_t tiles = tile_bytes<T, D>(2 + 2 * kSlots);
  const int64_t n_kt = (p.nk + kTile - 1) / kTile;
  e = launch(attn_backward_dkv_kernel<T, D, kPipe>,
                 dim3(unsigned(n_kt + a.heavy_tiles * (a.splits - 1)), unsigned(p.B * p.H)),
                 tiles + 2 * kSlots * kTile * sizeof(float), a, stream);
  if (e) return e;
  if (a.heavy_tiles > 0) {
    e = launch(attn_backward_reduce_kernel<T, D>, dim3(unsigned(a.heavy_tiles), unsigned(p.B * p.H)), 0, a, stream);
    if (e) return e;
  }
  // The dQ partials reuse the workspace: the reduction above has read the dK/dV ones (same stream).
  query_split_plan(p, a.heavy_q, a.splits_q);
  const int64_t n_qt = (p.nq + kTile - 1) / kTile;
  const unsigned bh = unsigned(p.B * p.H);
  e = launch(attn_backward_dq_kernel<T, D, kPipe, true>, dim3(unsigned(a.heavy_q * a.splits_q), bh), tiles, a, stream);
  if (!e) e = launch(attn_backward_dq_kernel<T, D, kPipe, false>, dim3(unsigned(n_qt - a.heavy_q), bh), tiles, a, stream);
  if (e || a.heavy_q == 0) return e;
  return launch(attn_backward_dq_reduce_kernel<T, D>, dim3(unsigned(a.heavy_q), unsigned(p.B * p.H)), 0, a, stream);
}

// Calls f(T{}, std::integral_constant<int, D>{}, std::bool_constant<kPipe>{}) for the problem's
// element type T, head size D and p.pipelined; cudaErrorInvalidValue for a head size without
// kernels (attention_cuda_supports).
template <class F>
int with_types(const AttnProblem& p, const F& f) {
  auto for_d = [&](auto tag, auto pipe) -> int {
    switch (p.d) {
      case 32: return f(tag, std::integral_constant<int, 32>{}, pipe);
      case 64: return f(tag, std::integral_constant<int, 64>{}, pipe);
      case 80: return f(tag, std::integral_constant<int, 80>{}, pipe);
      case 96: return f(tag, std::integral_constant<int, 96>{}, pipe);
      case 128: return f(tag, std::integral_constant<int, 128>{}, pipe);
    }
    return int(cudaErrorInvalidValue);
  };
  auto for_pipe = [&](auto tag) -> int {
    return p.pipelined ? for_d(tag, std::true_type{}) : for_d(tag, std::false_type{});
  };
  return p.dtype == AttnDType::BF16 ? for_pipe(__nv_bfloat16{}) : for_pipe(__half{});
}

}  // namespace

bool attention_cuda_supports(int d) {  // the head sizes with_types instantiates
  AttnProblem p;
  p.d = d;
  return with_types(p, [](auto, auto, auto) { return 0; }) == 0;
}

bool attention_cuda_pipeline_default() {
  const char* v = std::getenv("EDGEGEN_CUDA_ATTENTION_PIPELINE");
  return v != nullptr && v[0] == '1' && v[1] == '\0';
}

size_t attention_forward_workspace_bytes(const AttnProblem& p) {
  int64_t heavy = 0, splits = 1;
  query_split_plan(p, heavy, splits);
  return size_t(p.B * p.H * heavy * splits) * size_t(kTile * (p.d + 2)) * sizeof(float);
}

int attention_forward_cuda(const AttnProblem& p, void* out, float* lse, void* workspace, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  return with_types(p, [&](auto tag, auto d, auto pipe) {
    return forward_typed<decltype(tag), decltype(d)::value, decltype(pipe)::value>(p, out, lse, workspace, st);
  });
}

size_t attention_backward_workspace_bytes(const AttnProblem& p) {
  int64_t heavy = 0, splits = 1, heavy_q = 0, splits_q = 1;
  split_plan(p, heavy, splits);
  query_split_plan(p, heavy_q, splits_q);
  return size_t(p.B * p.H) * size_t(std::max(heavy * splits * 2, heavy_q * splits_q)) * kTile * size_t(p.d) *
         sizeof(float);
}

int attention_backward_cuda(const AttnProblem& p, const AttnTensor& grad_out, const AttnTensor& out,
                            const float* lse, float* delta, void* dq, void* dk, void* dv, void* workspace,
                            void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  return with_types(p, [&](auto tag, auto d, auto pipe) {
    return backward_typed<decltype(tag), decltype(d)::value, decltype(pipe)::value>(p, grad_out, out, lse, delta,
                                                                                     dq, dk, dv, workspace, st);
  });
}

}  // namespace edgegen::kernels::cuda
