#include "attention.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <utility>
#include <vector>

#include "../cpu_features.h"
#include "../parallel.h"
#include "plan.h"

namespace edgegen::kernels::attention {

// Per ISA (attention_impl.h instantiated in attention_scalar.cpp / attention_avx2.cpp /
// attention_avx512.cpp).
void forward_scalar(const Problem& p, const Plan& plan, void* out, void* lse);
void backward_scalar(const Problem& p, const Plan& plan, const Strided& dout, const Strided& out, const void* lse,
                     void* dq, void* dk, void* dv);
#ifdef EDGEGEN_HAVE_AVX2
void forward_avx2(const Problem& p, const Plan& plan, void* out, void* lse);
void backward_avx2(const Problem& p, const Plan& plan, const Strided& dout, const Strided& out, const void* lse,
                   void* dq, void* dk, void* dv);
void forward_avx512(const Problem& p, const Plan& plan, void* out, void* lse);
void backward_avx512(const Problem& p, const Plan& plan, const Strided& dout, const Strided& out, const void* lse,
                     void* dq, void* dk, void* dv);
#endif
#ifdef EDGEGEN_HAVE_AVX512_BF16
void forward_avx512_bf16(const Problem& p, const Plan& plan, void* out, void* lse);
void backward_avx512_bf16(const Problem& p, const Plan& plan, const Strided& dout, const Strided& out,
                          const void* lse, void* dq, void* dk, void* dv);
#endif
#ifdef EDGEGEN_HAVE_AMX_BF16
void forward_amx(const Problem& p, const Plan& plan, void* out, void* lse);
void backward_amx(const Problem& p, const Plan& plan, const Strided& dout, const Strided& out, const void* lse,
                  void* dq, void* dk, void* dv);
#endif
// attention_scalar.cpp: the Tiles products on the tile model.
void forward_tile_model(const Problem& p, const Plan& plan, void* out, void* lse);
void backward_tile_model(const Problem& p, const Plan& plan, const Strided& dout, const Strided& out, const void* lse,
                         void* dq, void* dk, void* dv);

namespace {

// Tile boundaries over positions [lo, hi): lo, next(lo), next(next(lo)), ..., hi.
template <class Next>
std::vector<int64_t> grid(int64_t lo, int64_t hi, const Next& next) {
  std::vector<int64_t> s{lo};
  for (int64_t pos = lo; pos < hi;) {
    pos = std::min(hi, next(pos));
    s.push_back(pos);
  }
  return s;
}

// Key tiles t with [ks[t], ks[t+1]) intersecting [a, b), appended to out.
void tiles_in(const std::vector<int64_t>& ks, int64_t a, int64_t b, std::vector<int64_t>& out) {
  if (a >= b) return;
  const int64_t first = int64_t(std::upper_bound(ks.begin(), ks.end(), a) - ks.begin()) - 1;
  const int64_t last = int64_t(std::lower_bound(ks.begin(), ks.end(), b) - ks.begin()) - 1;
  for (int64_t t = std::max<int64_t>(first, 0); t <= last && t + 1 < int64_t(ks.size()); ++t) out.push_back(t);
}

}  // namespace

Plan make_plan(const Problem& p) {
  const Pattern& pt = p.pattern;
  const int64_t qo = pt.q_offset, nq = p.nq, nk = p.nk;
  Plan plan;
  std::function<int64_t(int64_t)> next;
  if (pt.block_size > 0) {
    const int64_t bs = pt.block_size;
    const int64_t pieces = (bs + kKeyTile - 1) / kKeyTile;
    const int64_t sub = (bs + pieces - 1) / pieces;
    next = [bs, sub](int64_t pos) {
      const int64_t blk = pos / bs, within = pos - blk * bs;
      return blk * bs + std::min(bs, (within / sub + 1) * sub);
    };
  } else {
    const int64_t g = pt.num_global;
    next = [g](int64_t pos) {
      if (pos < g) return std::min(g, pos + kKeyTile);
      return g + ((pos - g) / kKeyTile + 1) * kKeyTile;
    };
  }
  plan.ks = grid(0, nk, next);
  plan.qs = grid(qo, qo + nq, next);
  for (auto& s : plan.qs) s -= qo;

  const int64_t mt = plan.mt(), nt = plan.nt();
  plan.fptr.assign(1, 0);
  std::vector<int64_t> cand;
  for (int64_t qt = 0; qt < mt; ++qt) {
    const int64_t p0 = qo + plan.qs[qt], p1 = qo + plan.qs[qt + 1] - 1;
    cand.clear();
    if (pt.block_size > 0) {
      const int64_t bs = pt.block_size, qb = p0 / bs - pt.qblock_base;
      if (qb >= 0 && qb < pt.num_qblocks - pt.qblock_base) {
        for (int64_t e = pt.layout_ptr[qb]; e < pt.layout_ptr[qb + 1]; ++e) {
          const int64_t kb = pt.layout_idx[e];
          const int64_t a = kb * bs, b = std::min(nk, (kb + 1) * bs);
          tiles_in(plan.ks, a, pt.causal ? std::min(b, p1 + 1) : b, cand);
        }
      }
    } else {
      const int64_t w = pt.window, g = pt.num_global;
      if (pt.causal) {
        tiles_in(plan.ks, 0, std::min({g, p1 + 1, nk}), cand);
        tiles_in(plan.ks, std::max<int64_t>(0, p0 - w + 1), std::min(nk, p1 + 1), cand);
      } else if (p1 < g) {
        tiles_in(plan.ks, 0, nk, cand);
      } else {
        tiles_in(plan.ks, 0, std::min(g, nk), cand);
        tiles_in(plan.ks, std::max<int64_t>(0, p0 - w + 1), std::min(nk, p1 + w), cand);
      }
    }
    std::sort(cand.begin(), cand.end());
    cand.erase(std::unique(cand.begin(), cand.end()), cand.end());
    for (int64_t t : cand) {
      const int64_t j0 = plan.ks[t], j1 = plan.ks[t + 1];
      bool full;
      if (pt.block_size > 0) {
        full = !pt.causal || j1 - 1 <= p0;
      } else if (pt.causal) {
        full = j1 - 1 <= p0 && (p1 - j0 < pt.window || j1 <= pt.num_global);
      } else {
        full = p1 < pt.num_global || j1 <= pt.num_global || std::max(p1 - j0, j1 - 1 - p0) < pt.window;
      }
      plan.fidx.push_back(t);
      plan.fpartial.push_back(full ? 0 : 1);
    }
    plan.fptr.push_back(int64_t(plan.fidx.size()));
  }

  // Transpose (counting sort by key tile; query tiles stay in increasing order).
  plan.bptr.assign(nt + 1, 0);
  for (int64_t t : plan.fidx) ++plan.bptr[t + 1];
  for (int64_t t = 0; t < nt; ++t) plan.bptr[t + 1] += plan.bptr[t];
  plan.bidx.resize(plan.fidx.size());
  plan.bpartial.resize(plan.fidx.size());
  std::vector<int64_t> fill(plan.bptr.begin(), plan.bptr.end() - 1);
  for (int64_t qt = 0; qt < mt; ++qt) {
    for (int64_t e = plan.fptr[qt]; e < plan.fptr[qt + 1]; ++e) {
      const int64_t pos = fill[plan.fidx[e]]++;
      plan.bidx[pos] = qt;
      plan.bpartial[pos] = plan.fpartial[e];
    }
  }
  plan.key_needed.assign(nt, 0);
  for (int64_t t : plan.fidx) plan.key_needed[t] = 1;
  return plan;
}

PlanSummary plan_summary(const Problem& p) {
  const Plan plan = make_plan(p);
  PlanSummary s;
  s.query_tiles = plan.mt();
  s.key_tiles = plan.nt();
  s.tile_pairs = int64_t(plan.fidx.size());
  for (int64_t qt = 0; qt < plan.mt(); ++qt) {
    for (int64_t e = plan.fptr[qt]; e < plan.fptr[qt + 1]; ++e) {
      const int64_t t = plan.fidx[e];
      s.partial_pairs += plan.fpartial[e];
      s.scored_entries += (plan.qs[qt + 1] - plan.qs[qt]) * (plan.ks[t + 1] - plan.ks[t]);
    }
  }
  return s;
}

Isa attention_isa() {
#ifdef EDGEGEN_HAVE_AMX_BF16
  // The amx level differs from avx512 only in the bf16 products, taken with EDGEGEN_AMX=1.
  if (amx_opted_in()) return pick_isa({Isa::Amx, Isa::Avx512, Isa::Avx2, Isa::Scalar});
#endif
  return pick_isa({Isa::Avx512, Isa::Avx2, Isa::Scalar});
}

bool attention_has_path(Isa isa) {
#ifdef EDGEGEN_HAVE_AMX_BF16
  if (isa == Isa::Amx) return true;  // the AMX-BF16 products (float inputs: the avx512 path)
#endif
#ifdef EDGEGEN_HAVE_AVX2
  if (isa == Isa::Avx2 || isa == Isa::Avx512) return true;
#endif
  return isa == Isa::Scalar;
}

Bf16Products bf16_products(Isa isa) {
#ifdef EDGEGEN_HAVE_AMX_BF16
  if (isa >= Isa::Amx && amx_opted_in()) return Bf16Products::Tiles;
#endif
#ifdef EDGEGEN_HAVE_AVX512_BF16
  if (isa >= Isa::Avx512 && cpu_has_avx512_bf16()) return Bf16Products::Dot;
#endif
  (void)isa;
  return Bf16Products::Float;
}

Bf16Products bf16_products_for(const Problem& p, Isa isa) {
  if (p.dtype != DType::BF16 || p.nq < kBf16ProductsMinRows) return Bf16Products::Float;
  return bf16_products(isa);
}

const char* bf16_products_name(Bf16Products products) {
  switch (products) {
    case Bf16Products::Dot: return "avx512_bf16";
    case Bf16Products::Tiles: return "amx_bf16";
    default: return "float";
  }
}

void forward_amx_model(const Problem& p, void* out, void* lse) { forward_tile_model(p, make_plan(p), out, lse); }

void backward_amx_model(const Problem& p, const Strided& dout, const Strided& out, const void* lse, void* dq,
                        void* dk, void* dv) {
  backward_tile_model(p, make_plan(p), dout, out, lse, dq, dk, dv);
}

void forward_isa(Isa isa, const Problem& p, void* out, void* lse) {
  const Plan plan = make_plan(p);
#ifdef EDGEGEN_HAVE_AMX_BF16
  if (bf16_products_for(p, isa) == Bf16Products::Tiles) return forward_amx(p, plan, out, lse);
#endif
#ifdef EDGEGEN_HAVE_AVX512_BF16
  if (bf16_products_for(p, isa) == Bf16Products::Dot) return forward_avx512_bf16(p, plan, out, lse);
#endif
#ifdef EDGEGEN_HAVE_AVX2
  if (p.dtype != DType::F64 && isa >= Isa::Avx512) return forward_avx512(p, plan, out, lse);
  if (p.dtype != DType::F64 && isa >= Isa::Avx2) return forward_avx2(p, plan, out, lse);
#endif
  (void)isa;
  forward_scalar(p, plan, out, lse);
}

void backward_isa(Isa isa, const Problem& p, const Strided& dout, const Strided& out, const void* lse, void* dq,
                  void* dk, void* dv) {
  const Plan plan = make_plan(p);
#ifdef EDGEGEN_HAVE_AMX_BF16
  if (bf16_products_for(p, isa) == Bf16Products::Tiles) return backward_amx(p, plan, dout, out, lse, dq, dk, dv);
#endif
#ifdef EDGEGEN_HAVE_AVX512_BF16
  if (bf16_products_for(p, isa) == Bf16Products::Dot)
    return backward_avx512_bf16(p, plan, dout, out, lse, dq, dk, dv);
#endif
#ifdef EDGEGEN_HAVE_AVX2
  if (p.dtype != DType::F64 && isa >= Isa::Avx512) return backward_avx512(p, plan, dout, out, lse, dq, dk, dv);
  if (p.dtype != DType::F64 && isa >= Isa::Avx2) return backward_avx2(p, plan, dout, out, lse, dq, dk, dv);
#endif
  (void)isa;
  backward_scalar(p, plan, dout, out, lse, dq, dk, dv);
}

void forward(const Problem& p, void* out, void* lse) { forward_isa(attention_isa(), p, out, lse); }

void backward(const Problem& p, const Strided& dout, const Strided& out, const void* lse, void* dq, void* dk,
              void* dv) {
  backward_isa(attention_isa(), p, dout, out, lse, dq, dk, dv);
}

}  // namespace edgegen::kernels::attention
