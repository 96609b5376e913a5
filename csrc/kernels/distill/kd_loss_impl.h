// The KD-loss row algorithm, written once over a SIMD policy (simd_scalar.h, simd_avx2.h,
// simd_avx512.h). Included by one TU per ISA (kd_loss_scalar.cpp, kd_loss_avx2.cpp,
// kd_loss_avx512.cpp), each inside its own namespace edgegen::kernels::isa_scalar / isa_avx2 /
// isa_avx512, after the policy headers; every vector loop finishes its tail with the Scalar policy.
//
// Per row, with ds = s - max(s), dt = t - max(t):
//   pass 1  max(s), max(t_k)
//   pass 2  ZsT = sum e^(ds/T), Zs1 = sum e^ds, Zt = sum e^(dt/T), A = sum e^(dt/T) (dt - ds)
//           one teacher: KL = A / (T Zt) + ln ZsT - ln Zt   (no per-element log)
//           several: a further sweep accumulates p_t (ln p_t - ds/T) with the mixture p_t
//   pass 3  grad = scale [alpha T (p_sT - p_t) + (1 - alpha) (p_s1 - onehot(y))]
// With one teacher (or none) and a gradient to write, pass 2 keeps e^(ds/T) and e^(dt/T) in two
// thread-local rows (they stay in L2), so pass 3 computes no exponential and reads neither logit
// row (except e^ds at a temperature other than 1 and 2): two exponentials per element, not four,
// and the same values bit for bit.
// Differences to the row maximum keep everything finite and accurate for logits of any size;
// entries with e^(dt/T) == 0 (teacher -inf) are dropped so 0 * inf never makes a NaN.

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
  const bool use_kl = p.alpha > 0.0;
  const bool use_ce = p.alpha < 1.0;
  const int K = use_kl ? p.num_teachers : 0;
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
    return P_::exp(ds);
  };

  double ZsT, Zs1 = 1.0, Zt0 = 1.0, A = 0.0;
  double Zt[kKDMaxTeachers];
  // During this row's last sweep, fetch the next one (this thread's next row under the static
  // schedule) towards the cache: its max sweep is the only one that would meet DRAM. Earlier
  // would evict the lines the gradient sweep still reads.
  const bool has_next = i + 1 < p.rows;
  const T* s_next = has_next ? s + p.student_row_stride : nullptr;
  const T* t_next = has_next && K >= 1 ? t[0] + p.teacher_row_strides[0] : nullptr;
  constexpr int64_t kLine = 64 / int64_t(sizeof(T));
  auto prefetch_next = [&](int64_t v) {
    if (v % kLine != 0) return;
    if (s_next) __builtin_prefetch(s_next + v, 0, 1);
    if (t_next) __builtin_prefetch(t_next + v, 0, 1);
  };
  // The exponentials pass 2 keeps for pass 3 (one teacher or none, a gradient to write), in a
  // per-thread buffer. (Keeping e^(ds/T) in the fp32 gradient row instead was measured: no
  // faster, and it would tie the buffer's correctness to the gradient not aliasing the logits.)
  thread_local std::vector<R> kept;
  R* kept_sT = nullptr;
  R* kept_t = nullptr;
  if (g && K <= 1) {
    if (kept.size() < size_t(2 * n)) kept.resize(size_t(2 * n));
    kept_sT = kept.data();
    kept_t = kept.data() + n;
  }
  if (K <= 1) {
    const T* t0 = K == 1 ? t[0] : nullptr;
    const R mt0 = K == 1 ? mt[0] : R(0);
    auto sums = sum_sweep<V, 4>(n, [&](auto P, int64_t v, auto& acc) {
      using P_ = decltype(P);
      if constexpr (P_::W > 1)
        if (!g) prefetch_next(v);
      const auto ds = P_::sub(P_::load(s + v), P_::set1(ms));
      const auto esT = P_::exp(P_::mul(ds, P_::set1(invT)));
      if (kept_sT) P_::store(kept_sT + v, esT);
      acc[0] = P_::add(acc[0], esT);
      if (use_ce) acc[1] = P_::add(acc[1], exp_full(P, ds, esT));
      if (t0) {
        const auto dt = P_::sub(P_::load(t0 + v), P_::set1(mt0));
        const auto et = P_::exp(P_::mul(dt, P_::set1(invT)));
        if (kept_t) P_::store(kept_t + v, et);
        acc[2] = P_::add(acc[2], et);
        acc[3] = P_::add(acc[3], P_::where_positive(et, P_::mul(et, P_::sub(dt, ds))));
      }
    });
    ZsT = sums[0], Zs1 = sums[1], Zt0 = sums[2], A = sums[3];
  } else {
    auto sums = sum_sweep<V, 2 + kKDMaxTeachers>(n, [&](auto P, int64_t v, auto& acc) {
      using P_ = decltype(P);
      const auto ds = P_::sub(P_::load(s + v), P_::set1(ms));
      const auto esT = P_::exp(P_::mul(ds, P_::set1(invT)));
      acc[0] = P_::add(acc[0], esT);
      if (use_ce) acc[1] = P_::add(acc[1], exp_full(P, ds, esT));
      for (int k = 0; k < K; ++k) {
        const auto dt = P_::sub(P_::load(t[k] + v), P_::set1(mt[k]));
        acc[2 + k] = P_::add(acc[2 + k], P_::exp(P_::mul(dt, P_::set1(invT))));
      }
    });
    ZsT = sums[0], Zs1 = sums[1];
    for (int k = 0; k < K; ++k) Zt[k] = sums[2 + k];
  }
  const double lnZsT = std::log(ZsT);

  // Mixture coefficients: p_t(v) = sum_k c_k e^(dt_k/T).
  R c[kKDMaxTeachers];
  for (int k = 0; k < K; ++k) c[k] = R(p.teacher_weights[k] / Zt[k]);
  auto mixture = [&](auto P, int64_t v) {
    using P_ = decltype(P);
    auto pt = P_::zero();
    for (int k = 0; k < K; ++k) {
      const auto dt = P_::sub(P_::load(t[k] + v), P_::set1(mt[k]));
      pt = P_::fmadd(P_::set1(c[k]), P_::exp(P_::mul(dt, P_::set1(invT))), pt);
    }
    return pt;
  };

  double loss = 0.0;
  if (K == 1) {
    double kl = A / (T_ * Zt0) + lnZsT - std::log(Zt0);
    kl = kl < 0.0 ? 0.0 : kl;  // rounding only: KL >= 0
    loss += p.alpha * T_ * T_ * kl;
  } else if (K > 1) {
    auto kls = sum_sweep<V, 2>(n, [&](auto P, int64_t v, auto& acc) {
      using P_ = decltype(P);
      const auto pt = mixture(P, v);
      const auto ds = P_::sub(P_::load(s + v), P_::set1(ms));
      const auto term = P_::sub(P_::log(pt), P_::mul(ds, P_::set1(invT)));
      acc[0] = P_::add(acc[0], P_::where_positive(pt, P_::mul(pt, term)));
      acc[1] = P_::add(acc[1], pt);
    });
    double kl = kls[0] + kls[1] * lnZsT;
    kl = kl < 0.0 ? 0.0 : kl;
    loss += p.alpha * T_ * T_ * kl;
  }
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
  const R invZt0 = R(1.0 / Zt0);
  const T* t0 = K == 1 ? t[0] : nullptr;
  const R mt0 = K == 1 ? mt[0] : R(0);
  // ds only where something below still needs it (no kept row, or e^ds at another temperature).
  const bool need_ds = !kept_sT || (use_ce && tmode == 0);
  write_sweep<V, T>(n, [&](auto P, int64_t v) {
    using P_ = decltype(P);
    if constexpr (P_::W > 1) prefetch_next(v);
    const auto ds = need_ds ? P_::sub(P_::load(s + v), P_::set1(ms)) : P_::zero();
    const auto esT = kept_sT ? P_::load(kept_sT + v) : P_::exp(P_::mul(ds, P_::set1(invT)));
    auto gv = P_::zero();
    if (K > 0) {
      typename P_::F pt;
      if (t0) {
        const auto et = kept_t ? P_::load(kept_t + v)
                               : P_::exp(P_::mul(P_::sub(P_::load(t0 + v), P_::set1(mt0)), P_::set1(invT)));
        pt = P_::mul(et, P_::set1(invZt0));
      } else {
        pt = mixture(P, v);
      }
      gv = P_::mul(P_::set1(a), P_::sub(P_::mul(esT, P_::set1(invZsT)), pt));
    }
    if (use_ce) {
      const auto ps1 = P_::mul(exp_full(P, ds, esT), P_::set1(invZs1));
      gv = P_::fmadd(P_::set1(b), P_::sub(ps1, P_::onehot(v, y)), gv);
    }
    P_::store(g + v, gv);
  });
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
