// GoogleTest of the torch-free pruning kernels against sort-based references.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <cstring>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "isa_capped.h"
#include "kernels/prune/prune.h"

namespace K = edgegen::kernels;
namespace KP = edgegen::kernels::prune;

namespace {

// Reference: stable ascending sort of all scores, the first num_prune are pruned.
std::vector<uint8_t> reference_mask(const std::vector<float>& scores, int64_t num_prune) {
  std::vector<int64_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return scores[a] < scores[b]; });
  std::vector<uint8_t> keep(scores.size(), 1);
  for (int64_t i = 0; i < num_prune; ++i) keep[order[i]] = 0;
  return keep;
}

std::vector<float> random_weights(size_t n, unsigned seed, int distinct = 0) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> w(n);
  for (auto& x : w) x = distinct ? float(int(rng() % distinct) - distinct / 2) : normal(rng);
  return w;
}

struct Split {
  std::vector<std::vector<float>> parts;
  std::vector<KP::ScoreSource> src;
};

// Splits w into pieces of the given sizes, each a separate source.
Split split(const std::vector<float>& w, const std::vector<size_t>& sizes) {
  Split s;
  size_t off = 0;
  for (size_t n : sizes) {
    s.parts.emplace_back(w.begin() + off, w.begin() + off + n);
    off += n;
  }
  for (auto& p : s.parts) s.src.push_back({p.data(), nullptr, int64_t(p.size()), K::DType::F32});
  return s;
}

std::vector<uint8_t> run_mask(Split& s, int64_t num_prune, int threads, bool zero) {
  std::vector<std::vector<uint8_t>> masks;
  std::vector<uint8_t*> mp;
  std::vector<void*> zp;
  for (auto& p : s.parts) {
    masks.emplace_back(p.size(), 7);
    mp.push_back(masks.back().data());
    zp.push_back(p.data());
  }
  EXPECT_EQ(KP::magnitude_mask(s.src.data(), int(s.src.size()), num_prune, mp.data(), zero ? zp.data() : nullptr,
                               threads), 0);
  std::vector<uint8_t> flat;
  for (auto& m : masks) flat.insert(flat.end(), m.begin(), m.end());
  return flat;
}

std::vector<float> abs_all(const std::vector<float>& w) {
  std::vector<float> a(w.size());
  for (size_t i = 0; i < w.size(); ++i) a[i] = std::fabs(w[i]);
  return a;
}

}  // namespace

namespace edgegen::kernels {
void PrintTo(Isa isa, std::ostream* os);  // test_quant.cpp
}  // namespace edgegen::kernels

// Every path of the float32 sweeps (baseline, AVX-512), each run on this CPU when it can (skipped
// by name when not), under the ISA cap set for the test and restored after it.
class PrunePath : public K::testing::IsaCappedTest {
  K::Isa family_isa() const override { return KP::prune_isa(); }
  const char* family_name() const override { return "pruning"; }
};

INSTANTIATE_TEST_SUITE_P(Isa, PrunePath, ::testing::Values(K::Isa::Scalar, K::Isa::Avx2, K::Isa::Avx512),
                         K::testing::isa_param_name);

TEST_P(PrunePath, MatchesStableSortAcrossSourcesThreadsAndTies) {
  // Sizes straddle the 65536-element chunk; 'distinct' makes heavy ties (incl. many zeros).
  for (int distinct : {0, 5, 1000}) {
    const std::vector<size_t> sizes{3, 70000, 1, 0, 65536, 12345};
    const size_t total = std::accumulate(sizes.begin(), sizes.end(), size_t(0));
    const std::vector<float> w = random_weights(total, 11 + distinct, distinct);
    const std::vector<float> scores = abs_all(w);
    for (int64_t k : {int64_t(0), int64_t(1), int64_t(2), int64_t(total / 3), int64_t(total / 2),
                      int64_t(total - 1), int64_t(total)}) {
      const std::vector<uint8_t> want = reference_mask(scores, k);
      for (int threads : {1, 2, 3}) {
        Split s = split(w, sizes);
        ASSERT_EQ(run_mask(s, k, threads, false), want) << "distinct=" << distinct << " k=" << k;
      }
      // The fused variant zeros exactly the pruned weights and keeps the others bit for bit.
      Split s = split(w, sizes);
      ASSERT_EQ(run_mask(s, k, 2, true), want);
      size_t off = 0;
      for (auto& p : s.parts) {
        for (size_t i = 0; i < p.size(); ++i) {
          const float expect = want[off + i] ? w[off + i] : 0.0f;
          ASSERT_EQ(std::memcmp(&p[i], &expect, 4), 0) << "entry " << off + i;
        }
        off += p.size();
      }
    }
  }
}

TEST(MagnitudeMask, KthSmallestEqualsSortedScore) {
  const std::vector<float> w = random_weights(200003, 5);
  std::vector<float> sorted = abs_all(w);
  std::sort(sorted.begin(), sorted.end());
  Split s = split(w, {100000, 100003});
  for (int64_t k : {int64_t(1), int64_t(77), int64_t(100000), int64_t(200003)}) {
    const KP::Selection sel = KP::kth_smallest_score(s.src.data(), 2, k, 2);
    EXPECT_EQ(sel.num_nan, 0);
    EXPECT_EQ(sel.threshold, sorted[k - 1]);
    EXPECT_EQ(sel.num_less, std::lower_bound(sorted.begin(), sorted.end(), sorted[k - 1]) - sorted.begin());
  }
}

TEST(MagnitudeMask, InfinitiesSelectAndNaNIsReported) {
  std::vector<float> w{1.0f, -INFINITY, 0.5f, INFINITY, -2.0f};
  Split s = split(w, {5});
  EXPECT_EQ(run_mask(s, 4, 1, false), (std::vector<uint8_t>{0, 0, 0, 1, 0}));
  EXPECT_EQ(KP::kth_smallest_score(s.src.data(), 1, 5, 1).threshold, INFINITY);
  w[2] = NAN;
  Split t = split(w, {5});
  uint8_t m[5];
  uint8_t* mp = m;
  EXPECT_EQ(KP::magnitude_mask(t.src.data(), 1, 2, &mp, nullptr, 1), 1);
  EXPECT_EQ(KP::kth_smallest_score(t.src.data(), 1, 1, 1).num_nan, 1);
}

TEST(MagnitudeMask, TaylorScoresAndHalfDtypes) {
  const size_t n = 5000;
  const std::vector<float> w = random_weights(n, 1), g = random_weights(n, 2);
  std::vector<float> scores(n);
  for (size_t i = 0; i < n; ++i) scores[i] = std::fabs(w[i] * g[i]);
  std::vector<uint8_t> mask(n);
  uint8_t* mp = mask.data();
  KP::ScoreSource src{w.data(), g.data(), int64_t(n), K::DType::F32};
  ASSERT_EQ(KP::magnitude_mask(&src, 1, 1234, &mp, nullptr, 2), 0);
  EXPECT_EQ(mask, reference_mask(scores, 1234));

  std::vector<K::bf16_t> wb(n);
  std::vector<K::fp16_t> wh(n);
  std::vector<float> sb(n), sh(n);
  for (size_t i = 0; i < n; ++i) {
    wb[i] = K::to_bf16(w[i]);
    wh[i] = K::to_fp16(w[i]);
    sb[i] = std::fabs(K::to_float(wb[i]));
    sh[i] = std::fabs(K::to_float(wh[i]));
  }
  KP::ScoreSource b{wb.data(), nullptr, int64_t(n), K::DType::BF16}, h{wh.data(), nullptr, int64_t(n), K::DType::F16};
  ASSERT_EQ(KP::magnitude_mask(&b, 1, 2500, &mp, nullptr, 2), 0);
  EXPECT_EQ(mask, reference_mask(sb, 2500));
  std::vector<void*> zp{wh.data()};
  ASSERT_EQ(KP::magnitude_mask(&h, 1, 2500, &mp, zp.data(), 2), 0);
  EXPECT_EQ(mask, reference_mask(sh, 2500));
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(wh[i].bits == 0, mask[i] == 0 || sh[i] == 0.0f);
}

TEST(NMMask, KeepsNLargestPerGroupWithLowIndexTies) {
  // Hand-worked: |.| = 3 1 2 2 -> 2:4 keeps 3 and the first 2.
  std::vector<float> w{-3, 1, 2, -2, 0, 0, 0, 0};
  std::vector<uint8_t> m(8);
  ASSERT_EQ(KP::nm_mask(w.data(), K::DType::F32, 1, 8, 2, 4, m.data(), 1), 0);
  EXPECT_EQ(m, (std::vector<uint8_t>{1, 0, 1, 0, 1, 1, 0, 0}));
  // Random rows: every group has exactly n survivors, each at least as large as every pruned one.
  for (auto [n, mm] : {std::pair{2, 4}, std::pair{4, 8}, std::pair{1, 1}, std::pair{0, 3}}) {
    const int64_t rows = 37, k = 24 * mm;
    const std::vector<float> x = random_weights(size_t(rows * k), 3 + mm, mm == 8 ? 7 : 0);
    std::vector<uint8_t> mask(x.size());
    ASSERT_EQ(KP::nm_mask(x.data(), K::DType::F32, rows, k, n, mm, mask.data(), 2), 0);
    for (int64_t g = 0; g < rows * k; g += mm) {
      int kept = 0;
      float min_kept = INFINITY, max_pruned = -1;
      for (int j = 0; j < mm; ++j) {
        kept += mask[g + j];
        (mask[g + j] ? min_kept : max_pruned) =
            mask[g + j] ? std::min(min_kept, std::fabs(x[g + j])) : std::max(max_pruned, std::fabs(x[g + j]));
      }
      ASSERT_EQ(kept, n);
      ASSERT_GE(min_kept, max_pruned);
    }
  }
}

TEST(ChannelNorms, MatchDoubleLoops) {
  const int64_t outer = 3, channels = 5, inner = 7;
  const std::vector<float> w = random_weights(size_t(outer * channels * inner), 9), g = random_weights(w.size(), 10);
  for (int p : {1, 2}) {
    for (bool taylor : {false, true}) {
      std::vector<float> out(channels);
      KP::channel_norms(w.data(), taylor ? g.data() : nullptr, K::DType::F32, outer, channels, inner, p, out.data(), 2);
      for (int64_t c = 0; c < channels; ++c) {
        double acc = 0;
        for (int64_t o = 0; o < outer; ++o)
          for (int64_t i = 0; i < inner; ++i) {
            const size_t j = size_t((o * channels + c) * inner + i);
            const double v = double(w[j]) * (taylor ? double(g[j]) : 1.0);
            acc += p == 1 ? std::fabs(v) : v * v;
          }
        EXPECT_FLOAT_EQ(out[c], float(p == 1 ? acc : std::sqrt(acc)));
      }
    }
  }
}

// Inputs of >= 16 * 2^18 scores take the sampled-bracket path; these check it against the sort
// reference, including the cases where it must hand over to the radix path (a sample that
// misrepresents the data, massive ties).
TEST_P(PrunePath, SampledBracketPathAndItsFallbacks) {
  const size_t n = 5000000;
  std::vector<std::vector<float>> cases;
  cases.push_back(random_weights(n, 21));           // typical
  cases.push_back(random_weights(n, 22, 7));        // few distinct values: gathers too much
  std::vector<float> adversarial(n);
  const size_t step = n / (size_t(1) << 18);
  for (size_t i = 0; i < n; ++i) adversarial[i] = i % step == 0 ? 1.0f : 2.0f + float(i) * 1e-6f;
  cases.push_back(adversarial);                     // every sampled entry is the smallest value
  for (const auto& w : cases) {
    const std::vector<float> scores = abs_all(w);
    std::vector<float> sorted = scores;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t k : {int64_t(1), int64_t(1000), int64_t(n / 2), int64_t(n - 3)}) {
      Split s = split(w, {1234567, n - 1234567});
      ASSERT_EQ(run_mask(s, k, 2, false), reference_mask(scores, k)) << "k=" << k;
      const KP::Selection sel = KP::kth_smallest_score(s.src.data(), 2, k, 2);
      ASSERT_EQ(sel.threshold, sorted[size_t(k - 1)]);
      ASSERT_EQ(sel.num_less, std::lower_bound(sorted.begin(), sorted.end(), sorted[size_t(k - 1)]) - sorted.begin());
    }
  }
  // The fused zeroing on this path, and NaN detection in the gathering sweep.
  std::vector<float> w = cases[0];
  Split s = split(w, {n});
  const std::vector<uint8_t> want = reference_mask(abs_all(w), int64_t(n / 3));
  ASSERT_EQ(run_mask(s, int64_t(n / 3), 2, true), want);
  for (size_t i = 0; i < n; ++i) {  // bit for bit: pruned entries +0 (not -0), kept ones unchanged
    const float expect = want[i] ? w[i] : 0.0f;
    ASSERT_EQ(std::memcmp(&s.parts[0][i], &expect, 4), 0) << "entry " << i;
  }
  w[n / 2] = NAN;
  Split t = split(w, {n});
  EXPECT_EQ(KP::kth_smallest_score(t.src.data(), 1, int64_t(n / 2), 2).num_nan, 1);
}
