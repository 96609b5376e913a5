#include "cpu_features.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

// The vector levels are reported only by builds that have the vector paths (EDGEGEN_HAVE_AVX2:
// x86 builds), so a family's pick_isa never needs its own build guard.
#if (defined(__x86_64__) || defined(__i386__)) && defined(EDGEGEN_HAVE_AVX2)
#include <cpuid.h>
#define EDGEGEN_X86_CPU 1
#endif
#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace edgegen::kernels {

namespace {

struct Features {
  bool level[kNumIsa] = {true, false, false, false, false, false};
  bool avx512_bf16 = false;
  bool avx_vnni = false;
};

#if defined(EDGEGEN_X86_CPU)
uint64_t xgetbv0() {
  uint32_t eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (uint64_t(edx) << 32) | eax;
}

// Linux keeps the AMX tile data (8 KB of state) off until a process asks for it.
bool request_amx_permission() {
#if defined(__linux__) && defined(__x86_64__)
  constexpr long kArchReqXcompPerm = 0x1023;
  constexpr long kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}
#endif

Features probe() {
  Features f;
#if defined(EDGEGEN_X86_CPU)
  unsigned a, b, c, d;
  if (!__get_cpuid(0, &a, &b, &c, &d) || a < 7) return f;
  __get_cpuid(1, &a, &b, &c, &d);
  const bool fma = c & (1u << 12), osxsave = c & (1u << 27), f16c = c & (1u << 29);
  if (!osxsave) return f;
  const uint64_t xcr0 = xgetbv0();
  const bool os_avx = (xcr0 & 0x6) == 0x6;              // XMM + YMM state
  const bool os_zmm = (xcr0 & 0xe6) == 0xe6;            // + opmask, ZMM_Hi256, Hi16_ZMM
  const bool os_amx = (xcr0 & 0x60000) == 0x60000;      // XTILECFG + XTILEDATA
  __cpuid_count(7, 0, a, b, c, d);
  const bool avx2 = b & (1u << 5);
  const bool avx512 = (b & (1u << 16)) && (b & (1u << 17)) && (b & (1u << 30)) && (b & (1u << 31));  // F DQ BW VL
  const bool vnni = c & (1u << 11);
  const bool amx = (d & (1u << 22)) && (d & (1u << 24)) && (d & (1u << 25));  // BF16 TILE INT8
  unsigned a1 = 0, b1 = 0, c1 = 0, d1 = 0;
  if (a >= 1) __cpuid_count(7, 1, a1, b1, c1, d1);  // subleaf 0's EAX: the highest subleaf
  const int l_avx2 = int(Isa::Avx2), l_avx2_vnni = int(Isa::Avx2Vnni), l_avx512 = int(Isa::Avx512),
            l_avx512_vnni = int(Isa::Avx512Vnni), l_amx = int(Isa::Amx);
  f.level[l_avx2] = os_avx && avx2 && fma && f16c;
  f.level[l_avx512] = f.level[l_avx2] && os_zmm && avx512;
  f.level[l_avx512_vnni] = f.level[l_avx512] && vnni;
  f.level[l_amx] = f.level[l_avx512_vnni] && amx && os_amx && request_amx_permission();
#if defined(EDGEGEN_HAVE_AVX_VNNI)
  f.avx_vnni = f.level[l_avx2] && (a1 & (1u << 4));
#else
  f.avx_vnni = false;  // a compiler without -mavxvnni: no VEX form built
#endif
  f.level[l_avx2_vnni] = f.avx_vnni || f.level[l_avx512_vnni];
  f.avx512_bf16 = f.level[l_avx512] && (a1 & (1u << 5));
#endif
  return f;
}

const Features& features() {
  static const Features f = probe();
  return f;
}

Isa highest_supported() {
  for (int i = kNumIsa - 1; i > 0; --i)
    if (features().level[i]) return Isa(i);
  return Isa::Scalar;
}

int initial_cap() {
  const char* env = std::getenv("EDGEGEN_MAX_ISA");
  if (!env || !*env) return kNumIsa - 1;
  Isa isa;
  if (!parse_isa(env, &isa)) {
    throw std::invalid_argument(std::string("EDGEGEN_MAX_ISA: expected scalar, avx2, avx2_vnni, avx512, avx512_vnni or amx, "
                                            "got '") + env + "'");
  }
  return int(isa);
}

// -1 until first read: EDGEGEN_MAX_ISA is read then (a bad value throws on every read until
// set_max_isa stores a valid cap, so the process can still recover in-process).
std::atomic<int> g_cap{-1};

int cap_value() {
  int c = g_cap.load(std::memory_order_relaxed);
  if (c < 0) {
    c = initial_cap();
    int expected = -1;
    if (!g_cap.compare_exchange_strong(expected, c, std::memory_order_relaxed)) c = expected;
  }
  return c;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx2: return "avx2";
    case Isa::Avx2Vnni: return "avx2_vnni";
    case Isa::Avx512: return "avx512";
    case Isa::Avx512Vnni: return "avx512_vnni";
    case Isa::Amx: return "amx";
    default: return "scalar";
  }
}

bool parse_isa(const char* name, Isa* out) {
  for (int i = 0; i < kNumIsa; ++i) {
    if (std::strcmp(name, isa_name(Isa(i))) == 0) {
      *out = Isa(i);
      return true;
    }
  }
  return false;
}

bool cpu_supports(Isa isa) { return features().level[int(isa)]; }
Isa cpu_isa() { return highest_supported(); }
Isa max_isa() { return Isa(cap_value()); }
void set_max_isa(Isa isa) { g_cap.store(int(isa), std::memory_order_relaxed); }
bool isa_allowed(Isa isa) { return cpu_supports(isa) && int(isa) <= cap_value(); }

Isa pick_isa(std::initializer_list<Isa> paths) {
  for (Isa isa : paths)
    if (isa_allowed(isa)) return isa;
  return Isa::Scalar;
}

Isa best_isa() {
  for (int i = cap_value(); i > 0; --i)
    if (features().level[i]) return Isa(i);
  return Isa::Scalar;
}

bool cpu_has_avx512_bf16() { return features().avx512_bf16; }
bool cpu_has_avx_vnni() { return features().avx_vnni; }

// EDGEGEN_AMX: unset, empty or 0 (off), 1 (on); anything else is an error at first use, as for
// EDGEGEN_MAX_ISA (a misspelt switch must not silently keep the paths off).
bool amx_opted_in() {
  static const bool on = [] {
    if (std::getenv("EDGEGEN_AMX_GEMM"))  // the switch's earlier name: refused, not silently ignored
      throw std::invalid_argument("EDGEGEN_AMX_GEMM: no longer read; set EDGEGEN_AMX=0 or 1 instead");
    const char* env = std::getenv("EDGEGEN_AMX");
    if (!env || !*env || std::strcmp(env, "0") == 0) return false;
    if (std::strcmp(env, "1") == 0) return true;
    throw std::invalid_argument(std::string("EDGEGEN_AMX: expected 0 or 1, got '") + env + "'");
  }();
  return on;
}

}  // namespace edgegen::kernels
