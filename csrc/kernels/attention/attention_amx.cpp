// The AVX-512 path for bf16 inputs with its products on AMX-BF16 tiles (gemm_bf16_tiles.h). Built
// with the AVX-512 F/BW/DQ/VL, BF16 and AMX-TILE/AMX-BF16 flags (see CMakeLists.txt); reached only
// through forward_isa() / backward_isa() for bf16 inputs at the amx level with EDGEGEN_AMX=1.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "../parallel.h"
#include "attention.h"
#include "plan.h"

namespace edgegen::kernels::attention {
namespace isa_amx {
#include "../simd_scalar.h"
#include "../simd_avx512.h"
#include "attention_impl.h"
#include "gemm_bf16_avx512.h"
#include "../amx_tiles.h"
#include "gemm_bf16_tiles.h"

// The products' four tile dot products: C0 = A0.B0, C1 = A0.B1, C2 = A1.B0, C3 = A1.B1.
struct AmxBf16Tiles : AmxTileOps {
  template <int C, int A, int B>
  void dpbf16ps() {
    static_assert(C >= 0 && C < 4 && A == 4 + C / 2 && B == 6 + C % 2, "C(i,j) = A(i) . B(j) only");
    if constexpr (C == 0) _tile_dpbf16ps(0, 4, 6);
    else if constexpr (C == 1) _tile_dpbf16ps(1, 4, 7);
    else if constexpr (C == 2) _tile_dpbf16ps(2, 5, 6);
    else _tile_dpbf16ps(3, 5, 7);
  }
};
using Products = Bf16Tiles<AmxBf16Tiles, Bf16Pack512>;
}  // namespace isa_amx

void forward_amx(const Problem& p, const Plan& plan, void* out, void* lse) {
  isa_amx::forward_bf16<isa_amx::Avx512, isa_amx::Products>(p, plan, out, lse);
}

void backward_amx(const Problem& p, const Plan& plan, const Strided& dout, const Strided& out, const void* lse,
                  void* dq, void* dk, void* dv) {
  isa_amx::backward_bf16<isa_amx::Avx512, isa_amx::Products>(p, plan, dout, out, lse, dq, dk, dv);
}

}  // namespace edgegen::kernels::attention
