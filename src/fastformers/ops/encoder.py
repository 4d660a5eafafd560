"""`encoder_layers`: every layer of a post-norm BERT-family encoder (BERT, RoBERTa, XLM-RoBERTa, ELECTRA) over
unpadded tokens as a single op.

A layer is ~15 small ops; at a CPU's batch 1 their Python and dispatch cost as much as the GEMMs (all-MiniLM-L6-v2,
16 tokens, 2 threads: ~3.4 of 6.6 ms per forward outside the GEMMs). The `cpu` backend runs every layer in one C++
call (csrc/cpu/encoder_step.cpp, fastformers._C): oneDNN's packed GEMMs (the GELU as their post-op) on AVX-512
CPUs, its own AVX2 GEMM (csrc/cpu/gemm_f32.cpp) on AVX2 ones, torch._int_mm (or exact float32 GEMMs without VNNI)
or VNNI tiles for int8, and its own attention, LayerNorm and activation quantization loops. On other backends the
model runs its layers as usual; the reference below is the specification the kernel is tested against.

Arguments (`EncoderWeights` assembles the weights and formats from a model's modules):
  x (tokens, hidden): the sequences' tokens one after another, no padding; cu_seqlens (batch + 1): their offsets
      (each token attends to the tokens of its own sequence only).
  weights: SLOTS entries per layer: for qkv, o, intermediate, output a (weight, scales | None, bias | None) triple,
      then the attention LayerNorm's (weight, bias) and the output LayerNorm's (weight, bias).
  formats: one kind per layer and linear: FLOAT (float weight), PACKED (oneDNN's packed copy of a float32 weight;
      the cpu kernel only), W8A8 (int8 codes (out, in) and float32 scales per output: ops/quant.py's method "w8a8"),
      BLOCK8 (method "blockwise_a8" with 8-bit codes in groups of 32, activations quantized per block of 32 too:
      pack_blockwise8's (codes, transposed scales); the kernel needs AVX-512 VNNI, block8_usable()), W8A8_PACKED
      (W8A8 packed for that kernel: pack_w8a8's (codes, scales); the same integer sums as W8A8's torch._int_mm,
      ~2x faster at batch 1; AVX-512 VNNI, or AVX2 with int16 products: w8a8_packed_usable()), F32_PACKED (a float32 weight packed by pack_f32 for the AVX2 GEMM of
      csrc/cpu/gemm_f32.cpp, f32_packing_preferred(); the cpu kernel only), BLOCK8_PANELS (BLOCK8's weights for CPUs
      with AVX2 but no VNNI: the codes packed by pack_q8 for gemm_f32.cpp's gemm_block8, the scales transposed as
      BLOCK8's).
  num_heads, eps (the LayerNorms'), act: 0 GELU, 1 GELU with the tanh approximation.
Returns the last layer's output (tokens, hidden).
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F

from . import native
from .backend import Op
from .linear import gemm_f32_preferred
from .quant import QuantizedWeight, quantized_linear_reference

SLOTS = 16  # weights per layer
LINEARS = ("qkv", "o", "intermediate", "output")
FLOAT, PACKED, W8A8, BLOCK8, W8A8_PACKED, F32_PACKED, BLOCK8_PANELS = 0, 1, 2, 3, 4, 5, 6
ACTS = {"none": 0, "tanh": 1}  # GELU's `approximate` -> act


def _pack_codes(codes: torch.Tensor) -> torch.Tensor:
    """int8 codes (out, in) -> codes + 128 as uint8 in [out / 16][in / 4][16][4] order, viewed (out, in): the operand
    order of csrc/cpu/gemm_a8.cpp's VNNI tiles. Out and in must be multiples of 32."""
    n, k = codes.shape
    biased = (codes.to(torch.int16) + 128).to(torch.uint8)
    return biased.view(n // 16, 16, k // 4, 4).permute(0, 2, 1, 3).contiguous().view(n, k)


def _unpack_codes(packed: torch.Tensor) -> torch.Tensor:
    n, k = packed.shape
    codes = packed.view(n // 16, k // 4, 16, 4).permute(0, 2, 1, 3).reshape(n, k)
    return (codes.to(torch.int16) - 128).to(torch.int8)


def pack_blockwise8(qw: QuantizedWeight):
    """(packed codes, transposed scales) of a blockwise_a8 weight with 8-bit codes in groups of 32 for the BLOCK8
    kernel (csrc/cpu/gemm_a8.cpp): the codes as _pack_codes lays them out, the scales as float32 (in / 32, out)."""
    return _pack_codes(qw.qweight), qw.scales.float().t().contiguous()


def unpack_blockwise8(packed: torch.Tensor, scales_t: torch.Tensor) -> QuantizedWeight:
    """The QuantizedWeight pack_blockwise8 was made from (scales in float32)."""
    return QuantizedWeight(_unpack_codes(packed), scales_t.t().contiguous(), None, 8, 32, packed.shape[1],
                           "blockwise_a8")


def pack_w8a8(qw: QuantizedWeight):
    """(packed codes, scales) of a W8A8 weight for the W8A8_PACKED kernel: the codes as _pack_codes lays them out,
    the per-output scales as a float32 vector."""
    return _pack_codes(qw.qweight), qw.scales.float().reshape(-1).contiguous()


def unpack_w8a8(packed: torch.Tensor, scales: torch.Tensor) -> QuantizedWeight:
    """The QuantizedWeight pack_w8a8 was made from (scales in float32)."""
    return QuantizedWeight(_unpack_codes(packed), scales.view(-1, 1), None, 8, None, packed.shape[1], "w8a8")


def pack_q8(codes: torch.Tensor) -> torch.Tensor:
    """int8 codes (out, in) in the panels of csrc/cpu/gemm_f32.cpp's gemm_block8: (ceil(out / 16), in, 16) int8, the
    outputs past `out` zero (fastformers_ext.pack_q8)."""
    return torch.ops.fastformers_ext.pack_q8(codes)


def unpack_q8(packed: torch.Tensor, out_features: int) -> torch.Tensor:
    """The int8 codes (out, in) that pack_q8 packed."""
    return packed.transpose(1, 2).reshape(-1, packed.shape[1])[:out_features]


def f32_packing_preferred() -> bool:
    """Whether float32 weights run on gemm_f32.cpp's GEMM (format F32_PACKED) rather than oneDNN's: ops/linear.py's
    gemm_f32_preferred(), on CPUs with AVX2 and FMA but no AVX-512."""
    return gemm_f32_preferred()


def w8a8_packed_usable() -> bool:
    """Whether the W8A8_PACKED kernel (csrc/cpu/gemm_a8.cpp) runs on this CPU: AVX-512 VNNI, or AVX2 with int16
    products; not with FASTFORMERS_CPU_PORTABLE=1."""
    return native.available() and bool(torch.ops.fastformers_ext.gemm_a8_usable(True))


def block8_usable() -> bool:
    """Whether the BLOCK8 kernel runs on this CPU (AVX-512 VNNI; not with FASTFORMERS_CPU_PORTABLE=1)."""
    return native.available() and bool(torch.ops.fastformers_ext.gemm_a8_usable(False))


def _linear(x, weight, scales, bias, kind: int):
    if kind == FLOAT:
        return F.linear(x, weight, bias)
    if kind == W8A8:
        qw = QuantizedWeight(weight, scales.view(-1, 1), None, 8, None, weight.shape[1], "w8a8")
        return quantized_linear_reference(x, qw, bias)
    if kind == BLOCK8:
        return quantized_linear_reference(x, unpack_blockwise8(weight, scales), bias)
    if kind == W8A8_PACKED:
        return quantized_linear_reference(x, unpack_w8a8(weight, scales), bias)
    if kind == BLOCK8_PANELS:
        qw = QuantizedWeight(unpack_q8(weight, scales.shape[1]), scales.t().contiguous(), None, 8, 32, weight.shape[1],
                             "blockwise_a8")
        return quantized_linear_reference(x, qw, bias)
    raise ValueError(f"encoder_layers: format {kind} is not one the reference runs (a packed float32 weight: pass the "
                     f"float weight with format {FLOAT})")


def encoder_layers_reference(x, cu_seqlens, weights: Sequence[Optional[torch.Tensor]], formats: Sequence[int],
                             num_heads: int, eps: float, act: int):
    """The layers in plain PyTorch ops, in x's dtype (float64 in the tests)."""
    approximate = {v: k for k, v in ACTS.items()}[act]
    bounds = [int(b) for b in cu_seqlens.tolist()]
    tokens, hidden = x.shape
    head_dim = hidden // num_heads
    for layer in range(len(weights) // SLOTS):
        w = weights[layer * SLOTS:(layer + 1) * SLOTS]
        kinds = formats[layer * len(LINEARS):(layer + 1) * len(LINEARS)]

        def lin(i, h):
            return _linear(h, *w[3 * i:3 * i + 3], kinds[i])

        q, k, v = lin(0, x).view(tokens, 3, num_heads, head_dim).unbind(1)
        attn = torch.empty_like(x)
        for start, end in zip(bounds, bounds[1:]):
            qs, ks, vs = (t[start:end].transpose(0, 1) for t in (q, k, v))  # (heads, len, head_dim)
            probs = torch.softmax((qs @ ks.transpose(-1, -2)) / head_dim ** 0.5, dim=-1)
            attn[start:end] = (probs @ vs).transpose(0, 1).reshape(end - start, hidden)
        h = F.layer_norm(lin(1, attn) + x, (hidden,), w[12], w[13], eps)
        x = F.layer_norm(lin(3, F.gelu(lin(2, h), approximate=approximate)) + h, (hidden,), w[14], w[15], eps)
    return x


encoder_layers = Op("encoder_layers", encoder_layers_reference, same_on_every_backend=True)


def _cpu_unsupported(x, cu_seqlens, weights, formats, num_heads, eps, act) -> Optional[str]:
    reason = native.load_error()
    if reason is not None:
        return f"the one-call encoder is in fastformers._C, which is unavailable: {reason}"
    if torch.compiler.is_compiling():
        return "under torch.compile"
    if x.dtype != torch.float32:
        return f"it runs float32 (got {x.dtype})"
    if x.device.type != "cpu":
        return "not on the CPU"
    if torch.is_grad_enabled() and (x.requires_grad or any(w is not None and w.requires_grad for w in weights)):
        return "inference only (autograd runs the layers one by one)"
    return None


@encoder_layers.register("cpu", unsupported=_cpu_unsupported)
def encoder_layers_cpu(x, cu_seqlens, weights, formats, num_heads, eps, act):
    return torch.ops.fastformers_ext.encoder_layers(x, cu_seqlens, weights, formats, num_heads, eps, act)


class EncoderWeights:
    """The `weights` and `formats` of `encoder_layers`, assembled layer by layer."""

    def __init__(self) -> None:
        self.weights: List[Optional[torch.Tensor]] = []
        self.formats: List[int] = []

    def add_layer(self, linears: Sequence[tuple], norms: Sequence[torch.Tensor]) -> None:
        """linears: (weight, scales | None, bias | None, kind) of qkv, o, intermediate, output; norms: the two
        LayerNorms' weight and bias."""
        for weight, scales, bias, kind in linears:
            self.weights += [weight, scales, bias]
            self.formats.append(kind)
        self.weights += list(norms)
