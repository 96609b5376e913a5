#include "kernels/quant/int4.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/parallel.h"

namespace edgegen::kernels::quant {

// The family's two sets of paths. Weight-only (float activations): rows_f32, one packed weight
// row against up to 4 activation rows (in packed lane order when permute_x), and dequant_row, one
// weight row in feature order. W4A8: rows_a8, one packed weight row against rows [i0, i0 + m)
// (m <= 4) of the prepared 8-bit activations.
struct FloatPath {
  Isa isa;
  bool permute_x;
  void (*rows_f32)(const uint8_t* row, const float* x, int64_t ldx, int m, int64_t k, int64_t group,
                   const float* scale, float* out);
  void (*dequant_row)(const uint8_t* row, int64_t k, int64_t group, const float* scale, const uint8_t* zero,
                      float* w);
};

struct A8Path {
  Isa isa;
  void (*rows_a8)(const uint8_t* row, const A8Rows& a, int64_t i0, int m, int64_t group, const float* scale,
                  const uint8_t* zero, float* out);
  // The vector paths' activation codes in feature order (prepare_a8's loop when null) and GEMM form
  // for kA8GemmRows rows and more (the rows kernel throughout when null).
  void (*codes)(const float* x, int64_t m, int64_t k, int64_t group, int8_t* natural, float* group_scale,
                float* zero_sum, int num_threads) = nullptr;
  void (*gemm)(const A8Rows& a, int64_t n, const uint8_t* packed, const float* scale, const uint8_t* zero,
               int64_t group, const float* bias, float* out, int num_threads) = nullptr;
};

#if defined(EDGEGEN_HAVE_AVX2)
// int4_avx2.cpp
void int4_rows_avx2(const uint8_t* row, const float* x, int64_t ldx, int m, int64_t k, int64_t group,
                    const float* scale, float* out);
void int4_dequant_row_avx2(const uint8_t* row, int64_t k, int64_t group, const float* scale, const uint8_t* zero,
                           float* w);
void int4_rows_a8_avx2(const uint8_t* row, const A8Rows& a, int64_t i0, int m, int64_t group, const float* scale,
                       const uint8_t* zero, float* out);
void int4_a8_codes_avx2(const float* x, int64_t m, int64_t k, int64_t group, int8_t* natural, float* group_scale,
                        float* zero_sum, int num_threads);
void int4_linear_a8_gemm_avx2(const A8Rows& a, int64_t n, const uint8_t* packed, const float* scale,
                              const uint8_t* zero, int64_t group, const float* bias, float* out, int num_threads);
// int4_avx512.cpp: the rows kernel, and the GEMM form for many rows (output features along the
// lanes, weights unpacked once per call).
void int4_a8_codes_avx512(const float* x, int64_t m, int64_t k, int64_t group, int8_t* natural, float* group_scale,
                          float* zero_sum, int num_threads);
void int4_linear_a8_gemm_avx512_vnni(const A8Rows& a, int64_t n, const uint8_t* packed, const float* scale,
                                     const uint8_t* zero, int64_t group, const float* bias, float* out,
                                     int num_threads);
void int4_rows_a8_avx512_vnni(const uint8_t* row, const A8Rows& a, int64_t i0, int m, int64_t group,
                              const float* scale, const uint8_t* zero, float* out);
#endif

namespace {

// Byte offset (within a row) and shift of the nibble holding input feature k.
inline void nibble_at(int64_t k, int64_t* byte, int* shift) {
  const int64_t chunk = k / 64, r = k % 64, half = r / 32, t = (r % 32) / 4, lane = r % 4;
  const int64_t word = half * 4 + lane;
  *byte = chunk * 32 + word * 4 + t / 2;
  *shift = int(t % 2) * 4;
}

inline int nibble(const uint8_t* row, int64_t k) {
  int64_t byte;
  int shift;
  nibble_at(k, &byte, &shift);
  return (row[byte] >> shift) & 0x0f;
}

void rows_f32_scalar(const uint8_t* row, const float* x, int64_t ldx, int m, int64_t k, int64_t group,
                     const float* scale, float* out) {
  for (int i = 0; i < m; ++i) {
    float acc = 0.0f;
    for (int64_t g = 0; g < k / group; ++g) {
      float dot = 0.0f;
      for (int64_t kk = g * group; kk < (g + 1) * group; ++kk) dot += float(nibble(row, kk)) * x[i * ldx + kk];
      acc += scale[g] * dot;
    }
    out[i] = acc;
  }
}

void dequant_row_scalar(const uint8_t* row, int64_t k, int64_t group, const float* scale, const uint8_t* zero,
                        float* w) {
  for (int64_t kk = 0; kk < k; ++kk)
    w[kk] = float(nibble(row, kk) - int(zero[kk / group])) * scale[kk / group];
}

void rows_a8_scalar(const uint8_t* row, const A8Rows& a, int64_t i0, int m, int64_t group, const float* scale,
                    const uint8_t* zero, float* out) {
  const int64_t groups = a.k / group;
  for (int i = 0; i < m; ++i) {
    const int8_t* c = a.natural + (i0 + i) * a.k;
    const float* sx = a.group_scale + (i0 + i) * groups;
    float acc = 0.0f;
    for (int64_t g = 0; g < groups; ++g) {
      int32_t dot = 0, sum = 0;
      for (int64_t kk = g * group; kk < (g + 1) * group; ++kk) {
        dot += int32_t(c[kk]) * nibble(row, kk);
        sum += c[kk];
      }
      acc += scale[g] * sx[g] * float(dot - int32_t(zero[g]) * sum);
    }
    out[i] = acc;
  }
}

constexpr FloatPath kFloatScalar{Isa::Scalar, false, &rows_f32_scalar, &dequant_row_scalar};
constexpr A8Path kA8Scalar{Isa::Scalar, &rows_a8_scalar};
#if defined(EDGEGEN_HAVE_AVX2)
constexpr FloatPath kFloatAvx2{Isa::Avx2, true, &int4_rows_avx2, &int4_dequant_row_avx2};
constexpr A8Path kA8Avx2{Isa::Avx2, &int4_rows_a8_avx2, &int4_a8_codes_avx2, &int4_linear_a8_gemm_avx2};
constexpr A8Path kA8Avx512Vnni{Isa::Avx512Vnni, &int4_rows_a8_avx512_vnni, &int4_a8_codes_avx512,
                               &int4_linear_a8_gemm_avx512_vnni};
#endif

// The best path of each set at or below a level.
const FloatPath& float_path(Isa isa) {
#if defined(EDGEGEN_HAVE_AVX2)
  if (isa >= Isa::Avx2) return kFloatAvx2;
#endif
  (void)isa;
  return kFloatScalar;
}

const A8Path& a8_path(Isa isa) {
#if defined(EDGEGEN_HAVE_AVX2)
  if (isa >= Isa::Avx512Vnni) return kA8Avx512Vnni;
  if (isa >= Isa::Avx2) return kA8Avx2;
#endif
  (void)isa;
  return kA8Scalar;
}

void gemv_with(const FloatPath& p, const float* x, int64_t m, int64_t n, int64_t k, const uint8_t* packed,
               const float* scale, const uint8_t* zero, int64_t group, const float* bias, float* out,
               int num_threads) {
  const int64_t groups = k / group;
  // Per-group sums of x, for the zero-point term.
  std::vector<float> xsum(size_t(m * groups));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t g = 0; g < groups; ++g) {
      float s = 0.0f;
      for (int64_t t = 0; t < group; ++t) s += x[i * k + g * group + t];
      xsum[size_t(i * groups + g)] = s;
    }
  // The activations in the lane order of the packed words (see int4.h), for the vector paths.
  std::vector<float> xp;
  if (p.permute_x) {
    xp.resize(size_t(m * k));
    for (int64_t i = 0; i < m; ++i)
      for (int64_t c = 0; c < k; c += 64)
        for (int t = 0; t < 8; ++t)
          for (int l = 0; l < 8; ++l)
            xp[size_t(i * k + c + 8 * t + l)] = x[i * k + c + (l < 4 ? 4 * t + l : 32 + 4 * t + l - 4)];
  }
  const float* xs = p.permute_x ? xp.data() : x;
  parallel_for(n, num_threads, [&](int64_t r) {
    const uint8_t* row = packed + r * k / 2;
    const float* sc = scale + r * groups;
    const uint8_t* zr = zero + r * groups;
    for (int64_t i0 = 0; i0 < m; i0 += 4) {
      const int rows = int(std::min<int64_t>(4, m - i0));
      float dots[4];
      p.rows_f32(row, xs + i0 * k, k, rows, k, group, sc, dots);
      for (int i = 0; i < rows; ++i) {
        float zterm = 0.0f;  // sum_g scale_g * zero_g * sum_{k in g} x_k
        for (int64_t g = 0; g < groups; ++g) zterm += sc[g] * float(zr[g]) * xsum[size_t((i0 + i) * groups + g)];
        out[(i0 + i) * n + r] = dots[i] - zterm + (bias ? bias[r] : 0.0f);
      }
    }
  });
}

// Quantizes x per row and group and lays the codes out for the vector paths (A8Rows).
struct A8Buffers {
  std::vector<int8_t> codes, natural;
  std::vector<float> group_scale, zero_sum, lane_scale;
};

// lanes: also the codes and scales in the rows kernels' lane order (the GEMM form needs only the
// natural order). codes: the path's vector code for the codes in feature order (null: the loop
// below).
A8Rows prepare_a8(const float* x, int64_t m, int64_t k, int64_t group, A8Buffers& buf, int num_threads, bool lanes,
                  decltype(A8Path::codes) codes) {
  const int64_t groups = k / group, blocks = lanes ? (k + 127) / 128 : 0;
  buf.codes.assign(size_t(m * blocks * 128), 0);
  buf.natural.resize(size_t(m * k));
  buf.group_scale.resize(size_t(m * groups));
  buf.zero_sum.resize(size_t(m * groups));
  buf.lane_scale.assign(size_t(m * blocks * 16), 0.0f);
  if (codes) codes(x, m, k, group, buf.natural.data(), buf.group_scale.data(), buf.zero_sum.data(), num_threads);
  if (codes && !lanes)
    return {m, k, 0, nullptr, buf.natural.data(), buf.group_scale.data(), buf.zero_sum.data(), nullptr};
  parallel_for(m, num_threads, [&](int64_t i) {
    const float* xr = x + i * k;
    int8_t* nat = buf.natural.data() + i * k;
    float* gs = buf.group_scale.data() + i * groups;
    float* zs = buf.zero_sum.data() + i * groups;
    for (int64_t g = 0; g < groups && !codes; ++g) {
      float amax = 0.0f;
      for (int64_t kk = g * group; kk < (g + 1) * group; ++kk) amax = std::max(amax, std::fabs(xr[kk]));
      float s = amax / 127.0f;
      if (!(s > 0.0f)) s = 1.0f;  // an all-zero group (or one whose scale underflows): codes 0
      gs[g] = s;
      int32_t sum = 0;
      for (int64_t kk = g * group; kk < (g + 1) * group; ++kk) {
        nat[kk] = int8_t(std::min(127.0f, std::max(-127.0f, std::nearbyint(xr[kk] / s))));
        sum += nat[kk];
      }
      zs[g] = s * float(sum);
    }
    for (int64_t b = 0; b < blocks; ++b) {
      int8_t* cd = buf.codes.data() + (i * blocks + b) * 128;
      float* lc = buf.lane_scale.data() + (i * blocks + b) * 16;
      for (int64_t c = 0; c < 2 && b * 128 + 64 * c < k; ++c) {
        const int64_t k0 = b * 128 + 64 * c;
        for (int j = 0; j < 32; ++j) {
          const int w = j / 4, byte = j % 4;
          const int64_t klo = k0 + 32 * (w / 4) + w % 4 + 8 * byte;
          cd[32 * c + j] = nat[klo];
          cd[64 + 32 * c + j] = nat[klo + 4];
        }
        for (int w = 0; w < 8; ++w) lc[8 * c + w] = gs[(k0 + 32 * (w / 4)) / group];
      }
    }
  });
  return {m,
          k,
          blocks,
          buf.codes.data(),
          buf.natural.data(),
          buf.group_scale.data(),
          buf.zero_sum.data(),
          buf.lane_scale.data()};
}

void a8_with(const A8Path& p, const float* x, int64_t m, int64_t n, int64_t k, const uint8_t* packed,
             const float* scale, const uint8_t* zero, int64_t group, const float* bias, float* out,
             int num_threads) {
  A8Buffers buf;
  const bool gemm = p.gemm && m >= kA8GemmRows;
  const A8Rows a = prepare_a8(x, m, k, group, buf, num_threads, !gemm, p.codes);
  if (gemm) return p.gemm(a, n, packed, scale, zero, group, bias, out, num_threads);
  const int64_t groups = k / group;
  // Tasks: panels of weight rows; within one, each tile of 4 activation rows meets every row of
  // the panel while both stay in L1 (activations are not streamed again for every weight row).
  const int64_t panel = m <= 4 ? 1 : 8, panels = (n + panel - 1) / panel;
  parallel_for(panels, num_threads, [&](int64_t t) {
    const int64_t r0 = t * panel, r1 = std::min(n, r0 + panel);
    for (int64_t i0 = 0; i0 < m; i0 += 4) {
      const int rows = int(std::min<int64_t>(4, m - i0));
      for (int64_t r = r0; r < r1; ++r) {
        float dots[4];
        p.rows_a8(packed + r * k / 2, a, i0, rows, group, scale + r * groups, zero + r * groups, dots);
        for (int i = 0; i < rows; ++i) out[(i0 + i) * n + r] = dots[i] + (bias ? bias[r] : 0.0f);
      }
    }
  });
}

}  // namespace

Isa int4_isa() {
  return pick_isa({Isa::Avx2, Isa::Scalar});
}

Isa int4_a8_isa() {
  return pick_isa({Isa::Avx512Vnni, Isa::Avx2, Isa::Scalar});
}

bool int4_has_path(Isa isa, bool a8) {
  return (a8 ? a8_path(isa).isa : float_path(isa).isa) == isa;
}

void pack_int4(const uint8_t* q, int64_t n, int64_t k, uint8_t* packed) {
  for (int64_t r = 0; r < n; ++r) {
    uint8_t* row = packed + r * k / 2;
    for (int64_t i = 0; i < k / 2; ++i) row[i] = 0;
    for (int64_t kk = 0; kk < k; ++kk) {
      int64_t byte;
      int shift;
      nibble_at(kk, &byte, &shift);
      row[byte] = uint8_t(row[byte] | ((q[r * k + kk] & 0x0f) << shift));
    }
  }
}

void unpack_int4(const uint8_t* packed, int64_t n, int64_t k, uint8_t* q) {
  for (int64_t r = 0; r < n; ++r)
    for (int64_t kk = 0; kk < k; ++kk) q[r * k + kk] = uint8_t(nibble(packed + r * k / 2, kk));
}

void int4_gemv(const float* x, int64_t m, int64_t n, int64_t k, const uint8_t* packed, const float* scale,
               const uint8_t* zero, int64_t group, const float* bias, float* out, int num_threads) {
  int4_gemv_isa(int4_isa(), x, m, n, k, packed, scale, zero, group, bias, out, num_threads);
}

void int4_gemv_isa(Isa isa, const float* x, int64_t m, int64_t n, int64_t k, const uint8_t* packed,
                   const float* scale, const uint8_t* zero, int64_t group, const float* bias, float* out,
                   int num_threads) {
  gemv_with(float_path(isa), x, m, n, k, packed, scale, zero, group, bias, out, num_threads);
}

void int4_linear_a8(const float* x, int64_t m, int64_t n, int64_t k, const uint8_t* packed, const float* scale,
                    const uint8_t* zero, int64_t group, const float* bias, float* out, int num_threads) {
  int4_linear_a8_isa(int4_a8_isa(), x, m, n, k, packed, scale, zero, group, bias, out, num_threads);
}

void int4_linear_a8_isa(Isa isa, const float* x, int64_t m, int64_t n, int64_t k, const uint8_t* packed,
                        const float* scale, const uint8_t* zero, int64_t group, const float* bias, float* out,
                        int num_threads) {
  a8_with(a8_path(isa), x, m, n, k, packed, scale, zero, group, bias, out, num_threads);
}

void int4_dequantize_rows(const uint8_t* packed, const float* scale, const uint8_t* zero, int64_t k, int64_t group,
                          int64_t n0, int64_t n1, float* w, int num_threads) {
  const int64_t groups = k / group;
  const FloatPath& p = float_path(int4_isa());
  parallel_for(n1 - n0, num_threads, [&](int64_t rr) {
    const int64_t r = n0 + rr;
    p.dequant_row(packed + r * k / 2, k, group, scale + r * groups, zero + r * groups, w + rr * k);
  });
}

}  // namespace edgegen::kernels::quant
