// The CUDA kernels' device code (kernels/cuda) run on the host emulator (kernels/cuda/emulator), on
// any machine: first the emulator itself against the PTX ISA's documented fragment layouts and its
// fault checks, then the sliding-window attention against the dense double reference and the KD
// loss against the double formula (kd_reference.h). What this cannot show — speed, the real tensor cores'
// rounding, memory-model effects between blocks — stays for scripts/gpu-check.sh on a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "attention_reference.h"
#include "kd_reference.h"
#include "kernels/cuda/attention_cuda.h"
#include "kernels/cuda/kd_loss_cuda.h"
#include "kernels/distill/kd_loss.h"
#include "kernels/dtypes.h"
// Last: with the emulator it defines CUDA's device-code spellings (threadIdx, __shared__, ...) as macros.
#include "kernels/cuda/launch.h"
#include "kernels/cuda/memory_ops.h"

namespace K = edgegen::kernels;
namespace KC = edgegen::kernels::cuda;
namespace E = edgegen_cuda_emulator;
using attention_reference::Case;
using attention_reference::Ref;

namespace {

// Every test starts from the default device, the forward schedule and no fault.
class CudaEmulated : public ::testing::Test {
 protected:
  void SetUp() override { E::reset(); }
  void TearDown() override { E::reset(); }
};

// ------------------------------------------------------------------------------ the emulator

uint16_t bf16_bits(float x) { return K::to_bf16(x).bits; }
float bf16_value(float x) { return K::to_float(K::to_bf16(x)); }

// mma.m16n8k16 fragments as the PTX ISA describes them (g = lane >> 2, t = lane % 4): A's
// elements a0..a7 (two per register, low half first) at row g for a0, a1, a4, a5 and g + 8 for
// the others, column 2 t + (i & 1) + 8 (i >= 4); B's b0..b3 at row 2 t + (i & 1) + 8 (i >= 2),
// column g; C's c0..c3 at row g + 8 (i >= 2), column 2 t + (i & 1).
void mma_kernel(const float* A, const float* B, float* C) {
  const int lane = int(threadIdx.x), g = lane >> 2, t = lane % 4;
  uint16_t a[8], b[4];
  for (int i = 0; i < 8; ++i) {
    const int row = (i < 2 || (i >= 4 && i < 6)) ? g : g + 8, col = 2 * t + (i & 1) + 8 * (i >= 4);
    a[i] = bf16_bits(A[row * 16 + col]);
  }
  for (int i = 0; i < 4; ++i) b[i] = bf16_bits(B[(2 * t + (i & 1) + 8 * (i >= 2)) * 8 + g]);
  uint32_t ar[4], br[2];
  for (int r = 0; r < 4; ++r) ar[r] = uint32_t(a[2 * r]) | uint32_t(a[2 * r + 1]) << 16;
  for (int r = 0; r < 2; ++r) br[r] = uint32_t(b[2 * r]) | uint32_t(b[2 * r + 1]) << 16;
  float c[4];
  for (int i = 0; i < 4; ++i) c[i] = C[(g + 8 * (i >= 2)) * 8 + 2 * t + (i & 1)];
  E::mma_m16n8k16(c, ar, br[0], br[1], true);
  for (int i = 0; i < 4; ++i) C[(g + 8 * (i >= 2)) * 8 + 2 * t + (i & 1)] = c[i];
}

TEST_F(CudaEmulated, MmaFollowsThePtxFragmentLayout) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  std::vector<float> A(16 * 16), B(16 * 8), C(16 * 8);
  for (auto& x : A) x = bf16_value(u(rng));
  for (auto& x : B) x = bf16_value(u(rng));
  for (auto& x : C) x = u(rng);
  const std::vector<float> C0 = C;
  ASSERT_EQ(E::launch(mma_kernel, dim3(1), dim3(32), 0, nullptr, A.data(), B.data(), C.data()), cudaSuccess)
      << E::last_fault();
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 8; ++n) {
      double want = C0[r * 8 + n];
      for (int k = 0; k < 16; ++k) want += double(A[r * 16 + k]) * B[k * 8 + n];
      EXPECT_NEAR(C[r * 8 + n], want, 1e-5) << "row " << r << " column " << n;
    }
}

// ldmatrix .x4 .trans: lanes 8 j .. 8 j + 7 give the rows of matrix j; lane l receives, of each
// matrix, the elements (2 (l % 4), l / 4) and (2 (l % 4) + 1, l / 4), the first in the low half.
void ldmatrix_kernel(uint32_t* out) {
  auto* s = reinterpret_cast<uint16_t*>(E::dynamic_shared());
  const unsigned lane = threadIdx.x;
  for (int e = 0; e < 8; ++e) s[lane * 8 + e] = uint16_t(1000 * (lane / 8) + 10 * (lane % 8) + e);
  __syncthreads();
  uint32_t r[4];
  E::ldmatrix_x4_trans(r, s + lane * 8);  // row lane % 8 of matrix lane / 8 (rows stored in lane order)
  for (int j = 0; j < 4; ++j) out[lane * 4 + j] = r[j];
}

TEST_F(CudaEmulated, LdmatrixTransposesEachMatrix) {
  std::vector<uint32_t> out(32 * 4);
  ASSERT_EQ(E::launch(ldmatrix_kernel, dim3(1), dim3(32), 32 * 16, nullptr, out.data()), cudaSuccess)
      << E::last_fault();
  for (unsigned l = 0; l < 32; ++l)
    for (unsigned j = 0; j < 4; ++j) {
      const unsigned row = 2 * (l % 4), col = l / 4;
      const uint32_t want = (1000 * j + 10 * row + col) | (1000 * j + 10 * (row + 1) + col) << 16;
      EXPECT_EQ(out[l * 4 + j], want) << "lane " << l << " matrix " << j;
    }
}

void shuffle_sum_kernel(float* out) {
  float x = float(threadIdx.x);
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  out[threadIdx.x] = x;
}

TEST_F(CudaEmulated, ShufflesReduceEachWarp) {
  std::vector<float> out(64);
  ASSERT_EQ(E::launch(shuffle_sum_kernel, dim3(1), dim3(64), 0, nullptr, out.data()), cudaSuccess);
  for (int i = 0; i < 64; ++i) EXPECT_EQ(out[i], i < 32 ? 496.0f : 1520.0f) << i;
}

// Each thread writes its slot of shared memory, then reads its neighbour's: correct with the
// barrier, and without it the neighbour has not run yet (under either schedule) and the read
// finds the 0xff poison (NaN).
void neighbour_kernel(float* out, bool barrier) {
  EDGEGEN_DYNAMIC_SHARED(raw);
  float* s = reinterpret_cast<float*>(raw);
  const unsigned i = threadIdx.x, n = blockDim.x;
  s[i] = float(i);
  if (barrier) __syncthreads();
  out[i] = s[(i + 1) % n];
}

TEST_F(CudaEmulated, AMissingBarrierReadsUnwrittenSharedMemory) {
  for (E::Schedule order : {E::Schedule::Forward, E::Schedule::Reverse, E::Schedule::Greedy}) {
    E::set_schedule(order);
    std::vector<float> out(64);
    ASSERT_EQ(E::launch(neighbour_kernel, dim3(2), dim3(64), 64 * 4, nullptr, out.data(), true), cudaSuccess);
    for (int i = 0; i < 64; ++i) EXPECT_EQ(out[i], float((i + 1) % 64));
    ASSERT_EQ(E::launch(neighbour_kernel, dim3(2), dim3(64), 64 * 4, nullptr, out.data(), false), cudaSuccess);
    EXPECT_TRUE(std::count_if(out.begin(), out.end(), [](float x) { return std::isnan(x); }) > 0);
  }
}

void early_exit_kernel(int) {
  if (threadIdx.x == 5) return;
  __syncthreads();
}
void divergent_collective_kernel(int) {
  if (threadIdx.x % 2) {
    (void)__shfl_xor_sync(0xffffffffu, 1.0f, 1);
  } else {
    uint32_t a[4] = {0, 0, 0, 0};
    float c[4] = {0, 0, 0, 0};
    E::mma_m16n8k16(c, a, 0, 0, true);
  }
}
void deadlock_kernel(int) {  // lane 0 at the barrier its warp's other lanes never reach
  if (threadIdx.x == 0 || threadIdx.x >= 32) __syncthreads();
  else (void)__shfl_xor_sync(0xffffffffu, 1.0f, 1);
}
void partial_mask_kernel(int) { (void)__shfl_xor_sync(0xffffu, 1.0f, 1); }
void ldmatrix_outside_kernel(int) {
  static uint16_t elsewhere[32 * 8];
  uint32_t r[4];
  E::ldmatrix_x4_trans(r, elsewhere + threadIdx.x * 8);
}
void cp_async_outside_kernel(int) {
  static uint4 elsewhere[64];
  static const uint4 src[64] = {};
  ::edgegen_cuda_emulator::cp_async_16(&elsewhere[threadIdx.x], &src[threadIdx.x], 16);
}
void cp_async_misaligned_kernel(int) {
  static const uint4 src[64] = {};
  ::edgegen_cuda_emulator::cp_async_16(E::dynamic_shared() + 8, &src[threadIdx.x], 16);
}
void cp_async_unwaited_kernel(int) {
  static const uint4 src[64] = {};
  ::edgegen_cuda_emulator::cp_async_16(E::dynamic_shared() + 16 * (threadIdx.x % 4), &src[threadIdx.x], 16);
  ::edgegen_cuda_emulator::cp_async_commit();
}
void nothing_kernel(int) {}
void divergent_barrier_kernel(int) {  // the same count of barriers, at two different calls
  if (threadIdx.x < 32) __syncthreads();
  else __syncthreads();
}

TEST_F(CudaEmulated, FaultsEndTheLaunchAndSayWhy) {
  struct Expect {
    void (*kernel)(int);
    const char* fault;
  };
  for (const Expect& e : {Expect{early_exit_kernel, "exited while"}, Expect{divergent_collective_kernel, "different"},
                          Expect{deadlock_kernel, "deadlock"}, Expect{partial_mask_kernel, "full-warp"},
                          Expect{ldmatrix_outside_kernel, "outside the block's dynamic shared memory"},
                          Expect{cp_async_outside_kernel, "cp.async destination outside"},
                          Expect{cp_async_misaligned_kernel, "not both 16-byte aligned"},
                          Expect{cp_async_unwaited_kernel, "never waited for"},
                          Expect{divergent_barrier_kernel, "threads of a block at __syncthreads at different calls"}}) {
    E::clear_fault();
    EXPECT_EQ(E::launch(e.kernel, dim3(1), dim3(64), 64, nullptr, 0), cudaErrorLaunchFailure) << e.fault;
    EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchFailure);
    EXPECT_NE(E::last_fault().find(e.fault), std::string::npos) << E::last_fault();
  }
  // Launch errors as CUDA reports them.
  EXPECT_EQ(E::launch(nothing_kernel, dim3(1), dim3(1025), 0, nullptr, 0), cudaErrorInvalidConfiguration);
  EXPECT_EQ(E::launch(nothing_kernel, dim3(0), dim3(32), 0, nullptr, 0), cudaErrorInvalidConfiguration);
  EXPECT_EQ(E::launch(nothing_kernel, dim3(1), dim3(32), 64 << 10, nullptr, 0), cudaErrorInvalidValue);
  EXPECT_EQ(cudaFuncSetAttribute(nothing_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 << 10), cudaSuccess);
  EXPECT_EQ(E::launch(nothing_kernel, dim3(1), dim3(32), 64 << 10, nullptr, 0), cudaSuccess);
  EXPECT_EQ(cudaFuncSetAttribute(nothing_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 228 << 10),
            cudaErrorInvalidValue);
}

// Thread-block clusters: each block writes its rank and thread index into its shared memory,
// reads its neighbour block's (rank + 1) through distributed shared memory after the cluster
// barrier, and waits for the cluster before it exits (mode 0). Mode 1 leaves out the first
// barrier (reads the neighbour before it wrote), mode 2 the last (a block exits while its
// neighbour may still read it).
void cluster_neighbour_kernel(int* out, int mode) {
  using edgegen::kernels::cuda::cluster_map;
  using edgegen::kernels::cuda::cluster_sync;
  const unsigned C = 4, rank = blockIdx.x % C, i = threadIdx.x;
  int* mine = reinterpret_cast<int*>(E::dynamic_shared());
  mine[i] = int(rank * 1000 + i);
  if (mode != 1) cluster_sync();
  out[blockIdx.x * blockDim.x + i] = *cluster_map(mine + (i + 1) % blockDim.x, (rank + 1) % C);
  if (mode != 2) cluster_sync();
}

TEST_F(CudaEmulated, ClustersShareTheirBlocksSharedMemory) {
  const int n = 64, blocks = 8;
  for (E::Schedule order : {E::Schedule::Forward, E::Schedule::Reverse, E::Schedule::Greedy}) {
    E::set_schedule(order);
    std::vector<int> out(size_t(n * blocks), -1);
    ASSERT_EQ(E::launch_cluster(cluster_neighbour_kernel, dim3(blocks), dim3(n), n * 4, nullptr, 4u, out.data(), 0),
              cudaSuccess)
        << E::last_fault();
    for (int b = 0; b < blocks; ++b)
      for (int i = 0; i < n; ++i) EXPECT_EQ(out[size_t(b * n + i)], ((b % 4 + 1) % 4) * 1000 + (i + 1) % n);
    EXPECT_EQ(E::counters().max_cluster, 4);
  }
  // Without the first barrier, the lowest-first schedule runs each rank to the last barrier before
  // the next rank starts: ranks 0-2 read their neighbour's unwritten (poisoned) shared memory,
  // rank 3 reads rank 0's, written by then.
  E::set_schedule(E::Schedule::Greedy);
  std::vector<int> out(size_t(n * blocks), 0x12345678);
  ASSERT_EQ(E::launch_cluster(cluster_neighbour_kernel, dim3(blocks), dim3(n), n * 4, nullptr, 4u, out.data(), 1),
            cudaSuccess);
  for (int b = 0; b < blocks; ++b)
    for (int i = 0; i < n; ++i)
      EXPECT_EQ(out[size_t(b * n + i)], b % 4 == 3 ? (i + 1) % n : -1) << "block " << b << " thread " << i;
  // Without the last, a block exits while its neighbour still reads it.
  E::set_schedule(E::Schedule::Forward);
  EXPECT_EQ(E::launch_cluster(cluster_neighbour_kernel, dim3(blocks), dim3(n), n * 4, nullptr, 4u, out.data(), 2),
            cudaErrorLaunchFailure);
  EXPECT_NE(E::last_fault().find("whose threads have all exited"), std::string::npos) << E::last_fault();
}

void cluster_early_exit_kernel(int) {
  if (blockIdx.x == 1 && threadIdx.x == 3) return;
  edgegen::kernels::cuda::cluster_sync();
}
void cluster_map_rank_kernel(int) { (void)edgegen::kernels::cuda::cluster_map(E::dynamic_shared(), 2u); }
void cluster_map_outside_kernel(int) {
  static int elsewhere;
  (void)edgegen::kernels::cuda::cluster_map(&elsewhere, 1u);
}
void cluster_divergent_kernel(int) {  // the lanes of a warp at two different cluster barriers (.aligned)
  if (threadIdx.x % 2) edgegen::kernels::cuda::cluster_sync();
  else edgegen::kernels::cuda::cluster_sync();
}
void cluster_warps_apart_kernel(int) {  // warps at different calls: allowed (each warp converged)
  if (threadIdx.x < 32) edgegen::kernels::cuda::cluster_sync();
  else edgegen::kernels::cuda::cluster_sync();
}
void cluster_deadlock_kernel(int) {  // one thread at the cluster barrier, its block's others at theirs
  if (threadIdx.x == 0) edgegen::kernels::cuda::cluster_sync();
  else __syncthreads();
}

TEST_F(CudaEmulated, ClusterFaultsAndLaunchErrors) {
  struct Expect {
    void (*kernel)(int);
    const char* fault;
  };
  for (const Expect& e : {Expect{cluster_early_exit_kernel, "threads of its cluster wait at the cluster barrier"},
                          Expect{cluster_map_rank_kernel, "rank 2 of a cluster of 2"},
                          Expect{cluster_map_outside_kernel, "outside the block's dynamic shared memory"},
                          Expect{cluster_deadlock_kernel, "deadlock in the cluster"},
                          Expect{cluster_divergent_kernel, "lanes of a warp at the cluster barrier at different calls"}}) {
    E::clear_fault();
    EXPECT_EQ(E::launch_cluster(e.kernel, dim3(2), dim3(64), 64, nullptr, 2u, 0), cudaErrorLaunchFailure) << e.fault;
    EXPECT_NE(E::last_fault().find(e.fault), std::string::npos) << E::last_fault();
  }
  EXPECT_EQ(E::launch_cluster(cluster_warps_apart_kernel, dim3(2), dim3(64), 0, nullptr, 2u, 0), cudaSuccess)
      << E::last_fault();
  EXPECT_EQ(E::launch_cluster(nothing_kernel, dim3(6), dim3(32), 0, nullptr, 4u, 0), cudaErrorInvalidClusterSize);
  EXPECT_EQ(E::launch_cluster(nothing_kernel, dim3(16), dim3(32), 0, nullptr, 16u, 0), cudaErrorInvalidClusterSize);
  E::Device older;
  older.compute_major = 8;
  E::set_device(older);
  EXPECT_EQ(E::launch_cluster(nothing_kernel, dim3(2), dim3(32), 0, nullptr, 2u, 0), cudaErrorNotSupported);
  EXPECT_EQ(E::launch(nothing_kernel, dim3(2), dim3(32), 0, nullptr, 0), cudaSuccess);
}

// ------------------------------------------------------------------------------ attention

struct AttnCase {
  Case c;
  KC::AttnDType dtype = KC::AttnDType::BF16;
  bool pipelined = false;  // the cp.async double-buffered kernels
  bool packed = false;  // q, k, v, dO as [B, n, H, d] (sn = H d): a fused projection's layout
};

uint16_t to16(KC::AttnDType t, double x) {
  return t == KC::AttnDType::BF16 ? K::to_bf16(float(x)).bits : K::to_fp16(float(x)).bits;
}
double from16(KC::AttnDType t, uint16_t b) {
  return t == KC::AttnDType::BF16 ? K::to_float(K::bf16_t{b}) : K::to_float(K::fp16_t{b});
}

// Runs forward and backward on the emulator and checks them against the double reference (each
// value within tol + rel * the sum of its terms' magnitudes): the products round the
// probabilities and the score gradients to 16 bits, as the tensor cores take them.
void check_attention(const AttnCase& ac, double tol, double rel) {
  const Case& c = ac.c;
  const int64_t d = c.d, BH = c.B * c.H;
  std::mt19937 rng(7);
  std::normal_distribution<double> nd(0.0, 1.0);
  // Inputs rounded to 16 bits; the reference sees those values, in [B, H, n, d] order.
  auto make = [&](int64_t n, std::vector<uint16_t>& dev, std::vector<double>& ref, KC::AttnTensor& t) {
    dev.assign(size_t(BH * n * d), 0);
    ref.assign(dev.size(), 0.0);
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t h = 0; h < c.H; ++h)
        for (int64_t i = 0; i < n; ++i)
          for (int64_t e = 0; e < d; ++e) {
            const uint16_t v = to16(ac.dtype, nd(rng));
            const int64_t at = ac.packed ? ((b * n + i) * c.H + h) * d + e : ((b * c.H + h) * n + i) * d + e;
            dev[size_t(at)] = v;
            ref[size_t(((b * c.H + h) * n + i) * d + e)] = from16(ac.dtype, v);
          }
    t.data = dev.data();
    t.sb = c.H * n * d;
    t.sh = ac.packed ? d : n * d;
    t.sn = ac.packed ? c.H * d : d;
  };
  std::vector<uint16_t> q, k, v, g;
  std::vector<double> qd, kd, vd, gd;
  KC::AttnProblem p;
  make(c.nq, q, qd, p.q);
  make(c.nk, k, kd, p.k);
  make(c.nk, v, vd, p.v);
  KC::AttnTensor gt;
  make(c.nq, g, gd, gt);
  p.dtype = ac.dtype;
  p.B = c.B, p.H = c.H, p.nq = c.nq, p.nk = c.nk, p.d = int(d);
  p.window = c.window, p.num_global = c.num_global, p.q_offset = c.q_offset, p.causal = c.causal;
  p.scale = float(1.0 / std::sqrt(double(d)));
  p.pipelined = ac.pipelined;
  const double scale = double(p.scale);

  std::vector<uint16_t> out(size_t(BH * c.nq * d), 0x5555);  // poison: every value must be written
  std::vector<float> lse(size_t(BH * c.nq), 12345.0f);
  std::vector<float> fws(KC::attention_forward_workspace_bytes(p) / sizeof(float) + 1, NAN);
  ASSERT_EQ(KC::attention_forward_cuda(p, out.data(), lse.data(), fws.data(), nullptr), 0) << E::last_fault();
  const Ref ref = attention_reference::reference(c, qd, kd, vd, gd, scale);
  for (size_t i = 0; i < out.size(); ++i)
    ASSERT_NEAR(from16(ac.dtype, out[i]), ref.out[i], tol + rel * ref.out_mag[i]) << "out " << i;
  for (size_t i = 0; i < lse.size(); ++i) {
    if (std::isinf(ref.lse[i])) ASSERT_TRUE(std::isinf(lse[i]) && lse[i] < 0) << "lse " << i << " = " << lse[i];
    else ASSERT_NEAR(lse[i], ref.lse[i], 1e-4 + 1e-5 * std::fabs(ref.lse[i])) << "lse " << i;
  }

  // Backward from the output as stored (16-bit), like the reference's D = dO . out.
  std::vector<double> stored(out.size());
  for (size_t i = 0; i < out.size(); ++i) stored[i] = from16(ac.dtype, out[i]);
  const Ref gref = attention_reference::reference(c, qd, kd, vd, gd, scale, &stored);
  KC::AttnTensor ot{out.data(), c.H * c.nq * d, c.nq * d, d};
  std::vector<float> delta(size_t(BH * c.nq), 777.0f);
  std::vector<uint16_t> dq(out.size(), 0x5555), dk(size_t(BH * c.nk * d), 0x5555), dv(dk.size(), 0x5555);
  std::vector<float> ws(KC::attention_backward_workspace_bytes(p) / sizeof(float) + 1, NAN);
  ASSERT_EQ(KC::attention_backward_cuda(p, gt, ot, lse.data(), delta.data(), dq.data(), dk.data(), dv.data(),
                                        ws.data(), nullptr),
            0)
      << E::last_fault();
  auto expect = [&](const std::vector<uint16_t>& got, const std::vector<double>& want, const std::vector<double>& mag,
                    const char* what) {
    for (size_t i = 0; i < got.size(); ++i)
      ASSERT_NEAR(from16(ac.dtype, got[i]), want[i], tol + rel * mag[i]) << what << " " << i;
  };
  expect(dq, gref.dq, gref.dq_mag, "dq");
  expect(dk, gref.dk, gref.dk_mag, "dk");
  expect(dv, gref.dv, gref.dv_mag, "dv");
}

// Tolerances: bf16 keeps 8 bits (2^-9 relative rounding), fp16 11; the probabilities or score
// gradients and the stored result each round once.
constexpr double kTol = 1e-4;
double rel_for(KC::AttnDType t) { return t == KC::AttnDType::BF16 ? 1e-2 : 2e-3; }

struct Variant {
  KC::AttnDType dtype;
  bool pipelined;
};

class CudaEmulatedAttention : public CudaEmulated, public ::testing::WithParamInterface<Variant> {
 protected:
  AttnCase make() const {
    AttnCase a;
    a.dtype = GetParam().dtype;
    a.pipelined = GetParam().pipelined;
    return a;
  }
};

// Windows below, at and past the 64-row tile; lengths that are no multiple of it; head sizes 64
// and 128; global tokens causal and not.
TEST_P(CudaEmulatedAttention, WindowsGlobalsAndHeadSizes) {
  AttnCase a = make();
  a.c.H = 2, a.c.nq = a.c.nk = 200, a.c.d = 64, a.c.window = 70;
  check_attention(a, kTol, rel_for(a.dtype));
  a.c.H = 1, a.c.nq = a.c.nk = 150, a.c.d = 128, a.c.window = 64, a.c.num_global = 3;
  check_attention(a, kTol, rel_for(a.dtype));
  a.c.d = 64, a.c.window = 33, a.c.num_global = 2, a.c.causal = false;
  check_attention(a, kTol, rel_for(a.dtype));
}

// Non-causal, no global tokens, window 66: the newest key the first query tile sees (63 + 65 =
// 128) is the first of a key tile.
TEST_P(CudaEmulatedAttention, NonCausalWindowEndingOnAKeyTile) {
  AttnCase a = make();
  a.c.H = 1, a.c.nq = a.c.nk = 200, a.c.d = 64, a.c.window = 66, a.c.num_global = 0, a.c.causal = false;
  check_attention(a, kTol, rel_for(a.dtype));
}

// The other head sizes with kernels: 32, 80 (5 k-steps of 16: an odd count) and 96; one a size
// without them is refused.
TEST_P(CudaEmulatedAttention, OtherHeadSizes) {
  for (int64_t d : {32, 80, 96}) {
    AttnCase a = make();
    a.c.H = 1, a.c.nq = a.c.nk = 140, a.c.d = d, a.c.window = 45, a.c.num_global = 2, a.c.causal = d != 80;
    SCOPED_TRACE(d);
    check_attention(a, kTol, rel_for(a.dtype));
  }
  for (int d : {16, 48, 112, 256}) EXPECT_FALSE(KC::attention_cuda_supports(d)) << d;
  KC::AttnProblem p;
  p.d = 48;
  EXPECT_EQ(KC::attention_forward_cuda(p, nullptr, nullptr, nullptr, nullptr), cudaErrorInvalidValue);
}

// Decode steps and chunks (queries at the end of the keys), and rows that see no key at all
// (output 0, lse -inf, no gradient).
TEST_P(CudaEmulatedAttention, OffsetsAndRowsWithoutKeys) {
  for (int64_t nq : {1, 20}) {
    AttnCase a = make();
    a.c.H = 2, a.c.nk = 300, a.c.nq = nq, a.c.q_offset = 300 - nq, a.c.window = 40, a.c.num_global = 4, a.c.d = 64;
    check_attention(a, kTol, rel_for(a.dtype));
  }
  AttnCase a = make();
  a.c.H = 1, a.c.nk = 100, a.c.nq = 50, a.c.q_offset = 110, a.c.window = 30, a.c.d = 64;  // rows p >= 129 see none
  check_attention(a, kTol, rel_for(a.dtype));
}

// Inputs in a fused projection's layout ([B, n, H, d]) with two batches; the reverse thread order
// between synchronisations, and the first warp running ahead of the others with cp.async copies
// landing as soon as they are issued (a prefetch into a slot other warps still read shows up).
TEST_P(CudaEmulatedAttention, StridedInputsThreadOrdersAndCopyLanding) {
  AttnCase a = make();
  a.packed = true;
  a.c.B = 2, a.c.H = 2, a.c.nq = a.c.nk = 130, a.c.d = 64, a.c.window = 50, a.c.num_global = 1;
  check_attention(a, kTol, rel_for(a.dtype));
  E::set_schedule(E::Schedule::Reverse);
  check_attention(a, kTol, rel_for(a.dtype));
  E::set_schedule(E::Schedule::Greedy);
  E::set_copy_landing(E::CopyLanding::AtIssue);
  check_attention(a, kTol, rel_for(a.dtype));
}

// Past 8 query tiles the key tile holding the global tokens is split over several blocks whose
// float partial sums a second kernel adds in a fixed order.
TEST_P(CudaEmulatedAttention, SplitGlobalKeyTiles) {
  AttnCase a = make();
  a.c.H = 1, a.c.nq = a.c.nk = 600, a.c.d = 64, a.c.window = 50, a.c.num_global = 4;
  KC::AttnProblem p;
  p.nq = p.nk = 600, p.num_global = 4, p.d = 64, p.B = p.H = 1;
  ASSERT_GT(KC::attention_backward_workspace_bytes(p), 0u) << "the case no longer splits";
  check_attention(a, kTol, rel_for(a.dtype));
}

// Not causal, the query tiles holding global queries see every key tile: past 8 key tiles they
// are split over several blocks too (forward and dQ), whose float partials a second kernel merges
// in a fixed order. Globals within one tile and across two, with a query offset.
TEST_P(CudaEmulatedAttention, SplitGlobalQueryTiles) {
  AttnCase a = make();
  a.c.H = 1, a.c.nq = 130, a.c.nk = 1100, a.c.d = 64, a.c.window = 50, a.c.num_global = 4, a.c.causal = false;
  // The forward's workspace: 64 (d + 2) floats per split of each split query tile and head.
  auto split_floats = [](const Case& c) {
    KC::AttnProblem q;
    q.B = c.B, q.H = c.H, q.nq = c.nq, q.nk = c.nk, q.d = int(c.d), q.num_global = c.num_global;
    q.q_offset = c.q_offset, q.causal = c.causal;
    return KC::attention_forward_workspace_bytes(q) / sizeof(float);
  };
  ASSERT_EQ(split_floats(a.c), 1u * 3 * 64 * 66) << "one tile, 3 splits";
  check_attention(a, kTol, rel_for(a.dtype));
  a.c.num_global = 100, a.c.q_offset = 30;
  ASSERT_EQ(split_floats(a.c), 2u * 3 * 64 * 66) << "globals at positions 30..99: two tiles, 3 splits";
  check_attention(a, kTol, rel_for(a.dtype));
  // Two heads, 17 key tiles over 3 splits (uneven), and a single query tile, all of it split.
  a.c.H = 2, a.c.nk = 1050, a.c.nq = 30, a.c.num_global = 100, a.c.q_offset = 0;
  ASSERT_EQ(split_floats(a.c), 2u * 3 * 64 * 66);
  check_attention(a, kTol, rel_for(a.dtype));
}

// More (batch, head) pairs, or batches, than the device's grid.y holds (CUDA's: 65,535; lowered
// here to 3 so that the test stays small): launched in parts, each its own (batch, head) range
// (was: every launch past the limit failed with cudaErrorInvalidConfiguration, which the emulator
// now reports as CUDA does). Splits of global tiles (forward, dK/dV, dQ) and the delta pass
// (grid.y = B) included.
TEST_F(CudaEmulated, AttentionWithMoreHeadsThanAGridAxisHolds) {
  EXPECT_EQ(E::launch(nothing_kernel, dim3(1, 65536), dim3(32), 0, nullptr, 0), cudaErrorInvalidConfiguration);
  EXPECT_EQ(E::launch(nothing_kernel, dim3(1, 1, 65536), dim3(32), 0, nullptr, 0), cudaErrorInvalidConfiguration);
  EXPECT_EQ(E::launch(nothing_kernel, dim3(1, 65535), dim3(32), 0, nullptr, 0), cudaSuccess);
  E::Device small;
  small.max_grid_y = 3;
  E::set_device(small);
  AttnCase a;
  a.c.B = 4, a.c.H = 2, a.c.nq = 70, a.c.nk = 70, a.c.d = 32, a.c.window = 8, a.c.num_global = 2;
  check_attention(a, kTol, rel_for(a.dtype));
  a.c.causal = false, a.c.nq = 30, a.c.nk = 1050, a.c.num_global = 100, a.c.H = 1, a.c.B = 5;  // split tiles
  check_attention(a, kTol, rel_for(a.dtype));
}

// The splits stop at about 8 blocks per SM over all heads: with more heads the other blocks
// already outlast a global tile's walk.
TEST_F(CudaEmulated, AttentionSplitsFollowTheHeads) {
  KC::AttnProblem p;
  p.nq = p.nk = 1100, p.num_global = 4, p.d = 64, p.B = 1, p.H = 2, p.causal = false;
  const size_t per_split = 64 * (64 + 2) * sizeof(float);
  EXPECT_EQ(KC::attention_forward_workspace_bytes(p), 2 * 3 * per_split) << "3 splits of one tile per head";
  E::Device one;
  one.sms = 1;
  E::set_device(one);
  EXPECT_EQ(KC::attention_forward_workspace_bytes(p), 2 * 3 * per_split) << "8 blocks per SM: still 3 splits";
  p.H = 3;
  EXPECT_EQ(KC::attention_forward_workspace_bytes(p), 3 * 2 * per_split) << "8 / 3 heads: 2 splits";
  p.H = 16;
  EXPECT_EQ(KC::attention_forward_workspace_bytes(p), 0u) << "no split";
  EXPECT_EQ(KC::attention_backward_workspace_bytes(p), 0u) << "no split";
}

// The work is the pattern's, not the square's: a block of the forward or the dQ pass syncs once
// after loading its own tile and twice per key tile it visits (the dK/dV pass: per query tile), so
// the emulator's count of __syncthreads gives the tiles visited — exactly those holding at least
// one visible (query, key) pair, causal or not, with global tokens. (Up to 8 query tiles: no
// split of the global key tile.)
TEST_F(CudaEmulated, AttentionVisitsExactlyTheTilesWithVisiblePairs) {
  for (bool causal : {true, false})
  for (bool pipelined : {false, true}) {
    Case c;
    c.H = 1, c.nq = c.nk = 512, c.d = 64, c.window = 40, c.num_global = 4, c.causal = causal;
    const int64_t tiles = c.nq / 64;
    int64_t pairs = 0;  // (query tile, key tile) with a visible pair
    for (int64_t a = 0; a < tiles; ++a)
      for (int64_t b = 0; b < tiles; ++b) {
        bool any = false;
        for (int64_t i = a * 64; i < a * 64 + 64 && !any; ++i)
          for (int64_t j = b * 64; j < b * 64 + 64 && !any; ++j) any = attention_reference::ref_visible(c, i, j);
        pairs += any;
      }
    ASSERT_LT(3 * pairs, 2 * tiles * tiles) << "the case should be sparse";
    KC::AttnProblem p;
    p.dtype = KC::AttnDType::BF16;
    p.B = 1, p.H = 1, p.nq = p.nk = c.nq, p.d = 64;
    p.window = c.window, p.num_global = c.num_global, p.causal = causal, p.pipelined = pipelined;
    std::vector<uint16_t> x(size_t(c.nq * 64), K::to_bf16(0.01f).bits);
    p.q = p.k = p.v = KC::AttnTensor{x.data(), c.nq * 64, c.nq * 64, 64};
    std::vector<uint16_t> out(x.size()), dq(x.size()), dk(x.size()), dv(x.size());
    std::vector<float> lse(size_t(c.nq)), delta(size_t(c.nq));
    ASSERT_EQ(KC::attention_backward_workspace_bytes(p), 0u);
    ASSERT_EQ(KC::attention_forward_workspace_bytes(p), 0u);
    E::reset_counters();
    ASSERT_EQ(KC::attention_forward_cuda(p, out.data(), lse.data(), nullptr, nullptr), 0) << E::last_fault();
    EXPECT_EQ(E::counters().syncthreads, 128 * (tiles + 2 * pairs)) << "forward, causal " << causal << ", pipelined " << pipelined;
    EXPECT_EQ(E::counters().async_copies > 0, pipelined) << "the pipelined kernels stream with cp.async, the others not";
    E::reset_counters();
    const KC::AttnTensor o{out.data(), c.nq * 64, c.nq * 64, 64};
    ASSERT_EQ(KC::attention_backward_cuda(p, p.q, o, lse.data(), delta.data(), dq.data(), dk.data(), dv.data(),
                                          nullptr, nullptr),
              0)
        << E::last_fault();
    EXPECT_EQ(E::counters().syncthreads, 2 * 128 * (tiles + 2 * pairs)) << "backward, causal " << causal << ", pipelined " << pipelined;
    EXPECT_EQ(E::counters().async_copies > 0, pipelined);
  }
}

// The same with the tiles that see everything split over blocks (1100 keys and queries: 18 tiles,
// 3 splits): each split block syncs after loading its own tile, and every visible tile pair is
// still visited exactly once.
TEST_F(CudaEmulated, SplitTilesVisitEachTileOnce) {
  for (bool causal : {true, false}) {
    Case c;
    c.H = 1, c.nq = c.nk = 1100, c.d = 64, c.window = 40, c.num_global = 4, c.causal = causal;
    const int64_t tiles = (c.nq + 63) / 64, splits = 3;
    int64_t pairs = 0;
    for (int64_t a = 0; a < tiles; ++a)
      for (int64_t b = 0; b < tiles; ++b) {
        bool any = false;
        for (int64_t i = a * 64; i < std::min<int64_t>(a * 64 + 64, c.nq) && !any; ++i)
          for (int64_t j = b * 64; j < std::min<int64_t>(b * 64 + 64, c.nk) && !any; ++j)
            any = attention_reference::ref_visible(c, i, j);
        pairs += any;
      }
    KC::AttnProblem p;
    p.dtype = KC::AttnDType::BF16;
    p.B = 1, p.H = 1, p.nq = p.nk = c.nq, p.d = 64;
    p.window = c.window, p.num_global = c.num_global, p.causal = causal;
    std::vector<uint16_t> x(size_t(c.nq * 64), K::to_bf16(0.01f).bits);
    p.q = p.k = p.v = KC::AttnTensor{x.data(), c.nq * 64, c.nq * 64, 64};
    std::vector<uint16_t> out(x.size()), dq(x.size()), dk(x.size()), dv(x.size());
    std::vector<float> lse(size_t(c.nq)), delta(size_t(c.nq));
    std::vector<float> fws(KC::attention_forward_workspace_bytes(p) / 4 + 1), bws(KC::attention_backward_workspace_bytes(p) / 4 + 1);
    const int64_t q_blocks = tiles + (causal ? 0 : splits - 1), k_blocks = tiles + splits - 1;
    E::reset_counters();
    ASSERT_EQ(KC::attention_forward_cuda(p, out.data(), lse.data(), fws.data(), nullptr), 0) << E::last_fault();
    const int64_t merge = causal ? 0 : 1;  // the merge kernel's one barrier, one block per split tile
    EXPECT_EQ(E::counters().syncthreads, 128 * (q_blocks + 2 * pairs + merge)) << "forward, causal " << causal;
    E::reset_counters();
    const KC::AttnTensor o{out.data(), c.nq * 64, c.nq * 64, 64};
    ASSERT_EQ(KC::attention_backward_cuda(p, p.q, o, lse.data(), delta.data(), dq.data(), dk.data(), dv.data(),
                                          bws.data(), nullptr),
              0)
        << E::last_fault();
    EXPECT_EQ(E::counters().syncthreads, 128 * (k_blocks + 2 * pairs) + 128 * (q_blocks + 2 * pairs))
        << "backward, causal " << causal;
  }
}

INSTANTIATE_TEST_SUITE_P(Kernels, CudaEmulatedAttention,
                         ::testing::Values(Variant{KC::AttnDType::BF16, false}, Variant{KC::AttnDType::F16, false},
                                           Variant{KC::AttnDType::BF16, true}, Variant{KC::AttnDType::F16, true}),
                         [](const ::testing::TestParamInfo<Variant>& i) {
                           return std::string(i.param.dtype == KC::AttnDType::BF16 ? "bf16" : "f16") +
                                  (i.param.pipelined ? "_pipelined" : "");
                         });

// ------------------------------------------------------------------------------ KD loss

struct KdCase {
  K::DType dtype = K::DType::F32;
  int64_t rows = 3, vocab = 1000;
  int teachers = 1;
  double T = 2.0, alpha = 0.5;
  int64_t student_pad = 0, teacher_pad = 0;  // row stride = vocab + pad (misaligned rows)
  bool grad = true, in_place = false, row_scale = false;
  KC::KDCudaKernel kernel = KC::KDCudaKernel::Rows;
  int64_t teacher_nan_at = -1;      // >= 0: teacher 0's element there in row 0 is NaN
  bool last_teacher_row0_inf = false;  // the last teacher's row 0 all -inf
};

// Element i of a buffer of dtype t: its size, a store (rounded to t) and a load, through the
// kernels' own dtype dispatch and conversions.
size_t elem_bytes(K::DType t) {
  size_t n = 0;
  K::dispatch_float(t, [&](auto* tag) { n = sizeof(*tag); });
  return n;
}
void put(K::DType t, void* base, int64_t i, double x) {
  K::dispatch_float(t, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    if constexpr (std::is_same_v<T, double>) static_cast<double*>(base)[i] = x;
    else K::store_float(static_cast<T*>(base) + i, float(x));
  });
}
double get(K::DType t, const void* base, int64_t i) {
  double v = 0;
  K::dispatch_float(t, [&](auto* tag) { v = double(K::to_float(static_cast<const std::remove_pointer_t<decltype(tag)>*>(base)[i])); });
  return v;
}

// The emulated CUDA kernel against the double reference (kd_reference.h) on the same (rounded) values: the
// loss within rel 1e-5 (float compute) or 1e-12 (double), each gradient value within its type's
// rounding plus the float compute's error relative to the row's largest gradient.
void check_kd(const KdCase& kc) {
  const int64_t V = kc.vocab, ss = V + kc.student_pad, ts = V + kc.teacher_pad;
  const size_t eb = elem_bytes(kc.dtype);
  std::mt19937 rng(5);
  std::normal_distribution<double> nd(0.0, 3.0);
  std::vector<unsigned char> student(size_t(kc.rows * ss + 8) * eb);
  std::vector<std::vector<unsigned char>> teachers(size_t(kc.teachers), std::vector<unsigned char>(size_t(kc.rows * ts + 8) * eb));
  // Offsets of one element: rows start off the 16-byte boundary.
  void* s = student.data() + (kc.student_pad ? eb : 0);
  std::vector<double> s64(size_t(kc.rows * V));
  std::vector<std::vector<double>> t64(size_t(kc.teachers), std::vector<double>(s64.size()));
  for (int64_t r = 0; r < kc.rows; ++r)
    for (int64_t v = 0; v < V; ++v) {
      put(kc.dtype, s, r * ss + v, nd(rng));
      s64[size_t(r * V + v)] = get(kc.dtype, s, r * ss + v);
    }
  std::vector<const void*> tp;
  std::vector<int64_t> tstride(size_t(kc.teachers), ts);
  std::vector<double> w(size_t(kc.teachers), 1.0 / kc.teachers);
  for (int k = 0; k < kc.teachers; ++k) {
    void* t = teachers[size_t(k)].data() + (kc.teacher_pad ? eb * size_t(k + 1) % 16 : 0);
    for (int64_t r = 0; r < kc.rows; ++r)
      for (int64_t v = 0; v < V; ++v) {
        double x = nd(rng);
        if (r == 0 && k == 0 && v == kc.teacher_nan_at) x = std::nan("");
        if (r == 0 && k == kc.teachers - 1 && kc.last_teacher_row0_inf) x = -INFINITY;
        put(kc.dtype, t, r * ts + v, x);
        t64[size_t(k)][size_t(r * V + v)] = get(kc.dtype, t, r * ts + v);
      }
    tp.push_back(t);
  }
  std::vector<int64_t> target(size_t(kc.rows));
  for (int64_t r = 0; r < kc.rows; ++r) target[size_t(r)] = (r * 7919 + 13) % V;
  if (kc.rows > 1) target[1] = -100;  // an ignored row
  target[0] = V - 1;                   // in a scalar tail when the row has one
  if (kc.rows > 2) target[2] = 0;      // in a scalar head likewise
  std::vector<double> row_scale(size_t(kc.rows));
  for (int64_t r = 0; r < kc.rows; ++r) row_scale[size_t(r)] = 0.5 + 0.25 * double(r % 3);

  K::KDLossProblem p;
  p.rows = kc.rows, p.vocab = V, p.dtype = kc.dtype;
  p.student = s, p.student_row_stride = ss;
  p.num_teachers = kc.teachers, p.teachers = tp.data(), p.teacher_row_strides = tstride.data();
  p.teacher_weights = w.data();
  p.target = target.data();
  p.temperature = kc.T, p.alpha = kc.alpha, p.grad_scale = 0.75;
  p.grad_row_scale = kc.row_scale ? row_scale.data() : nullptr;
  std::vector<double> loss(size_t(kc.rows), 99.0);
  p.row_loss = loss.data();
  std::vector<unsigned char> grad(student.size(), 0x55);
  if (kc.grad) {
    p.grad = kc.in_place ? s : static_cast<void*>(grad.data() + (s == student.data() ? 0 : eb));
    p.grad_row_stride = ss;
  }
  // The reference first (in place, the kernel overwrites the student): the formula in double on
  // the rounded values, row by row.
  std::vector<double> rloss(size_t(kc.rows)), rgrad(s64.size());
  for (int64_t i = 0; i < kc.rows; ++i) {
    std::vector<double> srow(s64.begin() + i * V, s64.begin() + (i + 1) * V);
    std::vector<std::vector<double>> trows;
    for (int k = 0; k < kc.teachers; ++k)
      trows.emplace_back(t64[size_t(k)].begin() + i * V, t64[size_t(k)].begin() + (i + 1) * V);
    const double scale = p.grad_scale * (kc.row_scale ? row_scale[size_t(i)] : 1.0);
    const kd_reference::Row ref = kd_reference::row(srow, trows, w, target[size_t(i)], kc.T, kc.alpha, scale);
    rloss[size_t(i)] = ref.loss;
    std::copy(ref.grad.begin(), ref.grad.end(), rgrad.begin() + i * V);
  }

  ASSERT_EQ(KC::kd_loss_rows_cuda(p, nullptr, kc.kernel), 0) << E::last_fault();
  const double lrel = kc.dtype == K::DType::F64 ? 1e-12 : 1e-5;
  for (int64_t i = 0; i < kc.rows; ++i) {
    if (std::isnan(rloss[size_t(i)])) {  // a NaN teacher logit, or a teacher row all -inf
      EXPECT_TRUE(std::isnan(loss[size_t(i)])) << "row " << i << ": " << loss[size_t(i)];
      continue;
    }
    ASSERT_NEAR(loss[size_t(i)], rloss[size_t(i)], lrel * (1 + std::fabs(rloss[size_t(i)]))) << "row " << i;
  }
  if (!kc.grad) return;
  const double round = kc.dtype == K::DType::BF16 ? 1.0 / 256 : (kc.dtype == K::DType::F16 ? 1.0 / 1024 : 0.0);
  const double comp = kc.dtype == K::DType::F64 ? 1e-12 : 1e-5;
  for (int64_t i = 0; i < kc.rows; ++i) {
    double big = 0;
    for (int64_t v = 0; v < V; ++v) big = std::max(big, std::fabs(rgrad[size_t(i * V + v)]));
    for (int64_t v = 0; v < V; ++v) {
      const double want = rgrad[size_t(i * V + v)], got = get(kc.dtype, p.grad, i * ss + v);
      if (std::isnan(want)) {
        ASSERT_TRUE(std::isnan(got)) << "row " << i << " element " << v << ": " << got;
        continue;
      }
      ASSERT_NEAR(got, want, round * std::fabs(want) + comp * big + 1e-30) << "row " << i << " element " << v;
    }
  }
}

// The real vocabulary: float32 with the student row cached in shared memory (201 KB of 227), and
// without (a device with 48 KB per block: the second read of the student).
TEST_F(CudaEmulated, KdLossGpt2VocabularyCachedOrNot) {
  KdCase kc;
  kc.vocab = 50257, kc.rows = 3, kc.row_scale = true;
  check_kd(kc);
  EXPECT_GE(E::counters().max_dynamic_shared_bytes, 50257 * 4) << "the row should be cached";
  E::set_device(E::Device{132, 48 * 1024});
  E::reset_counters();
  check_kd(kc);
  EXPECT_EQ(E::counters().max_dynamic_shared_bytes, 0) << "the row should be read twice, not cached";
}

// Every dtype; teacher mixtures at a temperature other than 1 and 2; KL or CE alone.
TEST_F(CudaEmulated, KdLossDtypesMixturesAndTerms) {
  for (K::DType t : {K::DType::F32, K::DType::BF16, K::DType::F16, K::DType::F64}) {
    KdCase kc;
    kc.dtype = t;
    check_kd(kc);
    kc.teachers = 3, kc.T = 3.0, kc.alpha = 0.3;
    check_kd(kc);
  }
  for (double alpha : {0.0, 1.0}) {
    for (double T : {1.0, 2.0, 0.7}) {
      KdCase kc;
      kc.alpha = alpha, kc.T = T, kc.teachers = alpha == 0.0 ? 0 : 1;
      check_kd(kc);
    }
  }
}

// Rows off the 16-byte boundary: student and teachers sharing their misalignment (scalar head and
// tail, vectors between) or not (scalar rows); the gradient in place of the student or not at
// all; more rows than blocks (a grid of 32 rows on a one-SM device); each warp running to the
// next barrier before the next warp starts.
TEST_F(CudaEmulated, KdLossAlignmentInPlaceAndGridStride) {
  KdCase kc;
  kc.vocab = 517, kc.student_pad = 3, kc.teacher_pad = 3;
  check_kd(kc);
  E::set_schedule(E::Schedule::Greedy);
  check_kd(kc);
  E::set_schedule(E::Schedule::Forward);
  kc.teacher_pad = 5, kc.teachers = 2;
  check_kd(kc);
  kc.dtype = K::DType::BF16, kc.in_place = true;
  check_kd(kc);
  kc.grad = false, kc.in_place = false;
  check_kd(kc);
  E::set_device(E::Device{1, 227 * 1024});
  KdCase many;
  many.rows = 40, many.vocab = 100;
  check_kd(many);
  E::set_schedule(E::Schedule::Greedy);
  check_kd(many);
}

// ------------------------------------------------------------------------------ KD loss, clusters

// The cluster kernel against the double reference; `cluster`: the cluster size the launcher must pick
// (0: the Rows kernel must run instead).
void check_kd_cluster(KdCase kc, int cluster) {
  kc.kernel = KC::KDCudaKernel::Cluster;
  E::reset_counters();
  check_kd(kc);
  if (cluster == 0) {
    EXPECT_EQ(E::counters().cluster_syncs, 0) << "the Rows kernel should run";
  } else {
    EXPECT_EQ(E::counters().max_cluster, cluster);
    EXPECT_GT(E::counters().cluster_syncs, 0) << "the cluster kernel should run";
  }
}

// A device with this much shared memory per SM (and per block).
void small_device(int per_sm, int sms = 132) {
  E::Device d;
  d.sms = sms;
  d.max_shared_per_sm = per_sm;
  d.max_shared_per_block = per_sm;
  E::set_device(d);
}

// GPT-2's vocabulary on an H100: float32 rows over clusters of 8 blocks (student + teacher slices
// of 25 KB each), bfloat16 over 4, float64 over 8 at two blocks per SM.
TEST_F(CudaEmulated, KdLossClusterKernelGpt2Vocabulary) {
  KdCase kc;
  kc.vocab = 50257, kc.rows = 3, kc.row_scale = true;
  check_kd_cluster(kc, 8);
  kc.dtype = K::DType::BF16;
  check_kd_cluster(kc, 4);
  kc.dtype = K::DType::F64, kc.rows = 2;
  check_kd_cluster(kc, 8);
}

// Every dtype, teacher mixtures, KL or CE alone, temperatures 1, 2 and others, on a device small
// enough that vocabularies of a few thousand need clusters of 2, 4 and 8.
TEST_F(CudaEmulated, KdLossClusterKernelDtypesMixturesAndTerms) {
  small_device(16 * 1024);
  for (K::DType t : {K::DType::F32, K::DType::BF16, K::DType::F16, K::DType::F64}) {
    KdCase kc;
    kc.dtype = t, kc.vocab = 1000;
    const bool wide = t == K::DType::F32 || t == K::DType::F64;  // 4 or 8 bytes a logit
    check_kd_cluster(kc, wide ? 4 : 2);
    kc.teachers = 3, kc.T = 3.0, kc.alpha = 0.3;
    check_kd_cluster(kc, wide ? 8 : 4);
  }
  for (double alpha : {0.0, 1.0}) {
    for (double T : {1.0, 2.0, 0.7}) {
      KdCase kc;
      kc.alpha = alpha, kc.T = T, kc.teachers = alpha == 0.0 ? 0 : 1;
      check_kd_cluster(kc, alpha == 0.0 ? 2 : 4);
    }
  }
}

// Rows off the 16-byte boundary, alike in every tensor (cluster) or not (the Rows kernel); the
// gradient in place of the student or not at all; more rows than clusters (one SM); vocabularies
// with fewer vectors than blocks; each schedule.
TEST_F(CudaEmulated, KdLossClusterKernelAlignmentInPlaceAndGridStride) {
  small_device(16 * 1024);
  KdCase kc;
  kc.vocab = 1517, kc.student_pad = 3, kc.teacher_pad = 3;
  check_kd_cluster(kc, 8);
  for (E::Schedule order : {E::Schedule::Reverse, E::Schedule::Greedy}) {
    E::set_schedule(order);
    check_kd_cluster(kc, 8);
  }
  E::set_schedule(E::Schedule::Forward);
  kc.teacher_pad = 5, kc.teachers = 2;
  check_kd_cluster(kc, 0);
  kc.teacher_pad = 3, kc.teachers = 1, kc.dtype = K::DType::BF16, kc.in_place = true;
  check_kd_cluster(kc, 4);
  kc.grad = false, kc.in_place = false;
  check_kd_cluster(kc, 4);
  small_device(16 * 1024, 1);
  KdCase wide;  // float32 over clusters of 8, but one SM holds 5 of these blocks: never at once
  wide.vocab = 1517;
  check_kd_cluster(wide, 0);
  KdCase many;
  many.rows = 40, many.vocab = 1000;
  check_kd_cluster(many, 4);
  E::set_schedule(E::Schedule::Greedy);
  check_kd_cluster(many, 4);
  E::set_schedule(E::Schedule::Forward);
  small_device(3520);
  KdCase tiny;
  tiny.vocab = 37, tiny.student_pad = 1, tiny.teacher_pad = 1;
  check_kd_cluster(tiny, 8);
  small_device(3456);  // 20 logits: at most 5 vectors over 8 blocks, some of which hold none
  tiny.vocab = 20;
  check_kd_cluster(tiny, 8);
}

// Below compute capability 9, or with a build whose code for the device is not sm_90 (the
// compute_80 PTX compiled when loaded), the Rows kernel runs.
// A NaN teacher logit (first or second of its 16-byte vector) or a teacher row all -inf makes the
// row's loss NaN, as on the CPU and in eager PyTorch (was: the vector's maximum skipped a NaN in its
// first lane, and a NaN teacher probability dropped out of the KL sum: a finite loss over NaN or
// wrong gradients); on both kernels.
TEST_F(CudaEmulated, KdLossNanTeachersMakeTheLossNan) {
  for (KC::KDCudaKernel kernel : {KC::KDCudaKernel::Rows, KC::KDCudaKernel::Cluster}) {
    for (int64_t at : {int64_t(20), int64_t(21), int64_t(999)}) {
      KdCase kc;
      kc.kernel = kernel, kc.teacher_nan_at = at;
      check_kd(kc);
    }
    KdCase kc;
    kc.kernel = kernel, kc.teachers = 3, kc.last_teacher_row0_inf = true;
    check_kd(kc);
  }
}

TEST_F(CudaEmulated, KdLossClusterKernelNeedsSm90) {
  E::Device d;
  d.compute_major = 8;
  E::set_device(d);
  KdCase kc;
  check_kd_cluster(kc, 0);
  d.compute_major = 9, d.ptx_version = 80;
  E::set_device(d);
  check_kd_cluster(kc, 0);
  d.ptx_version = 90;
  E::set_device(d);
  check_kd_cluster(kc, 1);
}

}  // namespace
