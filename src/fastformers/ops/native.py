"""fastformers' compiled extension `fastformers._C` (csrc/): loading it, saying why it is absent, and the fake
(meta) implementations of its ops so that torch.compile traces through them.

`pip install --no-build-isolation -e .` builds it when torch and a C++ compiler are present (setup.py); without
it the package is pure Python and the ops it would serve run on their other backends. Importing the library
registers its ops as `torch.ops.fastformers.*`.
"""

from __future__ import annotations

import functools
import importlib
import os
from typing import Optional

import torch


@functools.lru_cache(maxsize=None)
def load_error() -> Optional[str]:
    """None when fastformers._C is loaded (its ops registered), else why it is not."""
    if os.environ.get("FASTFORMERS_NO_EXTENSION") == "1":
        return "FASTFORMERS_NO_EXTENSION=1"
    try:
        importlib.import_module("fastformers._C")
    except ImportError as err:
        if isinstance(err, ModuleNotFoundError) and err.name == "fastformers._C":
            return ("the extension fastformers._C was not built (pip install --no-build-isolation -e . with torch "
                    "and a C++ compiler present)")
        return f"fastformers._C does not load: {err}"  # built for another torch, say
    if not hasattr(torch.ops.fastformers, "quant_linear"):
        return "fastformers._C loaded but registered no ops"
    _register_fakes()
    return None


def available() -> bool:
    return load_error() is None


def cpu_isa() -> Optional[str]:
    """The instruction set the CPU kernels run with here ("avx512", "avx2 ...", "portable"), None when not built."""
    return torch.ops.fastformers.cpu_isa() if available() else None


def kernels() -> dict:
    """What `fastformers env` shows: each compiled kernel and where it runs, or why there are none."""
    reason = load_error()
    if reason is not None:
        return {"built": False, "reason": reason}
    return {"built": True, "cpu_isa": cpu_isa(), "ops": ["fastformers::quant_linear (cpu)"]}


def _register_fakes() -> None:
    @torch.library.register_fake("fastformers::quant_linear")
    def _(x, qweight, scales, mins, bits, group_size, bias):
        return x.new_empty((*x.shape[:-1], qweight.shape[0]))
