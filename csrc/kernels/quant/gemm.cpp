#include "kernels/quant/gemm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/parallel.h"

namespace edgegen::kernels::quant {

#if defined(EDGEGEN_HAVE_AVX2)
// gemm_avx2.cpp: one [rows <= 4, 16] tile over the whole K; u7 selects vpmaddubsw (a <= 127).
void tile_avx2(const uint8_t* a, int64_t lda, int rows, const int8_t* panel, int64_t kp, bool u7, int32_t* acc,
               bool accumulate);
void store_tile_avx2(const int32_t* acc, int rows, int32_t a_zero_point, const int32_t* row_sum, const GemmOutput& out,
                     int64_t n, int64_t i, int64_t j0);
#endif

namespace {

void tile_scalar(const uint8_t* a, int64_t lda, int rows, const int8_t* panel, int64_t kp, int32_t* acc,
                 bool accumulate) {
  for (int r = 0; r < rows; ++r) {
    int32_t sum[kPanel] = {0};
    if (accumulate) std::memcpy(sum, acc + r * kPanel, sizeof(sum));
    const uint8_t* ar = a + r * lda;
    for (int64_t q = 0; q < kp / 4; ++q) {
      const int8_t* blk = panel + q * 4 * kPanel;
      for (int j = 0; j < kPanel; ++j)
        for (int t = 0; t < 4; ++t) sum[j] += int32_t(ar[4 * q + t]) * int32_t(blk[4 * j + t]);
    }
    std::memcpy(acc + r * kPanel, sum, sizeof(sum));
  }
}

}  // namespace

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

void gemm_u8s8(const uint8_t* a, int64_t lda, int64_t m, int64_t n, int64_t k, int32_t a_zero_point,
               const int8_t* packed, const int32_t* row_sum, GemmOutput out, int num_threads) {
  const int64_t kp = packed_k(k), np = packed_panels(n);
  bool u7 = true;
  for (int64_t i = 0; i < m && u7; ++i)
    for (int64_t kk = 0; kk < k; ++kk)
      if (a[i * lda + kk] > 127) {
        u7 = false;
        break;
      }
  const bool avx2 = best_isa() == Isa::Avx2;
  (void)u7;
  // Tasks: blocks of up to 64 rows x one panel. K is split into blocks of 1024 so that a panel's
  // slice (16 KB) stays in L1 while every row tile of the block passes over it; the row tiles'
  // accumulators live in a per-task buffer between K blocks.
  const int64_t mb = 64, row_blocks = (m + mb - 1) / mb, kb = 1024;
  parallel_for(row_blocks * np, num_threads, [&](int64_t task) {
    const int64_t p = task % np, i0 = (task / np) * mb, i1 = std::min(m, i0 + mb);
    const int8_t* panel = packed + p * kp * kPanel;
    const int64_t j0 = p * kPanel, cols = std::min<int64_t>(kPanel, n - j0);
    int32_t accbuf[64 * kPanel];
    for (int64_t k0 = 0; k0 < kp; k0 += kb) {
      const int64_t klen = std::min(kb, kp - k0);
      for (int64_t i = i0; i < i1; i += 4) {
        const int rows = int(std::min<int64_t>(4, i1 - i));
        int32_t* acc = accbuf + (i - i0) * kPanel;
#if defined(EDGEGEN_HAVE_AVX2)
        if (avx2) tile_avx2(a + i * lda + k0, lda, rows, panel + k0 * kPanel, klen, u7, acc, k0 > 0);
        else tile_scalar(a + i * lda + k0, lda, rows, panel + k0 * kPanel, klen, acc, k0 > 0);
#else
        tile_scalar(a + i * lda + k0, lda, rows, panel + k0 * kPanel, klen, acc, k0 > 0);
#endif
      }
    }
    for (int64_t i = i0; i < i1; i += 4) {
      const int rows = int(std::min<int64_t>(4, i1 - i));
      const int32_t* acc = accbuf + (i - i0) * kPanel;
#if defined(EDGEGEN_HAVE_AVX2)
      if (avx2 && cols == kPanel) {
        store_tile_avx2(acc, rows, a_zero_point, row_sum, out, n, i, j0);
        continue;
      }
#endif
      for (int r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          const int32_t v = acc[r * kPanel + c] - a_zero_point * row_sum[j0 + c];
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
  });
}

ActQuant dynamic_act_params_u7(const float* x, int64_t n) {
  float lo = 0.0f, hi = 0.0f;  // the range always includes 0, so that 0 is exact
  for (int64_t i = 0; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  ActQuant q{hi > lo ? (hi - lo) / 127.0f : 1.0f, 0};
  q.zero_point = int32_t(std::min(127.0f, std::max(0.0f, std::nearbyint(-lo / q.scale))));
  return q;
}

ActQuant quantize_activations_u7(const float* x, int64_t m, int64_t k, uint8_t* a, int64_t lda, int num_threads) {
  const ActQuant q = dynamic_act_params_u7(x, m * k);
  quantize_activations_static_u7(x, m, k, q, a, lda, num_threads);
  return q;
}

void quantize_nchw_to_nhwc_u7(const float* x, int64_t batch, int64_t c, int64_t h, int64_t w, int64_t pt, int64_t pb,
                              int64_t pl, int64_t pr, int64_t cp, ActQuant q, uint8_t* out, int num_threads) {
  const int64_t hp = h + pt + pb, wp = w + pl + pr;
  const float inv = 1.0f / q.scale;
  const uint8_t zp = uint8_t(q.zero_point);
  parallel_for(batch * hp, num_threads, [&](int64_t bh) {
    const int64_t b = bh / hp, y = bh % hp - pt;
    uint8_t* row = out + bh * wp * cp;
    std::memset(row, zp, size_t(wp * cp));
    if (y < 0 || y >= h) return;
    for (int64_t ch = 0; ch < c; ++ch) {
      const float* src = x + ((b * c + ch) * h + y) * w;
      for (int64_t xx = 0; xx < w; ++xx) {
        const float v = std::nearbyint(src[xx] * inv) + float(q.zero_point);
        row[(xx + pl) * cp + ch] = uint8_t(std::min(127.0f, std::max(0.0f, v)));
      }
    }
  });
}

void conv2d_u8s8(const uint8_t* in, ConvGeometry g, int64_t cout, int32_t a_zero_point, const int8_t* packed,
                 const int32_t* row_sum, float a_scale, const float* w_scale, const float* bias, float* out,
                 const int64_t* os, int num_threads) {
  const int64_t np = packed_panels(cout), kp = g.kh * g.kw * g.cp, taps = g.kh * g.kw;
  const bool avx2 = best_isa() == Isa::Avx2;
  (void)avx2;
  // Tasks: one output row of one image x one panel of 16 output channels; pixels in tiles of 4.
  parallel_for(g.batch * g.out_h * np, num_threads, [&](int64_t task) {
    const int64_t p = task % np, bo = task / np, b = bo / g.out_h, oh = bo % g.out_h;
    const int8_t* panel = packed + p * kp * kPanel;
    const int64_t j0 = p * kPanel, cols = std::min<int64_t>(kPanel, cout - j0);
    int32_t acc[4 * kPanel];
    for (int64_t ow = 0; ow < g.out_w; ow += 4) {
      const int rows = int(std::min<int64_t>(4, g.out_w - ow));
      for (int64_t t = 0; t < taps; ++t) {
        const int64_t i = t / g.kw, j = t % g.kw;
        const uint8_t* a = in + ((b * g.in_h + oh * g.sh + i * g.dh) * g.in_w + ow * g.sw + j * g.dw) * g.cp;
        const int8_t* slice = panel + t * g.cp * kPanel;
#if defined(EDGEGEN_HAVE_AVX2)
        if (avx2) tile_avx2(a, g.sw * g.cp, rows, slice, g.cp, true, acc, t > 0);
        else tile_scalar(a, g.sw * g.cp, rows, slice, g.cp, acc, t > 0);
#else
        tile_scalar(a, g.sw * g.cp, rows, slice, g.cp, acc, t > 0);
#endif
      }
      for (int64_t c = 0; c < cols; ++c) {
        const float s = a_scale * w_scale[j0 + c], bb = bias ? bias[j0 + c] : 0.0f;
        const int32_t comp = a_zero_point * row_sum[j0 + c];
        float* o = out + b * os[0] + (j0 + c) * os[1] + oh * os[2] + ow * os[3];
        for (int r = 0; r < rows; ++r) o[r * os[3]] = float(acc[r * kPanel + c] - comp) * s + bb;
      }
    }
  });
}

void quantize_activations_static_u7(const float* x, int64_t m, int64_t k, ActQuant q, uint8_t* a, int64_t lda,
                                    int num_threads) {
  const float inv = 1.0f / q.scale;
  parallel_for(m, num_threads, [&](int64_t i) {
    uint8_t* row = a + i * lda;
    for (int64_t kk = 0; kk < k; ++kk) {
      const float v = std::nearbyint(x[i * k + kk] * inv) + float(q.zero_point);
      row[kk] = uint8_t(std::min(127.0f, std::max(0.0f, v)));
    }
    for (int64_t kk = k; kk < lda; ++kk) row[kk] = 0;
  });
}

}  // namespace edgegen::kernels::quant
