// What the kernels of this folder spell differently when their device code runs on the host
// emulator (emulator/emulator.h; EDGEGEN_CUDA_EMULATE, tests only) instead of a GPU: kernel
// launches and the dynamic shared memory (the inline PTX has its twins where it is used, and in
// memory_ops.h).
#pragma once

#ifdef EDGEGEN_CUDA_EMULATE
#include "kernels/cuda/emulator/emulator.h"
// kernel<<<grid, block, smem, stream>>>(args...); `kernel` names no template arguments (take a
// pointer to the instantiation first: the macro would split them at the comma).
#define EDGEGEN_LAUNCH(kernel, grid, block, smem, stream, ...) \
  ::edgegen_cuda_emulator::launch(kernel, grid, block, smem, stream, __VA_ARGS__)
// The same in clusters of `cluster` blocks along x (sm_90; grid.x a multiple of it, at most 8).
#define EDGEGEN_LAUNCH_CLUSTER(kernel, grid, block, smem, stream, cluster, ...) \
  ::edgegen_cuda_emulator::launch_cluster(kernel, grid, block, smem, stream, cluster, __VA_ARGS__)
// How many clusters of `cluster` blocks of `block` threads with `smem` bytes of dynamic shared
// memory the device runs at once (cudaOccupancyMaxActiveClusters), into *n; a cudaError_t.
#define EDGEGEN_MAX_ACTIVE_CLUSTERS(n, kernel, block, smem, cluster) \
  ::edgegen_cuda_emulator::max_active_clusters(n, block, smem, cluster)
// extern __shared__ unsigned char name[] (16-byte aligned).
#define EDGEGEN_DYNAMIC_SHARED(name) unsigned char* const name = ::edgegen_cuda_emulator::dynamic_shared()
#else
#include <cuda_runtime.h>

#include <utility>
namespace edgegen::kernels::cuda {
// A launch configuration with clusters of `cluster` blocks along x (`attr` holds the attribute).
inline cudaLaunchConfig_t cluster_config(dim3 grid, dim3 block, size_t smem, cudaStream_t stream, unsigned cluster,
                                         cudaLaunchAttribute& attr) {
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = cluster;
  attr.val.clusterDim.y = 1;
  attr.val.clusterDim.z = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = &attr;
  config.numAttrs = 1;
  return config;
}
template <class... P, class... A>
cudaError_t launch_cluster(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                           unsigned cluster, A&&... args) {
  cudaLaunchAttribute attr;
  const cudaLaunchConfig_t config = cluster_config(grid, block, smem, stream, cluster, attr);
  return cudaLaunchKernelEx(&config, kernel, std::forward<A>(args)...);
}
template <class K>
cudaError_t max_active_clusters(int* n, K* kernel, unsigned block, size_t smem, unsigned cluster) {
  cudaLaunchAttribute attr;
  const cudaLaunchConfig_t config = cluster_config(dim3(cluster), dim3(block), smem, nullptr, cluster, attr);
  return cudaOccupancyMaxActiveClusters(n, kernel, &config);
}
}  // namespace edgegen::kernels::cuda
#define EDGEGEN_LAUNCH_CLUSTER(kernel, grid, block, smem, stream, cluster, ...) \
  ::edgegen::kernels::cuda::launch_cluster(kernel, grid, block, smem, stream, cluster, __VA_ARGS__)
#define EDGEGEN_MAX_ACTIVE_CLUSTERS(n, kernel, block, smem, cluster) \
  ::edgegen::kernels::cuda::max_active_clusters(n, kernel, block, smem, cluster)
#define EDGEGEN_LAUNCH(kernel, grid, block, smem, stream, ...) kernel<<<grid, block, smem, stream>>>(__VA_ARGS__)
#define EDGEGEN_DYNAMIC_SHARED(name) extern __shared__ __align__(16) unsigned char name[]
#endif
