// Every layer of a post-norm BERT-family encoder (BERT, RoBERTa, XLM-RoBERTa, ELECTRA) on CPUs, float32, in one
// call: the ~15 ops of a layer cost no Python and no dispatch between them. Measured before this existed
// (all-MiniLM-L6-v2, batch 1 x 16 tokens, 2 threads): 6.6 ms per forward, of which the 24 GEMMs were ~3.2 ms.
//
// The tokens come unpadded: x (tokens, hidden) holds the sequences one after another, cu_seqlens (batch + 1) their
// offsets, and each token attends to the tokens of its own sequence only (a padded batch is unpadded first, so no
// pad token is computed and no mask is needed). Per layer, the arithmetic of the layer-by-layer path:
//   q, k, v = x W_qkv^T + b; a = softmax(q k^T / sqrt(head_dim)) v per sequence and head;
//   h = LayerNorm(a W_o^T + b + x); x = LayerNorm(act(h W_i^T + b) W_out^T + b + h)
//
// `weights`: kSlots entries per layer: for qkv, o, intermediate, output a (weight, scales or None, bias or None)
// triple, then the two LayerNorms' (weight, bias).
// `formats`: per layer and linear one kind:
//   0  float32 weight (out, in), torch's GEMM;
//   1  oneDNN's packed copy of a float32 weight (torch.ops.mkldnn._reorder_linear_weight), its packed GEMM, with
//      the activation as oneDNN's post-op for the intermediate linear (ops/linear.py packs the same way);
//   2  W8A8: int8 codes (out, in) and float32 scales (out): activations quantized per token to int8 (round half to
//      even of x / (max|x| / 127)), the products summed in int32 (int8_sums: torch._int_mm with AVX-512 VNNI, exact
//      float32 GEMMs elsewhere), then acc * sx * scale + bias.
//   3  method blockwise_a8 with 8-bit codes in groups of 32, packed for gemm_a8.cpp (ops/encoder.py's
//      pack_blockwise8: uint8 (out, in) and the scales transposed, (in / 32, out)); AVX-512 VNNI only.
//   4  W8A8 as 2, the codes packed for gemm_a8.cpp (ops/encoder.py's pack_w8a8: uint8 (out, in); scales (out)), the
//      same integer sums by its VNNI tiles (or its AVX2 int16 tiles) instead of torch._int_mm.
//   5  a float32 weight packed for gemm_f32.cpp (fastformers_ext::pack_f32: (ceil(out / 16), in, 16)), its AVX2
//      GEMM with the bias, the activation (intermediate) and the residual (o, output) in its epilogue.
//   6  as 3 (blockwise_a8, 8-bit codes in groups of 32) for CPUs with AVX2 (gemm_f32.cpp's gemm_block8): the codes
//      packed by fastformers_ext::pack_q8 (int8 (ceil(out / 16), in, 16)), the scales transposed, (in / 32, out);
//      the epilogue as format 5's.
// `act`: 0 GELU (erf), 1 GELU (tanh approximation).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "attention.h"
#include "avx2.h"
#include "encoder_step.h"
#include "gemm_a8.h"
#include "gemm_f32.h"
#include "quant_x86.h"
#include "slots.h"

#if (defined(__x86_64__) || defined(_M_X64)) && !defined(__clang__) && defined(__linux__)
// the loops below are written so the compiler vectorizes them; each clone gets its instruction set's width
#define FF_WIDE __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FF_WIDE
#endif

namespace fastformers {
namespace {

constexpr int64_t kSlots = 16;  // weights per layer: 4 linears x (weight, scales, bias), 2 LayerNorms x (weight, bias)
constexpr int64_t kLinears = 4;
constexpr int kLanes = 16;  // independent accumulators: the compiler vectorizes sums without reassociating them
const char* const kLinearNames[kLinears] = {"qkv", "o", "intermediate", "output"};
#define OP "fastformers_ext::encoder_layers: "

enum Kind : int64_t {
  kFloat = 0, kPacked = 1, kW8A8 = 2, kBlock8 = 3, kW8A8Packed = 4, kF32Packed = 5, kBlock8Panels = 6
};

struct Linear {
  at::Tensor w, scales, bias;
  int64_t kind = kFloat;
};

at::Tensor vector_at(const c10::List<c10::optional<at::Tensor>>& ws, int64_t i, int64_t size, int64_t layer,
                     const char* name) {
  return vector_slot(ws, i, size, false, OP, layer, name);
}

// The input features of the linear `which` of `layer` (size(1) of its weight in every format), 0 when it is missing.
int64_t inputs_of(const c10::List<c10::optional<at::Tensor>>& ws, int64_t layer, int which) {
  const at::Tensor w = slot(ws, layer * kSlots + 3 * which);
  return w.defined() && w.dim() >= 2 ? w.size(1) : 0;
}

// The linear `which` of `layer`, checked against (N outputs, K inputs).
Linear linear_at(const c10::List<c10::optional<at::Tensor>>& ws, at::IntArrayRef formats, int64_t layer, int which,
                 int64_t N, int64_t K) {
  const int64_t base = layer * kSlots + 3 * which;
  Linear l{slot(ws, base), slot(ws, base + 1), slot(ws, base + 2), formats[layer * kLinears + which]};
  const char* name = kLinearNames[which];
  if (l.kind == kF32Packed || l.kind == kBlock8Panels) {
    const bool f32 = l.kind == kF32Packed;
    TORCH_CHECK(gemm_f32_usable(), OP "layer ", layer, " ", name, ": format ", l.kind, " needs AVX2 with FMA, which "
                "this CPU lacks (or FASTFORMERS_CPU_PORTABLE=1)");
    TORCH_CHECK(l.w.defined() && l.w.scalar_type() == (f32 ? at::kFloat : at::kChar) && l.w.dim() == 3 &&
                    l.w.is_contiguous() && !l.w.is_mkldnn() && l.w.size(0) == (N + 15) / 16 && l.w.size(1) == K &&
                    l.w.size(2) == 16,
                OP "layer ", layer, " ", name, ": format ", l.kind, " takes a contiguous ", f32 ? "float32 weight "
                "packed by pack_f32" : "int8 weight packed by pack_q8", ", (", (N + 15) / 16, ", ", K, ", 16) for (",
                N, ", ", K, "), got ", l.w.defined() ? l.w.sizes() : at::IntArrayRef{});
  } else {
    TORCH_CHECK(l.w.defined() && l.w.dim() == 2, OP "layer ", layer, " ", name, ": the weight is missing or not 2-D");
    TORCH_CHECK(l.w.size(0) == N && l.w.size(1) == K, OP "layer ", layer, " ", name, ": the weight is ",
                l.w.sizes(), ", expected (", N, ", ", K, ")");
  }
  switch (l.kind) {
    case kFloat:
      TORCH_CHECK(is_f32(l.w) && !l.w.is_mkldnn(), OP "layer ", layer, " ", name, ": format 0 takes a float32 "
                  "strided weight, got ", l.w.scalar_type(), l.w.is_mkldnn() ? " (oneDNN-packed: format 1)" : "");
      break;
    case kPacked:
      TORCH_CHECK(is_f32(l.w) && l.w.is_mkldnn(), OP "layer ", layer, " ", name, ": format 1 takes oneDNN's packed "
                  "float32 weight (torch.ops.mkldnn._reorder_linear_weight)");
      break;
    case kW8A8:
      TORCH_CHECK(l.w.scalar_type() == at::kChar && l.w.is_contiguous(), OP "layer ", layer, " ", name,
                  ": format 2 (W8A8) takes contiguous int8 codes, got ", l.w.scalar_type());
      TORCH_CHECK(is_f32(l.scales) && l.scales.numel() == N && l.scales.is_contiguous(), OP "layer ", layer, " ", name,
                  ": W8A8 needs contiguous float32 scales, one per output (", N, ")");
      break;
    case kBlock8:
      TORCH_CHECK(gemm_a8_usable(false), OP "layer ", layer, " ", name, ": format 3 needs AVX-512 VNNI, which this "
                  "CPU lacks (or FASTFORMERS_CPU_PORTABLE=1)");
      TORCH_CHECK(l.w.scalar_type() == at::kByte && l.w.is_contiguous() && N % 32 == 0 && K % 32 == 0, OP "layer ",
                  layer, " ", name, ": format 3 takes contiguous packed uint8 codes with outputs and inputs multiples "
                  "of 32, got ", l.w.scalar_type(), " ", l.w.sizes());
      TORCH_CHECK(is_f32(l.scales) && l.scales.dim() == 2 && l.scales.size(0) == K / 32 && l.scales.size(1) == N &&
                      l.scales.is_contiguous(),
                  OP "layer ", layer, " ", name, ": format 3 needs contiguous float32 scales (", K / 32, ", ", N, ")");
      break;
    case kW8A8Packed:
      TORCH_CHECK(gemm_a8_usable(true), OP "layer ", layer, " ", name, ": format 4 needs AVX-512 VNNI or AVX2, which "
                  "this CPU lacks (or FASTFORMERS_CPU_PORTABLE=1)");
      TORCH_CHECK(l.w.scalar_type() == at::kByte && l.w.is_contiguous() && N % 32 == 0 && K % 32 == 0 && K <= 32768,
                  OP "layer ", layer, " ", name, ": format 4 takes contiguous packed uint8 codes with outputs and "
                  "inputs multiples of 32 (inputs at most 32768), got ", l.w.scalar_type(), " ", l.w.sizes());
      TORCH_CHECK(is_f32(l.scales) && l.scales.numel() == N && l.scales.is_contiguous(), OP "layer ", layer, " ", name,
                  ": format 4 (W8A8) needs contiguous float32 scales, one per output (", N, ")");
      break;
    case kF32Packed:
      break;
    case kBlock8Panels:
      TORCH_CHECK(K % 32 == 0 && is_f32(l.scales) && l.scales.dim() == 2 && l.scales.size(0) == K / 32 &&
                      l.scales.size(1) == N && l.scales.is_contiguous(),
                  OP "layer ", layer, " ", name, ": format 6 needs inputs a multiple of 32 (got ", K, ") and contiguous "
                  "float32 scales (", K / 32, ", ", N, ")");
      break;
    default:
      TORCH_CHECK(false, OP "layer ", layer, " ", name, ": format ", l.kind, "; expected 0 (float32), 1 (oneDNN-packed "
                  "float32), 2 (W8A8), 3 (packed int8 with int8 activations per block of 32), 4 (W8A8, packed), 5 "
                  "(float32 packed by pack_f32) or 6 (blockwise int8 packed by pack_q8)");
  }
  TORCH_CHECK(!l.bias.defined() || (is_f32(l.bias) && l.bias.dim() == 1 && l.bias.size(0) == N &&
                                    l.bias.is_contiguous()),
              OP "layer ", layer, " ", name, ": the bias must be a contiguous float32 vector of ", N);
  return l;
}

// torch.ops.mkldnn._linear_pointwise(x, packed, bias, attr, [], algorithm), called through the dispatcher (the op
// is torch's; a boxed call needs no C++ signature of it).
at::Tensor packed_linear(const at::Tensor& x, const Linear& l, const char* attr, const char* algorithm) {
  static const c10::OperatorHandle op =
      c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_linear_pointwise", "");
  std::vector<c10::IValue> stack;
  stack.reserve(6);
  stack.emplace_back(x);
  stack.emplace_back(l.w);
  stack.emplace_back(l.bias.defined() ? c10::IValue(l.bias) : c10::IValue());
  stack.emplace_back(std::string(attr));
  stack.emplace_back(c10::List<c10::optional<at::Scalar>>());
  stack.emplace_back(std::string(algorithm));
  op.callBoxed(&stack);
  return stack[0].toTensor();
}

// Per-token symmetric int8 (ops.quant.quantize_activations): xq = round(x / sx), sx = max(max|x| / 127, FLT_MIN).
FF_WIDE void quantize_row(const float* x, int64_t K, int8_t* q, float* scale) {
  float lanes[kLanes] = {0};
  int64_t i = 0;
  for (; i + kLanes <= K; i += kLanes)
    for (int j = 0; j < kLanes; ++j) lanes[j] = std::max(lanes[j], std::fabs(x[i + j]));
  float amax = 0;
  for (int j = 0; j < kLanes; ++j) amax = std::max(amax, lanes[j]);
  for (; i < K; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float s = std::max(amax / 127.f, FLT_MIN);
  for (int64_t k = 0; k < K; ++k)
    q[k] = static_cast<int8_t>(std::min(127.f, std::max(-127.f, std::nearbyint(x[k] / s))));
  *scale = s;
}

FF_WIDE void dequantize_row(const int32_t* acc, float sx, const float* scales, const float* bias, int64_t N,
                            float* out) {
  if (bias)
    for (int64_t n = 0; n < N; ++n) out[n] = static_cast<float>(acc[n]) * sx * scales[n] + bias[n];
  else
    for (int64_t n = 0; n < N; ++n) out[n] = static_cast<float>(acc[n]) * sx * scales[n];
}

// Buffers reused from layer to layer and call to call (per thread): fresh allocations of a few MB per GEMM cost page
// faults on every call (measured: MiniLM 8 x 128, ~30% of the samples in the kernel). Released after a call that
// needed more than kKeepBytes in all.
enum Buffer { kQkv, kAttn, kHidden, kInter, kOut, kCodes, kSums, kBuffers };
constexpr size_t kKeepBytes = size_t(64) << 20;

// Plain memory, not tensors: a thread_local at::Tensor would be destroyed at exit after torch's allocator.
struct Block {
  void* data = nullptr;
  size_t bytes = 0;
  ~Block() { std::free(data); }
  void reset() {
    std::free(data);
    data = nullptr;
    bytes = 0;
  }
};
thread_local Block workspace[kBuffers];

// A (rows, cols) tensor over buffer `which` (grown as needed; the tensor does not own it).
at::Tensor buffer(Buffer which, int64_t rows, int64_t cols, at::ScalarType dtype) {
  Block& b = workspace[which];
  const size_t bytes = static_cast<size_t>(rows * cols) * at::elementSize(dtype);
  if (b.bytes < bytes) {
    b.reset();
    const size_t rounded = (bytes + 63) / 64 * 64;
    b.data = std::aligned_alloc(64, rounded);
    TORCH_CHECK(b.data != nullptr, OP "out of memory for a ", rounded, "-byte buffer");
    b.bytes = rounded;
  }
  return at::from_blob(b.data, {rows, cols}, at::TensorOptions().dtype(dtype));
}

// glibc gives a freed block of a few MB back to the OS (munmap, or a trim of the heap's top) under its default,
// self-adjusting thresholds, so the next call faults the memory of oneDNN's fresh GEMM outputs back in, page by page
// (measured: MiniLM 8 x 128, ~9,000 page faults and ~6% of the time per forward). From the first call on, blocks
// under 32 MB come from the heap and up to 128 MB of freed heap stay mapped for the next call, for the whole process
// (FASTFORMERS_MALLOC_TUNE=0 keeps glibc's defaults).
void keep_freed_memory() {
#if defined(__GLIBC__)
  static const bool tuned = [] {
    const char* setting = std::getenv("FASTFORMERS_MALLOC_TUNE");
    if (setting != nullptr && std::string(setting) == "0") return false;
    return mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, 128 << 20) == 1;
  }();
  (void)tuned;
#endif
}

void release_workspace_if_large() {
  size_t bytes = 0;
  for (const Block& b : workspace) bytes += b.bytes;
  if (bytes > kKeepBytes)
    for (Block& b : workspace) b.reset();
}

// acc = xq wq^T summed exactly in int32, as ops/quant.py's int8_matmul: torch._int_mm where the CPU has AVX-512 VNNI
// (or AMX, whose CPUs have it too); elsewhere oneDNN's int8 GEMM is ~20x slower than its float32 one, so float32 GEMMs
// over blocks of at most 1024 columns, whose partial sums are integers below 2^24 (exact), added in int32.
void int8_sums(const at::Tensor& xq, const at::Tensor& wq, at::Tensor& acc) {
#if FF_X86
  static const bool vnni = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vnni") != 0;
  }();
#else
  const bool vnni = true;
#endif
  if (vnni) {
    at::_int_mm_out(acc, xq, wq.t());
    return;
  }
  constexpr int64_t kExactColumns = 1024;  // 1024 * 127 * 127 < 2^24
  const int64_t K = xq.size(1);
  acc.zero_();
  for (int64_t k0 = 0; k0 < K; k0 += kExactColumns) {
    const int64_t k1 = std::min(K, k0 + kExactColumns);
    acc.add_(at::mm(xq.slice(1, k0, k1).to(at::kFloat), wq.slice(1, k0, k1).to(at::kFloat).t()).to(at::kInt));
  }
}

at::Tensor w8a8_linear(const at::Tensor& x, const Linear& l, at::Tensor out) {
  const int64_t T = x.size(0), K = x.size(1), N = l.w.size(0);
  at::Tensor xq = buffer(kCodes, T, K, at::kChar);
  std::vector<float> sx(T);
  const float* xp = x.data_ptr<float>();
  int8_t* qp = xq.data_ptr<int8_t>();
  at::parallel_for(0, T, 16, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) quantize_row(xp + t * K, K, qp + t * K, &sx[t]);
  });
  at::Tensor acc = buffer(kSums, T, N, at::kInt);
  int8_sums(xq, l.w, acc);
  const int32_t* ap = acc.data_ptr<int32_t>();
  const float* sp = l.scales.data_ptr<float>();
  const float* bp = l.bias.defined() ? l.bias.data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();
  at::parallel_for(0, T, 16, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) dequantize_row(ap + t * N, sx[t], sp, bp, N, op + t * N);
  });
  return out;
}

// act(x W^T + b) when `activate`, else x W^T + b, for N outputs: written into buffer `into` (oneDNN's packed GEMM
// returns its own). `residual` (formats 5 and 6 only; else undefined) is added in the GEMM's epilogue.
at::Tensor run_linear(const at::Tensor& x, const Linear& l, int64_t N, bool activate, int64_t act, Buffer into,
                      const at::Tensor& residual = at::Tensor()) {
  const char* approximate = act == 1 ? "tanh" : "none";
  if (l.kind == kPacked)
    return packed_linear(x, l, activate ? "gelu" : "none", activate ? approximate : "").contiguous();
  at::Tensor y = buffer(into, x.size(0), N, at::kFloat);
  if (l.kind == kF32Packed) {
    gemm_f32_cpu(x, l.w, N, l.bias, residual, activate ? act + 1 : 0, y);
    return y;
  }
  if (l.kind == kBlock8Panels) {
    gemm_block8_cpu(x, l.w, N, l.scales, l.bias, residual, activate ? act + 1 : 0, y);
    return y;
  }
  if (l.kind == kW8A8)
    w8a8_linear(x, l, y);
  else if (l.kind == kBlock8 || l.kind == kW8A8Packed)
    gemm_a8_cpu(x, l.w, l.scales, l.bias, y, l.kind == kW8A8Packed);
  else
    at::linear_out(y, x, l.w, l.bias.defined() ? c10::optional<at::Tensor>(l.bias) : c10::nullopt);
  return activate ? at::gelu_(y, approximate) : y;
}

#if FF_X86
// e^x for x <= 0 (a max-subtracted score), 16 at a time, within ~2 ulp: x = n ln2 + r (ln2 in two parts, so r is
// exact to float precision), e^r by its polynomial on |r| <= ln2 / 2, 2^n by vscalefps.
FF_AVX512 inline __m512 exp_nonpositive16(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  return _mm512_scalef_ps(p, n);
}

// kt (D rows of Lp floats) = the L keys (rows `step` apart) transposed, zeros after L; returns Lp, L rounded up to 64.
int64_t transpose_keys(const float* k, int64_t step, int64_t L, int64_t D, float* kt) {
  const int64_t Lp = (L + 63) / 64 * 64;
  for (int64_t d = 0; d < D; ++d) {
    float* row = kt + d * Lp;
    for (int64_t j = 0; j < L; ++j) row[j] = k[j * step + d];
    for (int64_t j = L; j < Lp; ++j) row[j] = 0.f;
  }
  return Lp;
}

// Q query rows (from row i) of one head's softmax(q k^T * scale) v with AVX-512: Q x 4 blocks of 16 scores accumulate
// at once over d from the transposed keys kt (D rows of Lp = L rounded up to 64, zeros after L); then per query the
// max-subtracted exponents; then the weighted sum of values, Q queries x 32 output dims per pass, so each value row
// loaded serves Q queries.
template <int Q>
FF_AVX512 void attend_rows_avx512(const float* q, const float* v, int64_t step, int64_t L, int64_t Lp, int64_t D,
                                  float scale, const float* kt, float* p, int64_t i, float* out, int64_t out_step) {
  const __m512 vscale = _mm512_set1_ps(scale);
  for (int64_t j = 0; j < Lp; j += 64) {
    __m512 a[Q][4];
    for (int r = 0; r < Q; ++r) a[r][0] = a[r][1] = a[r][2] = a[r][3] = _mm512_setzero_ps();
    for (int64_t d = 0; d < D; ++d) {
      const float* kr = kt + d * Lp + j;
      const __m512 k0 = _mm512_loadu_ps(kr), k1 = _mm512_loadu_ps(kr + 16), k2 = _mm512_loadu_ps(kr + 32),
                   k3 = _mm512_loadu_ps(kr + 48);
      for (int r = 0; r < Q; ++r) {
        const __m512 qd = _mm512_set1_ps(q[(i + r) * step + d]);
        a[r][0] = _mm512_fmadd_ps(qd, k0, a[r][0]);
        a[r][1] = _mm512_fmadd_ps(qd, k1, a[r][1]);
        a[r][2] = _mm512_fmadd_ps(qd, k2, a[r][2]);
        a[r][3] = _mm512_fmadd_ps(qd, k3, a[r][3]);
      }
    }
    for (int r = 0; r < Q; ++r)
      for (int c = 0; c < 4; ++c) _mm512_storeu_ps(p + r * Lp + j + 16 * c, _mm512_mul_ps(a[r][c], vscale));
  }
  __m512 inv[Q];
  for (int r = 0; r < Q; ++r) {
    float* pr = p + r * Lp;
    __m512 top = _mm512_set1_ps(-FLT_MAX);
    for (int64_t j = 0; j < L; j += 16) top = _mm512_mask_max_ps(top, first_lanes(L - j), top, _mm512_loadu_ps(pr + j));
    const __m512 best = _mm512_set1_ps(_mm512_reduce_max_ps(top));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t j = 0; j < L; j += 16) {
      const __mmask16 m = first_lanes(L - j);
      const __m512 e = exp_nonpositive16(_mm512_sub_ps(_mm512_loadu_ps(pr + j), best));
      _mm512_mask_storeu_ps(pr + j, m, e);
      sum = _mm512_mask_add_ps(sum, m, sum, e);
    }
    inv[r] = _mm512_set1_ps(1.f / _mm512_reduce_add_ps(sum));
  }
  for (int64_t d = 0; d < D; d += 32) {
    const __mmask16 m0 = first_lanes(D - d), m1 = D - d > 16 ? first_lanes(D - d - 16) : 0;
    __m512 a[Q][2];
    for (int r = 0; r < Q; ++r) a[r][0] = a[r][1] = _mm512_setzero_ps();
    for (int64_t j = 0; j < L; ++j) {
      const float* vr = v + j * step + d;
      const __m512 v0 = _mm512_maskz_loadu_ps(m0, vr), v1 = _mm512_maskz_loadu_ps(m1, vr + 16);
      for (int r = 0; r < Q; ++r) {
        const __m512 pj = _mm512_set1_ps(p[r * Lp + j]);
        a[r][0] = _mm512_fmadd_ps(pj, v0, a[r][0]);
        a[r][1] = _mm512_fmadd_ps(pj, v1, a[r][1]);
      }
    }
    for (int r = 0; r < Q; ++r) {
      float* o = out + (i + r) * out_step + d;
      _mm512_mask_storeu_ps(o, m0, _mm512_mul_ps(a[r][0], inv[r]));
      _mm512_mask_storeu_ps(o + 16, m1, _mm512_mul_ps(a[r][1], inv[r]));
    }
  }
}

// softmax(q k^T * scale) v for one head of one sequence of L tokens with AVX-512: q, k, v rows `step` floats apart,
// out rows `out_step` apart (p: 4 * Lp floats of scratch, kt: D * Lp).
FF_AVX512 void attend_head_avx512(const float* q, const float* k, const float* v, int64_t step, int64_t L, int64_t D,
                                  float scale, float* kt, float* p, float* out, int64_t out_step) {
  const int64_t Lp = transpose_keys(k, step, L, D, kt);
  int64_t i = 0;
  for (; i + 4 <= L; i += 4) attend_rows_avx512<4>(q, v, step, L, Lp, D, scale, kt, p, i, out, out_step);
  for (; i < L; ++i) attend_rows_avx512<1>(q, v, step, L, Lp, D, scale, kt, p, i, out, out_step);
}

// attend_rows_avx512 with 8-lane vectors (16 registers): Q query rows x 4 blocks of 8 scores per pass, then the
// softmax, then Q rows x 32 output dims per pass.
template <int Q>
FF_AVX2 void attend_rows_avx2(const float* q, const float* v, int64_t step, int64_t L, int64_t Lp, int64_t D,
                              float scale, const float* kt, float* p, int64_t i, float* out, int64_t out_step) {
  const __m256 vscale = _mm256_set1_ps(scale);
  for (int64_t j = 0; j < Lp; j += 32) {
    __m256 a[Q][4];
    for (int r = 0; r < Q; ++r) a[r][0] = a[r][1] = a[r][2] = a[r][3] = _mm256_setzero_ps();
    for (int64_t d = 0; d < D; ++d) {
      const float* kr = kt + d * Lp + j;
      const __m256 k0 = _mm256_loadu_ps(kr), k1 = _mm256_loadu_ps(kr + 8), k2 = _mm256_loadu_ps(kr + 16),
                   k3 = _mm256_loadu_ps(kr + 24);
      for (int r = 0; r < Q; ++r) {
        const __m256 qd = _mm256_broadcast_ss(q + (i + r) * step + d);
        a[r][0] = _mm256_fmadd_ps(qd, k0, a[r][0]);
        a[r][1] = _mm256_fmadd_ps(qd, k1, a[r][1]);
        a[r][2] = _mm256_fmadd_ps(qd, k2, a[r][2]);
        a[r][3] = _mm256_fmadd_ps(qd, k3, a[r][3]);
      }
    }
    for (int r = 0; r < Q; ++r)
      for (int c = 0; c < 4; ++c) _mm256_storeu_ps(p + r * Lp + j + 8 * c, _mm256_mul_ps(a[r][c], vscale));
  }
  float inv[Q];
  for (int r = 0; r < Q; ++r) {
    float* pr = p + r * Lp;
    __m256 top = _mm256_set1_ps(-FLT_MAX);
    int64_t j = 0;
    for (; j + 8 <= L; j += 8) top = _mm256_max_ps(top, _mm256_loadu_ps(pr + j));
    float lanes[8];
    _mm256_storeu_ps(lanes, top);
    float best = lanes[0];
    for (int c = 1; c < 8; ++c) best = std::max(best, lanes[c]);
    for (; j < L; ++j) best = std::max(best, pr[j]);
    const __m256 vbest = _mm256_set1_ps(best);
    __m256 sum = _mm256_setzero_ps();
    for (j = 0; j < L; j += 8) {  // the lanes past L (scores of zero keys, within Lp) are zeroed, not summed
      const __m256i m = first_lanes8(L - j);
      const __m256 e = _mm256_and_ps(exp_nonpositive8(_mm256_sub_ps(_mm256_loadu_ps(pr + j), vbest)),
                                     _mm256_castsi256_ps(m));
      _mm256_storeu_ps(pr + j, e);
      sum = _mm256_add_ps(sum, e);
    }
    _mm256_storeu_ps(lanes, sum);
    float total = 0;
    for (int c = 0; c < 8; ++c) total += lanes[c];
    inv[r] = 1.f / total;
  }
  for (int64_t d = 0; d < D; d += 32) {
    __m256i m[4];
    for (int c = 0; c < 4; ++c) m[c] = first_lanes8(D - d - 8 * c);  // a count <= 0 gives no lanes
    __m256 a[Q][4];
    for (int r = 0; r < Q; ++r) a[r][0] = a[r][1] = a[r][2] = a[r][3] = _mm256_setzero_ps();
    const bool whole = D - d >= 32;  // plain loads and stores (masked ones are slow on some CPUs)
    for (int64_t j = 0; j < L; ++j) {
      const float* vr = v + j * step + d;
      __m256 vv[4];
      for (int c = 0; c < 4; ++c) vv[c] = whole ? _mm256_loadu_ps(vr + 8 * c) : _mm256_maskload_ps(vr + 8 * c, m[c]);
      for (int r = 0; r < Q; ++r) {
        const __m256 pj = _mm256_broadcast_ss(p + r * Lp + j);
        for (int c = 0; c < 4; ++c) a[r][c] = _mm256_fmadd_ps(pj, vv[c], a[r][c]);
      }
    }
    for (int r = 0; r < Q; ++r) {
      float* o = out + (i + r) * out_step + d;
      const __m256 vinv = _mm256_set1_ps(inv[r]);
      for (int c = 0; c < 4; ++c) {
        if (whole)
          _mm256_storeu_ps(o + 8 * c, _mm256_mul_ps(a[r][c], vinv));
        else
          _mm256_maskstore_ps(o + 8 * c, m[c], _mm256_mul_ps(a[r][c], vinv));
      }
    }
  }
}

FF_AVX2 void attend_head_avx2(const float* q, const float* k, const float* v, int64_t step, int64_t L, int64_t D,
                              float scale, float* kt, float* p, float* out, int64_t out_step) {
  const int64_t Lp = transpose_keys(k, step, L, D, kt);
  int64_t i = 0;
  for (; i + 2 <= L; i += 2) attend_rows_avx2<2>(q, v, step, L, Lp, D, scale, kt, p, i, out, out_step);
  for (; i < L; ++i) attend_rows_avx2<1>(q, v, step, L, Lp, D, scale, kt, p, i, out, out_step);
}
#endif

// Attention of every sequence and head (AVX-512: attend_head_avx512; AVX2 with FMA: attend_head_avx2; elsewhere
// attention.cpp's attend_row):
// qkv (T, 3 * heads * D) rows [q heads | k heads | v heads] -> out (T, heads D).
void attend(const at::Tensor& qkv, const int64_t* cu, int64_t B, int64_t heads, int64_t D, float scale,
            at::Tensor& out) {
  const int64_t width = 3 * heads * D;
  const float* base = qkv.data_ptr<float>();
  float* op = out.data_ptr<float>();
  int64_t longest = 0;
  for (int64_t b = 0; b < B; ++b) longest = std::max(longest, cu[b + 1] - cu[b]);
#if FF_X86
  // FASTFORMERS_CPU_NO_AVX512=1 runs the AVX2 kernel on an AVX-512 CPU (its tests run it everywhere)
  static const bool wide = avx512_usable(false) && !std::getenv("FASTFORMERS_CPU_NO_AVX512");
  static const bool avx2 = avx2_usable();
#else
  const bool wide = false, avx2 = false;
#endif
  const int64_t padded = (longest + 63) / 64 * 64;
  at::parallel_for(0, B * heads, 1, [&](int64_t i0, int64_t i1) {
    std::vector<float> kt(wide || avx2 ? padded * D : 0), p(4 * padded);
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / heads, h = i % heads, L = cu[b + 1] - cu[b];
      if (L == 0) continue;
      const float* q = base + cu[b] * width + h * D;
      float* o = op + cu[b] * heads * D + h * D;
#if FF_X86
      if (wide) {
        attend_head_avx512(q, q + heads * D, q + 2 * heads * D, width, L, D, scale, kt.data(), p.data(), o, heads * D);
        continue;
      }
      if (avx2) {
        attend_head_avx2(q, q + heads * D, q + 2 * heads * D, width, L, D, scale, kt.data(), p.data(), o, heads * D);
        continue;
      }
#endif
      for (int64_t r = 0; r < L; ++r)  // elsewhere: decode attention's row loop (attention.cpp), a query at a time
        attend_row(q + r * width, q + heads * D, width, q + 2 * heads * D, width, nullptr, L, D, scale, p.data(),
                   o + r * heads * D);
    }
  });
}

// out = LayerNorm(h + r) over rows of H (weight w, bias b), torch's float32 arithmetic: mean, then the mean of the
// squared deviations. out may be h; r null: LayerNorm(h) (the residual was added in the GEMM's epilogue).
FF_WIDE void add_layer_norm_row(const float* h, const float* r, const float* w, const float* b, int64_t H, float eps,
                                float* out) {
  float lanes[kLanes] = {0};
  int64_t i = 0;
  for (; i + kLanes <= H; i += kLanes)
    for (int c = 0; c < kLanes; ++c) {
      out[i + c] = r ? h[i + c] + r[i + c] : h[i + c];
      lanes[c] += out[i + c];
    }
  float sum = 0;
  for (int c = 0; c < kLanes; ++c) sum += lanes[c];
  for (; i < H; ++i) {
    out[i] = r ? h[i] + r[i] : h[i];
    sum += out[i];
  }
  const float mean = sum / static_cast<float>(H);
  for (int c = 0; c < kLanes; ++c) lanes[c] = 0;
  i = 0;
  for (; i + kLanes <= H; i += kLanes)
    for (int c = 0; c < kLanes; ++c) lanes[c] += (out[i + c] - mean) * (out[i + c] - mean);
  float squares = 0;
  for (int c = 0; c < kLanes; ++c) squares += lanes[c];
  for (; i < H; ++i) squares += (out[i] - mean) * (out[i] - mean);
  const float rstd = 1.f / std::sqrt(squares / static_cast<float>(H) + eps);
  for (int64_t k = 0; k < H; ++k) out[k] = (out[k] - mean) * rstd * w[k] + b[k];
}

void add_layer_norm(at::Tensor& h, const at::Tensor& r, const at::Tensor& w, const at::Tensor& b, float eps) {
  const int64_t T = h.size(0), H = h.size(1);
  float* hp = h.data_ptr<float>();
  const float* rp = r.defined() ? r.data_ptr<float>() : nullptr;
  const float* wp = w.data_ptr<float>();
  const float* bp = b.data_ptr<float>();
  at::parallel_for(0, T, 16, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      add_layer_norm_row(hp + t * H, rp ? rp + t * H : nullptr, wp, bp, H, eps, hp + t * H);
  });
}

}  // namespace

at::Tensor encoder_layers_cpu(const at::Tensor& x, const at::Tensor& cu_seqlens,
                              const c10::List<c10::optional<at::Tensor>>& weights, at::IntArrayRef formats,
                              int64_t num_heads, double eps, int64_t act) {
  TORCH_CHECK(is_f32(x) && x.dim() == 2 && !x.is_mkldnn(), OP "x must be float32 (tokens, hidden), got ",
              x.scalar_type(), " ", x.sizes());
  TORCH_CHECK(weights.size() > 0 && weights.size() % kSlots == 0, OP "expected ", kSlots, " weights per layer, got ",
              weights.size());
  const int64_t layers = static_cast<int64_t>(weights.size()) / kSlots;
  TORCH_CHECK(static_cast<int64_t>(formats.size()) == kLinears * layers, OP "expected ", kLinears,
              " formats per layer (", kLinears * layers, "), got ", formats.size());
  TORCH_CHECK(act == 0 || act == 1, OP "act=", act, "; expected 0 (GELU) or 1 (GELU, tanh approximation)");
  const int64_t T = x.size(0), hidden = x.size(1), heads = num_heads;
  TORCH_CHECK(heads > 0 && hidden % heads == 0, OP "hidden size ", hidden, " is not a multiple of num_heads=", heads);
  keep_freed_memory();
  const at::Tensor cu = cu_seqlens.to(at::kLong).contiguous();
  TORCH_CHECK(cu.dim() == 1 && cu.numel() >= 2, OP "cu_seqlens must be (batch + 1) offsets, got ", cu_seqlens.sizes());
  const int64_t* cp = cu.data_ptr<int64_t>();
  const int64_t B = cu.numel() - 1;
  TORCH_CHECK(cp[0] == 0 && cp[B] == T, OP "cu_seqlens must run from 0 to the ", T, " tokens, got ", cp[0], " .. ",
              cp[B]);
  for (int64_t b = 0; b < B; ++b)
    TORCH_CHECK(cp[b + 1] >= cp[b], OP "cu_seqlens must not decrease: ", cp[b], " then ", cp[b + 1]);
  const int64_t D = hidden / heads;
  const float e = static_cast<float>(eps), scale = 1.f / std::sqrt(static_cast<float>(D));

  at::Tensor state = x.contiguous();
  for (int64_t l = 0; l < layers; ++l) {
    const Linear qkv = linear_at(weights, formats, l, 0, 3 * hidden, hidden);
    const Linear o = linear_at(weights, formats, l, 1, hidden, hidden);
    const int64_t inter_size = inputs_of(weights, l, 3);  // the output linear's inputs
    const Linear inter = linear_at(weights, formats, l, 2, inter_size, hidden);
    const Linear output = linear_at(weights, formats, l, 3, hidden, inter_size);
    const int64_t base = l * kSlots + 3 * kLinears;
    const at::Tensor ln1w = vector_at(weights, base, hidden, l, "attention LayerNorm weight");
    const at::Tensor ln1b = vector_at(weights, base + 1, hidden, l, "attention LayerNorm bias");
    const at::Tensor ln2w = vector_at(weights, base + 2, hidden, l, "output LayerNorm weight");
    const at::Tensor ln2b = vector_at(weights, base + 3, hidden, l, "output LayerNorm bias");

    const at::Tensor projected = run_linear(state, qkv, 3 * hidden, false, act, kQkv);
    at::Tensor attn = buffer(kAttn, T, hidden, at::kFloat);
    attend(projected, cp, B, heads, D, scale, attn);
    // formats 5 and 6 add the residual in the GEMM's epilogue, the others in the LayerNorm's first pass
    const auto epilogue_adds = [](const Linear& lin) { return lin.kind == kF32Packed || lin.kind == kBlock8Panels; };
    const bool fuse_o = epilogue_adds(o), fuse_out = epilogue_adds(output);
    at::Tensor h = run_linear(attn, o, hidden, false, act, kHidden, fuse_o ? state : at::Tensor());
    add_layer_norm(h, fuse_o ? at::Tensor() : state, ln1w, ln1b, e);
    at::Tensor y = run_linear(run_linear(h, inter, inter_size, true, act, kInter), output, hidden, false, act, kOut,
                              fuse_out ? h : at::Tensor());
    add_layer_norm(y, fuse_out ? at::Tensor() : h, ln2w, ln2b, e);
    state = y;
  }
  at::Tensor result = state.clone();  // the buffers stay ours
  release_workspace_if_large();
  return result;
}

}  // namespace fastformers
