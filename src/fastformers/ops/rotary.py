"""Rotary position embedding op and its reference (the rotate-half convention of Llama/NeoX)."""

from __future__ import annotations

import torch

from .backend import op


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotary_reference(q, k, cos, sin):
    """Return (q, k) rotated. q, k: (batch, heads, seq, head_dim); cos, sin: (batch, seq, rot_dim) or
    (seq, rot_dim) with rot_dim <= head_dim (only the first rot_dim features rotate)."""
    if cos.dim() == 2:
        cos, sin = cos[None], sin[None]
    cos, sin = cos[:, None], sin[:, None]
    rot = cos.shape[-1]

    def apply(x):
        if rot == x.shape[-1]:
            return x * cos + _rotate_half(x) * sin
        xr, xp = x[..., :rot], x[..., rot:]
        return torch.cat((xr * cos + _rotate_half(xr) * sin, xp), dim=-1)

    return apply(q), apply(k)


rotary = op(rotary_reference)
rotary.register_lazy("triton", "fastformers.kernels.rotary")
