#include "kernels/quant/gemm.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/parallel.h"

namespace edgegen::kernels::quant {

namespace amx_model {
#include "kernels/quant/gemm_amx_impl.h"
}  // namespace amx_model
using amx_model::kAmxBlockRows;

// The INT8 GEMM family's paths. Each computes tiles of up to `rows` rows x `panels` panels of
// 16 output features (PanelGroups: how a call groups them) over a K range:
// acc[r][c] (row stride acc_ld) = sum_k a[r][k] * w[c][k],
// added to acc when `accumulate`. u7 tells a path that every activation is <= 127 (the AVX2 path
// needs it for vpmaddubsw; the others are exact on the whole u8 range).
struct TilePath {
  Isa isa;
  int rows, panels;
  bool wants_u7;
  void (*tile)(const uint8_t* a, int64_t lda, int rows, const int8_t* panel, int64_t panel_stride, int panels,
               int64_t kp, bool u7, int32_t* acc, int64_t acc_ld, bool accumulate);
  // Zero-point compensation and output of a [rows, cols] tile at (i, j0) of the GEMM.
  void (*store)(const int32_t* acc, int64_t acc_ld, int rows, int64_t cols, int32_t a_zero_point,
                const int32_t* row_sum, const GemmOutput& out, int64_t n, int64_t i, int64_t j0);
  // Paths that keep their accumulators over the whole K (AMX tiles) compute a task's row block
  // at once, over K segments, instead of tile by tile (then `tile` is unused): gemm_amx_impl.h's
  // contract.
  void (*block)(const AmxSegment* seg, int64_t nseg, int64_t lda, int64_t rows, const int8_t* panel,
                int64_t panel_stride, int panels, int64_t kp, int32_t* acc, int64_t acc_ld) = nullptr;
  // The most K values a `tile` call takes (its accumulators pass through the task's buffer between
  // K blocks): sized so a group's weight slices stay in L1 (16 KB) for the narrower paths; 2048
  // for the AVX-512 VNNI tiles (<= 96 KB, from L2), which measured 5-15% faster than L1-sized
  // blocks at K >= 2048 on an AMD Zen 5 and no slower at K = 768.
  int64_t k_block = 1024;
};

#if defined(EDGEGEN_HAVE_AVX2)
// gemm_avx2.cpp: one [rows <= 4, 16] tile over the whole K; u7 selects vpmaddubsw (a <= 127).
void tile_avx2(const uint8_t* a, int64_t lda, int rows, const int8_t* panel, int64_t kp, bool u7, int32_t* acc,
               bool accumulate);
void store_tile_avx2(const int32_t* acc, int rows, int32_t a_zero_point, const int32_t* row_sum, const GemmOutput& out,
                     int64_t n, int64_t i, int64_t j0);
// gemm_avx512.cpp: [rows <= 8, 16 x panels <= 3] tiles with vpdpbusd, and their epilogue.
void tile_avx512_vnni(const uint8_t* a, int64_t lda, int rows, const int8_t* panel, int64_t panel_stride,
                      int panels, int64_t kp, bool u7, int32_t* acc, int64_t acc_ld, bool accumulate);
void store_tile_avx512(const int32_t* acc, int64_t acc_ld, int rows, int64_t cols, int32_t a_zero_point,
                       const int32_t* row_sum, const GemmOutput& out, int64_t n, int64_t i, int64_t j0);
// Activation quantization (min/max over x, then one row's codes), gemm_avx2.cpp / gemm_avx512.cpp.
bool finite_minmax_avx2(const float* x, int64_t n, float* lo, float* hi);
void quantize_row_u7_avx2(const float* x, int64_t k, float inv, float zp, uint8_t* out);
bool finite_minmax_avx512(const float* x, int64_t n, float* lo, float* hi);
void quantize_row_u7_avx512(const float* x, int64_t k, float inv, float zp, uint8_t* out);
#endif
#if defined(EDGEGEN_HAVE_AVX2)
// vnni256_evex.cpp / vnni256_vex.cpp: [rows <= 6, 16] tiles with 256-bit vpdpbusd
// (gemm_vnni256_impl.h), in the EVEX and VEX (AVX-VNNI) encodings.
void tile_avx2_vnni_evex(const uint8_t* a, int64_t lda, int rows, const int8_t* panel, int64_t kp, int32_t* acc,
                         int64_t acc_ld, bool accumulate);
#endif
#if defined(EDGEGEN_HAVE_AVX_VNNI)
void tile_avx2_vnni_vex(const uint8_t* a, int64_t lda, int rows, const int8_t* panel, int64_t kp, int32_t* acc,
                        int64_t acc_ld, bool accumulate);
#endif
#if defined(EDGEGEN_HAVE_AMX)
// gemm_amx.cpp: amx_block on the AMX tiles.
void block_amx(const AmxSegment* seg, int64_t nseg, int64_t lda, int64_t rows, const int8_t* panel,
               int64_t panel_stride, int panels, int64_t kp, int32_t* acc, int64_t acc_ld);
#endif

namespace {

constexpr int kMaxPanels = 3;  // the most panels any path's tile takes

void tile_scalar(const uint8_t* a, int64_t lda, int rows, const int8_t* panel, int64_t panel_stride, int panels,
                 int64_t kp, bool, int32_t* acc, int64_t acc_ld, bool accumulate) {
  for (int p = 0; p < panels; ++p) {
    const int8_t* pan = panel + p * panel_stride;
    for (int r = 0; r < rows; ++r) {
      int32_t sum[kPanel] = {0};
      int32_t* dst = acc + r * acc_ld + p * kPanel;
      if (accumulate) std::memcpy(sum, dst, sizeof(sum));
      const uint8_t* ar = a + r * lda;
      for (int64_t q = 0; q < kp / 4; ++q) {
        const int8_t* blk = pan + q * 4 * kPanel;
        for (int j = 0; j < kPanel; ++j)
          for (int t = 0; t < 4; ++t) sum[j] += int32_t(ar[4 * q + t]) * int32_t(blk[4 * j + t]);
      }
      std::memcpy(dst, sum, sizeof(sum));
    }
  }
}

void store_scalar(const int32_t* acc, int64_t acc_ld, int rows, int64_t cols, int32_t a_zero_point,
                  const int32_t* row_sum, const GemmOutput& out, int64_t n, int64_t i, int64_t j0) {
  for (int r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int32_t v = acc[r * acc_ld + c] - a_zero_point * row_sum[j0 + c];
      const int64_t o = (i + r) * n + j0 + c;
      if (out.out_i32) {
        out.out_i32[o] = v;
      } else {
        float f = float(v) * (out.a_scale * out.w_scale[j0 + c]);
        if (out.bias) f += out.bias[j0 + c];
        out.out_f32[o] = f;
      }
    }
  }
}

#if defined(EDGEGEN_HAVE_AVX2)
void tile_avx2_path(const uint8_t* a, int64_t lda, int rows, const int8_t* panel, int64_t, int, int64_t kp, bool u7,
                    int32_t* acc, int64_t, bool accumulate) {
  tile_avx2(a, lda, rows, panel, kp, u7, acc, accumulate);
}

// The avx2_vnni level: the VEX form where the CPU has AVX-VNNI, else the EVEX form (the level
// then means AVX-512 VNNI + VL, cpu_features.h).
void tile_avx2_vnni_path(const uint8_t* a, int64_t lda, int rows, const int8_t* panel, int64_t, int, int64_t kp, bool,
                         int32_t* acc, int64_t acc_ld, bool accumulate) {
#if defined(EDGEGEN_HAVE_AVX_VNNI)
  if (cpu_has_avx_vnni()) return tile_avx2_vnni_vex(a, lda, rows, panel, kp, acc, acc_ld, accumulate);
#endif
  tile_avx2_vnni_evex(a, lda, rows, panel, kp, acc, acc_ld, accumulate);
}

void store_avx2_path(const int32_t* acc, int64_t acc_ld, int rows, int64_t cols, int32_t a_zero_point,
                     const int32_t* row_sum, const GemmOutput& out, int64_t n, int64_t i, int64_t j0) {
  if (cols == kPanel) return store_tile_avx2(acc, rows, a_zero_point, row_sum, out, n, i, j0);
  store_scalar(acc, acc_ld, rows, cols, a_zero_point, row_sum, out, n, i, j0);
}
#endif

void block_model(const AmxSegment* seg, int64_t nseg, int64_t lda, int64_t rows, const int8_t* panel,
                 int64_t panel_stride, int panels, int64_t kp, int32_t* acc, int64_t acc_ld) {
  amx_model::amx_block<amx_model::TileModel>(seg, nseg, lda, rows, panel, panel_stride, panels, kp, acc, acc_ld);
}

constexpr TilePath kScalar{Isa::Scalar, 4, 1, false, &tile_scalar, &store_scalar};
// The AMX block on the software tile model, with the scalar epilogue (tests, any CPU).
constexpr TilePath kAmxModel{Isa::Amx, kAmxBlockRows, 2, false, &tile_scalar, &store_scalar, &block_model};
#if defined(EDGEGEN_HAVE_AVX2)
constexpr TilePath kAvx2{Isa::Avx2, 4, 1, true, &tile_avx2_path, &store_avx2_path};
constexpr TilePath kAvx2Vnni{Isa::Avx2Vnni, 6, 1, false, &tile_avx2_vnni_path, &store_avx2_path};
constexpr TilePath kAvx512Vnni{Isa::Avx512Vnni, 8, 3, false, &tile_avx512_vnni, &store_tile_avx512, nullptr, 2048};
#endif
#if defined(EDGEGEN_HAVE_AMX)
constexpr TilePath kAmx{Isa::Amx, kAmxBlockRows, 2, false, &tile_avx512_vnni, &store_tile_avx512, &block_amx};
#endif

// How a call with np panels groups them into tiles: groups of the path's width, except that the
// AVX-512 VNNI tiles (3 panels, 24 accumulators) end 3k + 1 panels with two groups of 2 rather
// than a single panel, whose tiles run slower (conv widths of 64 / 256 channels: 4 / 16 panels).
struct PanelGroups {
  int64_t width, count, threes;  // groups [0, threes) hold 3 panels, later ones `width` (or fewer)
  PanelGroups(const TilePath& tp, int64_t np) : width(tp.panels), count(0), threes(0) {
    if (!tp.block && tp.panels == 3 && np % 3 == 1 && np >= 4) {
      threes = (np - 4) / 3;
      width = 2;
      count = threes + 2;
    } else {
      count = (np + width - 1) / width;
    }
  }
  int64_t first(int64_t g) const { return g < threes ? 3 * g : 3 * threes + (g - threes) * width; }
  int64_t size(int64_t g, int64_t np) const { return std::min(g < threes ? 3 : width, np - first(g)); }
};

// The family's paths (GEMM and convolution): a level without a path of its own takes the next
// lower one's (a build without the AMX path gives AMX machines the AVX-512 VNNI tiles).
const TilePath* path_for(Isa isa) {
  switch (isa) {
#if defined(EDGEGEN_HAVE_AMX)
    case Isa::Amx: return &kAmx;
#endif
#if defined(EDGEGEN_HAVE_AVX2)
#if !defined(EDGEGEN_HAVE_AMX)
    case Isa::Amx:
#endif
    case Isa::Avx512Vnni: return &kAvx512Vnni;
    case Isa::Avx2Vnni: return &kAvx2Vnni;
    case Isa::Avx512:  // AVX-512 without VNNI: no INT8 instruction beyond AVX2's
    case Isa::Avx2: return &kAvx2;
#endif
    default: return &kScalar;
  }
}

// The activation quantization's paths (AVX-512 F/BW suffices; no VNNI needed).
struct ActPath {
  bool (*finite_minmax)(const float* x, int64_t n, float* lo, float* hi);
  void (*quantize_row)(const float* x, int64_t k, float inv, float zp, uint8_t* out);
};

bool finite_minmax_scalar(const float* x, int64_t n, float* lo, float* hi) {
  float a = *lo, b = *hi;
  bool ok = true;
  for (int64_t i = 0; i < n; ++i) {
    a = std::min(a, x[i]);
    b = std::max(b, x[i]);
    ok &= std::isfinite(x[i]);
  }
  *lo = a;
  *hi = b;
  return ok;
}

void quantize_row_u7_scalar(const float* x, int64_t k, float inv, float zp, uint8_t* out) {
  for (int64_t j = 0; j < k; ++j) {
    const float v = std::nearbyint(x[j] * inv) + zp;
    out[j] = uint8_t(std::min(127.0f, std::max(0.0f, v)));
  }
}

}  // namespace

Isa int8_act_isa() {
  return pick_isa({Isa::Avx512, Isa::Avx2, Isa::Scalar});
}

namespace {

ActPath act_path() {
#if defined(EDGEGEN_HAVE_AVX2)
  switch (int8_act_isa()) {
    case Isa::Avx512: return {&finite_minmax_avx512, &quantize_row_u7_avx512};
    case Isa::Avx2: return {&finite_minmax_avx2, &quantize_row_u7_avx2};
    default: break;
  }
#endif
  return {&finite_minmax_scalar, &quantize_row_u7_scalar};
}

}  // namespace

Isa int8_gemm_isa() {
#if defined(EDGEGEN_HAVE_AMX)
  if (amx_opted_in()) return pick_isa({Isa::Amx, Isa::Avx512Vnni, Isa::Avx2Vnni, Isa::Avx2, Isa::Scalar});
#endif
  return pick_isa({Isa::Avx512Vnni, Isa::Avx2Vnni, Isa::Avx2, Isa::Scalar});
}

bool int8_gemm_has_path(Isa isa) { return path_for(isa)->isa == isa; }

void pack_weight_s8(const int8_t* w, int64_t n, int64_t k, int8_t* packed, int32_t* row_sum) {
  const int64_t kp = packed_k(k), np = packed_panels(n);
  std::memset(packed, 0, size_t(np * kp * kPanel));
  for (int64_t j = 0; j < n; ++j) {
    int32_t s = 0;
    int8_t* panel = packed + (j / kPanel) * kp * kPanel;
    for (int64_t kk = 0; kk < k; ++kk) {
      panel[(kk / 4) * 4 * kPanel + (j % kPanel) * 4 + kk % 4] = w[j * k + kk];
      s += w[j * k + kk];
    }
    row_sum[j] = s;
  }
}

namespace {

void gemm_with(const TilePath& tp, const uint8_t* a, int64_t lda, int64_t m, int64_t n, int64_t k,
               int32_t a_zero_point, const int8_t* packed, const int32_t* row_sum, GemmOutput out, int num_threads) {
  const int64_t kp = packed_k(k), np = packed_panels(n);
  bool u7 = tp.wants_u7;
  for (int64_t i = 0; i < m && u7; ++i)
    for (int64_t kk = 0; kk < k; ++kk)
      if (a[i * lda + kk] > 127) {
        u7 = false;
        break;
      }
  // Tasks: blocks of up to 64 rows x one group of panels, row block by row block (the block's
  // activations stay in L1/L2 while the weights stream). K is split into the path's blocks
  // (k_block); the row tiles' accumulators live in a per-task buffer between K blocks.
  const PanelGroups pgs(tp, np);
  const int64_t groups = pgs.count, acc_ld = tp.panels * kPanel;
  const int64_t mb = 64, row_blocks = (m + mb - 1) / mb, kb = tp.k_block;
  parallel_for(row_blocks * groups, num_threads, [&](int64_t task) {
    const int64_t g = task % groups, i0 = (task / groups) * mb, i1 = std::min(m, i0 + mb);
    const int64_t p0 = pgs.first(g), panels = pgs.size(g, np);
    const int8_t* panel = packed + p0 * kp * kPanel;
    const int64_t j0 = p0 * kPanel, cols = std::min<int64_t>(panels * kPanel, n - j0);
    alignas(64) int32_t accbuf[64 * kMaxPanels * kPanel];
    if (tp.block) {  // accumulators over the whole K (AMX tiles)
      const AmxSegment whole{a + i0 * lda, 0, kp};
      tp.block(&whole, 1, lda, i1 - i0, panel, kp * kPanel, int(panels), kp, accbuf, acc_ld);
    } else {
      for (int64_t k0 = 0; k0 < kp; k0 += kb) {
        const int64_t klen = std::min(kb, kp - k0);
        for (int64_t i = i0; i < i1; i += tp.rows) {
          const int rows = int(std::min<int64_t>(tp.rows, i1 - i));
          tp.tile(a + i * lda + k0, lda, rows, panel + k0 * kPanel, kp * kPanel, int(panels), klen, u7,
                  accbuf + (i - i0) * acc_ld, acc_ld, k0 > 0);
        }
      }
    }
    for (int64_t i = i0; i < i1; i += tp.rows) {
      const int rows = int(std::min<int64_t>(tp.rows, i1 - i));
      tp.store(accbuf + (i - i0) * acc_ld, acc_ld, rows, cols, a_zero_point, row_sum, out, n, i, j0);
    }
  });
}

void conv_with(const TilePath& tp, const uint8_t* in, ConvGeometry g, int64_t cout, int32_t a_zero_point,
               const int8_t* packed, const int32_t* row_sum, float a_scale, const float* w_scale, const float* bias,
               float* out, const int64_t* os, int num_threads) {
  const int64_t np = packed_panels(cout), kp = g.kh * g.kw * g.cp, taps = g.kh * g.kw;
  const PanelGroups pgs(tp, np);
  const int64_t groups = pgs.count, acc_ld = tp.panels * kPanel;
  // Tasks: one output row of one image x one group of panels; pixels in tiles of tp.rows, or in
  // blocks of up to 64 with one K segment per tap (AMX).
  const int64_t step = tp.block ? 64 : tp.rows;
  parallel_for(g.batch * g.out_h * groups, num_threads, [&](int64_t task) {
    const int64_t gi = task % groups, bo = task / groups, b = bo / g.out_h, oh = bo % g.out_h;
    const int64_t p0 = pgs.first(gi), panels = pgs.size(gi, np);
    const int8_t* panel = packed + p0 * kp * kPanel;
    const int64_t j0 = p0 * kPanel, cols = std::min<int64_t>(panels * kPanel, cout - j0);
    auto tap_input = [&](int64_t t, int64_t ow) {
      const int64_t i = t / g.kw, j = t % g.kw;
      return in + ((b * g.in_h + oh * g.sh + i * g.dh) * g.in_w + ow * g.sw + j * g.dw) * g.cp;
    };
    alignas(64) int32_t acc[64 * kMaxPanels * kPanel];
    std::vector<AmxSegment> seg(size_t(tp.block ? taps : 0));
    for (int64_t ow = 0; ow < g.out_w; ow += step) {
      const int rows = int(std::min<int64_t>(step, g.out_w - ow));
      if (tp.block) {
        for (int64_t t = 0; t < taps; ++t) seg[size_t(t)] = AmxSegment{tap_input(t, ow), t * g.cp, g.cp};
        tp.block(seg.data(), taps, g.sw * g.cp, rows, panel, kp * kPanel, int(panels), kp, acc, acc_ld);
      } else {
        for (int64_t t = 0; t < taps; ++t)
          tp.tile(tap_input(t, ow), g.sw * g.cp, rows, panel + t * g.cp * kPanel, kp * kPanel, int(panels), g.cp,
                  true, acc, acc_ld, t > 0);
      }
      for (int64_t c = 0; c < cols; ++c) {
        const float s = a_scale * w_scale[j0 + c], bb = bias ? bias[j0 + c] : 0.0f;
        const int32_t comp = a_zero_point * row_sum[j0 + c];
        float* o = out + b * os[0] + (j0 + c) * os[1] + oh * os[2] + ow * os[3];
        for (int r = 0; r < rows; ++r) o[r * os[3]] = float(acc[r * acc_ld + c] - comp) * s + bb;
      }
    }
  });
}

}  // namespace

void gemm_u8s8(const uint8_t* a, int64_t lda, int64_t m, int64_t n, int64_t k, int32_t a_zero_point,
               const int8_t* packed, const int32_t* row_sum, GemmOutput out, int num_threads) {
  gemm_with(*path_for(int8_gemm_isa()), a, lda, m, n, k, a_zero_point, packed, row_sum, out, num_threads);
}

void gemm_u8s8_isa(Isa isa, const uint8_t* a, int64_t lda, int64_t m, int64_t n, int64_t k, int32_t a_zero_point,
                   const int8_t* packed, const int32_t* row_sum, GemmOutput out, int num_threads) {
  gemm_with(*path_for(isa), a, lda, m, n, k, a_zero_point, packed, row_sum, out, num_threads);
}

void gemm_u8s8_amx_model(const uint8_t* a, int64_t lda, int64_t m, int64_t n, int64_t k, int32_t a_zero_point,
                         const int8_t* packed, const int32_t* row_sum, GemmOutput out, int num_threads) {
  gemm_with(kAmxModel, a, lda, m, n, k, a_zero_point, packed, row_sum, out, num_threads);
}

namespace {

// One pass over n values for their min/max (from 0) and finiteness, in chunks of 64K values
// (256 KB) split over the threads (one chunk runs inline). Returns false if any is NaN or +-inf.
bool finite_range(const float* x, int64_t n, int num_threads, float* lo, float* hi) {
  constexpr int64_t kChunk = int64_t(1) << 16;
  const ActPath ap = act_path();
  const int64_t chunks = std::max<int64_t>(1, (n + kChunk - 1) / kChunk);
  if (chunks == 1 || num_threads <= 1) {
    *lo = *hi = 0.0f;
    return ap.finite_minmax(x, n, lo, hi);
  }
  std::vector<float> los(size_t(chunks), 0.0f), his(size_t(chunks), 0.0f);
  std::vector<char> ok(size_t(chunks), 1);
  parallel_for(chunks, num_threads, [&](int64_t c) {
    const int64_t b = c * kChunk, e = std::min(n, b + kChunk);
    ok[size_t(c)] = ap.finite_minmax(x + b, e - b, &los[size_t(c)], &his[size_t(c)]);
  });
  *lo = *std::min_element(los.begin(), los.end());
  *hi = *std::max_element(his.begin(), his.end());
  return std::all_of(ok.begin(), ok.end(), [](char v) { return v != 0; });
}

}  // namespace

bool all_finite(const float* x, int64_t n, int num_threads) {
  float lo, hi;  // the range comes free with the check (a memory-bound pass)
  return finite_range(x, n, num_threads, &lo, &hi);
}

bool dynamic_act_params_u7(const float* x, int64_t n, ActQuant* q, int num_threads) {
  float lo, hi;  // the range always includes 0, so that 0 is exact
  if (!finite_range(x, n, num_threads, &lo, &hi)) return false;
  q->scale = hi > lo ? (hi - lo) / 127.0f : 1.0f;
  q->zero_point = int32_t(std::min(127.0f, std::max(0.0f, std::nearbyint(-lo / q->scale))));
  return true;
}

void quantize_nchw_to_nhwc_u7(const float* x, int64_t batch, int64_t c, int64_t h, int64_t w, int64_t pt, int64_t pb,
                              int64_t pl, int64_t pr, int64_t cp, ActQuant q, uint8_t* out, int num_threads) {
  const int64_t hp = h + pt + pb, wp = w + pl + pr;
  const float inv = 1.0f / q.scale;
  const uint8_t zp = uint8_t(q.zero_point);
  const ActPath ap = act_path();
  parallel_for(batch * hp, num_threads, [&](int64_t bh) {
    const int64_t b = bh / hp, y = bh % hp - pt;
    uint8_t* row = out + bh * wp * cp;
    std::memset(row, zp, size_t(wp * cp));
    if (y < 0 || y >= h) return;
    // Each channel's row quantized contiguously (vectorised), then interleaved into NHWC.
    std::vector<uint8_t> codes(size_t(c * w));
    for (int64_t ch = 0; ch < c; ++ch)
      ap.quantize_row(x + ((b * c + ch) * h + y) * w, w, inv, float(q.zero_point), codes.data() + ch * w);
    for (int64_t xx = 0; xx < w; ++xx) {
      uint8_t* px = row + (xx + pl) * cp;
      for (int64_t ch = 0; ch < c; ++ch) px[ch] = codes[size_t(ch * w + xx)];
    }
  });
}

void conv2d_u8s8(const uint8_t* in, ConvGeometry g, int64_t cout, int32_t a_zero_point, const int8_t* packed,
                 const int32_t* row_sum, float a_scale, const float* w_scale, const float* bias, float* out,
                 const int64_t* os, int num_threads) {
  conv_with(*path_for(int8_gemm_isa()), in, g, cout, a_zero_point, packed, row_sum, a_scale, w_scale, bias, out, os, num_threads);
}

void conv2d_u8s8_isa(Isa isa, const uint8_t* in, ConvGeometry g, int64_t cout, int32_t a_zero_point,
                     const int8_t* packed, const int32_t* row_sum, float a_scale, const float* w_scale,
                     const float* bias, float* out, const int64_t* os, int num_threads) {
  conv_with(*path_for(isa), in, g, cout, a_zero_point, packed, row_sum, a_scale, w_scale, bias, out, os, num_threads);
}

void conv2d_u8s8_amx_model(const uint8_t* in, ConvGeometry g, int64_t cout, int32_t a_zero_point,
                           const int8_t* packed, const int32_t* row_sum, float a_scale, const float* w_scale,
                           const float* bias, float* out, const int64_t* os, int num_threads) {
  conv_with(kAmxModel, in, g, cout, a_zero_point, packed, row_sum, a_scale, w_scale, bias, out, os, num_threads);
}

void quantize_activations_static_u7(const float* x, int64_t m, int64_t k, ActQuant q, uint8_t* a, int64_t lda,
                                    int num_threads) {
  const float inv = 1.0f / q.scale;
  const ActPath ap = act_path();
  parallel_for(m, num_threads, [&](int64_t i) {
    uint8_t* row = a + i * lda;
    ap.quantize_row(x + i * k, k, inv, float(q.zero_point), row);
    for (int64_t kk = k; kk < lda; ++kk) row[kk] = 0;
  });
}

}  // namespace edgegen::kernels::quant
