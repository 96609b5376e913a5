// Exact k-th-smallest selection over the scores of many tensors, by two radix passes over the
// float bits (a non-negative float orders like its bit pattern): a histogram of the top 15 bits,
// then of the low 16 bits inside the bin that holds the k-th score. Nothing is concatenated or
// sorted; per-thread histograms are merged, so the result does not depend on the schedule.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "kernels/cpu_features.h"
#include "kernels/parallel.h"
#include "kernels/prune/prune.h"

namespace edgegen::kernels::prune {

#if defined(EDGEGEN_HAVE_AVX2)
// magnitude_avx512.cpp
void gather_f32_avx512(const float* w, int64_t b, int64_t e, uint32_t lo, uint32_t hi, uint32_t* out, int64_t* n,
                       int64_t* lt, int64_t* nan);
int64_t mask_f32_avx512(const float* w, int64_t b, int64_t e, uint32_t thr, uint8_t* m, float* zw);
#endif

namespace {

constexpr int64_t kChunk = int64_t(1) << 16;
constexpr uint32_t kAbsMask = 0x7fffffffu;
constexpr uint32_t kInfBits = 0x7f800000u;
constexpr int kHiBins = 1 << 15;  // bits >> 16 of a non-negative float
constexpr int kLoBins = 1 << 16;  // bits & 0xffff

struct Chunk {
  int src;
  int64_t begin, end;
};

std::vector<Chunk> plan_chunks(const ScoreSource* src, int num_src) {
  std::vector<Chunk> chunks;
  for (int s = 0; s < num_src; ++s)
    for (int64_t b = 0; b < src[s].n; b += kChunk) chunks.push_back({s, b, std::min(src[s].n, b + kChunk)});
  return chunks;
}

// Runs f(score_bits, index) over [b, e) of one source, with dtype and grad resolved outside the
// loop.
template <class F>
void for_each_score(const ScoreSource& s, int64_t b, int64_t e, const F& f) {
  dispatch_float<false>(s.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* w = static_cast<const T*>(s.weight);
    if (s.grad) {
      const T* g = static_cast<const T*>(s.grad);
      for (int64_t i = b; i < e; ++i) f(float_to_bits(to_float(w[i]) * to_float(g[i])) & kAbsMask, i);
    } else {
      for (int64_t i = b; i < e; ++i) f(float_to_bits(to_float(w[i])) & kAbsMask, i);
    }
  });
}

// Static contiguous split of the chunk list into one block per thread.
struct Blocks {
  int count;
  int64_t num_chunks;
  int64_t begin(int t) const { return num_chunks * t / count; }
  int64_t end(int t) const { return num_chunks * (t + 1) / count; }
};

Blocks split(int64_t num_chunks, int num_threads) {
  return {int(std::max<int64_t>(1, std::min<int64_t>(num_threads, num_chunks))), num_chunks};
}

// First bin at which the running count reaches k; `below` gets the count before it.
int find_bin(const std::vector<int64_t>& hist, int64_t k, int64_t* below) {
  int64_t c = 0;
  for (size_t b = 0; b < hist.size(); ++b) {
    if (c + hist[b] >= k) {
      *below = c;
      return int(b);
    }
    c += hist[b];
  }
  *below = c;
  return int(hist.size()) - 1;  // unreachable for k <= total
}

// Pass 1: histogram of the top bits, and the NaN count. Weights cluster in a few bins, so
// consecutive elements often hit the same counter; four interleaved sub-histograms keep those
// increments from serialising on one counter's store-to-load latency. (NaN bit patterns land in
// bins too; any NaN aborts the selection.)
constexpr int kSubHists = 4;

std::vector<int64_t> high_histogram(const ScoreSource* src, const std::vector<Chunk>& chunks,
                                    int num_threads, int64_t* num_nan) {
  const Blocks blocks = split(int64_t(chunks.size()), num_threads);
  const size_t per_block = size_t(kSubHists) * kHiBins;
  std::vector<int64_t> hist(size_t(blocks.count) * per_block, 0), nans(blocks.count, 0);
  parallel_for(blocks.count, blocks.count, [&](int64_t t) {
    int64_t* h = hist.data() + t * per_block;
    int64_t nan = 0;
    for (int64_t c = blocks.begin(int(t)); c < blocks.end(int(t)); ++c) {
      const Chunk& ch = chunks[c];
      for_each_score(src[ch.src], ch.begin, ch.end, [&](uint32_t bits, int64_t i) {
        ++h[(i & (kSubHists - 1)) * kHiBins + (bits >> 16)];
        nan += bits > kInfBits;
      });
    }
    nans[t] = nan;
  });
  std::vector<int64_t> merged(kHiBins, 0);
  *num_nan = 0;
  for (int t = 0; t < blocks.count; ++t) {
    for (int s = 0; s < kSubHists; ++s)
      for (int b = 0; b < kHiBins; ++b) merged[b] += hist[size_t(t) * per_block + size_t(s) * kHiBins + b];
    *num_nan += nans[t];
  }
  return merged;
}

// Pass 2: histogram of the low bits of the scores whose top bits are `hi`.
std::vector<int64_t> low_histogram(const ScoreSource* src, const std::vector<Chunk>& chunks,
                                   int num_threads, uint32_t hi) {
  const Blocks blocks = split(int64_t(chunks.size()), num_threads);
  std::vector<int64_t> hist(size_t(blocks.count) * kLoBins, 0);
  parallel_for(blocks.count, blocks.count, [&](int64_t t) {
    int64_t* h = hist.data() + t * kLoBins;
    for (int64_t c = blocks.begin(int(t)); c < blocks.end(int(t)); ++c) {
      const Chunk& ch = chunks[c];
      for_each_score(src[ch.src], ch.begin, ch.end, [&](uint32_t bits, int64_t) {
        if ((bits >> 16) == hi) ++h[bits & 0xffffu];
      });
    }
  });
  std::vector<int64_t> merged(kLoBins, 0);
  for (int t = 0; t < blocks.count; ++t)
    for (int b = 0; b < kLoBins; ++b) merged[b] += hist[size_t(t) * kLoBins + b];
  return merged;
}

struct BitSelection {
  uint32_t bits;
  int64_t num_less;
  int64_t num_nan;
};

// The two radix sweeps (the general path).
BitSelection select_by_radix(const ScoreSource* src, const std::vector<Chunk>& chunks, int num_threads,
                             int64_t k) {
  int64_t num_nan = 0, below_hi = 0, below_lo = 0;
  const std::vector<int64_t> high = high_histogram(src, chunks, num_threads, &num_nan);
  if (num_nan > 0) return {0, 0, num_nan};
  const uint32_t hi = uint32_t(find_bin(high, k, &below_hi));
  const std::vector<int64_t> low = low_histogram(src, chunks, num_threads, hi);
  const uint32_t lo = uint32_t(find_bin(low, k - below_hi, &below_lo));
  return {(hi << 16) | lo, below_hi + below_lo, 0};
}

uint32_t score_at(const ScoreSource& s, int64_t i) {
  uint32_t out = 0;
  for_each_score(s, i, i + 1, [&](uint32_t bits, int64_t) { out = bits; });
  return out;
}

// The fast path, exact whenever it answers: a deterministic strided sample brackets the k-th
// score in [lo, hi]; one sweep counts the scores below lo (and the NaNs) and gathers those inside;
// the k-th is then selected among the few gathered (about 1.6% of the scores for a 2^18 sample
// and an 8-sigma bracket). Returns false, and the caller takes the radix path, when the bracket
// misses or would gather too much (heavy ties, tiny inputs).
constexpr int64_t kSample = int64_t(1) << 18;

// The gathering sweep for plain float32 magnitudes, 4 lanes at a time with SSE2 (part of every
// x86-64 CPU): scores are non-negative int32 bit patterns, so signed compares order them.
void gather_f32_base(const float* w, int64_t b, int64_t e, uint32_t lo, uint32_t hi, uint32_t* out, int64_t* n,
                     int64_t* lt, int64_t* nan) {
  int64_t i = b, count = *n, below = 0, nans = 0;
#if defined(__SSE2__)
  const __m128i abs_mask = _mm_set1_epi32(0x7fffffff), lo_v = _mm_set1_epi32(int32_t(lo)),
                hi_v = _mm_set1_epi32(int32_t(std::min<uint32_t>(hi, 0x7fffffffu))),
                inf_v = _mm_set1_epi32(int32_t(kInfBits));
  __m128i below_acc = _mm_setzero_si128(), nan_acc = _mm_setzero_si128();
  for (; i + 4 <= e; i += 4) {  // lane counts stay below 2^14 per 64K-element chunk
    const __m128i x = _mm_and_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i)), abs_mask);
    const __m128i is_lt = _mm_cmplt_epi32(x, lo_v), is_gt = _mm_cmpgt_epi32(x, hi_v);
    below_acc = _mm_sub_epi32(below_acc, is_lt);
    nan_acc = _mm_sub_epi32(nan_acc, _mm_cmpgt_epi32(x, inf_v));
    const int outside = _mm_movemask_ps(_mm_castsi128_ps(_mm_or_si128(is_lt, is_gt)));
    if (outside != 0xf) {
      alignas(16) uint32_t v[4];
      _mm_store_si128(reinterpret_cast<__m128i*>(v), x);
      for (int j = 0; j < 4; ++j) {
        out[count] = v[j];
        count += !((outside >> j) & 1);
      }
    }
  }
  alignas(16) int32_t lanes[4];
  _mm_store_si128(reinterpret_cast<__m128i*>(lanes), below_acc);
  below += int64_t(lanes[0]) + lanes[1] + lanes[2] + lanes[3];
  _mm_store_si128(reinterpret_cast<__m128i*>(lanes), nan_acc);
  nans += int64_t(lanes[0]) + lanes[1] + lanes[2] + lanes[3];
#endif
  for (; i < e; ++i) {
    const uint32_t bits = float_to_bits(w[i]) & kAbsMask;
    below += bits < lo;
    nans += bits > kInfBits;
    out[count] = bits;
    count += uint32_t(bits - lo) <= hi - lo;
  }
  *n = count;
  *lt += below;
  *nan += nans;
}

// The mask sweep for plain float32 magnitudes, 16 entries at a time with SSE2: mask = score >=
// thr, ties counted, pruned weights (zw, aliasing w, may be null) zeroed. Returns the ties.
int64_t mask_f32_base(const float* w, int64_t b, int64_t e, uint32_t thr, uint8_t* m, float* zw) {
  int64_t i = b, ties = 0;
#if defined(__SSE2__)
  const __m128i abs_mask = _mm_set1_epi32(0x7fffffff), thr_v = _mm_set1_epi32(int32_t(thr)),
                one = _mm_set1_epi8(1);
  __m128i tie_acc = _mm_setzero_si128();
  for (; i + 16 <= e; i += 16) {
    __m128i keep[4];
    for (int j = 0; j < 4; ++j) {
      const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i + 4 * j));
      const __m128i x = _mm_and_si128(raw, abs_mask);
      keep[j] = _mm_cmpgt_epi32(thr_v, x);  // -1 where pruned (x < thr)
      tie_acc = _mm_sub_epi32(tie_acc, _mm_cmpeq_epi32(x, thr_v));
      if (zw) _mm_storeu_si128(reinterpret_cast<__m128i*>(zw + i + 4 * j), _mm_andnot_si128(keep[j], raw));
    }
    const __m128i pruned = _mm_packs_epi16(_mm_packs_epi32(keep[0], keep[1]), _mm_packs_epi32(keep[2], keep[3]));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(m + i), _mm_andnot_si128(pruned, one));
  }
  alignas(16) int32_t lanes[4];
  _mm_store_si128(reinterpret_cast<__m128i*>(lanes), tie_acc);
  ties += int64_t(lanes[0]) + lanes[1] + lanes[2] + lanes[3];
#endif
  for (; i < e; ++i) {
    const uint32_t bits = float_to_bits(w[i]) & kAbsMask;
    m[i] = uint8_t(bits >= thr);
    ties += bits == thr;
    if (zw && bits < thr) zw[i] = 0.0f;
  }
  return ties;
}

// The family's paths for the float32 sweeps (the other dtypes and Taylor scores go through the
// generic loops): the baseline (SSE2, part of every x86-64 CPU; plain C++ elsewhere) or AVX-512.
struct SweepPath {
  void (*gather)(const float* w, int64_t b, int64_t e, uint32_t lo, uint32_t hi, uint32_t* out, int64_t* n,
                 int64_t* lt, int64_t* nan);
  int64_t (*mask)(const float* w, int64_t b, int64_t e, uint32_t thr, uint8_t* m, float* zw);
};

SweepPath sweep_path() {
#if defined(EDGEGEN_HAVE_AVX2)
  if (prune_isa() == Isa::Avx512) return {&gather_f32_avx512, &mask_f32_avx512};
#endif
  return {&gather_f32_base, &mask_f32_base};
}

bool select_by_sample(const ScoreSource* src, int num_src, const std::vector<Chunk>& chunks, int64_t total,
                      int num_threads, int64_t k, BitSelection* out) {
  if (total < 16 * kSample) return false;
  std::vector<uint32_t> sample;
  sample.reserve(size_t(kSample));
  const int64_t step = total / kSample;
  int64_t base = 0;
  for (int s = 0; s < num_src; ++s) {
    int64_t first = (base + step - 1) / step * step;  // the first multiple of step in this source
    for (int64_t g = first; g < base + src[s].n && int64_t(sample.size()) < kSample; g += step)
      sample.push_back(score_at(src[s], g - base));
    base += src[s].n;
  }
  const int64_t m = int64_t(sample.size());
  const double pos = double(k) / double(total) * double(m);
  const double margin = 8.0 * std::sqrt(double(m) * 0.25) + 16.0;
  const int64_t lo_rank = int64_t(pos - margin), hi_rank = int64_t(pos + margin);
  uint32_t lo = 0, hi = 0xffffffffu;
  if (lo_rank > 0) {
    std::nth_element(sample.begin(), sample.begin() + lo_rank, sample.end());
    lo = sample[size_t(lo_rank)];
  }
  if (hi_rank < m - 1) {
    std::nth_element(sample.begin(), sample.begin() + hi_rank, sample.end());
    hi = sample[size_t(hi_rank)];
  }
  const uint32_t width = hi - lo;
  const Blocks blocks = split(int64_t(chunks.size()), num_threads);
  // Gathering is branch-free (store, then advance by 0 or 1) into buffers that only grow by a
  // chunk at a time; a buffer that would pass `cap` gives up on this path.
  const int64_t cap = total / 8 / blocks.count + kChunk;
  std::vector<std::vector<uint32_t>> gathered(size_t(blocks.count));
  std::vector<int64_t> below(size_t(blocks.count), 0), nans(size_t(blocks.count), 0), sizes(size_t(blocks.count), 0);
  std::vector<uint8_t> overflow(size_t(blocks.count), 0);
  const SweepPath sweeps = sweep_path();
  parallel_for(blocks.count, blocks.count, [&](int64_t t) {
    std::vector<uint32_t>& buf = gathered[size_t(t)];
    int64_t lt = 0, nan = 0, n = 0;
    for (int64_t c = blocks.begin(int(t)); c < blocks.end(int(t)); ++c) {
      const Chunk& ch = chunks[c];
      if (n + (ch.end - ch.begin) > cap) {
        overflow[size_t(t)] = 1;
        break;
      }
      // Room for the whole chunk and 16 more (the vector sweep's last store may pass its count).
      if (buf.size() < size_t(n + (ch.end - ch.begin) + 16))
        buf.resize(std::max(buf.size() * 2, size_t(n + kChunk + 16)));
      uint32_t* out = buf.data();
      if (src[ch.src].dtype == DType::F32 && !src[ch.src].grad) {
        sweeps.gather(static_cast<const float*>(src[ch.src].weight), ch.begin, ch.end, lo, lo + width, out, &n, &lt,
                      &nan);
        continue;
      }
      for_each_score(src[ch.src], ch.begin, ch.end, [&](uint32_t bits, int64_t) {
        lt += bits < lo;
        nan += bits > kInfBits;
        out[n] = bits;
        n += uint32_t(bits - lo) <= width;
      });
    }
    buf.resize(size_t(n));
    below[size_t(t)] = lt;
    nans[size_t(t)] = nan;
  });
  int64_t lt = 0, inside = 0, nan = 0;
  for (int t = 0; t < blocks.count; ++t) {
    if (overflow[size_t(t)]) return false;
    lt += below[size_t(t)];
    nan += nans[size_t(t)];
    inside += int64_t(gathered[size_t(t)].size());
  }
  if (nan > 0) {
    *out = {0, 0, nan};
    return true;
  }
  if (!(lt < k && k <= lt + inside)) return false;
  std::vector<uint32_t> cand;
  cand.reserve(size_t(inside));
  for (auto& g : gathered) cand.insert(cand.end(), g.begin(), g.end());
  const size_t idx = size_t(k - lt - 1);
  std::nth_element(cand.begin(), cand.begin() + idx, cand.end());
  const uint32_t thr = cand[idx];
  int64_t less = lt;
  for (uint32_t b : cand) less += b < thr;
  *out = {thr, less, 0};
  return true;
}

BitSelection select_bits(const ScoreSource* src, int num_src, const std::vector<Chunk>& chunks,
                         int num_threads, int64_t k) {
  int64_t total = 0;
  for (int s = 0; s < num_src; ++s) total += src[s].n;
  BitSelection out{};
  if (select_by_sample(src, num_src, chunks, total, num_threads, k, &out)) return out;
  return select_by_radix(src, chunks, num_threads, k);
}

// NaN count alone (for the trivial prune-nothing / prune-everything cases).
int64_t count_nan(const ScoreSource* src, const std::vector<Chunk>& chunks, int num_threads) {
  std::vector<int64_t> per(chunks.size(), 0);
  parallel_for(int64_t(chunks.size()), num_threads, [&](int64_t c) {
    const Chunk& ch = chunks[c];
    int64_t nan = 0;
    for_each_score(src[ch.src], ch.begin, ch.end, [&](uint32_t bits, int64_t) { nan += bits > kInfBits; });
    per[size_t(c)] = nan;
  });
  int64_t nan = 0;
  for (int64_t v : per) nan += v;
  return nan;
}

template <class T>
void zero_entry(void* p, int64_t i) {
  static_cast<T*>(p)[i] = T{};
}

void fill_masks(const ScoreSource* src, const std::vector<Chunk>& chunks, uint8_t* const* masks,
                void* const* zero_out, uint8_t value, int num_threads) {
  parallel_for(int64_t(chunks.size()), num_threads, [&](int64_t c) {
    const Chunk& ch = chunks[c];
    std::memset(masks[ch.src] + ch.begin, value, size_t(ch.end - ch.begin));
    if (value == 0 && zero_out && zero_out[ch.src]) {
      const size_t elem = src[ch.src].dtype == DType::F32 ? 4 : 2;
      std::memset(static_cast<char*>(zero_out[ch.src]) + ch.begin * elem, 0, size_t(ch.end - ch.begin) * elem);
    }
  });
}

}  // namespace

Isa prune_isa() {
  return pick_isa({Isa::Avx512, Isa::Scalar});
}

Selection kth_smallest_score(const ScoreSource* src, int num_src, int64_t k, int num_threads) {
  const std::vector<Chunk> chunks = plan_chunks(src, num_src);
  const BitSelection sel = select_bits(src, num_src, chunks, num_threads, k);
  return {bits_to_float(sel.bits), sel.num_less, sel.num_nan};
}

int64_t magnitude_mask(const ScoreSource* src, int num_src, int64_t num_prune, uint8_t* const* masks,
                       void* const* zero_out, int num_threads) {
  const std::vector<Chunk> chunks = plan_chunks(src, num_src);
  if (chunks.empty()) return 0;
  int64_t total = 0;
  for (int s = 0; s < num_src; ++s) total += src[s].n;
  if (num_prune <= 0 || num_prune >= total) {
    const int64_t nan = count_nan(src, chunks, num_threads);
    if (nan == 0) fill_masks(src, chunks, masks, zero_out, num_prune <= 0 ? 1 : 0, num_threads);
    return nan;
  }
  const BitSelection sel = select_bits(src, num_src, chunks, num_threads, num_prune);
  if (sel.num_nan > 0) return sel.num_nan;
  const uint32_t thr = sel.bits;

  // Pass 3: prune everything below the threshold, keep ties for now and count them per chunk.
  // Branch-free: half the entries are pruned in no predictable order, so a branch per entry
  // would mispredict about every other time; kept weights are rewritten unchanged instead.
  std::vector<int64_t> ties(chunks.size(), 0);
  const SweepPath sweeps = sweep_path();
  parallel_for(int64_t(chunks.size()), num_threads, [&](int64_t c) {
    const Chunk& ch = chunks[c];
    uint8_t* m = masks[ch.src];
    void* zw = zero_out ? zero_out[ch.src] : nullptr;
    int64_t eq = 0;
    if (src[ch.src].dtype == DType::F32 && !src[ch.src].grad) {
      ties[c] = sweeps.mask(static_cast<const float*>(src[ch.src].weight), ch.begin, ch.end, thr, m,
                            static_cast<float*>(zw));
      return;
    }
    dispatch_float<false>(src[ch.src].dtype, [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint16_t>;
      if (zw) {
        U* raw = static_cast<U*>(zw);
        for_each_score(src[ch.src], ch.begin, ch.end, [&](uint32_t bits, int64_t i) {
          const uint8_t keep = bits >= thr;
          m[i] = keep;
          eq += bits == thr;
          raw[i] &= U(U(0) - U(keep));
        });
      } else {
        for_each_score(src[ch.src], ch.begin, ch.end, [&](uint32_t bits, int64_t i) {
          m[i] = uint8_t(bits >= thr);
          eq += bits == thr;
        });
      }
    });
    ties[c] = eq;
  });

  // Ties: the first (num_prune - num_less) in concatenation order are pruned.
  std::vector<int64_t> quota(chunks.size(), 0);
  int64_t need = num_prune - sel.num_less;
  for (size_t c = 0; c < chunks.size() && need > 0; ++c) {
    quota[c] = std::min(need, ties[c]);
    need -= quota[c];
  }
  parallel_for(int64_t(chunks.size()), num_threads, [&](int64_t c) {
    int64_t left = quota[c];
    if (left == 0) return;
    const Chunk& ch = chunks[c];
    uint8_t* m = masks[ch.src];
    void* zw = zero_out ? zero_out[ch.src] : nullptr;
    dispatch_float<false>(src[ch.src].dtype, [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      for_each_score(src[ch.src], ch.begin, ch.end, [&](uint32_t bits, int64_t i) {
        if (left > 0 && bits == thr) {
          m[i] = 0;
          if (zw) zero_entry<T>(zw, i);
          --left;
        }
      });
    });
  });
  return 0;
}

void magnitude_scores(const ScoreSource& src, void* out, int num_threads) {
  const int64_t num_chunks = (src.n + kChunk - 1) / kChunk;
  dispatch_float<false>(src.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    T* o = static_cast<T*>(out);
    parallel_for(num_chunks, num_threads, [&](int64_t c) {
      const int64_t b = c * kChunk, e = std::min(src.n, b + kChunk);
      for_each_score(src, b, e, [&](uint32_t bits, int64_t i) { store_float(o + i, bits_to_float(bits)); });
    });
  });
}

}  // namespace edgegen::kernels::prune
