"""Activation ops (bias+GELU, SwiGLU's silu(gate) * up) and their references."""

from __future__ import annotations

import torch.nn.functional as F

from .backend import op


def gelu_reference(x, *, bias=None, approximate: str = "none"):
    """gelu(x + bias); approximate="none" is the erf form, "tanh" the tanh approximation."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate={approximate!r}; expected 'none' or 'tanh'")
    if bias is not None:
        x = x + bias
    return F.gelu(x, approximate=approximate)


gelu = op(gelu_reference)
gelu.register_lazy("triton", "fastformers.kernels.activation")


def silu_mul_reference(gate, up):
    """silu(gate) * up, the SwiGLU feed-forward's activation."""
    return F.silu(gate) * up


silu_mul = op(silu_mul_reference)
silu_mul.register_lazy("triton", "fastformers.kernels.activation")
