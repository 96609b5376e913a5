// A stand-alone check of the INT8 GEMM's AMX path on a CPU that has AMX (no GoogleTest or torch
// needed: scripts/amx-check.sh builds it from the kernel sources with the system compiler).
//   1. exactness: the AMX path against the scalar path's int32 results over shapes with K, N and
//      row tails and 255 x 127 / -128 operands;
//   2. speed: the AMX and AVX-512 VNNI paths side by side (float output with bias, as the layers
//      run), medians of repeated calls, at 2 threads and at every thread of the machine.
// Exit status 0 when every result is exact, 1 when one is not, 2 when the CPU has no AMX.
// `amx_check --model` runs step 1 on the software tile model instead (any CPU; checks the check).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/quant/gemm.h"

namespace K = edgegen::kernels;
namespace KQ = edgegen::kernels::quant;

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

double median_ms(K::Isa isa, const Problem& p, std::vector<float>& out, int threads) {
  auto run = [&] {
    KQ::gemm_u8s8_isa(isa, p.a.data(), p.lda, p.m, p.n, p.k, 3, p.packed.data(), p.row_sum.data(),
                      {nullptr, out.data(), 0.01f, p.scale.data(), p.bias.data()}, threads);
  };
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

}  // namespace

int main(int argc, char** argv) {
  g_model = argc > 1 && std::string(argv[1]) == "--model";
  std::printf("CPU levels:");
  for (int i = 0; i < K::kNumIsa; ++i)
    if (K::cpu_supports(K::Isa(i))) std::printf(" %s", K::isa_name(K::Isa(i)));
  std::printf("\nAMX path built: %s\n", KQ::int8_gemm_has_path(K::Isa::Amx) ? "yes" : "no");
  if (g_model) {
    const bool ok = exact(1) && exact(2);
    std::printf("tile model against the scalar path: %s\n", ok ? "all exact" : "FAILED");
    return ok ? 0 : 1;
  }
  if (!K::cpu_supports(K::Isa::Amx) || !KQ::int8_gemm_has_path(K::Isa::Amx)) {
    std::printf("no AMX here: nothing to check\n");
    return 2;
  }
  const int all = int(std::max(1u, std::thread::hardware_concurrency()));
  bool ok = true;
  for (int threads : {1, 2, all}) ok = exact(threads) && ok;
  std::printf("exactness against the scalar path (1, 2, %d threads): %s\n", all, ok ? "all exact" : "FAILED");
  if (!ok) return 1;
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
  return 0;
}
