"""What every Triton launcher shares: output allocation, launch accounting, small helpers.

- `empty(...)` allocates a launcher's outputs. Tests switch on `poisoned_outputs()`, which fills them
  with NaN (integers with -1) first, so an element a kernel forgot to write shows in the comparison.
- `count(name)` records each kernel launch in `LAUNCHES`, so a test can prove the Triton path ran
  (a backend that silently computed with torch would leave the counter at zero).
"""

from __future__ import annotations

import collections
import contextlib
import os
from typing import Iterator

import torch
import triton

LAUNCHES: collections.Counter = collections.Counter()
_poison = False


def count(name: str) -> None:
    LAUNCHES[name] += 1


@contextlib.contextmanager
def poisoned_outputs() -> Iterator[None]:
    """Fill every launcher-allocated output with NaN (floats) / -1 (integers) inside the block."""
    global _poison
    previous, _poison = _poison, True
    try:
        yield
    finally:
        _poison = previous


def empty(shape, *, dtype: torch.dtype, device) -> torch.Tensor:
    if not _poison:
        return torch.empty(shape, dtype=dtype, device=device)
    fill = float("nan") if dtype.is_floating_point else -1
    return torch.full(shape, fill, dtype=dtype, device=device)


def empty_like(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    return empty(t.shape, dtype=dtype or t.dtype, device=t.device)


def next_pow2(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))


def device_reason(t: torch.Tensor) -> str | None:
    """Why the kernels cannot run on `t`'s device (None when they can): CUDA, or the CPU interpreter."""
    if t.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return f"tensors on {t.device.type!r}: the Triton kernels need CUDA tensors (or TRITON_INTERPRET=1)"
    return None
