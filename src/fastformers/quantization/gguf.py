"""GGUF Q8_0 / Q4_0 / Q4_1 / Q4_K / Q6_K tensors as `QuantizedWeight`s (ops/quant.py), kept packed instead of
dequantized.

The block layouts (32 values a block, rows of whole blocks; loading/gguf.py dequantizes the same bytes):

- Q8_0, 34 bytes: d (float16), then 32 int8 codes q; w = q * d -> int8, group 32, scales d, no mins.
- Q4_0, 18 bytes: d (float16), then 16 bytes of nibbles: value i in the low nibble of byte i, value 16 + i in
  the high nibble; w = (q - 8) * d -> int4, group 32, scales d, mins -8 * d.
- Q4_1, 20 bytes: d, m (float16), then the nibbles as Q4_0; w = q * d + m -> int4, group 32, scales d, mins m.
- Q4_K, 144 bytes for 256 values (8 sub-blocks of 32): d, dmin (float16), 12 bytes of six-bit scales sc and mins
  mn per sub-block, then 128 bytes of nibbles (per 64 values, 32 bytes: the low nibbles are the first 32, the
  high nibbles the next 32); w = q * (d * sc) - dmin * mn -> int4, group 32, scales d * sc, mins -dmin * mn.
- Q6_K, 210 bytes for 256 values (16 sub-blocks of 16): 128 bytes of low nibbles, 64 bytes of two-bit high parts,
  16 int8 scales sc, d (float16); per 128 values, value l < 32 takes the low nibble of ql[l] and bits 0-1 of qh[l],
  l + 32 those of ql[l + 32] and bits 2-3, l + 64 the high nibble of ql[l] and bits 4-5, l + 96 the high nibble of
  ql[l + 32] and bits 6-7; w = (q - 32) * (d * sc) -> int8 codes in [-32, 31], group 16, scales d * sc, no mins.

Dequantizing the result gives exactly what loading/gguf.py's dequantization gives in float32 (the products and
sums involved are exact), so a model that keeps these tensors packed computes what the dequantized model does,
up to float rounding in the matmuls. Scales and mins are cast to the model dtype (exact for float16 and float32;
Q4_K's products d * sc and dmin * mn are exact in float32 only, rounded in a half-precision model).
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch

from ..ops.quant import QuantizedWeight, pack_int4
from .config import LinearFormat

#: ggml type id -> (name, block bytes, the format it is kept in); a block holds 32 values (Q4_K, Q6_K: 256)
KEPT_TYPES: Dict[int, tuple] = {
    8: ("Q8_0", 34, LinearFormat(8, 32, True)),
    2: ("Q4_0", 18, LinearFormat(4, 32, True)),
    3: ("Q4_1", 20, LinearFormat(4, 32, False)),
    12: ("Q4_K", 144, LinearFormat(4, 32, False)),
    14: ("Q6_K", 210, LinearFormat(8, 16, True)),
}
KEPT_TYPE_NAMES = tuple(name for name, _, _ in KEPT_TYPES.values())


def kept_format(type_name: str) -> Optional[LinearFormat]:
    """The format a GGUF tensor of this type is kept in, or None for types that are dequantized."""
    return next((fmt for name, _, fmt in KEPT_TYPES.values() if name == type_name), None)


def gguf_quantized_weight(raw: torch.Tensor, ggml_type: int, shape, dtype: torch.dtype = torch.float32,
                          name: str = "tensor") -> QuantizedWeight:
    """Raw bytes of a 2-D Q8_0 / Q4_0 / Q4_1 / Q4_K / Q6_K tensor of `shape` (rows, columns) -> a checked
    QuantizedWeight."""
    if ggml_type not in KEPT_TYPES:
        raise ValueError(f"{name}: ggml type {ggml_type} is not kept quantized (supported: "
                         f"{', '.join(KEPT_TYPE_NAMES)})")
    type_name, size, _ = KEPT_TYPES[ggml_type]
    block = 256 if type_name in ("Q4_K", "Q6_K") else 32
    if len(shape) != 2 or shape[1] % block:
        raise ValueError(f"{name}: a {type_name} matrix must be 2-D with rows of whole {block}-value blocks, got "
                         f"shape {tuple(shape)}")
    rows, cols = (int(s) for s in shape)
    raw = raw.reshape(-1)
    if raw.data_ptr() % 2:  # the float16 fields must be aligned to be reinterpreted
        raw = raw.clone()
    if raw.numel() != rows * cols // block * size:
        raise ValueError(f"{name}: {raw.numel()} bytes of {type_name} blocks do not hold shape {tuple(shape)}")
    if type_name == "Q4_K":
        return _q4_k(raw.view(rows, cols // 256, size), rows, cols, dtype).check(name)
    if type_name == "Q6_K":
        return _q6_k(raw.view(rows, cols // 256, size), rows, cols, dtype).check(name)
    blocks = raw.view(rows, cols // 32, size)
    d = blocks[..., 0:2].contiguous().view(torch.float16).reshape(rows, cols // 32)
    if type_name == "Q8_0":
        qweight = blocks[..., 2:].contiguous().view(torch.int8).reshape(rows, cols)
        return QuantizedWeight(qweight, d.to(dtype), None, 8, 32, cols).check(name)
    qs = blocks[..., 4:] if type_name == "Q4_1" else blocks[..., 2:]
    codes = torch.cat((qs & 0xF, qs >> 4), dim=-1).reshape(rows, cols)  # ggml: low nibbles, then high
    mins = blocks[..., 2:4].contiguous().view(torch.float16).reshape(rows, cols // 32).float() \
        if type_name == "Q4_1" else -8 * d.float()
    return QuantizedWeight(pack_int4(codes), d.to(dtype), mins.to(dtype), 4, 32, cols).check(name)


def k_scale_min(scales: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The 8 six-bit scales and mins packed in the 12 scale bytes of Q4_K / Q5_K blocks."""
    s = scales.reshape(-1, 3, 4)
    d, m, md = s[:, 0], s[:, 1], s[:, 2]
    sc = torch.cat((d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)), dim=-1)
    mn = torch.cat((m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)), dim=-1)
    return sc, mn


def _q4_k(blocks: torch.Tensor, rows: int, cols: int, dtype: torch.dtype) -> QuantizedWeight:
    n = rows * (cols // 256)
    b = blocks.reshape(n, 144)
    sc, mn = k_scale_min(b[:, 4:16])  # (n, 8) each
    d = b[:, 0:2].contiguous().view(torch.float16).float()
    dmin = b[:, 2:4].contiguous().view(torch.float16).float()
    scales = (d * sc.float()).reshape(rows, cols // 32)  # float16 x a six-bit integer: exact in float32
    mins = -(dmin * mn.float()).reshape(rows, cols // 32)
    qs = b[:, 16:144].reshape(n, 4, 1, 32)
    codes = torch.cat((qs & 0xF, qs >> 4), dim=2).reshape(rows, cols)  # per 64 values: low nibbles, then high
    return QuantizedWeight(pack_int4(codes), scales.to(dtype), mins.to(dtype), 4, 32, cols)


def _q6_k(blocks: torch.Tensor, rows: int, cols: int, dtype: torch.dtype) -> QuantizedWeight:
    n = rows * (cols // 256)
    b = blocks.reshape(n, 210)
    ql = b[:, :128].reshape(n, 2, 64)  # per 128 values
    qh = b[:, 128:192].reshape(n, 2, 32)
    low = torch.cat((ql & 15, ql >> 4), dim=-1)  # values 0-31, 32-63 (low nibbles), 64-95, 96-127 (high nibbles)
    high = torch.cat([(qh >> shift) & 3 for shift in (0, 2, 4, 6)], dim=-1)
    codes = (low | (high << 4)).to(torch.int8).sub_(32).reshape(rows, cols)
    d = b[:, 208:210].contiguous().view(torch.float16).float()
    scales = (d * b[:, 192:208].contiguous().view(torch.int8).float()).reshape(rows, cols // 16)  # exact in float32
    return QuantizedWeight(codes, scales.to(dtype), None, 8, 16, cols)


def map_rows(qw: QuantizedWeight, fn: Callable[[torch.Tensor], torch.Tensor]) -> QuantizedWeight:
    """Apply a permutation of the output rows (e.g. GGUF's rotary Q/K row order undone) to a packed weight."""
    return QuantizedWeight(fn(qw.qweight), fn(qw.scales), None if qw.mins is None else fn(qw.mins), qw.bits,
                           qw.group_size, qw.in_features, qw.method)
