// Fused knowledge-distillation loss over rows of logits on a CUDA GPU (torch-free; including this
// needs no CUDA header). Same problem description, loss, gradient and conventions as the CPU
// kernel (kernels/distill/kd_loss.h), with device pointers: student, teachers[k], target,
// row_loss, grad and grad_row_scale point to GPU memory, while the small arrays teachers,
// teacher_row_strides and teacher_weights themselves are host memory (copied into the launch).
// num_threads is ignored.
//
// One thread block per row, two sweeps: (1) running maxima and normalisers of the student (at T
// and at 1) and of every teacher, the student row kept in shared memory when it fits; (2) the KL
// terms and the gradient, written once. Nothing of size [rows, vocab] but the gradient exists.
// float32/bfloat16/float16 compute in float32, float64 in float64.
#pragma once
#include "../distill/kd_loss.h"

namespace edgegen::kernels::cuda {

// Launches on `stream` (a cudaStream_t). Returns 0 or the cudaError_t of the launch (text:
// cuda_error_text in errors.h).
int kd_loss_rows_cuda(const KDLossProblem& p, void* stream);

}  // namespace edgegen::kernels::cuda
