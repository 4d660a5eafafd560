"""The op seam: models call these functions; the backend (torch / triton / cuda) is chosen here.

See `backend.py` for the dispatch rule and `FASTFORMERS_BACKEND` / `use_backend`.
"""

from .activation import gelu, gelu_reference, silu_mul, silu_mul_reference
from .argmax import argmax, argmax_reference
from .attention import (
    attention,
    attention_reference,
    attention_with_probs,
    packed_attention,
    unpadding_pays,
    varlen_attention,
    varlen_attention_reference,
)
from .backend import BACKENDS, BackendUnavailableError, backend_status, current_backend, use_backend
from .decode import decode_layers, decode_layers_reference
from .encoder import encoder_layers, encoder_layers_reference
from .linear import linear, linear_gelu, linear_gelu_reference, linear_reference
from .norm import layer_norm, layer_norm_reference, rms_norm, rms_norm_reference
from .padding import Packing, pad, unpad
from .quant import (
    QuantizedWeight,
    dequantize_weight,
    quantize_weight,
    quantized_linear,
    quantized_linear_reference,
)
from .rotary import rotary, rotary_reference

__all__ = [
    "BACKENDS", "BackendUnavailableError", "argmax", "attention", "attention_with_probs", "backend_status",
    "current_backend", "decode_layers", "dequantize_weight", "encoder_layers", "gelu", "layer_norm", "linear",
    "linear_gelu", "Packing", "packed_attention", "pad", "QuantizedWeight", "quantize_weight", "quantized_linear",
    "rms_norm", "rotary", "silu_mul", "unpad", "unpadding_pays", "use_backend", "varlen_attention",
]


def _preload_kernels() -> None:
    """Import the Triton kernels up front where they can run (a CUDA device, or the interpreter), so
    that an op's first call inside torch.compile does not import them: Dynamo cannot trace an import."""
    if backend_status("triton") is None:
        for fn in (attention, varlen_attention, layer_norm, rms_norm, gelu, silu_mul, rotary, quantized_linear):
            fn._load("triton")


_preload_kernels()
