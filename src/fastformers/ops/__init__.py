"""The op seam: models call these functions; the backend (torch / triton / cuda) is chosen here.

See `backend.py` for the dispatch rule and `FASTFORMERS_BACKEND` / `use_backend`.
"""

from .activation import gelu, gelu_reference, silu_mul, silu_mul_reference
from .attention import (
    attention,
    attention_reference,
    attention_with_probs,
    varlen_attention,
    varlen_attention_reference,
)
from .backend import BACKENDS, BackendUnavailableError, backend_status, current_backend, use_backend
from .linear import linear, linear_reference
from .norm import layer_norm, layer_norm_reference, rms_norm, rms_norm_reference
from .rotary import rotary, rotary_reference

__all__ = [
    "BACKENDS", "BackendUnavailableError", "attention", "attention_with_probs", "backend_status",
    "current_backend", "gelu", "layer_norm", "linear", "rms_norm", "rotary", "silu_mul",
    "use_backend", "varlen_attention",
]
