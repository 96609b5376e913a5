// CUDA twin of the KD-loss row kernel (see kd_loss_cuda.h for the contract and the two kernels).
//
// Per row, with ds = s - max(s), dt_k = t_k - max(t_k):
//   sweep 1  per thread: running maxima with rescaled sums ZsT = sum e^(ds/T), Zs1 = sum e^ds,
//            Zt_k = sum e^(dt_k/T); the student element is copied to shared memory when the row
//            fits, and s[y] is picked up by whichever thread meets it; one block reduction.
//   sweep 2  p = sum_k w_k e^(dt_k/T) / Zt_k, q_T = e^(ds/T) / ZsT, q_1 = e^ds / Zs1;
//            KL += p (ln p - ln q_T) where p > 0; grad = scale [alpha T (q_T - p) + (1 - alpha)
//            (q_1 - onehot(y))], written once. Rows kernel: the teacher rows are read a second
//            time; the student comes from shared memory (or a second read when the row does not
//            fit). Cluster kernel: both come from shared memory.
// Every element is read by the thread that writes its gradient, so grad may alias student.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <mutex>
#include <tuple>

#include "kernels/cuda/kd_loss_cuda.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/memory_ops.h"

namespace edgegen::kernels::cuda {
namespace {

constexpr int kThreads = 1024;
using kernels::kKDMaxTeachers;

// Element loads/stores and the compute type: float for the 16/32-bit types, double for double.
__device__ __forceinline__ float as_c(float x) { return x; }
__device__ __forceinline__ double as_c(double x) { return x; }
__device__ __forceinline__ float as_c(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float as_c(__half x) { return __half2float(x); }
template <class T> __device__ __forceinline__ auto load_c(const T* p) { return as_c(p[0]); }
template <> __device__ __forceinline__ auto load_c<float>(const float* p) { return __ldg(p); }
template <class T, class A> __device__ __forceinline__ T from_c(A x);
template <> __device__ __forceinline__ float from_c<float>(float x) { return x; }
template <> __device__ __forceinline__ double from_c<double>(double x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_c<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <> __device__ __forceinline__ __half from_c<__half>(float x) { return __float2half_rn(x); }
__device__ __forceinline__ float ex(float x) { return __expf(x); }
__device__ __forceinline__ double ex(double x) { return exp(x); }
__device__ __forceinline__ float lg(float x) { return logf(x); }
__device__ __forceinline__ double lg(double x) { return log(x); }
template <class T> struct Compute { using type = float; };
__device__ __forceinline__ int64_t imin64(int64_t a, int64_t b) { return a < b ? a : b; }
template <class A> __device__ __forceinline__ A amax(A a, A b) { return a > b ? a : b; }
template <> struct Compute<double> { using type = double; };

// A running (max, sum of e^((x - max) * c)) pair; -inf max means "nothing finite seen yet".
template <class A>
struct Running {
  A m;
  A z;
};

template <class A>
__device__ __forceinline__ A rescale(A from, A to, A c) {
  return from == A(-INFINITY) ? A(0) : ex((from - to) * c);
}

// The larger of a and b, NaN if either is: a NaN logit makes its row's maximum NaN, so the row's
// sum and loss are NaN as on the CPU (skipping it would give a finite loss and wrong gradients).
template <class A>
__device__ __forceinline__ A nan_max(A a, A b) {
  return (a > b || a != a) ? a : b;
}

// Merge b into a (same scale c).
template <class A>
__device__ __forceinline__ void merge(Running<A>& a, const Running<A>& b, A c) {
  const A m = a.m > b.m ? a.m : b.m;
  if (m == A(-INFINITY)) return;
  a.z = a.z * rescale(a.m, m, c) + b.z * rescale(b.m, m, c);
  a.m = m;
}

// Everything a launch needs, by value (the pointers are device memory).
struct Params {
  int64_t rows, vocab;
  const void* student;
  int64_t student_row_stride;
  int num_teachers;
  const void* teachers[kKDMaxTeachers];
  int64_t teacher_row_strides[kKDMaxTeachers];
  double teacher_weights[kKDMaxTeachers];
  const int64_t* target;
  int64_t ignore_index;
  double temperature, alpha, invT, grad_scale;
  double* row_loss;
  void* grad;
  int64_t grad_row_stride;
  const double* grad_row_scale;
  int use_kl, use_ce, tmode;  // tmode: 1 if T == 1, 2 if T == 2 (e^ds from e^(ds/T)), else 0
  int cluster;                // cluster kernel: blocks per cluster (per row) ...
  int64_t slot_elems;         // ... and the elements of each tensor's slot of shared memory
};

// Block-wide sum (all threads get the result).
template <class A>
__device__ A block_sum(A x, A* scratch) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  const int nw = blockDim.x >> 5;
  x = lane < nw ? scratch[lane] : A(0);
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// Block-wide merge of Running pairs (all threads get the result).
template <class A>
__device__ Running<A> block_merge(Running<A> r, A c, A* scratch_m, A* scratch_z) {
  for (int o = 16; o > 0; o >>= 1) {
    Running<A> other{__shfl_xor_sync(0xffffffffu, r.m, o), __shfl_xor_sync(0xffffffffu, r.z, o)};
    merge(r, other, c);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) {
    scratch_m[warp] = r.m;
    scratch_z[warp] = r.z;
  }
  __syncthreads();
  const int nw = blockDim.x >> 5;
  r = lane < nw ? Running<A>{scratch_m[lane], scratch_z[lane]} : Running<A>{A(-INFINITY), A(0)};
  for (int o = 16; o > 0; o >>= 1) {
    Running<A> other{__shfl_xor_sync(0xffffffffu, r.m, o), __shfl_xor_sync(0xffffffffu, r.z, o)};
    merge(r, other, c);
  }
  return r;
}

// 16-byte vectors of T.
template <class T>
struct Vec {
  static constexpr int N = 16 / sizeof(T);
  union {
    uint4 raw;
    T x[N];
  };
};

template <class T>
__device__ __forceinline__ int misalign(const void* ptr) {
  return int((reinterpret_cast<uintptr_t>(ptr) % 16) / sizeof(T));
}

// Running state of sweep 1 for one thread.
template <class A>
struct Sweep1 {
  Running<A> sT;  // student at T
  A zs1;          // student at 1, relative to sT.m
  Running<A> t[kKDMaxTeachers];
};

template <class A, int N>
__device__ __forceinline__ void add_student(Sweep1<A>& st, const A (&x)[N], A invT, int use_ce, int tmode) {
  A mx = x[0];
#pragma unroll
  for (int u = 1; u < N; ++u) mx = nan_max(x[u], mx);
  if (mx > st.sT.m || mx != mx) {
    st.sT.z *= rescale(st.sT.m, mx, invT);
    st.zs1 *= rescale(st.sT.m, mx, A(1));
    st.sT.m = mx;
  }
  if (st.sT.m == A(-INFINITY)) return;
#pragma unroll
  for (int u = 0; u < N; ++u) {
    const A ds = x[u] - st.sT.m;
    const A e = ex(ds * invT);
    st.sT.z += e;
    if (use_ce) st.zs1 += tmode == 1 ? e : (tmode == 2 ? e * e : ex(ds));
  }
}

template <class A, int N>
__device__ __forceinline__ void add_teacher(Running<A>& r, const A (&x)[N], A invT) {
  A mx = x[0];
#pragma unroll
  for (int u = 1; u < N; ++u) mx = nan_max(x[u], mx);
  if (mx > r.m || mx != mx) {
    r.z *= rescale(r.m, mx, invT);
    r.m = mx;
  }
  if (r.m == A(-INFINITY)) return;
#pragma unroll
  for (int u = 0; u < N; ++u) r.z += ex((x[u] - r.m) * invT);
}

// Sweep 1 over a 16-byte vector of the student, vs, at elements v .. v + VN - 1 (the target's
// value into `target` when y is among them), and the teachers' vectors teacher(k), k < K.
template <class T, class A, class F>
__device__ __forceinline__ void sweep1_vector(Sweep1<A>& st, const Vec<T>& vs, int64_t v, int64_t y, A& target, int K,
                                              A invT, int use_ce, int tmode, F teacher) {
  constexpr int VN = Vec<T>::N;
  A x[VN];
#pragma unroll
  for (int u = 0; u < VN; ++u) x[u] = as_c(vs.x[u]);
#pragma unroll
  for (int u = 0; u < VN; ++u)
    if (v + u == y) target = x[u];
  add_student(st, x, invT, use_ce, tmode);
#pragma unroll
  for (int k = 0; k < kKDMaxTeachers; ++k) {
    if (k >= K) break;
    Vec<T> vt;
    vt.raw = teacher(k);
#pragma unroll
    for (int u = 0; u < VN; ++u) x[u] = as_c(vt.x[u]);
    add_teacher(st.t[k], x, invT);
  }
}

// What sweep 2 needs of a row, after the reductions.
template <class A>
struct RowStats {
  A ms, invT, inv_zsT, log_zsT, inv_zs1, log_zt0, inv_zt0;
  A m_t[kKDMaxTeachers], wz[kKDMaxTeachers];
  A ca, cc;
  int K, use_ce, tmode;
};

// RowStats from the row's merged maxima and sums: the student's maximum ms, its sums at T (zsT)
// and at 1 (zs1, relative to ms), each teacher's maximum and sum (k >= K: 0 and 1).
template <class A>
__device__ __forceinline__ RowStats<A> row_stats(const Params& p, int64_t row, int K, A ms, A zsT, A zs1,
                                                 const A (&mt)[kKDMaxTeachers], const A (&zt)[kKDMaxTeachers]) {
  RowStats<A> rs;
#pragma unroll
  for (int k = 0; k < kKDMaxTeachers; ++k) {
    rs.m_t[k] = mt[k];
    rs.wz[k] = k < K ? A(p.teacher_weights[k]) / zt[k] : A(0);
  }
  rs.inv_zt0 = A(1) / zt[0];
  rs.log_zt0 = lg(zt[0]);
  rs.ms = ms;
  rs.invT = A(p.invT);
  rs.inv_zsT = A(1) / zsT;
  rs.log_zsT = lg(zsT);
  rs.inv_zs1 = p.use_ce ? A(1) / zs1 : A(0);
  const A scale_row = A(p.grad_scale) * (p.grad_row_scale ? A(p.grad_row_scale[row]) : A(1));
  rs.ca = scale_row * A(p.alpha * p.temperature);
  rs.cc = scale_row * A(1.0 - p.alpha);
  rs.K = K;
  rs.use_ce = p.use_ce;
  rs.tmode = p.tmode;
  return rs;
}

// Gradient of one element and its KL term (added to kl); tv[k] are the teachers' values.
template <class A>
__device__ __forceinline__ A element_grad(const RowStats<A>& rs, A sv, const A* tv, bool is_target, A& kl) {
  const A ds = sv - rs.ms;
  const A eT = ex(ds * rs.invT);
  A gv = A(0);
  if (rs.K > 0) {
    A pt, logpt;
    if (rs.K == 1) {
      const A dt = (tv[0] - rs.m_t[0]) * rs.invT;
      pt = ex(dt) * rs.inv_zt0;
      logpt = dt - rs.log_zt0;
    } else {
      pt = A(0);
#pragma unroll
      for (int k = 0; k < kKDMaxTeachers; ++k)
        if (k < rs.K) pt += rs.wz[k] * ex((tv[k] - rs.m_t[k]) * rs.invT);
      logpt = lg(pt);
    }
    // pt == 0 (a teacher at -inf) adds nothing (0 * inf would be NaN); a NaN pt (a NaN teacher
    // logit, or a teacher row all -inf) is added: the loss is NaN, as on the CPU.
    if (!(pt <= A(0))) kl += pt * (logpt - (ds * rs.invT - rs.log_zsT));
    gv += rs.ca * (eT * rs.inv_zsT - pt);
  }
  if (rs.use_ce) {
    const A e1 = rs.tmode == 1 ? eT : (rs.tmode == 2 ? eT * eT : ex(ds));
    gv += rs.cc * (e1 * rs.inv_zs1 - (is_target ? A(1) : A(0)));
  }
  return gv;
}

// The gradient of a 16-byte vector of the student, vs, at elements v .. v + VN - 1 (KL terms
// added to kl): with one teacher its vector vt, else teacher(k, u) gives teacher k's element v + u.
template <class T, class A, class F>
__device__ __forceinline__ uint4 grad_vector(const RowStats<A>& rs, const Vec<T>& vs, const Vec<T>& vt, F teacher,
                                             int64_t v, int64_t y, A& kl) {
  Vec<T> vg;
  if (rs.K == 1) {
#pragma unroll
    for (int u = 0; u < Vec<T>::N; ++u) {
      const A tv[1] = {as_c(vt.x[u])};
      vg.x[u] = from_c<T>(element_grad(rs, as_c(vs.x[u]), tv, v + u == y, kl));
    }
  } else {
#pragma unroll
    for (int u = 0; u < Vec<T>::N; ++u) {
      A tv[kKDMaxTeachers];
#pragma unroll
      for (int k = 0; k < kKDMaxTeachers; ++k) tv[k] = k < rs.K ? teacher(k, u) : A(0);
      vg.x[u] = from_c<T>(element_grad(rs, as_c(vs.x[u]), tv, v + u == y, kl));
    }
  }
  return vg.raw;
}

template <class T, bool kCache>
__global__ void __launch_bounds__(kThreads) kd_rows_kernel(const Params p) {
  using A = typename Compute<T>::type;
  constexpr int VN = Vec<T>::N;
  constexpr A kNegInf = A(-INFINITY);
  EDGEGEN_DYNAMIC_SHARED(smem_raw);
  T* cache = reinterpret_cast<T*>(smem_raw);
  __shared__ A scratch[4][32];
  __shared__ A s_target;

  const int64_t n = p.vocab;
  const int K = p.use_kl ? p.num_teachers : 0;
  const A invT = A(p.invT);
  const int tid = threadIdx.x;
  for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    const T* s = static_cast<const T*>(p.student) + row * p.student_row_stride;
    T* g = p.grad ? static_cast<T*>(p.grad) + row * p.grad_row_stride : nullptr;
    const int64_t y = p.target[row];
    if (y == p.ignore_index) {
      if (g)
        for (int64_t v = tid; v < n; v += blockDim.x) g[v] = from_c<T>(A(0));
      if (tid == 0) p.row_loss[row] = 0.0;
      continue;
    }
    const T* t[kKDMaxTeachers];
#pragma unroll
    for (int k = 0; k < kKDMaxTeachers; ++k)
      t[k] = k < K ? static_cast<const T*>(p.teachers[k]) + row * p.teacher_row_strides[k] : s;

    // Elements [0, head) and [head + nv * VN, n) one at a time; the rest as 16-byte vectors,
    // when student, teachers and gradient share their alignment (always, for contiguous rows).
    const int mis = misalign<T>(s);
    bool vec_ok = !g || misalign<T>(g) == mis;
#pragma unroll
    for (int k = 0; k < kKDMaxTeachers; ++k)
      if (k < K) vec_ok = vec_ok && misalign<T>(t[k]) == mis;
    const int64_t head = vec_ok ? imin64((VN - mis) % VN, n) : n;
    const int64_t nv = (n - head) / VN;
    const int64_t body_end = head + nv * VN;
    const int pad = int((VN - head % VN) % VN);  // cache index = v + pad: vectors land aligned

    // ---- sweep 1: maxima and normalisers
    Sweep1<A> st;
    st.sT = Running<A>{kNegInf, A(0)};
    st.zs1 = A(0);
#pragma unroll
    for (int k = 0; k < kKDMaxTeachers; ++k) st.t[k] = Running<A>{kNegInf, A(0)};
    auto scalar1 = [&](int64_t v) {
      const T raw = s[v];
      if (kCache) cache[v + pad] = raw;
      const A x[1] = {as_c(raw)};
      if (v == y) s_target = x[0];
      add_student(st, x, invT, p.use_ce, p.tmode);
#pragma unroll
      for (int k = 0; k < kKDMaxTeachers; ++k) {
        if (k >= K) break;
        const A xt[1] = {A(load_c(t[k] + v))};
        add_teacher(st.t[k], xt, invT);
      }
    };
    for (int64_t v = tid; v < head; v += blockDim.x) scalar1(v);
    for (int64_t v = body_end + tid; v < n; v += blockDim.x) scalar1(v);
    for (int64_t c = tid; c < nv; c += blockDim.x) {
      const int64_t v = head + c * VN;
      Vec<T> vs;
      vs.raw = *reinterpret_cast<const uint4*>(s + v);
      uint4 t0 = make_uint4(0, 0, 0, 0);
      if (K >= 1) t0 = __ldg(reinterpret_cast<const uint4*>(t[0] + v));  // both loads in flight
      if (kCache) *reinterpret_cast<uint4*>(cache + v + pad) = vs.raw;
      sweep1_vector(st, vs, v, y, s_target, K, invT, p.use_ce, p.tmode,
                    [&](int k) { return k == 0 ? t0 : __ldg(reinterpret_cast<const uint4*>(t[k] + v)); });
    }

    // The student's pair at T, then Zs1 rescaled to the common maximum; then every teacher's.
    const A my_m = st.sT.m;
    const Running<A> sT = block_merge(st.sT, invT, scratch[0], scratch[1]);
    A zs1_total = A(0);
    if (p.use_ce) zs1_total = block_sum(rescale(my_m, sT.m, A(1)) * st.zs1, scratch[2]);
    A mt[kKDMaxTeachers], zt[kKDMaxTeachers];
#pragma unroll
    for (int k = 0; k < kKDMaxTeachers; ++k) {
      const Running<A> tk = k < K ? block_merge(st.t[k], invT, scratch[0], scratch[1]) : Running<A>{A(0), A(1)};
      mt[k] = tk.m;
      zt[k] = tk.z;
    }
    __syncthreads();  // s_target and the cache are visible from here on
    const RowStats<A> rs = row_stats(p, row, K, sT.m, sT.z, zs1_total, mt, zt);

    // ---- sweep 2: KL terms and the gradient
    A kl = A(0);
    auto scalar2 = [&](int64_t v) {
      // A plain load: the gradient may be written in place of the student (ld.global.nc, __ldg,
      // is only for memory the kernel does not write).
      const A sv = kCache ? as_c(cache[v + pad]) : A(as_c(s[v]));
      A tv[kKDMaxTeachers];
#pragma unroll
      for (int k = 0; k < kKDMaxTeachers; ++k) tv[k] = k < K ? A(load_c(t[k] + v)) : A(0);
      const A gv = element_grad(rs, sv, tv, v == y, kl);
      if (g) g[v] = from_c<T>(gv);
    };
    for (int64_t v = tid; v < head; v += blockDim.x) scalar2(v);
    for (int64_t v = body_end + tid; v < n; v += blockDim.x) scalar2(v);
    for (int64_t c = tid; c < nv; c += blockDim.x) {
      const int64_t v = head + c * VN;
      Vec<T> vs, vt;
      vs.raw = kCache ? *reinterpret_cast<const uint4*>(cache + v + pad) : *reinterpret_cast<const uint4*>(s + v);
      vt.raw = K == 1 ? __ldg(reinterpret_cast<const uint4*>(t[0] + v)) : make_uint4(0, 0, 0, 0);
      const uint4 gv = grad_vector(rs, vs, vt, [&](int k, int u) { return A(load_c(t[k] + v + u)); }, v, y, kl);
      if (g) *reinterpret_cast<uint4*>(g + v) = gv;
    }
    A loss = A(0);
    if (K > 0) {
      const A kl_row = block_sum(kl, scratch[3]);
      loss += A(p.alpha * p.temperature * p.temperature) * (kl_row < A(0) ? A(0) : kl_row);  // rounding only: KL >= 0
    }
    if (p.use_ce) loss += A(1.0 - p.alpha) * (lg(zs1_total) - (s_target - rs.ms));
    if (tid == 0) p.row_loss[row] = double(loss);
    __syncthreads();  // the cache, s_target and scratch are reused by the next row
  }
}

template <class T, bool kCache>
int launch_typed(const Params& prm, size_t smem, int grid, cudaStream_t stream) {
  auto kernel = kd_rows_kernel<T, kCache>;
  if (smem > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (e != cudaSuccess) return int(e);
  }
  EDGEGEN_LAUNCH(kernel, grid, kThreads, smem, stream, prm);
  return int(cudaGetLastError());
}

template <class T>
int launch(const Params& prm, cudaStream_t stream) {
  int device = 0, sms = 0, max_smem = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (e != cudaSuccess) return int(e);
  // The static shared memory (reduction scratch) needs about 1 KB of the per-block limit.
  const size_t row_bytes = (size_t(prm.vocab) + 16 / sizeof(T)) * sizeof(T);  // + alignment pad
  const bool cache = row_bytes + 2048 <= size_t(max_smem);
  const int64_t cap = int64_t(sms) * 32;
  const int grid = int(prm.rows < cap ? prm.rows : cap);
  return cache ? launch_typed<T, true>(prm, row_bytes, grid, stream) : launch_typed<T, false>(prm, 0, grid, stream);
}

// ------------------------------------------------------------------ the cluster kernel (sm_90)

constexpr int kClusterThreads = 256;
constexpr int kClusterBlocksPerSM = 4;  // what the launcher aims for (2 at least; float64: 2)
constexpr int kMaxCluster = 8;          // the portable cluster size

// A block's part of a row, read by the other blocks of its cluster through distributed shared
// memory.
template <class A>
struct Partial {
  A sm, sz;  // the student at T: maximum and sum of e^((s - sm) / T)
  A zs1;     // the student at 1: sum of e^(s - sm)
  A tm[kKDMaxTeachers], tz[kKDMaxTeachers];
  A kl;      // after sweep 2
  A target;  // s[y], in the block that holds y
  int holds_target;
};
template <class A>
__host__ __device__ constexpr size_t partial_bytes() {
  return (sizeof(Partial<A>) + 15) / 16 * 16;
}
// Dynamic shared memory: a slot per tensor (student, then the teachers), the Partial, the block
// reductions' scratch.
template <class T>
size_t cluster_smem_bytes(int teachers, int64_t slot_elems) {
  using A = typename Compute<T>::type;
  return size_t(1 + teachers) * size_t(slot_elems) * sizeof(T) + partial_bytes<A>() + 4 * 32 * sizeof(A);
}

// Rank r of a cluster of C blocks holds the row's 16-byte vectors [c0, c1) (nv C-th parts), rank 0
// also the scalar head before the first 16-byte boundary, rank C - 1 the scalar tail; in each slot,
// vector c at (c - c0) * VN, then the scalars. Sweep 1 copies the block's slices into its slots
// with cp.async (all in flight at once) and reduces them; the blocks then merge their Partials, in
// rank order (every block gets the same row statistics); sweep 2 reads the slots. Two cluster
// barriers per row: after the Partials, after the KL parts (rank 0 adds them up). Every thread
// reads only the slot elements it copied itself, so no block barrier guards the slots.
template <class T>
__global__ void __launch_bounds__(kClusterThreads, sizeof(T) == 8 ? 2 : kClusterBlocksPerSM)
    kd_cluster_kernel(const Params p) {
  using A = typename Compute<T>::type;
  constexpr int VN = Vec<T>::N;
  constexpr A kNegInf = A(-INFINITY);
  EDGEGEN_DYNAMIC_SHARED(smem_raw);
  const int K = p.use_kl ? p.num_teachers : 0;
  const int64_t se = p.slot_elems;
  T* const slot = reinterpret_cast<T*>(smem_raw);  // tensor k (0: student, 1 + j: teacher j) at k * se
  Partial<A>* const mine = reinterpret_cast<Partial<A>*>(smem_raw + size_t(1 + K) * size_t(se) * sizeof(T));
  A* const scratch = reinterpret_cast<A*>(reinterpret_cast<unsigned char*>(mine) + partial_bytes<A>());

  const unsigned C = unsigned(p.cluster), rank = blockIdx.x % C;
  const int64_t n = p.vocab;
  const A invT = A(p.invT);
  const int tid = threadIdx.x, nt = blockDim.x;
  for (int64_t row = blockIdx.x / C; row < p.rows; row += gridDim.x / C) {
    const T* s = static_cast<const T*>(p.student) + row * p.student_row_stride;
    T* g = p.grad ? static_cast<T*>(p.grad) + row * p.grad_row_stride : nullptr;
    const int64_t y = p.target[row];
    const T* t[kKDMaxTeachers];
#pragma unroll
    for (int k = 0; k < kKDMaxTeachers; ++k)
      t[k] = k < K ? static_cast<const T*>(p.teachers[k]) + row * p.teacher_row_strides[k] : s;
    // Every tensor shares the row's alignment (the launcher checked).
    const int64_t head = imin64((VN - misalign<T>(s)) % VN, n), nv = (n - head) / VN;
    const int64_t body_end = head + nv * VN;
    const int64_t c0 = nv * rank / C, c1 = nv * (rank + 1) / C, nloc = (c1 - c0) * VN;
    const int64_t nhead = rank == 0 ? head : 0, nscalar = nhead + (rank == C - 1 ? n - body_end : 0);
    auto scalar_at = [&](int64_t j) { return j < nhead ? j : body_end + (j - nhead); };

    if (y == p.ignore_index) {  // the same for every block of the cluster: no barrier
      if (g) {
        for (int64_t c = c0 + tid; c < c1; c += nt) *reinterpret_cast<uint4*>(g + head + c * VN) = make_uint4(0, 0, 0, 0);
        for (int64_t j = tid; j < nscalar; j += nt) g[scalar_at(j)] = from_c<T>(A(0));
      }
      if (rank == 0 && tid == 0) p.row_loss[row] = 0.0;
      continue;
    }

    // ---- sweep 1: the slices into shared memory, then maxima and normalisers
    for (int64_t c = c0 + tid; c < c1; c += nt) {
      const int64_t v = head + c * VN, at = (c - c0) * VN;
      cp_async_16(slot + at, s + v, 16);
#pragma unroll
      for (int k = 0; k < kKDMaxTeachers; ++k) {
        if (k >= K) break;
        cp_async_16(slot + (1 + k) * se + at, t[k] + v, 16);
      }
    }
    cp_async_commit();
    for (int64_t j = tid; j < nscalar; j += nt) {
      const int64_t v = scalar_at(j);
      slot[nloc + j] = s[v];
#pragma unroll
      for (int k = 0; k < kKDMaxTeachers; ++k) {
        if (k >= K) break;
        slot[(1 + k) * se + nloc + j] = t[k][v];
      }
    }
    cp_async_wait<0>();

    Sweep1<A> st;
    st.sT = Running<A>{kNegInf, A(0)};
    st.zs1 = A(0);
#pragma unroll
    for (int k = 0; k < kKDMaxTeachers; ++k) st.t[k] = Running<A>{kNegInf, A(0)};
    for (int64_t c = c0 + tid; c < c1; c += nt) {
      const int64_t v = head + c * VN, at = (c - c0) * VN;
      Vec<T> vs;
      vs.raw = *reinterpret_cast<const uint4*>(slot + at);
      sweep1_vector(st, vs, v, y, mine->target, K, invT, p.use_ce, p.tmode,
                    [&](int k) { return *reinterpret_cast<const uint4*>(slot + (1 + k) * se + at); });
    }
    for (int64_t j = tid; j < nscalar; j += nt) {
      const A x[1] = {as_c(slot[nloc + j])};
      if (scalar_at(j) == y) mine->target = x[0];
      add_student(st, x, invT, p.use_ce, p.tmode);
#pragma unroll
      for (int k = 0; k < kKDMaxTeachers; ++k) {
        if (k >= K) break;
        const A xt[1] = {as_c(slot[(1 + k) * se + nloc + j])};
        add_teacher(st.t[k], xt, invT);
      }
    }

    // This block's Partial, then every block's, merged in rank order.
    const A my_m = st.sT.m;
    const Running<A> bT = block_merge(st.sT, invT, scratch, scratch + 32);
    const A bz1 = p.use_ce ? block_sum(rescale(my_m, bT.m, A(1)) * st.zs1, scratch + 64) : A(0);
#pragma unroll
    for (int k = 0; k < kKDMaxTeachers; ++k) {
      if (k >= K) break;
      const Running<A> bt = block_merge(st.t[k], invT, scratch, scratch + 32);
      if (tid == 0) mine->tm[k] = bt.m, mine->tz[k] = bt.z;
    }
    if (tid == 0) {
      mine->sm = bT.m, mine->sz = bT.z, mine->zs1 = bz1;
      mine->holds_target = (y >= head + c0 * VN && y < head + c1 * VN) || y < nhead ||
                           (rank == C - 1 && y >= body_end);
    }
    cluster_sync();  // every block's Partial (and its target element) is visible from here on

    A ms = kNegInf;
    for (unsigned r = 0; r < C; ++r) ms = amax(ms, cluster_map(mine, r)->sm);
    A zsT = A(0), zs1 = A(0), s_target = A(0);
    for (unsigned r = 0; r < C; ++r) {
      const Partial<A>* q = cluster_map(mine, r);
      zsT += q->sz * rescale(q->sm, ms, invT);
      zs1 += q->zs1 * rescale(q->sm, ms, A(1));
      if (q->holds_target) s_target = q->target;
    }
    A mt[kKDMaxTeachers], zt[kKDMaxTeachers];
#pragma unroll
    for (int k = 0; k < kKDMaxTeachers; ++k) {
      mt[k] = A(0), zt[k] = A(1);
      if (k < K) {
        mt[k] = kNegInf, zt[k] = A(0);
        for (unsigned r = 0; r < C; ++r) mt[k] = amax(mt[k], cluster_map(mine, r)->tm[k]);
        for (unsigned r = 0; r < C; ++r) {
          const Partial<A>* q = cluster_map(mine, r);
          zt[k] += q->tz[k] * rescale(q->tm[k], mt[k], invT);
        }
      }
    }
    const RowStats<A> rs = row_stats(p, row, K, ms, zsT, zs1, mt, zt);

    // ---- sweep 2: KL terms and the gradient, from the slots
    A kl = A(0);
    for (int64_t c = c0 + tid; c < c1; c += nt) {
      const int64_t v = head + c * VN, at = (c - c0) * VN;
      Vec<T> vs, vt;
      vs.raw = *reinterpret_cast<const uint4*>(slot + at);
      vt.raw = K == 1 ? *reinterpret_cast<const uint4*>(slot + se + at) : make_uint4(0, 0, 0, 0);
      const uint4 gv = grad_vector(rs, vs, vt, [&](int k, int u) { return as_c(slot[(1 + k) * se + at + u]); }, v, y, kl);
      if (g) *reinterpret_cast<uint4*>(g + v) = gv;
    }
    for (int64_t j = tid; j < nscalar; j += nt) {
      const int64_t v = scalar_at(j);
      A tv[kKDMaxTeachers];
#pragma unroll
      for (int k = 0; k < kKDMaxTeachers; ++k) tv[k] = k < K ? as_c(slot[(1 + k) * se + nloc + j]) : A(0);
      const A gv = element_grad(rs, as_c(slot[nloc + j]), tv, v == y, kl);
      if (g) g[v] = from_c<T>(gv);
    }
    const A bkl = K > 0 ? block_sum(kl, scratch + 96) : A(0);
    if (tid == 0) mine->kl = bkl;
    cluster_sync();  // every block's KL part
    if (rank == 0 && tid == 0) {
      A loss = A(0);
      if (K > 0) {
        A kl_row = A(0);
        for (unsigned r = 0; r < C; ++r) kl_row += cluster_map(mine, r)->kl;
        loss += A(p.alpha * p.temperature * p.temperature) * (kl_row < A(0) ? A(0) : kl_row);  // rounding only
      }
      if (p.use_ce) loss += A(1.0 - p.alpha) * (lg(zs1) - (s_target - ms));
      p.row_loss[row] = double(loss);
    }
  }
  cluster_sync();  // no block exits while rank 0 may still read its KL part
}

// Same row alignment in every tensor: (base, row stride) alike modulo 16 bytes.
template <class T>
bool rows_share_alignment(const Params& p) {
  auto off = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16; };
  auto stride = [](int64_t elems) { return uint64_t(elems) * sizeof(T) % 16; };
  const uintptr_t o = off(p.student);
  const uint64_t st = stride(p.student_row_stride);
  for (int k = 0; k < p.num_teachers; ++k)
    if (off(p.teachers[k]) != o || stride(p.teacher_row_strides[k]) != st) return false;
  return !p.grad || (off(p.grad) == o && stride(p.grad_row_stride) == st);
}

// cudaOccupancyMaxActiveClusters, asked once per kernel, device and configuration (a call costs
// more than a small launch).
int active_clusters(const void* kernel, int device, int sms, int max_sm, size_t smem, int cluster,
                    const std::function<cudaError_t(int*)>& ask, int* n) {
  static std::mutex mu;
  static std::map<std::tuple<const void*, int, int, int, size_t, int>, int> known;
  const auto key = std::make_tuple(kernel, device, sms, max_sm, smem, cluster);
  std::lock_guard<std::mutex> lock(mu);
  const auto it = known.find(key);
  if (it != known.end()) return *n = it->second, 0;
  const cudaError_t e = ask(n);
  if (e == cudaSuccess) known[key] = *n;
  return int(e);
}

// Launches the cluster kernel when it applies (see kd_loss_cuda.h); `ran` says whether it did.
// Everything before the launch only decides: a query that fails leaves the row kernel to run (its
// error cleared); only the launch's own error is returned.
template <class T>
int launch_cluster_kernel(Params prm, cudaStream_t stream, bool& ran) {
  ran = false;
  auto kernel = kd_cluster_kernel<T>;
  int device = 0, major = 0, sms = 0, max_block = 0, max_sm = 0, reserved = 0;
  cudaFuncAttributes fa{};
  const bool asked = cudaGetDevice(&device) == cudaSuccess &&
                     cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess &&
                     cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) == cudaSuccess &&
                     cudaDeviceGetAttribute(&max_block, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) == cudaSuccess &&
                     cudaDeviceGetAttribute(&max_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device) == cudaSuccess &&
                     cudaDeviceGetAttribute(&reserved, cudaDevAttrReservedSharedMemoryPerBlock, device) == cudaSuccess &&
                     cudaFuncGetAttributes(&fa, kernel) == cudaSuccess;
  if (!asked) return (void)cudaGetLastError(), 0;
  // sm_90 hardware and sm_90 code: a build without it would run the compute_80 PTX, compiled for
  // the device when loaded, whose cluster operations trap.
  if (major < 9 || fa.ptxVersion < 90 || !rows_share_alignment<T>(prm)) return 0;
  constexpr int VN = Vec<T>::N;
  const int64_t vectors = (prm.vocab + VN - 1) / VN;
  auto slot_elems = [&](int c) { return ((vectors + c - 1) / c + 2) * VN; };
  int cluster = 0;
  size_t smem = 0;
  for (int per_sm : {kClusterBlocksPerSM, 2}) {  // the smallest cluster with this many blocks per SM
    for (int c = 1; c <= kMaxCluster && cluster == 0; c *= 2) {
      const size_t bytes = cluster_smem_bytes<T>(prm.num_teachers, slot_elems(c));
      if (bytes <= size_t(max_block) && (bytes + size_t(reserved)) * size_t(per_sm) <= size_t(max_sm))
        cluster = c, smem = bytes;
    }
    if (cluster != 0) break;
  }
  if (cluster == 0) return 0;
  if (smem > 48 * 1024 &&
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)) != cudaSuccess)
    return (void)cudaGetLastError(), 0;
  // One wave: the clusters loop over the rows, so a cluster that had to wait for a second wave
  // would hold its share of the rows until the end.
  int active = 0;
  const int asked_active = active_clusters(
      reinterpret_cast<const void*>(kernel), device, sms, max_sm, smem, cluster,
      [&](int* n) {
        return cudaError_t(EDGEGEN_MAX_ACTIVE_CLUSTERS(n, kernel, kClusterThreads, smem, unsigned(cluster)));
      },
      &active);
  if (asked_active != 0) return (void)cudaGetLastError(), 0;
  if (active <= 0) return 0;
  const int64_t clusters = std::min<int64_t>(prm.rows, active);
  prm.cluster = cluster;
  prm.slot_elems = slot_elems(cluster);
  ran = true;
  return int(EDGEGEN_LAUNCH_CLUSTER(kernel, dim3(unsigned(clusters * cluster)), dim3(kClusterThreads), smem, stream,
                                    unsigned(cluster), prm));
}

template <class T>
int launch_any(const Params& prm, cudaStream_t stream, KDCudaKernel which) {
  if (which == KDCudaKernel::Cluster) {
    bool ran = false;
    const int e = launch_cluster_kernel<T>(prm, stream, ran);
    if (ran || e != 0) return e;
  }
  return launch<T>(prm, stream);
}

}  // namespace

KDCudaKernel kd_loss_cuda_kernel_default() {
  const char* v = std::getenv("EDGEGEN_CUDA_KD_CLUSTER");
  return v != nullptr && v[0] == '1' && v[1] == '\0' ? KDCudaKernel::Cluster : KDCudaKernel::Rows;
}

int kd_loss_rows_cuda(const KDLossProblem& q, void* stream, KDCudaKernel kernel) {
  if (q.rows <= 0) return 0;
  if (q.num_teachers < 0 || q.num_teachers > kKDMaxTeachers) return int(cudaErrorInvalidValue);
  Params p{};
  p.rows = q.rows;
  p.vocab = q.vocab;
  p.student = q.student;
  p.student_row_stride = q.student_row_stride;
  p.use_kl = q.alpha > 0.0 && q.num_teachers > 0;
  p.use_ce = q.alpha < 1.0;
  p.num_teachers = p.use_kl ? q.num_teachers : 0;
  for (int k = 0; k < p.num_teachers; ++k) {
    p.teachers[k] = q.teachers[k];
    p.teacher_row_strides[k] = q.teacher_row_strides[k];
    p.teacher_weights[k] = q.teacher_weights[k];
  }
  p.target = q.target;
  p.ignore_index = q.ignore_index;
  p.temperature = q.temperature;
  p.alpha = q.alpha;
  p.invT = 1.0 / q.temperature;
  p.tmode = q.temperature == 1.0 ? 1 : (q.temperature == 2.0 ? 2 : 0);
  p.grad_scale = q.grad_scale;
  p.row_loss = q.row_loss;
  p.grad = q.grad;
  p.grad_row_stride = q.grad_row_stride;
  p.grad_row_scale = q.grad_row_scale;
  auto st = static_cast<cudaStream_t>(stream);
  switch (q.dtype) {
    case DType::F32: return launch_any<float>(p, st, kernel);
    case DType::BF16: return launch_any<__nv_bfloat16>(p, st, kernel);
    case DType::F16: return launch_any<__half>(p, st, kernel);
    case DType::F64: return launch_any<double>(p, st, kernel);
  }
  return int(cudaErrorInvalidValue);
}

}  // namespace edgegen::kernels::cuda
