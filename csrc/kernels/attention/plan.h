// The tiling of one attention call (shared by every batch and head): query tiles, key tiles,
// which key tiles each query tile visits (forward) and the transpose (backward), and whether a
// visited pair needs an element mask ("partial") or is visible throughout.
#pragma once
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

}  // namespace edgegen::kernels::attention
