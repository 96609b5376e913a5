// GoogleTest of the torch-free quantization kernels against hand-worked values and plain loops.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <ostream>
#include <string>
#include <random>
#include <tuple>
#include <vector>

#include "isa_capped.h"
#include "kernels/quant/quantize.h"

namespace K = edgegen::kernels;
namespace KQ = edgegen::kernels::quant;

TEST(Quantize, HalfWayRoundsToEvenAndZeroPointIsAddedAfter) {
  const std::vector<float> x{0.5f, 1.5f, 2.5f, -0.5f, -2.5f, 1000.0f, -1000.0f};
  const float scale = 1.0f;
  const int32_t zp = 3;
  std::vector<int8_t> q(x.size());
  KQ::quantize(x.data(), K::DType::F32, {1, 1, int64_t(x.size())}, &scale, &zp, -128, 127, false, q.data(), 1);
  EXPECT_EQ(q, (std::vector<int8_t>{3, 5, 5, 3, 1, 127, -128}));
  std::vector<uint8_t> u(x.size());
  const int32_t uzp = 128;
  KQ::quantize(x.data(), K::DType::F32, {1, 1, int64_t(x.size())}, &scale, &uzp, 0, 255, true, u.data(), 1);
  EXPECT_EQ(u, (std::vector<uint8_t>{128, 130, 130, 128, 126, 255, 0}));
}

TEST(Quantize, PerChannelLayoutDequantizeAndFakeQuantizeAgree) {
  // [outer=2, channels=3, inner=4]
  std::mt19937 rng(3);
  std::normal_distribution<float> d(0.0f, 2.0f);
  std::vector<float> x(24);
  for (auto& v : x) v = d(rng);
  const float scale[3] = {0.1f, 0.25f, 0.05f};
  const int32_t zp[3] = {0, -2, 5};
  const KQ::Layout l{2, 3, 4};
  std::vector<int8_t> q(24);
  std::vector<float> deq(24), fq(24);
  std::vector<uint8_t> mask(24);
  KQ::quantize(x.data(), K::DType::F32, l, scale, zp, -20, 20, false, q.data(), 2);
  KQ::dequantize(q.data(), false, l, scale, zp, K::DType::F32, deq.data(), 2);
  KQ::fake_quantize(x.data(), K::DType::F32, l, scale, zp, -20, 20, fq.data(), mask.data(), 2);
  for (int i = 0; i < 24; ++i) {
    const int c = (i / 4) % 3;
    const long r = std::lrint(x[i] * (1.0f / scale[c])) + zp[c];
    EXPECT_EQ(q[i], std::min(20L, std::max(-20L, r))) << i;
    EXPECT_EQ(deq[i], float(q[i] - zp[c]) * scale[c]);
    EXPECT_EQ(fq[i], deq[i]);
    EXPECT_EQ(mask[i], r >= -20 && r <= 20);
  }
}

TEST(Quantize, FakeQuantizeKeepsNanWithMaskZeroAndSaturatesInfinities) {
  const float nan = std::nanf(""), inf = INFINITY;
  const std::vector<float> x{nan, inf, -inf, 0.26f};
  const float scale = 0.1f;
  const int32_t zp = 0;
  std::vector<float> out(4);
  std::vector<uint8_t> mask(4, 7);
  KQ::fake_quantize(x.data(), K::DType::F32, {1, 1, 4}, &scale, &zp, -10, 10, out.data(), mask.data(), 1);
  EXPECT_TRUE(std::isnan(out[0]));
  EXPECT_FLOAT_EQ(out[1], 1.0f);
  EXPECT_FLOAT_EQ(out[2], -1.0f);
  EXPECT_FLOAT_EQ(out[3], 0.3f);
  EXPECT_EQ(mask, (std::vector<uint8_t>{0, 0, 0, 1}));
}

TEST(Quantize, LearnableBackwardMatchesLoop) {
  std::vector<float> x{-3.0f, -0.31f, 0.0f, 0.2f, 0.7f, 5.0f}, dy{1.0f, 2.0f, -1.0f, 0.5f, 3.0f, -2.0f}, dx(6);
  const float scale = 0.1f;
  const int32_t zp = 1;
  double ds = 0, dz = 0;
  KQ::fake_quantize_learnable_backward(x.data(), dy.data(), K::DType::F32, {1, 1, 6}, &scale, &zp, -8, 7, 0.5,
                                       dx.data(), &ds, &dz, 1);
  double want_s = 0, want_z = 0;
  for (int i = 0; i < 6; ++i) {
    const long qu = std::lrint(x[i] * (1.0f / scale)) + zp;
    const long q = std::min(7L, std::max(-8L, qu));
    if (qu < -8 || qu > 7) {
      EXPECT_EQ(dx[i], 0.0f);
      want_s += dy[i] * double(q - zp);
      want_z += -dy[i] * double(scale);
    } else {
      EXPECT_EQ(dx[i], dy[i]);
      want_s += dy[i] * double((float(q - zp) * scale - x[i]) * (1.0f / scale));
    }
  }
  EXPECT_NEAR(ds, 0.5 * want_s, 1e-9);
  EXPECT_NEAR(dz, 0.5 * want_z, 1e-9);
}

#include "kernels/quant/gemm.h"
#include "kernels/quant/int4.h"

namespace edgegen::kernels {
void PrintTo(Isa isa, std::ostream* os) { *os << isa_name(isa); }
}  // namespace edgegen::kernels

// Every INT8 GEMM path of the build, each run on this CPU when it can (skipped by name when not).
class Int8Path : public ::testing::TestWithParam<K::Isa> {
 protected:
  void SetUp() override {
    if (!K::cpu_supports(GetParam())) GTEST_SKIP() << "this CPU lacks " << K::isa_name(GetParam());
    if (!KQ::int8_gemm_has_path(GetParam()))
      GTEST_SKIP() << "no INT8 GEMM path of its own at " << K::isa_name(GetParam());
  }
};

INSTANTIATE_TEST_SUITE_P(Isa, Int8Path,
                         ::testing::Values(K::Isa::Scalar, K::Isa::Avx2, K::Isa::Avx2Vnni, K::Isa::Avx512, K::Isa::Avx512Vnni,
                                           K::Isa::Amx),
                         [](const ::testing::TestParamInfo<K::Isa>& i) { return std::string(K::isa_name(i.param)); });

using GemmFn = std::function<void(const uint8_t*, int64_t, int64_t, int64_t, int64_t, int32_t, const int8_t*,
                                  const int32_t*, KQ::GemmOutput, int)>;

// gemm against int64 loops over (m, k, n) shapes, three operand modes (random 7-bit, random 8-bit,
// all 255 x 127 / -128: the sums that saturate 16-bit pair sums) and 1 or 3 threads.
static void expect_gemm_exact(const GemmFn& gemm, std::initializer_list<std::tuple<int, int, int>> shapes, uint32_t seed) {
  std::mt19937 rng(seed);
  for (auto [m, k, n] : shapes) {
    for (int mode = 0; mode < 3; ++mode) {
      std::vector<int8_t> w(size_t(n * k));
      for (auto& v : w) v = mode == 2 ? int8_t((rng() & 1) ? 127 : -128) : int8_t(int(rng() % 256) - 128);
      const int64_t lda = KQ::packed_k(k);
      std::vector<uint8_t> a(size_t(m * lda), 0);
      for (int i = 0; i < m; ++i)
        for (int kk = 0; kk < k; ++kk) a[size_t(i * lda + kk)] = mode == 2 ? 255 : uint8_t(rng() % (mode == 0 ? 128 : 256));
      std::vector<int8_t> packed(size_t(KQ::packed_panels(n) * lda * KQ::kPanel));
      std::vector<int32_t> row_sum(static_cast<size_t>(n) + 0), out(static_cast<size_t>(m) * n);
      KQ::pack_weight_s8(w.data(), n, k, packed.data(), row_sum.data());
      KQ::GemmOutput o{out.data(), nullptr, 0.0f, nullptr, nullptr};
      gemm(a.data(), lda, m, n, k, 7, packed.data(), row_sum.data(), o, mode == 1 ? 3 : 2);
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < n; ++j) {
          int64_t want = 0;
          for (int kk = 0; kk < k; ++kk) want += (int64_t(a[size_t(i * lda + kk)]) - 7) * w[size_t(j * k + kk)];
          ASSERT_EQ(out[size_t(i * n + j)], want) << m << "x" << k << "x" << n << " mode " << mode << " at " << i << ","
                                                  << j;
        }
    }
  }
}

// Shapes for every path: single values, K and N tails, K across the paths' K blocks (1024, 2048)
// with 1, 2 and 3 panels and 1, 2, 8 rows, the panel groups of the 3-panel tiles (3k + 1 panels
// as 3s then 2 + 2: N = 50, 112, 208), row counts around the tile heights (4, 8, 16, 32) and the
// row blocks (64).
#define EDGEGEN_GEMM_SHAPES                                                                                    \
  {std::tuple{1, 1, 1},      std::tuple{5, 7, 17},      std::tuple{9, 64, 33},    std::tuple{4, 3072, 16},     \
   std::tuple{20, 1030, 50}, std::tuple{67, 36, 70},    std::tuple{33, 130, 32},  std::tuple{16, 64, 16},      \
   std::tuple{130, 68, 40},  std::tuple{9, 4100, 50},   std::tuple{2, 2100, 40},  std::tuple{1, 2100, 48},     \
   std::tuple{20, 300, 112}, std::tuple{12, 40, 208}}

TEST_P(Int8Path, GemmExactAgainstIntegerLoopsIncludingSaturatingExtremes) {
  expect_gemm_exact(
      [isa = GetParam()](const uint8_t* a, int64_t lda, int64_t m, int64_t n, int64_t k, int32_t zp, const int8_t* packed,
         const int32_t* row_sum, KQ::GemmOutput o, int threads) {
        KQ::gemm_u8s8_isa(isa, a, lda, m, n, k, zp, packed, row_sum, o, threads);
      },
      EDGEGEN_GEMM_SHAPES, 5);
}

// The AMX path's block on the software tile model, on any CPU: the 32-row blocks and their
// 16-row halves (full, partial, absent), K steps of 64 with a tail of 4..60, one or two panels.
TEST(Int8AmxModel, GemmExactAgainstIntegerLoopsIncludingSaturatingExtremes) {
  expect_gemm_exact(KQ::gemm_u8s8_amx_model, EDGEGEN_GEMM_SHAPES, 6);
  expect_gemm_exact(KQ::gemm_u8s8_amx_model,
                    {std::tuple{15, 60, 16}, std::tuple{17, 124, 48}, std::tuple{31, 192, 31}, std::tuple{32, 256, 64},
                     std::tuple{48, 4, 8}, std::tuple{64, 65, 20}, std::tuple{65, 200, 33}, std::tuple{3, 768, 80}},
                    7);
}

// The float epilogue (scales, bias) after the model's integers equals the scalar path's.
TEST(Int8AmxModel, FloatOutputEqualsScalarPath) {
  std::mt19937 rng(8);
  const int64_t m = 37, k = 100, n = 45, lda = KQ::packed_k(k);
  std::vector<int8_t> w(size_t(n * k)), packed(size_t(KQ::packed_panels(n) * lda * KQ::kPanel));
  std::vector<uint8_t> a(size_t(m * lda), 0);
  std::vector<float> scale(static_cast<size_t>(n)), bias(static_cast<size_t>(n)), got(size_t(m * n)), want(size_t(m * n));
  std::vector<int32_t> row_sum(static_cast<size_t>(n));
  for (auto& v : w) v = int8_t(int(rng() % 256) - 128);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t kk = 0; kk < k; ++kk) a[size_t(i * lda + kk)] = uint8_t(rng() % 128);
  for (auto& v : scale) v = 0.001f + float(rng() % 100) / 10000.0f;
  for (auto& v : bias) v = float(int(rng() % 201) - 100) / 50.0f;
  KQ::pack_weight_s8(w.data(), n, k, packed.data(), row_sum.data());
  KQ::gemm_u8s8_amx_model(a.data(), lda, m, n, k, 60, packed.data(), row_sum.data(),
                          {nullptr, got.data(), 0.02f, scale.data(), bias.data()}, 2);
  KQ::gemm_u8s8_isa(K::Isa::Scalar, a.data(), lda, m, n, k, 60, packed.data(), row_sum.data(),
                    {nullptr, want.data(), 0.02f, scale.data(), bias.data()}, 2);
  EXPECT_EQ(got, want);
}

// The float epilogue on every path equals the scalar path's bit for bit: acc * (a_scale * w_scale[j]),
// rounded, then + bias[j], rounded (no FMA on any path). n = 16 and 48: whole 16-feature panels
// (the vector epilogues); 45: a partial last panel. 7-bit activations (the AVX2 path's vpmaddubsw
// tiles) and 8-bit ones (its exact tiles); 1 and 3 threads.
TEST_P(Int8Path, FloatOutputWithScalesAndBiasEqualsScalarPath) {
  std::mt19937 rng(21);
  std::uniform_real_distribution<float> ws(0.0005f, 0.03f), bs(-3.0f, 3.0f);
  for (int64_t n : {45, 16, 48}) {
    for (int bits : {7, 8}) {
      SCOPED_TRACE(testing::Message() << "n=" << n << " activations of " << bits << " bits");
      const int64_t m = 37, k = 100, lda = KQ::packed_k(k);
      std::vector<int8_t> w(size_t(n * k)), packed(size_t(KQ::packed_panels(n) * lda * KQ::kPanel));
      std::vector<uint8_t> a(size_t(m * lda), 0);
      std::vector<float> scale(static_cast<size_t>(n)), bias(static_cast<size_t>(n));
      std::vector<float> got(size_t(m * n), NAN), want(size_t(m * n), NAN), nobias(size_t(m * n), NAN);
      std::vector<int32_t> row_sum(static_cast<size_t>(n)), acc(size_t(m * n));
      for (auto& v : w) v = int8_t(int(rng() % 256) - 128);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t kk = 0; kk < k; ++kk) a[size_t(i * lda + kk)] = uint8_t(rng() % (bits == 7 ? 128 : 256));
      for (auto& v : scale) v = ws(rng);
      for (auto& v : bias) v = bs(rng);
      KQ::pack_weight_s8(w.data(), n, k, packed.data(), row_sum.data());
      const float a_scale = 0.0173f;
      const int32_t zp = 61;
      for (int threads : {1, 3}) {
        KQ::gemm_u8s8_isa(GetParam(), a.data(), lda, m, n, k, zp, packed.data(), row_sum.data(),
                          {nullptr, got.data(), a_scale, scale.data(), bias.data()}, threads);
        KQ::gemm_u8s8_isa(K::Isa::Scalar, a.data(), lda, m, n, k, zp, packed.data(), row_sum.data(),
                          {nullptr, want.data(), a_scale, scale.data(), bias.data()}, threads);
        ASSERT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * sizeof(float))) << threads << " threads";
        KQ::gemm_u8s8_isa(GetParam(), a.data(), lda, m, n, k, zp, packed.data(), row_sum.data(),
                          {nullptr, nobias.data(), a_scale, scale.data(), nullptr}, threads);
        KQ::gemm_u8s8_isa(GetParam(), a.data(), lda, m, n, k, zp, packed.data(), row_sum.data(),
                          {acc.data(), nullptr, 0.0f, nullptr, nullptr}, threads);
        // The documented formula, written out: two roundings.
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < n; ++j) {
            const size_t e = size_t(i * n + j);
            const float s = a_scale * scale[size_t(j)];
            const float product = float(acc[e]) * s;
            ASSERT_EQ(nobias[e], product) << i << "," << j;
            ASSERT_EQ(got[e], product + bias[size_t(j)]) << i << "," << j;
          }
      }
    }
  }
}

#include <cstdio>
#include <cstdlib>
#include <cstring>
namespace amx_test {
using namespace edgegen::kernels::quant;  // gemm.h's names, as in the kernels' own namespace
#include "kernels/quant/gemm_amx_impl.h"
}  // namespace amx_test
namespace KA = amx_test;

// The tile model itself against the instruction's definition, worked by hand: C[m][n] +=
// sum over k quads of u8 A x s8 B, B in rows of (4 k x 16 features), loads zero beyond the shape.
TEST(Int8AmxModel, TileModelFollowsTdpbusd) {
  KA::TileConfig cfg{};
  cfg.palette = 1;
  cfg.rows[0] = 2, cfg.colsb[0] = 8;  // C: 2 x 2 int32
  cfg.rows[4] = 2, cfg.colsb[4] = 8;  // A: 2 x 8 u8 (two k quads)
  cfg.rows[6] = 2, cfg.colsb[6] = 8;  // B: 2 quads x 2 features x 4
  KA::TileModel t;
  t.configure(cfg);
  const uint8_t a[2][8] = {{255, 1, 2, 3, 4, 5, 6, 7}, {0, 0, 0, 0, 255, 255, 255, 255}};
  const int8_t b[2][8] = {{-128, 1, 1, 1, 2, 2, 2, 2}, {1, 1, 1, 1, -128, -128, -128, -128}};
  const int32_t c0[2][2] = {{10, -10}, {0, 5}};
  int32_t c[2][2];
  t.load<0>(c0, sizeof(c0[0]));
  t.load<4>(a, sizeof(a[0]));
  t.load<6>(b, sizeof(b[0]));
  t.dpbusd<0, 4, 6>();
  t.store<0>(c, sizeof(c[0]));
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j) {
      int32_t want = c0[i][j];
      for (int q = 0; q < 2; ++q)
        for (int e = 0; e < 4; ++e) want += int32_t(a[i][4 * q + e]) * int32_t(b[q][4 * j + e]);
      EXPECT_EQ(c[i][j], want) << i << "," << j;
    }
  EXPECT_EQ(c[0][0], 10 + 255 * -128 + 1 + 2 + 3 + 4 + 5 + 6 + 7);
  EXPECT_EQ(c[1][1], 5 + 4 * 255 * -128);
}

// tdpbf16ps on the model against its definition, worked by hand: C[m][n] += A[m][2q] B[q][2n] +
// A[m][2q + 1] B[q][2n + 1] in float, bf16 subnormal inputs read as zero.
TEST(AmxTileModel, FollowsTdpbf16ps) {
  KA::TileConfig cfg{};
  cfg.palette = 1;
  cfg.rows[0] = 2, cfg.colsb[0] = 8;  // C: 2 x 2 float
  cfg.rows[4] = 2, cfg.colsb[4] = 8;  // A: 2 x 4 bf16 (two k pairs)
  cfg.rows[6] = 2, cfg.colsb[6] = 8;  // B: 2 pairs x 2 columns x 2 bf16
  KA::TileModel t;
  t.configure(cfg);
  auto bf = [](float f) {  // exact for the values below
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return uint16_t(u >> 16);
  };
  const uint16_t sub = 0x0001;  // a bf16 subnormal
  const uint16_t a[2][4] = {{bf(1.5f), bf(-2.0f), bf(0.25f), bf(3.0f)}, {0, sub, 0, 0}};
  const uint16_t b[2][4] = {{bf(2.0f), bf(0x1p100f), bf(4.0f), bf(-8.0f)}, {bf(0.5f), bf(1.0f), bf(2.0f), bf(1.0f)}};
  const float c0[2][2] = {{1.0f, -1.0f}, {0.0f, 2.0f}};
  float c[2][2];
  t.load<0>(c0, sizeof(c0[0]));
  t.load<4>(a, sizeof(a[0]));
  t.load<6>(b, sizeof(b[0]));
  t.dpbf16ps<0, 4, 6>();
  t.store<0>(c, sizeof(c[0]));
  // C[m][n] = c0 + A[m][0] B[0][2n] + A[m][1] B[0][2n + 1] + A[m][2] B[1][2n] + A[m][3] B[1][2n + 1]
  EXPECT_EQ(c[0][0], 1.0f + 1.5f * 2.0f + -2.0f * 0x1p100f + 0.25f * 0.5f + 3.0f * 1.0f);
  EXPECT_EQ(c[0][1], -1.0f + 1.5f * 4.0f + -2.0f * -8.0f + 0.25f * 2.0f + 3.0f * 1.0f);
  EXPECT_EQ(c[1][0], 0.0f);  // the subnormal reads as 0 (else 2^-133 x 2^100 = 2^-33)
  EXPECT_EQ(c[1][1], 2.0f);
}

TEST(Int8AmxModelDeathTest, RefusesUnconfiguredTilesAndMismatchedShapes) {
  KA::TileModel t;
  EXPECT_DEATH(t.zero<0>(), "without a configuration");
  KA::TileConfig cfg = KA::amx_gemm_config();
  cfg.rows[6] = 8;  // B holds 8 k quads, A 16
  t.configure(cfg);
  EXPECT_DEATH((t.dpbusd<0, 4, 6>()), "shapes differ");
  cfg.palette = 0;
  EXPECT_DEATH(t.configure(cfg), "palette");
  cfg = KA::amx_gemm_config();
  cfg.rows[3] = 17;  // the hardware faults on more than 16 rows (the model would overrun its tile)
  EXPECT_DEATH(t.configure(cfg), "tile shape");
  cfg = KA::amx_gemm_config();
  cfg.colsb[8] = 64;  // palette 1 has 8 tiles
  EXPECT_DEATH(t.configure(cfg), "tile shape");
}

TEST(Int4, PackRoundTripAndGemvMatchesDequantizedLoop) {
  std::mt19937 rng(9);
  const int64_t n = 19, k = 256, group = 64, groups = k / group;
  std::vector<uint8_t> q(size_t(n * k)), back(size_t(n * k)), packed(size_t(n * k / 2)), zero(size_t(n * groups));
  std::vector<float> scale(size_t(n * groups)), x(size_t(5 * k)), out(size_t(5 * n)), w(size_t(n * k));
  for (auto& v : q) v = uint8_t(rng() % 16);
  for (auto& v : zero) v = uint8_t(rng() % 16);
  for (auto& v : scale) v = 0.01f + float(rng() % 100) / 1000.0f;
  for (auto& v : x) v = float(int(rng() % 2001) - 1000) / 500.0f;
  KQ::pack_int4(q.data(), n, k, packed.data());
  KQ::unpack_int4(packed.data(), n, k, back.data());
  ASSERT_EQ(back, q);
  KQ::int4_dequantize_rows(packed.data(), scale.data(), zero.data(), k, group, 0, n, w.data(), 2);
  for (int64_t m : {1, 3, 5}) {
    KQ::int4_gemv(x.data(), m, n, k, packed.data(), scale.data(), zero.data(), group, nullptr, out.data(), 2);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t r = 0; r < n; ++r) {
        double want = 0;
        for (int64_t kk = 0; kk < k; ++kk) {
          const int64_t g = r * groups + kk / group;
          const double wv = (double(q[size_t(r * k + kk)]) - zero[size_t(g)]) * scale[size_t(g)];
          ASSERT_FLOAT_EQ(w[size_t(r * k + kk)], float(wv));
          want += wv * x[size_t(i * k + kk)];
        }
        ASSERT_NEAR(out[size_t(i * n + r)], want, 1e-3 * (1.0 + std::fabs(want)));
      }
  }
}

// Every INT4 path of the build (weight-only float activations, and the 8-bit-activation path),
// each run on this CPU when it can (skipped by name when not).
class Int4Path : public ::testing::TestWithParam<K::Isa> {
 protected:
  void SetUp() override {
    if (!K::cpu_supports(GetParam())) GTEST_SKIP() << "this CPU lacks " << K::isa_name(GetParam());
    if (!KQ::int4_has_path(GetParam(), true) && !KQ::int4_has_path(GetParam(), false))
      GTEST_SKIP() << "no INT4 path of its own at " << K::isa_name(GetParam());
  }
};

INSTANTIATE_TEST_SUITE_P(Isa, Int4Path,
                         ::testing::Values(K::Isa::Scalar, K::Isa::Avx2, K::Isa::Avx2Vnni, K::Isa::Avx512, K::Isa::Avx512Vnni,
                                           K::Isa::Amx),
                         [](const ::testing::TestParamInfo<K::Isa>& i) { return std::string(K::isa_name(i.param)); });

// The 8-bit codes of int4_linear_a8's activations (int4.h), written out plainly.
static std::vector<int> a8_codes(const std::vector<float>& x, int64_t m, int64_t k, int64_t group,
                                 std::vector<float>* sx) {
  std::vector<int> c(size_t(m * k));
  sx->assign(size_t(m * (k / group)), 0.0f);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t g = 0; g < k / group; ++g) {
      float amax = 0.0f;
      for (int64_t kk = g * group; kk < (g + 1) * group; ++kk) amax = std::max(amax, std::fabs(x[size_t(i * k + kk)]));
      float s = amax / 127.0f;
      if (!(s > 0.0f)) s = 1.0f;
      (*sx)[size_t(i * (k / group) + g)] = s;
      for (int64_t kk = g * group; kk < (g + 1) * group; ++kk)
        c[size_t(i * k + kk)] = int(std::min(127.0f, std::max(-127.0f, std::nearbyint(x[size_t(i * k + kk)] / s))));
    }
  return c;
}

TEST_P(Int4Path, A8MatchesIntegerGroupSumsIncludingExtremes) {
  if (!KQ::int4_has_path(GetParam(), true)) GTEST_SKIP() << "no 8-bit-activation INT4 path at " << K::isa_name(GetParam());
  std::mt19937 rng(13);
  // k: one chunk only, one block, a block and a chunk, several blocks; m: 1..9 (row tiles of 4).
  // 576 / 32 and 1024 / 32: 18 and 32 groups, so the zero-point sweep over groups runs more than
  // one 16-group step (full and masked).
  for (auto [k, group] : {std::tuple{64, 32}, std::tuple{64, 64}, std::tuple{128, 128}, std::tuple{192, 32},
                          std::tuple{192, 64}, std::tuple{384, 128}, std::tuple{320, 64}, std::tuple{576, 32},
                          std::tuple{1024, 32}}) {
    static_assert(KQ::kA8GemmRows <= 32, "m = 32 must reach the GEMM form");
    // m = 32 and 70: the AVX-512 VNNI and AVX2 paths' GEMM form (from kA8GemmRows rows: row blocks
    // of 64, tiles of 8 or 4 with a tail, 16-feature panels with padding).
    for (int64_t m : {1, 3, 4, 9, 16, 32, 70}) {
      // Modes: random; integers with max |x| 127 (sx = 1) at the extremes; zeros; halves (ties of
      // the code rounding, half to even) with one 127 per group (sx = 1). Modes 1 and 3 are
      // integer-valued throughout.
      for (int mode = 0; mode < 4; ++mode) {
        const bool exact = mode == 1 || mode == 3;
        const int64_t n = m >= 16 ? 37 : 21, groups = k / group;
        std::vector<uint8_t> q(size_t(n * k)), packed(size_t(n * k / 2)), zero(size_t(n * groups));
        std::vector<float> scale(size_t(n * groups)), x(size_t(m * k)), out(size_t(m * n)), bias(static_cast<size_t>(n));
        for (auto& v : q) v = mode == 1 ? uint8_t(15 * (rng() & 1)) : uint8_t(rng() % 16);
        for (auto& v : zero) v = mode == 1 ? uint8_t(15 * (rng() & 1)) : uint8_t(rng() % 16);
        for (auto& v : scale) v = exact ? 1.0f : 0.01f + float(rng() % 100) / 1000.0f;
        for (auto& v : bias) v = exact ? 0.0f : float(int(rng() % 201) - 100) / 50.0f;
        for (auto& v : x) v = mode == 1 ? ((rng() & 1) ? 127.0f : -127.0f) : float(int(rng() % 2001) - 1000) / 300.0f;
        if (mode == 2)
          for (int64_t kk = 0; kk < k; ++kk) x[size_t(kk)] = 0.0f;  // an all-zero row: every group's scale is 1
        if (mode == 3)
          for (size_t e = 0; e < x.size(); ++e)
            x[e] = e % size_t(group) == 5 ? 127.0f : float(int(rng() % 253) - 126) + 0.5f;
        KQ::pack_int4(q.data(), n, k, packed.data());
        KQ::int4_linear_a8_isa(GetParam(), x.data(), m, n, k, packed.data(), scale.data(), zero.data(), group,
                               bias.data(), out.data(), 2);
        std::vector<float> sx;
        const std::vector<int> c = a8_codes(x, m, k, group, &sx);
        for (int64_t i = 0; i < m; ++i)
          for (int64_t r = 0; r < n; ++r) {
            double want = bias[size_t(r)];
            for (int64_t g = 0; g < groups; ++g) {
              int64_t dot = 0;
              for (int64_t kk = g * group; kk < (g + 1) * group; ++kk)
                dot += int64_t(c[size_t(i * k + kk)]) * (int(q[size_t(r * k + kk)]) - int(zero[size_t(r * groups + g)]));
              want += double(scale[size_t(r * groups + g)]) * sx[size_t(i * groups + g)] * double(dot);
            }
            const float got = out[size_t(i * n + r)];
            if (exact)  // integer-valued throughout, below 2^24: exact on every path
              ASSERT_EQ(got, float(want)) << "k " << k << " group " << group << " m " << m << " row " << i << "," << r;
            else
              ASSERT_NEAR(got, want, 2e-5 * (1.0 + std::fabs(want)))
                  << "k " << k << " group " << group << " m " << m << " mode " << mode << " row " << i << "," << r;
          }
      }
    }
  }
}

TEST_P(Int4Path, WeightOnlyGemvMatchesDequantizedLoop) {
  if (!KQ::int4_has_path(GetParam(), false)) GTEST_SKIP() << "no weight-only INT4 path at " << K::isa_name(GetParam());
  std::mt19937 rng(17);
  // K of 1, 3 and 4 chunks of 64 (vector paths take a chunk, or a pair of chunks, per load);
  // groups of 32, 64 and 128 (one group spanning two chunks); 1 to 6 activation rows.
  for (auto [k, group] : {std::pair<int64_t, int64_t>{64, 32}, {192, 32}, {256, 64}, {256, 128}}) {
  SCOPED_TRACE(testing::Message() << "k=" << k << " group=" << group);
  const int64_t n = 13, groups = k / group;
  std::vector<uint8_t> q(size_t(n * k)), packed(size_t(n * k / 2)), zero(size_t(n * groups));
  std::vector<float> scale(size_t(n * groups)), x(size_t(6 * k)), out(size_t(6 * n)), bias(static_cast<size_t>(n));
  for (auto& v : q) v = uint8_t(rng() % 16);
  for (auto& v : zero) v = uint8_t(rng() % 16);
  for (auto& v : scale) v = 0.01f + float(rng() % 100) / 1000.0f;
  for (auto& v : x) v = float(int(rng() % 2001) - 1000) / 500.0f;
  for (auto& v : bias) v = float(int(rng() % 201) - 100) / 25.0f;
  KQ::pack_int4(q.data(), n, k, packed.data());
  for (int64_t m : {1, 2, 3, 4, 6}) {
    for (bool with_bias : {false, true}) {
      KQ::int4_gemv_isa(GetParam(), x.data(), m, n, k, packed.data(), scale.data(), zero.data(), group,
                        with_bias ? bias.data() : nullptr, out.data(), 2);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t r = 0; r < n; ++r) {
          double want = with_bias ? bias[size_t(r)] : 0.0;
          for (int64_t kk = 0; kk < k; ++kk) {
            const int64_t g = r * groups + kk / group;
            want += (double(q[size_t(r * k + kk)]) - zero[size_t(g)]) * scale[size_t(g)] * x[size_t(i * k + kk)];
          }
          ASSERT_NEAR(out[size_t(i * n + r)], want, 1e-4 * (1.0 + std::fabs(want)))
              << m << " " << i << " " << r << (with_bias ? " with bias" : "");
        }
    }
  }
  }
}

using ConvFn = std::function<void(const uint8_t*, KQ::ConvGeometry, int64_t, int32_t, const int8_t*, const int32_t*,
                                  float, const float*, const float*, float*, const int64_t*, int)>;

// A direct convolution against int64 loops: batch 2, c input channels (padded to cp), an h x w
// input with 1 pixel of padding, a k x k kernel at stride s and dilation dl, co output channels;
// activations 7-bit (with 127s), weights over the whole int8 range. With `epilogue`, an activation
// scale other than 1, per-channel weight scales and a bias: each output is then the documented
// float(sum) * (a_scale * w_scale[c]) + bias[c], two roundings, bit for bit.
static void expect_conv_exact(const ConvFn& conv, int64_t c, int64_t cp, int64_t h, int64_t w, int64_t k, int64_t s,
                              int64_t dl, int64_t co, uint32_t seed, bool epilogue = false) {
  SCOPED_TRACE(testing::Message() << "c=" << c << " cp=" << cp << " " << h << "x" << w << " k=" << k << " s=" << s
                                  << " dilation=" << dl << " co=" << co << (epilogue ? " scaled, with bias" : ""));
  std::mt19937 rng(seed);
  const int64_t b = 2, pad = 1;
  const int64_t hp = h + 2 * pad, wp = w + 2 * pad, ho = (hp - dl * (k - 1) - 1) / s + 1,
                wo = (wp - dl * (k - 1) - 1) / s + 1;
  const int32_t zp = 9;
  std::vector<uint8_t> in(size_t(b * hp * wp * cp));
  for (auto& v : in) v = rng() % 5 == 0 ? 127 : uint8_t(rng() % 128);
  std::vector<int8_t> wt(size_t(co * k * k * cp), 0);
  for (int64_t o = 0; o < co; ++o)
    for (int64_t t = 0; t < k * k; ++t)
      for (int64_t ch = 0; ch < c; ++ch) wt[size_t((o * k * k + t) * cp + ch)] = int8_t(int(rng() % 256) - 128);
  const int64_t kp = k * k * cp;
  std::vector<int8_t> packed(size_t(KQ::packed_panels(co) * kp * KQ::kPanel));
  std::vector<int32_t> row_sum(static_cast<size_t>(co) + 0);
  KQ::pack_weight_s8(wt.data(), co, kp, packed.data(), row_sum.data());
  std::vector<float> scale(size_t(co), 1.0f), bias(size_t(co), 0.0f), out(size_t(b * co * ho * wo), NAN);
  float a_scale = 1.0f;
  if (epilogue) {
    std::uniform_real_distribution<float> ws(0.0005f, 0.03f), bs(-3.0f, 3.0f);
    a_scale = 0.0173f;
    for (auto& v : scale) v = ws(rng);
    for (auto& v : bias) v = bs(rng);
  }
  const int64_t os[4] = {co * ho * wo, ho * wo, wo, 1};
  KQ::ConvGeometry g{b, hp, wp, cp, k, k, s, s, dl, dl, ho, wo};
  conv(in.data(), g, co, zp, packed.data(), row_sum.data(), a_scale, scale.data(), epilogue ? bias.data() : nullptr,
       out.data(), os, 2);
  for (int64_t n = 0; n < b; ++n)
    for (int64_t o = 0; o < co; ++o)
      for (int64_t y = 0; y < ho; ++y)
        for (int64_t x = 0; x < wo; ++x) {
          int64_t want = 0;
          for (int64_t i = 0; i < k; ++i)
            for (int64_t j = 0; j < k; ++j)
              for (int64_t ch = 0; ch < cp; ++ch)
                want += (int64_t(in[size_t(((n * hp + y * s + i * dl) * wp + x * s + j * dl) * cp + ch)]) - zp) *
                        wt[size_t((o * k * k + i * k + j) * cp + ch)];
          const float expected = epilogue ? float(want) * (a_scale * scale[size_t(o)]) + bias[size_t(o)] : float(want);
          ASSERT_EQ(out[size_t(n * os[0] + o * os[1] + y * os[2] + x)], expected) << n << " " << o << " " << y << " "
                                                                                   << x;
        }
}

TEST_P(Int8Path, DirectConvolutionMatchesIntegerLoops) {
  // 5 channels padded to 8, 7x46 input, 3x3 kernel at stride 2, 37 output channels (three panels,
  // one partial); 23 columns: tiles of 8 and a rest. Then 64 and 112 output channels (4 and 7
  // panels: the 3-panel tiles' groups of 2 + 2 and 3 + 2 + 2).
  const ConvFn conv = [isa = GetParam()](const uint8_t* in, KQ::ConvGeometry g, int64_t co, int32_t zp,
                                         const int8_t* packed, const int32_t* rs, float as, const float* ws,
                                         const float* bias, float* out, const int64_t* os, int threads) {
    KQ::conv2d_u8s8_isa(isa, in, g, co, zp, packed, rs, as, ws, bias, out, os, threads);
  };
  expect_conv_exact(conv, 5, 8, 7, 46, 3, 2, 1, 37, 11);
  expect_conv_exact(conv, 12, 12, 5, 13, 3, 1, 1, 64, 15);
  expect_conv_exact(conv, 12, 12, 5, 13, 3, 1, 1, 112, 16);
  expect_conv_exact(conv, 5, 8, 7, 46, 3, 2, 1, 37, 17, true);
}

// The AMX path's convolution block on the software tile model, on any CPU: one K segment per tap
// of 8 channels (every step a tail), 64 (whole tiles loaded in place), 72 and 100 (a tail that
// reads the next tap's weights in place, and the last tap's copied), 1x1 kernels, dilation 2,
// rows past a 64-pixel block and 16-row halves (full, partial, absent), one or two panels.
TEST(Int8AmxModel, DirectConvolutionMatchesIntegerLoops) {
  const ConvFn model = KQ::conv2d_u8s8_amx_model;
  expect_conv_exact(model, 5, 8, 7, 46, 3, 2, 1, 37, 11);
  expect_conv_exact(model, 64, 64, 4, 40, 3, 1, 1, 32, 12);
  expect_conv_exact(model, 70, 72, 3, 70, 3, 1, 2, 20, 13);
  expect_conv_exact(model, 100, 100, 5, 9, 4, 2, 1, 48, 14);
  expect_conv_exact(model, 3, 4, 6, 15, 1, 1, 1, 16, 15);
  expect_conv_exact(model, 128, 128, 2, 17, 1, 1, 1, 64, 16);
  expect_conv_exact(model, 70, 72, 3, 70, 3, 1, 2, 20, 18, true);
}

// Every path of the INT8 layers' activation pass (finite check, min/max, 7-bit codes), each run
// on this CPU when it can (skipped by name when not), under the ISA cap set for the test and
// restored after it.
class Int8ActPath : public K::testing::IsaCappedTest {
  K::Isa family_isa() const override { return KQ::int8_act_isa(); }
  const char* family_name() const override { return "activation-quantization"; }
};

INSTANTIATE_TEST_SUITE_P(Isa, Int8ActPath, ::testing::Values(K::Isa::Scalar, K::Isa::Avx2, K::Isa::Avx512),
                         K::testing::isa_param_name);

// Codes clamp(nearbyint(x / scale) + zero_point, 0, 127): halves round to even (0.5 -> 0, 1.5 -> 2,
// 2.5 -> 2, -1.5 -> -2), row lengths 1..40 (whole vectors and every tail), the row padding zeroed.
TEST_P(Int8ActPath, StaticCodesRoundHalvesToEven) {
  const KQ::ActQuant q{0.25f, 3};  // 1 / 0.25 = 4 exactly: x = (t + 0.5) / 4 is a tie
  {
    const std::vector<float> x{0.125f, 0.375f, 0.625f, -0.375f, -0.125f, 0.875f, 100.0f, -100.0f};
    std::vector<uint8_t> a(8, 0xAB);
    KQ::quantize_activations_static_u7(x.data(), 1, 8, q, a.data(), 8, 1);
    EXPECT_EQ(a, (std::vector<uint8_t>{3, 5, 5, 1, 3, 7, 127, 0}));
  }
  std::mt19937 rng(23);
  for (int64_t k = 1; k <= 40; ++k) {
    const int64_t m = 3, lda = KQ::packed_k(k) + 4;
    std::vector<float> x(size_t(m * k));
    for (size_t e = 0; e < x.size(); ++e)
      x[e] = e % 3 == 2 ? float(int(rng() % 400) - 100) / 7.0f : (float(int(rng() % 160) - 30) + 0.5f) / 4.0f;
    std::vector<uint8_t> a(size_t(m * lda), 0xAB);
    KQ::quantize_activations_static_u7(x.data(), m, k, q, a.data(), lda, 1);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < lda; ++j) {
        int want = 0;
        if (j < k) {
          const float v = std::nearbyint(x[size_t(i * k + j)] * 4.0f) + 3.0f;
          want = int(std::min(127.0f, std::max(0.0f, v)));
        }
        ASSERT_EQ(int(a[size_t(i * lda + j)]), want) << "k " << k << " at " << i << "," << j;
      }
  }
}

// The range of dynamic quantization (extended to include 0) and the finiteness check see every
// value: the minimum, the maximum, a NaN or an infinity only at the last index, for n = 1..40.
TEST_P(Int8ActPath, DynamicRangeAndFinitenessSeeTheLastValue) {
  std::mt19937 rng(29);
  for (int64_t n = 1; n <= 40; ++n) {
    std::vector<float> x(static_cast<size_t>(n));
    for (auto& v : x) v = float(int(rng() % 1000)) / 1000.0f;  // in [0, 1)
    for (float last : {-7.5f, 30.0f, -0.25f}) {
      x[size_t(n - 1)] = last;
      float lo = 0.0f, hi = 0.0f;
      for (float v : x) lo = std::min(lo, v), hi = std::max(hi, v);
      const float scale = hi > lo ? (hi - lo) / 127.0f : 1.0f;
      const int32_t zp = int32_t(std::min(127.0f, std::max(0.0f, std::nearbyint(-lo / scale))));
      KQ::ActQuant q{-1.0f, -1};
      ASSERT_TRUE(KQ::dynamic_act_params_u7(x.data(), n, &q, 1)) << "n " << n;
      EXPECT_EQ(q.scale, scale) << "n " << n << " last " << last;
      EXPECT_EQ(q.zero_point, zp) << "n " << n << " last " << last;
      EXPECT_TRUE(KQ::all_finite(x.data(), n, 1));
    }
    for (float last : {NAN, INFINITY, -INFINITY}) {
      x[size_t(n - 1)] = last;
      KQ::ActQuant q{-1.0f, -1};
      EXPECT_FALSE(KQ::dynamic_act_params_u7(x.data(), n, &q, 1)) << "n " << n << " last " << last;
      EXPECT_EQ(q.scale, -1.0f);  // untouched
      EXPECT_FALSE(KQ::all_finite(x.data(), n, 1)) << "n " << n << " last " << last;
    }
  }
}

#include "kernels/quant/observe.h"

// Bins [lo + b w, lo + (b + 1) w): a value on an edge counts in the bin above it (hi itself in the
// last), values below lo (and -inf) in the first, above hi (and +inf) in the last, NaNs apart.
TEST(Observe, HistogramEdgesOutOfRangeAndNaN) {
  const std::vector<float> x{0.0f, 1.0f, 2.0f, 3.0f, 4.0f, 0.5f, 2.999f, -1.0f, 5.0f, -INFINITY, INFINITY, NAN, 1.0f};
  std::vector<int64_t> counts(4, -1);
  for (int threads : {1, 3}) {
    EXPECT_EQ(KQ::observe_histogram(x.data(), K::DType::F32, int64_t(x.size()), 4, 0.0f, 4.0f, counts.data(), threads),
              1);
    // 0: {0, 0.5, -1, -inf}; 1: {1, 1}; 2: {2, 2.999}; 3: {3, 4, 5, +inf}
    EXPECT_EQ(counts, (std::vector<int64_t>{4, 2, 2, 4})) << threads << " threads";
  }
}

// scale = (hi - lo) / (qmax - qmin) over the range extended to 0, zero_point = clamp(qmin -
// round(lo / scale), qmin, qmax); an empty range gives scale 1.
TEST(Observe, AffineQparamsOfPositiveAndEmptyRanges) {
  float scale = 0.0f;
  int32_t zp = 99;
  KQ::affine_qparams(2.0f, 6.0f, -128, 127, &scale, &zp);  // lo > 0: the range becomes [0, 6]
  EXPECT_EQ(scale, 6.0f / 255.0f);
  EXPECT_EQ(zp, -128);
  KQ::affine_qparams(-6.0f, -2.0f, 0, 255, &scale, &zp);  // hi < 0: [-6, 0]
  EXPECT_EQ(scale, 6.0f / 255.0f);
  EXPECT_EQ(zp, 255);
  KQ::affine_qparams(-1.0f, 3.0f, 0, 255, &scale, &zp);
  EXPECT_EQ(scale, 4.0f / 255.0f);
  EXPECT_EQ(zp, 64);  // 0 - round(-1 / (4 / 255)) = 0 - round(-63.75)
  KQ::affine_qparams(0.0f, 0.0f, -128, 127, &scale, &zp);  // empty
  EXPECT_EQ(scale, 1.0f);
  EXPECT_EQ(zp, -128);
  KQ::affine_qparams(0.0f, 0.0f, 0, 255, &scale, &zp);
  EXPECT_EQ(scale, 1.0f);
  EXPECT_EQ(zp, 0);
}
