// A host emulator of what the kernels of kernels/cuda use of CUDA, so that their device code runs,
// and is tested, on a machine without a GPU (csrc/tests/test_cuda_emulated.cpp). A correctness
// tool, not a fast one: every CUDA thread is a fiber, all of them run in turn on the calling
// thread.
//
// A .cu file compiled as C++ with EDGEGEN_CUDA_EMULATE defined and this folder first on the include
// path (its cuda_runtime.h, cuda_bf16.h and cuda_fp16.h stand in for the toolkit's) launches through
// EDGEGEN_LAUNCH or EDGEGEN_LAUNCH_CLUSTER (kernels/cuda/launch.h) into launch() or launch_cluster()
// below, which run the grid one cluster after the other (a plain launch: clusters of one block).
// The threads of a cluster's blocks switch only at __syncthreads, at the cluster barrier and at the
// warp-collective operations (__shfl_xor_sync; mma.sync m16n8k16 and ldmatrix .x4 .trans with the
// fragment layouts of the PTX ISA); between those, they run one at a time in the order
// set_schedule picks (index order, reverse, or lowest runnable first, over the cluster's blocks
// in rank order), so a missing __syncthreads shows up as a thread reading shared memory another one
// has not written yet, and a missing cluster barrier as a block reading another block's.
// Dynamic shared memory is filled with 0xff bytes (NaN in every float type) at each block's start,
// and again when all its threads have exited (a block of a cluster reading it later finds NaN);
// static __shared__ variables are function statics and keep the previous block's values (a
// missing barrier around them reads stale, not poisoned, data), and the blocks of a cluster share
// them: kernels launched as clusters keep their shared state in dynamic shared memory.
//
// A fault ends the launch, which then returns cudaErrorLaunchFailure, and last_fault() says what
// happened: a __syncthreads that not every live thread of the block reaches (a deadlock), that
// they reach at different calls (source lines: CUDA asks a conditional __syncthreads to go the
// same way in the whole block) or that
// comes after a thread of the block exited; a warp-collective operation that not all 32 lanes
// reach, or that they reach at different operations, or with a partial mask; an ldmatrix address
// outside the block's dynamic shared memory or not 16-byte aligned, a cp.async likewise or a thread
// that exits with cp.async copies it never waited for; a cluster barrier that not every thread of
// the cluster reaches, or that comes after a thread of the cluster exited; a cluster_map of an
// address outside the block's dynamic shared memory, to a rank outside the cluster or into a block
// whose threads all exited. Launch errors as CUDA gives them: a block of more than 1024 threads, an
// empty grid or one beyond the device's limits (x < 2^31, y and z <= 65,535 unless a test sets
// others; cudaErrorInvalidConfiguration), more dynamic shared memory than 48 KiB without
// cudaFuncSetAttribute allowing it, or than the device has (cudaErrorInvalidValue), a cluster of
// more than 8 blocks or not dividing the grid (cudaErrorInvalidClusterSize); a cluster launch on a
// device below compute capability 9 gives cudaErrorNotSupported (an assumption: the kernels never
// try it). Device attributes: an H100's (132 SMs, compute capability 9, 227 KiB of shared memory
// per block, 228 KiB per SM) unless a test sets others.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "../../dtypes.h"

// ------------------------------------------------------------------ CUDA's vector types and runtime
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
  unsigned x, y, z;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }
struct alignas(8) float2 {
  float x, y;
};
inline float2 make_float2(float x, float y) { return float2{x, y}; }

struct CUstream_st;
using cudaStream_t = CUstream_st*;
enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchFailure = 719,
  cudaErrorNotSupported = 801,
  cudaErrorInvalidClusterSize = 912,
};
enum cudaFuncAttribute : int { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaDeviceAttr : int {
  cudaDevAttrMaxGridDimY = 6,
  cudaDevAttrMaxGridDimZ = 7,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrMaxSharedMemoryPerMultiprocessor = 81,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
  cudaDevAttrReservedSharedMemoryPerBlock = 111,
};
struct cudaFuncAttributes {
  int ptxVersion = 0;  // the virtual architecture of the code loaded for the device, e.g. 90
};

const char* cudaGetErrorString(cudaError_t error);
cudaError_t cudaGetLastError();
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);

// ------------------------------------------------------------------------------- 16-bit floats
struct __nv_bfloat16 {
  uint16_t x;
  operator float() const { return edgegen::kernels::to_float(edgegen::kernels::bf16_t{x}); }
};
struct __nv_bfloat162 {
  __nv_bfloat16 x, y;
};
struct __half {
  uint16_t x;
  operator float() const { return edgegen::kernels::to_float(edgegen::kernels::fp16_t{x}); }
};
struct __half2 {
  __half x, y;
};
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16{edgegen::kernels::to_bf16(f).bits}; }
inline float __bfloat162float(__nv_bfloat16 h) { return float(h); }
inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) {
  return __nv_bfloat162{__float2bfloat16_rn(lo), __float2bfloat16_rn(hi)};
}
inline __half __float2half_rn(float f) { return __half{edgegen::kernels::to_fp16(f).bits}; }
inline float __half2float(__half h) { return float(h); }
inline __half2 __floats2half2_rn(float lo, float hi) { return __half2{__float2half_rn(lo), __float2half_rn(hi)}; }

// ---------------------------------------------------------------------------------- the emulator
namespace edgegen_cuda_emulator {

// The order threads run in between synchronisations (every thread, the one that completes a
// barrier or warp operation included, gives way there): sweeps in index order or in reverse, each
// thread until it next waits; or Greedy: always the lowest-index thread that can run, so the first
// warp runs to the next __syncthreads before any other warp starts (a missing barrier between one
// warp's writes and another's reads, or a copy into a buffer other warps still read, shows up).
enum class Schedule { Forward, Reverse, Greedy };
void set_schedule(Schedule s);
// Back to the defaults: forward schedule, copies landing at the wait, an H100, no fault, zero
// counters, no cudaFuncSetAttribute limits recorded.
void reset();

struct Device {
  int sms = 132;
  int max_shared_per_block = 227 * 1024;  // the opt-in limit (cudaFuncSetAttribute)
  int compute_major = 9;
  int max_shared_per_sm = 228 * 1024;
  int reserved_shared_per_block = 1024;
  int ptx_version = 90;  // what cudaFuncGetAttributes reports (80: a build without sm_90 code)
  int max_grid_y = 65535, max_grid_z = 65535;  // CUDA's; a test may lower them to exercise launch splitting
};
void set_device(const Device& d);
const Device& device();

// What ended the last faulting launch ("" if none since clear_fault()).
const std::string& last_fault();
void clear_fault();

// Counts since the last reset, for tests that check what ran.
struct Counters {
  int64_t launches = 0, blocks = 0, syncthreads = 0, collectives = 0, async_copies = 0;
  int64_t max_dynamic_shared_bytes = 0;  // the most any launch asked for
  int64_t cluster_launches = 0, cluster_syncs = 0;  // launches with clusters of more than one block
  int64_t max_cluster = 0;                          // the largest cluster launched
};
const Counters& counters();
void reset_counters();

struct Thread {
  uint3 thread_idx, block_idx;
  dim3 block_dim, grid_dim;
};
const Thread& current();

// `file` and `line`: the call's source position (threads of a block must all be at the same call).
void syncthreads(const char* file, int line);
unsigned char* dynamic_shared();

// Thread-block clusters (sm_90): the barrier every thread of the cluster arrives at and waits for
// (barrier.cluster.arrive + wait .aligned: the lanes of a warp at the same call, `file`:`line`),
// and the address of `p` (in this block's dynamic shared memory) in the block of cluster rank
// `rank` (mapa; ranks run along x: blockIdx.x % cluster size).
void cluster_sync(const char* file, int line);
const void* cluster_map(const void* p, unsigned rank);

// Warp-collective operations (all 32 lanes, full mask).
enum class Op : int { Shfl = 1, MmaBf16, MmaF16, LdmatrixX4Trans };
constexpr size_t kSlotBytes = 32;
// Every lane deposits `bytes` of `in` and receives all 32 lanes' deposits in `all`.
void warp_exchange(Op op, const void* in, size_t bytes, unsigned char (*all)[kSlotBytes]);
unsigned lane_id();

void check_shfl(unsigned mask, int width);  // faults unless a full warp shuffles

template <class T>
T shfl_xor(unsigned mask, T v, int lane_mask, int width) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= kSlotBytes, "value too large for a shuffle");
  check_shfl(mask, width);
  unsigned char all[32][kSlotBytes];
  warp_exchange(Op::Shfl, &v, sizeof(T), all);
  T r;
  std::memcpy(&r, all[(lane_id() ^ unsigned(lane_mask)) & 31u], sizeof(T));
  return r;
}

// D = A B + C for one m16n8k16 tile (f32 accumulators), fragments as mma.sync holds them.
void mma_m16n8k16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1, bool bf16);
// ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16: this lane's row address.
void ldmatrix_x4_trans(uint32_t r[4], const void* row);

// cp.async.cg.shared.global of 16 bytes (src_bytes of them read, the rest zero), commit_group and
// wait_group (all but the newest `pending` committed groups complete). A copy may land anywhere
// between its issue and the wait; the emulator takes either end (set_copy_landing): at the wait,
// reading the destination earlier finds the old bytes (a missing wait or barrier before a read);
// at the issue, it overwrites what other threads may still be reading (a missing barrier before
// the copy).
enum class CopyLanding { AtWait, AtIssue };
void set_copy_landing(CopyLanding when);
void cp_async_16(void* dst_shared, const void* src_global, int src_bytes);
void cp_async_commit();
void cp_async_wait(int pending);

// Runs body() as every thread of every block of the grid, in clusters of `cluster` blocks along x
// (see the file comment). Returns a cudaError_t.
int run_grid(const void* kernel, dim3 grid, dim3 block, size_t dynamic_shared_bytes, unsigned cluster,
             const std::function<void()>& body);
int set_max_dynamic_shared(const void* kernel, int bytes);
// cudaOccupancyMaxActiveClusters for blocks of `threads` threads and `smem` bytes of dynamic shared
// memory: per SM as many blocks as its shared memory (less what is reserved per block) and 2048
// threads allow, the SMs' blocks grouped into clusters (registers, launch bounds and GPC
// boundaries not modelled).
int max_active_clusters(int* n, unsigned threads, size_t smem, unsigned cluster);

template <class... P, class... A>
int launch_cluster(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t, unsigned cluster,
                   A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "a kernel launch passes every parameter");
  const std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);  // by value, as a launch does
  return run_grid(reinterpret_cast<const void*>(kernel), grid, block, smem, cluster,
                  [&] { std::apply(kernel, params); });
}
template <class... P, class... A>
int launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, A&&... args) {
  return launch_cluster(kernel, grid, block, smem, stream, 1u, std::forward<A>(args)...);
}

}  // namespace edgegen_cuda_emulator

template <class F>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, F*) {
  attr->ptxVersion = edgegen_cuda_emulator::device().ptx_version;
  return cudaSuccess;
}
template <class F>
cudaError_t cudaFuncSetAttribute(F* kernel, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorInvalidValue;
  return cudaError_t(edgegen_cuda_emulator::set_max_dynamic_shared(reinterpret_cast<const void*>(kernel), value));
}

// ------------------------------------------------------------------------ device-code spellings
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __shared__ static  // one copy per kernel instantiation: blocks run one at a time
#define threadIdx (::edgegen_cuda_emulator::current().thread_idx)
#define blockIdx (::edgegen_cuda_emulator::current().block_idx)
#define blockDim (::edgegen_cuda_emulator::current().block_dim)
#define gridDim (::edgegen_cuda_emulator::current().grid_dim)

// (The default arguments take the caller's source position.)
inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  edgegen_cuda_emulator::syncthreads(file, line);
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return edgegen_cuda_emulator::shfl_xor(mask, v, lane_mask, width);
}
template <class T>
inline T __ldg(const T* p) {
  return *p;
}
float __expf(float x);
