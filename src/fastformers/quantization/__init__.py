"""Quantization: one protocol for fastformers' own formats, GGUF kept packed, GPTQ and AWQ.

A quantization config (config.py's `QuantizationConfig`, imported.py's `ImportedConfig` for transformers'
GPTQ / AWQ dicts), looked up by `quant_method` in registry.py, hands out a method object (methods.py) for
each quantized linear: it creates the packed weights, takes them from a checkpoint, and runs the forward of
the `QuantizedLinear` (linear.py) that holds it. `from_pretrained(..., quantization_config=...)` (or
`load_in_8bit=True` / `load_in_4bit=True`) quantizes while loading (loader.py); a checkpoint saved quantized
loads packed as saved; `quantize_model` (apply.py) quantizes a model in memory, round to nearest or with GPTQ
on calibration data (calibrate.py). Which linears: plan.py. The packed format and the matmul are
ops/quant.py's `QuantizedWeight` and `quantized_linear`.
"""

from .apply import quantize_model
from .calibrate import gptq_quantize_, gptq_quantize_weight
from .config import LinearFormat, QuantizationConfig
from .linear import QuantizedLinear
from .methods import QuantizationMethod
from .plan import describe, plan_modules
from .registry import QUANT_METHODS, get_quantization_config

__all__ = ["LinearFormat", "QUANT_METHODS", "QuantizationConfig", "QuantizationMethod", "QuantizedLinear", "describe",
           "get_quantization_config", "gptq_quantize_", "gptq_quantize_weight", "plan_modules", "quantize_model"]
