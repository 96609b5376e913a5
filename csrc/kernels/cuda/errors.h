// Error text of the CUDA kernels' launch results (torch-free; no CUDA header needed).
#pragma once

namespace edgegen::kernels::cuda {

// The text of a cudaError_t that a launcher returned as an int.
const char* cuda_error_text(int error);

}  // namespace edgegen::kernels::cuda
