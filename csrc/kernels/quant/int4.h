// INT4 weight-only linear: 4-bit unsigned weights, two per byte, one float32 scale and one integer
// zero point per group of G consecutive input features (G in {32, 64, 128}):
//   w[n][k] = (q[n][k] - zero[n][k / G]) * scale[n][k / G],  q in [0, 15].
// Packing, in chunks of 64 input features = 32 bytes = 8 little-endian 32-bit words: nibble t
// (bits 4t..4t+3) of word w holds k = k0 + 32 * (w / 4) + 4 * t + w % 4. Shifting the 8 words right
// by 4t and masking gives 8 lanes that are k0 + 4t + (0..3) and k0 + 32 + 4t + (0..3): no
// shuffles, and the activations are permuted to match once per call. K must be a multiple of 64.
#pragma once
#include <cstdint>

#include "kernels/cpu_features.h"

namespace edgegen::kernels::quant {

// q: [n, k] values in [0, 15]; packed: [n, k / 2].
// The path int4_gemv / int4_dequantize_rows take now (avx2 or scalar).
Isa int4_isa();

void pack_int4(const uint8_t* q, int64_t n, int64_t k, uint8_t* packed);
void unpack_int4(const uint8_t* packed, int64_t n, int64_t k, uint8_t* q);

// out[m][n] = sum_k x[m][k] * w[n][k] (+ bias[n]); x float32 [m, k]. Dequantises inside the dot
// products: sum_g scale_g * (sum_{k in g} q_k x_k - zero_g * sum_{k in g} x_k). For small m.
void int4_gemv(const float* x, int64_t m, int64_t n, int64_t k, const uint8_t* packed, const float* scale,
               const uint8_t* zero, int64_t group, const float* bias, float* out, int num_threads);

// Rows [n0, n1) of the dequantised weight into w (float32 [(n1 - n0), k]), for blocked GEMM.
void int4_dequantize_rows(const uint8_t* packed, const float* scale, const uint8_t* zero, int64_t k, int64_t group,
                          int64_t n0, int64_t n1, float* w, int num_threads);

}  // namespace edgegen::kernels::quant
