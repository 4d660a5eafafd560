"""Normalisation layers: LayerNorm (fused with dropout and the residual add) and RMSNorm (fused with the
residual add, returning the new residual stream too)."""

from __future__ import annotations

import torch
from torch import nn

from .. import ops


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm (same parameters and names) whose forward is LayerNorm(dropout(x) + residual) in one op.
    `dropout_p` applies in training mode only."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._layer_norm = ops.layer_norm.binding()

    def forward(self, x: torch.Tensor, residual=None, dropout_p: float = 0.0) -> torch.Tensor:
        return self._layer_norm(x, self.weight, self.bias, self.eps, residual=residual, dropout_p=dropout_p,
                                training=self.training)


class RMSNorm(nn.Module):
    """Scale by the root mean square (no mean subtraction, no bias; statistics in float32), optionally after
    adding a residual (then returns (normed, sum)): Llama's RMSNorm and T5's LayerNorm."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.variance_epsilon = eps
        self._rms_norm = ops.rms_norm.binding()

    def forward(self, x, residual=None):
        return self._rms_norm(x, self.weight, self.variance_epsilon, residual=residual)
