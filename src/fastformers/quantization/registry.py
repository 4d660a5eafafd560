"""quant_method -> the scheme that loads it: the config object a `quantization_config` becomes, the method
class of its linears (methods.py) and the loader that hands the methods out; and `resolve_request`, which
turns from_pretrained's arguments and the checkpoint's own quantization_config into one request.

    "fastformers"  QuantizationConfig            PackedMethod    QuantizedLoader   int8 / int4 / w8a8
    "gguf"         QuantizationConfig.from_gguf  GGUFMethod      QuantizedLoader   GGUF Q8_0/Q4_0/Q4_1/Q4_K/Q6_K packed
    "gptq", "awq"  ImportedConfig                ImportedMethod  ImportedLoader    transformers' checkpoints
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Callable, Dict, NamedTuple, Optional

from torch import nn

from .config import QuantizationConfig
from .imported import ImportedConfig, ImportedLoader, ImportedMethod
from .loader import QuantizedLoader
from .methods import GGUFMethod, PackedMethod

logger = logging.getLogger("fastformers")


class Scheme(NamedTuple):
    config: Callable[[Any, Optional[str]], Any]  # (quantization_config dict, file holding it or None) -> config
    method: type  # its linears' QuantizationMethod class
    loader: type  # QuantizedLoader or a subclass: .from_config(model, config, method, packed=..., ...)


def _own_config(data, source: Optional[str]) -> QuantizationConfig:
    return QuantizationConfig.from_dict(data, "quantization_config" if source is None
                                        else f"{source}: quantization_config")


def _imported_config(data, source: Optional[str]) -> ImportedConfig:
    return ImportedConfig(data, source or "from_pretrained")


QUANT_METHODS: Dict[str, Scheme] = {
    "fastformers": Scheme(_own_config, PackedMethod, QuantizedLoader),
    "gguf": Scheme(_own_config, GGUFMethod, QuantizedLoader),
    "gptq": Scheme(_imported_config, ImportedMethod, ImportedLoader),
    "awq": Scheme(_imported_config, ImportedMethod, ImportedLoader),
}


def get_quantization_config(value: Any, source: Optional[str] = None):
    """The config object of a quantization_config: a config object as it is, or a dict looked up by its
    quant_method (none: "fastformers"). source: the file it comes from (errors name it), None for an argument."""
    where = "quantization_config" if source is None else f"{source}: quantization_config"
    if isinstance(value, (QuantizationConfig, ImportedConfig)):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"{where} must be a QuantizationConfig or a dict, got {type(value).__name__}")
    method = str(value.get("quant_method", "fastformers")).lower()
    if method not in QUANT_METHODS:
        raise ValueError(f"{where}: quant_method={value.get('quant_method')!r} is not supported; supported: "
                         f"{', '.join(QUANT_METHODS)}")
    return QUANT_METHODS[method].config(value, source)


class QuantizationRequest(NamedTuple):
    """What from_pretrained loads: `config` (a config object), `packed` (the checkpoint holds it quantized)."""

    config: Any
    packed: bool

    def loader(self, model: nn.Module, gguf_types: Optional[Dict[str, str]] = None,
               key_map: Optional[Callable[[str], str]] = None) -> QuantizedLoader:
        """The loader of this scheme for the meta-device `model` (the layers it plans swapped in already).
        gguf_types: checkpoint name -> ggml type name, when a GGUF file loads; key_map: checkpoint name ->
        model name."""
        scheme = QUANT_METHODS[self.config.quant_method]
        return scheme.loader.from_config(model, self.config, scheme.method, packed=self.packed,
                                         gguf_types=gguf_types, key_map=key_map)


def resolve_request(quantization_config: Any = None, load_in_8bit: bool = False, load_in_4bit: bool = False, *,
                    saved: Any = None, saved_where: str = "config.json",
                    gguf_on_gpu: bool = False) -> Optional[QuantizationRequest]:
    """The one QuantizationRequest of a from_pretrained call, or None for a float model.

    quantization_config / load_in_8bit / load_in_4bit: the caller's (quantization_config=False: no
    quantization, not even GGUF's default). saved: the checkpoint's own quantization_config (config.json):
    such a checkpoint loads as saved (packed), and a different request is ignored with a warning for
    fastformers' format, refused for another. gguf_on_gpu: a GGUF file loading where kernels run its packed
    weights (a GPU, or a CPU with fastformers._C: modeling._gguf_runs_packed) keeps its Q8_0 / Q4_0 / Q4_1 / Q4_K / Q6_K
    weights packed unless asked otherwise."""
    off = quantization_config is False
    if off and (load_in_8bit or load_in_4bit):
        raise ValueError("quantization_config=False (no quantization) contradicts load_in_8bit / load_in_4bit")
    flags = QuantizationConfig.from_flags(load_in_8bit, load_in_4bit)
    if flags is not None and quantization_config is not None:
        raise ValueError("pass either quantization_config or load_in_8bit / load_in_4bit, not both")
    if off:
        requested = None
    elif quantization_config is not None:
        requested = get_quantization_config(quantization_config)
    elif flags is not None:
        requested = flags
    else:
        requested = QuantizationConfig.from_gguf() if gguf_on_gpu else None
    if saved is None:
        return None if requested is None else QuantizationRequest(requested, packed=False)
    checkpoint = get_quantization_config(saved, saved_where)
    if checkpoint.quant_method == "fastformers":
        if requested is not None and requested != checkpoint:
            logger.warning("The checkpoint is already quantized (%s); the quantization_config passed to "
                           "from_pretrained is ignored", checkpoint)
        return QuantizationRequest(checkpoint, packed=True)
    if requested is not None:
        raise ValueError(f"the checkpoint is already quantized (quant_method={checkpoint.quant_method!r}); it cannot "
                         f"be quantized again with {requested}")
    return QuantizationRequest(checkpoint, packed=True)


__all__ = ["QUANT_METHODS", "QuantizationRequest", "Scheme", "get_quantization_config", "resolve_request"]
