// The W4A8 INT4 GEMM form's shared part (int4.h: from kA8GemmRows rows), included by each ISA's
// TU inside its own namespace (int4_avx512.cpp: 512-bit vpdpbusd tiles; int4_avx2.cpp: vpmaddubsw
// tiles), after <immintrin.h>, <algorithm>, <cstdint>, <cstring>, <utility>, <vector>,
// kernels/buffer_cache.h, kernels/parallel.h and kernels/quant/int4.h. Uses SSE4.1 / SSSE3 only.
//
// W4A8 for many rows: output features along the lanes, as in the INT8 GEMM. The 4-bit weights are
// unpacked once per call into the INT8 GEMM's panels (16 features x 4 consecutive k per 64-byte
// block) as signed q - zero; the codes c (s8) enter the u8 x s8 dot products as the unsigned
// c + 128 (vpdpbusd; or vpmaddubsw, whose int16 pair sums stay below 2 * 255 * 15 = 7650), and the
// extra 128 * sum(q - zero) of each group comes off before the group's float epilogue:
//   out[i][j] = sum_g scale[j][g] * sx[i][g] * (sum_{k in g} (c + 128) (q - zero) - 128 sum (q - zero)).
// The group sums are exact integers, as on the scalar path.

constexpr int64_t kA8Panel = 16;

// Scratch memory for the unpacked weights: from the buffer cache from 8 MiB on (a large layer,
// e.g. a 50,257-word output head, would otherwise fault in fresh pages on every call), else the heap.
class Scratch {
 public:
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() {
    if (cached_) buffer_cache().release(cached_, capacity_);
  }
  int8_t* get(size_t bytes) {
    if (bytes >= 4 * BufferCache::kAlign && (cached_ = buffer_cache().acquire(bytes, &capacity_)))
      return static_cast<int8_t*>(cached_);
    heap_.resize(bytes);
    return heap_.data();
  }

 private:
  void* cached_ = nullptr;
  size_t capacity_ = 0;
  std::vector<int8_t> heap_;
};

struct A8Gemm {
  int64_t n, k, group, groups, kq, panels, ld;  // ld: columns of wsum / wscale (panels * 16)
  int8_t* w;                                    // [panels][kq][16][4]
  std::vector<int32_t> wsum;                    // [groups][ld]: 128 * sum_{k in g} (q - zero)
  std::vector<float> wscale;                    // [groups][ld]
};

// One packed weight row into panel column j % 16: per half chunk (32 features, one group) a byte
// transpose brings 4 consecutive k of the low nibbles together (see int4.h: byte b of word w holds
// k = 32 (w / 4) + w % 4 + 8 b, and k + 4 in its high nibble).
void unpack_row(const uint8_t* row, const float* scale, const uint8_t* zero, int64_t j, A8Gemm& g) {
  const __m128i transpose = _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const __m128i nib = _mm_set1_epi8(0x0f);
  int8_t* pan = g.w + (j / kA8Panel) * g.kq * 64 + (j % kA8Panel) * 4;
  for (int64_t gi = 0; gi < g.groups; ++gi) g.wscale[size_t(gi * g.ld + j)] = scale[gi];
  for (int64_t k0 = 0; k0 < g.k; k0 += 32) {
    const int64_t gi = k0 / g.group;
    const __m128i t = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + k0 / 2)), transpose);
    const __m128i lo = _mm_and_si128(t, nib), hi = _mm_and_si128(_mm_srli_epi16(t, 4), nib);
    const __m128i z = _mm_set1_epi8(char(zero[gi]));
    alignas(16) int8_t q[32];  // k0 .. k0 + 31 in order: low quad b, then high quad b, for b = 0..3
    _mm_store_si128(reinterpret_cast<__m128i*>(q), _mm_sub_epi8(_mm_unpacklo_epi32(lo, hi), z));
    _mm_store_si128(reinterpret_cast<__m128i*>(q + 16), _mm_sub_epi8(_mm_unpackhi_epi32(lo, hi), z));
    const __m128i sad = _mm_add_epi64(_mm_sad_epu8(lo, _mm_setzero_si128()), _mm_sad_epu8(hi, _mm_setzero_si128()));
    const int64_t nibbles = _mm_cvtsi128_si64(sad) + _mm_extract_epi64(sad, 1);
    g.wsum[size_t(gi * g.ld + j)] += int32_t(128 * (nibbles - 32 * int64_t(zero[gi])));
    for (int qq = 0; qq < 8; ++qq) std::memcpy(pan + (k0 / 4 + qq) * 64, q + 4 * qq, 4);
  }
}


// The GEMM form's driver: unpacks the weights (panels padded to a multiple of P), the codes + 128,
// then tasks of 64 rows x P panels, each calling tile(g, a, au, i, p, rows) for tiles of at most
// R rows (rows and P panels starting at panel p).
template <int P, int R, class Tile>
void a8_gemm_run(const A8Rows& a, int64_t n, const uint8_t* packed, const float* scale, const uint8_t* zero,
                 int64_t group, int num_threads, const Tile& tile) {
  A8Gemm g;
  g.n = n, g.k = a.k, g.group = group, g.groups = a.k / group, g.kq = a.k / 4;
  g.panels = (n + kA8Panel - 1) / kA8Panel;
  g.panels = (g.panels + P - 1) / P * P;  // whole tasks; the padding features have zero weights
  g.ld = g.panels * kA8Panel;
  Scratch scratch;
  g.w = scratch.get(size_t(g.panels * g.kq * 64));
  g.wsum.assign(size_t(g.groups * g.ld), 0);
  g.wscale.assign(size_t(g.groups * g.ld), 0.0f);
  parallel_for(n, num_threads, [&](int64_t j) {
    unpack_row(packed + j * a.k / 2, scale + j * g.groups, zero + j * g.groups, j, g);
  });
  for (int64_t j = n; j < g.ld; ++j)  // the padding features: zero weights
    for (int64_t q = 0; q < g.kq; ++q) std::memset(g.w + (j / kA8Panel) * g.kq * 64 + q * 64 + (j % kA8Panel) * 4, 0, 4);
  std::vector<uint8_t> au(size_t(a.m * a.k));  // the codes + 128, as the unsigned operand
  parallel_for(a.m, num_threads, [&](int64_t i) {
    const __m128i flip = _mm_set1_epi8(char(0x80));
    for (int64_t kk = 0; kk < a.k; kk += 16)  // k is a multiple of 64
      _mm_storeu_si128(reinterpret_cast<__m128i*>(au.data() + i * a.k + kk),
                       _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a.natural + i * a.k + kk)),
                                     flip));
  });
  const int64_t mb = 64, row_blocks = (a.m + mb - 1) / mb, tasks = g.panels / P;
  parallel_for(row_blocks * tasks, num_threads, [&](int64_t t) {
    const int64_t p = P * (t % tasks), i0 = (t / tasks) * mb, i1 = std::min(a.m, i0 + mb);
    for (int64_t i = i0; i < i1; i += R) tile(g, a, au.data(), i, p, int(std::min<int64_t>(R, i1 - i)));
  });
}
