// The AVX-512 path for bf16 inputs with its products on AVX-512 BF16 (vdpbf16ps,
// gemm_bf16_avx512.h). Built with the AVX-512 F/BW/DQ/VL and BF16 flags (see CMakeLists.txt);
// reached only through forward_isa() / backward_isa() for bf16 inputs on CPUs with AVX-512 BF16.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "../parallel.h"
#include "attention.h"
#include "plan.h"

namespace edgegen::kernels::attention {
namespace isa_avx512_bf16 {
#include "../simd_scalar.h"
#include "../simd_avx512.h"
#include "attention_impl.h"
#include "gemm_bf16_avx512.h"
}  // namespace isa_avx512_bf16

void forward_avx512_bf16(const Problem& p, const Plan& plan, void* out, void* lse) {
  isa_avx512_bf16::forward_bf16<isa_avx512_bf16::Avx512, isa_avx512_bf16::Bf16Dot512>(p, plan, out, lse);
}

void backward_avx512_bf16(const Problem& p, const Plan& plan, const Strided& dout, const Strided& out,
                          const void* lse, void* dq, void* dk, void* dv) {
  isa_avx512_bf16::backward_bf16<isa_avx512_bf16::Avx512, isa_avx512_bf16::Bf16Dot512>(p, plan, dout, out, lse, dq,
                                                                                        dk, dv);
}

}  // namespace edgegen::kernels::attention
