// The scalar 16-bit conversions the kernels use for tails and the portable path.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "kernels/dtypes.h"
#ifdef EDGEGEN_HAVE_AVX2
#include <immintrin.h>
#include "kernels/cpu_features.h"
#endif

namespace K = edgegen::kernels;

TEST(Dtypes, HalfRoundTripsEveryBitPattern) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = K::to_float(K::fp16_t{uint16_t(h)});
    const uint16_t back = K::to_fp16(f).bits;
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(K::to_float(K::fp16_t{back})));
    } else {
      EXPECT_EQ(back, h) << "half 0x" << std::hex << h;
    }
  }
}

TEST(Dtypes, HalfKnownValues) {
  EXPECT_EQ(K::to_fp16(1.0f).bits, 0x3c00);
  EXPECT_EQ(K::to_fp16(-2.0f).bits, 0xc000);
  EXPECT_EQ(K::to_fp16(65504.0f).bits, 0x7bff);
  EXPECT_EQ(K::to_fp16(65520.0f).bits, 0x7c00);        // ties to even: overflows to inf
  EXPECT_EQ(K::to_fp16(5.9604645e-8f).bits, 0x0001);   // smallest subnormal
  EXPECT_EQ(K::to_fp16(2.9802322e-8f).bits, 0x0000);   // half of it: ties to even, 0
  EXPECT_EQ(K::to_float(K::fp16_t{0x0001}), 5.9604644775390625e-8f);
  EXPECT_EQ(K::to_float(K::fp16_t{0x7c00}), INFINITY);
}

TEST(Dtypes, BFloat16RoundsToNearestEven) {
  EXPECT_EQ(K::to_bf16(1.0f).bits, 0x3f80);
  // 1 + 2^-8 is exactly halfway between two bf16 values: ties to the even one (1.0).
  EXPECT_EQ(K::to_bf16(1.00390625f).bits, 0x3f80);
  // 1 + 3 * 2^-8 is halfway too: rounds up to the even 1 + 2^-6.
  EXPECT_EQ(K::to_bf16(1.01171875f).bits, 0x3f82);
  EXPECT_TRUE(std::isnan(K::to_float(K::to_bf16(NAN))));
  EXPECT_EQ(K::to_float(K::to_bf16(-INFINITY)), -INFINITY);
}

#ifdef EDGEGEN_HAVE_AVX2
__attribute__((target("f16c"))) static uint16_t hw_half(float f) {
  return uint16_t(_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(f), _MM_FROUND_TO_NEAREST_INT), 0));
}

TEST(Dtypes, HalfMatchesF16CHardwareOnRandomFloats) {
  if (!K::cpu_supports(K::Isa::Avx2)) GTEST_SKIP() << "CPU without F16C";
  std::mt19937 gen(11);
  for (int i = 0; i < 1000000; ++i) {
    uint32_t u = gen();
    float f;
    std::memcpy(&f, &u, 4);
    if (std::isnan(f)) continue;
    ASSERT_EQ(K::to_fp16(f).bits, hw_half(f)) << f;
  }
}
#endif
