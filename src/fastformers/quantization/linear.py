"""QuantizedLinear: the module that takes an `nn.Linear`'s place in a quantized model.

Its packed tensors are buffers, `qweight`, `scales` and (when the format has them) `mins`, so the state_dict
holds `<module>.qweight` / `.scales` / `.mins` next to the unchanged `<module>.bias`; its `.weight` is the
`QuantizedWeight` (ops/quant.py) built from them, so models keep calling `ops.linear(x, m.weight, m.bias)`
and the op sends the call to `quantized_linear`.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from .. import ops
from ..ops.quant import QuantizedWeight, quantize_weight
from .config import LinearFormat


class QuantizedLinear(nn.Module):
    # forward is exactly ops.linear(x, self.weight, self.bias): models may call that directly (models._common.linear)
    plain_linear = True
    fusable = True  # layers.FusedLinear may run it with its siblings in one quantized GEMM

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, fmt: LinearFormat,
                 dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.format = in_features, out_features, fmt
        dtype = dtype or torch.get_default_dtype()
        groups = math.ceil(in_features / (fmt.group_size or in_features))
        packed = (out_features, in_features) if fmt.bits == 8 else (out_features, (in_features + 1) // 2)
        self.register_buffer("qweight", torch.zeros(packed, dtype=torch.int8 if fmt.bits == 8 else torch.uint8,
                                                    device=device))
        self.register_buffer("scales", torch.ones((out_features, groups), dtype=dtype, device=device))
        self.register_buffer("mins", torch.zeros((out_features, groups), dtype=dtype, device=device)
                             if fmt.has_mins else None)
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device)) if bias else None
        self._quantized_linear = ops.quantized_linear.binding()

    @classmethod
    def like(cls, linear: nn.Linear, fmt: LinearFormat) -> "QuantizedLinear":
        """An empty QuantizedLinear of `linear`'s shape, device and dtype (the weights are not quantized)."""
        weight = linear.weight
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, fmt=fmt, dtype=weight.dtype,
                     device=weight.device)
        if linear.bias is not None:
            module.bias = linear.bias
        return module

    @classmethod
    def from_linear(cls, linear: nn.Linear, fmt: LinearFormat) -> "QuantizedLinear":
        """`linear` quantized round-to-nearest to `fmt` (its bias kept as it is)."""
        module = cls.like(linear, fmt)
        module.weight = quantize_linear_weight(linear.weight.detach(), fmt)
        return module

    @property
    def weight(self) -> QuantizedWeight:
        fmt = self.format
        return QuantizedWeight(self.qweight, self.scales, self.mins, fmt.bits, fmt.group_size, self.in_features,
                               fmt.method)

    @weight.setter
    def weight(self, qw: QuantizedWeight) -> None:
        """Take the packed tensors of `qw`, which must have this module's shape and format."""
        fmt = self.format
        if not isinstance(qw, QuantizedWeight):
            raise TypeError(f"QuantizedLinear.weight must be a QuantizedWeight, got {type(qw).__name__}")
        if ((qw.bits, qw.group_size, qw.method, qw.mins is not None, tuple(qw.shape))
                != (fmt.bits, fmt.group_size, fmt.method, fmt.has_mins, (self.out_features, self.in_features))):
            raise ValueError(f"a {qw.bits}-bit weight of shape {tuple(qw.shape)} (group_size={qw.group_size}, "
                             f"method={qw.method}, mins={qw.mins is not None}) does not fit this "
                             f"{fmt.describe()} QuantizedLinear of shape {(self.out_features, self.in_features)}")
        self.qweight, self.scales = qw.qweight, qw.scales
        if qw.mins is not None:
            self.mins = qw.mins

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._quantized_linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"format={self.format.describe()}")


def quantize_linear_weight(weight: torch.Tensor, fmt: LinearFormat) -> QuantizedWeight:
    return quantize_weight(weight, bits=fmt.bits, group_size=fmt.group_size, symmetric=fmt.symmetric,
                           method=fmt.method)


def format_of(qw: QuantizedWeight, symmetric: Optional[bool] = None) -> LinearFormat:
    """The LinearFormat of a packed weight (`symmetric` only tells int4 apart, which always has mins)."""
    if qw.bits == 8:
        symmetric = qw.mins is None
    return LinearFormat(qw.bits, qw.group_size, bool(symmetric), qw.method)
