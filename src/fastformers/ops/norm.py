"""Normalisation ops (LayerNorm fused with dropout and residual, RMSNorm) and their references."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import native
from .backend import op


def layer_norm_reference(x, weight, bias, eps: float, *, residual=None, dropout_p: float = 0.0,
                         training: bool = False):
    """LayerNorm(dropout(x) + residual) over the last dimension."""
    if dropout_p > 0.0 and training:
        x = F.dropout(x, dropout_p, training=True)
    if residual is not None:
        x = x + residual
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


layer_norm = op(layer_norm_reference)
layer_norm.register_lazy("triton", "fastformers.kernels.norm")


def rms_norm_reference(x, weight, eps: float, *, residual=None):
    """RMSNorm over the last dimension, computed in float32 as Llama does.

    With `residual`, returns (rms_norm(x + residual), x + residual): the sum is the next residual
    stream of a pre-norm decoder, so a fused kernel writes both.
    """
    if residual is not None:
        x = x + residual
    if x.dtype == torch.float32 and weight.dtype == torch.float32:
        out = F.rms_norm(x, (x.shape[-1],), weight, eps)  # the same arithmetic, one call instead of six
    else:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
        out = weight * h.to(x.dtype)
    return out if residual is None else (out, x)


rms_norm = op(rms_norm_reference)
rms_norm.register_lazy("triton", "fastformers.kernels.norm")


def _rms_norm_cpu_unsupported(x, weight, eps, *, residual=None):
    reason = native.load_error()
    if reason is not None:
        return f"the cpu RMSNorm is in fastformers._C, which is unavailable: {reason}"
    if x.dtype != torch.float32 or weight.dtype != torch.float32 or (residual is not None and
                                                                     residual.dtype != torch.float32):
        return f"the cpu RMSNorm takes float32 (got {x.dtype}, weight {weight.dtype})"
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or
                                    (residual is not None and residual.requires_grad)):
        return "the cpu RMSNorm has no backward (training runs the reference)"
    return None


@rms_norm.register("cpu", unsupported=_rms_norm_cpu_unsupported)
def rms_norm_cpu(x, weight, eps: float, *, residual=None):
    """csrc/cpu/norm.cpp: one pass per row (the residual add included), the reference's float32 arithmetic."""
    if residual is None:
        return torch.ops.fastformers_ext.rms_norm(x, weight, eps)
    return torch.ops.fastformers_ext.add_rms_norm(x, residual, weight, eps)
