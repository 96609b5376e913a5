// Exact k-th-smallest selection over the scores of many tensors, by two radix passes over the
// float bits (a non-negative float orders like its bit pattern): a histogram of the top 15 bits,
// then of the low 16 bits inside the bin that holds the k-th score. Nothing is concatenated or
// sorted; per-thread histograms are merged, so the result does not depend on the schedule.
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/parallel.h"
#include "kernels/prune/prune.h"

namespace edgegen::kernels::prune {
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

// Calls body(T*) with the source dtype's element type (a typed null pointer as a tag).
template <class F>
void dispatch(DType dtype, const F& body) {
  switch (dtype) {
    case DType::BF16: body(static_cast<bf16_t*>(nullptr)); break;
    case DType::F16: body(static_cast<fp16_t*>(nullptr)); break;
    default: body(static_cast<float*>(nullptr)); break;
  }
}

// Runs f(score_bits, index) over [b, e) of one source, with dtype and grad resolved outside the
// loop.
template <class F>
void for_each_score(const ScoreSource& s, int64_t b, int64_t e, const F& f) {
  dispatch(s.dtype, [&](auto* tag) {
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
};

BitSelection select_bits(const ScoreSource* src, const std::vector<Chunk>& chunks, int num_threads,
                         const std::vector<int64_t>& high, int64_t k) {
  int64_t below_hi = 0, below_lo = 0;
  const uint32_t hi = uint32_t(find_bin(high, k, &below_hi));
  const std::vector<int64_t> low = low_histogram(src, chunks, num_threads, hi);
  const uint32_t lo = uint32_t(find_bin(low, k - below_hi, &below_lo));
  return {(hi << 16) | lo, below_hi + below_lo};
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

Selection kth_smallest_score(const ScoreSource* src, int num_src, int64_t k, int num_threads) {
  const std::vector<Chunk> chunks = plan_chunks(src, num_src);
  Selection out{0.0f, 0, 0};
  const std::vector<int64_t> high = high_histogram(src, chunks, num_threads, &out.num_nan);
  if (out.num_nan > 0) return out;
  const BitSelection sel = select_bits(src, chunks, num_threads, high, k);
  out.threshold = bits_to_float(sel.bits);
  out.num_less = sel.num_less;
  return out;
}

int64_t magnitude_mask(const ScoreSource* src, int num_src, int64_t num_prune, uint8_t* const* masks,
                       void* const* zero_out, int num_threads) {
  const std::vector<Chunk> chunks = plan_chunks(src, num_src);
  if (chunks.empty()) return 0;
  int64_t num_nan = 0;
  const std::vector<int64_t> high = high_histogram(src, chunks, num_threads, &num_nan);
  if (num_nan > 0) return num_nan;
  int64_t total = 0;
  for (int s = 0; s < num_src; ++s) total += src[s].n;
  if (num_prune <= 0 || num_prune >= total) {
    fill_masks(src, chunks, masks, zero_out, num_prune <= 0 ? 1 : 0, num_threads);
    return 0;
  }
  const BitSelection sel = select_bits(src, chunks, num_threads, high, num_prune);
  const uint32_t thr = sel.bits;

  // Pass 3: prune everything below the threshold, keep ties for now and count them per chunk.
  // Branch-free: half the entries are pruned in no predictable order, so a branch per entry
  // would mispredict about every other time; kept weights are rewritten unchanged instead.
  std::vector<int64_t> ties(chunks.size(), 0);
  parallel_for(int64_t(chunks.size()), num_threads, [&](int64_t c) {
    const Chunk& ch = chunks[c];
    uint8_t* m = masks[ch.src];
    void* zw = zero_out ? zero_out[ch.src] : nullptr;
    int64_t eq = 0;
    dispatch(src[ch.src].dtype, [&](auto* tag) {
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
    dispatch(src[ch.src].dtype, [&](auto* tag) {
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
  dispatch(src.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    T* o = static_cast<T*>(out);
    parallel_for(num_chunks, num_threads, [&](int64_t c) {
      const int64_t b = c * kChunk, e = std::min(src.n, b + kChunk);
      for_each_score(src, b, e, [&](uint32_t bits, int64_t i) { store_float(o + i, bits_to_float(bits)); });
    });
  });
}

}  // namespace edgegen::kernels::prune
