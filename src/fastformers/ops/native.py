"""fastformers' compiled extension `fastformers._C` (csrc/): loading it, saying why it is absent, and the fake
(meta) implementations of its ops so that torch.compile traces through them.

`pip install --no-build-isolation -e .` builds it when torch and a C++ compiler are present (setup.py); without
it the package is pure Python and the ops it would serve run on their other backends. Importing the library
registers its ops as `torch.ops.fastformers_ext.*`.
"""

from __future__ import annotations

import importlib
import os
from typing import Optional

import torch


def _load() -> Optional[str]:
    if os.environ.get("FASTFORMERS_NO_EXTENSION") == "1":
        return "FASTFORMERS_NO_EXTENSION=1"
    try:
        importlib.import_module("fastformers._C")
    except ImportError as err:
        if isinstance(err, ModuleNotFoundError) and err.name == "fastformers._C":
            return ("the extension fastformers._C was not built (pip install --no-build-isolation -e . with torch "
                    "and a C++ compiler present)")
        return f"fastformers._C does not load: {err}"  # built for another torch, say
    if not hasattr(torch.ops.fastformers_ext, "quant_linear"):
        return "fastformers._C loaded but registered no ops"
    _register_fakes()
    return None


def load_error() -> Optional[str]:
    """None when fastformers._C is loaded (its ops registered), else why it is not."""
    return _LOAD_ERROR


def available() -> bool:
    return load_error() is None


def cpu_isa() -> Optional[str]:
    """The instruction set the CPU kernels run with here ("avx512", "avx2 ...", "portable"), None when not built."""
    return torch.ops.fastformers_ext.cpu_isa() if available() else None


def kernels() -> dict:
    """What `fastformers env` shows: each compiled kernel and where it runs, or why there are none."""
    reason = load_error()
    if reason is not None:
        return {"built": False, "reason": reason}
    return {"built": True, "cpu_isa": cpu_isa(), "cpu_int8_activations_isa": torch.ops.fastformers_ext.cpu_a8_isa(),
            "ops": [f"fastformers_ext::{name} (cpu)" for name in OPS]}


#: the ops fastformers._C registers (all CPU kernels today)
OPS = ("quant_linear", "quant_linear_a8", "rms_norm", "add_rms_norm", "rotary", "decode_attention", "decode_layers",
       "encoder_layers", "argmax")


def _register_fakes() -> None:
    @torch.library.register_fake("fastformers_ext::quant_linear")
    def _(x, qweight, scales, mins, bits, group_size, bias):
        return x.new_empty((*x.shape[:-1], qweight.shape[0]))

    @torch.library.register_fake("fastformers_ext::quant_linear_a8")
    def _(x, qweight, scales, mins, bits, group_size, bias):
        return x.new_empty((*x.shape[:-1], qweight.shape[0]))

    @torch.library.register_fake("fastformers_ext::argmax")
    def _(x):
        return x.new_empty(x.shape[:-1], dtype=torch.long)

    @torch.library.register_fake("fastformers_ext::rms_norm")
    def _(x, weight, eps):
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    @torch.library.register_fake("fastformers_ext::rotary")
    def _(q, k, cos, sin):
        return q.new_empty(q.shape), k.new_empty(k.shape)

    @torch.library.register_fake("fastformers_ext::decode_attention")
    def _(q, k, v, keep, scale):
        return q.new_empty(q.shape)

    @torch.library.register_fake("fastformers_ext::decode_layers")
    def _(x, weights, formats, k_caches, v_caches, cache_position, keep, cos, sin, num_heads, num_kv_heads, eps,
          scale):
        return x.new_empty(x.shape)

    @torch.library.register_fake("fastformers_ext::encoder_layers")
    def _(x, cu_seqlens, weights, formats, num_heads, eps, act):
        return x.new_empty(x.shape)

    @torch.library.register_fake("fastformers_ext::add_rms_norm")
    def _(x, residual, weight, eps):
        return (torch.empty_like(x, memory_format=torch.contiguous_format),
                torch.empty_like(x, memory_format=torch.contiguous_format))


# loaded once, when fastformers.ops is imported: support predicates read this constant on every call, also
# while torch.compile traces them (Dynamo cannot trace an import)
_LOAD_ERROR = _load()
