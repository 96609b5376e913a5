// The KD-loss row algorithm, written once over a SIMD policy (simd_scalar.h, simd_avx2.h,
// simd_avx512.h). Included by one TU per ISA (kd_loss_scalar.cpp, kd_loss_avx2.cpp,
// kd_loss_avx512.cpp), each inside its own namespace edgegen::kernels::isa_scalar / isa_avx2 /
// isa_avx512, after the policy headers; every vector loop finishes its tail with the Scalar policy.
//
// Per row, with ds = s - max(s), dt = t - max(t):
//   loss  KL = A / (T Zt) + ln ZsT - ln Zt with ZsT = sum e^(ds/T), Zt = sum e^(dt/T),
//         A = sum e^(dt/T) (dt - ds) (one teacher: no per-element log); CE = ln Zs1 - ds_y
//         with Zs1 = sum e^ds
//   grad  scale [alpha T (p_sT - p_t) + (1 - alpha) (p_s1 - onehot(y))]
// One teacher or none (kd_row_one_teacher): a single sweep over the logits in L1-sized blocks,
// each summed against its own maximum and merged against the row's; with a gradient to write,
// the sweep keeps e^(ds_b/T) and e^(dt_b/T) in two thread-local rows (they stay in L2) and the
// gradient sweep reads those, not the logits (except e^ds at a temperature other than 1 and 2):
// each logit row leaves memory once, two exponentials per element.
// Several teachers (kd_row): max sweeps, a sum sweep, a sweep accumulating p_t (ln p_t - ds/T)
// with the mixture p_t, the gradient sweep.
// Differences to a maximum keep everything finite and accurate for logits of any size; entries
// with e^(dt/T) == 0 (teacher -inf) are dropped so 0 * inf never makes a NaN.

template <class V, int N, class Step>
static std::array<double, N> sum_sweep(int64_t n, const Step& step) {
  // Float vector accumulators within a block, double across blocks: the error of a 50k-term
  // sum stays near that of a 2k-term one, for one horizontal add per block.
  constexpr int64_t kBlock = 2048;
  std::array<double, N> total{};
  for (int64_t b0 = 0; b0 < n; b0 += kBlock) {
    const int64_t b1 = std::min(n, b0 + kBlock);
    std::array<typename V::F, N> acc;
    acc.fill(V::zero());
    std::array<typename V::R, N> tail{};
    int64_t v = b0;
    for (; v + V::W <= b1; v += V::W) step(V{}, v, acc);
    for (; v < b1; ++v) step(ScalarOf<typename V::R>{}, v, tail);
    for (int k = 0; k < N; ++k) total[k] += double(V::hsum(acc[k])) + double(tail[k]);
  }
  return total;
}

template <class V, class T>
static typename V::R max_sweep(const T* x, int64_t n) {
  using S = ScalarOf<typename V::R>;
  typename V::F m = V::set1(-INFINITY);
  typename V::R mt = -INFINITY;
  int64_t v = 0;
  for (; v + V::W <= n; v += V::W) m = V::max(m, V::load(x + v));
  for (; v < n; ++v) mt = S::max(mt, S::load(x + v));
  return S::max(V::hmax(m), mt);
}

template <class V, class T, class Step>
static void write_sweep(int64_t n, const Step& step) {
  int64_t v = 0;
  for (; v + V::W <= n; v += V::W) step(V{}, v);
  for (; v < n; ++v) step(ScalarOf<typename V::R>{}, v);
}

// One teacher or none: one sweep over the logits in blocks of kBlock entries (each block's maximum,
// then its sums against that maximum while the block is in L1), the blocks merged in double
// against the row maxima; then, with a gradient to write, one sweep over the kept exponentials.
// Each logit row is read from memory once, and the arithmetic runs while it streams in.
//   block b, shift m_b = its maximum:  zsT_b = sum e^((s - ms_b)/T), zs1_b = sum e^(s - ms_b),
//   zt_b = sum e^((t - mt_b)/T), a_b = sum e^((t - mt_b)/T) ((t - mt_b) - (s - ms_b))
//   row: ZsT = sum_b fs_b zsT_b with fs_b = e^((ms_b - Ms)/T), likewise Zs1 and Zt, and
//   A = sum_b ft_b (a_b + c_b zt_b), c_b = (mt_b - Mt) - (ms_b - Ms)
// A block whose maximum is -inf is shifted by 0 instead (its exponentials are 0, its factor 0).
template <class R>
struct KDBlock {
  R ms, mt;  // the block's maxima (-inf when the block is all -inf)
  double zsT, zs1, zt, a;
  double fsT, fs1, ftT;  // e^((ms - Ms)/T), e^(ms - Ms), e^((mt - Mt)/T), once the row maxima are known
};

template <class V, class T>
static void kd_row_one_teacher(const KDLossProblem& p, int64_t i, const T* s, const T* t0, T* g) {
  using R = typename V::R;
  using S = ScalarOf<R>;
  constexpr int64_t kBlock = 2048;  // 8 KiB of fp32 logits per model: the block stays in L1
  const int64_t n = p.vocab;
  const int64_t y = p.target[i];
  const bool use_ce = p.alpha < 1.0;
  const double T_ = p.temperature;
  const R invT = R(1.0 / T_);
  const int tmode = T_ == 1.0 ? 1 : (T_ == 2.0 ? 2 : 0);  // e^ds from e^(ds/T) at T = 1 and 2
  const int64_t nblocks = (n + kBlock - 1) / kBlock;
  thread_local std::vector<KDBlock<R>> blocks;
  thread_local std::vector<R> kept;  // e^(ds_b/T) and e^(dt_b/T), for the gradient sweep
  if (blocks.size() < size_t(nblocks)) blocks.resize(size_t(nblocks));
  R* kept_sT = nullptr;
  R* kept_t = nullptr;
  if (g) {
    if (kept.size() < size_t(2 * n)) kept.resize(size_t(2 * n));
    kept_sT = kept.data();
    kept_t = kept.data() + n;
  }
  auto shift_of = [](R m) { return m == -INFINITY ? R(0) : m; };
  constexpr int64_t kLine = 64 / int64_t(sizeof(T));
  // 16-bit logits: a degree-4 exponential (relative error under 3e-6, against bf16's 4e-3 and
  // fp16's 5e-4 rounding of the inputs and of the gradient), two FMAs cheaper.
  auto expx = [](auto P, auto x) {
    using P_ = decltype(P);
    if constexpr (sizeof(T) == 2) return P_::exp_nonpos_coarse(x);
    else return P_::exp_nonpos(x);
  };
  const bool has_next = i + 1 < p.rows;  // this thread's next row under the static schedule
  const T* s_next = has_next ? s + p.student_row_stride : nullptr;
  const T* t_next = has_next && t0 ? t0 + p.teacher_row_strides[0] : nullptr;

  R Ms = -INFINITY, Mt = -INFINITY;
  for (int64_t b = 0; b < nblocks; ++b) {
    const int64_t b0 = b * kBlock, b1 = std::min(n, b0 + kBlock);
    KDBlock<R>& blk = blocks[size_t(b)];
    blk.ms = max_sweep<V>(s + b0, b1 - b0);
    blk.mt = t0 ? max_sweep<V>(t0 + b0, b1 - b0) : R(0);
    Ms = S::max(Ms, blk.ms);
    Mt = S::max(Mt, blk.mt);
    const R ss = shift_of(blk.ms), st = shift_of(blk.mt);
    std::array<typename V::F, 4> acc;
    acc.fill(V::zero());
    std::array<R, 4> tail{};
    auto step = [&](auto P, int64_t v, auto& ac) {
      using P_ = decltype(P);
      if constexpr (P_::W > 1)
        if (v % kLine == 0) {  // the next block streams in while this one computes
          if (v + kBlock < n) {
            __builtin_prefetch(s + v + kBlock, 0, 3);
            if (t0) __builtin_prefetch(t0 + v + kBlock, 0, 3);
          } else if (!g && s_next) {  // loss only: the next row's first block (else the gradient sweep's)
            __builtin_prefetch(s_next + (v + kBlock - n), 0, 3);
            if (t_next) __builtin_prefetch(t_next + (v + kBlock - n), 0, 3);
          }
        }
      const auto ds = P_::sub(P_::load(s + v), P_::set1(ss));
      const auto esT = expx(P, P_::mul(ds, P_::set1(invT)));
      if (kept_sT) P_::store(kept_sT + v, esT);
      ac[0] = P_::add(ac[0], esT);
      if (use_ce) {
        if (tmode == 1) ac[1] = P_::add(ac[1], esT);
        else if (tmode == 2) ac[1] = P_::fmadd(esT, esT, ac[1]);
        else ac[1] = P_::add(ac[1], expx(P, ds));
      }
      if (t0) {
        const auto dt = P_::sub(P_::load(t0 + v), P_::set1(st));
        const auto et = expx(P, P_::mul(dt, P_::set1(invT)));
        if (kept_t) P_::store(kept_t + v, et);
        ac[2] = P_::add(ac[2], et);
        ac[3] = P_::fmadd_where_positive(et, P_::sub(dt, ds), ac[3]);
      }
    };
    int64_t v = b0;
    for (; v + V::W <= b1; v += V::W) step(V{}, v, acc);
    for (; v < b1; ++v) step(S{}, v, tail);
    blk.zsT = double(V::hsum(acc[0])) + double(tail[0]);
    blk.zs1 = double(V::hsum(acc[1])) + double(tail[1]);
    blk.zt = double(V::hsum(acc[2])) + double(tail[2]);
    blk.a = double(V::hsum(acc[3])) + double(tail[3]);
  }

  // The blocks against the row maxima. Factors of blocks that are all -inf are 0 (e^-inf); a
  // teacher block without mass adds nothing to A (its shift difference may be inf - inf).
  double ZsT = 0.0, Zs1 = 0.0, Zt = 0.0, A = 0.0;
  auto factor = [&](R m, R M, double scale) { return std::exp((double(m) - double(M)) * scale); };
  for (int64_t b = 0; b < nblocks; ++b) {
    KDBlock<R>& blk = blocks[size_t(b)];
    blk.fsT = factor(blk.ms, Ms, 1.0 / T_);
    blk.fs1 = use_ce ? factor(blk.ms, Ms, 1.0) : 0.0;
    blk.ftT = t0 ? factor(blk.mt, Mt, 1.0 / T_) : 0.0;
    ZsT += blk.fsT * blk.zsT;
    if (use_ce) Zs1 += blk.fs1 * blk.zs1;
    if (t0) {
      const double ft = blk.ftT;
      Zt += ft * blk.zt;
      if (blk.zt > 0.0) {
        const double c = (double(shift_of(blk.mt)) - double(Mt)) - (double(shift_of(blk.ms)) - double(Ms));
        A += ft * (blk.a + c * blk.zt);
      }
    }
  }
  const double lnZsT = std::log(ZsT);
  double loss = 0.0;
  if (t0) {
    double kl = A / (T_ * Zt) + lnZsT - std::log(Zt);
    kl = kl < 0.0 ? 0.0 : kl;  // rounding only: KL >= 0
    loss += p.alpha * T_ * T_ * kl;
  }
  if (use_ce) {
    const double ce = std::log(Zs1) - double(S::load(s + y) - Ms);
    loss += (1.0 - p.alpha) * ce;
  }
  p.row_loss[i] = loss;
  if (!g) return;

  // grad = scale [alpha T (p_sT - p_t) + (1 - alpha) (p_s1 - onehot(y))], per block
  //      = cs e^(ds_b/T) - ct e^(dt_b/T) + c1 e^(ds_b) - bce onehot(y)
  const double scale = p.grad_row_scale ? p.grad_row_scale[i] * p.grad_scale : p.grad_scale;
  const double ka = scale * p.alpha * T_;  // d(alpha T^2 KL)/ds = alpha T (p_sT - p_t)
  const double kb = scale * (1.0 - p.alpha);
  const R bce = R(kb);
  // During the last block of the gradient sweep, fetch the first block of this thread's next row
  // (under the static schedule; s_next, t_next): the one-pass sweep fetches every later block
  // itself. (Fetching the whole next row here, as the three-sweep kernel did, evicts the kept rows
  // from L2.)
  const int64_t next_from = std::max<int64_t>(0, n - kBlock);
  for (int64_t b = 0; b < nblocks; ++b) {
    const int64_t b0 = b * kBlock, b1 = std::min(n, b0 + kBlock);
    const KDBlock<R>& blk = blocks[size_t(b)];
    const R cs = R(ka * blk.fsT / ZsT);
    const R ct = t0 ? R(ka * blk.ftT / Zt) : R(0);
    // e^ds: from e^(ds_b/T) at T = 1 and 2 (times fs1_b), else computed against the row maximum.
    const R c1 = use_ce ? R(kb * (tmode == 0 ? 1.0 : blk.fs1) / Zs1) : R(0);
    auto step = [&](auto P, int64_t v) {
      using P_ = decltype(P);
      if constexpr (P_::W > 1)
        if (v % kLine == 0 && v >= next_from) {
          if (s_next) __builtin_prefetch(s_next + (v - next_from), 0, 3);
          if (t_next) __builtin_prefetch(t_next + (v - next_from), 0, 3);
        }
      const auto esT = P_::load(kept_sT + v);
      // The KL difference first, then the CE term: where the two distributions agree the
      // difference is the rounding of one product (fmsub), not a sum of larger terms' roundings.
      auto gv = t0 ? P_::fmsub(esT, P_::set1(cs), P_::mul(P_::load(kept_t + v), P_::set1(ct))) : P_::zero();
      if (use_ce) {
        const auto e1 = tmode == 1   ? esT
                        : tmode == 2 ? P_::mul(esT, esT)
                                     : expx(P, P_::sub(P_::load(s + v), P_::set1(Ms)));
        gv = P_::fmadd(e1, P_::set1(c1), gv);
        if (uint64_t(y - v) < uint64_t(P_::W)) gv = P_::fnmadd(P_::onehot(v, y), P_::set1(bce), gv);
      }
      P_::store(g + v, gv);
    };
    int64_t v = b0;
    for (; v + V::W <= b1; v += V::W) step(V{}, v);
    for (; v < b1; ++v) step(S{}, v);
  }
}

// Every row: ignored rows get 0; one teacher or none take the one-pass path above; several
// teachers: max sweeps, a sum sweep, a KL sweep over the mixture, the gradient sweep.
template <class V, class T>
static void kd_row(const KDLossProblem& p, int64_t i) {
  using R = typename V::R;
  const int64_t n = p.vocab;
  const T* s = static_cast<const T*>(p.student) + i * p.student_row_stride;
  T* g = p.grad ? static_cast<T*>(p.grad) + i * p.grad_row_stride : nullptr;
  const int64_t y = p.target[i];
  if (y == p.ignore_index) {
    p.row_loss[i] = 0.0;
    if (g) write_sweep<V, T>(n, [&](auto P, int64_t v) {
        using P_ = decltype(P);
        P_::store(g + v, P_::zero());
      });
    return;
  }
  const bool use_ce = p.alpha < 1.0;
  const int K = p.alpha > 0.0 ? p.num_teachers : 0;
  if (K <= 1) {
    const T* t0 = K == 1 ? static_cast<const T*>(p.teachers[0]) + i * p.teacher_row_strides[0] : nullptr;
    kd_row_one_teacher<V, T>(p, i, s, t0, g);
    return;
  }
  const T* t[kKDMaxTeachers];
  R mt[kKDMaxTeachers];
  for (int k = 0; k < K; ++k) {
    t[k] = static_cast<const T*>(p.teachers[k]) + i * p.teacher_row_strides[k];
    mt[k] = max_sweep<V>(t[k], n);
  }
  const R ms = max_sweep<V>(s, n);
  const double T_ = p.temperature;
  const R invT = R(1.0 / T_);
  // e^ds from e^(ds/T) for free at the two temperatures people use most.
  const int tmode = T_ == 1.0 ? 1 : (T_ == 2.0 ? 2 : 0);
  auto exp_full = [&](auto P, typename decltype(P)::F ds, typename decltype(P)::F esT) {
    using P_ = decltype(P);
    if (tmode == 1) return esT;
    if (tmode == 2) return P_::mul(esT, esT);
    return P_::exp_nonpos(ds);
  };

  auto sums = sum_sweep<V, 2 + kKDMaxTeachers>(n, [&](auto P, int64_t v, auto& acc) {
    using P_ = decltype(P);
    const auto ds = P_::sub(P_::load(s + v), P_::set1(ms));
    const auto esT = P_::exp_nonpos(P_::mul(ds, P_::set1(invT)));
    acc[0] = P_::add(acc[0], esT);
    if (use_ce) acc[1] = P_::add(acc[1], exp_full(P, ds, esT));
    for (int k = 0; k < K; ++k) {
      const auto dt = P_::sub(P_::load(t[k] + v), P_::set1(mt[k]));
      acc[2 + k] = P_::add(acc[2 + k], P_::exp_nonpos(P_::mul(dt, P_::set1(invT))));
    }
  });
  const double ZsT = sums[0], Zs1 = sums[1];
  const double lnZsT = std::log(ZsT);

  // Mixture coefficients: p_t(v) = sum_k c_k e^(dt_k/T).
  R c[kKDMaxTeachers];
  for (int k = 0; k < K; ++k) c[k] = R(p.teacher_weights[k] / sums[2 + k]);
  auto mixture = [&](auto P, int64_t v) {
    using P_ = decltype(P);
    auto pt = P_::zero();
    for (int k = 0; k < K; ++k) {
      const auto dt = P_::sub(P_::load(t[k] + v), P_::set1(mt[k]));
      pt = P_::fmadd(P_::set1(c[k]), P_::exp_nonpos(P_::mul(dt, P_::set1(invT))), pt);
    }
    return pt;
  };

  auto kls = sum_sweep<V, 2>(n, [&](auto P, int64_t v, auto& acc) {
    using P_ = decltype(P);
    const auto pt = mixture(P, v);
    const auto ds = P_::sub(P_::load(s + v), P_::set1(ms));
    const auto term = P_::sub(P_::log(pt), P_::mul(ds, P_::set1(invT)));
    acc[0] = P_::fmadd_where_positive(pt, term, acc[0]);
    acc[1] = P_::add(acc[1], pt);
  });
  double kl = kls[0] + kls[1] * lnZsT;
  kl = kl < 0.0 ? 0.0 : kl;
  double loss = p.alpha * T_ * T_ * kl;
  if (use_ce) {
    const double ce = std::log(Zs1) - double(ScalarOf<R>::load(s + y) - ms);
    loss += (1.0 - p.alpha) * ce;
  }
  p.row_loss[i] = loss;
  if (!g) return;

  const double scale = p.grad_row_scale ? p.grad_scale * p.grad_row_scale[i] : p.grad_scale;
  const R a = R(scale * p.alpha * T_);  // d(alpha T^2 KL)/ds = alpha T (p_sT - p_t)
  const R b = R(scale * (1.0 - p.alpha));
  const R invZsT = R(1.0 / ZsT);
  const R invZs1 = R(1.0 / Zs1);
  write_sweep<V, T>(n, [&](auto P, int64_t v) {
    using P_ = decltype(P);
    const auto ds = P_::sub(P_::load(s + v), P_::set1(ms));
    const auto esT = P_::exp_nonpos(P_::mul(ds, P_::set1(invT)));
    auto gv = P_::mul(P_::set1(a), P_::sub(P_::mul(esT, P_::set1(invZsT)), mixture(P, v)));
    if (use_ce) {
      const auto ps1 = P_::mul(exp_full(P, ds, esT), P_::set1(invZs1));
      gv = P_::fmadd(P_::set1(b), P_::sub(ps1, P_::onehot(v, y)), gv);
    }
    P_::store(g + v, gv);
  });
}

// The row kernels' exponential over an array, for the tests that compare it with std::exp.
template <class V>
static void exp_nonpos_array(const float* x, float* y, int64_t n, bool coarse) {
  int64_t i = 0;
  for (; i + V::W <= n; i += V::W)
    V::store(y + i, coarse ? V::exp_nonpos_coarse(V::load(x + i)) : V::exp_nonpos(V::load(x + i)));
  for (; i < n; ++i) y[i] = ScalarOf<float>::exp_nonpos(x[i]);
}

template <class V>
static void kd_loss_rows_impl(const KDLossProblem& p) {
  auto run = [&](auto policy, auto tag) {
    using P = decltype(policy);
    using T = decltype(tag);
    parallel_for(p.rows, p.num_threads, [&](int64_t i) { kd_row<P, T>(p, i); });
  };
  switch (p.dtype) {
    case DType::F32: run(V{}, float{}); break;
    case DType::BF16: run(V{}, bf16_t{}); break;
    case DType::F16: run(V{}, fp16_t{}); break;
    case DType::F64: run(ScalarOf<double>{}, double{}); break;  // exactness, not speed
  }
}
