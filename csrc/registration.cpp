// The one TORCH_LIBRARY(edgegen, m): every schema lives here. Device files only add
// implementations (TORCH_LIBRARY_IMPL). Fake (meta) kernels and autograd are registered from
// Python, in edgegen/ops/.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/library.h>

#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/attention/attention.h"
#include "kernels/buffer_cache.h"
#include "kernels/cpu_features.h"
#include "kernels/distill/kd_loss.h"
#include "kernels/prune/prune.h"
#include "kernels/quant/gemm.h"
#include "kernels/quant/int4.h"

TORCH_LIBRARY(edgegen, m) {
  // Returns (loss, d_loss/d_student). The loss is float32 (fp32 accumulation; float64 for float64
  // inputs): a scalar for
  // 'mean'/'sum', shape student_logits.shape[:-1] for 'none'. The gradient is that of the reduced
  // loss with an upstream gradient of 1 (of each row's loss for 'none'), in the student's dtype,
  // computed in the same sweep as the loss when with_grad is true; otherwise an empty tensor.
  m.def(
      "kd_loss(Tensor student_logits, Tensor[] teacher_logits, float[] teacher_weights, "
      "Tensor target, float temperature, float alpha, int ignore_index, str reduction, "
      "bool with_grad) -> (Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
  // The same loss from hidden states and output-head weights, in row chunks, never holding the
  // [N, V] logits. Returns (loss, d_student_hidden, d_student_weight, d_student_bias): the
  // gradients of the reduced loss, each row's contribution further multiplied by grad_row_scale
  // when given (the upstream gradient, for reduction='none'); empty tensors unless with_grad.
  m.def(
      "fused_linear_kd_loss(Tensor student_hidden, Tensor student_weight, Tensor? student_bias, "
      "Tensor teacher_hidden, Tensor teacher_weight, Tensor? teacher_bias, Tensor target, "
      "float temperature, float alpha, int ignore_index, str reduction, int chunk_size, "
      "Tensor? grad_row_scale, bool with_grad) -> (Tensor, Tensor, Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});

  // Pruning. A score is |w|, or |w * grad| (first-order Taylor importance) when grads are given,
  // evaluated in float32. Masks are bool tensors shaped like the weights: true = kept.
  m.def("magnitude_scores(Tensor weight, Tensor? grad) -> Tensor", {at::Tag::pt2_compliant_tag});
  // The k-th smallest score (1-based) over all tensors together, as a 0-d float32 tensor.
  m.def("kth_smallest_score(Tensor[] weights, Tensor[]? grads, int k) -> Tensor", {at::Tag::pt2_compliant_tag});
  // Masks pruning exactly num_prune entries, the smallest scores over all tensors together; ties
  // at the threshold are pruned in order (list order, then flat index).
  m.def("magnitude_mask(Tensor[] weights, Tensor[]? grads, int num_prune) -> Tensor[]",
        {at::Tag::pt2_compliant_tag});
  // The same masks, written into `masks` (bool, shaped like the weights), and the pruned weights
  // set to zero in place in the same sweep.
  m.def("magnitude_prune_(Tensor(a!)[] weights, Tensor[]? grads, int num_prune, Tensor(b!)[] masks) -> ()",
        {at::Tag::pt2_compliant_tag});
  // N:M mask along `dim`: in every group of m consecutive entries the n largest |w| are kept
  // (ties keep the lower index).
  m.def("nm_mask(Tensor weight, int n, int m, int dim) -> Tensor", {at::Tag::pt2_compliant_tag});
  // float32 L1 (p=1) or L2 (p=2) norm of every slice along `dim` (of weight * grad when given).
  m.def("channel_norms(Tensor weight, int dim, int p, Tensor? grad) -> Tensor", {at::Tag::pt2_compliant_tag});

  // Quantization. axis=None: per tensor (scale/zero_point hold one value); otherwise one value per
  // index of that dimension. q = clamp(nearbyint(x * (1.0f / scale)) + zero_point, quant_min,
  // quant_max), round half to even, the zero point added after rounding.
  m.def("quantize_affine(Tensor input, Tensor scale, Tensor zero_point, int? axis, int quant_min, int quant_max, "
        "ScalarType dtype) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  m.def("dequantize_affine(Tensor input, Tensor scale, Tensor zero_point, int? axis, ScalarType out_dtype) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  // Returns (fake-quantized input, mask of the entries inside [quant_min, quant_max] before clamping).
  m.def("fake_quantize_affine(Tensor input, Tensor scale, Tensor zero_point, int? axis, int quant_min, "
        "int quant_max) -> (Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  // Gradients of learnable fake quantization: (d_input, d_scale, d_zero_point), the last two float32
  // with one value per channel (one for per tensor).
  m.def("fake_quantize_learnable_backward(Tensor grad, Tensor input, Tensor scale, Tensor zero_point, int? axis, "
        "int quant_min, int quant_max, float grad_factor) -> (Tensor, Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  // Observer statistics: per-channel (axis) or per-tensor min and max (float32); a histogram of
  // the values over [lo, hi] (outliers in the end bins); the clipping range [lo, hi] * s / steps,
  // s = 1..steps, with the smallest fake-quantization squared error.
  m.def("observe_minmax(Tensor input, int? axis) -> (Tensor, Tensor)", {at::Tag::pt2_compliant_tag});
  m.def("observe_histogram(Tensor input, int bins, float lo, float hi) -> Tensor", {at::Tag::pt2_compliant_tag});
  m.def("mse_clip_range(Tensor input, float lo, float hi, int quant_min, int quant_max, int steps) -> (float, float)");
  // INT8 GEMM. Pack int8 weights [N, K] once: (packed panels, per-row sums for the zero-point
  // compensation).
  m.def("int8_pack_weight(Tensor weight) -> (Tensor, Tensor)", {at::Tag::pt2_compliant_tag});
  // Exact int32 [M, N] = (input - a_zero_point) @ weight^T for uint8 input [M, K].
  m.def("int8_gemm(Tensor input, int a_zero_point, Tensor packed_weight, Tensor weight_row_sum, int n, int k) "
        "-> Tensor",
        {at::Tag::pt2_compliant_tag});
  // Dynamically quantized linear: float input [..., K] quantized per tensor to 7-bit unsigned,
  // integer GEMM against the packed symmetric weights, dequantised with weight_scale [N] (+ bias).
  m.def("int8_linear_dynamic(Tensor input, Tensor packed_weight, Tensor weight_row_sum, Tensor weight_scale, "
        "Tensor? bias, int n, int k) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  // The same with calibrated activation parameters: input quantized to [0, 127] with a_scale and
  // a_zero_point.
  m.def("int8_linear_static(Tensor input, float a_scale, int a_zero_point, Tensor packed_weight, "
        "Tensor weight_row_sum, Tensor weight_scale, Tensor? bias, int n, int k) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  // Direct INT8 convolution (groups=1): float input [N, C, H, W] quantized once to 7-bit NHWC,
  // implicit GEMM against weights packed in [out_channels, kh, kw, ceil4(C)] order; a_scale <= 0
  // quantizes dynamically.
  m.def("int8_conv2d(Tensor input, Tensor packed_weight, Tensor weight_row_sum, Tensor weight_scale, Tensor? bias, "
        "int out_channels, int[] kernel_size, int[] stride, int[] padding, int[] dilation, float a_scale, "
        "int a_zero_point) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  // INT8 transposed convolution by output phase: per phase a packed [out_channels, ty, tx,
  // ceil4(C)] weight and its row sums; phase_info = (ry, rx, ty, tx) per phase.
  m.def("int8_conv_transpose2d(Tensor input, Tensor[] packed_weights, Tensor[] weight_row_sums, "
        "Tensor weight_scale, Tensor? bias, int out_channels, int[] phase_info, int[] stride, int[] padding, "
        "int[] output_size, float a_scale, int a_zero_point) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  // INT4 weight-only: 4-bit values [N, K] (uint8 in [0, 15]) -> packed [N, K / 2]; dequantised
  // weight (q - zero_point) * scale per group of group_size input features; the linear layer with
  // the dequantisation inside the dot products (small M) or per block of rows (large M).
  m.def("int4_pack(Tensor weight) -> Tensor", {at::Tag::pt2_compliant_tag});
  m.def("int4_dequantize(Tensor packed_weight, Tensor scale, Tensor zero_point, int group_size) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  m.def("int4_linear(Tensor input, Tensor packed_weight, Tensor scale, Tensor zero_point, Tensor? bias, "
        "int group_size) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  // The same 4-bit weights against activations quantized per call to int8, symmetric per row and
  // group of group_size features (scale max|x| / 127, codes rounded half to even): integer dot
  // products (VNNI / AVX2; the products summed exactly, the scales and zero points applied in
  // float); the input must be finite.
  m.def("int4_linear_dynamic(Tensor input, Tensor packed_weight, Tensor scale, Tensor zero_point, Tensor? bias, "
        "int group_size) -> Tensor",
        {at::Tag::pt2_compliant_tag});

  // Sliding-window + global-token attention on [B, H, n, d] q and [B, H, nk, d] k, v (flash style,
  // never an [n, nk] matrix). Query i sits at position q_offset + i, key j at j. Causal: key j is
  // visible from position p when j <= p and (p - j < window or j < num_global); non-causal:
  // |p - j| < window or j < num_global or p < num_global. With a block_layout (int64 [pairs, 2] of
  // (query block, key block) over blocks of block_size positions) the listed blocks are visible
  // instead (and only j <= p of them when causal). Returns (out, lse): lse float32 [B, H, n]
  // (float64 for float64 inputs), -inf where a query sees no key (its output is 0).
  m.def("sliding_window_attention(Tensor q, Tensor k, Tensor v, int window, int num_global, bool causal, "
        "float? scale, int q_offset, Tensor? block_layout, int block_size) -> (Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  // (dq, dk, dv) from the forward's out and lse, recomputing the probabilities tile by tile.
  m.def("sliding_window_attention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
        "int window, int num_global, bool causal, float? scale, int q_offset, Tensor? block_layout, "
        "int block_size) -> (Tensor, Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
}

PYBIND11_MODULE(_C, m) {
  namespace K = edgegen::kernels;
  m.doc() = "edgegen C++ ops; importing this module registers torch.ops.edgegen.*";
  m.def("cpu_isa", [] { return std::string(K::isa_name(K::best_isa())); },
        "The highest instruction-set level the CPU supports, capped by EDGEGEN_MAX_ISA / set_max_isa.");
  m.def("isa_levels", [] {
    std::vector<std::string> out;
    for (int i = 0; i < K::kNumIsa; ++i) out.push_back(K::isa_name(K::Isa(i)));
    return out;
  }, "Every instruction-set level the kernels know, in the cap's order (lowest first).");
  m.def("cpu_levels", [] {
    std::vector<std::string> out;
    for (int i = 0; i < K::kNumIsa; ++i)
      if (K::cpu_supports(K::Isa(i))) out.push_back(K::isa_name(K::Isa(i)));
    return out;
  }, "Every instruction-set level this CPU and OS support, lowest first.");
  m.def("kernel_paths", [] {
    std::map<std::string, std::string> out;
    out["int8_gemm"] = K::isa_name(K::quant::int8_gemm_isa());
    out["int8_activations"] = K::isa_name(K::quant::int8_act_isa());
    out["int4"] = K::isa_name(K::quant::int4_isa());
    out["int4_a8"] = K::isa_name(K::quant::int4_a8_isa());
    out["kd_loss"] = K::isa_name(K::kd_loss_isa());
    out["attention"] = K::isa_name(K::attention::attention_isa());
    out["prune"] = K::isa_name(K::prune::prune_isa());
    out["quantize"] = "scalar";
    return out;
  }, "The path each kernel family takes now.");
  m.def("attention_bf16_products", [] {
    return std::string(K::attention::bf16_products_name(K::attention::bf16_products(K::attention::attention_isa())));
  }, "How the attention path taken now multiplies for bf16 inputs: 'amx_bf16' (tdpbf16ps), 'avx512_bf16' "
     "(vdpbf16ps) or 'float'.");
  // The buffer caches (one per pool, kernels/buffer_cache.h), reported and handled together.
  m.def("buffer_cache_stats", [] {
    std::map<std::string, uint64_t> out{{"held_bytes", 0}, {"held_blocks", 0}, {"hits", 0}, {"misses", 0}};
    bool enabled = false;
    K::for_each_buffer_cache([&](K::BufferCache& c) {
      const K::BufferCacheStats st = c.stats();
      out["held_bytes"] += st.held_bytes;
      out["held_blocks"] += st.held_blocks;
      out["hits"] += st.hits;
      out["misses"] += st.misses;
      enabled = enabled || st.enabled;
    });
    out["enabled"] = enabled ? 1 : 0;
    return out;
  }, "The buffer caches' state, summed over their pools: bytes and buffers held, hits, misses, enabled (0/1).");
  m.def("empty_buffer_cache", [] {
    size_t freed = 0;
    K::for_each_buffer_cache([&](K::BufferCache& c) { freed += c.clear(); });
    return freed;
  }, "Frees the buffers the caches hold; returns their bytes.");
  m.def("set_buffer_cache_enabled", [](bool on) { K::for_each_buffer_cache([on](K::BufferCache& c) { c.set_enabled(on); }); },
        "Turns buffer reuse on or off (off frees what is held).");
  m.def("max_isa", [] { return std::string(K::isa_name(K::max_isa())); }, "The current cap.");
  m.def("set_max_isa", [](const std::string& name) {
    K::Isa isa;
    if (!K::parse_isa(name.c_str(), &isa))
      throw std::invalid_argument("isa: expected scalar, avx2, avx2_vnni, avx512, avx512_vnni or amx, got '" + name + "'");
    K::set_max_isa(isa);
  }, "Caps the kernels' instruction set for this process (tests and benchmarks).");
}
