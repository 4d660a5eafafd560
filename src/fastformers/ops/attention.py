"""Attention ops and their plain-PyTorch references.

Layouts: `attention` takes q (batch, heads, q_len, head_dim) and k, v (batch, kv_heads, kv_len,
head_dim) with kv_heads dividing heads (grouped-query attention). `attention_mask` is a
(batch, kv_len) key-padding mask, True/1 = keep. `causal=True` aligns the causal diagonal to the
bottom right, so with q_len < kv_len (decoding against a cache) query i sees keys
0 .. kv_len - q_len + i. A query row that sees no key at all returns zeros.

`varlen_attention` takes packed q (total_q, heads, head_dim), k, v (total_k, kv_heads, head_dim) and
cumulative sequence offsets cu_seqlens_q / cu_seqlens_k of length batch + 1 (int32 or int64).

The signature: `attention(q, k, v, *, attention_mask=None, attn_bias=None, causal=False, scale=None,
dropout_p=0.0, return_probs=False)`. `attn_bias` is an additive float bias broadcastable to (batch, heads,
q_len, kv_len) (T5's relative positions, with its masked keys at the dtype's minimum). With
`return_probs=True` it returns (out, probabilities), computed by the explicit softmax(q k^T) v; so does any
call with dropout_p > 0 (pass it in training only). Probabilities, dropout and an additive bias are torch
math on every backend (no kernel of ours takes them); everything else dispatches to the kernels.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from .backend import Op, op
from .padding import Packing


def _keep_mask(q_len: int, kv_len: int, causal: bool, attention_mask: Optional[torch.Tensor], device):
    """Boolean (batch|1, 1, q_len, kv_len) mask of the keys each query may see, or None for all."""
    mask = None
    if attention_mask is not None:
        mask = attention_mask.to(device=device, dtype=torch.bool)[:, None, None, :]
    if causal:
        rows = torch.arange(q_len, device=device)[:, None] + (kv_len - q_len)
        tri = torch.arange(kv_len, device=device)[None, :] <= rows
        mask = tri[None, None] if mask is None else mask & tri
    return mask


def attention_reference(q, k, v, *, causal: bool = False, attention_mask=None, scale=None):
    q_len, kv_len = q.shape[-2], k.shape[-2]
    causal = causal and q_len > 1  # one query aligned to the bottom right sees every key
    gqa = k.shape[1] != q.shape[1]
    if attention_mask is None and (not causal or q_len == kv_len):
        # no mask tensor to build: SDPA's own causal flag is exact for a square score matrix
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, enable_gqa=gqa)
    mask = _keep_mask(q_len, kv_len, causal, attention_mask, q.device)
    if mask.shape[-2] != q_len:
        mask = mask.expand(-1, -1, q_len, -1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)


def biased_attention_reference(q, k, v, attn_bias, *, causal: bool = False, attention_mask=None, scale=None):
    """softmax(q k^T * scale + attn_bias) v: SDPA with the bias as its float mask when nothing else masks
    (T5's case: its bias carries its mask), else the explicit product (rows with no key give zeros)."""
    if attention_mask is None and not (causal and q.shape[-2] > 1):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, scale=scale,
                                              enable_gqa=k.shape[1] != q.shape[1])
    return attention_with_probs(q, k, v, causal=causal, attention_mask=attention_mask, scale=scale,
                                attn_bias=attn_bias)[0]


class _AttentionOp(Op):
    """`ops.attention` (see the module docstring for the signature); packed sequences are varlen attention's
    (`varlen_attention`, or `packed_attention` over a `Packing`)."""

    def __call__(self, q, k, v, *, attention_mask=None, attn_bias=None, causal: bool = False, scale=None,
                 dropout_p: float = 0.0, return_probs: bool = False):
        if isinstance(attention_mask, Packing):
            raise TypeError("ops.attention takes a padded batch; attend over a Packing with ops.packed_attention")
        if return_probs or dropout_p > 0.0:
            out, probs = attention_with_probs(q, k, v, causal=causal, attention_mask=attention_mask, scale=scale,
                                              dropout_p=dropout_p, training=dropout_p > 0.0, attn_bias=attn_bias)
            return (out, probs) if return_probs else out
        if attn_bias is not None:
            return biased_attention_reference(q, k, v, attn_bias, causal=causal, attention_mask=attention_mask,
                                              scale=scale)
        return super().__call__(q, k, v, causal=causal, attention_mask=attention_mask, scale=scale)


attention = _AttentionOp("attention", attention_reference)
attention.register_lazy("triton", "fastformers.kernels.attention")


def _attention_cpu_unsupported(q, k, v, *, causal: bool = False, attention_mask=None, scale=None) -> Optional[str]:
    from . import native  # noqa: PLC0415 - loaded with fastformers.ops; a module attribute read here

    if q.shape[-2] != 1:
        return "the cpu attention kernel is the decode step's (one query per sequence)"
    if native.load_error() is not None:
        return f"the cpu decode attention is in fastformers._C, which is unavailable: {native.load_error()}"
    if q.dtype != torch.float32 or k.dtype != torch.float32 or v.dtype != torch.float32:
        return f"the cpu decode attention takes float32 (got {q.dtype})"
    if attention_mask is not None and attention_mask.dim() != 2:
        return "the cpu decode attention takes a (batch, kv_len) keep-mask"
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return "the cpu decode attention has no backward"
    return None


@attention.register("cpu", unsupported=_attention_cpu_unsupported)
def attention_cpu(q, k, v, *, causal: bool = False, attention_mask=None, scale=None):
    """csrc/cpu/attention.cpp: one query against the KV cache (a single query sees every kept key, causal or not)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return torch.ops.fastformers_ext.decode_attention(q, k, v, attention_mask, scale)


def attention_with_probs(q, k, v, *, causal: bool = False, attention_mask=None, scale=None,
                         dropout_p: float = 0.0, training: bool = False, attn_bias=None):
    """Explicit softmax(q k^T * scale + attn_bias) v that also returns the probabilities (batch, heads, q_len,
    kv_len).

    For `output_attentions=True` and for attention dropout in training: it materialises the score
    matrix, so it stays a torch-only path. The returned probabilities are those after dropout.
    """
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    if attn_bias is not None:
        scores = scores + attn_bias
    mask = _keep_mask(q.shape[-2], k.shape[-2], causal, attention_mask, q.device)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores.float(), dim=-1).nan_to_num(0.0).to(q.dtype)
    if training and dropout_p > 0.0:
        probs = F.dropout(probs, dropout_p, training=True)
    return torch.matmul(probs, v), probs


def varlen_attention_reference(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                               *, causal: bool = False, scale=None):
    out = torch.zeros_like(q)
    bounds_q = cu_seqlens_q.tolist()
    bounds_k = cu_seqlens_k.tolist()
    for (q0, q1), (k0, k1) in zip(zip(bounds_q, bounds_q[1:]), zip(bounds_k, bounds_k[1:])):
        if q1 == q0:
            continue
        qi = q[q0:q1].transpose(0, 1)[None]
        ki = k[k0:k1].transpose(0, 1)[None]
        vi = v[k0:k1].transpose(0, 1)[None]
        if k1 == k0:
            continue  # no keys: zeros, as for a fully masked row
        out[q0:q1] = attention_reference(qi, ki, vi, causal=causal, scale=scale)[0].transpose(0, 1)
    return out


varlen_attention = op(varlen_attention_reference)
varlen_attention.register_lazy("triton", "fastformers.kernels.attention")


def _varlen_attention_cpu_unsupported(q, *args, **kwargs) -> Optional[str]:
    if q.device.type != "cpu":
        return f"q is on {q.device.type}, not on the CPU"
    if torch.compiler.is_compiling():  # (ops.unpadding_pays asks too: a compiled encoder keeps the padded batch)
        return "under torch.compile (the loop over sequences reads their offsets on the host: a graph break each)"
    return None


@varlen_attention.register("cpu", unsupported=_varlen_attention_cpu_unsupported)
def varlen_attention_cpu(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *, causal: bool = False,
                         scale=None):
    """The cpu backend: each sequence through torch's SDPA (its flash CPU kernel) on a (1, heads, len, head_dim)
    view of the packed tokens, its output copied into place; no pad token is computed.

    Measured against the alternatives at all-MiniLM-L6-v2's shapes (12 heads x 32 dims; 2-core AVX-512 CPU, one
    thread), per layer: 32 sentences of 5..120 tokens (~1000 real tokens of ~3300 padded): 3.5-4.9 ms, against
    11-17 ms for SDPA over the padded batch with its mask and 21-30 ms for re-padding around one SDPA call; a
    (len, heads, head_dim) 3-D SDPA call per sequence is 1.6x slower than the 4-D view (math path). A
    block-diagonal mask over all tokens costs total^2 scores. Batch 8 x 128 without padding: 4.3 ms against
    3.7 ms for one padded call, which is why ops.unpadding_pays leaves a batch without padding as it is."""
    out = torch.empty_like(q)
    bounds_q, bounds_k = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    if bounds_q[0] > 0 or bounds_q[-1] < q.shape[0]:  # tokens outside every sequence: zeros, as the reference
        out[:bounds_q[0]] = 0
        out[bounds_q[-1]:] = 0
    for q0, q1, k0, k1 in zip(bounds_q, bounds_q[1:], bounds_k, bounds_k[1:]):
        if q1 == q0:
            continue
        if k1 == k0:
            out[q0:q1] = 0  # no keys: zeros, as for a fully masked row
            continue
        o = attention_reference(q[q0:q1].transpose(0, 1)[None], k[k0:k1].transpose(0, 1)[None],
                                v[k0:k1].transpose(0, 1)[None], causal=causal, scale=scale)
        out[q0:q1] = o[0].transpose(0, 1)
    return out


def packed_attention(q, k, v, packing: Packing, *, scale=None):
    """Attention for q, k, v of shape (1, heads, total, head_dim) over the sequences of `packing` (ops.unpad)."""
    cu, n = packing.cu_seqlens, packing.max_seqlen
    out = varlen_attention(q[0].transpose(0, 1), k[0].transpose(0, 1), v[0].transpose(0, 1), cu, cu, n, n,
                           scale=scale)
    return out.transpose(0, 1)[None]


def unpadding_pays(x: torch.Tensor, attention_mask) -> bool:
    """True when a padded batch should be packed (ops.unpad): varlen attention would run on a fused kernel for this
    tensor (CUDA with Triton, or a forced triton/cuda backend), or on the cpu backend (CPU tensors in auto mode)
    at inference when the mask holds padding; on the torch backend the padded batch goes through as it is.

    On the CPU any padding pays: MiniLM at 8 x 128 with 0.4% padding runs as fast unpadded as padded (one thread,
    one run), with 3% padding 6% faster, and a corpus batch (~70% padding) 3x faster."""
    if attention_mask is None or x.dim() != 3:
        return False
    backend = varlen_attention.choose(x.device.type, (x,))
    if backend == "cpu":
        # inference only, as the cpu backend's linear: with autograd (training on a CPU) the padded path keeps
        # the loss identical to transformers' whatever the labels at padded positions. A batch without padding
        # has nothing to unpad (one SDPA call beats one per sequence there); reading the mask on the host is
        # cheap for a CPU tensor
        if torch.is_grad_enabled() and x.requires_grad:
            return False
        return not bool(attention_mask.all())
    return backend != "torch"
