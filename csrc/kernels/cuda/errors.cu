#include <cuda_runtime.h>

#include "kernels/cuda/errors.h"

namespace edgegen::kernels::cuda {

const char* cuda_error_text(int error) { return cudaGetErrorString(static_cast<cudaError_t>(error)); }

}  // namespace edgegen::kernels::cuda
