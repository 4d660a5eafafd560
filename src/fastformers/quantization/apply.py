"""Quantizing a loaded float model in memory: `quantize_model`, round to nearest (plan.py's swap) or GPTQ on
calibration data (calibrate.py). Quantizing while loading is loader.py's; see registry.py for the schemes."""

from __future__ import annotations

import torch
from torch import nn

from .calibrate import gptq_quantize_
from .config import QuantizationConfig
from .plan import describe, plan_modules, replace_linears


def quantize_model(model: nn.Module, config: QuantizationConfig | dict | None = None, *, calibration_ids=None,
                   **kwargs) -> nn.Module:
    """Quantize a loaded float model in place (config, or its fields as keywords) and return it; its
    config.quantization_config records the result, so save_pretrained writes a loadable quantized checkpoint.
    algorithm="gptq" needs calibration_ids: token ids (n_samples, seq_len) or a list of 1-D tensors
    (calibrate.gptq_quantize_)."""
    config = QuantizationConfig.from_call(config, kwargs, "quantize_model")
    if config.algorithm == "gptq":
        if calibration_ids is None:
            raise ValueError("quantize_model: algorithm='gptq' needs calibration data: pass calibration_ids=token "
                             "ids (n_samples, seq_len), e.g. 8 sequences of 256 tokens of text like the model's use")
        return gptq_quantize_(model, calibration_ids, config)
    if calibration_ids is not None:
        raise ValueError(f"quantize_model: calibration_ids are used by algorithm='gptq', not {config.algorithm!r}")
    with torch.no_grad():
        replace_linears(model, plan_modules(model, config), quantize=True)
    if hasattr(model, "config"):
        model.config.quantization_config = describe(model, config)
    return model


__all__ = ["quantize_model"]
