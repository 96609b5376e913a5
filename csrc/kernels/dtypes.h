// Torch-free 16-bit float storage types and their scalar conversions.
// Conversions are `static` so that a translation unit built with -mavx2 never lends its copy
// to the portable one through the linker.
// The ATen glue reinterprets at::BFloat16* / at::Half* as these (same 2-byte layout).
#pragma once
#include <cstdint>
#include <cstring>

namespace edgegen::kernels {

struct bf16_t { uint16_t bits; };
struct fp16_t { uint16_t bits; };

enum class DType : int { F32 = 0, BF16 = 1, F16 = 2, F64 = 3 };

static inline float bits_to_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline uint32_t float_to_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

static inline float to_float(float x) { return x; }
static inline double to_float(double x) { return x; }
static inline float to_float(bf16_t x) { return bits_to_float(uint32_t(x.bits) << 16); }

// IEEE binary16 -> binary32, exact (normals, subnormals, inf, nan).
static inline float to_float(fp16_t x) {
  const uint32_t h = x.bits;
  const uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  if (exp == 0x1fu) return bits_to_float(sign | 0x7f800000u | (man << 13));
  if (exp == 0) {
    if (man == 0) return bits_to_float(sign);
    // Subnormal: value is man * 2^-24; float holds it exactly.
    float v = float(man) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  return bits_to_float(sign | ((exp + 112u) << 23) | (man << 13));
}


// Round to nearest even; NaN stays a quiet NaN.
static inline bf16_t to_bf16(float f) {
  uint32_t u = float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16_t{uint16_t((u >> 16) | 0x40u)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16_t{uint16_t(u >> 16)};
}

// binary32 -> binary16, round to nearest even, overflow to inf, NaN kept.
static inline fp16_t to_fp16(float f) {
  const uint32_t u = float_to_bits(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return fp16_t{uint16_t(sign | 0x7e00u)};
  if (a >= 0x477ff000u) return fp16_t{uint16_t(sign | 0x7c00u)};  // rounds past 65504
  if (a < 0x38800000u) {
    // Result is subnormal (or zero): scale so the 10-bit mantissa lands in the integer part.
    // Multiplying by 2^24 is exact; nearbyint-style RNE comes from the float add trick.
    const float scaled = bits_to_float(a) * 16777216.0f;  // value in units of 2^-24
    const float magic = 8388608.0f;                       // 2^23 forces rounding to an integer
    const uint32_t r = float_to_bits(scaled + magic) - float_to_bits(magic);
    return fp16_t{uint16_t(sign | r)};
  }
  uint32_t v = a + ((15u - 127u) << 23);  // rebias exponent
  v += 0xfffu + ((v >> 13) & 1u);         // round to nearest even on the dropped 13 bits
  return fp16_t{uint16_t(sign | (v >> 13))};
}

static inline void store_float(float* p, float f) { *p = f; }
static inline void store_float(double* p, double f) { *p = f; }
static inline void store_float(bf16_t* p, float f) { *p = to_bf16(f); }
static inline void store_float(fp16_t* p, float f) { *p = to_fp16(f); }

// Calls body(T*) with a typed null pointer for dtype's element type: the one place kernels turn a
// DType into a C++ type. Without WithF64, F64 is not expected (its kernels have no double path)
// and maps to float like F32.
template <bool WithF64 = true, class F>
static inline void dispatch_float(DType dtype, const F& body) {
  switch (dtype) {
    case DType::BF16: body(static_cast<bf16_t*>(nullptr)); break;
    case DType::F16: body(static_cast<fp16_t*>(nullptr)); break;
    case DType::F64:
      if constexpr (WithF64) {
        body(static_cast<double*>(nullptr));
        break;
      }
      [[fallthrough]];
    default: body(static_cast<float*>(nullptr)); break;
  }
}

}  // namespace edgegen::kernels
