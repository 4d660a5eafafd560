#pragma once

// Reading the `Tensor?[] weights` list of the one-call ops (decode_step.cpp, encoder_step.cpp).

#include <ATen/ATen.h>
#include <ATen/core/List.h>

#include <string>

namespace fastformers {

inline at::Tensor slot(const c10::List<c10::optional<at::Tensor>>& ws, int64_t i) {
  c10::optional<at::Tensor> t = ws.get(i);
  return t.has_value() ? *t : at::Tensor();
}

inline bool is_f32(const at::Tensor& t) { return t.defined() && t.scalar_type() == at::kFloat; }

// weights[i], checked to be a contiguous float32 vector of `size` (None allowed when `optional`); errors name the op,
// the layer and the vector.
inline at::Tensor vector_slot(const c10::List<c10::optional<at::Tensor>>& ws, int64_t i, int64_t size, bool optional,
                              const char* op, int64_t layer, const char* name) {
  at::Tensor w = slot(ws, i);
  if (!w.defined() && optional) return w;
  TORCH_CHECK(is_f32(w) && w.dim() == 1 && w.size(0) == size && w.is_contiguous(), op, "layer ", layer, ": ", name,
              " must be a contiguous float32 vector of ", size, ", got ",
              w.defined() ? c10::str(w.scalar_type(), " ", w.sizes()) : std::string("None"));
  return w;
}

}  // namespace fastformers
