"""Import AutoAWQ checkpoints (GEMM layout, as written by AutoAWQ and read by transformers' AWQ
integration) into `QuantizedWeight` (fastformers/ops/quant.py). Written from the published layout; no AWQ
package is needed.

What an AWQ GEMM checkpoint stores for one quantized linear `<module>` (4 bits, 8 values per int32):

- `<module>.qweight` int32 (in_features, out_features / 8): the codes q[k, o] in [0, 16), packed along
  the OUTPUT dim in AWQ's interleaved order: the nibble at bits 4 * i of word j of row k holds output
  column 8 * j + AWQ_ORDER[i], with AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7].
- `<module>.qzeros` int32 (groups, out_features / 8): the integer zero points, packed the same way.
- `<module>.scales` (groups, out_features), float16 as a rule.
- `<module>.bias` (out_features,), optional: the loader keeps it as the plain `bias` parameter.

groups = in_features / group_size (group_size must divide in_features; -1: one group), and
`w[o, k] = scales[k // g, o] * (q[k, o] - z[k // g, o])`. The repacked weight keeps the codes and has
`mins = -z * scales`: exact but for one rounding of mins into the output dtype (exact with
dtype=torch.float32 and float16 / bfloat16 scales).

Only version "gemm" (AutoAWQ's default, written by `backend="autoawq"`) with zero points is read: the
gemv / gemv_fast / marlin / exllama / ipex versions and llm-awq checkpoints pack differently, and raise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from ..ops.quant import QuantizedWeight
from .gptq import (
    _as_dict,
    _check_bias,
    _check_keys,
    _check_shape,
    _tensor,
    _unpack,
    zero_point_weight,
)

#: Tensor suffixes an AWQ linear may store (`<module>.<suffix>`); `qweight` marks a quantized module.
AWQ_TENSORS = ("qweight", "qzeros", "scales", "bias")
#: The ones every quantized linear must have.
AWQ_REQUIRED_TENSORS = ("qweight", "qzeros", "scales")
#: Output column held by nibble i of each int32 (AutoAWQ's GEMM packing).
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
_AWQ_UNORDER = tuple(AWQ_ORDER.index(c) for c in range(8))  # nibble holding output column c


def is_awq_config(quantization_config) -> bool:
    """True when a transformers `quantization_config` (the dict in config.json) describes an AWQ checkpoint."""
    return str(_as_dict(quantization_config).get("quant_method", "")).lower() == "awq"


def check_awq_config(quantization_config) -> dict:
    """Validate an AWQ quantization_config once (errors name the offending key); returns the settings the
    importer uses: {"bits": 4, "group_size" (-1: per channel)}. Reads transformers' keys (bits, group_size,
    zero_point, version, backend) and AutoAWQ's own (w_bit, q_group_size)."""
    cfg = _as_dict(quantization_config)
    where = "quantization_config"
    method = str(cfg.get("quant_method", "awq")).lower()
    if method != "awq":
        raise ValueError(f"{where}: quant_method={method!r} is not an AWQ checkpoint")
    bits = cfg.get("bits", cfg.get("w_bit", 4))
    if bits != 4 or isinstance(bits, bool):
        raise NotImplementedError(f"{where}: AWQ bits={bits!r} is not supported; supported: 4")
    group_size = cfg.get("group_size", cfg.get("q_group_size", 128))
    if not isinstance(group_size, int) or isinstance(group_size, bool) or not (group_size == -1 or group_size > 0):
        raise ValueError(f"{where}: group_size={group_size!r} must be -1 (per channel) or a positive int")
    version = str(cfg.get("version", "gemm")).lower()
    if version != "gemm":
        raise NotImplementedError(f"{where}: AWQ version={version!r} is not supported; supported: gemm (the "
                                  f"gemv / marlin / exllama / ipex layouts are not read yet)")
    backend = str(cfg.get("backend", "autoawq")).lower()
    if backend != "autoawq":
        raise NotImplementedError(f"{where}: AWQ backend={backend!r} is not supported; supported: autoawq")
    if cfg.get("zero_point", True) is not True:
        raise NotImplementedError(f"{where}: AWQ zero_point={cfg.get('zero_point')!r} is not supported; "
                                  f"supported: true (AutoAWQ's GEMM layout stores zero points)")
    return {"bits": 4, "group_size": group_size}


def import_awq(tensors: Mapping[str, torch.Tensor], config, name: str = "linear",
               dtype: torch.dtype | None = None, shape: Sequence[int] | None = None) -> QuantizedWeight:
    """Repack one AWQ GEMM linear into a QuantizedWeight (out_features, in_features).

    tensors: the module's checkpoint tensors keyed by suffix (`qweight`, `qzeros`, `scales`, optional
    `bias`); config: the checkpoint's quantization_config dict; name: the module's name, used in every
    error; dtype: the float dtype of the result's scales / mins (default: that of `scales`); shape: the
    (out_features, in_features) the model expects, checked against qweight and scales.
    """
    group_size = check_awq_config(config)["group_size"]
    _check_keys(tensors, AWQ_TENSORS, name, "AWQ")
    qweight = _tensor(tensors, "qweight", name, "AWQ", (torch.int32,))
    qzeros = _tensor(tensors, "qzeros", name, "AWQ", (torch.int32,))
    scales = _tensor(tensors, "scales", name, "AWQ", None)
    in_features, out_features = qweight.shape[0], scales.shape[1]
    words = math.ceil(out_features / 8)
    _check_shape(qweight, (in_features, words), f"{name}.qweight",
                 f"(in_features, out_features / 8) for the {out_features} outputs of scales")
    if shape is not None and tuple(shape) != (out_features, in_features):
        raise ValueError(f"{name}.qweight: with {name}.scales, packs a weight of shape {(out_features, in_features)} "
                         f"(out, in), the model expects {tuple(shape)}")
    group = in_features if group_size == -1 else group_size
    if in_features % group:
        raise ValueError(f"{name}: group_size={group_size} does not divide in_features={in_features} "
                         f"(qweight rows); AWQ groups must tile the input dim")
    groups = in_features // group
    _check_shape(scales, (groups, out_features), f"{name}.scales",
                 f"(groups, out_features) for {in_features} inputs in groups of {group}")
    _check_shape(qzeros, (groups, words), f"{name}.qzeros", "(groups, out_features / 8) for 4-bit zero points")
    _check_bias(tensors.get("bias"), out_features, name)

    codes = _unorder(_unpack(qweight, 4, dim=1))[:, :out_features]  # (in, out)
    zeros = _unorder(_unpack(qzeros, 4, dim=1))[:, :out_features]  # (groups, out)
    return zero_point_weight(codes, zeros, scales, 4, group_size, dtype or scales.dtype, name)


def _unorder(values: torch.Tensor) -> torch.Tensor:
    """(r, 8 * words) nibbles in packing order -> output column order."""
    r = values.shape[0]
    index = torch.tensor(_AWQ_UNORDER, device=values.device)
    return values.view(r, -1, 8).index_select(2, index).reshape(r, -1)
