// A whole decode step of a pre-norm Llama-family decoder (Llama, Mistral, Qwen2, Qwen3) on CPUs, float32: one call
// runs every layer for one new token per sequence, so the ~20 ops of a layer cost no Python and no dispatcher between
// them. Measured before this existed (SmolLM2-135M Q4_1, 2 threads): of 12.8 ms per token, 6.8 ms were the quantized
// GEMVs and ~4 ms the Python around the ops of 30 layers.
//
// Per layer, the same arithmetic as the layer-by-layer path (ops.rms_norm, ops.linear / quantized_linear,
// ops.rotary, the cache write, ops.attention's decode kernel, silu(gate) * up):
//   h = rms_norm(x + residual); q, k, v = h W_qkv^T (+ b); Qwen3: q, k = rms_norm per head; q, k rotated;
//   k, v written at cache_position; a = attention(q, cache[: position + 1]); h, residual = rms_norm(a W_o^T + residual);
//   g, u = h W_gate_up^T; x = (silu(g) * u) W_down^T
// and at the end rms_norm(x + residual) with the final norm's weight.
//
// `weights`: kSlots entries per layer, then the final norm's weight:
//   [input_layernorm, post_attention_layernorm, q_norm or None, k_norm or None,
//    then for qkv, o, gate_up, down: (weight or int codes, scales or None, mins or None, bias or None)]
// `formats`: per layer and linear (qkv, o, gate_up, down) a triple (bits, group, int8 activations): bits 0 for a
// float32 weight (torch's GEMM), 8 or 4 for fastformers' packed format (csrc/cpu/quant_linear.cpp), group its columns
// per scale; the third entry 1 for method blockwise_a8 (csrc/cpu/quant_linear_a8.cpp), else 0.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "argmax.h"
#include "attention.h"
#include "decode_step.h"
#include "norm.h"
#include "quant_linear.h"
#include "rotary.h"
#include "slots.h"

namespace fastformers {
namespace {

constexpr int64_t kSlots = 20;  // weights per layer: 2 norms, 2 per-head norms, 4 linears x (weight, scales, mins, bias)
constexpr int64_t kLinears = 4;
constexpr int64_t kFormat = 3;  // format entries per linear
const char* const kLinearNames[kLinears] = {"qkv", "o", "gate_up", "down"};
#define OP "fastformers_ext::decode_layers: "

at::Tensor norm_weight(const c10::List<c10::optional<at::Tensor>>& ws, int64_t i, int64_t size, bool optional,
                       int64_t layer, const char* name) {
  return vector_slot(ws, i, size, optional, OP, layer, name);
}

// Where a linear sits, for error messages (written only when a check fails): "layer 3 qkv", or "lm_head".
struct Where {
  int64_t layer;
  const char* name;
};
std::ostream& operator<<(std::ostream& out, const Where& w) {
  return w.layer < 0 ? out << w.name : out << "layer " << w.layer << " " << w.name;
}

// Checks one linear against (N outputs, K inputs); N < 0 takes whatever the weight has.
void checked(const DecodeLinear& l, const Where& where, int64_t N, int64_t K) {
  TORCH_CHECK(l.w.defined() && l.w.dim() == 2, OP, where, ": the weight is missing or not 2-D");
  if (N < 0) N = l.w.size(0);
  if (l.bits == 0) {
    TORCH_CHECK(is_f32(l.w) && l.w.size(0) == N && l.w.size(1) == K, OP, where, ": a float weight must be float32 (", N,
                ", ", K, "), got ", l.w.scalar_type(), " ", l.w.sizes());
  } else {
    TORCH_CHECK(l.bits == 4 || l.bits == 8, OP, where, ": bits=", l.bits, "; expected 0, 4 or 8");
    TORCH_CHECK(l.a8 == 0 || l.a8 == 1, OP, where, ": the int8-activation flag is ", l.a8, "; expected 0 or 1");
    TORCH_CHECK(K % 32 == 0 && l.group > 0 && (l.group % 32 == 0 || (l.group == 16 && l.bits == 8)), OP, where,
                ": in_features=", K, " and group=", l.group, " must be multiples of 32 (or group 16 for 8-bit codes)");
    TORCH_CHECK(l.w.scalar_type() == (l.bits == 8 ? at::kChar : at::kByte) && l.w.size(0) == N &&
                    l.w.size(1) == (l.bits == 8 ? K : K / 2) && l.w.is_contiguous(),
                OP, where, ": codes ", l.w.scalar_type(), " ", l.w.sizes(), " do not hold ", l.bits, "-bit weights (",
                N, ", ", K, ")");
    const int64_t groups = (K + l.group - 1) / l.group;
    TORCH_CHECK(l.scales.defined() && (is_f32(l.scales) || l.scales.scalar_type() == at::kHalf) &&
                    l.scales.dim() == 2 && l.scales.size(0) == N && l.scales.size(1) == groups &&
                    l.scales.is_contiguous(),
                OP, where, ": scales must be contiguous float32 or float16 (", N, ", ", groups, ")");
    TORCH_CHECK(l.mins.defined() ? l.mins.scalar_type() == l.scales.scalar_type() &&
                                       l.mins.sizes() == l.scales.sizes() && l.mins.is_contiguous()
                                 : l.bits == 8,
                OP, where, ": mins must be contiguous, of the scales' dtype and shape (4-bit weights need them)");
  }
  TORCH_CHECK(!l.bias.defined() || (is_f32(l.bias) && l.bias.dim() == 1 && l.bias.size(0) == N &&
                                    l.bias.is_contiguous()),
              OP, where, ": the bias must be a contiguous float32 vector of ", N);
}

// The linear `which` of `layer`, checked against (N outputs, K inputs).
DecodeLinear linear_at(const c10::List<c10::optional<at::Tensor>>& ws, at::IntArrayRef formats, int64_t layer,
                       int which, int64_t N, int64_t K) {
  const int64_t base = layer * kSlots + 4 + 4 * which;
  const int64_t f = (layer * kLinears + which) * kFormat;
  DecodeLinear l{slot(ws, base), slot(ws, base + 1), slot(ws, base + 2), slot(ws, base + 3), formats[f],
                 formats[f + 1], formats[f + 2]};
  checked(l, Where{layer, kLinearNames[which]}, N, K);
  return l;
}

at::Tensor run_linear(const at::Tensor& x2d, const DecodeLinear& l) {
  const c10::optional<at::Tensor> bias = l.bias.defined() ? c10::optional<at::Tensor>(l.bias) : c10::nullopt;
  if (l.bits == 0) return at::linear(x2d, l.w, bias);
  const QuantView view{static_cast<const uint8_t*>(l.w.data_ptr()), l.scales.data_ptr(),
                       l.mins.defined() ? l.mins.data_ptr() : nullptr, static_cast<int>(l.bits), l.w.size(0),
                       x2d.size(1), l.group, l.scales.scalar_type() == at::kHalf};
  return l.a8 ? quant_linear_a8_cpu(x2d, view, bias) : quant_linear_cpu(x2d, view, bias);
}


// Python's repr of a float (shortest digits that read back, ".0" on whole numbers), for error messages
std::string float_repr(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v < 0 ? "-inf" : "inf";
  char text[40];
  for (int digits = 1; digits <= 17; ++digits) {
    std::snprintf(text, sizeof(text), "%.*g", digits, v);
    if (std::strtod(text, nullptr) == v) break;
  }
  std::string out(text);
  if (out.find_first_of(".e") == std::string::npos) out += ".0";
  return out;
}

// The keys a one-token step may attend to from the model's attention_mask (batch, width <= length): None when every
// entry is 1, else (batch, length) bool, its columns past the mask False (the step reads none past the new token).
// Values other than 0 and 1 are refused, as cache_step refuses them.
c10::optional<at::Tensor> keep_mask(const at::Tensor& attention_mask, int64_t B, int64_t length) {
  TORCH_CHECK_VALUE(attention_mask.dim() == 2 && attention_mask.size(0) == B && attention_mask.size(1) <= length,
                    "attention_mask must have shape (batch, cached + new tokens) with batch ", B, " and at most ",
                    length, " columns, got ", attention_mask.sizes());
  const at::Tensor m = attention_mask.to(at::kDouble).contiguous();  // a few hundred values: exact for masks
  const double* mp = m.data_ptr<double>();
  bool zero = false;
  for (int64_t i = 0; i < m.numel(); ++i) {
    if (mp[i] == 0) {
      zero = true;
    } else if (mp[i] != 1) {
      const std::string value = attention_mask.is_floating_point() ? float_repr(mp[i])
                                : attention_mask.scalar_type() == at::kBool ? std::string(mp[i] ? "True" : "False")
                                : std::to_string(static_cast<int64_t>(mp[i]));
      TORCH_CHECK_VALUE(false, "attention_mask holds ", value, ": a mask holds 1 (attend) and 0 (padding) only");
    }
  }
  if (!zero) return c10::nullopt;
  at::Tensor keep = at::zeros({B, length}, attention_mask.options().dtype(at::kBool));
  keep.narrow(1, 0, m.size(1)).copy_(m.ne(0));
  return keep;
}

}  // namespace

DecodePlan::DecodePlan(const c10::List<c10::optional<at::Tensor>>& weights, std::vector<int64_t> formats,
                       int64_t num_heads, int64_t num_kv_heads, double eps, double scale,
                       const c10::optional<at::Tensor>& embedding, const c10::optional<at::Tensor>& inv_freq)
    : H_(num_heads), KV_(num_kv_heads), eps_(eps), scale_(scale) {
  const int64_t size = static_cast<int64_t>(weights.size());
  TORCH_CHECK(size > 1 && (size - 1) % kSlots == 0, OP "expected ", kSlots, " weights per layer plus the final "
              "norm's, got ", size);
  const int64_t layers = (size - 1) / kSlots;
  TORCH_CHECK(static_cast<int64_t>(formats.size()) == kFormat * kLinears * layers, OP "expected ",
              kFormat * kLinears, " format entries per layer (", kFormat * kLinears * layers, "), got ",
              formats.size());
  TORCH_CHECK(KV_ > 0 && H_ > 0 && H_ % KV_ == 0, OP "num_heads=", H_, " must be a multiple of num_kv_heads=", KV_);
  const at::Tensor first = slot(weights, 0);
  TORCH_CHECK(first.defined() && first.dim() == 1, OP "layer 0: input_layernorm must be a float32 vector");
  hidden_ = first.size(0);
  for (int64_t l = 0; l < layers; ++l) {
    const int64_t base = l * kSlots;
    DecodeLayer y;
    y.ln1 = norm_weight(weights, base, hidden_, false, l, "input_layernorm");
    y.ln2 = norm_weight(weights, base + 1, hidden_, false, l, "post_attention_layernorm");
    y.qkv = linear_at(weights, formats, l, 0, l == 0 ? -1 : (H_ + 2 * KV_) * D_, hidden_);
    if (l == 0) {
      TORCH_CHECK(y.qkv.w.size(0) % (H_ + 2 * KV_) == 0, OP "layer 0 qkv: ", y.qkv.w.size(0), " outputs are not "
                  "num_heads + 2 num_kv_heads = ", H_ + 2 * KV_, " heads");
      D_ = y.qkv.w.size(0) / (H_ + 2 * KV_);
    }
    y.qn = norm_weight(weights, base + 2, D_, true, l, "q_norm");
    y.kn = norm_weight(weights, base + 3, D_, true, l, "k_norm");
    y.o = linear_at(weights, formats, l, 1, hidden_, H_ * D_);
    y.gate_up = linear_at(weights, formats, l, 2, -1, hidden_);
    TORCH_CHECK(y.gate_up.w.size(0) % 2 == 0, OP "layer ", l, " gate_up: ", y.gate_up.w.size(0), " outputs is not "
                "two halves");
    y.inter = y.gate_up.w.size(0) / 2;
    y.down = linear_at(weights, formats, l, 3, hidden_, y.inter);
    layers_.push_back(std::move(y));
  }
  final_norm_ = norm_weight(weights, kSlots * layers, hidden_, false, layers, "the final norm");
  if (embedding.has_value()) {
    TORCH_CHECK(is_f32(*embedding) && embedding->dim() == 2 && embedding->size(1) == hidden_,
                OP "the embedding must be float32 (vocab, ", hidden_, "), got ", embedding->scalar_type(), " ",
                embedding->sizes());
    embedding_ = *embedding;
  }
  if (inv_freq.has_value()) {
    TORCH_CHECK(is_f32(*inv_freq) && inv_freq->dim() == 1 && 2 * inv_freq->size(0) <= D_,
                OP "inv_freq must be a float32 vector of at most head_dim / 2 = ", D_ / 2, ", got ",
                inv_freq->scalar_type(), " ", inv_freq->sizes());
    inv_freq_ = inv_freq->contiguous();
  }
}

void DecodePlan::recheck() const {
  const auto vector = [](const at::Tensor& t, int64_t size, int64_t layer, const char* name) {
    TORCH_CHECK(!t.defined() || (is_f32(t) && t.dim() == 1 && t.size(0) == size && t.is_contiguous()), OP "layer ",
                layer, ": ", name, " changed since the plan was made: it must stay a contiguous float32 vector of ",
                size, ", got ", t.scalar_type(), " ", t.sizes());
  };
  const int64_t count = static_cast<int64_t>(layers_.size());
  for (int64_t l = 0; l < count; ++l) {
    const DecodeLayer& y = layers_[l];
    vector(y.ln1, hidden_, l, "input_layernorm");
    vector(y.ln2, hidden_, l, "post_attention_layernorm");
    vector(y.qn, D_, l, "q_norm");
    vector(y.kn, D_, l, "k_norm");
    checked(y.qkv, Where{l, "qkv"}, (H_ + 2 * KV_) * D_, hidden_);
    checked(y.o, Where{l, "o"}, hidden_, H_ * D_);
    checked(y.gate_up, Where{l, "gate_up"}, 2 * y.inter, hidden_);
    checked(y.down, Where{l, "down"}, hidden_, y.inter);
  }
  vector(final_norm_, hidden_, count, "the final norm");
  TORCH_CHECK(!embedding_.defined() || (is_f32(embedding_) && embedding_.dim() == 2 && embedding_.size(1) == hidden_),
              OP "the embedding changed since the plan was made: it must stay float32 (vocab, ", hidden_, ")");
}

at::Tensor DecodePlan::step(const at::Tensor& tokens, const at::Tensor& position_ids,
                            const std::vector<at::Tensor>& k_caches, const std::vector<at::Tensor>& v_caches,
                            const at::Tensor& cache_position, const c10::optional<at::Tensor>& attention_mask,
                            const at::Tensor& written) const {
  recheck();
  return run_step(tokens, position_ids, k_caches, v_caches, cache_position, attention_mask, written);
}

at::Tensor DecodePlan::run_step(const at::Tensor& tokens, const at::Tensor& position_ids,
                                const std::vector<at::Tensor>& k_caches, const std::vector<at::Tensor>& v_caches,
                                const at::Tensor& cache_position, const c10::optional<at::Tensor>& attention_mask,
                                const at::Tensor& written) const {
  TORCH_CHECK(embedding_.defined() && inv_freq_.defined(), OP "this plan has no embedding or inv_freq to run step "
              "with");
  TORCH_CHECK(tokens.dim() == 2 && tokens.size(1) == 1 && tokens.scalar_type() == at::kLong, OP "input_ids must be "
              "int64 (batch, 1), got ", tokens.scalar_type(), " ", tokens.sizes());
  const int64_t B = tokens.size(0), vocab = embedding_.size(0);
  const at::Tensor ids = tokens.contiguous();
  const int64_t* ip = ids.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b)
    TORCH_CHECK_INDEX(ip[b] >= 0 && ip[b] < vocab, "input_ids holds token id ", ip[b], ", outside the vocabulary of "
                      "size ", vocab);
  const at::Tensor x = embedding_.index_select(0, ids.reshape({-1})).view({B, 1, hidden_});
  TORCH_CHECK(position_ids.dim() == 2 && position_ids.size(1) == 1 &&
                  (position_ids.size(0) == 1 || position_ids.size(0) == B),
              OP "position_ids must be (batch or 1, 1), got ", position_ids.sizes());
  TORCH_CHECK(!k_caches.empty(), OP "expected one key and one value cache per layer, got none");
  c10::optional<at::Tensor> keep;
  if (attention_mask.has_value()) keep = keep_mask(*attention_mask, B, k_caches[0].size(2));
  // the rotary tables as RotaryEmbedding computes them: (inv_freq x position) in float32, both halves, cos and sin
  const at::Tensor freqs = position_ids.to(at::kFloat).view({-1, 1, 1}) * inv_freq_.view({1, 1, -1});
  const at::Tensor angles = at::cat({freqs, freqs}, -1);
  at::Tensor out = layers(x, k_caches, v_caches, cache_position, keep, angles.cos(), angles.sin());
  TORCH_CHECK(written.dim() == 0 && written.scalar_type() == at::kLong, OP "the cache's written count must be an "
              "int64 scalar");
  written.clamp_min_(cache_position.reshape({1}).data_ptr<int64_t>()[0] + 1);
  return out;
}

std::tuple<int64_t, bool> DecodePlan::greedy(const at::Tensor& seq, int64_t cur, int64_t stop,
                                             const at::Tensor& positions, const std::vector<at::Tensor>& k_caches,
                                             const std::vector<at::Tensor>& v_caches, const at::Tensor& written,
                                             const at::Tensor& head, const c10::optional<at::Tensor>& head_scales,
                                             const c10::optional<at::Tensor>& head_mins,
                                             const c10::optional<at::Tensor>& head_bias,
                                             std::vector<int64_t> head_format, const at::Tensor& eos,
                                             const at::Tensor& forbid, const at::Tensor& forbid_until) const {
  TORCH_CHECK(seq.dim() == 2 && seq.size(0) == 1 && seq.scalar_type() == at::kLong && seq.is_contiguous(),
              OP "greedy: seq must be contiguous int64 (1, max_length), got ", seq.scalar_type(), " ", seq.sizes());
  const int64_t L = seq.size(1);
  TORCH_CHECK(cur >= 1 && cur <= stop && stop <= L, OP "greedy: need 1 <= cur (", cur, ") <= stop (", stop,
              ") <= max_length (", L, ")");
  TORCH_CHECK(positions.dim() == 2 && positions.size(0) == 1 && positions.size(1) >= stop &&
                  positions.scalar_type() == at::kLong,
              OP "greedy: positions must be int64 (1, >= ", stop, "), got ", positions.scalar_type(), " ",
              positions.sizes());
  TORCH_CHECK(head_format.size() == 3, OP "greedy: the head's format is (bits, group, int8 activations)");
  const auto opt = [](const c10::optional<at::Tensor>& t) { return t.has_value() ? *t : at::Tensor(); };
  const DecodeLinear lm{head, opt(head_scales), opt(head_mins), opt(head_bias), head_format[0], head_format[1],
                        head_format[2]};
  checked(lm, Where{-1, "lm_head"}, -1, hidden_);
  recheck();
  const int64_t V = lm.w.size(0);
  for (const at::Tensor* t : {&eos, &forbid, &forbid_until})
    TORCH_CHECK(t->dim() == 1 && t->scalar_type() == at::kLong && t->is_contiguous(), OP "greedy: eos, forbid and "
                "forbid_until must be contiguous int64 vectors");
  TORCH_CHECK(forbid.size(0) == forbid_until.size(0), OP "greedy: forbid and forbid_until differ in length");
  const int64_t* ep = eos.data_ptr<int64_t>();
  const int64_t* fp = forbid.data_ptr<int64_t>();
  const int64_t* up = forbid_until.data_ptr<int64_t>();
  int64_t* sp = seq.data_ptr<int64_t>();
  at::Tensor position = at::empty({1}, seq.options());
  while (cur < stop) {
    position.data_ptr<int64_t>()[0] = cur - 1;
    const at::Tensor x = run_step(seq.narrow(1, cur - 1, 1), positions.narrow(1, cur - 1, 1), k_caches, v_caches,
                                  position, c10::nullopt, written);
    const at::Tensor logits = run_linear(x.view({1, hidden_}), lm).contiguous();
    float* lp = logits.data_ptr<float>();
    float probe[16] = {0};  // 0 * an Inf or NaN is NaN: one pass, vectorized, tells whether every logit is finite
    int64_t i = 0;
    for (; i + 16 <= V; i += 16)
      for (int j = 0; j < 16; ++j) probe[j] += lp[i + j] * 0.f;
    for (; i < V; ++i) probe[0] += lp[i] * 0.f;
    for (int j = 0; j < 16; ++j)
      if (probe[j] != 0.f) return std::make_tuple(cur, false);
    for (int64_t k = 0; k < forbid.size(0); ++k)
      if (cur < up[k] && fp[k] >= 0 && fp[k] < V) lp[fp[k]] = -std::numeric_limits<float>::infinity();
    const int64_t next = argmax_row(lp, V);
    sp[cur++] = next;
    if (std::find(ep, ep + eos.size(0), next) != ep + eos.size(0)) break;
  }
  return std::make_tuple(cur, true);
}

at::Tensor DecodePlan::layers(const at::Tensor& x, at::TensorList k_caches, at::TensorList v_caches,
                              const at::Tensor& cache_position, const c10::optional<at::Tensor>& keep,
                              const at::Tensor& cos, const at::Tensor& sin) const {
  const int64_t layers = static_cast<int64_t>(layers_.size());
  TORCH_CHECK(static_cast<int64_t>(k_caches.size()) == layers && static_cast<int64_t>(v_caches.size()) == layers,
              OP "expected one key and one value cache per layer (", layers, "), got ", k_caches.size(), " and ",
              v_caches.size());
  TORCH_CHECK(is_f32(x) && x.dim() == 3 && x.size(1) == 1 && x.size(2) == hidden_, OP "x must be float32 (batch, 1, ",
              hidden_, "), got ", x.scalar_type(), " ", x.sizes());
  const int64_t B = x.size(0), hidden = hidden_, H = H_, KV = KV_, D = D_, width = (H + 2 * KV) * D;
  const at::Tensor& k0 = k_caches[0];
  TORCH_CHECK(k0.dim() == 4 && k0.size(0) == B && k0.size(1) == KV && k0.size(3) == D, OP "caches must be (batch, "
              "kv_heads, length, head_dim) = (", B, ", ", KV, ", ..., ", D, "), got ", k0.sizes());
  const int64_t length = k0.size(2);
  for (int64_t l = 0; l < layers; ++l)
    for (const at::Tensor* c : {&k_caches[l], &v_caches[l]})
      TORCH_CHECK(is_f32(*c) && c->sizes() == k0.sizes() && c->is_contiguous(), OP "layer ", l, ": caches must be "
                  "contiguous float32 of one shape ", k0.sizes(), ", got ", c->scalar_type(), " ", c->sizes());
  TORCH_CHECK(cache_position.numel() == 1 && cache_position.scalar_type() == at::kLong, OP "cache_position must "
              "hold one int64 position (one new token), got ", cache_position.scalar_type(), " ", cache_position.sizes());
  const int64_t pos = cache_position.reshape({1}).data_ptr<int64_t>()[0], end = pos + 1;
  TORCH_CHECK(pos >= 0 && pos < length, OP "cache_position ", pos, " is outside the cache's ", length, " slots");
  at::Tensor mask;
  if (keep.has_value()) {
    TORCH_CHECK(keep->dim() == 2 && (keep->size(0) == B || keep->size(0) == 1) && keep->size(1) == length,
                OP "the keep-mask must be (batch or 1, ", length, "), got ", keep->sizes());
    mask = keep->to(at::kBool).contiguous();
  }
  const at::Tensor c = cos.reshape({-1, cos.size(-1)}).contiguous(), s = sin.reshape({-1, sin.size(-1)}).contiguous();
  const int64_t R = c.size(1);
  TORCH_CHECK(is_f32(c) && is_f32(s) && c.sizes() == s.sizes() && (c.size(0) == 1 || c.size(0) == B) &&
                  R % 2 == 0 && R <= D && cos.numel() == c.numel(),
              OP "cos / sin must be float32 (batch or 1, 1, rot_dim) with rot_dim even and at most head_dim=", D,
              ", got ", cos.sizes(), " and ", sin.sizes());

  at::Tensor h, residual, state = x.reshape({B, hidden}).contiguous();
  at::Tensor attn = at::empty({B, H * D}, x.options());
  const float e = static_cast<float>(eps_), sc = static_cast<float>(scale_);
  const bool* mp = mask.defined() ? mask.data_ptr<bool>() : nullptr;
  const int64_t mask_step = mask.defined() && mask.size(0) > 1 ? length : 0;
  const float* cp = c.data_ptr<float>();
  const float* sp = s.data_ptr<float>();
  const int64_t rope_step = c.size(0) > 1 ? R : 0;
  for (int64_t l = 0; l < layers; ++l) {
    const DecodeLayer& y = layers_[l];
    if (!residual.defined()) {
      h = rms_norm_cpu(state, y.ln1, eps_);
      residual = state;
    } else {
      std::tie(h, residual) = add_rms_norm_cpu(state, residual, y.ln1, eps_);
    }
    const at::Tensor projected = run_linear(h, y.qkv);  // (B, (H + 2 KV) D): q heads, k heads, v heads
    float* pp = projected.data_ptr<float>();
    float* kc = k_caches[l].data_ptr<float>();
    float* vc = v_caches[l].data_ptr<float>();
    const float* qnp = y.qn.defined() ? y.qn.data_ptr<float>() : nullptr;
    const float* knp = y.kn.defined() ? y.kn.data_ptr<float>() : nullptr;
    for (int64_t b = 0; b < B; ++b) {
      float* row = pp + b * width;
      for (int64_t head = 0; head < H + KV; ++head) {
        float* r = row + head * D;
        const float* nw = head < H ? qnp : knp;
        if (nw) rms_row(r, nw, e, D, r);
        rotate_row(r, cp + b * rope_step, sp + b * rope_step, R, D, r);
      }
      for (int64_t g = 0; g < KV; ++g) {
        std::memcpy(kc + ((b * KV + g) * length + pos) * D, row + (H + g) * D, D * sizeof(float));
        std::memcpy(vc + ((b * KV + g) * length + pos) * D, row + (H + KV + g) * D, D * sizeof(float));
      }
    }
    float* ap = attn.data_ptr<float>();
    const int64_t group = H / KV;
    at::parallel_for(0, B * H, std::max<int64_t>(1, 32768 / (end * D)), [&](int64_t i0, int64_t i1) {
      std::vector<float> score(end);
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t b = i / H, head = i % H, g = head / group;
        const int64_t at = (b * KV + g) * length * D;
        attend_row(pp + b * width + head * D, kc + at, D, vc + at, D, mp ? mp + b * mask_step : nullptr, end, D, sc,
                   score.data(), ap + i * D);
      }
    });
    std::tie(h, residual) = add_rms_norm_cpu(run_linear(attn, y.o), residual, y.ln2, eps_);
    const at::Tensor gu = run_linear(h, y.gate_up);  // (B, 2 I): gate, then up
    const int64_t inter = y.inter;
    at::Tensor act = at::empty({B, inter}, x.options());
    const float* gp = gu.data_ptr<float>();
    float* acp = act.data_ptr<float>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < inter; ++i) {
        const float g = gp[b * 2 * inter + i];
        acp[b * inter + i] = g / (1.f + std::exp(-g)) * gp[b * 2 * inter + inter + i];
      }
    state = run_linear(act, y.down);
  }
  return std::get<0>(add_rms_norm_cpu(state, residual, final_norm_, eps_)).view({B, 1, hidden});
}

at::Tensor decode_layers_cpu(const at::Tensor& x, const c10::List<c10::optional<at::Tensor>>& weights,
                             at::IntArrayRef formats, at::TensorList k_caches, at::TensorList v_caches,
                             const at::Tensor& cache_position, const c10::optional<at::Tensor>& keep,
                             const at::Tensor& cos, const at::Tensor& sin, int64_t num_heads, int64_t num_kv_heads,
                             double eps, double scale) {
  const DecodePlan plan(weights, formats.vec(), num_heads, num_kv_heads, eps, scale, c10::nullopt, c10::nullopt);
  return plan.layers(x, k_caches, v_caches, cache_position, keep, cos, sin);
}

}  // namespace fastformers
