// What the kernels of this folder spell differently when their device code runs on the host
// emulator (emulator/emulator.h; EDGEGEN_CUDA_EMULATE, tests only) instead of a GPU: kernel
// launches, the dynamic shared memory and the inline PTX of the tensor-core instructions.
#pragma once

#ifdef EDGEGEN_CUDA_EMULATE
#include "kernels/cuda/emulator/emulator.h"
// kernel<<<grid, block, smem, stream>>>(args...); `kernel` names no template arguments (take a
// pointer to the instantiation first: the macro would split them at the comma).
#define EDGEGEN_LAUNCH(kernel, grid, block, smem, stream, ...) \
  ::edgegen_cuda_emulator::launch(kernel, grid, block, smem, stream, __VA_ARGS__)
// extern __shared__ unsigned char name[] (16-byte aligned).
#define EDGEGEN_DYNAMIC_SHARED(name) unsigned char* const name = ::edgegen_cuda_emulator::dynamic_shared()
#else
#define EDGEGEN_LAUNCH(kernel, grid, block, smem, stream, ...) kernel<<<grid, block, smem, stream>>>(__VA_ARGS__)
#define EDGEGEN_DYNAMIC_SHARED(name) extern __shared__ __align__(16) unsigned char name[]
#endif
