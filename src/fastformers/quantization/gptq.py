"""Import GPTQ checkpoints (AutoGPTQ, GPTQModel, transformers' GPTQ integration) into `QuantizedWeight`
(fastformers/ops/quant.py). Written from the published layout; no GPTQ package is needed.

What a GPTQ checkpoint stores for one quantized linear `<module>` (bits b in {4, 8}, p = 32 // b values
per int32):

- `<module>.qweight` int32 (in_features / p, out_features): the codes q[k, o] in [0, 2^b), packed along
  the INPUT dim, lowest bits first: code k of column o sits in row k // p at bits (k % p) * b.
- `<module>.qzeros` int32 (groups, ceil(out_features / p)): the integer zero points, packed the same way
  along the OUTPUT dim.
- `<module>.scales` (groups, out_features), float16 as a rule.
- `<module>.g_idx` int32 (in_features,): the group of each input column. Older checkpoints omit it; it
  is then k // group_size.
- `<module>.bias` (out_features,), optional: not part of the quantized weight; the loader keeps it as the
  plain `bias` parameter (`import_gptq` only checks its shape).

groups = ceil(in_features / group_size) (group_size -1: one group, i.e. per output channel), and
`w[o, k] = scales[g_idx[k], o] * (q[k, o] - z[g_idx[k], o])`. checkpoint_format "gptq" (v1, AutoGPTQ's
layout) stores z - 1, so z = stored + 1 (a 4-bit z of 0 was stored as 15 after wrapping and reads back as
16: we compute what the v1 kernels compute); "gptq_v2" stores z itself.

The repacked weight keeps the codes and turns the zero points into mins: `mins = -z * scales` (8-bit:
codes shifted into int8 as q - 128, mins = (128 - z) * scales; when every z is 128 and no code is 0, as
in a symmetric int8 checkpoint, there are no mins). This is exact but for one rounding of mins into the
output dtype; with dtype=torch.float32 and float16 or bfloat16 scales it is exact (z * s needs at most
20 significant bits).

Not supported (clear errors): bits 2 and 3, packings other than int32 ("pack_dtype"), the marlin /
bitblas / other checkpoint formats, and act-order checkpoints (desc_act with a g_idx that is not
k // group_size): their groups are not contiguous runs of input columns, so `QuantizedWeight` could only
express them with the input features permuted at run time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from ..ops.quant import QuantizedWeight, pack_int4

#: Tensor suffixes a GPTQ linear may store (`<module>.<suffix>`); `qweight` marks a quantized module.
GPTQ_TENSORS = ("qweight", "qzeros", "scales", "g_idx", "bias")
#: The ones every quantized linear must have.
GPTQ_REQUIRED_TENSORS = ("qweight", "qzeros", "scales")

_FORMATS = {"gptq": 1, "gptq_v2": 2}


def is_gptq_config(quantization_config) -> bool:
    """True when a transformers `quantization_config` (the dict in config.json) describes a GPTQ checkpoint."""
    return str(_as_dict(quantization_config).get("quant_method", "")).lower() == "gptq"


def check_gptq_config(quantization_config) -> dict:
    """Validate a GPTQ quantization_config once (errors name the offending key); returns the settings
    the importer uses: {"bits", "group_size" (-1: per channel), "version" (1 or 2)}."""
    cfg = _as_dict(quantization_config)
    where = "quantization_config"
    method = str(cfg.get("quant_method", "gptq")).lower()
    if method != "gptq":
        raise ValueError(f"{where}: quant_method={method!r} is not a GPTQ checkpoint")
    bits = cfg.get("bits")
    if bits in (2, 3):
        raise NotImplementedError(f"{where}: GPTQ bits={bits} is not supported yet; supported: 4, 8")
    if bits not in (4, 8) or isinstance(bits, bool):
        raise ValueError(f"{where}: bits={bits!r} is not a supported GPTQ width; supported: 4, 8")
    group_size = cfg.get("group_size", 128)  # transformers' GPTQConfig default
    if not isinstance(group_size, int) or isinstance(group_size, bool) or not (group_size == -1 or group_size > 0):
        raise ValueError(f"{where}: group_size={group_size!r} must be -1 (per channel) or a positive int")
    fmt = str(cfg.get("checkpoint_format") or cfg.get("format") or "gptq").lower()
    if cfg.get("is_marlin_format"):
        fmt = "marlin"
    if fmt not in _FORMATS:
        raise NotImplementedError(f"{where}: checkpoint_format={fmt!r} is not supported; supported: "
                                  f"{', '.join(_FORMATS)} (re-save the model in the gptq format)")
    pack_dtype = str(cfg.get("pack_dtype", "int32")).lower().replace("torch.", "")
    if pack_dtype != "int32":
        raise NotImplementedError(f"{where}: pack_dtype={pack_dtype!r} is not supported; supported: int32")
    return {"bits": bits, "group_size": group_size, "version": _FORMATS[fmt]}


def import_gptq(tensors: Mapping[str, torch.Tensor], config, name: str = "linear",
                dtype: torch.dtype | None = None, shape: Sequence[int] | None = None) -> QuantizedWeight:
    """Repack one GPTQ linear into a QuantizedWeight (out_features, in_features).

    tensors: the module's checkpoint tensors keyed by suffix (`qweight`, `qzeros`, `scales`, optional
    `g_idx` and `bias`); config: the checkpoint's quantization_config dict; name: the module's name, used
    in every error; dtype: the float dtype of the result's scales / mins (default: that of `scales`);
    shape: the (out_features, in_features) the model expects, checked against qweight (GPTQ stores no shape:
    without it a qweight of the wrong length is caught only through g_idx).
    """
    settings = check_gptq_config(config)
    bits, group_size = settings["bits"], settings["group_size"]
    per = 32 // bits
    _check_keys(tensors, GPTQ_TENSORS, name, "GPTQ")
    qweight = _tensor(tensors, "qweight", name, "GPTQ", (torch.int32,))
    qzeros = _tensor(tensors, "qzeros", name, "GPTQ", (torch.int32,))
    scales = _tensor(tensors, "scales", name, "GPTQ", None)
    in_features, out_features = qweight.shape[0] * per, qweight.shape[1]
    if shape is not None and tuple(shape) != (out_features, in_features):
        raise ValueError(f"{name}.qweight: packs a weight of shape {(out_features, in_features)} (out, in), the "
                         f"model expects {tuple(shape)}")
    group = in_features if group_size == -1 else group_size
    groups = math.ceil(in_features / group)
    want = (groups, out_features)
    _check_shape(scales, want, f"{name}.scales",
                 f"(groups, out_features) for {in_features} inputs in groups of {group}")
    want = (groups, math.ceil(out_features / per))
    _check_shape(qzeros, want, f"{name}.qzeros", f"(groups, out_features / {per}) for {bits}-bit zero points")
    g_idx = tensors.get("g_idx")
    if g_idx is not None:
        _check_g_idx(g_idx, in_features, group, groups, name)
    _check_bias(tensors.get("bias"), out_features, name)

    codes = _unpack(qweight, bits, dim=0)  # (in, out)
    zeros = _unpack(qzeros, bits, dim=1)[:, :out_features]  # (groups, out)
    if settings["version"] == 1:
        zeros = zeros.to(torch.int16) + 1  # 8-bit: up to 256
    return zero_point_weight(codes, zeros, scales, bits, group_size, dtype or scales.dtype, name)


def zero_point_weight(codes: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor, bits: int, group_size: int,
                      dtype: torch.dtype, name: str) -> QuantizedWeight:
    """The common last step of the GPTQ and AWQ importers: unpacked codes (in, out) in [0, 2^bits), integer
    zero points (groups, out) and scales (groups, out), with w[o, k] = s[k // g, o] * (q[k, o] - z[k // g, o]),
    into a checked QuantizedWeight with mins = -z * s (see the module docstring for 8-bit)."""
    in_features = codes.shape[0]
    codes, s, z = codes.t(), scales.t().float(), zeros.t().float()  # (out, in), (out, groups), (out, groups)
    if bits == 4:
        qweight, mins = pack_int4(codes.to(torch.uint8)), -z * s
    else:
        qweight, mins = (codes.to(torch.int16) - 128).to(torch.int8), (128 - z) * s
        if bool((z == 128).all()) and int(codes.min()) >= 1:
            mins = None  # symmetric int8: codes in [-127, 127], no mins
    group = None if group_size == -1 or group_size >= in_features else group_size
    return QuantizedWeight(qweight.contiguous(), s.to(dtype).contiguous(),
                           None if mins is None else mins.to(dtype).contiguous(), bits, group, in_features).check(name)


def _unpack(packed: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """int32 words of 32 // bits values, lowest bits first, packed along `dim` (0 or 1) -> uint8 codes."""
    per = 32 // bits
    shifts = torch.arange(0, 32, bits, dtype=torch.int32, device=packed.device)
    if dim == 0:  # (r, c) -> (r, per, c) -> (r * per, c)
        codes = (packed.unsqueeze(1) >> shifts.view(1, per, 1)) & (2 ** bits - 1)
        return codes.to(torch.uint8).reshape(-1, packed.shape[1])
    codes = (packed.unsqueeze(2) >> shifts) & (2 ** bits - 1)  # (r, c, per) -> (r, c * per)
    return codes.to(torch.uint8).reshape(packed.shape[0], -1)


def _check_g_idx(g_idx, in_features: int, group: int, groups: int, name: str) -> None:
    where = f"{name}.g_idx"
    if not isinstance(g_idx, torch.Tensor) or g_idx.dim() != 1 or g_idx.dtype.is_floating_point or \
            g_idx.dtype == torch.bool or g_idx.shape[0] != in_features:
        raise ValueError(f"{where}: must be an integer tensor of shape ({in_features},) (in_features, from "
                         f"qweight), got {_describe(g_idx)}")
    g_idx = g_idx.long()
    if int(g_idx.min()) < 0 or int(g_idx.max()) >= groups:
        raise ValueError(f"{where}: group indices must lie in [0, {groups}), got [{int(g_idx.min())}, "
                         f"{int(g_idx.max())}]")
    trivial = torch.arange(in_features, device=g_idx.device) // group
    if not torch.equal(g_idx, trivial):
        raise NotImplementedError(f"{where}: act-order (desc_act) GPTQ checkpoints are not supported yet: the "
                                  f"input columns of a group are not contiguous (g_idx is not k // {group}), which "
                                  f"fastformers' QuantizedWeight cannot express; use a checkpoint quantized with "
                                  f"desc_act=False")


def _check_bias(bias, out_features: int, name: str) -> None:
    if bias is not None and (not isinstance(bias, torch.Tensor) or not bias.is_floating_point()
                             or tuple(bias.shape) != (out_features,)):
        raise ValueError(f"{name}.bias: must be a float tensor of shape ({out_features},) (out_features), got "
                         f"{_describe(bias)}")


def _check_keys(tensors, allowed, name: str, fmt: str) -> None:
    unknown = sorted(set(tensors) - set(allowed))
    if unknown:
        raise ValueError(f"{name}: unexpected tensor(s) {', '.join(f'{name}.{k}' for k in unknown)} for a {fmt} "
                         f"linear (expected {', '.join(allowed)})")


def _tensor(tensors, key: str, name: str, fmt: str, dtypes) -> torch.Tensor:
    """tensors[key], a 2-D tensor of one of `dtypes` (None: any float dtype); errors name `name.key`."""
    t = tensors.get(key)
    if t is None:
        raise ValueError(f"{name}.{key} is missing (every {fmt} linear stores {', '.join(GPTQ_REQUIRED_TENSORS)})")
    ok = isinstance(t, torch.Tensor) and t.dim() == 2 and (t.dtype in dtypes if dtypes else t.is_floating_point())
    if not ok:
        kind = "/".join(str(d).replace("torch.", "") for d in dtypes) if dtypes else "float"
        raise ValueError(f"{name}.{key}: must be a 2-D {kind} tensor, got {_describe(t)}")
    return t


def _check_shape(t: torch.Tensor, want: tuple, where: str, what: str) -> None:
    if tuple(t.shape) != want:
        raise ValueError(f"{where}: expected shape {want} {what}, got {tuple(t.shape)}")


def _describe(t) -> str:
    if isinstance(t, torch.Tensor):
        return f"{str(t.dtype).replace('torch.', '')} {tuple(t.shape)}"
    return type(t).__name__


def _as_dict(config) -> dict:
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    if not isinstance(config, Mapping):
        raise TypeError(f"quantization_config must be a dict, got {type(config).__name__}")
    return dict(config)
