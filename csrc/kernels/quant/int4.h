// INT4 linear layers: 4-bit unsigned weights, two per byte, one float32 scale and one integer
// zero point per group of G consecutive input features (G in {32, 64, 128}):
//   w[n][k] = (q[n][k] - zero[n][k / G]) * scale[n][k / G],  q in [0, 15].
// Packing, in chunks of 64 input features = 32 bytes = 8 little-endian 32-bit words: nibble t
// (bits 4t..4t+3) of word w holds k = k0 + 32 * (w / 4) + 4 * t + w % 4. Shifting the 8 words right
// by 4t and masking gives 8 lanes that are k0 + 4t + (0..3) and k0 + 32 + 4t + (0..3): no
// shuffles, and the activations are permuted to match once per call. Seen as bytes, byte b of word
// w holds k = k0 + 32 * (w / 4) + w % 4 + 8 * b in its low nibble and k + 4 in its high one, so a
// 32-bit lane of a chunk covers 8 features of one half (32) of it. K must be a multiple of 64.
#pragma once
#include <cstdint>
#include <type_traits>

#include "kernels/cpu_features.h"

namespace edgegen::kernels::quant {

// q: [n, k] values in [0, 15]; packed: [n, k / 2].
void pack_int4(const uint8_t* q, int64_t n, int64_t k, uint8_t* packed);
void unpack_int4(const uint8_t* packed, int64_t n, int64_t k, uint8_t* q);

// The family's paths, chosen per call under the ISA cap (kernels/cpu_features.h):
//   int4_isa     the weight-only path (float activations): avx2 or scalar;
//   int4_a8_isa  the 8-bit-activation path: avx512_vnni (vpdpbusd), avx2 (vpmaddubsw: a nibble
//                times a code is at most 15 * 127, so its int16 pair sums never saturate) or scalar.
// int4_has_path: whether the build has a path of its own at a level (the *_isa forms run it; the
// caller checks cpu_supports first).
Isa int4_isa();
Isa int4_a8_isa();
bool int4_has_path(Isa isa, bool a8);

// out[m][n] = sum_k x[m][k] * w[n][k] (+ bias[n]); x float32 [m, k]. Dequantises inside the dot
// products: sum_g scale_g * (sum_{k in g} q_k x_k - zero_g * sum_{k in g} x_k). For small m.
void int4_gemv(const float* x, int64_t m, int64_t n, int64_t k, const uint8_t* packed, const float* scale,
               const uint8_t* zero, int64_t group, const float* bias, float* out, int num_threads);
void int4_gemv_isa(Isa isa, const float* x, int64_t m, int64_t n, int64_t k, const uint8_t* packed,
                   const float* scale, const uint8_t* zero, int64_t group, const float* bias, float* out,
                   int num_threads);

// 4-bit weights x 8-bit activations (W4A8). Each row of x is quantized per group of `group`
// features to symmetric int8: sx = max|x| / 127 over the group (1 where the group is all zero),
// code = round-half-even(x / sx) clamped to [-127, 127]; then
//   out[i][r] = sum_g scale[r][g] * sx[i][g] * sum_{k in g} code[i][k] * (q[r][k] - zero[r][g]) (+ bias[r]),
// The products code x q are summed exactly in integers on every path; the vector paths then add
// scale x sx x (that sum) per lane in float and take the zero-point term
// sum_g scale x sx x zero x (sum of the group's codes) off once per output, also in float (the
// scalar path subtracts the zero point in integers first), so the paths agree to float32 rounding
// of those terms, not of the result: where the two terms nearly cancel (inputs of one sign) the
// relative difference grows. x must be finite (the caller checks). Any m: rows share each unpacked
// weight row. From kA8GemmRows rows on, the AVX-512 VNNI and AVX2 paths turn into a GEMM with the
// output features along the lanes (the weights unpacked once per call into the INT8 GEMM's panels, each
// group's integer sum taken whole, then scaled): the same integers, another float summation order.
constexpr int64_t kA8GemmRows = 32;  // measured: the rows kernel wins at 8, ties at 16, loses from 32
void int4_linear_a8(const float* x, int64_t m, int64_t n, int64_t k, const uint8_t* packed, const float* scale,
                    const uint8_t* zero, int64_t group, const float* bias, float* out, int num_threads);
void int4_linear_a8_isa(Isa isa, const float* x, int64_t m, int64_t n, int64_t k, const uint8_t* packed,
                        const float* scale, const uint8_t* zero, int64_t group, const float* bias, float* out,
                        int num_threads);

// Rows [n0, n1) of the dequantised weight into w (float32 [(n1 - n0), k]), for blocked GEMM.
void int4_dequantize_rows(const uint8_t* packed, const float* scale, const uint8_t* zero, int64_t k, int64_t group,
                          int64_t n0, int64_t n1, float* w, int num_threads);

// f(std::integral_constant<int, M>{}) with M = m in 1..4: the row count of a vector path's tile
// as a compile-time constant (the paths' kernels are templates over it).
template <class F>
inline void with_rows(int m, F&& f) {
  switch (m) {
    case 4: return f(std::integral_constant<int, 4>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 2: return f(std::integral_constant<int, 2>{});
    default: return f(std::integral_constant<int, 1>{});
  }
}

// The activations of int4_linear_a8, prepared once per call in the lane order of the vector paths.
// K is split into blocks of 128 features (two packed chunks; the last block may hold one chunk).
// Block b of row i takes 128 code bytes: the codes meeting the low nibbles of chunk c (c = 0, 1 in
// the block) at [32 c, 32 c + 32), those meeting its high nibbles at [64 + 32 c, 96 + 32 c), each
// byte facing the packed weight byte at the same offset (zeros where the block has one chunk).
// Its 16 32-bit lanes (8 per chunk) also get the activation scale of their group (lane_scale).
// The zero points enter once per weight row through zero_sum: sum_g scale_g * zero_g * zero_sum_g.
struct A8Rows {
  int64_t m, k, blocks;
  const int8_t* codes;       // [m][blocks][128]
  const int8_t* natural;     // [m][k], codes in feature order (scalar path)
  const float* group_scale;  // [m][k / group]
  const float* zero_sum;     // [m][k / group]: sx_g * (sum of the group's codes)
  const float* lane_scale;   // [m][blocks][16]
};

}  // namespace edgegen::kernels::quant
