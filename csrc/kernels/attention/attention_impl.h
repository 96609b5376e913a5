// The attention algorithm, written once over a SIMD policy V (simd_scalar.h / simd_avx2.h /
// simd_avx512.h) with compute type R = V::R (float, or double for float64 inputs). Included by
// one TU per ISA inside
// namespace edgegen::kernels::attention::isa_*, after the policy headers.
//
// Every head's q, k, v (and for backward dout) are first copied into R buffers whose rows are
// padded to dp = d rounded up to kPad (8, or a wider vector's width), q pre-multiplied by the softmax scale; k (forward) and q, dout
// (backward) are also stored transposed per tile ([dp][tile] blocks), so every product below is
// one small GEMM C (+)= A B with B's columns contiguous (gemm()).
//
// Forward, per query tile (rows i), over the key tiles it visits (columns j):
//   S = Qs K^T, masked entries -inf; m_new = max(m, rowmax S); P = e^(S - m_new);
//   l = l e^(m - m_new) + rowsum P; O = O e^(m - m_new) + P V.
//   out = O / l, lse = m + ln l (a row that saw no key: out 0, lse -inf).
// Backward (FlashAttention-2 order), per key tile, over the query tiles that visit it, with
// D_i = dout_i . out_i:
//   P^T = e^(K Qs^T - lse), dV += P^T dO, dP^T = V dO^T, dS^T = P^T (dP^T - D),
//   dK += dS^T Qs, dQ += dS K (dQ scaled at the end).
// Parallel over (head, query tile) forward and (head, key-tile segment) backward; a segment
// accumulates its own dQ, and the segments are summed in a fixed order, so results do not depend
// on the thread count's scheduling.

// Rows [0, M) in micro-tiles of MaxRows rows and one of the rest: tile(r, rows) with rows a
// std::integral_constant (the micro-kernels' row count is a template argument).
template <int MaxRows, class Tile>
inline void for_row_tiles(int64_t M, Tile&& tile) {
  int64_t r = 0;
  for (; r + MaxRows <= M; r += MaxRows) tile(r, std::integral_constant<int, MaxRows>{});
  if constexpr (MaxRows > 1) {
    if (r < M) for_row_tiles<MaxRows - 1>(M - r, [&](int64_t r2, auto rows) { tile(r + r2, rows); });
  }
}

// The products' default policy: C (+)= A B in the compute type, on the SIMD policy's FMAs.
template <class V>
struct FloatGemm {
  static constexpr bool kWords = false;  // no packed operand forms (see Attn::Head)
  using R = typename V::R;
  using F = typename V::F;
  static constexpr int W = V::W;

  // C[r][c] (+)= sum_k A[r * ars + k * aks] * B[k * ldb + c] for MR rows: two vectors, one vector,
  // then single columns.
  template <int MR>
  static void micro(const R* A, int64_t ars, int64_t aks, const R* B, int64_t ldb, R* C, int64_t ldc, int64_t N,
                    int64_t K, bool accumulate) {
    int64_t c = 0;
    for (; c + 2 * W <= N; c += 2 * W) {
      F c0[MR], c1[MR];
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        c0[r] = accumulate ? V::load(C + r * ldc + c) : V::zero();
        c1[r] = accumulate ? V::load(C + r * ldc + c + W) : V::zero();
      }
      const R* a = A;
      const R* b = B + c;
      for (int64_t k = 0; k < K; ++k, a += aks, b += ldb) {
        const F b0 = V::load(b), b1 = V::load(b + W);
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) {
          const F ar = V::set1(a[r * ars]);
          c0[r] = V::fmadd(ar, b0, c0[r]);
          c1[r] = V::fmadd(ar, b1, c1[r]);
        }
      }
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        V::store(C + r * ldc + c, c0[r]);
        V::store(C + r * ldc + c + W, c1[r]);
      }
    }
    for (; c + W <= N; c += W) {
      F c0[MR];
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) c0[r] = accumulate ? V::load(C + r * ldc + c) : V::zero();
      const R* a = A;
      const R* b = B + c;
      for (int64_t k = 0; k < K; ++k, a += aks, b += ldb) {
        const F b0 = V::load(b);
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) c0[r] = V::fmadd(V::set1(a[r * ars]), b0, c0[r]);
      }
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) V::store(C + r * ldc + c, c0[r]);
    }
    for (; c < N; ++c) {
      for (int r = 0; r < MR; ++r) {
        R acc = accumulate ? C[r * ldc + c] : R(0);
        for (int64_t k = 0; k < K; ++k) acc += A[r * ars + k * aks] * B[k * ldb + c];
        C[r * ldc + c] = acc;
      }
    }
  }

  // C[M][N] (+)= A[M][K] B[K][N] with A read through strides (ars, aks).
  static void gemm(int64_t M, int64_t N, int64_t K, const R* A, int64_t ars, int64_t aks, const R* B, int64_t ldb,
                   R* C, int64_t ldc, bool accumulate) {
    for_row_tiles<6>(M, [&](int64_t r, auto rows) {
      micro<decltype(rows)::value>(A + r * ars, ars, aks, B, ldb, C + r * ldc, ldc, N, K, accumulate);
    });
  }
};

// Prod: the products' policy: FloatGemm (gemm on the float buffers), or one whose operands are
// bf16 words (kWords: Bf16Dot512, Bf16Tiles; bf16 inputs only), for which the inputs' operands are
// packed once per head / tile (Head's word buffers) and the products call gemm_words (both
// packed) or gemm_a_float (A, the probabilities or score gradients, packed per call).
template <class V, class Prod = FloatGemm<V>>
struct Attn {
  using R = typename V::R;
  using F = typename V::F;
  static constexpr int W = V::W;
  using S1 = ScalarOf<R>;

  // Rows and tiles are padded to a multiple of kPad (8, or the vector width when wider), so every
  // vector loop over a padded extent has no tail; micro() still finishes any tail in scalar.
  static constexpr int64_t kPad = W > 8 ? W : 8;
  static_assert(kQueryTile % kPad == 0 && kKeyTile % kPad == 0, "tiles must hold whole vectors");
  static int64_t padw(int64_t x) { return (x + kPad - 1) / kPad * kPad; }

  static R row_max(const R* s, int64_t n) {
    F m = V::set1(R(-INFINITY));
    R mt = R(-INFINITY);
    int64_t c = 0;
    for (; c + W <= n; c += W) m = V::max(m, V::load(s + c));
    for (; c < n; ++c) mt = S1::max(mt, s[c]);
    return S1::max(V::hmax(m), mt);
  }

  // s = e^(s - m), returns the sum.
  static R exp_row(R* s, int64_t n, R m) {
    const F mv = V::set1(m);
    F acc = V::zero();
    R tail = 0;
    int64_t c = 0;
    for (; c + W <= n; c += W) {
      const F e = V::exp(V::sub(V::load(s + c), mv));
      V::store(s + c, e);
      acc = V::add(acc, e);
    }
    for (; c < n; ++c) {
      s[c] = S1::exp(s[c] - m);
      tail += s[c];
    }
    return V::hsum(acc) + tail;
  }

  static void scale_row(R* o, int64_t n, R a) {
    const F av = V::set1(a);
    int64_t c = 0;
    for (; c + W <= n; c += W) V::store(o + c, V::mul(V::load(o + c), av));
    for (; c < n; ++c) o[c] *= a;
  }

  // A buffer that is not value-initialised: a decode step packs only the few key tiles it
  // visits, so the rest of a cache-sized buffer must cost nothing (untouched pages).
  struct Buf {
    std::unique_ptr<R[]> p;
    int64_t n = 0;
    void resize(int64_t want) {
      want = std::max<int64_t>(want, 1);
      if (want > n) p.reset(new R[size_t(want)]), n = want;
    }
    R* data() { return p.get(); }
    const R* data() const { return p.get(); }
    R& operator[](int64_t i) { return p[size_t(i)]; }
    const R& operator[](int64_t i) const { return p[size_t(i)]; }
  };

  // Rows of an operand: p + i * ld is row i (its first dp entries are read as a B operand).
  struct Rows {
    const R* p = nullptr;
    int64_t ld = 0;
    const R* row(int64_t i) const { return p + i * ld; }
  };

  // Per-head R buffers (see the file comment). Packed rows are dp wide. q, k, v and dout rows
  // are read in place when they already are float rows of a multiple of 8 (see rows_of).
  struct Head {
    Buf qs, kt, v;             // forward: Q rows, K^T per key tile, V rows per key tile
    Buf qst, k, dout, doutt;   // backward: Q^T per query tile, K rows, dO rows, dO^T per query tile
    Rows qr, kr, vr, doutr;    // the rows used (in place or in the buffers above)
    bool v_in_place = false;
    std::vector<R> dd, lse;    // backward: D (0 past nq), lse (+inf past nq and for empty rows)
    std::vector<R> dq;         // backward: dQ per key-tile segment
    std::vector<uint8_t> ready;  // backward: query tiles packed
    // Products that take packed bf16 words (Prod::kWords), forward: Q as A rows (qa_ld words per
    // row), per key-tile slot K^T and V as B word rows (kt_words / v_words per slot, kt_np / v_np
    // words per row).
    std::vector<uint32_t> qa, ktb, vb;
    int64_t qa_ld = 0, kt_words = 0, kt_np = 0, v_words = 0, v_np = 0;
    // ... backward: K and V as A rows (ka_ld words per row); per query tile Q^T and dO^T as B word
    // rows (qt_words per tile, qt_np per row) and dO and Q as B word rows (qn_words, qn_np).
    std::vector<uint32_t> ka, va, qtb, dotb, dob, qb;
    int64_t ka_ld = 0, qt_words = 0, qt_np = 0, qn_words = 0, qn_np = 0;
    // ... packed straight from the bf16 inputs (words_direct), the float rows and blocks unused.
    bool direct = false;

    int64_t bytes() const {
      return int64_t(sizeof(R)) * (qs.n + kt.n + v.n + qst.n + k.n + dout.n + doutt.n + int64_t(dd.capacity()) +
                                   int64_t(lse.capacity()) + int64_t(dq.capacity())) +
             4 * int64_t(qa.capacity() + ktb.capacity() + vb.capacity() + ka.capacity() + va.capacity() +
                         qtb.capacity() + dotb.capacity() + dob.capacity() + qb.capacity());
    }
  };

  // Head buffers kept by the calling thread between calls: repeated small calls (decode steps)
  // would otherwise give their pages back to the system and fault them in again every time.
  // Whatever exceeds kKeepBytes is released at the end of the call.
  static constexpr int64_t kKeepBytes = int64_t(16) << 20;

  static std::vector<Head>& head_pool(int64_t count) {
    static thread_local std::vector<Head> pool;
    if (int64_t(pool.size()) < count) pool.resize(size_t(count));
    return pool;
  }

  static void trim_pool(std::vector<Head>& pool) {
    int64_t total = 0;
    for (const Head& h : pool) total += h.bytes();
    if (total > kKeepBytes) std::vector<Head>().swap(pool);
  }

  template <class T>
  static const T* head_ptr(const Strided& s, int64_t b, int64_t h) {
    return static_cast<const T*>(s.data) + b * s.sb + h * s.sh;
  }

  // The n rows of one head of a strided tensor: in place when they are float rows with unit
  // column stride and d a multiple of kPad (no copy; B operands read dp = d columns), else copied
  // into buf, zero padded to dp.
  template <class T>
  static Rows rows_of(const Strided& s, int64_t b, int64_t h, int64_t n, int64_t d, Buf& buf) {
    if constexpr (std::is_same_v<T, R>) {
      if (s.sd == 1 && d % kPad == 0) return Rows{head_ptr<T>(s, b, h), s.sn};
    }
    const int64_t dp = padw(d);
    buf.resize(n * dp);
    copy_rows(head_ptr<T>(s, b, h), s.sn, s.sd, 0, n, d, dp, R(1), buf.data());
    return Rows{buf.data(), dp};
  }

  // rows [r0, r1) of a [*, d] strided tensor into dst rows (dp wide, zero padded), times mul.
  template <class T>
  static void copy_rows(const T* src, int64_t sn, int64_t sd, int64_t r0, int64_t r1, int64_t d, int64_t dp, R mul,
                        R* dst) {
    for (int64_t i = r0; i < r1; ++i) {
      const T* s = src + i * sn;
      R* o = dst + i * dp;
      if (sd == 1) {  // the usual case: a contiguous row, a loop the compiler vectorises
        for (int64_t c = 0; c < d; ++c) o[c] = R(to_float(s[c])) * mul;
      } else {
        for (int64_t c = 0; c < d; ++c) o[c] = R(to_float(s[c * sd])) * mul;
      }
      for (int64_t c = d; c < dp; ++c) o[c] = 0;
    }
  }

  // The rows [r0, r1) of a [*, d] strided tensor as a [dp][tile] block (columns r - r0, zero
  // padded to the tile width), times mul.
  template <class T>
  static void copy_block_t(const T* src, int64_t sn, int64_t sd, int64_t r0, int64_t r1, int64_t d, int64_t dp,
                           int64_t tile, R mul, R* blk) {
    std::fill(blk, blk + dp * tile, R(0));
    // Rows in groups of 8 read together, so the strided writes fill 8 consecutive floats.
    int64_t i = r0;
    for (; i + 8 <= r1; i += 8) {
      for (int64_t c = 0; c < d; ++c) {
        R* o = blk + c * tile + (i - r0);
#pragma GCC unroll 8
        for (int u = 0; u < 8; ++u) o[u] = R(to_float(src[(i + u) * sn + c * sd])) * mul;
      }
    }
    for (; i < r1; ++i) {
      const T* s = src + i * sn;
      for (int64_t c = 0; c < d; ++c) blk[c * tile + (i - r0)] = R(to_float(s[c * sd])) * mul;
    }
  }

  // ------------------------------------------------------------------------------ forward
  // Only the key tiles some query tile visits are packed, into consecutive slots (a decode step
  // packs a handful of tiles, not the whole cache): K^T as [dp][kKeyTile] blocks, V as
  // [kKeyTile][dp] row blocks.
  template <class T>
  static void pack_forward(const Problem& p, const Plan& plan, const std::vector<int64_t>& slot, int64_t slots,
                           int64_t bh, Head& hd) {
    const int64_t b = bh / p.H, h = bh % p.H, d = p.d, dp = padw(d);
    if constexpr (Prod::kWords) {
      if (words_direct<T>(p)) return pack_forward_bf16(p, plan, slot, slots, bh, hd);
    }
    hd.qr = rows_of<T>(p.q, b, h, p.nq, d, hd.qs);
    hd.v_in_place = false;
    if constexpr (std::is_same_v<T, R>) {
      hd.v_in_place = p.v.sd == 1 && d % kPad == 0;
      if (hd.v_in_place) hd.vr = Rows{head_ptr<T>(p.v, b, h), p.v.sn};
    }
    hd.kt.resize(slots * dp * kKeyTile);
    if (!hd.v_in_place) hd.v.resize(slots * kKeyTile * dp);
    for (int64_t t = 0; t < plan.nt(); ++t) {
      if (slot[t] < 0) continue;
      const int64_t j0 = plan.ks[t], j1 = plan.ks[t + 1];
      copy_block_t(head_ptr<T>(p.k, b, h), p.k.sn, p.k.sd, j0, j1, d, dp, kKeyTile, R(1),
                   hd.kt.data() + slot[t] * dp * kKeyTile);
      // Rows j0..j1 of V land at rows 0..(j1 - j0) of the slot.
      if (!hd.v_in_place)
        copy_rows(head_ptr<T>(p.v, b, h) + j0 * p.v.sn, p.v.sn, p.v.sd, 0, j1 - j0, d, dp, R(1),
                  hd.v.data() + slot[t] * kKeyTile * dp);
    }
    if constexpr (Prod::kWords) pack_forward_words(plan, slot, slots, d, hd);
  }

  // The n rows of an operand as packed A words (Prod::kWords), for products that start at any row
  // of them: the rows are followed by Prod::kRowMultiple - 1 zero rows at least, since a product
  // reads its row count rounded up to that multiple. Returns the words per row.
  static int64_t pack_a_rows(int64_t n, int64_t d, const Rows& rows, std::vector<uint32_t>& buf) {
    const int64_t ld = Prod::Pack::rows(n, d, rows.p, rows.ld, 1, buf, Prod::kRowMultiple);
    buf.resize(size_t((n + Prod::kRowMultiple) * ld), 0u);  // new words are zero
    return ld;
  }

  // Whether the word operands are packed straight from the inputs (bf16 with unit column stride:
  // q, k, v and, for the backward, dO) instead of through float copies.
  template <class T>
  static bool words_direct(const Problem& p, const Strided* dout = nullptr) {
    if constexpr (Prod::kWords && std::is_same_v<T, bf16_t>)
      return p.q.sd == 1 && p.k.sd == 1 && p.v.sd == 1 && (!dout || dout->sd == 1);
    else return false;
  }

  // A rows straight from n bf16 rows (row stride ld), followed by zero rows as pack_a_rows leaves
  // them. Returns the words per row.
  static int64_t pack_a_rows_bf16(int64_t n, int64_t d, const bf16_t* rows, int64_t ld, std::vector<uint32_t>& buf) {
    const int64_t words = Prod::Pack::rows_bf16(n, d, rows, ld, buf, Prod::kRowMultiple);
    buf.resize(size_t((n + Prod::kRowMultiple) * words), 0u);  // new words are zero
    return words;
  }

  // The word operands of the forward straight from bf16 inputs with unit column stride (no float
  // copies in between: long sequences would stream them through memory): Q's rows, and per key
  // tile K^T and V, as pack_forward_words lays them out.
  static void pack_forward_bf16(const Problem& p, const Plan& plan, const std::vector<int64_t>& slot, int64_t slots,
                                int64_t bh, Head& hd) {
    using Pack = typename Prod::Pack;
    const int64_t b = bh / p.H, h = bh % p.H, d = p.d, nq = plan.qs[plan.mt()];
    hd.qa_ld = pack_a_rows_bf16(nq, d, head_ptr<bf16_t>(p.q, b, h), p.q.sn, hd.qa);
    size_forward_words(d, slots, hd);
    const bf16_t* K = head_ptr<bf16_t>(p.k, b, h);
    const bf16_t* Vp = head_ptr<bf16_t>(p.v, b, h);
    for (int64_t t = 0; t < plan.nt(); ++t) {
      if (slot[t] < 0) continue;
      const int64_t j0 = plan.ks[t], tw = plan.ks[t + 1] - j0;
      Pack::b_from_row_words(d, tw, K + j0 * p.k.sn, p.k.sn, hd.ktb.data() + slot[t] * hd.kt_words,
                             hd.kt_words / hd.kt_np, hd.kt_np);
      Pack::b_from_rows(tw, d, Vp + j0 * p.v.sn, p.v.sn, hd.vb.data() + slot[t] * hd.v_words, hd.v_words / hd.v_np,
                        hd.v_np);
    }
  }

  // The sizes of the forward's per-key-tile word operands (K^T and V slots).
  static void size_forward_words(int64_t d, int64_t slots, Head& hd) {
    using Pack = typename Prod::Pack;
    hd.kt_np = Pack::b_cols(kKeyTile);
    hd.kt_words = Pack::b_rows(d, Prod::kRowMultiple) * hd.kt_np;
    hd.v_np = Pack::b_cols(padw(d));
    hd.v_words = Pack::b_rows(kKeyTile, Prod::kRowMultiple) * hd.v_np;
    hd.ktb.resize(size_t(std::max<int64_t>(1, slots * hd.kt_words)));
    hd.vb.resize(size_t(std::max<int64_t>(1, slots * hd.v_words)));
  }

  // The packed forms of the forward's input operands, once per head / key tile (the products of
  // every query tile that visits a key tile read them).
  static void pack_forward_words(const Plan& plan, const std::vector<int64_t>& slot, int64_t slots, int64_t d,
                                 Head& hd) {
    using Pack = typename Prod::Pack;
    const int64_t dp = padw(d), nq = plan.qs[plan.mt()];
    hd.qa_ld = pack_a_rows(nq, d, hd.qr, hd.qa);
    size_forward_words(d, slots, hd);
    for (int64_t t = 0; t < plan.nt(); ++t) {
      if (slot[t] < 0) continue;
      const int64_t j0 = plan.ks[t], tw = plan.ks[t + 1] - j0;
      Pack::b_into(d, kKeyTile, hd.kt.data() + slot[t] * dp * kKeyTile, kKeyTile,
                   hd.ktb.data() + slot[t] * hd.kt_words, hd.kt_words / hd.kt_np, hd.kt_np);
      const R* vt = hd.v_in_place ? hd.vr.row(j0) : hd.v.data() + slot[t] * kKeyTile * dp;
      Pack::b_into(tw, dp, vt, hd.v_in_place ? hd.vr.ld : dp, hd.vb.data() + slot[t] * hd.v_words,
                   hd.v_words / hd.v_np, hd.v_np);
    }
  }

  template <class T>
  static void forward_tile(const Problem& p, const Plan& plan, const std::vector<int64_t>& slot, const Head& hd,
                           int64_t bh, int64_t qt, T* out, R* lse) {
    const Pattern& pt = p.pattern;
    const int64_t d = p.d, dp = padw(d);
    const int64_t i0 = plan.qs[qt], rows = plan.qs[qt + 1] - i0;
    const R scale = R(p.scale);
    std::vector<R> S(kQueryTile * kKeyTile), O(kQueryTile * dp, R(0));
    R m[kQueryTile], l[kQueryTile];
    for (int64_t r = 0; r < rows; ++r) m[r] = R(-INFINITY), l[r] = 0;
    for (int64_t e = plan.fptr[qt]; e < plan.fptr[qt + 1]; ++e) {
      const int64_t t = plan.fidx[e], j0 = plan.ks[t], tw = plan.ks[t + 1] - j0, twp = padw(tw);
      if constexpr (Prod::kWords)
        Prod::gemm_words(rows, twp, (d + 1) / 2, hd.qa.data() + i0 * hd.qa_ld, hd.qa_ld, 1,
                         hd.ktb.data() + slot[t] * hd.kt_words, hd.kt_np, S.data(), kKeyTile, false);
      else
        Prod::gemm(rows, twp, d, hd.qr.row(i0), hd.qr.ld, 1, hd.kt.data() + slot[t] * dp * kKeyTile, kKeyTile,
                   S.data(), kKeyTile, false);
      for (int64_t r = 0; r < rows; ++r) {
        R* s = S.data() + r * kKeyTile;
        scale_row(s, tw, scale);
        for (int64_t c = tw; c < twp; ++c) s[c] = R(-INFINITY);
        if (plan.fpartial[e]) mask_outside(s, tw, j0, keys_seen_by(pt, pt.q_offset + i0 + r), R(-INFINITY));
        const R mx = row_max(s, twp);
        if (mx == R(-INFINITY)) {  // nothing visible in this tile for this row
          std::fill(s, s + twp, R(0));
          continue;
        }
        const R mnew = std::max(m[r], mx);
        const R alpha = std::exp(m[r] - mnew);  // 0 while m is -inf
        const R sum = exp_row(s, twp, mnew);
        if (alpha != R(1)) scale_row(O.data() + r * dp, dp, alpha);
        l[r] = l[r] * alpha + sum;
        m[r] = mnew;
      }
      if constexpr (Prod::kWords) {
        Prod::gemm_a_float(rows, dp, tw, S.data(), kKeyTile, 1, hd.vb.data() + slot[t] * hd.v_words, hd.v_np,
                           O.data(), dp, true);
      } else {
        const R* vt = hd.v_in_place ? hd.vr.row(j0) : hd.v.data() + slot[t] * kKeyTile * dp;
        Prod::gemm(rows, dp, tw, S.data(), kKeyTile, 1, vt, hd.v_in_place ? hd.vr.ld : dp, O.data(), dp, true);
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = i0 + r;
      const R inv = l[r] > 0 ? R(1) / l[r] : R(0);
      T* o = out + (bh * p.nq + i) * d;
      const R* src = O.data() + r * dp;
      for (int64_t c = 0; c < d; ++c) store_float(o + c, src[c] * inv);
      lse[bh * p.nq + i] = l[r] > 0 ? m[r] + std::log(l[r]) : R(-INFINITY);
    }
  }

  template <class T>
  static void forward_typed(const Problem& p, const Plan& plan, T* out, R* lse) {
    const int64_t BH = p.B * p.H, mt = plan.mt();
    const int T_ = std::max(1, p.num_threads);
    // Heads packed at once: all of them when their packed tiles are small (decode steps, short
    // sequences: one parallel region instead of BH / threads), else one per thread.
    std::vector<int64_t> slot(plan.nt(), -1);
    int64_t needed = 0;
    for (int64_t t = 0; t < plan.nt(); ++t)
      if (plan.key_needed[t]) slot[t] = needed++;
    const int64_t touched = (p.nq + 2 * needed * kKeyTile) * padw(p.d) * int64_t(sizeof(R));
    const int64_t G = BH * touched <= (int64_t(32) << 20) ? std::max<int64_t>(BH, 1)
                                                           : std::max<int64_t>(1, std::min<int64_t>(BH, T_));
    std::vector<Head>& heads = head_pool(G);
    for (int64_t g0 = 0; g0 < BH; g0 += G) {
      const int64_t gsz = std::min(G, BH - g0);
      parallel_for(gsz, T_, [&](int64_t x) { pack_forward<T>(p, plan, slot, needed, g0 + x, heads[x]); });
      parallel_for(gsz * mt, T_, [&](int64_t idx) {
        const int64_t x = idx / mt, qt = idx % mt;
        forward_tile<T>(p, plan, slot, heads[x], g0 + x, qt, out, lse);
      });
    }
    trim_pool(heads);
  }

  // ----------------------------------------------------------------------------- backward
  // Backward operands of one head. Rows are read in place where possible (rows_of); the per-query
  // tile data (Q^T, dO^T blocks, D, lse and the dQ rows' zeroing) is filled by pack_query_tile,
  // either for all tiles here (lazy = false) or just before a tile is first needed, so that it
  // is still in cache when used (long sequences no longer fit the last-level cache).
  template <class T>
  static void pack_backward(const Problem& p, const Plan& plan, const Strided& dout, const Strided& out,
                            const R* lse, int64_t bh, int64_t segments, bool lazy, Head& hd) {
    const int64_t b = bh / p.H, h = bh % p.H, d = p.d, dp = padw(d), nq = p.nq, nk = p.nk, mt = plan.mt();
    hd.direct = words_direct<T>(p, &dout);
    if (!hd.direct) {
      hd.qr = rows_of<T>(p.q, b, h, nq, d, hd.qs);
      hd.doutr = rows_of<T>(dout, b, h, nq, d, hd.dout);
      hd.kr = rows_of<T>(p.k, b, h, nk, d, hd.k);
      hd.vr = rows_of<T>(p.v, b, h, nk, d, hd.v);
      hd.qst.resize(mt * dp * kQueryTile);
      hd.doutt.resize(mt * dp * kQueryTile);
    }
    if constexpr (Prod::kWords) {
      using Pack = typename Prod::Pack;
      if (hd.direct) {
        hd.ka_ld = pack_a_rows_bf16(nk, d, head_ptr<bf16_t>(p.k, b, h), p.k.sn, hd.ka);
        pack_a_rows_bf16(nk, d, head_ptr<bf16_t>(p.v, b, h), p.v.sn, hd.va);
      } else {
        hd.ka_ld = pack_a_rows(nk, d, hd.kr, hd.ka);
        pack_a_rows(nk, d, hd.vr, hd.va);
      }
      hd.qt_np = Pack::b_cols(kQueryTile);
      hd.qt_words = Pack::b_rows(d, Prod::kRowMultiple) * hd.qt_np;
      hd.qn_np = Pack::b_cols(dp);
      hd.qn_words = Pack::b_rows(kQueryTile, Prod::kRowMultiple) * hd.qn_np;
      for (auto* buf : {&hd.qtb, &hd.dotb}) buf->resize(size_t(mt * hd.qt_words));
      for (auto* buf : {&hd.dob, &hd.qb}) buf->resize(size_t(mt * hd.qn_words));
    }
    hd.dd.assign(nq + kPad, R(0));
    hd.lse.assign(nq + kPad, R(INFINITY));
    hd.dq.resize(size_t(std::max<int64_t>(1, segments * nq * dp)));
    hd.ready.assign(size_t(mt), 0);
    if (segments > 1) std::fill(hd.dq.begin(), hd.dq.end(), R(0));
    if (!lazy)
      for (int64_t qt = 0; qt < mt; ++qt) pack_query_tile<T>(p, plan, dout, out, lse, bh, qt, segments == 1, hd);
  }

  template <class T>
  static void pack_query_tile(const Problem& p, const Plan& plan, const Strided& dout, const Strided& out,
                              const R* lse, int64_t bh, int64_t qt, bool zero_dq, Head& hd) {
    const int64_t b = bh / p.H, h = bh % p.H, d = p.d, dp = padw(d), nq = p.nq;
    const int64_t i0 = plan.qs[qt], i1 = plan.qs[qt + 1];
    if (!hd.direct) {
      copy_block_t(head_ptr<T>(p.q, b, h), p.q.sn, p.q.sd, i0, i1, d, dp, kQueryTile, R(1),
                   hd.qst.data() + qt * dp * kQueryTile);
      copy_block_t(head_ptr<T>(dout, b, h), dout.sn, dout.sd, i0, i1, d, dp, kQueryTile, R(1),
                   hd.doutt.data() + qt * dp * kQueryTile);
    }
    const T* o = head_ptr<T>(out, b, h);
    // D_i = dO_i . O_i, in vectors (a scalar sum is a serial chain); dO's row g is read in the
    // compute type or straight from the bf16 input (direct).
    auto dot = [&](const auto* g, const T* orow) {
      R acc = 0;
      int64_t c = 0;
      if (out.sd == 1) {
        F va = V::zero();
        for (; c + W <= d; c += W) va = V::fmadd(V::load(g + c), V::load(orow + c), va);
        acc = V::hsum(va);
      }
      for (; c < d; ++c) acc += R(to_float(g[c])) * R(to_float(orow[c * out.sd]));
      return acc;
    };
    const T* g_in = head_ptr<T>(dout, b, h);
    for (int64_t i = i0; i < i1; ++i) {
      hd.dd[i] = hd.direct ? dot(g_in + i * dout.sn, o + i * out.sn) : dot(hd.doutr.row(i), o + i * out.sn);
      const R ls = lse[bh * nq + i];
      hd.lse[i] = ls == R(-INFINITY) ? R(INFINITY) : ls;
    }
    if (zero_dq) std::fill(hd.dq.begin() + i0 * dp, hd.dq.begin() + i1 * dp, R(0));
    if constexpr (Prod::kWords) {  // the query tile's B operands in packed words
      using Pack = typename Prod::Pack;
      const int64_t rows_t = hd.qt_words / hd.qt_np, rows_n = hd.qn_words / hd.qn_np;
      if (hd.direct) {
        const bf16_t* Q = head_ptr<bf16_t>(p.q, b, h) + i0 * p.q.sn;
        const bf16_t* G = head_ptr<bf16_t>(dout, b, h) + i0 * dout.sn;
        Pack::b_from_row_words(d, i1 - i0, Q, p.q.sn, hd.qtb.data() + qt * hd.qt_words, rows_t, hd.qt_np);
        Pack::b_from_row_words(d, i1 - i0, G, dout.sn, hd.dotb.data() + qt * hd.qt_words, rows_t, hd.qt_np);
        Pack::b_from_rows(i1 - i0, d, G, dout.sn, hd.dob.data() + qt * hd.qn_words, rows_n, hd.qn_np);
        Pack::b_from_rows(i1 - i0, d, Q, p.q.sn, hd.qb.data() + qt * hd.qn_words, rows_n, hd.qn_np);
        hd.ready[size_t(qt)] = 1;
        return;
      }
      Pack::b_into(d, kQueryTile, hd.qst.data() + qt * dp * kQueryTile, kQueryTile, hd.qtb.data() + qt * hd.qt_words,
                   rows_t, hd.qt_np);
      Pack::b_into(d, kQueryTile, hd.doutt.data() + qt * dp * kQueryTile, kQueryTile,
                   hd.dotb.data() + qt * hd.qt_words, rows_t, hd.qt_np);
      Pack::b_into(i1 - i0, dp, hd.doutr.row(i0), hd.doutr.ld, hd.dob.data() + qt * hd.qn_words, rows_n, hd.qn_np);
      Pack::b_into(i1 - i0, dp, hd.qr.row(i0), hd.qr.ld, hd.qb.data() + qt * hd.qn_words, rows_n, hd.qn_np);
    }
    hd.ready[size_t(qt)] = 1;
  }

  // Key tiles [t0, t1) of one head: dK and dV written out, dQ accumulated into dq (rows dp wide).
  // With lazy packing (one segment per head) the global key tiles, which every query tile
  // visits, go last, so the window tiles meet the query tiles in order and pack them as they go.
  template <class T>
  static void backward_segment(const Problem& p, const Plan& plan, const Strided& dout, const Strided& out,
                               const R* lse_in, Head& hd, int64_t bh, int64_t t0, int64_t t1, bool lazy, R* dq,
                               T* dk, T* dv) {
    const Pattern& pt = p.pattern;
    const int64_t d = p.d, dp = padw(d);
    const R scale = R(p.scale);
    const F scale_v = V::set1(scale);
    std::vector<R> ST(kKeyTile * kQueryTile), DP(kKeyTile * kQueryTile), dK(kKeyTile * dp), dV(kKeyTile * dp);
    std::vector<int64_t> order;
    for (int64_t t = t0; t < t1; ++t)
      if (!(lazy && pt.block_size == 0 && plan.ks[t + 1] <= pt.num_global)) order.push_back(t);
    for (int64_t t = t0; t < t1; ++t)
      if (lazy && pt.block_size == 0 && plan.ks[t + 1] <= pt.num_global) order.push_back(t);
    std::vector<uint32_t> kb;  // packed words: the key tile's K rows as B (dQ += dS K)
    for (const int64_t t : order) {
      const int64_t j0 = plan.ks[t], tw = plan.ks[t + 1] - j0;
      std::fill(dK.begin(), dK.end(), R(0));
      std::fill(dV.begin(), dV.end(), R(0));
      if constexpr (Prod::kWords) {
        const int64_t rows = Prod::Pack::b_rows(kKeyTile, Prod::kRowMultiple);
        kb.resize(size_t(rows * hd.qn_np));
        if (hd.direct)
          Prod::Pack::b_from_rows(tw, d, head_ptr<bf16_t>(p.k, bh / p.H, bh % p.H) + j0 * p.k.sn, p.k.sn, kb.data(),
                                  rows, hd.qn_np);
        else
          Prod::Pack::b_into(tw, dp, hd.kr.row(j0), hd.kr.ld, kb.data(), rows, hd.qn_np);
      }
      for (int64_t e = plan.bptr[t]; e < plan.bptr[t + 1]; ++e) {
        const int64_t qt = plan.bidx[e], i0 = plan.qs[qt], qw = plan.qs[qt + 1] - i0, qwp = padw(qw);
        if (!hd.ready[size_t(qt)]) pack_query_tile<T>(p, plan, dout, out, lse_in, bh, qt, true, hd);
        const R* lse = hd.lse.data() + i0;
        const R* D = hd.dd.data() + i0;
        if constexpr (Prod::kWords)
          Prod::gemm_words(tw, qwp, (d + 1) / 2, hd.ka.data() + j0 * hd.ka_ld, hd.ka_ld, 1,
                           hd.qtb.data() + qt * hd.qt_words, hd.qt_np, ST.data(), kQueryTile, false);
        else
          Prod::gemm(tw, qwp, d, hd.kr.row(j0), hd.kr.ld, 1, hd.qst.data() + qt * dp * kQueryTile, kQueryTile,
                     ST.data(), kQueryTile, false);
        for (int64_t r = 0; r < tw; ++r) {
          R* s = ST.data() + r * kQueryTile;
          int64_t c = 0;
          for (; c + W <= qwp; c += W)
            V::store(s + c, V::exp(V::sub(V::mul(scale_v, V::load(s + c)), V::load(lse + c))));
          for (; c < qwp; ++c) s[c] = S1::exp(scale * s[c] - lse[c]);
          if (plan.bpartial[e]) mask_outside(s, qw, pt.q_offset + i0, queries_seeing(pt, j0 + r), R(0));
        }
        if constexpr (Prod::kWords) {
          Prod::gemm_a_float(tw, dp, qw, ST.data(), kQueryTile, 1, hd.dob.data() + qt * hd.qn_words, hd.qn_np,
                             dV.data(), dp, true);
          Prod::gemm_words(tw, qwp, (d + 1) / 2, hd.va.data() + j0 * hd.ka_ld, hd.ka_ld, 1,
                           hd.dotb.data() + qt * hd.qt_words, hd.qt_np, DP.data(), kQueryTile, false);
        } else {
          Prod::gemm(tw, dp, qw, ST.data(), kQueryTile, 1, hd.doutr.row(i0), hd.doutr.ld, dV.data(), dp, true);
          Prod::gemm(tw, qwp, d, hd.vr.row(j0), hd.vr.ld, 1, hd.doutt.data() + qt * dp * kQueryTile, kQueryTile,
                     DP.data(), kQueryTile, false);
        }
        for (int64_t r = 0; r < tw; ++r) {
          const R* s = ST.data() + r * kQueryTile;
          R* g = DP.data() + r * kQueryTile;
          int64_t c = 0;
          for (; c + W <= qwp; c += W)
            V::store(g + c, V::mul(V::load(s + c), V::sub(V::load(g + c), V::load(D + c))));
          for (; c < qwp; ++c) g[c] = s[c] * (g[c] - D[c]);
        }
        if constexpr (Prod::kWords) {
          Prod::gemm_a_float(tw, dp, qw, DP.data(), kQueryTile, 1, hd.qb.data() + qt * hd.qn_words, hd.qn_np,
                             dK.data(), dp, true);
          Prod::gemm_a_float(qw, dp, tw, DP.data(), 1, kQueryTile, kb.data(), hd.qn_np, dq + i0 * dp, dp, true);
        } else {
          Prod::gemm(tw, dp, qw, DP.data(), kQueryTile, 1, hd.qr.row(i0), hd.qr.ld, dK.data(), dp, true);
          Prod::gemm(qw, dp, tw, DP.data(), 1, kQueryTile, hd.kr.row(j0), hd.kr.ld, dq + i0 * dp, dp, true);
        }
      }
      for (int64_t r = 0; r < tw; ++r) {
        T* ok = dk + (bh * p.nk + j0 + r) * d;
        T* ov = dv + (bh * p.nk + j0 + r) * d;
        for (int64_t c = 0; c < d; ++c) {
          store_float(ok + c, dK[r * dp + c] * scale);
          store_float(ov + c, dV[r * dp + c]);
        }
      }
    }
    if (lazy)  // query tiles no key tile visits (rows that see no key): their dQ is 0
      for (int64_t qt = 0; qt < plan.mt(); ++qt)
        if (!hd.ready[size_t(qt)]) std::fill(dq + plan.qs[qt] * dp, dq + plan.qs[qt + 1] * dp, R(0));
  }

  template <class T>
  static void backward_typed(const Problem& p, const Plan& plan, const Strided& dout, const Strided& out,
                             const R* lse, T* dq, T* dk, T* dv) {
    const int64_t BH = p.B * p.H, nt = plan.nt(), nq = p.nq, d = p.d, dp = padw(d);
    const int T_ = std::max(1, p.num_threads);
    const int64_t G = std::max<int64_t>(1, std::min<int64_t>(BH, T_));
    // Key-tile segments per head, so that G heads x segments covers the threads; split where
    // the visited pairs are balanced.
    const int64_t segs = std::max<int64_t>(1, std::min<int64_t>(nt, (T_ + G - 1) / G));
    std::vector<int64_t> seg_start(segs + 1, nt);
    seg_start[0] = 0;
    {
      const int64_t pairs = plan.bptr[nt];
      int64_t s = 1;
      for (int64_t t = 0; t < nt && s < segs; ++t)
        if (plan.bptr[t + 1] * segs >= pairs * s) seg_start[s++] = t + 1;
    }
    std::vector<Head>& heads = head_pool(G);
    for (int64_t g0 = 0; g0 < BH; g0 += G) {
      const int64_t gsz = std::min(G, BH - g0);
      const bool lazy = segs == 1;
      parallel_for(gsz, T_,
                   [&](int64_t x) { pack_backward<T>(p, plan, dout, out, lse, g0 + x, segs, lazy, heads[x]); });
      parallel_for(gsz * segs, T_, [&](int64_t idx) {
        const int64_t x = idx / segs, s = idx % segs;
        backward_segment<T>(p, plan, dout, out, lse, heads[x], g0 + x, seg_start[s], seg_start[s + 1], lazy,
                            heads[x].dq.data() + s * nq * dp, dk, dv);
      });
      parallel_for(gsz, T_, [&](int64_t x) {
        const R scale = R(p.scale);
        const R* acc = heads[x].dq.data();
        for (int64_t i = 0; i < nq; ++i) {
          T* o = dq + ((g0 + x) * nq + i) * d;
          for (int64_t c = 0; c < d; ++c) {
            R sum = acc[i * dp + c];
            for (int64_t s = 1; s < segs; ++s) sum += acc[(s * nq + i) * dp + c];
            store_float(o + c, sum * scale);
          }
        }
      });
    }
    trim_pool(heads);
  }
};

// The entry points of one float32-compute path (16/32-bit inputs; float64 is the scalar TU's).
template <class V>
void forward_float(const Problem& p, const Plan& plan, void* out, void* lse) {
  dispatch_float<false>(p.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    Attn<V>::forward_typed(p, plan, static_cast<T*>(out), static_cast<float*>(lse));
  });
}

template <class V>
void backward_float(const Problem& p, const Plan& plan, const Strided& dout, const Strided& out, const void* lse,
                    void* dq, void* dk, void* dv) {
  dispatch_float<false>(p.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    Attn<V>::backward_typed(p, plan, dout, out, static_cast<const float*>(lse), static_cast<T*>(dq),
                            static_cast<T*>(dk), static_cast<T*>(dv));
  });
}

// The entry points of a path whose products take bf16 operands (bf16 inputs only).
template <class V, class Prod>
void forward_bf16(const Problem& p, const Plan& plan, void* out, void* lse) {
  Attn<V, Prod>::forward_typed(p, plan, static_cast<bf16_t*>(out), static_cast<float*>(lse));
}

template <class V, class Prod>
void backward_bf16(const Problem& p, const Plan& plan, const Strided& dout, const Strided& out, const void* lse,
                   void* dq, void* dk, void* dv) {
  Attn<V, Prod>::backward_typed(p, plan, dout, out, static_cast<const float*>(lse), static_cast<bf16_t*>(dq),
                             static_cast<bf16_t*>(dk), static_cast<bf16_t*>(dv));
}
