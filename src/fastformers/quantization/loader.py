"""QuantizedLoader: what PreTrainedModel.from_pretrained drives while a quantized model loads.

The loader only routes: the quantized layers' method objects (methods.py) turn each of their checkpoint
tensors into packed buffers as it streams in (`convert`), and check what is missing after the last one
(`finish`). A quantization config hands out the loader with its methods (`QuantizationConfig.loader`,
`ImportedConfig.loader`); modeling.py never looks at the scheme.

Loading a float checkpoint with a QuantizationConfig quantizes each linear's weight the moment it is read
(cast to the model dtype, then quantized), so the float copy of one weight is all that is alive at a time:
peak memory stays near the quantized model's size. Loading a saved quantized checkpoint takes the packed
tensors as they are (no re-quantization); errors name the tensor at fault.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn

from ..ops.quant import QuantizedWeight
from .linear import QuantizedLinear
from .methods import PARTS
from .plan import describe, plan_modules, replace_linears


class QuantizedLoader:
    """The quantized layers of a (meta-device) model, by name, each with its method: `layers` holds those
    swapped in up front; a subclass may swap more in as their tensors appear (`_layer`).

    base: the QuantizationConfig the model is described from once loaded (None: the default skip)."""

    def __init__(self, model: nn.Module, layers: Dict[str, QuantizedLinear], base=None,
                 key_map: Optional[Callable[[str], str]] = None) -> None:
        self.model, self.layers, self.base = model, dict(layers), base
        self.key_map = key_map or (lambda key: key)

    @classmethod
    def from_config(cls, model: nn.Module, config, method, *, packed: bool, gguf_types: Optional[Dict[str, str]] = None,
                    key_map: Optional[Callable[[str], str]] = None) -> "QuantizedLoader":
        """fastformers' formats (and GGUF kept packed): the linears `config` (a QuantizationConfig) plans are
        swapped for QuantizedLinear modules run by `method(format, packed)` before any tensor is read.
        `gguf_types` (checkpoint name -> ggml type name): the GGUF file's, when one loads."""
        if config.source == "gguf" and gguf_types is None:
            raise ValueError("quantization_config=QuantizationConfig.from_gguf() keeps the packed tensors of a GGUF "
                             "file: pass gguf_file=... (or quantize with QuantizationConfig(bits=...))")
        if config.algorithm != "rtn" and not packed:
            raise ValueError(f"quantization_config algorithm={config.algorithm!r} calibrates on data, which loading "
                             f"cannot: load the float model, then quantize_model(model, config, calibration_ids=...)")
        key_map = key_map or (lambda key: key)
        if gguf_types is not None:
            gguf_types = {key_map(k): v for k, v in gguf_types.items()}
        plan = plan_modules(model, config, lambda name: method.plan_format(config, name, gguf_types))
        replace_linears(model, plan, quantize=False, make_method=lambda fmt: method(fmt, packed))
        return cls(model, {name: model.get_submodule(name) for name in plan}, config, key_map)

    @property
    def checkpoint_names(self) -> set:
        """Model names a checkpoint may carry for the quantized layers that their state_dict does not show."""
        return {f"{name}.{part}" for name, layer in self.layers.items() for part in layer.method.checkpoint_parts}

    @property
    def keep_gguf(self) -> Optional[Callable[[str], bool]]:
        """For GGUFCheckpoint.iter_state_dict(keep_quantized=...): which GGUF tensors come packed (None: every
        tensor is dequantized, and weights of quantized layers are quantized as any float weight)."""
        kept = {name for name, layer in self.layers.items() if layer.method.gguf_packed}
        if not kept:
            return None

        def keep(hf_name: str) -> bool:
            name = self.key_map(hf_name)
            return name.endswith(".weight") and name[:-len(".weight")] in kept

        return keep

    def _layer(self, key: str, module_name: str, part: str) -> Optional[QuantizedLinear]:
        return self.layers.get(module_name)

    def convert(self, key: str, name: str, tensor, dtype: torch.dtype,
                device: torch.device) -> Optional[Dict[str, torch.Tensor]]:
        """The model tensors one checkpoint tensor (`key`, model name `name`) becomes, or None when it does
        not belong to a quantized layer (it then loads as usual)."""
        module_name, _, part = name.rpartition(".")
        layer = self._layer(key, module_name, part)
        if layer is None:
            if isinstance(tensor, QuantizedWeight):
                raise ValueError(f"{key}: a packed weight for {name}, which is not a quantized module")
            return None
        out = layer.method.load(layer, part, tensor, key=key, module=module_name, dtype=dtype, device=device)
        return None if out is None else {f"{module_name}.{p}": t for p, t in out.items()}

    def finish(self, missing: Iterable[str], source: str, dtype: torch.dtype, device: torch.device,
               init_std: float = 0.02) -> Tuple[List[str], List[str]]:
        """After streaming: (missing names left for the usual initialisation, names initialised here); each
        layer's method decides what it may lack (process_after_loading)."""
        order, missing = list(missing), set(missing)
        initialised = []
        with torch.no_grad():
            for name, layer in self.layers.items():
                done = layer.method.process_after_loading(layer, name, missing=missing, source=source, dtype=dtype,
                                                          device=device, init_std=init_std)
                initialised += done
                missing -= {f"{name}.{p}" for p in PARTS} | set(done)
        return [k for k in order if k in missing], initialised

    def describe(self) -> Optional[dict]:
        """The quantization_config of the loaded model (fastformers' own: save_pretrained writes that format)."""
        return describe(self.model, self.base)


__all__ = ["QuantizedLoader"]
