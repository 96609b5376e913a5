// Sliding-window + global-token attention (and block-sparse layouts), forward and backward,
// flash style: tiles of queries and keys, online softmax, the log-sum-exp kept for backward,
// never an [n, n] matrix. Torch-free; the ATen glue is csrc/cpu/attention_cpu.cpp.
//
// Positions. Key j sits at position j (0 <= j < nk); query i at position p = q_offset + i (a
// decode step after a cache of q_offset keys has q_offset = nk - nq).
// Pattern (window mode), w = window, g = num_global:
//   causal:     j <= p  and  (p - j < w  or  j < g)
//   non-causal: |p - j| < w  or  j < g  or  p < g        (global queries see every key)
// Layout mode (block_size > 0): key j is visible from query position p when the block pair
// (p / block_size, j / block_size) is listed, and, if causal, j <= p. window and num_global are
// not used.
// A query that sees no key gets output 0, log-sum-exp -inf and zero gradients.
#pragma once
#include <cstdint>

#include "../dtypes.h"

#include "kernels/cpu_features.h"

namespace edgegen::kernels::attention {

// A [B, H, n, d] tensor given by its data pointer and element strides.
struct Strided {
  const void* data = nullptr;
  int64_t sb = 0, sh = 0, sn = 0, sd = 0;
};

struct Pattern {
  int64_t window = 1;
  int64_t num_global = 0;
  bool causal = true;
  int64_t q_offset = 0;
  // Layout mode when block_size > 0: for query block qb (qblock_base <= qb < num_qblocks), the
  // allowed key blocks are layout_idx[layout_ptr[qb - qblock_base] .. layout_ptr[qb - qblock_base
  // + 1]) (sorted, distinct); num_qblocks - qblock_base + 1 entries in layout_ptr.
  int64_t block_size = 0;
  const int64_t* layout_ptr = nullptr;
  const int64_t* layout_idx = nullptr;
  int64_t num_qblocks = 0;
  int64_t qblock_base = 0;
};

struct Problem {
  DType dtype = DType::F32;  // of q, k, v, out, dout and the gradients
  int64_t B = 0, H = 0, nq = 0, nk = 0, d = 0;
  Pattern pattern;
  double scale = 1.0;
  Strided q, k, v;
  int num_threads = 1;
};

// out: contiguous [B, H, nq, d] in dtype; lse: contiguous [B, H, nq], double for F64 else float.
void forward(const Problem& p, void* out, void* lse);
// The path forward/backward take now for 32/16-bit inputs (float64 always runs the scalar path).
Isa attention_isa();
// How a level's path multiplies for bf16 inputs: Float, operands widened to float (as for the other
// dtypes; every path); Dot, both operands rounded to bf16 and multiplied by AVX-512 BF16's
// vdpbf16ps with float sums (the avx512 path on CPUs with AVX-512 BF16); Tiles, the same rounding
// on AMX-BF16 tiles (tdpbf16ps; the amx level, only with EDGEGEN_AMX=1 until it has run on an AMX
// CPU). For bf16 inputs only the softmax probabilities and the score gradients round: the inputs
// are bf16 already.
enum class Bf16Products : int { Float = 0, Dot = 1, Tiles = 2 };
Bf16Products bf16_products(Isa isa);
// The products a call takes: bf16_products(isa) for bf16 inputs with at least
// kBf16ProductsMinRows queries; float products otherwise (decode steps: packing the visited key
// tiles in bf16 costs more than it saves for a few query rows).
constexpr int64_t kBf16ProductsMinRows = 16;
Bf16Products bf16_products_for(const Problem& p, Isa isa);
const char* bf16_products_name(Bf16Products products);
// bf16 inputs through the Tiles products with the tiles emulated in plain C++ (any CPU): tests
// the AMX products' blocking, padding and operand layout where no AMX CPU is at hand.
void forward_amx_model(const Problem& p, void* out, void* lse);
void backward_amx_model(const Problem& p, const Strided& dout, const Strided& out, const void* lse, void* dq,
                        void* dk, void* dv);
// Whether the build has a path of its own at a level, and forward/backward on a given level's path
// (tests and benchmarks: the caller checks cpu_supports first).
bool attention_has_path(Isa isa);
void forward_isa(Isa isa, const Problem& p, void* out, void* lse);
void backward_isa(Isa isa, const Problem& p, const Strided& dout, const Strided& out, const void* lse, void* dq,
                  void* dk, void* dv);

// dout, out: [B, H, nq, d] (strided); lse as written by forward. dq: contiguous [B, H, nq, d],
// dk, dv: contiguous [B, H, nk, d], all in dtype.
void backward(const Problem& p, const Strided& dout, const Strided& out, const void* lse, void* dq, void* dk,
              void* dv);

// The tiling a call uses, for tests and the cost model: query tiles and key tiles (starts, with
// the end appended), and for every query tile the key tiles it visits.
struct PlanSummary {
  int64_t query_tiles = 0, key_tiles = 0, tile_pairs = 0, partial_pairs = 0;
  int64_t scored_entries = 0;  // sum over visited tile pairs of (query tile rows x key tile width)
};
PlanSummary plan_summary(const Problem& p);

// Tile sizes (rows of queries, keys per tile).
constexpr int64_t kQueryTile = 64;
constexpr int64_t kKeyTile = 64;

}  // namespace edgegen::kernels::attention
