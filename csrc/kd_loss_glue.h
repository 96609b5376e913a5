// The KD-loss ops' glue, written once for every device: argument checks, row chunks of the
// fused-linear form (GEMMs through ATen: BLAS on CPU, cuBLAS on CUDA), reductions. A device
// supplies a policy `Dev` with: check(tensor, name) (device), dtype(tensor, name) (kernel element
// type), target(target, lead, vocab, ignore_index) -> (contiguous target, non-ignored rows),
// empty_out(sizes, options), run(KDLossProblem) (the row kernel) and reduce(row_loss, reduction,
// valid, lead, dtype).
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "kernels/distill/kd_loss.h"

namespace edgegen::kd_glue {

namespace K = edgegen::kernels;

enum class Reduction { Mean, Sum, None };

inline Reduction parse_reduction(c10::string_view r) {
  if (r == "mean") return Reduction::Mean;
  if (r == "sum") return Reduction::Sum;
  if (r == "none") return Reduction::None;
  TORCH_CHECK_VALUE(false, "reduction: expected 'mean', 'sum' or 'none', got '", std::string(r), "'");
}

inline void check_scalars(double temperature, double alpha) {
  // Below 0.01 the softened distributions are one-hot in all but name and logits / T overflow
  // float32 (inf - inf in the log-sum-exp): a NaN loss, so refused.
  TORCH_CHECK_VALUE(std::isfinite(temperature) && temperature >= 0.01,
                    "temperature: expected a finite value >= 0.01, got ", temperature);
  TORCH_CHECK_VALUE(alpha >= 0.0 && alpha <= 1.0, "alpha: expected a value in [0, 1], got ", alpha);
}

// Normalised mixture weights: empty means uniform.
inline std::vector<double> mixture_weights(at::ArrayRef<double> w, size_t k) {
  std::vector<double> out(k, 1.0 / double(k));
  if (w.empty()) return out;
  TORCH_CHECK_VALUE(w.size() == k, "teacher_weights: expected ", k,
                    " weights (one per teacher) or none, got ", w.size());
  double total = 0.0;
  for (size_t i = 0; i < k; ++i) {
    TORCH_CHECK_VALUE(std::isfinite(w[i]) && w[i] >= 0.0,
                      "teacher_weights: expected finite values >= 0, got ", w[i], " at ", i);
    total += w[i];
  }
  TORCH_CHECK_VALUE(total > 0.0, "teacher_weights: expected a positive sum, got ", total);
  for (size_t i = 0; i < k; ++i) out[i] = w[i] / total;
  return out;
}

// The loss is float32 for 16/32-bit inputs (fp32 accumulation) and float64 for float64 ones.
inline at::ScalarType loss_dtype(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

inline double grad_scale_for(Reduction red, int64_t valid) {
  return red == Reduction::Mean ? (valid > 0 ? 1.0 / double(valid) : 0.0) : 1.0;
}

// The settings both ops share; the caller fills in rows, pointers and outputs.
inline K::KDLossProblem base_problem(int64_t vocab, K::DType dt, double temperature, double alpha,
                              int64_t ignore_index, Reduction red, int64_t valid) {
  K::KDLossProblem p;
  p.vocab = vocab;
  p.dtype = dt;
  p.ignore_index = ignore_index;
  p.temperature = temperature;
  p.alpha = alpha;
  p.grad_scale = grad_scale_for(red, valid);
  return p;
}

template <class Dev>
std::tuple<at::Tensor, at::Tensor> kd_loss_impl(const at::Tensor& student_logits,
                                               at::TensorList teacher_logits,
                                               at::ArrayRef<double> teacher_weights,
                                               const at::Tensor& target, double temperature,
                                               double alpha, int64_t ignore_index,
                                               c10::string_view reduction, bool with_grad) {
  const Reduction red = parse_reduction(reduction);
  check_scalars(temperature, alpha);
  Dev::check(student_logits, "student_logits");
  const K::DType dt = Dev::dtype(student_logits, "student_logits");
  TORCH_CHECK_VALUE(student_logits.dim() >= 1 && student_logits.size(-1) > 0,
                    "student_logits: expected shape [..., V] with V >= 1, got ",
                    student_logits.sizes());
  const size_t nt = teacher_logits.size();
  TORCH_CHECK_VALUE(nt >= 1 && nt <= size_t(K::kKDMaxTeachers),
                    "teacher_logits: expected 1 to ", K::kKDMaxTeachers, " tensors, got ", nt);
  std::vector<at::Tensor> teachers;
  for (size_t k = 0; k < nt; ++k) {
    const std::string name = "teacher_logits[" + std::to_string(k) + "]";
    Dev::check(teacher_logits[k], name);
    TORCH_CHECK_TYPE(teacher_logits[k].scalar_type() == student_logits.scalar_type(), name,
                     ": expected dtype ", student_logits.scalar_type(),
                     " (the student's), got ", teacher_logits[k].scalar_type(),
                     "; cast it with .to(student_logits.dtype)");
    TORCH_CHECK_VALUE(teacher_logits[k].sizes() == student_logits.sizes(), name,
                      ": expected the student's shape ", student_logits.sizes(), ", got ",
                      teacher_logits[k].sizes());
    teachers.push_back(teacher_logits[k].contiguous());
  }
  const std::vector<double> w = mixture_weights(teacher_weights, nt);
  const int64_t vocab = student_logits.size(-1);
  const at::IntArrayRef lead = student_logits.sizes().slice(0, student_logits.dim() - 1);
  const std::pair<at::Tensor, int64_t> checked_target = Dev::target(target, lead, vocab, ignore_index);
  const at::Tensor& y = checked_target.first;
  const int64_t valid = checked_target.second;
  const at::Tensor s = student_logits.contiguous();
  const int64_t rows = s.numel() / vocab;

  at::Tensor row_loss = at::empty({rows}, s.options().dtype(at::kDouble));
  at::Tensor grad = with_grad ? Dev::empty_out(s.sizes(), s.options())
                              : at::empty({0}, s.options());
  std::vector<const void*> tptr(nt);
  std::vector<int64_t> tstride(nt, vocab);
  for (size_t k = 0; k < nt; ++k) tptr[k] = teachers[k].const_data_ptr();

  K::KDLossProblem p = base_problem(vocab, dt, temperature, alpha, ignore_index, red, valid);
  p.rows = rows;
  p.student = s.const_data_ptr();
  p.student_row_stride = vocab;
  p.num_teachers = int(nt);
  p.teachers = tptr.data();
  p.teacher_row_strides = tstride.data();
  p.teacher_weights = w.data();
  p.target = y.const_data_ptr<int64_t>();
  p.row_loss = row_loss.mutable_data_ptr<double>();
  p.grad = with_grad ? grad.mutable_data_ptr() : nullptr;
  p.grad_row_stride = vocab;
  Dev::run(p);
  return {Dev::reduce(row_loss, red, valid, lead, loss_dtype(s)), grad};
}

template <class Dev>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_linear_kd_loss_impl(
    const at::Tensor& student_hidden, const at::Tensor& student_weight,
    const std::optional<at::Tensor>& student_bias, const at::Tensor& teacher_hidden,
    const at::Tensor& teacher_weight, const std::optional<at::Tensor>& teacher_bias,
    const at::Tensor& target, double temperature, double alpha, int64_t ignore_index,
    c10::string_view reduction, int64_t chunk_size, const std::optional<at::Tensor>& grad_row_scale,
    bool with_grad) {
  const Reduction red = parse_reduction(reduction);
  check_scalars(temperature, alpha);
  TORCH_CHECK_VALUE(chunk_size >= 0, "chunk_size: expected >= 0 (0 picks one), got ", chunk_size);
  const at::Tensor* named[] = {&student_hidden, &student_weight, &teacher_hidden, &teacher_weight};
  const char* names[] = {"student_hidden", "student_weight", "teacher_hidden", "teacher_weight"};
  for (int k = 0; k < 4; ++k) Dev::check(*named[k], names[k]);
  const K::DType dt = Dev::dtype(student_hidden, "student_hidden");
  for (int k = 1; k < 4; ++k)
    TORCH_CHECK_TYPE(named[k]->scalar_type() == student_hidden.scalar_type(), names[k],
                     ": expected dtype ", student_hidden.scalar_type(), " (student_hidden's), got ",
                     named[k]->scalar_type());
  TORCH_CHECK_VALUE(student_hidden.dim() >= 1, "student_hidden: expected shape [..., H], got ",
                    student_hidden.sizes());
  TORCH_CHECK_VALUE(teacher_hidden.dim() >= 1, "teacher_hidden: expected shape [..., H_t], got ",
                    teacher_hidden.sizes());
  const int64_t H = student_hidden.size(-1), Ht = teacher_hidden.size(-1);
  TORCH_CHECK_VALUE(student_weight.dim() == 2 && student_weight.size(1) == H &&
                        student_weight.size(0) > 0,
                    "student_weight: expected shape [V, ", H, "] (V >= 1), got ",
                    student_weight.sizes());
  const int64_t vocab = student_weight.size(0);
  TORCH_CHECK_VALUE(teacher_weight.dim() == 2 && teacher_weight.size(0) == vocab &&
                        teacher_weight.size(1) == Ht,
                    "teacher_weight: expected shape [", vocab, ", ", Ht, "], got ",
                    teacher_weight.sizes());
  const at::IntArrayRef lead = student_hidden.sizes().slice(0, student_hidden.dim() - 1);
  TORCH_CHECK_VALUE(teacher_hidden.sizes().slice(0, teacher_hidden.dim() - 1) == lead,
                    "teacher_hidden: expected leading shape ", lead, " (student_hidden's), got ",
                    teacher_hidden.sizes());
  auto check_bias = [&](const std::optional<at::Tensor>& b, const char* name) {
    if (!b) return;
    Dev::check(*b, name);
    TORCH_CHECK_TYPE(b->scalar_type() == student_hidden.scalar_type(), name, ": expected dtype ",
                     student_hidden.scalar_type(), ", got ", b->scalar_type());
    TORCH_CHECK_VALUE(b->dim() == 1 && b->size(0) == vocab, name, ": expected shape [", vocab,
                      "], got ", b->sizes());
  };
  check_bias(student_bias, "student_bias");
  check_bias(teacher_bias, "teacher_bias");
  const std::pair<at::Tensor, int64_t> checked_target = Dev::target(target, lead, vocab, ignore_index);
  const at::Tensor& y = checked_target.first;
  const int64_t valid = checked_target.second;
  const int64_t rows = c10::multiply_integers(lead);
  if (grad_row_scale) {
    Dev::check(*grad_row_scale, "grad_row_scale");
    TORCH_CHECK_VALUE(grad_row_scale->is_floating_point() && grad_row_scale->numel() == rows,
                      "grad_row_scale: expected a floating-point tensor of ", rows,
                      " elements, got ", grad_row_scale->scalar_type(), " ",
                      grad_row_scale->sizes());
  }

  const at::Tensor hs = student_hidden.reshape({rows, H}).contiguous();
  const at::Tensor ht = teacher_hidden.reshape({rows, Ht}).contiguous();
  const at::Tensor ws = student_weight.contiguous();
  const at::Tensor wt = teacher_weight.contiguous();
  const at::Tensor rs =
      grad_row_scale ? grad_row_scale->to(at::kDouble).contiguous() : at::Tensor();
  const auto opts = hs.options();
  const auto f32 = opts.dtype(at::kFloat);
  const bool f64 = dt == K::DType::F64;
  // 16-bit head gradients are accumulated over chunks in fp32; fp32/fp64 ones in their own dtype.
  const auto acc_opts = (dt == K::DType::F32 || f64) ? opts : f32;

  // Default chunk: about 16M logits per buffer (64 MB in fp32), at least 32 rows.
  int64_t chunk = chunk_size > 0 ? chunk_size : std::max<int64_t>(32, (int64_t(1) << 24) / vocab);
  chunk = std::max<int64_t>(1, std::min(chunk, rows));

  at::Tensor row_loss = at::empty({rows}, opts.dtype(at::kDouble));
  at::Tensor d_hidden = with_grad ? at::empty({rows, H}, opts) : at::empty({0}, opts);
  at::Tensor dw_acc = with_grad ? at::zeros({vocab, H}, acc_opts) : at::Tensor();
  const bool want_db = with_grad && student_bias.has_value();
  at::Tensor db_acc = want_db ? at::zeros({vocab}, acc_opts) : at::Tensor();
  at::Tensor s_buf = Dev::empty_out({chunk, vocab}, opts);
  at::Tensor t_buf = Dev::empty_out({chunk, vocab}, opts);

  const int64_t* yp = y.const_data_ptr<int64_t>();
  double* lp = row_loss.mutable_data_ptr<double>();
  const int64_t stride = vocab;
  const double one = 1.0;
  const void* tptr = t_buf.const_data_ptr();
  K::KDLossProblem p = base_problem(vocab, dt, temperature, alpha, ignore_index, red, valid);
  p.student = s_buf.const_data_ptr();
  p.student_row_stride = stride;
  p.num_teachers = 1;
  p.teachers = &tptr;
  p.teacher_row_strides = &stride;
  p.teacher_weights = &one;
  p.grad = with_grad ? s_buf.mutable_data_ptr() : nullptr;  // in place over the student logits
  p.grad_row_stride = stride;
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t c = std::min(chunk, rows - r0);
    at::Tensor s_log = s_buf.narrow(0, 0, c);
    at::Tensor t_log = t_buf.narrow(0, 0, c);
    const at::Tensor hs_c = hs.narrow(0, r0, c);
    if (student_bias) at::addmm_out(s_log, *student_bias, hs_c, ws.t());
    else at::mm_out(s_log, hs_c, ws.t());
    if (teacher_bias) at::addmm_out(t_log, *teacher_bias, ht.narrow(0, r0, c), wt.t());
    else at::mm_out(t_log, ht.narrow(0, r0, c), wt.t());

    p.rows = c;
    p.target = yp + r0;
    p.row_loss = lp + r0;
    p.grad_row_scale = grad_row_scale ? rs.const_data_ptr<double>() + r0 : nullptr;
    Dev::run(p);
    if (!with_grad) continue;

    at::Tensor d_h = d_hidden.narrow(0, r0, c);
    at::mm_out(d_h, s_log, ws);  // [c, V] x [V, H]
    if (dw_acc.scalar_type() == s_log.scalar_type()) dw_acc.addmm_(s_log.t(), hs_c);
    else dw_acc.add_(at::mm(s_log.t(), hs_c));  // 16-bit mm result, accumulated in fp32
    if (want_db) db_acc.add_(at::sum(s_log, {0}, false, dw_acc.scalar_type()));
  }

  at::Tensor loss = Dev::reduce(row_loss, red, valid, lead, loss_dtype(hs));
  if (!with_grad) return {loss, at::empty({0}, opts), at::empty({0}, opts), at::empty({0}, opts)};
  at::Tensor d_weight = dw_acc.to(opts.dtype());
  at::Tensor d_bias = want_db ? db_acc.to(opts.dtype()) : at::empty({0}, opts);
  return {loss, d_hidden.reshape(student_hidden.sizes()), d_weight, d_bias};
}

}  // namespace edgegen::kd_glue
