// INT8 GEMM for Linear layers: u8 activations x s8 weights -> s32, with zero-point compensation
// and a fused dequantising epilogue.
//
// Weights are packed once: panels of 16 output features, K in groups of 4 (zero-padded):
//   packed[p][k / 4][j][k % 4] = W[16 p + j][k]      (W is [N, K], nn.Linear's layout)
// which is what vpmaddubsw consumes (4 consecutive k of one column per 32-bit lane).
//
// Paths (the family's table, chosen per call under EDGEGEN_MAX_ISA): scalar; AVX2, which
// multiplies with vpmaddubsw, whose int16 pair sums saturate when an activation exceeds 127
// (2 * 255 * 128 > 32767), so it is taken only for activations in [0, 127] (7-bit, what edgegen's
// quantization produces, like PyTorch's x86 reduce_range) and any larger activation sends the
// call to an exact path that widens to int16 first (vpmaddwd); AVX-512 VNNI, whose vpdpbusd adds
// four u8 x s8 products into int32 exactly for the whole u8 range, on [8 rows x up to 48 features]
// tiles (one 64-byte weight block per 16 features and 4 k); AMX (gemm_amx_impl.h), tdpbusd on
// [32 x 32] blocks of tiles that load the same packed weights in place. Results are exact int32
// on every path.
//
// The AMX path (GEMM and direct convolution) has so far run only on a software model of the tiles
// (gemm_u8s8_amx_model, conv2d_u8s8_amx_model): it is taken only when EDGEGEN_AMX=1 (and the
// CPU has AMX); otherwise AMX machines run the AVX-512 VNNI tiles.
#pragma once
#include <cstdint>

#include "kernels/cpu_features.h"

namespace edgegen::kernels::quant {

constexpr int64_t kPanel = 16;  // output features per packed panel

inline int64_t packed_k(int64_t k) { return (k + 3) / 4 * 4; }
inline int64_t packed_panels(int64_t n) { return (n + kPanel - 1) / kPanel; }

// w: [n, k] int8 row-major. packed: packed_panels(n) * packed_k(k) * 16 bytes. row_sum[n] = sum_k w.
void pack_weight_s8(const int8_t* w, int64_t n, int64_t k, int8_t* packed, int32_t* row_sum);

// a: [m, lda] uint8 with lda >= packed_k(k) and a[i][k..lda) == 0 (padding).
// Integer result acc[i][j] = sum_k (a[i][k] - a_zero_point) * w[j][k].
// With out_i32: written as int32 [m, n]. Otherwise out_f32[i][j] = acc * a_scale * w_scale[j]
// (+ bias[j] when bias is not null), as float32 [m, n].
struct GemmOutput {
  int32_t* out_i32;
  float* out_f32;
  float a_scale;
  const float* w_scale;
  const float* bias;
};

void gemm_u8s8(const uint8_t* a, int64_t lda, int64_t m, int64_t n, int64_t k, int32_t a_zero_point,
               const int8_t* packed, const int32_t* row_sum, GemmOutput out, int num_threads);

// The path gemm_u8s8 / conv2d_u8s8 take now, and whether the build has a path of its own for an
// ISA level; the *_isa forms run a given level's path (for tests and benchmarks: the caller
// checks cpu_supports first).
Isa int8_gemm_isa();
// The path of the INT8 layers' activation pass (finite check, min/max, codes): avx512 needs no VNNI.
Isa int8_act_isa();
bool int8_gemm_has_path(Isa isa);
void gemm_u8s8_isa(Isa isa, const uint8_t* a, int64_t lda, int64_t m, int64_t n, int64_t k, int32_t a_zero_point,
                   const int8_t* packed, const int32_t* row_sum, GemmOutput out, int num_threads);

// gemm_u8s8 through the AMX path's block with its tiles emulated in plain C++ (any CPU): tests the
// AMX blocking, tails and operand layout where no AMX CPU is at hand.
void gemm_u8s8_amx_model(const uint8_t* a, int64_t lda, int64_t m, int64_t n, int64_t k, int32_t a_zero_point,
                         const int8_t* packed, const int32_t* row_sum, GemmOutput out, int num_threads);

// Per-tensor quantization parameters of 7-bit activations.
struct ActQuant {
  float scale;
  int32_t zero_point;
};

// Static (calibrated) quantization of float32 activations to [0, 127] with the given parameters.
void quantize_activations_static_u7(const float* x, int64_t m, int64_t k, ActQuant q, uint8_t* a, int64_t lda,
                                    int num_threads);

// Direct INT8 convolution (implicit GEMM, no im2col). `in` is uint8 NHWC [batch, in_h, in_w, cp]
// with the spatial padding already applied (padded entries hold the activation zero point) and
// cp a multiple of 4; output pixel (oh, ow) reads in[b, oh * sh + i * dh, ow * sw + j * dw, :] for
// each tap (i, j). `packed` is pack_weight_s8 of the weight laid out [cout, kh, kw, cp], so the
// taps' slices of a panel are contiguous. out_f32 element (b, co, oh, ow) is written at
// out + b * os[0] + co * os[1] + oh * os[2] + ow * os[3].
struct ConvGeometry {
  int64_t batch, in_h, in_w, cp, kh, kw, sh, sw, dh, dw, out_h, out_w;
};
void conv2d_u8s8(const uint8_t* in, ConvGeometry g, int64_t cout, int32_t a_zero_point, const int8_t* packed,
                 const int32_t* row_sum, float a_scale, const float* w_scale, const float* bias, float* out,
                 const int64_t* out_strides, int num_threads);

void conv2d_u8s8_isa(Isa isa, const uint8_t* in, ConvGeometry g, int64_t cout, int32_t a_zero_point,
                     const int8_t* packed, const int32_t* row_sum, float a_scale, const float* w_scale,
                     const float* bias, float* out, const int64_t* out_strides, int num_threads);

// conv2d_u8s8 through the AMX path's block on the software tile model (any CPU; see above).
void conv2d_u8s8_amx_model(const uint8_t* in, ConvGeometry g, int64_t cout, int32_t a_zero_point,
                           const int8_t* packed, const int32_t* row_sum, float a_scale, const float* w_scale,
                           const float* bias, float* out, const int64_t* out_strides, int num_threads);

// One run of the K of an AMX block (gemm_amx_impl.h): `len` activations (a multiple of 4) per row
// from `a` (row r at a + r * lda) against the packed weights' k values [woff, woff + len). A GEMM
// is one segment; a direct convolution one per kernel tap.
struct AmxSegment {
  const uint8_t* a;
  int64_t woff;
  int64_t len;
};

// NCHW float32 [batch, c, h, w] -> padded NHWC uint8 [batch, h + pt + pb, w + pl + pr, cp] with 7-bit
// values; padding (spatial, and channels c..cp) holds the zero point.
void quantize_nchw_to_nhwc_u7(const float* x, int64_t batch, int64_t c, int64_t h, int64_t w, int64_t pt, int64_t pb,
                              int64_t pl, int64_t pr, int64_t cp, ActQuant q, uint8_t* out, int num_threads);

// Whether all n values are finite (vectorised, split over threads: the INT8 layers refuse NaN and
// infinity).
bool all_finite(const float* x, int64_t n, int num_threads = 1);

// Dynamic per-tensor quantization to [0, 127] of n float32 values: scale = (max - min) / 127 over
// the range extended to include 0 (1 when that range is empty), zero point round(-min / scale).
// One pass, split over threads, that also checks finiteness: false (q untouched) when a value is
// NaN or infinite.
bool dynamic_act_params_u7(const float* x, int64_t n, ActQuant* q, int num_threads = 1);

}  // namespace edgegen::kernels::quant
