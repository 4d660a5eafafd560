// Registers every op of fastformers._C with torch.library under the `fastformers_ext::` namespace (`fastformers::`
// holds the Triton kernels' custom ops; a second registration of a name would abort the import). The fake (meta)
// implementations that let torch.compile trace through them are registered from Python
// (src/fastformers/ops/native.py), next to the code that loads this library.

#include <Python.h>
#include <ATen/ATen.h>
#include <torch/library.h>

#include <string>

#include "cpu/argmax.h"
#include "cpu/attention.h"
#include "cpu/decode_step.h"
#include "cpu/encoder_step.h"
#include "cpu/gemm_a8.h"
#include "cpu/gemm_f32.h"
#include "cpu/norm.h"
#include "cpu/quant_linear.h"
#include "cpu/rotary.h"

namespace fastformers {
namespace {

// Checks the packed weight and runs `kernel` (float or int8 activations) on it.
template <typename Kernel>
at::Tensor run_quant_linear(const char* op, Kernel kernel, const at::Tensor& x, const at::Tensor& qweight,
                            const at::Tensor& scales, const c10::optional<at::Tensor>& mins, int64_t bits,
                            int64_t group_size, const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(bits == 4 || bits == 8, op, ": bits=", bits, "; expected 4 or 8");
  TORCH_CHECK(x.scalar_type() == at::kFloat && (scales.scalar_type() == at::kFloat || scales.scalar_type() == at::kHalf),
              op, ": x must be float32 and scales float32 or float16, got ", x.scalar_type(), " and ",
              scales.scalar_type());
  TORCH_CHECK(qweight.dim() == 2 && scales.dim() == 2, op, ": qweight and scales must be 2-D");
  const int64_t N = qweight.size(0), K = x.size(-1);
  TORCH_CHECK(qweight.scalar_type() == (bits == 8 ? at::kChar : at::kByte) &&
                  qweight.size(1) == (bits == 8 ? K : K / 2),
              op, ": qweight ", qweight.sizes(), " ", qweight.scalar_type(), " does not hold ",
              bits, "-bit codes for ", K, " inputs");
  TORCH_CHECK(K % 32 == 0 && group_size > 0 && (group_size % 32 == 0 || (group_size == 16 && bits == 8)), op,
              ": in_features=", K, " and group_size=", group_size, " must be multiples of 32 (or group_size 16 for "
              "8-bit codes)");
  const int64_t groups = (K + group_size - 1) / group_size;
  TORCH_CHECK(scales.size(0) == N && scales.size(1) == groups, op, ": scales ", scales.sizes(),
              " should be (", N, ", ", groups, ")");
  if (mins.has_value())
    TORCH_CHECK(mins->scalar_type() == scales.scalar_type() && mins->sizes() == scales.sizes(),
                op, ": mins must have the scales' dtype and shape, got ", mins->scalar_type(),
                " ", mins->sizes());
  TORCH_CHECK(bits == 8 || mins.has_value(), op, ": 4-bit weights need mins");
  if (bias.has_value())
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->dim() == 1 && bias->size(0) == N,
                op, ": bias must be float32 of shape (", N, ")");
  const at::Tensor q = qweight.contiguous(), s = scales.contiguous();
  const c10::optional<at::Tensor> mn = mins.has_value() ? c10::optional<at::Tensor>(mins->contiguous()) : c10::nullopt;
  const c10::optional<at::Tensor> b = bias.has_value() ? c10::optional<at::Tensor>(bias->contiguous()) : c10::nullopt;
  QuantView w{static_cast<const uint8_t*>(q.data_ptr()), s.data_ptr(), mn.has_value() ? mn->data_ptr() : nullptr,
              static_cast<int>(bits), N, K, group_size, s.scalar_type() == at::kHalf};
  const at::Tensor x2d = x.reshape({-1, K}).contiguous();
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = N;
  return kernel(x2d, w, b).view(shape);
}

at::Tensor quant_linear(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scales,
                        const c10::optional<at::Tensor>& mins, int64_t bits, int64_t group_size,
                        const c10::optional<at::Tensor>& bias) {
  return run_quant_linear("fastformers_ext::quant_linear", quant_linear_cpu, x, qweight, scales, mins, bits, group_size,
                          bias);
}

at::Tensor quant_linear_a8(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scales,
                           const c10::optional<at::Tensor>& mins, int64_t bits, int64_t group_size,
                           const c10::optional<at::Tensor>& bias) {
  return run_quant_linear("fastformers_ext::quant_linear_a8", quant_linear_a8_cpu, x, qweight, scales, mins, bits,
                          group_size, bias);
}

// act(x W^T + bias) (+ residual) for x (..., K) and a weight packed for gemm_f32.h's GEMMs: float32 (pack_f32,
// `scales` undefined) or blockwise int8 codes (pack_q8, with their transposed scales).
at::Tensor packed_linear(const char* op, const at::Tensor& x, const at::Tensor& packed, int64_t out_features,
                         const at::Tensor& scales, const c10::optional<at::Tensor>& bias,
                         const c10::optional<at::Tensor>& residual, int64_t act) {
  TORCH_CHECK(x.dim() >= 1 && x.scalar_type() == at::kFloat, op, ": x must be float32, got ", x.scalar_type());
  TORCH_CHECK(out_features >= 0, op, ": out_features=", out_features);
  const int64_t K = x.size(-1);
  at::Tensor rows = x.reshape({-1, K});
  if (rows.stride(1) != 1) rows = rows.contiguous();
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = out_features;
  at::Tensor y = at::empty({rows.size(0), out_features}, x.options());
  at::Tensor r;
  if (residual.has_value()) {
    TORCH_CHECK(residual->sizes() == at::IntArrayRef(shape), op, ": the residual must be ", at::IntArrayRef(shape),
                ", got ", residual->sizes());
    r = residual->reshape({-1, out_features}).contiguous();
  }
  const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  if (scales.defined())
    gemm_block8_cpu(rows, packed, out_features, scales, b, r, act, y);
  else
    gemm_f32_cpu(rows, packed, out_features, b, r, act, y);
  return y.view(shape);
}

at::Tensor linear_f32(const at::Tensor& x, const at::Tensor& packed, int64_t out_features,
                      const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& residual, int64_t act) {
  return packed_linear("fastformers_ext::linear_f32", x, packed, out_features, at::Tensor(), bias, residual, act);
}

at::Tensor linear_block8(const at::Tensor& x, const at::Tensor& packed, int64_t out_features,
                         const at::Tensor& scales_t, const c10::optional<at::Tensor>& bias,
                         const c10::optional<at::Tensor>& residual, int64_t act) {
  return packed_linear("fastformers_ext::linear_block8", x, packed, out_features, scales_t, bias, residual, act);
}

std::string cpu_isa() { return selected_isa(); }
std::string cpu_a8_isa() { return selected_a8_isa(); }

}  // namespace
}  // namespace fastformers

TORCH_LIBRARY(fastformers_ext, m) {
  m.def("quant_linear(Tensor x, Tensor qweight, Tensor scales, Tensor? mins, int bits, int group_size, "
        "Tensor? bias) -> Tensor");
  m.def("quant_linear_a8(Tensor x, Tensor qweight, Tensor scales, Tensor? mins, int bits, int group_size, "
        "Tensor? bias) -> Tensor");
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
  m.def("add_rms_norm(Tensor x, Tensor residual, Tensor weight, float eps) -> (Tensor, Tensor)");
  m.def("rotary(Tensor q, Tensor k, Tensor cos, Tensor sin) -> (Tensor, Tensor)");
  m.def("decode_attention(Tensor q, Tensor k, Tensor v, Tensor? keep, float scale) -> Tensor");
  m.def("decode_layers(Tensor x, Tensor?[] weights, int[] formats, Tensor(a!)[] k_caches, Tensor(b!)[] v_caches, "
        "Tensor cache_position, Tensor? keep, Tensor cos, Tensor sin, int num_heads, int num_kv_heads, float eps, "
        "float scale) -> Tensor");
  m.def("encoder_layers(Tensor x, Tensor cu_seqlens, Tensor?[] weights, int[] formats, int num_heads, float eps, "
        "int act) -> Tensor");
  m.def("argmax(Tensor x) -> Tensor");
  m.def("pack_f32(Tensor weight) -> Tensor");
  m.def("linear_f32(Tensor x, Tensor packed, int out_features, Tensor? bias, Tensor? residual, int act) -> Tensor");
  m.def("pack_q8(Tensor codes) -> Tensor");
  m.def("linear_block8(Tensor x, Tensor packed, int out_features, Tensor scales_t, Tensor? bias, Tensor? residual, "
        "int act) -> Tensor");
  m.def("gemm_f32_usable() -> bool", &fastformers::gemm_f32_usable);
  m.def("gemm_a8_usable(bool per_token) -> bool", &fastformers::gemm_a8_usable);
  m.def("cpu_isa() -> str", &fastformers::cpu_isa);
  // the decode step's weights, checked once (csrc/cpu/decode_step.h): the model keeps one per set of modules
  m.class_<fastformers::DecodePlan>("DecodePlan")
      .def(torch::init<const c10::List<c10::optional<at::Tensor>>&, std::vector<int64_t>, int64_t, int64_t, double,
                       double, const c10::optional<at::Tensor>&, const c10::optional<at::Tensor>&>())
      .def("step", &fastformers::DecodePlan::step)
      .def("greedy", &fastformers::DecodePlan::greedy);
  m.def("cpu_a8_isa() -> str", &fastformers::cpu_a8_isa);
}

TORCH_LIBRARY_IMPL(fastformers_ext, CPU, m) {
  m.impl("quant_linear", &fastformers::quant_linear);
  m.impl("quant_linear_a8", &fastformers::quant_linear_a8);
  m.impl("rms_norm", &fastformers::rms_norm_cpu);
  m.impl("add_rms_norm", &fastformers::add_rms_norm_cpu);
  m.impl("rotary", &fastformers::rotary_cpu);
  m.impl("decode_attention", &fastformers::decode_attention_cpu);
  m.impl("decode_layers", &fastformers::decode_layers_cpu);
  m.impl("encoder_layers", &fastformers::encoder_layers_cpu);
  m.impl("argmax", &fastformers::argmax_cpu);
  m.impl("pack_f32", &fastformers::pack_f32_cpu);
  m.impl("linear_f32", &fastformers::linear_f32);
  m.impl("pack_q8", &fastformers::pack_q8_cpu);
  m.impl("linear_block8", &fastformers::linear_block8);
}

// oneDNN's packed weights (format 1 of encoder_layers) are MkldnnCPU tensors: a call holding one dispatches here
TORCH_LIBRARY_IMPL(fastformers_ext, MkldnnCPU, m) { m.impl("encoder_layers", &fastformers::encoder_layers_cpu); }

// Importing fastformers._C loads this library, which registers the ops above; the module itself is empty.
static struct PyModuleDef fastformers_c_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&fastformers_c_module); }
