// A stand-alone check of the AMX paths on a CPU that has AMX (no GoogleTest or torch needed:
// scripts/amx-check.sh builds it from the kernel sources with the system compiler): the INT8 GEMM
// and direct convolution on AMX-INT8 tiles, the attention's bf16 products on AMX-BF16 tiles.
//   1. exactness: the INT8 AMX path against the scalar path's results over GEMM shapes with K, N
//      and row tails and 255 x 127 / -128 operands, and convolutions with channel tails, strides,
//      dilation and output rows past one block; the bf16 attention (forward and backward) on the
//      tiles against the same products on the software tile model and the float products, within
//      bf16 rounding;
//   2. speed: the AMX and AVX-512 paths side by side, medians of repeated calls, at 2 threads and
//      at every thread of the machine: INT8 GEMMs of the GPT-2 layers (float output with bias, as
//      the layers run), the DCGAN discriminator's convolutions and a generator phase; the
//      sliding-window attention at n = 4096 in bf16 (AMX-BF16, AVX-512 BF16 and float products).
// Exit status 0 when every result is exact, 1 when one is not, 2 when the CPU has no AMX.
// `amx_check --model` runs step 1 on the software tile model instead (any CPU; checks the check).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <cmath>
#include <cstdlib>

#include "kernels/attention/attention.h"
#include "kernels/cpu_features.h"
#include "kernels/quant/gemm.h"

namespace K = edgegen::kernels;
namespace KQ = edgegen::kernels::quant;
namespace KT = edgegen::kernels::attention;

namespace {

struct Problem {
  int64_t m, k, n, lda;
  std::vector<uint8_t> a;
  std::vector<int8_t> packed;
  std::vector<int32_t> row_sum;
  std::vector<float> scale, bias;
};

Problem make(int64_t m, int64_t k, int64_t n, int mode, std::mt19937& rng) {
  Problem p{m, k, n, KQ::packed_k(k), {}, {}, {}, {}, {}};
  std::vector<int8_t> w(size_t(n * k));
  for (auto& v : w) v = mode == 2 ? int8_t((rng() & 1) ? 127 : -128) : int8_t(int(rng() % 256) - 128);
  p.a.assign(size_t(m * p.lda), 0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t kk = 0; kk < k; ++kk) p.a[size_t(i * p.lda + kk)] = mode == 2 ? 255 : uint8_t(rng() % 256);
  p.packed.assign(size_t(KQ::packed_panels(n) * p.lda * KQ::kPanel), 0);
  p.row_sum.assign(size_t(n), 0);
  KQ::pack_weight_s8(w.data(), n, k, p.packed.data(), p.row_sum.data());
  p.scale.assign(size_t(n), 0.001f);
  p.bias.assign(size_t(n), 0.5f);
  return p;
}

bool g_model = false;  // --model: the AMX path's block on the tile model

void gemm_amx(const Problem& p, KQ::GemmOutput out, int threads) {
  if (g_model) return KQ::gemm_u8s8_amx_model(p.a.data(), p.lda, p.m, p.n, p.k, 3, p.packed.data(), p.row_sum.data(), out, threads);
  KQ::gemm_u8s8_isa(K::Isa::Amx, p.a.data(), p.lda, p.m, p.n, p.k, 3, p.packed.data(), p.row_sum.data(), out, threads);
}

bool exact(int threads) {
  std::mt19937 rng(11);
  const int64_t shapes[][3] = {{1, 1, 1},    {5, 7, 17},    {15, 60, 16},  {16, 64, 16},   {17, 124, 48},
                               {31, 192, 31}, {32, 256, 64}, {33, 130, 32}, {64, 65, 20},  {65, 200, 33},
                               {130, 68, 40}, {20, 1030, 50}, {4, 3072, 16}, {512, 768, 96}, {100, 3072, 40}};
  bool ok = true;
  for (const auto& s : shapes)
    for (int mode = 0; mode < 3; ++mode) {
      const Problem p = make(s[0], s[1], s[2], mode, rng);
      std::vector<int32_t> got(size_t(p.m * p.n), -1), want(size_t(p.m * p.n), -2);
      gemm_amx(p, {got.data(), nullptr, 0.0f, nullptr, nullptr}, threads);
      KQ::gemm_u8s8_isa(K::Isa::Scalar, p.a.data(), p.lda, p.m, p.n, p.k, 3, p.packed.data(), p.row_sum.data(),
                        {want.data(), nullptr, 0.0f, nullptr, nullptr}, threads);
      const auto bad = std::mismatch(got.begin(), got.end(), want.begin());
      if (bad.first != got.end()) {
        const int64_t at = bad.first - got.begin();
        std::printf("MISMATCH m=%ld k=%ld n=%ld mode=%d threads=%d at (%ld, %ld): amx %d, scalar %d\n", long(p.m),
                    long(p.k), long(p.n), mode, threads, long(at / p.n), long(at % p.n), *bad.first, *bad.second);
        ok = false;
      }
    }
  return ok;
}

// A convolution: batch x (h x w padded input, cp channels) with a k x k kernel at stride s and
// dilation dl, cout output channels; 7-bit activations, int8 weights, float output.
struct Conv {
  KQ::ConvGeometry g;
  int64_t cout;
  std::vector<uint8_t> in;
  std::vector<int8_t> packed;
  std::vector<int32_t> row_sum;
  std::vector<float> scale, bias;
  int64_t ostride[4];
};

Conv make_conv(int64_t batch, int64_t h, int64_t w, int64_t c, int64_t cp, int64_t k, int64_t s, int64_t dl,
               int64_t cout, std::mt19937& rng) {
  const int64_t ho = (h - dl * (k - 1) - 1) / s + 1, wo = (w - dl * (k - 1) - 1) / s + 1;
  Conv v{{batch, h, w, cp, k, k, s, s, dl, dl, ho, wo}, cout, {}, {}, {}, {}, {}, {cout * ho * wo, ho * wo, wo, 1}};
  v.in.resize(size_t(batch * h * w * cp));
  for (auto& x : v.in) x = rng() % 4 == 0 ? 127 : uint8_t(rng() % 128);
  const int64_t kp = k * k * cp;
  std::vector<int8_t> wt(size_t(cout * kp), 0);
  for (int64_t o = 0; o < cout; ++o)
    for (int64_t t = 0; t < k * k; ++t)
      for (int64_t ch = 0; ch < c; ++ch) wt[size_t((o * k * k + t) * cp + ch)] = int8_t(int(rng() % 256) - 128);
  v.packed.assign(size_t(KQ::packed_panels(cout) * kp * KQ::kPanel), 0);
  v.row_sum.assign(size_t(cout), 0);
  KQ::pack_weight_s8(wt.data(), cout, kp, v.packed.data(), v.row_sum.data());
  v.scale.assign(size_t(cout), 1.0f);  // integer results below 2^24: float output exact
  v.bias.assign(size_t(cout), 0.0f);
  return v;
}

int64_t conv_out_size(const Conv& v) { return v.g.batch * v.cout * v.g.out_h * v.g.out_w; }

void conv_run(K::Isa isa, bool model, const Conv& v, std::vector<float>& out, int threads) {
  if (model)
    return KQ::conv2d_u8s8_amx_model(v.in.data(), v.g, v.cout, 5, v.packed.data(), v.row_sum.data(), 1.0f,
                                     v.scale.data(), v.bias.data(), out.data(), v.ostride, threads);
  KQ::conv2d_u8s8_isa(isa, v.in.data(), v.g, v.cout, 5, v.packed.data(), v.row_sum.data(), 1.0f, v.scale.data(),
                      v.bias.data(), out.data(), v.ostride, threads);
}

bool conv_exact(int threads) {
  std::mt19937 rng(13);
  // batch, h, w (padded), c, cp, k, stride, dilation, cout
  const int64_t shapes[][9] = {{2, 9, 48, 5, 8, 3, 2, 1, 37},   {2, 6, 42, 64, 64, 3, 1, 1, 32},
                               {2, 5, 72, 70, 72, 3, 1, 2, 20}, {2, 7, 11, 100, 100, 4, 2, 1, 48},
                               {1, 6, 15, 3, 4, 1, 1, 1, 16},   {3, 10, 10, 128, 128, 4, 2, 1, 80}};
  bool ok = true;
  for (const auto& s : shapes) {
    const Conv v = make_conv(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], rng);
    std::vector<float> got(size_t(conv_out_size(v)), -1.0f), want(size_t(conv_out_size(v)), -2.0f);
    conv_run(K::Isa::Amx, g_model, v, got, threads);
    conv_run(K::Isa::Scalar, false, v, want, threads);
    const auto bad = std::mismatch(got.begin(), got.end(), want.begin());
    if (bad.first != got.end()) {
      std::printf("MISMATCH conv cp=%ld k=%ld s=%ld dilation=%ld cout=%ld threads=%d at %ld: amx %g, scalar %g\n",
                  long(s[4]), long(s[5]), long(s[6]), long(s[7]), long(s[8]), threads, long(bad.first - got.begin()),
                  double(*bad.first), double(*bad.second));
      ok = false;
    }
  }
  return ok;
}

// A bf16 sliding-window attention problem (B = 1) with its buffers.
struct Attn {
  KT::Problem p;
  std::vector<K::bf16_t> q, k, v, dout, out, dq, dk, dv;
  std::vector<float> lse;
};

Attn make_attn(int64_t heads, int64_t n, int64_t d, int64_t window, int64_t global, std::mt19937& rng, int threads) {
  Attn a;
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int64_t size = heads * n * d;
  for (auto* x : {&a.q, &a.k, &a.v, &a.dout}) {
    x->resize(size_t(size));
    for (auto& e : *x) e = K::to_bf16(nd(rng));
  }
  a.out.resize(size_t(size)), a.dq.resize(size_t(size)), a.dk.resize(size_t(size)), a.dv.resize(size_t(size));
  a.lse.resize(size_t(heads * n));
  KT::Problem& p = a.p;
  p.dtype = K::DType::BF16;
  p.B = 1, p.H = heads, p.nq = p.nk = n, p.d = d;
  p.pattern.window = window, p.pattern.num_global = global, p.pattern.causal = true;
  p.scale = 1.0 / std::sqrt(double(d));
  p.q = KT::Strided{a.q.data(), size, n * d, d, 1};
  p.k = KT::Strided{a.k.data(), size, n * d, d, 1};
  p.v = KT::Strided{a.v.data(), size, n * d, d, 1};
  p.num_threads = threads;
  return a;
}

// model: the Tiles products on the tile model; else a level's path (the amx level's bf16 products
// are the tiles: EDGEGEN_AMX=1 is set at the start of main).
void attn_run(Attn& a, bool model, K::Isa isa, bool backward) {
  if (model) KT::forward_amx_model(a.p, a.out.data(), a.lse.data());
  else KT::forward_isa(isa, a.p, a.out.data(), a.lse.data());
  if (!backward) return;
  const int64_t size = a.p.H * a.p.nq * a.p.d;
  const KT::Strided dout{a.dout.data(), size, a.p.nq * a.p.d, a.p.d, 1}, out{a.out.data(), size, a.p.nq * a.p.d, a.p.d, 1};
  if (model) KT::backward_amx_model(a.p, dout, out, a.lse.data(), a.dq.data(), a.dk.data(), a.dv.data());
  else KT::backward_isa(isa, a.p, dout, out, a.lse.data(), a.dq.data(), a.dk.data(), a.dv.data());
}

// The largest difference between two runs' outputs and gradients, relative to the largest value.
double attn_difference(const Attn& x, const Attn& y) {
  double diff = 0, scale = 1e-30;
  for (auto pair : {std::make_pair(&x.out, &y.out), std::make_pair(&x.dq, &y.dq), std::make_pair(&x.dk, &y.dk),
                    std::make_pair(&x.dv, &y.dv)})
    for (size_t i = 0; i < pair.first->size(); ++i) {
      const double u = K::to_float((*pair.first)[i]), w = K::to_float((*pair.second)[i]);
      diff = std::max(diff, std::fabs(u - w));
      scale = std::max(scale, std::fabs(w));
    }
  return diff / scale;
}

// The AMX-BF16 attention against the tile model and the float products: the same roundings as
// the model (bf16 P and dS, float sums) up to the order of the float sums, and bf16 rounding of
// the float products. Bound: 1% of the largest value (bf16 carries 2^-9 relative). With --model,
// the tile model against the float products (any CPU).
bool attn_close(int threads) {
  std::mt19937 rng(21);
  bool ok = true;
  for (int64_t d : {24, 64, 80}) {
    Attn hw = make_attn(2, 300, d, 70, 3, rng, threads), model = hw, fl = hw;
    for (Attn* a : {&model, &fl})  // each copy's problem reads its own inputs
      a->p.q.data = a->q.data(), a->p.k.data = a->k.data(), a->p.v.data = a->v.data();
    attn_run(model, true, K::Isa::Amx, true);
    attn_run(fl, false, K::Isa::Avx2, true);
    if (g_model) {
      const double to_float = attn_difference(model, fl);
      std::printf("attention bf16 d=%ld threads=%d: tile model vs float products %.2e (relative)\n", long(d),
                  threads, to_float);
      ok = ok && to_float < 1e-2;
      continue;
    }
    attn_run(hw, false, K::Isa::Amx, true);
    const double to_model = attn_difference(hw, model), to_float = attn_difference(hw, fl);
    std::printf("attention bf16 d=%ld threads=%d: amx vs tile model %.2e, vs float products %.2e (relative)\n",
                long(d), threads, to_model, to_float);
    ok = ok && to_model < 1e-2 && to_float < 1e-2;
  }
  return ok;
}

template <class F>
double median_of(F&& run) {
  for (int i = 0; i < 3; ++i) run();
  std::vector<double> t;
  for (int i = 0; i < 21; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    run();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

double median_ms(K::Isa isa, const Problem& p, std::vector<float>& out, int threads) {
  return median_of([&] {
    KQ::gemm_u8s8_isa(isa, p.a.data(), p.lda, p.m, p.n, p.k, 3, p.packed.data(), p.row_sum.data(),
                      {nullptr, out.data(), 0.01f, p.scale.data(), p.bias.data()}, threads);
  });
}

}  // namespace

int main(int argc, char** argv) {
  g_model = argc > 1 && std::string(argv[1]) == "--model";
  setenv("EDGEGEN_AMX", "1", 1);  // the AMX paths are what this program checks
  std::printf("CPU levels:");
  for (int i = 0; i < K::kNumIsa; ++i)
    if (K::cpu_supports(K::Isa(i))) std::printf(" %s", K::isa_name(K::Isa(i)));
  std::printf("\nAMX path built: %s\n", KQ::int8_gemm_has_path(K::Isa::Amx) ? "yes" : "no");
  if (g_model) {
    const bool ok = exact(1) && exact(2) && conv_exact(1) && conv_exact(2) && attn_close(2);
    std::printf("tile model against the scalar path: %s\n", ok ? "all exact" : "FAILED");
    return ok ? 0 : 1;
  }
  if (!K::cpu_supports(K::Isa::Amx) || !KQ::int8_gemm_has_path(K::Isa::Amx)) {
    std::printf("no AMX here: nothing to check\n");
    return 2;
  }
  const int all = int(std::max(1u, std::thread::hardware_concurrency()));
  bool ok = true;
  for (int threads : {1, 2, all}) ok = exact(threads) && conv_exact(threads) && ok;
  std::printf("INT8 exactness against the scalar path (1, 2, %d threads): %s\n", all, ok ? "all exact" : "FAILED");
  const bool amx_bf16 = KT::bf16_products(K::Isa::Amx) == KT::Bf16Products::Tiles;
  bool attn_ok = true;
  if (amx_bf16)
    for (int threads : {1, 2, all}) attn_ok = attn_close(threads) && attn_ok;
  else
    std::printf("attention: no AMX-BF16 products in this build: not checked\n");
  std::printf("attention bf16 on the tiles within 1%% of the model and of the float products: %s\n",
              amx_bf16 ? (attn_ok ? "yes" : "FAILED") : "not checked");
  if (!ok || !attn_ok) return 1;
  std::printf("%-18s %7s %9s %9s %8s %8s %7s\n", "m x k x n", "threads", "vnni ms", "amx ms", "vnni TOPS",
              "amx TOPS", "amx/vnni");
  std::mt19937 rng(12);
  const int64_t bench[][3] = {{1, 768, 2304},    {8, 768, 2304},   {64, 768, 2304}, {512, 768, 2304},
                              {64, 768, 3072},   {512, 768, 3072}, {64, 3072, 768}, {512, 3072, 768},
                              {2048, 2048, 2048}};
  for (int threads : {2, all}) {
    for (const auto& s : bench) {
      const Problem p = make(s[0], s[1], s[2], 1, rng);
      std::vector<float> out(size_t(p.m * p.n));
      const double v = median_ms(K::Isa::Avx512Vnni, p, out, threads);
      const double x = median_ms(K::Isa::Amx, p, out, threads);
      const double ops = 2.0 * double(p.m * p.k * p.n);
      std::printf("%5ldx%5ldx%5ld %7d %9.3f %9.3f %8.3f %8.3f %6.2fx\n", long(p.m), long(p.k), long(p.n), threads, v, x,
                  ops / v / 1e9, ops / x / 1e9, v / x);
    }
  }
  // Batch 64: the DCGAN discriminator's 4x4 stride-2 convolutions (64x64 images; padded inputs)
  // and a 2x2 phase of a generator's stride-2 transposed convolution.
  std::printf("%-30s %7s %9s %9s %7s\n", "conv batch 64", "threads", "vnni ms", "amx ms", "amx/vnni");
  const int64_t convs[][6] = {{66, 66, 3, 4, 4, 2},  {34, 34, 64, 64, 4, 2},    {18, 18, 128, 128, 4, 2},
                              {10, 10, 256, 256, 4, 2}, {17, 17, 256, 256, 2, 1}};
  const int64_t couts[] = {64, 128, 256, 512, 128};
  for (int threads : {2, all}) {
    for (size_t c = 0; c < sizeof(convs) / sizeof(convs[0]); ++c) {
      const auto& s = convs[c];
      const Conv v = make_conv(64, s[0], s[1], s[2], s[3], s[4], s[5], 1, couts[c], rng);
      std::vector<float> out(size_t(conv_out_size(v)));
      const double t_v = median_of([&] { conv_run(K::Isa::Avx512Vnni, false, v, out, threads); });
      const double t_x = median_of([&] { conv_run(K::Isa::Amx, false, v, out, threads); });
      char name[64];
      std::snprintf(name, sizeof(name), "%ldx%ldx%ld k%ld s%ld -> %ld", long(s[0]), long(s[1]), long(s[2]),
                    long(s[4]), long(s[5]), long(couts[c]));
      std::printf("%-30s %7d %9.3f %9.3f %6.2fx\n", name, threads, t_v, t_x, t_v / t_x);
    }
  }
  if (!amx_bf16) return 0;
  // Sliding-window attention, bf16, B = 1, H = 12, n = 4096, d = 64, window 256 + 4 global tokens.
  std::printf("%-22s %7s %12s %12s %12s %8s %8s\n", "attention bf16 n=4096", "threads", "float ms", "avx512bf16",
              "amx ms", "amx/flt", "amx/dot");
  for (int threads : {2, all}) {
    for (bool backward : {false, true}) {
      Attn a = make_attn(12, 4096, 64, 256, 4, rng, threads);
      const double t_f = median_of([&] { attn_run(a, false, K::Isa::Avx2, backward); });
      const double t_d = median_of([&] { attn_run(a, false, K::Isa::Avx512Vnni, backward); });
      const double t_x = median_of([&] { attn_run(a, false, K::Isa::Amx, backward); });
      std::printf("%-22s %7d %12.2f %12.2f %12.2f %7.2fx %7.2fx\n", backward ? "fwd+bwd" : "fwd", threads, t_f, t_d,
                  t_x, t_f / t_x, t_d / t_x);
    }
  }
  return 0;
}
