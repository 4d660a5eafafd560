"""Rotary position embedding as a layer: rotates q and k by precomputed cos/sin tables."""

from __future__ import annotations

from torch import nn

from .. import ops


class Rotary(nn.Module):
    """(q, k) rotated by cos/sin (rotate-half convention; see ops.rotary for the layouts)."""

    def __init__(self) -> None:
        super().__init__()
        self._rotary = ops.rotary.binding()

    def forward(self, q, k, cos, sin):
        return self._rotary(q, k, cos, sin)
