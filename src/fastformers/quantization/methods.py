"""The quantization protocol: one method object per quantized linear, handed out by a quantization config.

A config (config.py's QuantizationConfig for quant_method "fastformers" / "gguf", imported.py's ImportedConfig
for "gptq" / "awq"; registry.py looks them up by quant_method) answers `get_method(...)` with a
`QuantizationMethod`, which a `QuantizedLinear` (linear.py) holds and calls:

    create_weights(layer, dtype, device)    the layer's packed buffers, empty (on the meta device while loading)
    load(layer, part, tensor, ...)          one checkpoint tensor of the layer (`<module>.<part>`) -> the
                                            layer tensors it becomes ({} while more are needed; None: not
                                            this method's, it loads as usual)
    process_after_loading(layer, name, ...) after the last tensor: what is missing, a final check
    apply(layer, x)                         the forward

so neither the model files nor modeling.py branch on the scheme: the loader (loader.py) only routes tensors.
"""

from __future__ import annotations

import dataclasses

from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from ..ops.quant import QuantizedWeight
from .config import LinearFormat
from .gguf import kept_format
from .linear import format_of, quantize_linear_weight

#: The packed buffers every QuantizedLinear has, whatever its method.
PARTS = ("qweight", "scales", "mins")
_LAYOUT = {"qweight": "int8 (out, in) codes for 8 bits, uint8 (out, ceil(in / 2)) nibbles for 4 bits",
           "scales": "(out, groups)", "mins": "(out, groups)"}


class QuantizationMethod:
    """How the quantized linears of one scheme are created, loaded and run (see the module docstring).

    `format` is the layer's packed format (LinearFormat), None until known (imported checkpoints decide it
    when a layer's tensors have all arrived). `checkpoint_parts`: tensor suffixes a checkpoint may hold for
    a layer that its state_dict does not show (a float `weight`, GPTQ's `qzeros`...)."""

    quant_method = "?"
    checkpoint_parts: Tuple[str, ...] = ()
    format: Optional[LinearFormat] = None

    #: whether loading/gguf.py hands this method's weights over packed (GGUFCheckpoint's keep_quantized)
    gguf_packed = False

    @classmethod
    def plan_format(cls, config, module_name: str, gguf_types: Optional[Dict[str, str]]) -> Optional[LinearFormat]:
        """The format a planned linear gets (None: it stays float); `gguf_types`: model parameter name -> ggml
        type name, when a GGUF file loads."""
        return config.format_for(module_name)

    def create_weights(self, layer: nn.Module, dtype: torch.dtype, device) -> None:
        """Register the packed buffers of `self.format` on `layer` (placeholders while it is unknown)."""
        fmt, out, inp = self.format, layer.out_features, layer.in_features
        if fmt is None:
            for part in PARTS:
                layer.register_buffer(part, None)
            return
        groups = -(-inp // (fmt.group_size or inp))
        packed = (out, inp) if fmt.bits == 8 else (out, (inp + 1) // 2)
        layer.register_buffer("qweight", torch.zeros(packed, dtype=torch.int8 if fmt.bits == 8 else torch.uint8,
                                                     device=device))
        layer.register_buffer("scales", torch.ones((out, groups), dtype=dtype, device=device))
        layer.register_buffer("mins", torch.zeros((out, groups), dtype=dtype, device=device)
                              if fmt.has_mins else None)

    def load(self, layer: nn.Module, part: str, tensor, *, key: str, module: str, dtype: torch.dtype,
             device: torch.device) -> Optional[Dict[str, torch.Tensor]]:
        """Checkpoint tensor `key` (the model's `<module>.<part>`) -> {buffer or parameter name of the layer:
        tensor} to assign ({} while the layer waits for more), or None when it loads as usual."""
        raise NotImplementedError

    def process_after_loading(self, layer: nn.Module, name: str, *, missing: set, source: str, dtype: torch.dtype,
                              device: torch.device, init_std: float) -> List[str]:
        """After streaming (`missing`: model names not loaded): raise on what cannot be missing, initialise
        what may be; returns the names initialised here."""
        layer.weight.check(name)
        return []

    def apply(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return layer._quantized_linear(x, layer.weight, layer.bias)

    def parts(self) -> List[str]:
        """The layer's packed buffers a checkpoint of it holds."""
        return [p for p in PARTS if p != "mins" or self.format.has_mins]


class PackedMethod(QuantizationMethod):
    """fastformers' own formats (int8 / int4 weight-only, w8a8). packed=False: a float checkpoint, each weight
    quantized round-to-nearest as it arrives (a missing one is initialised, then quantized); packed=True: a
    saved quantized checkpoint, its qweight / scales / mins taken as they are (a float weight is an error)."""

    quant_method = "fastformers"
    checkpoint_parts = ("weight",)

    def __init__(self, fmt: LinearFormat, packed: bool = False) -> None:
        self.format, self.packed = fmt, packed

    def load(self, layer, part, tensor, *, key, module, dtype, device):
        fmt, shape = self.format, (layer.out_features, layer.in_features)
        if part == "weight":
            if isinstance(tensor, QuantizedWeight):
                qw = self._packed_weight(layer, tensor, key, module).to(device=device, dtype=dtype)
            elif self.packed:
                raise ValueError(f"{key}: a float weight in a quantized checkpoint; its quantization_config says "
                                 f"{module} is stored packed ({fmt.describe()}: {', '.join(self.parts())})")
            else:
                if tuple(tensor.shape) != shape:
                    raise ValueError(f"{key}: checkpoint shape {tuple(tensor.shape)} vs model {shape}")
                qw = quantize_linear_weight(tensor.to(device=device, dtype=dtype), fmt)
            return {p: t for p, t in zip(PARTS, (qw.qweight, qw.scales, qw.mins)) if t is not None}
        if part in PARTS:
            if not self.packed:
                raise ValueError(f"{key}: the checkpoint already holds packed quantized tensors, but its "
                                 f"config.json has no fastformers quantization_config describing them")
            return {part: self._check_part(layer, key, module, part, tensor).to(
                device=device, dtype=dtype if part != "qweight" else None)}
        return None

    def _packed_weight(self, layer, qw: QuantizedWeight, key: str, module: str) -> QuantizedWeight:
        fmt, shape = self.format, (layer.out_features, layer.in_features)
        if format_of(qw, fmt.symmetric) != fmt or tuple(qw.shape) != shape:
            raise ValueError(f"{key}: a packed {format_of(qw).describe()} weight of shape {tuple(qw.shape)}, but "
                             f"{module} expects {fmt.describe()} {shape}")
        return qw

    def _check_part(self, layer, key: str, module: str, part: str, tensor: torch.Tensor) -> torch.Tensor:
        fmt, expected = self.format, getattr(layer, part)
        shape = (layer.out_features, layer.in_features)
        if expected is None:
            raise ValueError(f"{key}: unexpected mins for {module}, whose quantization_config format "
                             f"({fmt.describe()}) has none")
        ok_dtype = tensor.dtype == expected.dtype if part == "qweight" else tensor.is_floating_point()
        if not ok_dtype or tuple(tensor.shape) != tuple(expected.shape):
            want = f"an {str(expected.dtype).removeprefix('torch.')}" if part == "qweight" else "a float"
            group = "one per output channel" if fmt.group_size is None else f"groups of {fmt.group_size}"
            raise ValueError(f"{key}: expected {want} tensor of shape {tuple(expected.shape)} for {fmt.describe()} "
                             f"weights of shape {shape} ({part}: {_LAYOUT[part]}, {group}), got "
                             f"{str(tensor.dtype).removeprefix('torch.')} {tuple(tensor.shape)}")
        return tensor

    def process_after_loading(self, layer, name, *, missing, source, dtype, device, init_std):
        parts = [f"{name}.{p}" for p in self.parts()]
        lacking = [p for p in parts if p in missing]
        initialised = []
        if lacking and self.packed:
            raise ValueError(f"{source}: the quantized checkpoint has no {', '.join(lacking)} "
                             f"({self.format.describe()} weights need {', '.join(self.parts())})")
        if lacking:  # a float checkpoint without this weight: initialised as the float model would be, quantized
            weight = torch.empty((layer.out_features, layer.in_features), dtype=dtype, device=device)
            layer.weight = quantize_linear_weight(weight.normal_(std=init_std), self.format)
            initialised.append(f"{name}.weight")
        if f"{name}.bias" in missing:
            layer.bias = nn.Parameter(torch.zeros(layer.out_features, dtype=dtype, device=device))
            initialised.append(f"{name}.bias")
        return initialised + super().process_after_loading(layer, name, missing=missing, source=source, dtype=dtype,
                                                            device=device, init_std=init_std)


class GGUFMethod(PackedMethod):
    """A GGUF file's Q8_0 / Q4_0 / Q4_1 / Q4_K / Q6_K matrix kept packed (quantization/gguf.py): loading/gguf.py hands
    its weight over as a QuantizedWeight of this format, taken as it is (run with the config's method)."""

    quant_method = "gguf"
    gguf_packed = True

    @classmethod
    def plan_format(cls, config, module_name, gguf_types):
        """Q8_0 / Q4_0 / Q4_1 / Q4_K / Q6_K weights are kept in their own format (run with the config's method); other
        types are dequantized (float)."""
        fmt = kept_format((gguf_types or {}).get(f"{module_name}.weight", ""))
        return None if fmt is None else fmt._replace(method=getattr(config, "method", None) or fmt.method)

    def __init__(self, fmt: LinearFormat, packed: bool = False) -> None:
        super().__init__(fmt, packed=False)  # a GGUF file is never a fastformers packed checkpoint

    def load(self, layer, part, tensor, *, key, module, dtype, device):
        if part == "weight" and not isinstance(tensor, QuantizedWeight):
            raise ValueError(f"{key}: expected a packed GGUF tensor ({self.format.describe()}), got a float one")
        if part == "weight" and tensor.method != self.format.method:  # the file's codes, run with the config's method
            tensor = dataclasses.replace(tensor, method=self.format.method)
        return super().load(layer, part, tensor, key=key, module=module, dtype=dtype, device=device)


__all__ = ["GGUFMethod", "PARTS", "PackedMethod", "QuantizationMethod"]
