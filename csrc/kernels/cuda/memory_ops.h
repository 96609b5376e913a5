// Device-side memory operations the kernels of this folder share, each with its host-emulator twin
// (EDGEGEN_CUDA_EMULATE, emulator/emulator.h): asynchronous 16-byte copies into shared memory
// (sm_80 cp.async) and the shared memory of a thread-block cluster (sm_90 barrier.cluster, mapa).
// Include after cuda_runtime.h and kernels/cuda/launch.h.
#pragma once

#include <cstdint>

namespace edgegen::kernels::cuda {

// 16-byte copy from global to shared memory without waiting: src_bytes of the 16 read, the rest
// zero-filled; committed in groups and waited for by the number of groups that may still be in
// flight. A thread may read what it copied itself after the wait; other threads' copies only after
// a barrier too.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, int src_bytes) {
#ifdef EDGEGEN_CUDA_EMULATE
  ::edgegen_cuda_emulator::cp_async_16(dst, src, src_bytes);
#else
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(src), "r"(src_bytes) : "memory");
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#ifdef EDGEGEN_CUDA_EMULATE
  ::edgegen_cuda_emulator::cp_async_commit();
#else
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
#ifdef EDGEGEN_CUDA_EMULATE
  ::edgegen_cuda_emulator::cp_async_wait(kPending);
#else
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
#endif
}

// Every thread of the cluster arrives and waits (release / acquire: shared and global writes
// before it are visible to the whole cluster after it); all threads of a warp at the same barrier
// (.aligned; the emulator checks it by source line). sm_90 only: compiled for an
// older architecture it traps (a launcher checks the device and the loaded code's PTX version,
// cudaFuncGetAttributes, before it starts a cluster kernel).
#ifdef EDGEGEN_CUDA_EMULATE
inline void cluster_sync(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  ::edgegen_cuda_emulator::cluster_sync(file, line);  // (the caller's source position)
}
#else
__device__ __forceinline__ void cluster_sync() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
  __trap();
#else
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
#endif
}
#endif

// The address of `p` (this block's shared memory) in the block of cluster rank `rank` (distributed
// shared memory, read with ordinary loads). That block must not have exited: a kernel ends with a
// cluster_sync after its last such read.
template <class T>
__device__ __forceinline__ const T* cluster_map(const T* p, unsigned rank) {
#ifdef EDGEGEN_CUDA_EMULATE
  return static_cast<const T*>(::edgegen_cuda_emulator::cluster_map(p, rank));
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
  __trap();
  return p;
#else
  uint64_t out;
  asm volatile("mapa.u64 %0, %1, %2;\n" : "=l"(out) : "l"(reinterpret_cast<uint64_t>(p)), "r"(rank));
  return reinterpret_cast<const T*>(out);
#endif
}

}  // namespace edgegen::kernels::cuda
