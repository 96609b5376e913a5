// GoogleTest of the torch-free KD-loss kernel against the double-precision reference (kd_reference.h).
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kd_reference.h"
#include "kernels/cpu_features.h"
#include "kernels/distill/kd_loss.h"

namespace K = edgegen::kernels;

namespace {

template <typename T> T encode(double v);
template <> float encode<float>(double v) { return float(v); }
template <> double encode<double>(double v) { return v; }
template <> K::bf16_t encode<K::bf16_t>(double v) { return K::to_bf16(float(v)); }
template <> K::fp16_t encode<K::fp16_t>(double v) { return K::to_fp16(float(v)); }

template <typename T> K::DType dtype_of();
template <> K::DType dtype_of<float>() { return K::DType::F32; }
template <> K::DType dtype_of<double>() { return K::DType::F64; }
template <> K::DType dtype_of<K::bf16_t>() { return K::DType::BF16; }
template <> K::DType dtype_of<K::fp16_t>() { return K::DType::F16; }

template <typename T> double tol_of();
template <> double tol_of<float>() { return 2e-5; }
template <> double tol_of<double>() { return 1e-11; }
template <> double tol_of<K::bf16_t>() { return 1e-2; }  // gradient rounded to 8 mantissa bits
template <> double tol_of<K::fp16_t>() { return 2e-3; }

// A one-teacher problem; owns the pointer arrays the problem refers to, hence not copyable.
struct OneTeacher {
  const void* tp[1];
  int64_t ts[1];
  double w[1] = {1.0};
  K::KDLossProblem p;
  OneTeacher(const void* student, const void* teacher, int64_t rows, int64_t V, const int64_t* y,
             double* loss, K::DType dt = K::DType::F32, int64_t student_stride = 0) {
    tp[0] = teacher;
    ts[0] = V;
    p.rows = rows;
    p.vocab = V;
    p.dtype = dt;
    p.student = student;
    p.student_row_stride = student_stride ? student_stride : V;
    p.num_teachers = 1;
    p.teachers = tp;
    p.teacher_row_strides = ts;
    p.teacher_weights = w;
    p.target = y;
    p.row_loss = loss;
    p.grad_row_stride = p.student_row_stride;
  }
  OneTeacher(const OneTeacher&) = delete;
  OneTeacher& operator=(const OneTeacher&) = delete;
};

std::vector<float> randn(size_t n, uint32_t seed, float spread = 2.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> nd(0.f, spread);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(gen);
  return v;
}

using Runner = void (*)(const K::KDLossProblem&);
using Exp = void (*)(const float*, float*, int64_t, bool);

// A level's kernel and exponential (null where the build has none of its own).
// The row runner and the exp routine an ISA has its own of; both null where it has none.
struct KDPathFns {
  Runner run = nullptr;
  Exp exp = nullptr;
};

KDPathFns path_for(K::Isa isa) {
  switch (isa) {
    case K::Isa::Scalar: return {&K::kd_loss_rows_scalar, &K::kd_exp_nonpos_scalar};
#ifdef EDGEGEN_HAVE_AVX2
    case K::Isa::Avx2: return {&K::kd_loss_rows_avx2, &K::kd_exp_nonpos_avx2};
    case K::Isa::Avx512: return {&K::kd_loss_rows_avx512, &K::kd_exp_nonpos_avx512};
#endif
    default: return {};
  }
}

// Random problem, run through `run`, checked row by row against the reference on the decoded
// (already rounded) inputs.
template <typename T>
void check_random(Runner run, int64_t rows, int64_t V, int nteach, double temp, double alpha,
                  uint32_t seed, double spread = 3.0) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> nd(0.0, spread);
  std::vector<T> s(rows * V);
  std::vector<std::vector<T>> t(nteach, std::vector<T>(rows * V));
  for (auto& x : s) x = encode<T>(nd(gen));
  for (auto& tk : t)
    for (auto& x : tk) x = encode<T>(nd(gen));
  std::vector<int64_t> y(rows);
  for (int64_t i = 0; i < rows; ++i) y[i] = (i % 5 == 3) ? -100 : int64_t(gen() % V);
  std::vector<double> w(nteach);
  double wsum = 0;
  for (int k = 0; k < nteach; ++k) wsum += (w[k] = 1.0 + k);
  for (auto& x : w) x /= wsum;
  std::vector<const void*> tp(nteach);
  std::vector<int64_t> ts(nteach, V);
  for (int k = 0; k < nteach; ++k) tp[k] = t[k].data();
  std::vector<double> loss(rows, -1.0);
  // NaN before the call: every entry, the ignored rows' zeros included, must be written.
  std::vector<T> grad(rows * V, encode<T>(NAN));
  // Per-row gradient scales (times grad_scale): a different one for every row.
  std::vector<double> row_scale(rows);
  for (int64_t i = 0; i < rows; ++i) row_scale[i] = 0.25 + 0.375 * double(i);

  K::KDLossProblem p;
  p.rows = rows;
  p.vocab = V;
  p.dtype = dtype_of<T>();
  p.student = s.data();
  p.student_row_stride = V;
  p.num_teachers = nteach;
  p.teachers = tp.data();
  p.teacher_row_strides = ts.data();
  p.teacher_weights = w.data();
  p.target = y.data();
  p.temperature = temp;
  p.alpha = alpha;
  p.row_loss = loss.data();
  p.grad = grad.data();
  p.grad_row_stride = V;
  p.grad_scale = 0.5;
  p.grad_row_scale = row_scale.data();
  p.num_threads = 2;
  run(p);

  const double tol = tol_of<T>();
  for (int64_t i = 0; i < rows; ++i) {
    if (y[i] == -100) {
      EXPECT_EQ(loss[i], 0.0);
      for (int64_t v = 0; v < V; ++v)
        ASSERT_EQ(K::to_float(grad[i * V + v]), 0.0f) << "ignored row " << i << " v " << v;
      continue;
    }
    std::vector<double> sd(V);
    std::vector<std::vector<double>> td(nteach, std::vector<double>(V));
    for (int64_t v = 0; v < V; ++v) {
      sd[v] = K::to_float(s[i * V + v]);
      for (int k = 0; k < nteach; ++k) td[k][v] = K::to_float(t[k][i * V + v]);
    }
    const kd_reference::Row r = kd_reference::row(sd, td, w, y[i], temp, alpha, 0.5 * row_scale[i]);
    // fp32 accumulation inside the kernel bounds the loss error whatever the input dtype.
    const double loss_tol = std::is_same<T, double>::value ? 1e-10 : 2e-5;
    EXPECT_NEAR(loss[i], r.loss, loss_tol * (1.0 + std::abs(r.loss))) << "row " << i;
    double gmax = 0;
    for (double g : r.grad) gmax = std::max(gmax, std::abs(g));
    for (int64_t v = 0; v < V; ++v)
      ASSERT_NEAR(K::to_float(grad[i * V + v]), r.grad[v], tol * gmax + 1e-30)
          << "row " << i << " v " << v;
  }
}

}  // namespace

namespace edgegen::kernels {
void PrintTo(Isa isa, std::ostream* os);  // test_quant.cpp
}  // namespace edgegen::kernels

// Every KD-loss path of the build (scalar, AVX2, AVX-512), each run on this CPU when it can
// (skipped by name when not).
class KDLossPath : public ::testing::TestWithParam<K::Isa> {
 protected:
  void SetUp() override {
    if (!K::cpu_supports(GetParam())) GTEST_SKIP() << "this CPU lacks " << K::isa_name(GetParam());
    const KDPathFns fns = path_for(GetParam());
    run = fns.run;
    exp = fns.exp;
    if (!run || !exp) GTEST_SKIP() << "no KD-loss path of its own at " << K::isa_name(GetParam());
  }
  Runner run = nullptr;
  Exp exp = nullptr;
};

INSTANTIATE_TEST_SUITE_P(Isa, KDLossPath, ::testing::Values(K::Isa::Scalar, K::Isa::Avx2, K::Isa::Avx512),
                         [](const ::testing::TestParamInfo<K::Isa>& i) { return std::string(K::isa_name(i.param)); });

TEST_P(KDLossPath, HandWorkedTwoClassCase) {
  // s = [0, 0], t = [0, ln 3] at T = 1: p_s = [1/2, 1/2], p_t = [1/4, 3/4].
  const float s[2] = {0.0f, 0.0f};
  const float t[2] = {0.0f, float(std::log(3.0))};
  const int64_t y[1] = {0};
  double loss = 0;
  float grad[2];
  OneTeacher prob(s, t, 1, 2, y, &loss);
  K::KDLossProblem& p = prob.p;
  p.temperature = 1.0;
  p.alpha = 1.0;  // KL only: 1/4 ln(1/2) + 3/4 ln(3/2)
  run(p);
  EXPECT_NEAR(loss, 0.25 * std::log(0.5) + 0.75 * std::log(1.5), 1e-7);
  p.alpha = 0.0;  // CE only: ln 2
  run(p);
  EXPECT_NEAR(loss, std::log(2.0), 1e-7);
  // alpha = 1/2: 0.5 (p_s - p_t) + 0.5 (p_s - e_0) = [-0.125, 0.125]; loss the average.
  p.alpha = 0.5;
  p.grad = grad;
  run(p);
  EXPECT_NEAR(loss, 0.5 * (0.25 * std::log(0.5) + 0.75 * std::log(1.5)) + 0.5 * std::log(2.0),
              1e-7);
  EXPECT_NEAR(grad[0], -0.125f, 1e-7);
  EXPECT_NEAR(grad[1], 0.125f, 1e-7);
  // Temperature 2 doubles into T^2 KL: s/2 = [0,0], t/2 = [0, ln 3 / 2].
  p.alpha = 1.0;
  p.temperature = 2.0;
  p.grad = nullptr;
  run(p);
  const double q = 1.0 / (1.0 + std::sqrt(3.0));  // p_t(0) at T = 2
  const double kl = q * std::log(2 * q) + (1 - q) * std::log(2 * (1 - q));
  EXPECT_NEAR(loss, 4.0 * kl, 1e-6);
}

TEST_P(KDLossPath, RandomAgainstReferenceAllDtypes) {
  uint32_t seed = 1;
  for (int64_t V : {1, 7, 8, 9, 33, 4099}) {
    for (double temp : {1.0, 2.0, 0.7}) {
      for (double alpha : {0.0, 0.3, 1.0}) {
        for (int nt : {1, 3}) {
          SCOPED_TRACE(testing::Message() << "V=" << V << " T=" << temp << " alpha=" << alpha
                                          << " teachers=" << nt);
          check_random<float>(run, 6, V, nt, temp, alpha, seed++);
          check_random<K::bf16_t>(run, 6, V, nt, temp, alpha, seed++);
          check_random<K::fp16_t>(run, 6, V, nt, temp, alpha, seed++);
        }
      }
    }
  }
}

TEST(KDLoss, Float64AgainstReference) {
  // float64 always runs the scalar policy.
  check_random<double>(&K::kd_loss_rows, 5, 300, 1, 2.0, 0.5, 99);
  check_random<double>(&K::kd_loss_rows, 5, 300, 2, 1.5, 0.25, 98);
}

// Each path's exponential for x <= 0 against std::exp in double: under 1.5e-7 relative error
// (3e-6 for the coarse one of 16-bit logits) where the result is a normal float; below FLT_MIN
// (AVX-512 rounds to a subnormal, AVX2 flushes to 0) off by less than FLT_MIN; -inf and far below
// give exactly 0, 0 gives 1 (exactly, except the coarse fit's 1 - 8e-7), NaN NaN.
TEST_P(KDLossPath, ExponentialOfDifferencesToTheMaximum) {
  std::vector<float> x;
  for (int i = 0; i <= 2000000; ++i) x.push_back(-120.0f * float(i) / 2000000.0f);  // 0 .. -120
  for (float v : {1e-7f, 0.25f, 0.3465736f, -0.3465736f, -87.3365f, -87.34f, -103.2f, -103.3f, -104.0f,
                  -1e30f, -FLT_MAX, -0.0f})
    x.push_back(v);
  const size_t special = x.size();
  x.push_back(-INFINITY);
  x.push_back(NAN);
  for (bool coarse : {false, true}) {
    SCOPED_TRACE(testing::Message() << (coarse ? "coarse" : "fine"));
    std::vector<float> y(x.size(), -1.0f);
    exp(x.data(), y.data(), int64_t(x.size()), coarse);
    double worst = 0;
    for (size_t i = 0; i < special; ++i) {
      const double ref = std::exp(double(x[i]));
      if (ref >= FLT_MIN) {
        worst = std::max(worst, std::abs(double(y[i]) - ref) / ref);
      } else {
        ASSERT_LT(std::abs(double(y[i]) - ref), double(FLT_MIN)) << "x = " << x[i];
        ASSERT_GE(y[i], 0.0f) << "x = " << x[i];
      }
    }
    EXPECT_LT(worst, coarse ? 3e-6 : 1.5e-7);
    EXPECT_NEAR(y[0], 1.0f, coarse ? 1e-6f : 0.0f);            // x = 0
    EXPECT_NEAR(y[special - 1], 1.0f, coarse ? 1e-6f : 0.0f);  // x = -0
    EXPECT_EQ(y[special - 2], 0.0f);                           // -FLT_MAX
    EXPECT_EQ(y[special - 3], 0.0f);                           // -1e30
    EXPECT_EQ(y[special], 0.0f);                               // -inf
    EXPECT_TRUE(std::isnan(y[special + 1]));
  }
}

TEST_P(KDLossPath, LargeLogitsStayAccurate) {
  check_random<float>(run, 4, 1000, 1, 2.0, 0.5, 7, /*spread=*/1e4);
  check_random<float>(run, 4, 1000, 2, 2.0, 0.5, 8, /*spread=*/1e4);
}

// The gradient written over one of the logit buffers (the student's: in place; the teacher's) must
// equal the gradient written elsewhere: nothing the kernel still reads may be overwritten before
// it is read. V = 37 and 100: rows shorter and longer than one vector, tails included.
// V = 4100: three blocks of the one-pass sweep; T = 0.7 with a CE term is the case whose gradient
// sweep reads the student row it overwrites.
static void expect_aliased_gradient_is_exact(Runner run, bool over_teacher) {
  const int64_t rows = 4;
  for (int64_t V : {int64_t(37), int64_t(100), int64_t(4100)}) {
    for (double temp : {2.0, 0.7}) {
      const std::vector<float> s = randn(rows * V, 3), t = randn(rows * V, 4);
      const std::vector<int64_t> y = {0, 5, 36, 2};
      std::vector<double> l1(rows), l2(rows);
      std::vector<float> g(rows * V), buf = over_teacher ? t : s;
      OneTeacher separate(s.data(), t.data(), rows, V, y.data(), l1.data());
      separate.p.grad = g.data();
      separate.p.temperature = temp;
      run(separate.p);
      OneTeacher aliased(over_teacher ? s.data() : buf.data(), over_teacher ? buf.data() : t.data(), rows, V,
                         y.data(), l2.data());
      aliased.p.grad = buf.data();
      aliased.p.temperature = temp;
      run(aliased.p);
      EXPECT_EQ(l1, l2) << "V " << V << " T " << temp;
      EXPECT_EQ(0, std::memcmp(g.data(), buf.data(), g.size() * sizeof(float))) << "V " << V << " T " << temp;
    }
  }
}

TEST_P(KDLossPath, GradientMayOverwriteStudent) { expect_aliased_gradient_is_exact(run, false); }

TEST_P(KDLossPath, GradientMayOverwriteTeacher) { expect_aliased_gradient_is_exact(run, true); }

TEST_P(KDLossPath, NegativeInfinityEntries) {
  // Entries 0..2 are -inf in both models (a masked vocabulary); entry 3 only in the teacher.
  const int64_t V = 11;
  std::vector<float> s(V), t(V);
  for (int64_t v = 0; v < V; ++v) s[v] = 0.3f * float(v), t[v] = 0.2f * float(V - v);
  for (int v = 0; v < 3; ++v) s[v] = t[v] = -INFINITY;
  t[3] = -INFINITY;
  const int64_t y[1] = {5};
  std::vector<double> sd(s.begin() + 3, s.end()), td(t.begin() + 3, t.end());
  td[0] = -INFINITY;
  const kd_reference::Row r = kd_reference::row(sd, {td}, {1.0}, 5 - 3, 2.0, 0.5, 1.0);
  double loss;
  std::vector<float> g(V);
  OneTeacher prob(s.data(), t.data(), 1, V, y, &loss);
  K::KDLossProblem& p = prob.p;
  p.grad = g.data();
  run(p);
  ASSERT_TRUE(std::isfinite(loss));
  EXPECT_NEAR(loss, r.loss, 1e-6);
  for (int v = 0; v < 3; ++v) EXPECT_EQ(g[v], 0.0f);
  for (int64_t v = 3; v < V; ++v) EXPECT_NEAR(g[v], r.grad[v - 3], 1e-6);
  // The student -inf where the teacher has mass: KL is +inf, honestly.
  std::vector<float> s2 = s;
  s2[4] = -INFINITY;
  p.student = s2.data();
  p.grad = nullptr;
  run(p);
  EXPECT_TRUE(std::isinf(loss) && loss > 0);
  // ... unless the KL term has weight 0: then it is skipped, not 0 * inf = NaN.
  p.alpha = 0.0;
  run(p);
  EXPECT_TRUE(std::isfinite(loss));
}

// The one-teacher path sums each block of 2048 entries against its own maximum and merges the
// blocks against the row's: blocks whose maxima lie far apart (60 below the row's, so their
// factors e^((m_b - M)/T) are tiny but not 0), a block masked to -inf in both models (factor 0),
// the row maximum in a short last block, the target in a low block.
TEST_P(KDLossPath, BlocksWithFarApartMaxima) {
  const int64_t V = 3 * 2048 + 6;
  std::mt19937 gen(11);
  std::normal_distribution<float> nd(0.f, 2.f);
  std::vector<float> s(V), t(V);
  for (int64_t v = 0; v < V; ++v) {
    const int64_t b = v / 2048;
    const float shift = b == 0 ? -60.f : (b == 3 ? 8.f : 0.f);
    s[v] = nd(gen) + shift;
    t[v] = nd(gen) + (b == 0 ? -45.f : shift);
  }
  for (int64_t v = 2048; v < 4096; ++v) s[v] = t[v] = -INFINITY;
  std::vector<double> sd(s.begin(), s.end()), td(t.begin(), t.end());
  for (int64_t y : {int64_t(17), int64_t(5000), int64_t(V - 1)}) {
    for (double temp : {1.0, 2.0, 0.7}) {
      for (double alpha : {0.0, 0.5, 1.0}) {
        SCOPED_TRACE(testing::Message() << "y=" << y << " T=" << temp << " alpha=" << alpha);
        const kd_reference::Row r = kd_reference::row(sd, {td}, {1.0}, y, temp, alpha, 1.0);
        double gmax = 0;
        for (double g : r.grad) gmax = std::max(gmax, std::abs(g));
        double loss = -1;
        std::vector<float> g(V, 1.0f);
        OneTeacher prob(s.data(), t.data(), 1, V, &y, &loss);
        prob.p.temperature = temp;
        prob.p.alpha = alpha;
        prob.p.grad = g.data();
        run(prob.p);
        EXPECT_NEAR(loss, r.loss, 2e-5 * (1.0 + std::abs(r.loss)));
        for (int64_t v = 0; v < V; ++v) {
          if (v >= 2048 && v < 4096) {
            ASSERT_EQ(g[v], 0.0f) << "v " << v;  // masked entries: exactly no gradient
          } else {
            ASSERT_NEAR(g[v], r.grad[v], 2e-5 * gmax + 1e-30) << "v " << v;
          }
        }
      }
    }
  }
}

// A NaN logit makes the loss NaN (never a finite number): in the last lane of a block (where the
// block maximum itself may come back NaN), in the scalar tail, in the teacher only. The only
// finite case is a NaN teacher under alpha = 0, where the teacher is not read.
TEST_P(KDLossPath, NaNLogitsGiveNaNLoss) {
  const int64_t V = 2048 + 16 + 5;  // one block, then 16 + 5: a vector and a scalar tail
  const int64_t y[1] = {7};
  for (int64_t where : {int64_t(2047), int64_t(2048 + 16 + 4), int64_t(3)}) {
    for (bool in_teacher : {false, true}) {
      for (double alpha : {0.0, 0.5, 1.0}) {
        SCOPED_TRACE(testing::Message() << "at " << where << (in_teacher ? " teacher" : " student") << " alpha "
                                        << alpha);
        std::vector<float> s = randn(V, 21), t = randn(V, 22);
        (in_teacher ? t : s)[where] = NAN;
        for (bool with_grad : {false, true}) {
          double loss = 0;
          std::vector<float> g(V);
          OneTeacher prob(s.data(), t.data(), 1, V, y, &loss);
          prob.p.alpha = alpha;
          prob.p.temperature = 0.7;
          prob.p.grad = with_grad ? g.data() : nullptr;
          run(prob.p);
          if (in_teacher && alpha == 0.0) EXPECT_TRUE(std::isfinite(loss));
          else EXPECT_TRUE(std::isnan(loss)) << "loss " << loss;
        }
      }
    }
  }
}

// Identical student and teacher at the same temperature, KL only: the true gradient is 0, and
// each entry may differ from it by the rounding of one product (a wrong block factor would show
// as errors of the size of the probabilities themselves).
TEST_P(KDLossPath, IdenticalModelsGiveAlmostNoGradient) {
  const int64_t V = 5000;
  std::vector<float> s = randn(V, 31);
  for (int64_t v = 2048; v < 4096; ++v) s[v] -= 30.0f;  // blocks with maxima far apart
  const int64_t y[1] = {1};
  for (double temp : {1.0, 2.0, 0.7}) {
    double loss = -1;
    std::vector<float> g(V);
    OneTeacher prob(s.data(), s.data(), 1, V, y, &loss);
    prob.p.alpha = 1.0;
    prob.p.temperature = temp;
    prob.p.grad = g.data();
    run(prob.p);
    EXPECT_NEAR(loss, 0.0, 1e-6) << "T " << temp;
    float worst = 0;
    for (float v : g) worst = std::max(worst, std::abs(v));
    EXPECT_LT(worst, 1e-7f) << "T " << temp;
  }
}

TEST(KDLoss, ResultDoesNotDependOnThreadCount) {
  const int64_t rows = 9, V = 1001;
  const std::vector<float> s = randn(rows * V, 5), t = randn(rows * V, 6);
  const std::vector<int64_t> y(rows, 3);
  std::vector<double> l1(rows), l2(rows);
  std::vector<float> g1(rows * V), g2(rows * V);
  OneTeacher one(s.data(), t.data(), rows, V, y.data(), l1.data());
  one.p.grad = g1.data();
  one.p.num_threads = 1;
  K::kd_loss_rows(one.p);
  OneTeacher two(s.data(), t.data(), rows, V, y.data(), l2.data());
  two.p.grad = g2.data();
  two.p.num_threads = 2;
  K::kd_loss_rows(two.p);
  EXPECT_EQ(l1, l2);
  EXPECT_EQ(0, std::memcmp(g1.data(), g2.data(), g1.size() * sizeof(float)));
}

TEST(KDLoss, RowsBeyondTwoToThe31Elements) {
  // Row 1 starts past element 2^31: only 64-bit offsets reach it. The mapping is sparse, so only
  // the pages actually touched are ever backed by memory.
  const int64_t V = 64;
  const int64_t stride = (int64_t(1) << 31) + 128;
  const size_t bytes = size_t(stride + V) * sizeof(K::bf16_t);
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
  if (mem == MAP_FAILED) GTEST_SKIP() << "cannot reserve " << bytes << " bytes of address space";
  auto* base = static_cast<K::bf16_t*>(mem);
  for (int64_t v = 0; v < V; ++v) {
    base[v] = K::to_bf16(0.1f * float(v));           // row 0
    base[stride + v] = K::to_bf16(-0.05f * float(v));  // row 1
  }
  std::vector<K::bf16_t> t(2 * V);
  for (int64_t v = 0; v < 2 * V; ++v) t[v] = K::to_bf16(0.01f * float(v % 13));
  const int64_t y[2] = {1, 2};
  double loss[2];
  OneTeacher prob(base, t.data(), 2, V, y, loss, K::DType::BF16, stride);
  prob.p.grad = base;  // in place, at the same far offsets
  K::kd_loss_rows(prob.p);
  for (int i = 0; i < 2; ++i) {
    std::vector<double> sd(V), td(V);
    for (int64_t v = 0; v < V; ++v) {
      sd[v] = i == 0 ? K::to_float(K::to_bf16(0.1f * float(v))) : K::to_float(K::to_bf16(-0.05f * float(v)));
      td[v] = K::to_float(t[i * V + v]);
    }
    const kd_reference::Row r = kd_reference::row(sd, {td}, {1.0}, y[i], 2.0, 0.5, 1.0);
    EXPECT_NEAR(loss[i], r.loss, 1e-5);
    EXPECT_NEAR(K::to_float(base[i * stride + 5]), r.grad[5], 1e-2 * std::abs(r.grad[5]) + 1e-6);
  }
  munmap(mem, bytes);
}
