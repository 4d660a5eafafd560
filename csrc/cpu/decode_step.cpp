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

#include <cmath>
#include <cstring>
#include <vector>

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

struct Linear {
  at::Tensor w, scales, mins, bias;
  int64_t bits = 0, group = 0, a8 = 0;
};

at::Tensor norm_weight(const c10::List<c10::optional<at::Tensor>>& ws, int64_t i, int64_t size, bool optional,
                       int64_t layer, const char* name) {
  return vector_slot(ws, i, size, optional, OP, layer, name);
}

// The linear `which` of `layer`, checked against (N outputs, K inputs); N < 0 takes whatever the weight has.
Linear linear_at(const c10::List<c10::optional<at::Tensor>>& ws, at::IntArrayRef formats, int64_t layer, int which,
                 int64_t N, int64_t K) {
  const int64_t base = layer * kSlots + 4 + 4 * which;
  const int64_t f = (layer * kLinears + which) * kFormat;
  Linear l{slot(ws, base), slot(ws, base + 1), slot(ws, base + 2), slot(ws, base + 3), formats[f], formats[f + 1],
           formats[f + 2]};
  const char* name = kLinearNames[which];
  TORCH_CHECK(l.w.defined() && l.w.dim() == 2, OP "layer ", layer, " ", name, ": the weight is missing or not 2-D");
  if (N < 0) N = l.w.size(0);
  if (l.bits == 0) {
    TORCH_CHECK(is_f32(l.w) && l.w.size(0) == N && l.w.size(1) == K, OP "layer ", layer, " ", name,
                ": a float weight must be float32 (", N, ", ", K, "), got ", l.w.scalar_type(), " ", l.w.sizes());
  } else {
    TORCH_CHECK(l.bits == 4 || l.bits == 8, OP "layer ", layer, " ", name, ": bits=", l.bits, "; expected 0, 4 or 8");
    TORCH_CHECK(l.a8 == 0 || l.a8 == 1, OP "layer ", layer, " ", name, ": the int8-activation flag is ", l.a8,
                "; expected 0 or 1");
    TORCH_CHECK(K % 32 == 0 && l.group > 0 && (l.group % 32 == 0 || (l.group == 16 && l.bits == 8)), OP "layer ",
                layer, " ", name, ": in_features=", K, " and group=", l.group, " must be multiples of 32 (or group 16 "
                "for 8-bit codes)");
    TORCH_CHECK(l.w.scalar_type() == (l.bits == 8 ? at::kChar : at::kByte) && l.w.size(0) == N &&
                    l.w.size(1) == (l.bits == 8 ? K : K / 2) && l.w.is_contiguous(),
                OP "layer ", layer, " ", name, ": codes ", l.w.scalar_type(), " ", l.w.sizes(), " do not hold ",
                l.bits, "-bit weights (", N, ", ", K, ")");
    const int64_t groups = (K + l.group - 1) / l.group;
    TORCH_CHECK(l.scales.defined() && (is_f32(l.scales) || l.scales.scalar_type() == at::kHalf) &&
                    l.scales.dim() == 2 && l.scales.size(0) == N && l.scales.size(1) == groups &&
                    l.scales.is_contiguous(),
                OP "layer ", layer, " ", name, ": scales must be contiguous float32 or float16 (", N, ", ", groups, ")");
    TORCH_CHECK(l.mins.defined() ? l.mins.scalar_type() == l.scales.scalar_type() &&
                                       l.mins.sizes() == l.scales.sizes() && l.mins.is_contiguous()
                                 : l.bits == 8,
                OP "layer ", layer, " ", name, ": mins must be contiguous, of the scales' dtype and shape (4-bit "
                "weights need them)");
  }
  TORCH_CHECK(!l.bias.defined() || (is_f32(l.bias) && l.bias.dim() == 1 && l.bias.size(0) == N &&
                                    l.bias.is_contiguous()),
              OP "layer ", layer, " ", name, ": the bias must be a contiguous float32 vector of ", N);
  return l;
}

at::Tensor run_linear(const at::Tensor& x2d, const Linear& l) {
  const c10::optional<at::Tensor> bias = l.bias.defined() ? c10::optional<at::Tensor>(l.bias) : c10::nullopt;
  if (l.bits == 0) return at::linear(x2d, l.w, bias);
  const QuantView view{static_cast<const uint8_t*>(l.w.data_ptr()), l.scales.data_ptr(),
                       l.mins.defined() ? l.mins.data_ptr() : nullptr, static_cast<int>(l.bits), l.w.size(0),
                       x2d.size(1), l.group, l.scales.scalar_type() == at::kHalf};
  return l.a8 ? quant_linear_a8_cpu(x2d, view, bias) : quant_linear_cpu(x2d, view, bias);
}

}  // namespace

at::Tensor decode_layers_cpu(const at::Tensor& x, const c10::List<c10::optional<at::Tensor>>& weights,
                             at::IntArrayRef formats, at::TensorList k_caches, at::TensorList v_caches,
                             const at::Tensor& cache_position, const c10::optional<at::Tensor>& keep,
                             const at::Tensor& cos, const at::Tensor& sin, int64_t num_heads, int64_t num_kv_heads,
                             double eps, double scale) {
  const int64_t layers = static_cast<int64_t>(k_caches.size());
  TORCH_CHECK(layers > 0 && static_cast<int64_t>(v_caches.size()) == layers, OP "expected one key and one value cache "
              "per layer, got ", k_caches.size(), " and ", v_caches.size());
  TORCH_CHECK(static_cast<int64_t>(weights.size()) == kSlots * layers + 1, OP "expected ", kSlots, " weights per layer "
              "plus the final norm's (", kSlots * layers + 1, "), got ", weights.size());
  TORCH_CHECK(static_cast<int64_t>(formats.size()) == kFormat * kLinears * layers, OP "expected ", kFormat * kLinears,
              " format entries per layer (", kFormat * kLinears * layers, "), got ", formats.size());
  TORCH_CHECK(is_f32(x) && x.dim() == 3 && x.size(1) == 1, OP "x must be float32 (batch, 1, hidden), got ",
              x.scalar_type(), " ", x.sizes());
  const int64_t B = x.size(0), hidden = x.size(2), H = num_heads, KV = num_kv_heads;
  TORCH_CHECK(KV > 0 && H > 0 && H % KV == 0, OP "num_heads=", H, " must be a multiple of num_kv_heads=", KV);
  const at::Tensor& k0 = k_caches[0];
  TORCH_CHECK(k0.dim() == 4 && k0.size(0) == B && k0.size(1) == KV, OP "caches must be (batch, kv_heads, length, "
              "head_dim) = (", B, ", ", KV, ", ...), got ", k0.sizes());
  const int64_t length = k0.size(2), D = k0.size(3), width = (H + 2 * KV) * D;
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
  const float e = static_cast<float>(eps), sc = static_cast<float>(scale);
  const bool* mp = mask.defined() ? mask.data_ptr<bool>() : nullptr;
  const int64_t mask_step = mask.defined() && mask.size(0) > 1 ? length : 0;
  const float* cp = c.data_ptr<float>();
  const float* sp = s.data_ptr<float>();
  const int64_t rope_step = c.size(0) > 1 ? R : 0;
  for (int64_t l = 0; l < layers; ++l) {
    const int64_t base = l * kSlots;
    const at::Tensor ln1 = norm_weight(weights, base, hidden, false, l, "input_layernorm");
    const at::Tensor ln2 = norm_weight(weights, base + 1, hidden, false, l, "post_attention_layernorm");
    const at::Tensor qn = norm_weight(weights, base + 2, D, true, l, "q_norm");
    const at::Tensor kn = norm_weight(weights, base + 3, D, true, l, "k_norm");
    const Linear qkv = linear_at(weights, formats, l, 0, width, hidden);
    const Linear o = linear_at(weights, formats, l, 1, hidden, H * D);
    const Linear gate_up = linear_at(weights, formats, l, 2, -1, hidden);
    const int64_t inter = gate_up.w.size(0) / 2;
    TORCH_CHECK(gate_up.w.size(0) % 2 == 0, OP "layer ", l, " gate_up: ", gate_up.w.size(0), " outputs is not two "
                "halves");
    const Linear down = linear_at(weights, formats, l, 3, hidden, inter);

    if (!residual.defined()) {
      h = rms_norm_cpu(state, ln1, eps);
      residual = state;
    } else {
      std::tie(h, residual) = add_rms_norm_cpu(state, residual, ln1, eps);
    }
    const at::Tensor projected = run_linear(h, qkv);  // (B, (H + 2 KV) D): q heads, k heads, v heads
    float* pp = projected.data_ptr<float>();
    float* kc = k_caches[l].data_ptr<float>();
    float* vc = v_caches[l].data_ptr<float>();
    const float* qnp = qn.defined() ? qn.data_ptr<float>() : nullptr;
    const float* knp = kn.defined() ? kn.data_ptr<float>() : nullptr;
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
    std::tie(h, residual) = add_rms_norm_cpu(run_linear(attn, o), residual, ln2, eps);
    const at::Tensor gu = run_linear(h, gate_up);  // (B, 2 I): gate, then up
    at::Tensor act = at::empty({B, inter}, x.options());
    const float* gp = gu.data_ptr<float>();
    float* acp = act.data_ptr<float>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < inter; ++i) {
        const float g = gp[b * 2 * inter + i];
        acp[b * inter + i] = g / (1.f + std::exp(-g)) * gp[b * 2 * inter + inter + i];
      }
    state = run_linear(act, down);
  }
  const at::Tensor final_norm = norm_weight(weights, kSlots * layers, hidden, false, layers, "the final norm");
  return std::get<0>(add_rms_norm_cpu(state, residual, final_norm, eps)).view({B, 1, hidden});
}

}  // namespace fastformers
