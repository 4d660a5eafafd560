"""QuantizedLinear: the module that takes an `nn.Linear`'s place in a quantized model.

It holds its quantization method (methods.py: fastformers' own format, GGUF kept packed, GPTQ / AWQ
imported), which creates its packed tensors, takes them from a checkpoint, and runs its forward. Whatever the
method, the packed tensors are the buffers `qweight`, `scales` and (when the format has them) `mins`, so the
state_dict holds `<module>.qweight` / `.scales` / `.mins` next to the unchanged `<module>.bias`; its `.weight`
is the `QuantizedWeight` (ops/quant.py) built from them, which layers.FusedLinear concatenates with its
siblings' and `ops.linear` sends to `quantized_linear`.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .. import ops
from ..ops.quant import QuantizedWeight, quantize_weight
from .config import LinearFormat


class QuantizedLinear(nn.Module):
    fusable = True  # layers.FusedLinear may run it with its siblings in one quantized GEMM

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, method,
                 dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.method = in_features, out_features, method
        dtype = dtype or torch.get_default_dtype()
        method.create_weights(self, dtype, device)
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device)) if bias else None
        self._quantized_linear = ops.quantized_linear.binding()

    @classmethod
    def like(cls, linear: nn.Linear, method) -> "QuantizedLinear":
        """An empty QuantizedLinear of `linear`'s shape, device and dtype run by `method` (a
        methods.QuantizationMethod; the weights are not quantized), keeping `linear`'s bias."""
        weight = linear.weight
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, method=method,
                     dtype=weight.dtype, device=weight.device)
        if linear.bias is not None:
            module.bias = linear.bias
        return module

    @property
    def format(self) -> Optional[LinearFormat]:
        """The packed format (None only while an imported layer waits for its checkpoint tensors)."""
        return self.method.format

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
        return self.method.apply(self, x)

    def extra_repr(self) -> str:
        fmt = "pending" if self.format is None else self.format.describe()
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"method={self.method.quant_method}, format={fmt}")


def quantize_linear_weight(weight: torch.Tensor, fmt: LinearFormat) -> QuantizedWeight:
    return quantize_weight(weight, bits=fmt.bits, group_size=fmt.group_size, symmetric=fmt.symmetric,
                           method=fmt.method)


def format_of(qw: QuantizedWeight, symmetric: Optional[bool] = None) -> LinearFormat:
    """The LinearFormat of a packed weight (`symmetric` only tells int4 apart, which always has mins)."""
    if qw.bits == 8:
        symmetric = qw.mins is None
    return LinearFormat(qw.bits, qw.group_size, bool(symmetric), qw.method)
