// ATen glue for the pruning ops: validate, lay out raw pointers, call the torch-free kernels.
#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/kthvalue.h>
#include <ATen/ops/linalg_vector_norm.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "cpu/checks.h"
#include "kernels/prune/prune.h"

namespace edgegen {
namespace {

namespace K = edgegen::kernels;
namespace KP = edgegen::kernels::prune;

// float32/bfloat16/float16 run on the torch-free kernels, which evaluate scores in float32;
// float64 runs on ATen ops in float64 (the precision the caller asked for), with the same checks
// and the same tie rules.
K::DType prune_dtype(const at::Tensor& t, const std::string& name) {
  return cpu::float_dtype(t.scalar_type(), name, /*allow_f64=*/true);
}

using cpu::check_cpu;

std::string item_name(const char* list, size_t i) { return std::string(list) + "[" + std::to_string(i) + "]"; }

// Contiguous views of the inputs (copies only where an input is not contiguous), checked.
struct Sources {
  std::vector<at::Tensor> weights, grads;
  std::vector<KP::ScoreSource> src;
  int64_t total = 0;
  bool any_f64 = false;

  // The scores of all sources, concatenated, float64 (each evaluated in its own precision, as
  // the reference twin does); NaN refused.
  at::Tensor f64_scores() const {
    std::vector<at::Tensor> parts;
    for (size_t i = 0; i < weights.size(); ++i) {
      const bool f64 = weights[i].scalar_type() == at::kDouble;
      at::Tensor x = weights[i].to(f64 ? at::kDouble : at::kFloat);
      if (!grads.empty()) x = x.mul(grads[i].to(f64 ? at::kDouble : at::kFloat));
      parts.push_back(x.abs().reshape(-1).to(at::kDouble));
    }
    at::Tensor all = at::cat(parts);
    const int64_t nans = all.isnan().sum().item<int64_t>();
    TORCH_CHECK_VALUE(nans == 0, "weights: ", nans, " of the scores are NaN; magnitude pruning needs finite (or "
                      "infinite) weights");
    return all;
  }

  // Bool masks (True = kept) for the num_prune smallest scores, ties in concatenation order.
  std::vector<at::Tensor> f64_masks(int64_t num_prune) const {
    const at::Tensor all = f64_scores();
    at::Tensor keep = at::ones({all.numel()}, all.options().dtype(at::kBool));
    const at::Tensor order = std::get<1>(at::sort(all, /*stable=*/true, /*dim=*/0, /*descending=*/false));
    keep.index_fill_(0, order.slice(0, 0, num_prune), false);
    std::vector<at::Tensor> masks;
    int64_t off = 0;
    for (const at::Tensor& w : weights) {
      masks.push_back(keep.slice(0, off, off + w.numel()).view(w.sizes()).clone());
      off += w.numel();
    }
    return masks;
  }
};

// The list ops name their arguments weights[i] / grads[i]; a single-tensor op (magnitude_scores)
// passes its own argument names and single = true.
Sources gather(at::TensorList weights, const std::optional<at::TensorList>& grads, const char* wname = "weights",
               const char* gname = "grads", bool single = false) {
  Sources s;
  if (grads.has_value()) {
    TORCH_CHECK_VALUE(grads->size() == weights.size(), "grads: expected one gradient per weight (",
                      weights.size(), "), got ", grads->size());
  }
  for (size_t i = 0; i < weights.size(); ++i) {
    const std::string wn = single ? std::string(wname) : item_name(wname, i);
    check_cpu(weights[i], wn);
    const K::DType dt = prune_dtype(weights[i], wn);
    s.any_f64 |= dt == K::DType::F64;
    s.weights.push_back(weights[i].contiguous());
    const void* g = nullptr;
    if (grads.has_value()) {
      const at::Tensor& gi = (*grads)[i];
      const std::string gn = single ? std::string(gname) : item_name(gname, i);
      check_cpu(gi, gn);
      TORCH_CHECK_TYPE(gi.scalar_type() == weights[i].scalar_type(), gn, ": expected dtype ",
                       weights[i].scalar_type(), " (that of ", wn, "), got ", gi.scalar_type());
      TORCH_CHECK_VALUE(gi.sizes() == weights[i].sizes(), gn, ": expected shape ", weights[i].sizes(),
                        " (that of ", wn, "), got ", gi.sizes());
      s.grads.push_back(gi.contiguous());
      g = s.grads.back().const_data_ptr();
    }
    s.src.push_back({s.weights.back().const_data_ptr(), g, s.weights.back().numel(), dt});
    s.total += s.weights.back().numel();
  }
  return s;
}

void check_nan(int64_t num_nan, const char* what) {
  TORCH_CHECK_VALUE(num_nan == 0, "weights: ", num_nan, " ", what,
                    " scores are NaN; magnitude pruning needs finite (or infinite) weights");
}

at::Tensor magnitude_scores_cpu(const at::Tensor& weight, const std::optional<at::Tensor>& grad) {
  std::optional<at::TensorList> grads;
  std::vector<at::Tensor> g;
  if (grad.has_value()) {
    g.push_back(*grad);
    grads = at::TensorList(g);
  }
  const std::vector<at::Tensor> w{weight};
  Sources s = gather(w, grads, "weight", "grad", true);
  if (s.any_f64) return (s.grads.empty() ? s.weights[0] : s.weights[0].mul(s.grads[0])).abs();
  at::Tensor out = at::empty_like(s.weights[0]);
  KP::magnitude_scores(s.src[0], out.mutable_data_ptr(), at::get_num_threads());
  return out;
}

at::Tensor kth_smallest_score_cpu(at::TensorList weights, std::optional<at::TensorList> grads, int64_t k) {
  TORCH_CHECK_VALUE(!weights.empty(), "weights: expected at least one tensor");
  Sources s = gather(weights, grads);
  TORCH_CHECK_VALUE(k >= 1 && k <= s.total, "k: expected a value in [1, ", s.total,
                    "] (the number of scores), got ", k);
  if (s.any_f64) return std::get<0>(at::kthvalue(s.f64_scores(), k)).to(at::kFloat);
  const KP::Selection sel = KP::kth_smallest_score(s.src.data(), int(s.src.size()), k, at::get_num_threads());
  check_nan(sel.num_nan, "of the");
  at::Tensor out = at::empty({}, at::TensorOptions().dtype(at::kFloat));
  *out.mutable_data_ptr<float>() = sel.threshold;
  return out;
}

std::vector<at::Tensor> masks_like(const Sources& s) {
  std::vector<at::Tensor> masks;
  for (const at::Tensor& w : s.weights) masks.push_back(at::empty(w.sizes(), w.options().dtype(at::kBool)));
  return masks;
}

std::vector<uint8_t*> mask_ptrs(std::vector<at::Tensor>& masks) {
  std::vector<uint8_t*> p;
  for (at::Tensor& m : masks) p.push_back(reinterpret_cast<uint8_t*>(m.mutable_data_ptr<bool>()));
  return p;
}

void check_num_prune(int64_t num_prune, int64_t total) {
  TORCH_CHECK_VALUE(num_prune >= 0 && num_prune <= total, "num_prune: expected a value in [0, ", total,
                    "] (the number of weights), got ", num_prune);
}

std::vector<at::Tensor> magnitude_mask_cpu(at::TensorList weights, std::optional<at::TensorList> grads,
                                           int64_t num_prune) {
  Sources s = gather(weights, grads);
  check_num_prune(num_prune, s.total);
  if (s.any_f64) return s.f64_masks(num_prune);
  std::vector<at::Tensor> masks = masks_like(s);
  std::vector<uint8_t*> mp = mask_ptrs(masks);
  check_nan(KP::magnitude_mask(s.src.data(), int(s.src.size()), num_prune, mp.data(), nullptr,
                               at::get_num_threads()), "of the");
  return masks;
}

// Two tensors written in place that share memory (a tied weight listed twice, overlapping views)
// would get masks that contradict the weights: refused, naming both. By byte ranges within one
// storage, so disjoint views of one tensor pass and interleaved strided views count as sharing.
void check_no_shared_memory(at::TensorList weights, at::TensorList masks) {
  struct Span {
    const void* storage;
    int64_t begin, end;
    std::string name;
  };
  std::vector<Span> spans;
  for (const bool is_mask : {false, true}) {
    const at::TensorList ts = is_mask ? masks : weights;
    for (size_t i = 0; i < ts.size(); ++i) {
      const at::Tensor& t = ts[i];
      if (t.numel() == 0) continue;
      int64_t last = 0;
      for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.stride(d);
      const int64_t begin = t.storage_offset() * int64_t(t.element_size());
      spans.push_back({t.storage().data(), begin, begin + (last + 1) * int64_t(t.element_size()),
                       item_name(is_mask ? "masks" : "weights", i)});
    }
  }
  std::stable_sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.storage != b.storage ? std::less<const void*>()(a.storage, b.storage) : a.begin < b.begin;
  });
  for (size_t i = 1; i < spans.size(); ++i) {
    TORCH_CHECK_VALUE(spans[i].storage != spans[i - 1].storage || spans[i].begin >= spans[i - 1].end,
                      spans[i - 1].name, " and ", spans[i].name,
                      ": share memory (the same tensor twice, or overlapping views); each is written in place, so "
                      "list every tensor once");
  }
}

void magnitude_prune_cpu(at::TensorList weights, std::optional<at::TensorList> grads, int64_t num_prune,
                         at::TensorList masks) {
  TORCH_CHECK_VALUE(masks.size() == weights.size(), "masks: expected one mask per weight (", weights.size(),
                    "), got ", masks.size());
  bool fused = true;  // every weight and mask contiguous: masks and zeros written in one sweep
  for (size_t i = 0; i < weights.size(); ++i) {
    const std::string mn = item_name("masks", i);
    check_cpu(masks[i], mn);
    TORCH_CHECK_TYPE(masks[i].scalar_type() == at::kBool, mn, ": expected a bool tensor, got ",
                     masks[i].scalar_type());
    TORCH_CHECK_VALUE(masks[i].sizes() == weights[i].sizes(), mn, ": expected shape ", weights[i].sizes(), ", got ",
                      masks[i].sizes());
    TORCH_CHECK_VALUE(at::has_internal_overlap(weights[i]) != at::MemOverlap::Yes, item_name("weights", i),
                      ": has overlapping elements (an expanded view); it is written in place");
    TORCH_CHECK_VALUE(at::has_internal_overlap(masks[i]) != at::MemOverlap::Yes, mn,
                      ": has overlapping elements (an expanded view); it is written in place");
    fused = fused && weights[i].is_contiguous() && masks[i].is_contiguous();
  }
  check_no_shared_memory(weights, masks);
  Sources s = gather(weights, grads);
  check_num_prune(num_prune, s.total);
  if (s.any_f64 || !fused) {
    // Masks first (nothing is written if they fail), then the pruned entries zeroed through the
    // weights' own strides.
    std::vector<at::Tensor> keep;
    if (s.any_f64) {
      keep = s.f64_masks(num_prune);
    } else {
      keep = masks_like(s);
      std::vector<uint8_t*> kp = mask_ptrs(keep);
      check_nan(KP::magnitude_mask(s.src.data(), int(s.src.size()), num_prune, kp.data(), nullptr,
                                   at::get_num_threads()), "of the");
    }
    for (size_t i = 0; i < weights.size(); ++i) {
      masks[i].copy_(keep[i]);
      weights[i].masked_fill_(keep[i].logical_not(), 0);
    }
    return;
  }
  std::vector<uint8_t*> mp;
  for (const at::Tensor& m : masks) mp.push_back(reinterpret_cast<uint8_t*>(m.data_ptr<bool>()));
  std::vector<void*> out;
  for (const at::Tensor& w : weights) out.push_back(w.mutable_data_ptr());
  check_nan(KP::magnitude_mask(s.src.data(), int(s.src.size()), num_prune, mp.data(), out.data(),
                               at::get_num_threads()), "of the");
  // Written through raw pointers: bump the version counters as an in-place ATen op would, so a
  // graph that saved a weight before pruning refuses to run backward with the pruned values.
  for (const at::Tensor& w : weights) w.unsafeGetTensorImpl()->bump_version();
  for (const at::Tensor& m : masks) m.unsafeGetTensorImpl()->bump_version();
}

at::Tensor nm_mask_cpu(const at::Tensor& weight, int64_t n, int64_t m, int64_t dim) {
  check_cpu(weight, "weight");
  const K::DType dt = prune_dtype(weight, "weight");
  dim = cpu::normalize_dim(weight, dim, "dim");
  TORCH_CHECK_VALUE(m >= 1 && m <= 64, "m: expected a group size in [1, 64], got ", m);
  TORCH_CHECK_VALUE(n >= 0 && n <= m, "n: expected 0 <= n <= m (", m, "), got ", n);
  const int64_t k = weight.size(dim);
  TORCH_CHECK_VALUE(k % m == 0, "weight: size ", k, " of dim ", dim, " is not a multiple of m (", m, ")");
  const at::Tensor moved = weight.movedim(dim, -1).contiguous();
  if (dt == K::DType::F64) {
    const at::Tensor groups = moved.abs().reshape({-1, m});
    const int64_t nans = groups.isnan().sum().item<int64_t>();
    TORCH_CHECK_VALUE(nans == 0, "weight: ", nans, " entries are NaN; N:M pruning needs non-NaN weights");
    // Stable descending order: equal magnitudes keep the lower index.
    const at::Tensor order = std::get<1>(at::sort(groups, /*stable=*/true, /*dim=*/1, /*descending=*/true));
    at::Tensor keep = at::zeros(groups.sizes(), groups.options().dtype(at::kBool));
    keep.scatter_(1, order.slice(1, 0, n), true);
    return keep.view(moved.sizes()).movedim(-1, dim).contiguous();
  }
  at::Tensor mask = at::empty(moved.sizes(), moved.options().dtype(at::kBool));
  const int64_t rows = k == 0 ? 0 : moved.numel() / k;
  const int64_t nans = KP::nm_mask(moved.const_data_ptr(), dt, rows, k, int(n), int(m),
                                   reinterpret_cast<uint8_t*>(mask.mutable_data_ptr<bool>()),
                                   at::get_num_threads());
  TORCH_CHECK_VALUE(nans == 0, "weight: ", nans, " entries are NaN; N:M pruning needs non-NaN weights");
  return mask.movedim(-1, dim).contiguous();
}

at::Tensor channel_norms_cpu(const at::Tensor& weight, int64_t dim, int64_t p, const std::optional<at::Tensor>& grad) {
  check_cpu(weight, "weight");
  const K::DType dt = prune_dtype(weight, "weight");
  dim = cpu::normalize_dim(weight, dim, "dim");
  TORCH_CHECK_VALUE(p == 1 || p == 2, "p: expected 1 (L1) or 2 (L2), got ", p);
  const at::Tensor w = weight.contiguous();
  at::Tensor g;
  if (grad.has_value()) {
    check_cpu(*grad, "grad");
    TORCH_CHECK_TYPE(grad->scalar_type() == weight.scalar_type(), "grad: expected dtype ", weight.scalar_type(),
                     " (that of weight), got ", grad->scalar_type());
    TORCH_CHECK_VALUE(grad->sizes() == weight.sizes(), "grad: expected shape ", weight.sizes(),
                      " (that of weight), got ", grad->sizes());
    g = grad->contiguous();
  }
  if (dt == K::DType::F64) {
    if (w.numel() == 0) return at::zeros({w.size(dim)}, w.options().dtype(at::kFloat));
    const at::Tensor x = (g.defined() ? w.mul(g) : w).movedim(dim, 0).reshape({w.size(dim), -1});
    return at::linalg_vector_norm(x, double(p), at::IntArrayRef{1}).to(at::kFloat);
  }
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= w.size(d);
  for (int64_t d = dim + 1; d < w.dim(); ++d) inner *= w.size(d);
  const int64_t channels = w.size(dim);
  at::Tensor out = at::empty({channels}, w.options().dtype(at::kFloat));
  KP::channel_norms(w.const_data_ptr(), g.defined() ? g.const_data_ptr() : nullptr, dt, outer, channels, inner,
                    int(p), out.mutable_data_ptr<float>(), at::get_num_threads());
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(edgegen, CPU, m) {
  m.impl("magnitude_scores", &magnitude_scores_cpu);
  m.impl("kth_smallest_score", &kth_smallest_score_cpu);
  m.impl("magnitude_mask", &magnitude_mask_cpu);
  m.impl("magnitude_prune_", &magnitude_prune_cpu);
  m.impl("nm_mask", &nm_mask_cpu);
  m.impl("channel_norms", &channel_norms_cpu);
}

}  // namespace edgegen
