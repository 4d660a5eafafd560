"""The attention core as a layer: takes q, k, v (batch, heads, seq, head_dim) and calls the op.

The one place that decides between the fused op and the explicit softmax that also returns the
probabilities (asked for with `return_probs`, e.g. output_attentions, or needed for attention dropout in
training), and that sends an unpadded batch (an `ops.Packing` as the mask) to varlen attention.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from .. import ops


class Attention(nn.Module):
    """softmax(q k^T * scale, masked) v. `causal` aligns the diagonal to the bottom right (decoding against a
    cache); `scale` defaults to 1/sqrt(head_dim); `dropout_p` drops probabilities in training mode.
    forward returns (out (batch, heads, q_len, head_dim), probabilities or None)."""

    def __init__(self, *, causal: bool = False, scale: Optional[float] = None, dropout_p: float = 0.0) -> None:
        super().__init__()
        self.causal, self.scale, self.dropout_p = causal, scale, dropout_p
        self._attention = ops.attention.binding()
        self._varlen = ops.varlen_attention.binding()

    def forward(self, q, k, v, attention_mask=None, *, attn_bias=None, return_probs: bool = False,
                causal: Optional[bool] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """attention_mask: a (batch, kv_len) keep-mask, or an `ops.Packing` (unpadded tokens: varlen attention).
        attn_bias: an additive float bias broadcastable to (batch, heads, q_len, kv_len). `causal` overrides
        the layer's setting for this call (a module shared by encoder and decoder)."""
        causal = self.causal if causal is None else causal
        dropout = self.dropout_p if self.training else 0.0
        if return_probs or dropout > 0.0 or attn_bias is not None:
            if isinstance(attention_mask, ops.Packing):
                raise ValueError("attention probabilities, dropout and attn_bias need a padded batch, not a Packing")
            out = ops.attention(q, k, v, attention_mask=attention_mask, attn_bias=attn_bias, causal=causal,
                                scale=self.scale, dropout_p=dropout, return_probs=return_probs)
            return out if return_probs else (out, None)
        if isinstance(attention_mask, ops.Packing):
            if causal:
                raise ValueError("attention over a Packing (unpadded encoder batch) is not causal")
            cu, n = attention_mask.cu_seqlens, attention_mask.max_seqlen
            out = self._varlen(q[0].transpose(0, 1), k[0].transpose(0, 1), v[0].transpose(0, 1), cu, cu, n, n,
                               scale=self.scale)
            return out.transpose(0, 1)[None], None
        return self._attention(q, k, v, causal=causal, attention_mask=attention_mask, scale=self.scale), None

    def extra_repr(self) -> str:
        return f"causal={self.causal}, scale={self.scale}, dropout_p={self.dropout_p}"
