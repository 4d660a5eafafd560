"""QuantizationConfig: which linears of a model are quantized, and to what format.

    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=QuantizationConfig(bits=4))
    model = AutoModelForCausalLM.from_pretrained(path, load_in_8bit=True)      # bits=8, group_size=128
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file="m.Q4_1.gguf",
                                                 quantization_config=QuantizationConfig.from_gguf())

Stored in config.json as `quantization_config` with `"quant_method": "fastformers"` (transformers' key for
the scheme), so a saved quantized model loads back packed. The packed format itself is ops/quant.py's
`QuantizedWeight`.

How: `algorithm="rtn"` (the default) rounds each weight to nearest, on the fly while loading; `algorithm="gptq"`
fits the rounding to calibration data (calibrate.py): load the float model, then
`quantize_model(model, QuantizationConfig(bits=4, algorithm="gptq"), calibration_ids=ids)`. Either way the
result is the same packed format, saved and loaded alike.

Which modules: every `nn.Linear` except those matched by `skip`. A pattern matches a module name when it is
a run of whole dot-separated parts of the name ("lm_head", "mlp.down_proj", "layers.0", or the full name) or,
when it holds `*`, `?` or `[`, a glob over the full name ("*.layers.1?.mlp.*"). The default (`skip=None`) keeps
the output head in float: `lm_head`, the model's output embeddings, and any linear tied to an embedding
(embeddings are `nn.Embedding`, never quantized); a list replaces that default, as transformers'
`modules_to_not_convert` does (list "lm_head" in it to keep the head float). A linear whose weight is tied to
another parameter stays float whatever `skip` says.
"""

from __future__ import annotations

import fnmatch
import json
from typing import Any, Dict, Iterable, List, NamedTuple, Optional

from ..ops.quant import METHODS

QUANT_METHOD = "fastformers"
#: quant_method of a config that keeps a GGUF file's quantized tensors packed (QuantizationConfig.from_gguf())
GGUF_METHOD = "gguf"
#: What `skip=None` means (plus the model's output embeddings and tied linears, found per model).
DEFAULT_SKIP = ("lm_head",)
_GROUP_SIZE_DEFAULT = 128
_UNSET: Any = object()
_FORMAT_KEYS = ("bits", "group_size", "symmetric", "method")
ALGORITHMS = ("rtn", "gptq")


class LinearFormat(NamedTuple):
    """The packed format of one quantized linear. `symmetric` is resolved (never None): it decides whether
    an int8 weight has mins; int4 weights always have them (symmetric int4 stores mins = -8 * scales)."""

    bits: int
    group_size: Optional[int]
    symmetric: bool
    method: str = "weight_only"

    @property
    def has_mins(self) -> bool:
        return self.bits == 4 or not self.symmetric

    def describe(self) -> str:
        group = "per output channel" if self.group_size is None else f"group {self.group_size}"
        kind = "symmetric" if self.symmetric else "asymmetric"
        method = "" if self.method == "weight_only" else f", {self.method}"
        return f"int{self.bits} {kind} {group}{method}"


class QuantizationConfig:
    """Weight quantization of a model's linears.

    bits: 8 or 4. group_size: input columns per scale (default 128; None: one scale per output channel).
    symmetric: None picks the usual choice (int8 symmetric, int4 asymmetric with a min per group).
    method: "weight_only" (activations stay float), "blockwise_a8" (activations quantized to int8 per block of 32
    columns at run time, llama.cpp's arithmetic) or "w8a8" (int8 activations per token; needs bits=8,
    group_size=None, symmetric weights; group_size defaults to None for it). skip: module-name patterns kept
    in float (see the module docstring; None: the output head). modules: per-module format overrides
    {module name: {"bits": ..., "group_size": ..., "symmetric": ..., "method": ...}}, written by
    save_pretrained when a model mixes formats (e.g. a GGUF file with Q8_0 and Q4_1 tensors). algorithm: "rtn"
    (round to nearest) or "gptq" (calibrated; quantize_model(..., calibration_ids=...), not at loading).
    """

    def __init__(self, bits: Optional[int] = 8, group_size: Optional[int] = _UNSET, symmetric: Optional[bool] = None,
                 method: str = "weight_only", skip: Optional[Iterable[str]] = None,
                 modules: Optional[Dict[str, Dict[str, Any]]] = None, source: Optional[str] = None,
                 algorithm: str = "rtn") -> None:
        if group_size is _UNSET:
            group_size = None if method == "w8a8" or source == "gguf" else _GROUP_SIZE_DEFAULT
        self.bits = bits
        self.group_size = group_size
        self.symmetric = symmetric
        self.method = method
        self.skip = None if skip is None else _patterns(skip)
        self.modules = {} if modules is None else modules
        self.source = source
        self.algorithm = algorithm
        self.validate()

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_gguf(cls, skip: Optional[Iterable[str]] = None, method: str = "weight_only") -> "QuantizationConfig":
        """Keep a GGUF file's Q8_0 / Q4_0 / Q4_1 / Q4_K / Q6_K linear weights packed as they are stored (int8 / int4,
        groups of 32; Q6_K: int8 in groups of 16) instead of dequantizing them; weights of other types, and skipped
        modules, are dequantized.
        The default for GGUF files loaded onto a GPU, or onto a CPU where fastformers._C is built.

        method "weight_only" (default): float activations, the dequantized model's results. "blockwise_a8": the
        activations are quantized to int8 per block of 32 at run time, as llama.cpp does (its results rather than
        the dequantized model's; faster on CPUs with AVX-512 VNNI; the tied output head too)."""
        return cls(bits=None, group_size=None, source="gguf", skip=skip, method=method)

    @classmethod
    def from_dict(cls, config: Dict[str, Any], where: str = "quantization_config") -> "QuantizationConfig":
        """From the dict in config.json (or one written by hand); errors name `where` and the key."""
        if isinstance(config, QuantizationConfig):
            return config
        if not isinstance(config, dict):
            raise TypeError(f"{where} must be a QuantizationConfig or a dict, got {type(config).__name__}")
        data = dict(config)
        method = data.pop("quant_method", QUANT_METHOD)
        if str(method).lower() == GGUF_METHOD:
            data.setdefault("source", "gguf")
        elif str(method).lower() != QUANT_METHOD:
            raise ValueError(f"{where}: quant_method={method!r} is not a fastformers quantization config "
                             f"(expected {QUANT_METHOD!r} or {GGUF_METHOD!r})")
        known = {"bits", "group_size", "symmetric", "method", "skip", "modules", "source", "algorithm"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from None

    @classmethod
    def from_call(cls, config: Any, fields: Dict[str, Any], where: str) -> "QuantizationConfig":
        """A function's `config` argument (a QuantizationConfig, its dict, or None with the fields as keywords);
        refuses both at once, and GGUF configs (they only apply while a GGUF file loads)."""
        if config is None:
            config = cls(**fields)
        elif fields:
            raise ValueError(f"{where}: pass a QuantizationConfig or keyword fields, not both")
        config = cls.from_dict(config) if isinstance(config, dict) else config
        if config.source == "gguf":
            raise ValueError(f"{where}: QuantizationConfig.from_gguf() applies when loading a GGUF file "
                             "(from_pretrained(..., gguf_file=..., quantization_config=...))")
        return config

    @classmethod
    def from_flags(cls, load_in_8bit: bool = False, load_in_4bit: bool = False) -> Optional["QuantizationConfig"]:
        """transformers' shortcuts: load_in_8bit -> int8, load_in_4bit -> int4, both in groups of 128."""
        if load_in_8bit and load_in_4bit:
            raise ValueError("load_in_8bit=True and load_in_4bit=True: pick one")
        if load_in_8bit:
            return cls(bits=8, group_size=_GROUP_SIZE_DEFAULT)
        if load_in_4bit:
            return cls(bits=4, group_size=_GROUP_SIZE_DEFAULT)
        return None

    # -- validation -------------------------------------------------------------------------------
    def validate(self) -> None:
        if self.source is not None and self.source != "gguf":
            raise ValueError(f"source={self.source!r} is not supported; supported: None, 'gguf'")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm={self.algorithm!r} is not supported; supported: {', '.join(ALGORITHMS)}")
        if self.source == "gguf" and self.algorithm != "rtn":
            raise ValueError(f"source='gguf' keeps a GGUF file's packed tensors: algorithm={self.algorithm!r} "
                             f"does not apply")
        if self.source == "gguf":
            if self.bits is not None or self.group_size is not None or self.symmetric is not None:
                raise ValueError("source='gguf' keeps each GGUF tensor's own format: leave bits, group_size and "
                                 "symmetric unset (use QuantizationConfig.from_gguf())")
            if self.method not in ("weight_only", "blockwise_a8"):
                raise ValueError(f"source='gguf' supports method='weight_only' or 'blockwise_a8', got "
                                 f"method={self.method!r}")
        else:
            _check_format(self.bits, self.group_size, self.symmetric, self.method, "")
        if not isinstance(self.modules, dict):
            raise ValueError(f"modules must be a dict of module name -> format overrides, got "
                             f"{type(self.modules).__name__}")
        for name, override in self.modules.items():
            if not isinstance(override, dict) or set(override) - set(_FORMAT_KEYS):
                raise ValueError(f"modules[{name!r}]: must be a dict with keys among {', '.join(_FORMAT_KEYS)}, "
                                 f"got {override!r}")
            fmt = {**self._own_format(), **override}
            _check_format(fmt["bits"], fmt["group_size"], fmt["symmetric"], fmt["method"], f"modules[{name!r}]: ")

    def _own_format(self) -> Dict[str, Any]:
        return {"bits": self.bits, "group_size": self.group_size, "symmetric": self.symmetric, "method": self.method}

    # -- use --------------------------------------------------------------------------------------
    @property
    def quant_method(self) -> str:
        """The registry key of this config's scheme (registry.py): "fastformers", or "gguf" for from_gguf()."""
        return GGUF_METHOD if self.source == "gguf" else QUANT_METHOD

    def format_for(self, module_name: str) -> LinearFormat:
        """The format of one quantized module (the config's, or its override in `modules`)."""
        fmt = {**self._own_format(), **self.modules.get(module_name, {})}
        return resolve_format(fmt["bits"], fmt["group_size"], fmt["symmetric"], fmt["method"])

    def skips(self, module_name: str, default: Iterable[str] = DEFAULT_SKIP) -> bool:
        """Whether `module_name` stays float (`default`: the patterns `skip=None` stands for)."""
        patterns = default if self.skip is None else self.skip
        return any(matches(pattern, module_name) for pattern in patterns)

    # -- serialisation ----------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"quant_method": self.quant_method, **self._own_format(), "skip": self.skip}
        if self.modules:
            out["modules"] = {k: dict(v) for k, v in self.modules.items()}
        if self.source is not None:
            out["source"] = self.source
        if self.algorithm != "rtn":
            out["algorithm"] = self.algorithm
        return out

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QuantizationConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "quant_method")
        return f"QuantizationConfig({fields})"


def resolve_format(bits, group_size, symmetric, method="weight_only") -> LinearFormat:
    _check_format(bits, group_size, symmetric, method, "")
    if method == "w8a8":
        symmetric = True
    return LinearFormat(bits, group_size, bits == 8 if symmetric is None else bool(symmetric), method)


def _check_format(bits, group_size, symmetric, method, where: str) -> None:
    if isinstance(bits, bool) or bits not in (4, 8):
        raise ValueError(f"{where}bits={bits!r} is not supported; supported: 8, 4")
    if group_size is not None and (isinstance(group_size, bool) or not isinstance(group_size, int)
                                   or group_size <= 0):
        raise ValueError(f"{where}group_size={group_size!r} must be a positive int, or None for one scale per "
                         f"output channel")
    if symmetric is not None and not isinstance(symmetric, bool):
        raise ValueError(f"{where}symmetric={symmetric!r} must be True, False or None")
    if method not in METHODS:
        raise ValueError(f"{where}method={method!r} is not supported; supported: {', '.join(METHODS)}")
    if method == "w8a8" and (bits != 8 or group_size is not None or symmetric is False):
        raise ValueError(f"{where}method='w8a8' needs bits=8, group_size=None and symmetric weights "
                         f"(got bits={bits!r}, group_size={group_size!r}, symmetric={symmetric!r})")


def _patterns(skip) -> List[str]:
    if isinstance(skip, str) or not isinstance(skip, Iterable):
        raise ValueError(f"skip must be a list of module-name patterns, got {skip!r}")
    patterns = list(skip)
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern or pattern.strip(".") != pattern:
            raise ValueError(f"skip: {pattern!r} is not a module-name pattern (a non-empty name such as "
                             f"'lm_head', 'mlp.down_proj' or a glob like '*.layers.0.*')")
    return patterns


def matches(pattern: str, module_name: str) -> bool:
    """A run of whole dot-separated parts of the name, or (with * ? [) a glob over the whole name."""
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(module_name, pattern)
    return f".{pattern}." in f".{module_name}."
