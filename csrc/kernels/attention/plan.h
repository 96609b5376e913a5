// The tiling of one attention call (shared by every batch and head): query tiles, key tiles,
// which key tiles each query tile visits (forward) and the transpose (backward), and whether a
// visited pair needs an element mask ("partial") or is visible throughout.
#pragma once
#include <algorithm>
#include <climits>
#include <cstdint>
#include <vector>

#include "attention.h"

namespace edgegen::kernels::attention {

struct Plan {
  std::vector<int64_t> qs;  // query tile starts (query indices), size mt + 1, qs[mt] = nq
  std::vector<int64_t> ks;  // key tile starts, size nt + 1, ks[nt] = nk
  // Forward relation (CSR by query tile) and its transpose (CSR by key tile).
  std::vector<int64_t> fptr, fidx;
  std::vector<uint8_t> fpartial;
  std::vector<int64_t> bptr, bidx;
  std::vector<uint8_t> bpartial;
  std::vector<uint8_t> key_needed;  // key tiles visited by some query tile

  int64_t mt() const { return int64_t(qs.size()) - 1; }
  int64_t nt() const { return int64_t(ks.size()) - 1; }
};

Plan make_plan(const Problem& p);

// Whether query position qp sees key j (the pattern in attention.h).
inline bool visible(const Pattern& pt, int64_t qp, int64_t j) {
  if (pt.block_size > 0) return !pt.causal || j <= qp;  // block membership is in the plan
  const int64_t w = pt.window, g = pt.num_global;
  if (pt.causal) return j <= qp && (qp - j < w || j < g);
  const int64_t dist = qp >= j ? qp - j : j - qp;
  return dist < w || j < g || qp < g;
}

// What one row of a tile sees, as two half-open position intervals (their union): for a query
// at position qp, the keys it sees; for a key j (backward), the query positions that see it.
// The same rule as visible(), in a form a mask loop can apply without branches.
struct Visible {
  int64_t a0, a1, b0, b1;
};

inline Visible keys_seen_by(const Pattern& pt, int64_t qp) {
  constexpr int64_t kAll = INT64_MAX / 4;
  if (pt.block_size > 0) return {0, 0, 0, pt.causal ? qp + 1 : kAll};
  const int64_t w = pt.window, g = pt.num_global;
  if (pt.causal) return {0, std::min(g, qp + 1), qp - w + 1, qp + 1};
  if (qp < g) return {0, kAll, 0, 0};
  return {0, g, qp - w + 1, qp + w};
}

inline Visible queries_seeing(const Pattern& pt, int64_t j) {
  constexpr int64_t kAll = INT64_MAX / 4;
  if (pt.block_size > 0) return {0, 0, pt.causal ? j : 0, kAll};
  const int64_t w = pt.window, g = pt.num_global;
  if (pt.causal) return {j < g ? j : 0, j < g ? kAll : 0, j, j + w};
  if (j < g) return {0, kAll, 0, 0};
  return {0, g, j - w + 1, j + w};
}

// Sets s[c] = fill for every c in [0, n) whose position base + c lies outside v.
template <class R>
inline void mask_outside(R* s, int64_t n, int64_t base, const Visible& v, R fill) {
  const int64_t a0 = v.a0 - base, a1 = v.a1 - base, b0 = v.b0 - base, b1 = v.b1 - base;
  for (int64_t c = 0; c < n; ++c) {
    const bool vis = (c >= a0 && c < a1) || (c >= b0 && c < b1);
    s[c] = vis ? s[c] : fill;
  }
}

}  // namespace edgegen::kernels::attention
