"""Loading GPTQ and AutoAWQ checkpoints as transformers users have them: config.json's `quantization_config`
has quant_method "gptq" or "awq" (transformers' keys), and each quantized linear `<module>` is stored as
`<module>.qweight` / `.qzeros` / `.scales` (GPTQ: optional `.g_idx`) and optional `.bias` instead of
`<module>.weight`.

`ImportedLoader` is what `PreTrainedModel._load_checkpoint` drives (the same interface as apply.py's
`QuantizedLoader`). The quantization_config is validated once, up front. A linear is quantized when its
`.qweight` is in the checkpoint (so `modules_to_not_convert`, the lm_head of most checkpoints, stays float);
the other tensors of a module are buffered as they stream in, possibly across shards, until its required
tensors are all there; then the importer (gptq.py / awq.py) repacks them into a QuantizedWeight in the model's
dtype, checked against the module's (out_features, in_features), the buffered int32 tensors are dropped, and
a QuantizedLinear of the format the importer produced takes the nn.Linear's place (fused q/k/v and gate/up
groups follow). Biases load as plain parameters. After loading, the model is an ordinary fastformers quantized
model: its quantization_config becomes fastformers' own, and save_pretrained writes the packed format.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn

from .apply import tied_modules
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

# quant_method -> (name, check_config, importer, tensor suffixes, required suffixes)
_IMPORTERS = {
    "gptq": ("GPTQ", check_gptq_config, import_gptq, GPTQ_TENSORS, GPTQ_REQUIRED_TENSORS),
    "awq": ("AWQ", check_awq_config, import_awq, AWQ_TENSORS, AWQ_REQUIRED_TENSORS),
}


def imported_method(quantization_config) -> Optional[str]:
    """"gptq" / "awq" when a checkpoint's quantization_config (config.json's dict) is one fastformers imports."""
    if not isinstance(quantization_config, Mapping):
        return None
    method = str(quantization_config.get("quant_method", "")).lower()
    return method if method in _IMPORTERS else None


class ImportedLoader:
    """Used by PreTrainedModel.from_pretrained for a GPTQ / AWQ checkpoint (see the module docstring).

    `config` is None: once loaded, the model describes its quantization with the default skip (apply.describe).
    """

    config = None
    keep_gguf = None

    def __init__(self, model: nn.Module, quantization_config: Mapping, where: str = "config.json") -> None:
        method = imported_method(quantization_config)
        if method is None:
            raise ValueError(f"{where}: quantization_config is not a GPTQ or AWQ config")
        self.label, check, self._import, self.parts, self.required = _IMPORTERS[method]
        self.quantization_config = dict(quantization_config)
        try:
            self.settings = check(self.quantization_config)
        except (ValueError, NotImplementedError) as e:
            raise type(e)(f"{where}: {e}") from None
        not_convert = self.quantization_config.get("modules_to_not_convert") or []
        if isinstance(not_convert, str) or not all(isinstance(p, str) for p in not_convert):
            raise ValueError(f"{where}: quantization_config: modules_to_not_convert={not_convert!r} must be a list "
                             f"of module names")
        tied = tied_modules(model)
        self.model = model
        self.linears: Dict[str, nn.Linear] = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
        self.kept_float = {n: ("its weight is tied to another parameter" if n in tied else
                               "quantization_config's modules_to_not_convert keeps it float")
                           for n in self.linears if n in tied or any(matches(p, n) for p in not_convert)}
        self.pending: Dict[str, Dict[str, torch.Tensor]] = {}  # module -> its quantized tensors seen so far
        self.imported: Dict[str, QuantizedLinear] = {}
        self.float_weights: set = set()

    @property
    def checkpoint_names(self) -> set:
        """The names of quantized tensors a checkpoint may carry (model keys the float state_dict does not show)."""
        return {f"{name}.{part}" for name in self.linears for part in self.parts if part != "bias"}

    def convert(self, key: str, name: str, tensor, dtype: torch.dtype,
                device: torch.device) -> Optional[Dict[str, torch.Tensor]]:
        """The model tensors one checkpoint tensor becomes ({} while its module is still incomplete), or None
        when it loads as usual (float weights, biases, everything outside the linears)."""
        module_name, _, part = name.rpartition(".")
        if module_name not in self.linears:
            return None
        if part == "weight":
            if module_name in self.imported or module_name in self.pending:
                raise ValueError(f"{key}: the checkpoint holds both a float weight and {self.label} tensors "
                                 f"({', '.join(self._seen(module_name))}) for {module_name}")
            self.float_weights.add(module_name)
            return None
        if part == "bias" or part not in self.parts:
            return None
        if module_name in self.kept_float:
            raise ValueError(f"{key}: a {self.label} tensor for {module_name}, which stays float: "
                             f"{self.kept_float[module_name]}")
        if module_name in self.float_weights:
            raise ValueError(f"{key}: the checkpoint holds both a float weight ({module_name}.weight) and {self.label} "
                             f"tensors for {module_name}")
        if module_name in self.imported:
            if part == "g_idx":  # came after the module's required tensors: checked on its own
                self._check_late_g_idx(tensor, module_name)
                return {}
            raise ValueError(f"{key}: {module_name} has two {part} tensors in the checkpoint")
        tensors = self.pending.setdefault(module_name, {})
        if part in tensors:
            raise ValueError(f"{key}: {module_name} has two {part} tensors in the checkpoint")
        tensors[part] = tensor
        if not all(p in tensors for p in self.required):
            return {}
        del self.pending[module_name]  # the int32 tensors go once imported
        return self._import_module(module_name, tensors, dtype, device)

    def _import_module(self, module_name: str, tensors: Dict[str, torch.Tensor], dtype: torch.dtype,
                       device: torch.device) -> Dict[str, torch.Tensor]:
        old = self.linears[module_name]
        tensors = {k: v.to(device) for k, v in tensors.items()}
        qw = self._import(tensors, self.quantization_config, module_name, dtype=dtype,
                          shape=(old.out_features, old.in_features))
        del tensors
        fmt = format_of(qw, symmetric=bool(self.quantization_config.get("sym", False)))
        new = QuantizedLinear.like(old, fmt)
        new.weight = qw
        parent, _, attr = module_name.rpartition(".")
        setattr(self.model.get_submodule(parent), attr, new)
        self.imported[module_name] = new
        return {f"{module_name}.{p}": t for p, t in (("qweight", qw.qweight), ("scales", qw.scales), ("mins", qw.mins))
                if t is not None}

    def _check_late_g_idx(self, g_idx: torch.Tensor, module_name: str) -> None:
        in_features = self.imported[module_name].in_features
        group_size = self.settings["group_size"]
        group = in_features if group_size == -1 else group_size
        _check_g_idx(g_idx, in_features, group, math.ceil(in_features / group), module_name)

    def _seen(self, module_name: str) -> List[str]:
        if module_name in self.imported:
            return [f"{module_name}.{p}" for p in self.required]
        return [f"{module_name}.{p}" for p in self.pending.get(module_name, {})]

    def finish(self, missing: Iterable[str], source: str, dtype: torch.dtype, device: torch.device,
               init_std: float = 0.02) -> Tuple[List[str], List[str]]:
        """After streaming: every module that has some quantized tensors must have all its required ones.
        Returns (missing names, left for the usual initialisation as in a float checkpoint; names initialised
        here: none)."""
        for module_name, tensors in self.pending.items():
            lacking = [p for p in self.required if p not in tensors]
            raise ValueError(f"{source}: {module_name}.{lacking[0]} is missing: the {self.label} checkpoint has "
                             f"{', '.join(f'{module_name}.{p}' for p in tensors)} but not "
                             f"{', '.join(f'{module_name}.{p}' for p in lacking)} (every quantized linear stores "
                             f"{', '.join(self.required)})")
        if not self.imported:
            raise ValueError(f"{source}: config.json's quantization_config says quant_method="
                             f"{self.quantization_config.get('quant_method')!r}, but the checkpoint has no "
                             f"<module>.qweight tensors")
        for module_name, module in self.imported.items():
            module.weight.check(module_name)
        return list(missing), []


__all__ = ["ImportedLoader", "imported_method"]
