#pragma once

namespace edgegen::kernels {

enum class Isa : int { Scalar = 0, Avx2 = 1 };

// The widest instruction set this build has a kernel for and this CPU runs.
// EDGEGEN_FORCE_ISA=scalar in the environment forces the portable path (for tests).
Isa best_isa();
const char* isa_name(Isa isa);

}  // namespace edgegen::kernels
