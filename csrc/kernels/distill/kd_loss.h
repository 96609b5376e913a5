// Fused knowledge-distillation loss over rows of logits (torch-free).
//
// For each row i with target y_i != ignore_index:
//   loss_i = alpha T^2 KL(p_t || softmax(s_i / T)) + (1 - alpha) CE(softmax(s_i), y_i)
// where p_t = sum_k w_k softmax(t_{k,i} / T) (one teacher: w = 1). Ignored rows give loss 0 and
// gradient 0. Optionally writes d loss_i / d s_i, times a per-row scale, into `grad`; `grad` may
// alias `student` (the fused-linear path overwrites its logits chunk in place).
// No [rows, vocab] intermediate is allocated: with one teacher each row of logits is read once
// (and per-thread rows of exponentials swept again for the gradient), except that at a
// temperature other than 1 and 2 with a CE term the gradient sweep reads the student row again.
#pragma once
#include <cstdint>

#include "../dtypes.h"

#include "kernels/cpu_features.h"

namespace edgegen::kernels {

constexpr int kKDMaxTeachers = 8;

struct KDLossProblem {
  int64_t rows = 0;
  int64_t vocab = 0;
  DType dtype = DType::F32;  // of student, teachers and grad alike (F64: scalar path only)
  const void* student = nullptr;
  int64_t student_row_stride = 0;  // elements; the vocabulary dimension is contiguous
  int num_teachers = 0;            // 1 .. kKDMaxTeachers
  const void* const* teachers = nullptr;
  const int64_t* teacher_row_strides = nullptr;
  const double* teacher_weights = nullptr;  // >= 0, summing to 1
  const int64_t* target = nullptr;         // [rows], each in [0, vocab) or == ignore_index
  int64_t ignore_index = -100;
  double temperature = 2.0;  // > 0
  double alpha = 0.5;        // in [0, 1]; a term whose weight is 0 is skipped, not multiplied
  double* row_loss = nullptr;  // [rows], out
  void* grad = nullptr;       // [rows, vocab] out or nullptr
  int64_t grad_row_stride = 0;
  double grad_scale = 1.0;                 // every row's gradient is multiplied by this ...
  const double* grad_row_scale = nullptr;  // ... and by this row's entry, when not nullptr
  int num_threads = 1;
};

// Runs the widest kernel this CPU supports. Preconditions are the caller's (the ATen glue checks
// them); the kernel itself never allocates.
void kd_loss_rows(const KDLossProblem& p);
// The path kd_loss_rows takes now (avx2 or scalar).
Isa kd_loss_isa();

// Per-ISA entry points, for tests that compare them.
void kd_loss_rows_scalar(const KDLossProblem& p);
void kd_loss_rows_avx2(const KDLossProblem& p);    // only if the CPU supports AVX2+FMA+F16C
void kd_loss_rows_avx512(const KDLossProblem& p);  // only if the CPU supports AVX-512 F/BW/DQ/VL
// Each path's exponential (for x <= 0) over an array, for tests; coarse: the degree-4 one used
// for 16-bit logits (the scalar path has one exponential, std::exp).
void kd_exp_nonpos_scalar(const float* x, float* y, int64_t n, bool coarse);
void kd_exp_nonpos_avx2(const float* x, float* y, int64_t n, bool coarse);
void kd_exp_nonpos_avx512(const float* x, float* y, int64_t n, bool coarse);

}  // namespace edgegen::kernels
