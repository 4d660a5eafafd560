#pragma once

#include <ATen/ATen.h>
#include <ATen/core/List.h>
#include <torch/custom_class.h>

#include <tuple>
#include <vector>

namespace fastformers {

// One linear of a layer as the step reads it: a float32 weight (bits 0) or packed codes, scales, mins; the bias.
struct DecodeLinear {
  at::Tensor w, scales, mins, bias;
  int64_t bits = 0, group = 0, a8 = 0;
};

struct DecodeLayer {
  at::Tensor ln1, ln2, qn, kn;  // q_norm / k_norm undefined where the family has none
  DecodeLinear qkv, o, gate_up, down;
  int64_t inter = 0;
};

// The weights of a pre-norm Llama-family decoder (see decode_step.cpp for the layout of `weights` and `formats`),
// checked once when it is made, so a step converts and checks no per-layer arguments: the model keeps one
// (torch.classes.fastformers_ext.DecodePlan) while its modules stay as they were.
//   layers(): one decode step (one new token per sequence) through every layer, from the embeddings x: each layer's
//             key / value written into its static cache at cache_position; returns the final RMSNorm's output
//             (batch, 1, hidden). What the decode_layers op runs.
//   step():   the same from token ids (the embedding rows taken here), position ids (the rotary tables made here with
//             RotaryEmbedding's arithmetic) and the model's attention_mask (its values checked here; a mask of ones
//             reads as none), then the cache's written count raised past cache_position (StaticCache.mark_written).
class DecodePlan : public torch::CustomClassHolder {
 public:
  DecodePlan(const c10::List<c10::optional<at::Tensor>>& weights, std::vector<int64_t> formats, int64_t num_heads,
             int64_t num_kv_heads, double eps, double scale, const c10::optional<at::Tensor>& embedding,
             const c10::optional<at::Tensor>& inv_freq);

  at::Tensor layers(const at::Tensor& x, at::TensorList k_caches, at::TensorList v_caches,
                    const at::Tensor& cache_position, const c10::optional<at::Tensor>& keep, const at::Tensor& cos,
                    const at::Tensor& sin) const;

  at::Tensor step(const at::Tensor& tokens, const at::Tensor& position_ids, const std::vector<at::Tensor>& k_caches,
                  const std::vector<at::Tensor>& v_caches, const at::Tensor& cache_position,
                  const c10::optional<at::Tensor>& attention_mask, const at::Tensor& written) const;

  // generate()'s greedy loop for one unpadded sequence, every step here: seq (1, max_length) holds `cur` tokens;
  // while cur < stop: step() on token cur - 1 at cache position cur - 1 (rotary position positions[0, cur - 1]),
  // the LM head (`head`: a linear in the layers' formats), the ids in `forbid` set to -inf while cur < their
  // `forbid_until` (min_length / min_new_tokens), seq[0, cur] = the argmax (ops.argmax's rule), then stop after an
  // id in `eos`. Returns (cur, false) without choosing a token when the logits hold NaN or Inf, else (cur, true).
  std::tuple<int64_t, bool> greedy(const at::Tensor& seq, int64_t cur, int64_t stop, const at::Tensor& positions,
                                   const std::vector<at::Tensor>& k_caches, const std::vector<at::Tensor>& v_caches,
                                   const at::Tensor& written, const at::Tensor& head,
                                   const c10::optional<at::Tensor>& head_scales,
                                   const c10::optional<at::Tensor>& head_mins,
                                   const c10::optional<at::Tensor>& head_bias, std::vector<int64_t> head_format,
                                   const at::Tensor& eos, const at::Tensor& forbid,
                                   const at::Tensor& forbid_until) const;

 private:
  // The checks made when the plan was built, made again on the tensors as they are now: a weight given another shape or
  // dtype since (`param.data = ...`, `model.to(...)`) raises instead of being read as it was. step() runs them per
  // call, greedy() once per call (no Python runs between its steps).
  void recheck() const;
  at::Tensor run_step(const at::Tensor& tokens, const at::Tensor& position_ids, const std::vector<at::Tensor>& k_caches,
                      const std::vector<at::Tensor>& v_caches, const at::Tensor& cache_position,
                      const c10::optional<at::Tensor>& attention_mask, const at::Tensor& written) const;

  int64_t H_, KV_, D_ = 0, hidden_ = 0;
  double eps_, scale_;
  std::vector<DecodeLayer> layers_;
  at::Tensor final_norm_, embedding_, inv_freq_;
};

// The decode_layers op: a DecodePlan made for this one call, then layers().
at::Tensor decode_layers_cpu(const at::Tensor& x, const c10::List<c10::optional<at::Tensor>>& weights,
                             at::IntArrayRef formats, at::TensorList k_caches, at::TensorList v_caches,
                             const at::Tensor& cache_position, const c10::optional<at::Tensor>& keep,
                             const at::Tensor& cos, const at::Tensor& sin, int64_t num_heads, int64_t num_kv_heads,
                             double eps, double scale);

}  // namespace fastformers
