// GoogleTest of the torch-free sliding-window attention against a naive double-precision
// reference that scores every (query, key) pair and applies the visibility rule directly.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <ostream>
#include <random>
#include <string>
#include <set>
#include <utility>
#include <vector>

#include "kernels/attention/attention.h"
#include "kernels/attention/plan.h"
#include "attention_reference.h"

namespace KA = edgegen::kernels::attention;
namespace K = edgegen::kernels;
using attention_reference::Case;
using attention_reference::Ref;
using attention_reference::reference;

namespace {

template <class T>
KA::Strided strided(const std::vector<T>& x, const Case& c, int64_t n) {
  return KA::Strided{x.data(), c.H * n * c.d, n * c.d, c.d, 1};
}

template <class T>
T from_double(double x) {
  if constexpr (std::is_same_v<T, K::bf16_t>) return K::to_bf16(float(x));
  else return T(x);
}
template <class T>
double as_double(T x) {
  if constexpr (std::is_same_v<T, K::bf16_t>) return double(K::to_float(x));
  else return double(x);
}

constexpr int kDispatched = -1;
constexpr int kAmxModel = -2;  // bf16: the AMX products on the software tile model

// Runs the kernel in dtype T (float, double or bf16) and compares with the reference: each value
// within tol + rel * (the sum of its terms' magnitudes; for lse, |lse|). isa: kDispatched, the
// dispatched path; kAmxModel; else that level's path.
// The same values every `sd`-th element (a head_dim stride of sd), for the layouts whose operands
// go through copies instead of being read or packed in place.
template <class T>
struct Spread {
  std::vector<T> data;
  Spread(const std::vector<T>& x, int64_t sd) : data(x.size() * size_t(sd)) {
    for (size_t i = 0; i < x.size(); ++i) data[i * size_t(sd)] = x[i];
  }
};

// sd: the inputs' (q, k, v, dout) head_dim stride.
template <class T>
void check_case(const Case& c, int threads, double tol, int isa = kDispatched, double rel = 0.0, int64_t sd = 1) {
  std::mt19937 rng(11);
  std::normal_distribution<double> nd(0.0, 1.0);
  auto fill = [&](int64_t n) {
    std::vector<double> x(n);
    for (auto& e : x) e = nd(rng);
    return x;
  };
  const int64_t d = c.d;
  auto q = fill(c.B * c.H * c.nq * d), k = fill(c.B * c.H * c.nk * d), v = fill(c.B * c.H * c.nk * d);
  auto g = fill(c.B * c.H * c.nq * d);
  const double scale = 1.0 / std::sqrt(double(d));
  auto cast = [](const std::vector<double>& x) {
    std::vector<T> y(x.size());
    std::transform(x.begin(), x.end(), y.begin(), from_double<T>);
    return y;
  };
  auto back = [](const std::vector<T>& x) {
    std::vector<double> y(x.size());
    std::transform(x.begin(), x.end(), y.begin(), as_double<T>);
    return y;
  };
  std::vector<T> qt = cast(q), kt = cast(k), vt = cast(v), gt = cast(g);
  // The reference sees exactly the values the kernel sees.
  std::vector<double> qd = back(qt), kd = back(kt), vd = back(vt), gd = back(gt);
  Ref ref = reference(c, qd, kd, vd, gd, scale);

  // Layout CSR.
  std::vector<int64_t> lptr, lidx;
  KA::Problem p;
  p.dtype = std::is_same_v<T, double> ? K::DType::F64 : (std::is_same_v<T, K::bf16_t> ? K::DType::BF16 : K::DType::F32);
  p.B = c.B, p.H = c.H, p.nq = c.nq, p.nk = c.nk, p.d = d;
  p.pattern.window = c.window;
  p.pattern.num_global = c.num_global;
  p.pattern.causal = c.causal;
  p.pattern.q_offset = c.q_offset;
  if (c.block_size > 0) {
    std::set<std::pair<int64_t, int64_t>> pairs(c.layout.begin(), c.layout.end());
    const int64_t nqb = (c.q_offset + c.nq + c.block_size - 1) / c.block_size;
    lptr.assign(nqb + 1, 0);
    for (auto& [qb, kb] : pairs) ++lptr[qb + 1];
    for (int64_t b = 0; b < nqb; ++b) lptr[b + 1] += lptr[b];
    for (auto& [qb, kb] : pairs) lidx.push_back(kb);  // set order = sorted by (qb, kb)
    p.pattern.block_size = c.block_size;
    p.pattern.layout_ptr = lptr.data();
    p.pattern.layout_idx = lidx.data();
    p.pattern.num_qblocks = nqb;
  }
  p.scale = scale;
  const Spread<T> qs(qt, sd), ks(kt, sd), vs(vt, sd), gs(gt, sd);
  auto input = [&](const Spread<T>& x, int64_t n) {
    return KA::Strided{x.data.data(), c.H * n * c.d * sd, n * c.d * sd, c.d * sd, sd};
  };
  p.q = input(qs, c.nq);
  p.k = input(ks, c.nk);
  p.v = input(vs, c.nk);
  p.num_threads = threads;
  using L = std::conditional_t<std::is_same_v<T, double>, double, float>;  // lse's type
  // NaN before the calls: every output, lse and gradient entry must be written (rows and keys
  // that see nothing included).
  const T poison = from_double<T>(NAN);
  std::vector<T> out(qt.size(), poison), dq(qt.size(), poison), dk(kt.size(), poison), dv(vt.size(), poison);
  std::vector<L> lse(c.B * c.H * c.nq, L(NAN));
  if (isa == kAmxModel) KA::forward_amx_model(p, out.data(), lse.data());
  else if (isa < 0) KA::forward(p, out.data(), lse.data());
  else KA::forward_isa(K::Isa(isa), p, out.data(), lse.data());
  auto expect = [&](const std::vector<T>& got, const std::vector<double>& want, const std::vector<double>& mag,
                    const char* what) {
    for (size_t i = 0; i < got.size(); ++i)
      ASSERT_NEAR(as_double(got[i]), want[i], tol + rel * mag[i]) << what << " " << i;
  };
  expect(out, ref.out, ref.out_mag, "out");
  for (size_t i = 0; i < lse.size(); ++i) {
    if (std::isinf(ref.lse[i])) {
      ASSERT_TRUE(std::isinf(double(lse[i])) && lse[i] < 0) << "lse " << i;
    } else {
      ASSERT_NEAR(double(lse[i]), ref.lse[i], tol + rel * std::fabs(ref.lse[i])) << "lse " << i;
    }
  }
  if (std::is_same_v<T, K::bf16_t>) {  // the gradients of the output as stored (bf16), not the exact one
    const std::vector<double> stored = back(out);
    const Ref grads = reference(c, qd, kd, vd, gd, scale, &stored);
    ref.dq = grads.dq, ref.dk = grads.dk, ref.dv = grads.dv;
    ref.dq_mag = grads.dq_mag, ref.dk_mag = grads.dk_mag, ref.dv_mag = grads.dv_mag;
  }
  if (isa == kAmxModel) {
    KA::backward_amx_model(p, input(gs, c.nq), strided(out, c, c.nq), lse.data(), dq.data(), dk.data(),
                           dv.data());
  } else if (isa < 0) {
    KA::backward(p, input(gs, c.nq), strided(out, c, c.nq), lse.data(), dq.data(), dk.data(), dv.data());
  } else {
    KA::backward_isa(K::Isa(isa), p, input(gs, c.nq), strided(out, c, c.nq), lse.data(), dq.data(), dk.data(),
                     dv.data());
  }
  expect(dq, ref.dq, ref.dq_mag, "dq");
  expect(dk, ref.dk, ref.dk_mag, "dk");
  expect(dv, ref.dv, ref.dv_mag, "dv");
}

}  // namespace

TEST(SlidingWindowAttention, CausalWindowsAroundTheTileSize) {
  for (int64_t w : {1, 63, 64, 65, 150, 200}) {
    Case c;
    c.nq = c.nk = 200;
    c.window = w;
    check_case<float>(c, 2, 2e-5);
    check_case<double>(c, 1, 1e-12);
  }
}

// Windows whose edge falls just inside or just outside a key tile, no global tokens: causal 127,
// 135, 191, 199 (a query tile's oldest key one position in or out of a tile); non-causal 2, 63,
// 66, 130 (the newest visible key the first or last of a tile, or the tile's farthest key one
// past the window).
TEST(SlidingWindowAttention, WindowEdgesAtKeyTileBoundaries) {
  for (bool causal : {true, false}) {
    const std::vector<int64_t> windows = causal ? std::vector<int64_t>{127, 135, 191, 199}
                                                : std::vector<int64_t>{2, 63, 66, 130};
    for (int64_t w : windows) {
      SCOPED_TRACE(testing::Message() << (causal ? "causal" : "non-causal") << " window " << w);
      Case c;
      c.nq = c.nk = 200;
      c.d = 16;
      c.window = w;
      c.causal = causal;
      check_case<float>(c, 2, 2e-5);
      check_case<double>(c, 1, 1e-12);
    }
  }
}

TEST(SlidingWindowAttention, GlobalTokensCausalAndNot) {
  for (bool causal : {true, false}) {
    for (int64_t g : {1, 4, 70}) {
      Case c;
      c.nq = c.nk = 150;
      c.window = 16;
      c.num_global = g;
      c.causal = causal;
      c.d = 24;  // not a multiple of 8
      check_case<float>(c, 3, 2e-5);
      check_case<double>(c, 2, 1e-12);
    }
  }
}

TEST(SlidingWindowAttention, DecodeStepsWithAnOffset) {
  Case c;
  c.nk = 300;
  c.nq = 1;
  c.q_offset = 299;
  c.window = 40;
  c.num_global = 4;
  check_case<float>(c, 2, 2e-5);
  c.nq = 5;
  c.q_offset = 295;
  check_case<double>(c, 1, 1e-12);
}

TEST(SlidingWindowAttention, RowsWithoutKeysGiveZerosNotNaN) {
  // Queries beyond the keys (positions 100..) with a causal window of 3 see nothing past key 99.
  Case c;
  c.nk = 100;
  c.nq = 20;
  c.q_offset = 95;
  c.window = 3;
  check_case<float>(c, 2, 2e-5);
  check_case<double>(c, 1, 1e-12);
}

TEST(SlidingWindowAttention, BlockSparseLayout) {
  for (bool causal : {true, false}) {
    for (int64_t bs : {16, 100}) {
      Case c;
      c.nq = c.nk = 230;
      c.causal = causal;
      c.block_size = bs;
      const int64_t nb = (230 + bs - 1) / bs;
      for (int64_t qb = 0; qb < nb; ++qb) {
        c.layout.push_back({qb, qb});
        c.layout.push_back({qb, 0});
        if (qb >= 2) c.layout.push_back({qb, qb - 2});
        if (!causal && qb + 1 < nb) c.layout.push_back({qb, qb + 1});
      }
      check_case<float>(c, 2, 2e-5);
      check_case<double>(c, 3, 1e-12);
    }
  }
}

TEST(SlidingWindowAttention, ThreadCountDoesNotChangeResults) {
  Case c;
  c.B = 1, c.H = 1, c.nq = c.nk = 400, c.window = 50, c.num_global = 2;
  check_case<float>(c, 1, 2e-5);
  check_case<float>(c, 4, 2e-5);
}

TEST(SlidingWindowAttention, PlanCostIsLinearInLength) {
  KA::Problem p;
  p.B = 1, p.H = 1, p.d = 64;
  p.pattern.window = 256;
  p.pattern.num_global = 4;
  int64_t prev = 0;
  for (int64_t n : {4096, 8192, 16384}) {
    p.nq = p.nk = n;
    const auto s = KA::plan_summary(p);
    // Each query scores at most window + tile + global-tile entries.
    EXPECT_LE(s.scored_entries, n * (256 + KA::kKeyTile + 4));
    EXPECT_GE(s.scored_entries, n * 256 - 256 * 256);
    if (prev) EXPECT_NEAR(double(s.scored_entries) / double(prev), 2.0, 0.05);
    prev = s.scored_entries;
  }
}

TEST(SlidingWindowAttention, RowIntervalsAgreeWithTheRule) {
  // keys_seen_by / queries_seeing (what the mask loops apply) against visible(), exhaustively.
  for (bool causal : {true, false}) {
    for (int64_t w : {1, 3, 7}) {
      for (int64_t g : {0, 2, 5}) {
        for (int64_t bs : {0, 4}) {
          KA::Pattern pt;
          pt.window = w, pt.num_global = g, pt.causal = causal, pt.block_size = bs;
          for (int64_t p = 0; p < 30; ++p) {
            for (int64_t j = 0; j < 30; ++j) {
              const bool want = KA::visible(pt, p, j);
              std::vector<float> row(1, 1.0f), col(1, 1.0f);
              KA::mask_outside(row.data(), 1, j, KA::keys_seen_by(pt, p), 0.0f);
              KA::mask_outside(col.data(), 1, p, KA::queries_seeing(pt, j), 0.0f);
              ASSERT_EQ(row[0] == 1.0f, want) << "keys_seen_by p=" << p << " j=" << j << " w=" << w << " g=" << g;
              ASSERT_EQ(col[0] == 1.0f, want) << "queries_seeing p=" << p << " j=" << j << " w=" << w << " g=" << g;
            }
          }
        }
      }
    }
  }
}

namespace edgegen::kernels {
void PrintTo(Isa isa, std::ostream* os);
}  // namespace edgegen::kernels

// Every attention path of the build on this CPU (the others skipped by name): head sizes that are
// not multiples of 8 or 16 lanes, windows around the tile size, global tokens, a block layout.
class AttentionPath : public ::testing::TestWithParam<K::Isa> {
 protected:
  void SetUp() override {
    if (!K::cpu_supports(GetParam())) GTEST_SKIP() << "this CPU lacks " << K::isa_name(GetParam());
    if (!KA::attention_has_path(GetParam()))
      GTEST_SKIP() << "no attention path of its own at " << K::isa_name(GetParam());
  }
};

INSTANTIATE_TEST_SUITE_P(Isa, AttentionPath,
                         ::testing::Values(K::Isa::Scalar, K::Isa::Avx2, K::Isa::Avx2Vnni, K::Isa::Avx512, K::Isa::Avx512Vnni,
                                           K::Isa::Amx),
                         [](const ::testing::TestParamInfo<K::Isa>& i) { return std::string(K::isa_name(i.param)); });

// The path tests' cases for each head size: windows of 1, 65 (non-causal) and 150 with 3 global
// tokens, and a block layout.
template <class Check>
void for_each_path_case(std::initializer_list<int64_t> head_sizes, Check check) {
  for (int64_t d : head_sizes) {
    for (int64_t w : {1, 65, 150}) {
      Case c;
      c.nq = c.nk = 150;
      c.d = d;
      c.window = w;
      c.num_global = 3;
      c.causal = w != 65;
      check(c);
    }
    Case b;
    b.nq = b.nk = 150;
    b.d = d;
    b.block_size = 64;
    b.layout = {{0, 0}, {1, 0}, {1, 1}, {2, 2}, {2, 0}};
    check(b);
  }
}

TEST_P(AttentionPath, OddHeadSizesWindowsGlobalsAndBlocks) {
  for_each_path_case({8, 24, 40, 80}, [&](const Case& c) { check_case<float>(c, 2, 2e-5, int(GetParam())); });
}

// bf16 inputs on every path: within bf16 rounding of the double reference (the outputs and
// gradients are bf16; on the AVX-512 BF16 products the probabilities and score gradients round to
// bf16 too: two roundings of 2^-9 relative, bounded by 2^-8 of each value's sum of term
// magnitudes; checked at 1e-2). Head sizes odd for pairs of k and for the vectors.
// bf16 beyond the path cases: one head on 4 threads (key-tile segments, the query tiles packed
// ahead), and queries at the end of the keys (q_offset): a decode step (one query: float
// products by the row rule, on the dispatched paths) and a chunk of 20.
void check_bf16_segments_and_decode(int isa) {
  Case s;
  s.H = 1, s.nq = s.nk = 300, s.d = 40, s.window = 70, s.num_global = 2;
  check_case<K::bf16_t>(s, 4, 1e-4, isa, 1e-2);
  for (int64_t nq : {1, 20}) {
    Case dec;
    dec.nk = 300, dec.nq = nq, dec.q_offset = 300 - nq, dec.window = 40, dec.num_global = 4, dec.d = 64;
    check_case<K::bf16_t>(dec, 2, 1e-4, isa, 1e-2);
  }
}

TEST_P(AttentionPath, Bf16InputsWithinBf16Rounding) {
  SCOPED_TRACE(KA::bf16_products_name(KA::bf16_products(GetParam())));
  for_each_path_case({8, 23, 64, 80},
                     [&](const Case& c) { check_case<K::bf16_t>(c, 2, 1e-4, int(GetParam()), 1e-2); });
  check_bf16_segments_and_decode(int(GetParam()));
}

// Which products a level's path uses for bf16 inputs: vdpbf16ps wherever the CPU has AVX-512 BF16
// (and the build the path), from the avx512 level up; float products below.
TEST(SlidingWindowAttention, Bf16ProductsFollowTheCpu) {
  EXPECT_EQ(KA::bf16_products(K::Isa::Avx2), KA::Bf16Products::Float);
  EXPECT_EQ(KA::bf16_products(K::Isa::Scalar), KA::Bf16Products::Float);
#ifdef EDGEGEN_HAVE_AVX512_BF16
  const bool dot = K::cpu_has_avx512_bf16() && K::cpu_supports(K::Isa::Avx512);
#else
  const bool dot = false;
#endif
  EXPECT_EQ(KA::bf16_products(K::Isa::Avx512), dot ? KA::Bf16Products::Dot : KA::Bf16Products::Float);
  // A call's products: bf16 inputs with enough query rows only (decode steps keep float products).
  KA::Problem p;
  p.dtype = K::DType::BF16, p.nq = KA::kBf16ProductsMinRows;
  EXPECT_EQ(KA::bf16_products_for(p, K::Isa::Avx512), KA::bf16_products(K::Isa::Avx512));
  p.nq = KA::kBf16ProductsMinRows - 1;
  EXPECT_EQ(KA::bf16_products_for(p, K::Isa::Avx512), KA::Bf16Products::Float);
  p.dtype = K::DType::F32, p.nq = 64;
  EXPECT_EQ(KA::bf16_products_for(p, K::Isa::Avx512), KA::Bf16Products::Float);
  if (!dot) GTEST_SKIP() << "no AVX-512 BF16 products here (CPU or build): only the float products were checked";
}

// The AMX-BF16 products on the software tile model, on any CPU: the same cases and bounds as the
// other bf16 paths (head sizes below, at and past one 32-k tile step; 150 rows: 32-row blocks with
// a 16-row half and a partial one).
TEST(SlidingWindowAttention, Bf16OnTheAmxTileModel) {
  for_each_path_case({8, 23, 64, 80}, [](const Case& c) { check_case<K::bf16_t>(c, 2, 1e-4, kAmxModel, 1e-2); });
  check_bf16_segments_and_decode(kAmxModel);
}

// bf16 inputs whose head_dim is not contiguous: the word operands come from float copies instead
// of straight from the inputs, on the tile model (every CPU) and on the dispatched path (AVX-512
// BF16 products where the CPU has them); odd and even head sizes, one head on 4 threads too.
TEST(SlidingWindowAttention, Bf16WordsThroughFloatCopies) {
  for (int isa : {kAmxModel, kDispatched})
    for (int64_t d : {23, 64}) {
      Case c;
      c.nq = c.nk = 150, c.d = d, c.window = 40, c.num_global = 3;
      SCOPED_TRACE(std::to_string(isa) + " d " + std::to_string(d));
      check_case<K::bf16_t>(c, 2, 1e-4, isa, 1e-2, 2);
      c.H = 1;
      check_case<K::bf16_t>(c, 4, 1e-4, isa, 1e-2, 3);
    }
}
