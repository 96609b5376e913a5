#include "cpu_features.h"

#include <cstdlib>
#include <cstring>

namespace edgegen::kernels {

static Isa detect() {
  const char* force = std::getenv("EDGEGEN_FORCE_ISA");
  if (force && std::strcmp(force, "scalar") == 0) return Isa::Scalar;
#if defined(EDGEGEN_HAVE_AVX2) && (defined(__x86_64__) || defined(__i386__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c"))
    return Isa::Avx2;
#endif
  return Isa::Scalar;
}

Isa best_isa() {
  static const Isa isa = detect();
  return isa;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx2: return "avx2";
    default: return "scalar";
  }
}

}  // namespace edgegen::kernels
