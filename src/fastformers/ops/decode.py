"""`decode_layers`: one decode step (one new token per sequence, a static KV cache) through every layer of a
pre-norm Llama-family decoder (Llama, Mistral, Qwen2, Qwen3) as a single op.

A layer at one token is ~20 small ops; on a CPU their Python and dispatch cost as much as the weight GEMVs
(SmolLM2-135M Q4_1, 2 threads: ~4 of 12.8 ms per token). The `cpu` backend runs the whole step in one C++ call
(csrc/cpu/decode_step.cpp, fastformers._C) on the same kernels the layer-by-layer path uses. On other backends the
model runs its layers as usual; the reference below is the specification the kernel is tested against.

Arguments (`DecodeWeights.build` assembles the first two from a model's modules):
  x (batch, 1, hidden): the embeddings of the new tokens.
  weights: SLOTS entries per layer, then the final norm's weight:
      [input_layernorm, post_attention_layernorm, q_norm | None, k_norm | None,
       then for qkv, o, gate_up, down: weight | int codes, scales | None, mins | None, bias | None]
  formats: per layer and linear (qkv, o, gate_up, down) a (bits, group, int8 activations) triple: bits 0 for a
      float weight, else the bits and group of fastformers' packed format (ops/quant.py); the third entry 1 for
      method blockwise_a8 (activations quantized per block of 32), else 0.
  k_caches, v_caches: each layer's static cache buffers (batch, kv_heads, max_length, head_dim), written at
      cache_position (one position, shared by the batch); keep (batch | 1, max_length) bool or None: the keys
      each sequence may attend to besides the positions after cache_position, which are never read.
  cos, sin (batch | 1, 1, rot_dim): the rotary tables of the position; num_heads, num_kv_heads, eps, scale.
Returns the final RMSNorm's output (batch, 1, hidden).
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F

from . import native
from .backend import Op
from .norm import rms_norm_reference
from .quant import QuantizedWeight, cpu_kernel_layout, quantized_linear_reference, with_half_scales
from .rotary import rotary_reference

SLOTS = 20  # weights per layer
LINEARS = ("qkv", "o", "gate_up", "down")
FORMAT = 3  # format entries per linear


def _linear(x, slots, bits: int, group: int, a8: int):
    weight, scales, mins, bias = slots
    if not bits:
        return F.linear(x, weight, bias)
    method = "blockwise_a8" if a8 else "weight_only"
    return quantized_linear_reference(x, QuantizedWeight(weight, scales, mins, bits, group, x.shape[-1], method), bias)


def decode_layers_reference(x, weights: Sequence[Optional[torch.Tensor]], formats: Sequence[int], k_caches, v_caches,
                            cache_position, keep, cos, sin, num_heads: int, num_kv_heads: int, eps: float,
                            scale: float):
    """The step in plain PyTorch ops, in x's dtype (float64 in the tests)."""
    batch, _, hidden = x.shape
    head_dim = k_caches[0].shape[-1]
    end = int(cache_position.reshape(-1)[0]) + 1
    state, residual = x, None
    for layer, (keys, values) in enumerate(zip(k_caches, v_caches)):
        w = weights[layer * SLOTS:(layer + 1) * SLOTS]
        fm = formats[layer * FORMAT * len(LINEARS):(layer + 1) * FORMAT * len(LINEARS)]

        def lin(i, h):
            return _linear(h, w[4 + 4 * i:8 + 4 * i], *fm[FORMAT * i:FORMAT * (i + 1)])

        if residual is None:
            h, residual = rms_norm_reference(state, w[0], eps), state
        else:
            h, residual = rms_norm_reference(state, w[0], eps, residual=residual)
        q, k, v = lin(0, h).split([num_heads * head_dim, num_kv_heads * head_dim, num_kv_heads * head_dim], dim=-1)
        q = q.view(batch, 1, num_heads, head_dim)
        k = k.view(batch, 1, num_kv_heads, head_dim)
        if w[2] is not None:
            q, k = rms_norm_reference(q, w[2], eps), rms_norm_reference(k, w[3], eps)
        q, k = rotary_reference(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
        position = cache_position.reshape(1)
        keys.index_copy_(2, position, k)
        values.index_copy_(2, position, v.view(batch, 1, num_kv_heads, head_dim).transpose(1, 2))
        group = num_heads // num_kv_heads
        kk = keys[:, :, :end].repeat_interleave(group, dim=1)
        vv = values[:, :, :end].repeat_interleave(group, dim=1)
        scores = (q @ kk.transpose(-1, -2)) * scale  # (batch, heads, 1, end)
        if keep is not None:
            scores = scores.masked_fill(~keep[:, None, None, :end].bool(), float("-inf"))
        probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # a row that keeps no key: zeros
        out = (probs @ vv).transpose(1, 2).reshape(batch, 1, num_heads * head_dim)
        h, residual = rms_norm_reference(lin(1, out), w[1], eps, residual=residual)
        gate, up = lin(2, h).chunk(2, dim=-1)
        state = lin(3, F.silu(gate) * up)
    return rms_norm_reference(state, weights[-1], eps, residual=residual)[0]


decode_layers = Op("decode_layers", decode_layers_reference, same_on_every_backend=True)


def _cpu_unsupported(x, weights, formats, k_caches, v_caches, cache_position, keep, cos, sin, num_heads, num_kv_heads,
                     eps, scale) -> Optional[str]:
    reason = native.load_error()
    if reason is not None:
        return f"the one-call decode step is in fastformers._C, which is unavailable: {reason}"
    if torch.compiler.is_compiling():
        return "under torch.compile"
    if x.dtype != torch.float32 or k_caches[0].dtype != torch.float32:
        return f"it runs float32 (got {x.dtype}, cache {k_caches[0].dtype})"
    if x.device.type != "cpu":
        return "not on the CPU"
    if torch.is_grad_enabled() and (x.requires_grad or any(w is not None and w.requires_grad for w in weights)):
        return "inference only (autograd runs the layers one by one)"
    return None


@decode_layers.register("cpu", unsupported=_cpu_unsupported)
def decode_layers_cpu(x, weights, formats, k_caches, v_caches, cache_position, keep, cos, sin, num_heads, num_kv_heads,
                      eps, scale):
    return torch.ops.fastformers_ext.decode_layers(x, weights, formats, k_caches, v_caches, cache_position, keep, cos,
                                                   sin, num_heads, num_kv_heads, eps, scale)


def linear_slots(weight, bias) -> Optional[tuple]:
    """(4 weight slots, (bits, group, int8 activations)) of one linear for `decode_layers`, None when its format is
    not one the step runs (w8a8, half-precision scales, groups the kernels do not take)."""
    if isinstance(weight, QuantizedWeight):
        if (weight.method not in ("weight_only", "blockwise_a8") or weight.scales.dtype != torch.float32
                or not cpu_kernel_layout(weight)):
            return None
        # the kernel reads codes, scales and mins contiguous (a GPTQ import may hold views): copied once, not per step;
        # scales and mins as float16 where that is exact (fewer bytes per token)
        weight = with_half_scales(weight)
        parts = [None if t is None else t.contiguous() for t in (weight.qweight, weight.scales, weight.mins, bias)]
        return parts, (weight.bits, weight.group, int(weight.method == "blockwise_a8"))
    if not isinstance(weight, torch.Tensor) or weight.dtype != torch.float32:
        return None
    return [weight, None, None, None if bias is None else bias.contiguous()], (0, 0, 0)


class DecodeWeights:
    """The `weights` and `formats` of `decode_layers`, assembled from per-layer parts."""

    def __init__(self) -> None:
        self.weights: List[Optional[torch.Tensor]] = []
        self.formats: List[int] = []

    def add_layer(self, norms: Sequence[Optional[torch.Tensor]], linears: Sequence[tuple]) -> None:
        """norms: (input, post-attention, q_norm | None, k_norm | None); linears: linear_slots() of qkv, o,
        gate_up, down."""
        self.weights += list(norms)
        for slots, fmt in linears:
            self.weights += slots
            self.formats += list(fmt)

    def finish(self, final_norm: torch.Tensor) -> "DecodeWeights":
        self.weights.append(final_norm)
        return self


def native_plan(weights: DecodeWeights, num_heads: int, num_kv_heads: int, eps: float, scale: float,
                embedding: Optional[torch.Tensor] = None, inv_freq: Optional[torch.Tensor] = None):
    """The step's weights held and checked once in fastformers._C (a `DecodePlan`), or None where the extension is
    unavailable. Its `step(input_ids (batch, 1), position_ids (batch | 1, 1), k_caches, v_caches, cache_position,
    attention_mask | None, written)` runs `decode_layers` from token ids: the embedding rows, the rotary tables
    (cos / sin of inv_freq x position, as RotaryEmbedding computes them), the keys the mask keeps (its values checked:
    0 and 1 only), and `written` (a StaticCache's int64 count of positions written) raised past cache_position. Per
    step it converts ~10 arguments instead of `decode_layers`' one per weight (~600 for a 30-layer model, ~0.1-0.3 ms
    on a 2-core CPU whose caches the weights just streamed through)."""
    if native.load_error() is not None:
        return None
    return torch.classes.fastformers_ext.DecodePlan(weights.weights, weights.formats, num_heads, num_kv_heads, eps,
                                                    scale, embedding, inv_freq)


def decode_step_cpu(plan, input_ids, position_ids, k_caches, v_caches, cache_position, attention_mask, written):
    """One step from token ids on a native_plan (see there); returns the final RMSNorm's output (batch, 1, hidden)."""
    return plan.step(input_ids, position_ids, k_caches, v_caches, cache_position, attention_mask, written)
