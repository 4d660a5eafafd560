"""`argmax(x)`: torch.argmax(x, dim=-1) -- greedy decoding's pick over the vocabulary, once per step.

On a CPU, torch's reduction takes ~40 us for SmolLM2's 49k-entry row (2-core AVX-512 CPU, measured), a few
percent of a step of a small model; the `cpu` backend runs csrc/cpu/argmax.cpp (one pass, 16 lanes at a time) on
float32 with the same answer: the first index of the largest value, a NaN larger than any number (the first NaN
wins), ties to the first index. Other dtypes and devices run torch.argmax.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import native
from .backend import Op


def argmax_reference(x: torch.Tensor) -> torch.Tensor:
    return torch.argmax(x, dim=-1)


argmax = Op("argmax", argmax_reference, same_on_every_backend=True)


def _cpu_unsupported(x: torch.Tensor) -> Optional[str]:
    reason = native.load_error()
    if reason is not None:
        return f"the cpu argmax is in fastformers._C, which is unavailable: {reason}"
    if x.dtype != torch.float32 or x.device.type != "cpu" or x.dim() == 0 or x.shape[-1] == 0:
        return f"the cpu argmax takes float32 CPU tensors with a non-empty last dimension (got {x.dtype} {x.device})"
    if torch.compiler.is_compiling():
        return "under torch.compile (Inductor compiles torch.argmax itself)"
    return None


@argmax.register("cpu", unsupported=_cpu_unsupported)
def argmax_cpu(x: torch.Tensor) -> torch.Tensor:
    return torch.ops.fastformers_ext.argmax(x)
