"""Which linears of a model are quantized (the plan), swapping QuantizedLinear modules in, and the
quantization_config that describes a quantized model (what save_pretrained writes to config.json).

Used by quantize_model (apply.py), GPTQ calibration (calibrate.py) and loading (loader.py, imported.py).
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Dict, List, Optional

from torch import nn

from .config import DEFAULT_SKIP, QUANT_METHOD, LinearFormat, QuantizationConfig
from .linear import QuantizedLinear, quantize_linear_weight
from .methods import PackedMethod, QuantizationMethod


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
                 format_for: Optional[Callable[[str], Optional[LinearFormat]]] = None) -> Dict[str, LinearFormat]:
    """Module name -> format, for every linear the config quantizes (not skipped, not tied). format_for(name):
    the format of a module, or None to keep it float (default: config.format_for; a scheme's method class
    may decide instead, as GGUF's does from the file's tensor types)."""
    default, tied = default_skip(model), tied_modules(model)
    format_for = format_for or config.format_for
    plan = {}
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Linear, QuantizedLinear)) or name in tied or config.skips(name, default):
            continue
        fmt = format_for(name)
        if fmt is not None:
            plan[name] = fmt
    return plan


# -- swapping modules -------------------------------------------------------------------------------
def replace_linears(model: nn.Module, plan: Dict[str, LinearFormat], quantize: bool,
                    make_method: Callable[[LinearFormat], QuantizationMethod] = PackedMethod) -> None:
    """Put a QuantizedLinear in place of each planned module, run by `make_method(format)` (quantize=True:
    from its current weight; else empty, e.g. on the meta device before loading); fused groups
    (layers.FusedLinear) see the swap themselves."""
    for name, fmt in plan.items():
        old = model.get_submodule(name)
        if isinstance(old, QuantizedLinear):
            if old.format != fmt:
                raise ValueError(f"{name} is already quantized as {old.format.describe()}, not {fmt.describe()}")
            continue
        new = QuantizedLinear.like(old, make_method(fmt))
        if quantize:
            new.weight = quantize_linear_weight(old.weight.detach(), fmt)
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, new)


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


def describe_for_saving(model: nn.Module, current=None) -> Optional[dict]:
    """What save_pretrained records: `describe(model)`, keeping the skip patterns and algorithm of `current`
    (the model config's quantization_config) when it is fastformers' own (a GPTQ / AWQ import is saved in
    fastformers' format, described with the default skip)."""
    ours = isinstance(current, dict) and current.get("quant_method") == QUANT_METHOD
    return describe(model, QuantizationConfig.from_dict(current) if ours else None)


__all__ = ["default_skip", "describe", "describe_for_saving", "plan_modules", "replace_linears", "tied_modules"]
