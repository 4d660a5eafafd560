"""GPTQ and AutoAWQ checkpoints as transformers users have them: config.json's `quantization_config` has
quant_method "gptq" or "awq" (transformers' keys), and each quantized linear `<module>` is stored as
`<module>.qweight` / `.qzeros` / `.scales` (GPTQ: optional `.g_idx`) and optional `.bias` instead of
`<module>.weight`.

`ImportedConfig` is that quantization_config, validated once, up front; it hands out an `ImportedMethod` per
quantized linear and the `ImportedLoader` that drives them. A linear is quantized when its `.qweight` is in the
checkpoint (so `modules_to_not_convert`, the lm_head of most checkpoints, stays float): its first quantized
tensor swaps a QuantizedLinear in, whose method buffers the module's tensors as they stream in, possibly across
shards, until its required tensors are all there; then the importer (gptq.py / awq.py) repacks them into a
QuantizedWeight in the model's dtype, checked against the module's (out_features, in_features), and the
buffered int32 tensors are dropped (fused q/k/v and gate/up groups follow the swap). Biases load as plain
parameters. After loading, the model is an ordinary fastformers quantized model: its quantization_config
becomes fastformers' own, and save_pretrained writes the packed format.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Dict, List, Optional

import torch
from torch import nn

from .awq import AWQ_REQUIRED_TENSORS, AWQ_TENSORS, check_awq_config, import_awq
from .config import matches
from .gptq import (
    GPTQ_REQUIRED_TENSORS,
    GPTQ_TENSORS,
    _check_g_idx,
    check_gptq_config,
    import_gptq,
)
from .linear import QuantizedLinear, format_of
from .loader import QuantizedLoader
from .methods import QuantizationMethod
from .plan import tied_modules

# quant_method -> (name, check_config, importer, tensor suffixes, required suffixes)
_IMPORTERS = {
    "gptq": ("GPTQ", check_gptq_config, import_gptq, GPTQ_TENSORS, GPTQ_REQUIRED_TENSORS),
    "awq": ("AWQ", check_awq_config, import_awq, AWQ_TENSORS, AWQ_REQUIRED_TENSORS),
}


class ImportedConfig:
    """A GPTQ / AWQ quantization_config (config.json's dict), validated once; errors name `where` and the key."""

    def __init__(self, quantization_config: Mapping, where: str = "config.json") -> None:
        method = str(quantization_config.get("quant_method", "")).lower() \
            if isinstance(quantization_config, Mapping) else None
        if method not in _IMPORTERS:
            raise ValueError(f"{where}: quantization_config is not a GPTQ or AWQ config")
        self.quant_method = method
        self.label, check, self.importer, self.parts, self.required = _IMPORTERS[method]
        self.quantization_config = dict(quantization_config)
        try:
            self.settings = check(self.quantization_config)
        except (ValueError, NotImplementedError) as e:
            raise type(e)(f"{where}: {e}") from None
        not_convert = self.quantization_config.get("modules_to_not_convert") or []
        if isinstance(not_convert, str) or not all(isinstance(p, str) for p in not_convert):
            raise ValueError(f"{where}: quantization_config: modules_to_not_convert={not_convert!r} must be a list "
                             f"of module names")
        self.modules_to_not_convert = list(not_convert)

    def get_method(self) -> "ImportedMethod":
        return ImportedMethod(self)

    def to_dict(self) -> dict:
        return dict(self.quantization_config)

    def __repr__(self) -> str:
        return f"ImportedConfig({self.quantization_config!r})"


class ImportedMethod(QuantizationMethod):
    """One GPTQ / AWQ linear: buffers its checkpoint tensors until the required ones are in, then repacks them
    into fastformers' QuantizedWeight; from then on it runs as any quantized linear. Its format is that of the
    repacked weight (8-bit GPTQ with symmetric zero points has no mins)."""

    def __init__(self, config: ImportedConfig) -> None:
        self.config = config
        self.quant_method = config.quant_method
        self.checkpoint_parts = tuple(p for p in config.parts if p != "bias")
        self.pending: Dict[str, torch.Tensor] = {}  # this module's quantized tensors seen so far
        self.format = None

    def load(self, layer, part, tensor, *, key, module, dtype, device):
        config = self.config
        if part not in self.checkpoint_parts:
            return None
        if self.format is not None:  # imported already
            if part == "g_idx":  # came after the module's required tensors: checked on its own
                group_size = config.settings["group_size"]
                group = layer.in_features if group_size == -1 else group_size
                _check_g_idx(tensor, layer.in_features, group, math.ceil(layer.in_features / group), module)
                return {}
            raise ValueError(f"{key}: {module} has two {part} tensors in the checkpoint")
        if part in self.pending:
            raise ValueError(f"{key}: {module} has two {part} tensors in the checkpoint")
        self.pending[part] = tensor
        if not all(p in self.pending for p in config.required):
            return {}
        tensors = {k: v.to(device) for k, v in self.pending.items()}
        self.pending = {}  # the int32 tensors go once imported
        qw = config.importer(tensors, config.quantization_config, module, dtype=dtype,
                             shape=(layer.out_features, layer.in_features))
        del tensors
        self.format = format_of(qw, symmetric=bool(config.quantization_config.get("sym", False)))
        layer.weight = qw
        return {p: t for p, t in (("qweight", qw.qweight), ("scales", qw.scales), ("mins", qw.mins)) if t is not None}

    def seen(self, module: str) -> List[str]:
        parts = self.config.required if self.format is not None else self.pending
        return [f"{module}.{p}" for p in parts]

    def process_after_loading(self, layer, name, *, missing, source, dtype, device, init_std):
        if self.pending:
            lacking = [p for p in self.config.required if p not in self.pending]
            raise ValueError(f"{source}: {name}.{lacking[0]} is missing: the {self.config.label} checkpoint has "
                             f"{', '.join(f'{name}.{p}' for p in self.pending)} but not "
                             f"{', '.join(f'{name}.{p}' for p in lacking)} (every quantized linear stores "
                             f"{', '.join(self.config.required)})")
        return super().process_after_loading(layer, name, missing=missing, source=source, dtype=dtype,
                                             device=device, init_std=init_std)


class ImportedLoader(QuantizedLoader):
    """The loader of a GPTQ / AWQ checkpoint: a linear becomes a QuantizedLinear (with config.get_method())
    when its first quantized tensor streams in; a float weight keeps it float. `base` is None: once loaded,
    the model describes its quantization with the default skip (plan.describe)."""

    def __init__(self, model: nn.Module, config: ImportedConfig) -> None:
        super().__init__(model, {})
        self.config = config
        tied = tied_modules(model)
        self.linears: Dict[str, nn.Linear] = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
        self.kept_float = {n: ("its weight is tied to another parameter" if n in tied else
                               "quantization_config's modules_to_not_convert keeps it float")
                           for n in self.linears
                           if n in tied or any(matches(p, n) for p in config.modules_to_not_convert)}
        self.float_weights: set = set()

    @classmethod
    def from_config(cls, model, config, method, *, packed, gguf_types=None, key_map=None):
        if not packed:
            raise ValueError(f"quantization_config quant_method={config.quant_method!r} describes a {config.label} "
                             f"checkpoint; fastformers does not quantize into it (pass a QuantizationConfig, or load "
                             f"a checkpoint saved in that format)")
        return cls(model, config)

    @property
    def checkpoint_names(self) -> set:
        """The names of quantized tensors a checkpoint may carry (model keys the float state_dict does not show)."""
        return {f"{name}.{part}" for name in self.linears for part in self.config.parts if part != "bias"}

    @property
    def pending(self) -> Dict[str, Dict[str, torch.Tensor]]:
        """module -> its quantized tensors seen so far, for the modules still incomplete."""
        return {name: layer.method.pending for name, layer in self.layers.items() if layer.method.pending}

    def _layer(self, key: str, module_name: str, part: str) -> Optional[QuantizedLinear]:
        if module_name not in self.linears:
            return None
        layer = self.layers.get(module_name)
        if part == "weight":
            if layer is not None:
                raise ValueError(f"{key}: the checkpoint holds both a float weight and {self.config.label} tensors "
                                 f"({', '.join(layer.method.seen(module_name))}) for {module_name}")
            self.float_weights.add(module_name)
            return None
        if part == "bias" or part not in self.config.parts:
            return layer
        if module_name in self.kept_float:
            raise ValueError(f"{key}: a {self.config.label} tensor for {module_name}, which stays float: "
                             f"{self.kept_float[module_name]}")
        if module_name in self.float_weights:
            raise ValueError(f"{key}: the checkpoint holds both a float weight ({module_name}.weight) and "
                             f"{self.config.label} tensors for {module_name}")
        if layer is None:
            layer = QuantizedLinear.like(self.linears[module_name], self.config.get_method())
            parent, _, attr = module_name.rpartition(".")
            setattr(self.model.get_submodule(parent), attr, layer)
            self.layers[module_name] = layer
        return layer

    def finish(self, missing, source, dtype, device, init_std=0.02):
        """After streaming: every module that has some quantized tensors must have all its required ones.
        Returns (missing names, left for the usual initialisation as in a float checkpoint, biases of the
        quantized modules included; names initialised here: none)."""
        missing = list(missing)
        for name, layer in self.layers.items():
            layer.method.process_after_loading(layer, name, missing=set(missing), source=source, dtype=dtype,
                                               device=device, init_std=init_std)
        if not self.layers:
            raise ValueError(f"{source}: config.json's quantization_config says quant_method="
                             f"{self.config.quantization_config.get('quant_method')!r}, but the checkpoint has no "
                             f"<module>.qweight tensors")
        return missing, []


__all__ = ["ImportedConfig", "ImportedLoader", "ImportedMethod"]
