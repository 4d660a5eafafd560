"""Rotary position embedding op and its reference (the rotate-half convention of Llama/NeoX)."""

from __future__ import annotations

import torch

from . import native
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


def _rotary_cpu_unsupported(q, k, cos, sin):
    reason = native.load_error()
    if reason is not None:
        return f"the cpu rotary is in fastformers._C, which is unavailable: {reason}"
    if any(t.dtype != torch.float32 for t in (q, k, cos, sin)):
        return f"the cpu rotary takes float32 (got q {q.dtype}, cos {cos.dtype})"
    if q.dim() != 4 or k.dim() != 4:
        return "the cpu rotary takes (batch, heads, seq, head_dim) q and k"
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad):
        return "the cpu rotary has no backward (training runs the reference)"
    return None


@rotary.register("cpu", unsupported=_rotary_cpu_unsupported)
def rotary_cpu(q, k, cos, sin):
    """csrc/cpu/rotary.cpp: q and k in one call, read through their strides."""
    return torch.ops.fastformers_ext.rotary(q, k, cos, sin)
