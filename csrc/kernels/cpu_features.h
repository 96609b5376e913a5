// Run-time choice of the kernels' instruction set.
//
// The CPU (cpuid) and the OS (XCR0: the register state it saves; for AMX also Linux's permission
// request for the tile data) are probed once per process. Every kernel family lists the paths it
// has, best first, and each call runs the best one that the CPU supports and the cap allows.
// The cap comes from EDGEGEN_MAX_ISA=scalar|avx2|avx2_vnni|avx512|avx512_vnni|amx (read once; an unknown
// value is an error at first use) and can be lowered in-process for tests (set_max_isa).
// The build never depends on the build machine's CPU: each path is compiled with its own target
// flags in its own translation unit.
#pragma once
#include <initializer_list>

namespace edgegen::kernels {

// Levels, ordered for the cap:
//   avx2:        AVX2 + FMA + F16C
//   avx2_vnni:   avx2 + 256-bit vpdpbusd, either AVX-VNNI (VEX: Intel client cores from Alder Lake
//                on, which lack AVX-512) or AVX-512 VNNI with VL (EVEX: every avx512_vnni CPU)
//   avx512:      AVX-512 F, BW, DQ, VL (and the OS saving the ZMM state)
//   avx512_vnni: avx512 + AVX-512 VNNI (vpdpbusd)
//   amx:         avx512_vnni + AMX-TILE + AMX-INT8 + AMX-BF16 (and the Linux tile permission)
// Each level implies the ones below it on the CPUs that have it, except that an AVX-512 CPU
// without VNNI (Skylake-SP) has avx512 but not avx2_vnni.
enum class Isa : int { Scalar = 0, Avx2 = 1, Avx2Vnni = 2, Avx512 = 3, Avx512Vnni = 4, Amx = 5 };
constexpr int kNumIsa = 6;

const char* isa_name(Isa isa);
// Parses a level's name; false for an unknown one.
bool parse_isa(const char* name, Isa* out);

// Whether this CPU and OS can run a level's instructions and the build has its paths
// (independent of the cap).
bool cpu_supports(Isa isa);
// The highest level the CPU supports.
Isa cpu_isa();

// The cap (EDGEGEN_MAX_ISA, else the highest level). set_max_isa changes it for this process.
Isa max_isa();
void set_max_isa(Isa isa);

// Whether a path may run now: supported by the CPU and at most the cap.
bool isa_allowed(Isa isa);

// The first allowed level of a family's paths (listed best first, ending with Scalar).
Isa pick_isa(std::initializer_list<Isa> paths);

// The highest allowed level (what `edgegen.cpu_isa()` reports): the highest supported level at
// or below the cap.
Isa best_isa();

// Extra feature bits the kernels may use beside their level.
bool cpu_has_avx512_bf16();
// Whether avx2_vnni comes with the VEX encoding (AVX-VNNI); otherwise it is AVX-512 VNNI + VL.
bool cpu_has_avx_vnni();

// Whether EDGEGEN_AMX=1 asks for the AMX paths that have so far run only on a software model of
// the tiles (the INT8 GEMM / convolution block, the attention's bf16 products); without it AMX CPUs
// run the AVX-512 paths. Read once; a value other than 0 or 1 throws.
bool amx_opted_in();

}  // namespace edgegen::kernels
