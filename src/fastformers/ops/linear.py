"""The linear op. Quantized weights (a later issue) plug in here, so models never branch on them."""

from __future__ import annotations

import torch.nn.functional as F

from .backend import Op


def linear_reference(x, weight, bias=None):
    return F.linear(x, weight, bias)


# Dense matmul has no Triton or CUDA kernel of ours: cuBLAS (through torch) is the kernel on every
# backend, so forcing a backend leaves it alone. Quantized weights bring their own kernels (later).
linear = Op("linear", linear_reference, same_on_every_backend=True)
