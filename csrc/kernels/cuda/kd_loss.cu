// CUDA twin of the KD-loss row kernel (see kd_loss_cuda.h for the contract).
//
// Per row, with ds = s - max(s), dt_k = t_k - max(t_k):
//   sweep 1  per thread: running maxima with rescaled sums ZsT = sum e^(ds/T), Zs1 = sum e^ds,
//            Zt_k = sum e^(dt_k/T); the student element is copied to shared memory when the row
//            fits, and s[y] is picked up by whichever thread meets it; one block reduction.
//   sweep 2  p = sum_k w_k e^(dt_k/T) / Zt_k, q_T = e^(ds/T) / ZsT, q_1 = e^ds / Zs1;
//            KL += p (ln p - ln q_T) where p > 0; grad = scale [alpha T (q_T - p) + (1 - alpha)
//            (q_1 - onehot(y))], written once. The teacher rows are read a second time; the
//            student comes from shared memory (or a second read when the row does not fit).
// Every element is read by the thread that writes its gradient, so grad may alias student.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "kernels/cuda/kd_loss_cuda.h"
#include "kernels/cuda/launch.h"

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
  for (int u = 1; u < N; ++u) mx = x[u] > mx ? x[u] : mx;
  if (mx > st.sT.m) {
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
  for (int u = 1; u < N; ++u) mx = x[u] > mx ? x[u] : mx;
  if (mx > r.m) {
    r.z *= rescale(r.m, mx, invT);
    r.m = mx;
  }
  if (r.m == A(-INFINITY)) return;
#pragma unroll
  for (int u = 0; u < N; ++u) r.z += ex((x[u] - r.m) * invT);
}

// What sweep 2 needs of a row, after the reductions.
template <class A>
struct RowStats {
  A ms, invT, inv_zsT, log_zsT, inv_zs1, log_zt0, inv_zt0;
  A m_t[kKDMaxTeachers], wz[kKDMaxTeachers];
  A ca, cc;
  int K, use_ce, tmode;
};

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
    if (pt > A(0)) kl += pt * (logpt - (ds * rs.invT - rs.log_zsT));
    gv += rs.ca * (eT * rs.inv_zsT - pt);
  }
  if (rs.use_ce) {
    const A e1 = rs.tmode == 1 ? eT : (rs.tmode == 2 ? eT * eT : ex(ds));
    gv += rs.cc * (e1 * rs.inv_zs1 - (is_target ? A(1) : A(0)));
  }
  return gv;
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
      Vec<T> vt;
      if (K >= 1) vt.raw = __ldg(reinterpret_cast<const uint4*>(t[0] + v));  // both loads in flight
      if (kCache) *reinterpret_cast<uint4*>(cache + v + pad) = vs.raw;
      A x[VN];
#pragma unroll
      for (int u = 0; u < VN; ++u) x[u] = as_c(vs.x[u]);
#pragma unroll
      for (int u = 0; u < VN; ++u)
        if (v + u == y) s_target = x[u];
      add_student(st, x, invT, p.use_ce, p.tmode);
#pragma unroll
      for (int k = 0; k < kKDMaxTeachers; ++k) {
        if (k >= K) break;
        if (k > 0) vt.raw = __ldg(reinterpret_cast<const uint4*>(t[k] + v));
#pragma unroll
        for (int u = 0; u < VN; ++u) x[u] = as_c(vt.x[u]);
        add_teacher(st.t[k], x, invT);
      }
    }

    // The student's pair at T, then Zs1 rescaled to the common maximum; then every teacher's.
    const A my_m = st.sT.m;
    const Running<A> sT = block_merge(st.sT, invT, scratch[0], scratch[1]);
    A zs1_total = A(0);
    if (p.use_ce) zs1_total = block_sum(rescale(my_m, sT.m, A(1)) * st.zs1, scratch[2]);
    RowStats<A> rs;
#pragma unroll
    for (int k = 0; k < kKDMaxTeachers; ++k) {
      const Running<A> tk = k < K ? block_merge(st.t[k], invT, scratch[0], scratch[1]) : Running<A>{A(0), A(1)};
      rs.m_t[k] = tk.m;
      rs.wz[k] = k < K ? A(p.teacher_weights[k]) / tk.z : A(0);
      if (k == 0) {
        rs.inv_zt0 = A(1) / tk.z;
        rs.log_zt0 = lg(tk.z);
      }
    }
    __syncthreads();  // s_target and the cache are visible from here on
    rs.ms = sT.m;
    rs.invT = invT;
    rs.inv_zsT = A(1) / sT.z;
    rs.log_zsT = lg(sT.z);
    rs.inv_zs1 = p.use_ce ? A(1) / zs1_total : A(0);
    const A scale_row = A(p.grad_scale) * (p.grad_row_scale ? A(p.grad_row_scale[row]) : A(1));
    rs.ca = scale_row * A(p.alpha * p.temperature);
    rs.cc = scale_row * A(1.0 - p.alpha);
    rs.K = K;
    rs.use_ce = p.use_ce;
    rs.tmode = p.tmode;

    // ---- sweep 2: KL terms and the gradient
    A kl = A(0);
    auto scalar2 = [&](int64_t v) {
      const A sv = kCache ? as_c(cache[v + pad]) : A(load_c(s + v));
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
      Vec<T> vs, vg;
      vs.raw = kCache ? *reinterpret_cast<const uint4*>(cache + v + pad) : *reinterpret_cast<const uint4*>(s + v);
      if (K == 1) {
        Vec<T> vt;
        vt.raw = __ldg(reinterpret_cast<const uint4*>(t[0] + v));
#pragma unroll
        for (int u = 0; u < VN; ++u) {
          const A tv[1] = {as_c(vt.x[u])};
          vg.x[u] = from_c<T>(element_grad(rs, as_c(vs.x[u]), tv, v + u == y, kl));
        }
      } else {
#pragma unroll
        for (int u = 0; u < VN; ++u) {
          A tv[kKDMaxTeachers];
#pragma unroll
          for (int k = 0; k < kKDMaxTeachers; ++k) tv[k] = k < K ? A(load_c(t[k] + v + u)) : A(0);
          vg.x[u] = from_c<T>(element_grad(rs, as_c(vs.x[u]), tv, v + u == y, kl));
        }
      }
      if (g) *reinterpret_cast<uint4*>(g + v) = vg.raw;
    }
    A loss = A(0);
    if (K > 0) loss += A(p.alpha * p.temperature * p.temperature) * block_sum(kl, scratch[3]);
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

}  // namespace

int kd_loss_rows_cuda(const KDLossProblem& q, void* stream) {
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
    case DType::F32: return launch<float>(p, st);
    case DType::BF16: return launch<__nv_bfloat16>(p, st);
    case DType::F16: return launch<__half>(p, st);
    case DType::F64: return launch<double>(p, st);
  }
  return int(cudaErrorInvalidValue);
}

}  // namespace edgegen::kernels::cuda
