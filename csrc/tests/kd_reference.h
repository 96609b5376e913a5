// The double-precision reference of the KD-loss tests (the CPU kernels and the CUDA kernels on
// the host emulator): one row's loss and gradient from the formula, written for clarity.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace kd_reference {

struct Row {
  double loss;
  std::vector<double> grad;
};

// loss = alpha T^2 KL(p_t || softmax(s / T)) + (1 - alpha) CE(softmax(s), y), with
// p_t = sum_k w_k softmax(t_k / T); grad = scale * d loss / d s. A term whose weight is 0 is
// left out (not multiplied by 0), an ignored row (y == ignore_index) gives 0 and a zero
// gradient, and a NaN anywhere in a teacher's distribution (a NaN logit, or a row all -inf)
// makes the KL term NaN.
inline Row row(const std::vector<double>& s, const std::vector<std::vector<double>>& ts,
               const std::vector<double>& w, int64_t y, double T, double alpha, double scale,
               int64_t ignore_index = -100) {
  const size_t V = s.size();
  Row r{0.0, std::vector<double>(V, 0.0)};
  if (y == ignore_index) return r;
  auto log_softmax = [&](const std::vector<double>& x, double temp) {
    double m = -INFINITY;
    for (double v : x) m = std::max(m, v / temp);
    double z = 0;
    for (double v : x) z += std::exp(v / temp - m);
    std::vector<double> out(V);
    for (size_t i = 0; i < V; ++i) out[i] = x[i] / temp - m - std::log(z);
    return out;
  };
  const auto lps = log_softmax(s, T), lps1 = log_softmax(s, 1.0);
  std::vector<double> pt(V, 0.0);
  for (size_t k = 0; k < ts.size(); ++k) {
    const auto lpt = log_softmax(ts[k], T);
    for (size_t i = 0; i < V; ++i) pt[i] += w[k] * std::exp(lpt[i]);
  }
  double kl = 0;
  for (size_t i = 0; i < V; ++i)
    if (pt[i] != 0) kl += pt[i] * (std::log(pt[i]) - lps[i]);  // 0 log 0 = 0; NaN passes
  if (alpha > 0) r.loss += alpha * T * T * kl;
  if (alpha < 1) r.loss += (1 - alpha) * (-lps1[size_t(y)]);
  for (size_t i = 0; i < V; ++i) {
    double g = 0;
    if (alpha > 0) g += alpha * T * (std::exp(lps[i]) - pt[i]);
    if (alpha < 1) g += (1 - alpha) * (std::exp(lps1[i]) - (int64_t(i) == y ? 1.0 : 0.0));
    r.grad[i] = scale * g;
  }
  return r;
}

}  // namespace kd_reference
