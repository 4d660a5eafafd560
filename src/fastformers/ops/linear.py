"""The linear op. A quantized weight (ops/quant.py's QuantizedWeight) in place of the float weight sends
the call to `quantized_linear`, so models never branch on quantization."""

from __future__ import annotations

import torch.nn.functional as F

from .backend import Op
from .quant import QuantizedWeight, quantized_linear


def linear_reference(x, weight, bias=None):
    return F.linear(x, weight, bias)


class _Linear(Op):
    def __call__(self, x, weight, bias=None):
        if isinstance(weight, QuantizedWeight):
            return quantized_linear(x, weight, bias)
        return super().__call__(x, weight, bias)


# Dense matmul has no Triton or CUDA kernel of ours: cuBLAS (through torch) is the kernel on every
# backend, so forcing a backend leaves it alone.
linear = _Linear("linear", linear_reference, same_on_every_backend=True)
