"""Putting quantization into a model: which linears (the plan), swapping in QuantizedLinear modules, quantizing
a model in memory, the hook `PreTrainedModel._load_checkpoint` calls for each streamed tensor, and the
quantization_config a quantized model is saved with.

Loading a float checkpoint with a QuantizationConfig quantizes each linear's weight the moment it is read
(cast to the model dtype, then `quantize_weight`), so the float copy of one weight is all that is alive at a
time: peak memory stays near the quantized model's size. Loading a saved quantized checkpoint takes the packed
tensors as they are (no re-quantization); errors name the tensor at fault.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn

from ..ops.quant import QuantizedWeight
from .config import DEFAULT_SKIP, LinearFormat, QuantizationConfig, resolve_format
from .gguf import kept_format
from .linear import QuantizedLinear, format_of, quantize_linear_weight

logger = logging.getLogger("fastformers")

_PARTS = ("qweight", "scales", "mins")


# -- which modules ----------------------------------------------------------------------------------
def default_skip(model: nn.Module) -> List[str]:
    """What skip=None stands for on this model: lm_head and the module holding the output embeddings."""
    patterns = list(DEFAULT_SKIP)
    try:
        head = model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        head = None
    if head is not None:
        patterns += [name for name, module in model.named_modules() if module is head and name not in patterns]
    return patterns


def tied_modules(model: nn.Module) -> set:
    """Names of modules whose weight is shared with another parameter (e.g. an lm_head tied to embeddings)."""
    owners: Dict[int, List[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(param), []).append(name.rpartition(".")[0])
    return {module for names in owners.values() if len(names) > 1 for module in names}


def plan_modules(model: nn.Module, config: QuantizationConfig,
                 gguf_types: Optional[Dict[str, str]] = None) -> Dict[str, LinearFormat]:
    """Module name -> format, for every linear the config quantizes. With config.source == "gguf",
    `gguf_types` (model parameter name -> ggml type name) decides: Q8_0 / Q4_0 / Q4_1 weights are kept."""
    default, tied = default_skip(model), tied_modules(model)
    plan = {}
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Linear, QuantizedLinear)) or name in tied or config.skips(name, default):
            continue
        if config.source == "gguf":
            fmt = kept_format((gguf_types or {}).get(f"{name}.weight", ""))
            if fmt is None:
                continue
        else:
            fmt = config.format_for(name)
        plan[name] = fmt
    return plan


# -- swapping modules -------------------------------------------------------------------------------
def replace_linears(model: nn.Module, plan: Dict[str, LinearFormat], quantize: bool) -> None:
    """Put a QuantizedLinear in place of each planned module (quantize=True: from its current weight; else
    empty, e.g. on the meta device before loading); fused groups (layers.FusedLinear) see the swap themselves."""
    for name, fmt in plan.items():
        old = model.get_submodule(name)
        if isinstance(old, QuantizedLinear):
            if old.format != fmt:
                raise ValueError(f"{name} is already quantized as {old.format.describe()}, not {fmt.describe()}")
            continue
        new = QuantizedLinear.from_linear(old, fmt) if quantize else QuantizedLinear.like(old, fmt)
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, new)


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
        from .calibrate import gptq_quantize_

        return gptq_quantize_(model, calibration_ids, config)
    if calibration_ids is not None:
        raise ValueError(f"quantize_model: calibration_ids are used by algorithm='gptq', not {config.algorithm!r}")
    with torch.no_grad():
        replace_linears(model, plan_modules(model, config), quantize=True)
    if hasattr(model, "config"):
        model.config.quantization_config = describe(model, config)
    return model


# -- what a quantized model is saved with ----------------------------------------------------------
def describe(model: nn.Module, base: Optional[QuantizationConfig] = None) -> Optional[dict]:
    """The quantization_config (a dict for config.json) that rebuilds exactly this model's quantized modules:
    the most common format, per-module overrides for the others, and the float linears in `skip`."""
    formats = {name: m.format for name, m in model.named_modules() if isinstance(m, QuantizedLinear)}
    if not formats:
        return None
    top = Counter(formats.values()).most_common(1)[0][0]
    skip = list(default_skip(model) if base is None or base.skip is None else base.skip)
    config = QuantizationConfig(bits=top.bits, group_size=top.group_size, symmetric=top.symmetric,
                                method=top.method, skip=skip)
    planned = plan_modules(model, config)
    skip += [name for name in planned if name not in formats]
    unplanned = sorted(set(formats) - set(planned))
    if unplanned:
        raise ValueError(f"cannot describe this model's quantization: {', '.join(unplanned)} are quantized but "
                         f"matched by skip={skip}")
    modules = {}
    for name, fmt in formats.items():
        if fmt != top:
            modules[name] = {k: v for k, v in fmt._asdict().items() if getattr(top, k) != v}
    return QuantizationConfig(bits=top.bits, group_size=top.group_size, symmetric=top.symmetric,
                              method=top.method, skip=skip, modules=modules,
                              algorithm="rtn" if base is None else base.algorithm).to_dict()


# -- loading ---------------------------------------------------------------------------------------
class QuantizedLoader:
    """Used by PreTrainedModel.from_pretrained: swaps the planned linears of the (meta-device) model for
    QuantizedLinear modules, then converts each checkpoint tensor as it streams in (`convert`) and checks
    what is missing (`finish`).

    packed=False: float weights are quantized as they arrive (GGUF tensors kept packed come as
    QuantizedWeight). packed=True: the checkpoint is a saved quantized model; its qweight / scales / mins are
    taken as they are, and a float weight for a quantized module is an error.
    """

    def __init__(self, model: nn.Module, config: QuantizationConfig, packed: bool,
                 gguf_types: Optional[Dict[str, str]] = None, key_map: Optional[Callable[[str], str]] = None) -> None:
        if config.source == "gguf" and gguf_types is None:
            raise ValueError("quantization_config=QuantizationConfig.from_gguf() keeps the packed tensors of a GGUF "
                             "file: pass gguf_file=... (or quantize with QuantizationConfig(bits=...))")
        if config.algorithm != "rtn" and not packed:
            raise ValueError(f"quantization_config algorithm={config.algorithm!r} calibrates on data, which loading "
                             f"cannot: load the float model, then quantize_model(model, config, calibration_ids=...)")
        self.config, self.packed = config, packed
        self.key_map = key_map or (lambda key: key)
        if gguf_types is not None:
            gguf_types = {self.key_map(k): v for k, v in gguf_types.items()}
        self.plan = plan_modules(model, config, gguf_types)
        replace_linears(model, self.plan, quantize=False)
        self.modules: Dict[str, QuantizedLinear] = {name: model.get_submodule(name) for name in self.plan}

    @property
    def checkpoint_names(self) -> set:
        """The float weight names a checkpoint may carry for the quantized modules."""
        return {f"{name}.weight" for name in self.plan}

    @property
    def keep_gguf(self) -> Optional[Callable[[str], bool]]:
        """For GGUFCheckpoint.iter_state_dict(keep_quantized=...): which GGUF tensors come packed (None:
        every tensor is dequantized, and quantized weights are re-quantized to the config's format)."""
        if self.config.source != "gguf":
            return None

        def keep(hf_name: str) -> bool:
            name = self.key_map(hf_name)
            return name.endswith(".weight") and name[:-len(".weight")] in self.plan

        return keep

    def convert(self, key: str, name: str, tensor, dtype: torch.dtype,
                device: torch.device) -> Optional[Dict[str, torch.Tensor]]:
        """The model tensors one checkpoint tensor (`key`, model name `name`) becomes, or None when it does
        not belong to a quantized module (it then loads as usual)."""
        module_name, _, part = name.rpartition(".")
        fmt = self.plan.get(module_name)
        if fmt is None:
            if isinstance(tensor, QuantizedWeight):
                raise ValueError(f"{key}: a packed weight for {name}, which is not a quantized module")
            return None
        if part == "weight":
            if isinstance(tensor, QuantizedWeight):
                if format_of(tensor, fmt.symmetric) != fmt or tuple(tensor.shape) != self._shape(module_name):
                    raise ValueError(f"{key}: a packed {format_of(tensor).describe()} weight of shape "
                                     f"{tuple(tensor.shape)}, but {module_name} expects {fmt.describe()} "
                                     f"{self._shape(module_name)}")
                qw = tensor.to(device=device, dtype=dtype)
            elif self.packed:
                raise ValueError(f"{key}: a float weight in a quantized checkpoint; its quantization_config says "
                                 f"{module_name} is stored packed ({fmt.describe()}: "
                                 f"{', '.join(self._parts(module_name))})")
            else:
                if tuple(tensor.shape) != self._shape(module_name):
                    raise ValueError(f"{key}: checkpoint shape {tuple(tensor.shape)} vs model "
                                     f"{self._shape(module_name)}")
                qw = quantize_linear_weight(tensor.to(device=device, dtype=dtype), fmt)
            return {f"{module_name}.{p}": t for p, t in zip(_PARTS, (qw.qweight, qw.scales, qw.mins)) if t is not None}
        if part in _PARTS:
            if not self.packed:
                raise ValueError(f"{key}: the checkpoint already holds packed quantized tensors, but its "
                                 f"config.json has no fastformers quantization_config describing them")
            return {name: self._check_part(key, module_name, part, tensor).to(
                device=device, dtype=dtype if part != "qweight" else None)}
        return None

    def _shape(self, module_name: str) -> Tuple[int, int]:
        m = self.modules[module_name]
        return (m.out_features, m.in_features)

    def _parts(self, module_name: str) -> List[str]:
        return [p for p in _PARTS if p != "mins" or self.plan[module_name].has_mins]

    def _check_part(self, key: str, module_name: str, part: str, tensor: torch.Tensor) -> torch.Tensor:
        fmt, expected = self.plan[module_name], getattr(self.modules[module_name], part)
        if expected is None:
            raise ValueError(f"{key}: unexpected mins for {module_name}, whose quantization_config format "
                             f"({fmt.describe()}) has none")
        ok_dtype = tensor.dtype == expected.dtype if part == "qweight" else tensor.is_floating_point()
        if not ok_dtype or tuple(tensor.shape) != tuple(expected.shape):
            want = f"an {str(expected.dtype).removeprefix('torch.')}" if part == "qweight" else "a float"
            group = "one per output channel" if fmt.group_size is None else f"groups of {fmt.group_size}"
            raise ValueError(f"{key}: expected {want} tensor of shape {tuple(expected.shape)} for {fmt.describe()} "
                             f"weights of shape {self._shape(module_name)} ({part}: {_LAYOUT[part]}, {group}), got "
                             f"{str(tensor.dtype).removeprefix('torch.')} {tuple(tensor.shape)}")
        return tensor

    def finish(self, missing: Iterable[str], source: str, dtype: torch.dtype, device: torch.device,
               init_std: float = 0.02) -> Tuple[List[str], List[str]]:
        """After streaming: (missing names left for the usual initialisation, names initialised here).
        A packed checkpoint lacking a tensor of a quantized module is an error; a float checkpoint lacking a
        quantized module's weight gets it initialised (normal, std init_std), then quantized."""
        order, missing = list(missing), set(missing)
        initialised = []
        with torch.no_grad():
            for name, module in self.modules.items():
                parts = [f"{name}.{p}" for p in self._parts(name)]
                lacking = [p for p in parts if p in missing]
                if lacking and self.packed:
                    raise ValueError(f"{source}: the quantized checkpoint has no {', '.join(lacking)} "
                                     f"({self.plan[name].describe()} weights need {', '.join(self._parts(name))})")
                if lacking:
                    weight = torch.empty(self._shape(name), dtype=dtype, device=device).normal_(std=init_std)
                    module.weight = quantize_linear_weight(weight, self.plan[name])
                    initialised.append(f"{name}.weight")
                if f"{name}.bias" in missing:
                    module.bias = nn.Parameter(torch.zeros(module.out_features, dtype=dtype, device=device))
                    initialised.append(f"{name}.bias")
                missing -= set(parts) | {f"{name}.bias"}
                module.weight.check(name)
        return [k for k in order if k in missing], initialised


_LAYOUT = {"qweight": "int8 (out, in) codes for 8 bits, uint8 (out, ceil(in / 2)) nibbles for 4 bits",
           "scales": "(out, groups)", "mins": "(out, groups)"}


# -- from_pretrained's arguments -------------------------------------------------------------------
def requested_config(config, quantization_config, load_in_8bit: bool, load_in_4bit: bool,
                     saved_quantization_config=None, saved_where: str = "config.json"
                     ) -> Tuple[Optional[QuantizationConfig], bool]:
    """(QuantizationConfig, packed) for from_pretrained, or (None, False) for a float model.

    quantization_config / load_in_8bit / load_in_4bit: the caller's request (AutoModel classes pass them on
    as config attributes; they are taken from there too). saved_quantization_config: the dict the checkpoint's
    config.json holds, if any: a fastformers one means a packed checkpoint, loaded as saved."""
    for flag in ("load_in_8bit", "load_in_4bit", "quantization_config"):
        if flag in vars(config) and (flag != "quantization_config" or vars(config)[flag] != saved_quantization_config):
            value = vars(config).pop(flag)
            config._given_keys.discard(flag)
            if flag == "load_in_8bit":
                load_in_8bit = load_in_8bit or value
            elif flag == "load_in_4bit":
                load_in_4bit = load_in_4bit or value
            elif quantization_config is None:
                quantization_config = value
    if quantization_config is False:
        quantization_config = None
        if load_in_8bit or load_in_4bit:
            raise ValueError("quantization_config=False (no quantization) contradicts load_in_8bit / load_in_4bit")
    flags = QuantizationConfig.from_flags(load_in_8bit, load_in_4bit)
    if flags is not None and quantization_config is not None:
        raise ValueError("pass either quantization_config or load_in_8bit / load_in_4bit, not both")
    requested = flags if quantization_config is None else QuantizationConfig.from_dict(quantization_config)
    saved = saved_quantization_config
    if isinstance(saved, dict) and str(saved.get("quant_method", "")).lower() == "fastformers":
        packed = QuantizationConfig.from_dict(saved, f"{saved_where}: quantization_config")
        if requested is not None and requested != packed:
            logger.warning("The checkpoint is already quantized (%s); the quantization_config passed to "
                           "from_pretrained is ignored", packed)
        return packed, True
    if saved is not None and requested is not None:
        method = saved.get("quant_method") if isinstance(saved, dict) else saved
        raise ValueError(f"the checkpoint is already quantized (quant_method={method!r}); it cannot be "
                         f"quantized again with {requested}")
    return requested, False


__all__ = ["QuantizedLoader", "default_skip", "describe", "plan_modules", "quantize_model", "replace_linears",
           "requested_config", "resolve_format"]
