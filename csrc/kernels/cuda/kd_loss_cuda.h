// Fused knowledge-distillation loss over rows of logits on a CUDA GPU (torch-free; including this
// needs no CUDA header). Same problem description, loss, gradient and conventions as the CPU
// kernel (kernels/distill/kd_loss.h), with device pointers: student, teachers[k], target,
// row_loss, grad and grad_row_scale point to GPU memory, while the small arrays teachers,
// teacher_row_strides and teacher_weights themselves are host memory (copied into the launch).
// num_threads is ignored.
//
// Two kernels, the same two sweeps: (1) running maxima and normalisers of the student (at T and
// at 1) and of every teacher; (2) the KL terms and the gradient, written once. Nothing of size
// [rows, vocab] but the gradient exists. float32/bfloat16/float16 compute in float32, float64 in
// float64.
//  - Rows: one block of 1024 threads per row, the student row kept in shared memory when it fits
//    (the teachers are read twice).
//  - Cluster (sm_90): a row split over the blocks of a thread-block cluster (up to 8 blocks of 256
//    threads, several per SM), student and teacher slices copied into shared memory with cp.async
//    in sweep 1 and read from there in sweep 2, so each input byte is read from memory once; the
//    blocks merge their partial maxima and sums through distributed shared memory. Taken when the
//    device has compute capability >= 9 and the build sm_90 code for it, student, teachers and
//    gradient share their 16-byte alignment in every row, the row's slices fit 8 blocks' shared
//    memory with at least two blocks per SM, and the device can place such a cluster; otherwise
//    (a failed query included) the Rows kernel runs.
#pragma once
#include "../distill/kd_loss.h"

namespace edgegen::kernels::cuda {

enum class KDCudaKernel { Rows, Cluster };

// What kd_loss_rows_cuda runs unless told: Cluster if EDGEGEN_CUDA_KD_CLUSTER=1 (read per call;
// opt-in until a GPU has timed it against Rows), else Rows.
KDCudaKernel kd_loss_cuda_kernel_default();

// Launches on `stream` (a cudaStream_t). Returns 0 or the cudaError_t of the launch (text:
// cuda_error_text in errors.h).
int kd_loss_rows_cuda(const KDLossProblem& p, void* stream, KDCudaKernel kernel = kd_loss_cuda_kernel_default());

}  // namespace edgegen::kernels::cuda
