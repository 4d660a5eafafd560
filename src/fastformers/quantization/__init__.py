"""Quantization: configs, the QuantizedLinear module, and importers of other formats.

`QuantizationConfig` (config.py) says which linears are quantized and how; `from_pretrained(...,
quantization_config=...)` (or `load_in_8bit=True` / `load_in_4bit=True`) quantizes a model while it loads
(apply.py), and `quantize_model` quantizes one in memory. The packed format and the matmul are ops/quant.py's
`QuantizedWeight` and `quantized_linear`; GGUF Q8_0 / Q4_0 / Q4_1 tensors can be kept packed (gguf.py), and
GPTQ / AWQ checkpoints are repacked by gptq.py / awq.py. `gptq_quantize_` (calibrate.py) quantizes with GPTQ on
calibration data (QuantizationConfig(algorithm="gptq") with quantize_model(..., calibration_ids=...)).
"""

from .apply import describe, plan_modules, quantize_model
from .calibrate import gptq_quantize_, gptq_quantize_weight
from .config import LinearFormat, QuantizationConfig
from .linear import QuantizedLinear

__all__ = ["LinearFormat", "QuantizationConfig", "QuantizedLinear", "describe", "gptq_quantize_",
           "gptq_quantize_weight", "plan_modules", "quantize_model"]
