// The dense double-precision reference of the sliding-window attention tests (CPU kernels and
// the CUDA kernels on the host emulator): every (query, key) pair scored, the visibility rule
// applied directly.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <utility>
#include <vector>

namespace attention_reference {

struct Case {
  int64_t B = 1, H = 2, nq = 70, nk = 70, d = 16;
  int64_t window = 8, num_global = 0, q_offset = 0;
  bool causal = true;
  int64_t block_size = 0;
  std::vector<std::pair<int64_t, int64_t>> layout;  // (query block, key block)
};

inline bool ref_visible(const Case& c, int64_t qp, int64_t j) {
  if (c.block_size > 0) {
    const bool listed = std::find(c.layout.begin(), c.layout.end(),
                                  std::make_pair(qp / c.block_size, j / c.block_size)) != c.layout.end();
    return listed && (!c.causal || j <= qp);
  }
  if (c.causal) return j <= qp && (qp - j < c.window || j < c.num_global);
  return std::llabs(qp - j) < c.window || j < c.num_global || qp < c.num_global;
}

struct Ref {
  std::vector<double> out, lse, dq, dk, dv;
  // Per value, the sum of its terms' magnitudes (what rounding the terms' factors scales with).
  std::vector<double> out_mag, dq_mag, dk_mag, dv_mag;
};

// Dense reference over contiguous [B, H, n, d] double arrays. The backward's D_i = dout_i . out_i
// uses out_for_d when given (the output as the kernel stored it, e.g. rounded to bf16), else the
// reference's own output.
inline Ref reference(const Case& c, const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& v,
              const std::vector<double>& dout, double scale, const std::vector<double>* out_for_d = nullptr) {
  Ref r;
  const int64_t d = c.d;
  r.out.assign(c.B * c.H * c.nq * d, 0.0);
  r.lse.assign(c.B * c.H * c.nq, -INFINITY);
  r.dq.assign(r.out.size(), 0.0);
  r.dk.assign(c.B * c.H * c.nk * d, 0.0);
  r.dv.assign(r.dk.size(), 0.0);
  r.out_mag.assign(r.out.size(), 0.0);
  r.dq_mag.assign(r.out.size(), 0.0);
  r.dk_mag.assign(r.dk.size(), 0.0);
  r.dv_mag.assign(r.dk.size(), 0.0);
  for (int64_t bh = 0; bh < c.B * c.H; ++bh) {
    for (int64_t i = 0; i < c.nq; ++i) {
      const double* qi = &q[(bh * c.nq + i) * d];
      std::vector<double> s(c.nk, -INFINITY);
      double mx = -INFINITY;
      for (int64_t j = 0; j < c.nk; ++j) {
        if (!ref_visible(c, c.q_offset + i, j)) continue;
        double acc = 0;
        for (int64_t e = 0; e < d; ++e) acc += qi[e] * k[(bh * c.nk + j) * d + e];
        s[j] = acc * scale;
        mx = std::max(mx, s[j]);
      }
      if (mx == -INFINITY) continue;
      double z = 0;
      for (int64_t j = 0; j < c.nk; ++j) z += s[j] == -INFINITY ? 0.0 : std::exp(s[j] - mx);
      r.lse[bh * c.nq + i] = mx + std::log(z);
      std::vector<double> pr(c.nk, 0.0), dp(c.nk, 0.0);
      double* o = &r.out[(bh * c.nq + i) * d];
      for (int64_t j = 0; j < c.nk; ++j) {
        if (s[j] == -INFINITY) continue;
        pr[j] = std::exp(s[j] - mx) / z;
        for (int64_t e = 0; e < d; ++e) {
          o[e] += pr[j] * v[(bh * c.nk + j) * d + e];
          r.out_mag[(bh * c.nq + i) * d + e] += pr[j] * std::fabs(v[(bh * c.nk + j) * d + e]);
        }
      }
      const double* g = &dout[(bh * c.nq + i) * d];
      const double* od = out_for_d ? &(*out_for_d)[(bh * c.nq + i) * d] : o;
      double D = 0;
      for (int64_t e = 0; e < d; ++e) D += g[e] * od[e];
      for (int64_t j = 0; j < c.nk; ++j) {
        if (pr[j] == 0) continue;
        double dpj = 0;
        for (int64_t e = 0; e < d; ++e) {
          dpj += g[e] * v[(bh * c.nk + j) * d + e];
          r.dv[(bh * c.nk + j) * d + e] += pr[j] * g[e];
          r.dv_mag[(bh * c.nk + j) * d + e] += pr[j] * std::fabs(g[e]);
        }
        const double ds = pr[j] * (dpj - D) * scale;
        for (int64_t e = 0; e < d; ++e) {
          r.dq[(bh * c.nq + i) * d + e] += ds * k[(bh * c.nk + j) * d + e];
          r.dk[(bh * c.nk + j) * d + e] += ds * qi[e];
          r.dq_mag[(bh * c.nq + i) * d + e] += std::fabs(ds * k[(bh * c.nk + j) * d + e]);
          r.dk_mag[(bh * c.nk + j) * d + e] += std::fabs(ds * qi[e]);
        }
      }
    }
  }
  return r;
}

}  // namespace attention_reference
