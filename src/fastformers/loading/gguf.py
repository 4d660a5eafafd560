"""GGUF checkpoints (llama.cpp's single-file format): metadata, config and weights, as transformers reads them.

    ckpt = read_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")
    ckpt.config_dict()      # the config.json transformers builds for the file
    ckpt.state_dict()       # Hugging Face parameter names -> dequantized float32 tensors

The file is memory-mapped; nothing but the metadata is read until a tensor is asked for. The header is parsed
here (a few struct reads per key) rather than with `gguf.GGUFReader`, which builds one numpy array per metadata
string and costs seconds on a 50k-token vocabulary. Dequantization is vectorised torch code for F32, F16, BF16,
Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K and Q6_K, bit-identical to `gguf.quants.dequantize` (the
function transformers uses); other quantization types fall back to `gguf.quants.dequantize` when the optional
`gguf` package is installed (``pip install gguf``).

What transformers does with a GGUF, reproduced here (transformers' legacy GGUF path, which Llama, Mistral,
Qwen2 and Qwen3 files go through in transformers 5):

* Q and K projections of `llama` files are stored with llama.cpp's rotary row permutation, undone on load.
* Weights are dequantized to float32 (then cast to the dtype asked for); the config states no dtype (transformers
  loads GGUF models in float32 whatever the file's types). fastformers can also keep Q8_0 / Q4_0 / Q4_1 / Q4_K /
  Q6_K linear weights packed (`iter_state_dict(keep_quantized=...)`, used by `QuantizationConfig.from_gguf()`; see
  fastformers/quantization/gguf.py).
* The config keeps only what the metadata states (plus `tie_word_embeddings`, true when the file has no
  `output.weight`); a `llama` file is `model_type` "mistral" only when its `general.name` is exactly "mistral".
* The tokenizer stored in `tokenizer.ggml.*` is rebuilt by fastformers.tokenization.gguf (`tokenizer_from_gguf`);
  this module only reads the metadata.
"""

from __future__ import annotations

import logging
import math
import mmap
import os
import re
import struct
from typing import Any, Callable, Dict, Iterator, NamedTuple, Optional, Tuple

import numpy as np
import torch

from ..quantization.gguf import k_scale_min

logger = logging.getLogger(__name__)

__all__ = [
    "GGUFCheckpoint",
    "GGUFError",
    "GGUFTensorInfo",
    "SUPPORTED_ARCHITECTURES",
    "NATIVE_QUANT_TYPES",
    "dequantize",
    "permute_qk",
    "read_gguf",
    "unpermute_qk",
]

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# general.architecture values whose config and weights are read (a "llama" file may be model_type "mistral")
SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3")


class GGUFError(ValueError):
    """A GGUF file that cannot be read (not GGUF, truncated, unsupported content); the message names the file."""


class _UnsupportedType(ValueError):
    """A ggml tensor type that neither fastformers nor the gguf package can dequantize."""


# ---------------------------------------------------------------------------------------------------------------
# ggml tensor types
# ---------------------------------------------------------------------------------------------------------------

# ggml type id -> (name, elements per block, bytes per block), for the types dequantized here
_NATIVE_TYPES: Dict[int, Tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    30: ("BF16", 1, 2),
}
NATIVE_QUANT_TYPES = tuple(name for name, _, _ in _NATIVE_TYPES.values())


def _import_gguf(purpose: str):
    try:
        import gguf  # noqa: PLC0415 - optional dependency
    except ImportError:
        raise ImportError(f"{purpose} needs the optional `gguf` package: pip install gguf") from None
    return gguf


def _type_layout(type_id: int) -> Optional[Tuple[str, int, int]]:
    """(name, block elements, block bytes) of a ggml type id, or None when neither we nor `gguf` know it."""
    if type_id in _NATIVE_TYPES:
        return _NATIVE_TYPES[type_id]
    try:
        import gguf  # noqa: PLC0415
    except ImportError:
        return None
    try:
        qtype = gguf.GGMLQuantizationType(type_id)
        block, size = gguf.GGML_QUANT_SIZES[qtype]
    except (ValueError, KeyError):
        return None
    return qtype.name, block, size


def _type_name(type_id: int) -> str:
    layout = _type_layout(type_id)
    return layout[0] if layout else f"unknown ggml type {type_id}"


# ---------------------------------------------------------------------------------------------------------------
# Dequantization (torch, vectorised; op order mirrors gguf.quants so results are bit-identical)
# ---------------------------------------------------------------------------------------------------------------

_SHIFT_4 = torch.tensor([0, 4], dtype=torch.uint8)
_SHIFT_2 = torch.tensor([0, 2, 4, 6], dtype=torch.uint8)
_SHIFT_1 = torch.arange(8, dtype=torch.uint8)


def _half(blocks: torch.Tensor, start: int) -> torch.Tensor:
    """The float16 stored at byte `start` of every block, as a (n, 1) float32 column."""
    return blocks[:, start:start + 2].view(torch.float16).float()


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """(n, k) bytes -> (n, 2, k) uint8: low nibbles first, then high nibbles (ggml's 4-bit order)."""
    out = torch.empty((qs.shape[0], 2, qs.shape[1]), dtype=torch.uint8)
    torch.bitwise_and(qs, 15, out=out[:, 0])
    torch.bitwise_right_shift(qs, 4, out=out[:, 1])
    return out


def _bits(packed: torch.Tensor) -> torch.Tensor:
    """(n, k) bytes -> (n, k * 8) single bits, little-endian within each byte."""
    return ((packed.unsqueeze(-1) >> _SHIFT_1) & 1).reshape(packed.shape[0], -1)


def _as_float(q: torch.Tensor, n: int, width: int) -> torch.Tensor:
    out = torch.empty((n, width), dtype=torch.float32)
    out.copy_(q.reshape(n, width))
    return out


def _deq_q4_0(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    out = _as_float(_nibbles(b[:, 2:]), n, 32)
    return out.sub_(8).mul_(_half(b, 0))


def _deq_q4_1(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    out = _as_float(_nibbles(b[:, 4:]), n, 32)
    return out.mul_(_half(b, 0)).add_(_half(b, 2))


def _q5(b: torch.Tensor, qh_at: int) -> torch.Tensor:
    n = b.shape[0]
    q = _nibbles(b[:, qh_at + 4:]).reshape(n, 32)
    q |= _bits(b[:, qh_at:qh_at + 4]) << 4
    return _as_float(q, n, 32)


def _deq_q5_0(b: torch.Tensor) -> torch.Tensor:
    return _q5(b, 2).sub_(16).mul_(_half(b, 0))


def _deq_q5_1(b: torch.Tensor) -> torch.Tensor:
    return _q5(b, 4).mul_(_half(b, 0)).add_(_half(b, 2))


def _deq_q8_0(b: torch.Tensor) -> torch.Tensor:
    return _as_float(b[:, 2:].view(torch.int8), b.shape[0], 32).mul_(_half(b, 0))


def _deq_q2_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    scales = b[:, :16]
    dl = (_half(b, 80) * (scales & 15).float()).unsqueeze(-1)
    ml = (_half(b, 82) * (scales >> 4).float()).unsqueeze(-1)
    q = (b[:, 16:80].reshape(n, 2, 1, 32) >> _SHIFT_2.view(1, 1, 4, 1)) & 3
    out = _as_float(q, n, 256).view(n, 16, 16)
    return out.mul_(dl).sub_(ml).view(n, 256)


def _deq_q3_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    hmask, qs, scales = b[:, :32], b[:, 32:96], b[:, 96:108]
    low = (scales[:, :8].reshape(n, 1, 8) >> _SHIFT_4.view(1, 2, 1)).reshape(n, 16)
    high = (scales[:, 8:12].reshape(n, 1, 4) >> _SHIFT_2.view(1, 4, 1)).reshape(n, 16)
    sc = ((low & 15) | ((high & 3) << 4)).view(torch.int8) - 32
    dl = (_half(b, 108) * sc.float()).unsqueeze(-1)
    ql = ((qs.reshape(n, 2, 1, 32) >> _SHIFT_2.view(1, 1, 4, 1)) & 3).reshape(n, 16, 16)
    qh = ((hmask.reshape(n, 1, 1, 32) >> _SHIFT_1.view(1, 1, 8, 1)) & 1).reshape(n, 16, 16) ^ 1
    q = ql.view(torch.int8) - (qh << 2).view(torch.int8)
    out = _as_float(q, n, 256).view(n, 16, 16)
    return out.mul_(dl).view(n, 256)


def _k_affine(b: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    sc, mn = k_scale_min(b[:, 4:16])
    d = (_half(b, 0) * sc.float()).unsqueeze(-1)
    dm = (_half(b, 2) * mn.float()).unsqueeze(-1)
    out = _as_float(q, n, 256).view(n, 8, 32)
    return out.mul_(d).sub_(dm).view(n, 256)


def _deq_q4_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    q = (b[:, 16:144].reshape(n, 4, 1, 32) >> _SHIFT_4.view(1, 1, 2, 1)) & 15
    return _k_affine(b, q)


def _deq_q5_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    ql = ((b[:, 48:176].reshape(n, 4, 1, 32) >> _SHIFT_4.view(1, 1, 2, 1)) & 15).reshape(n, 8, 32)
    qh = ((b[:, 16:48].reshape(n, 1, 1, 32) >> _SHIFT_1.view(1, 1, 8, 1)) & 1).reshape(n, 8, 32)
    return _k_affine(b, ql | (qh << 4))


def _deq_q6_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    d = (_half(b, 208) * b[:, 192:208].view(torch.int8).float()).unsqueeze(-1)
    ql = ((b[:, :128].reshape(n, 2, 1, 64) >> _SHIFT_4.view(1, 1, 2, 1)) & 15).reshape(n, 8, 32)
    qh = ((b[:, 128:192].reshape(n, 2, 1, 32) >> _SHIFT_2.view(1, 1, 4, 1)) & 3).reshape(n, 8, 32)
    q = (ql | (qh << 4)).view(torch.int8) - 32
    out = _as_float(q, n, 256).view(n, 16, 16)
    return out.mul_(d).view(n, 256)


_DEQUANT = {2: _deq_q4_0, 3: _deq_q4_1, 6: _deq_q5_0, 7: _deq_q5_1, 8: _deq_q8_0, 10: _deq_q2_k,
            11: _deq_q3_k, 12: _deq_q4_k, 13: _deq_q5_k, 14: _deq_q6_k}
_FLOAT_TYPES = {0: torch.float32, 1: torch.float16, 30: torch.bfloat16}
# types iter_state_dict(keep_quantized=...) can hand over packed (fastformers.quantization.gguf)
_KEPT_QUANT_TYPES = ("Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K")
# rows of blocks dequantized at once: bounds the temporaries for very large tensors
_CHUNK_BLOCKS = 1 << 18


def dequantize(data, ggml_type: int, shape, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Raw GGUF tensor bytes -> a new tensor of `shape` (torch order, outermost first) in `dtype`.

    `data` is a uint8 numpy array or torch tensor (any shape) holding the tensor's blocks; `ggml_type` the ggml
    type id (0 = F32, 1 = F16, 8 = Q8_0, 12 = Q4_K, ...). Values are computed in float32, as
    `gguf.quants.dequantize` computes them, then cast; F16 / BF16 / F32 data asked for in its own dtype is copied.
    """
    raw = data if isinstance(data, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(data))
    raw = raw.reshape(-1)
    if raw.dtype != torch.uint8:
        raw = raw.view(torch.uint8)
    if raw.data_ptr() % 8:  # a file with an unusual general.alignment: realign before reinterpreting the bytes
        raw = raw.clone()
    shape = tuple(int(s) for s in shape)
    count = math.prod(shape)
    if ggml_type in _FLOAT_TYPES:
        stored = _FLOAT_TYPES[ggml_type]
        values = raw.view(stored)
        if values.numel() != count:
            raise ValueError(f"{values.numel()} {stored} values do not fill shape {shape}")
        values = values.reshape(shape)
        if dtype == stored:
            return values.clone()
        if stored == torch.float32:
            return values.to(dtype, copy=True)
        return values.float().to(dtype)
    layout = _type_layout(ggml_type)
    if layout is None:
        raise _UnsupportedType(f"unknown ggml type {ggml_type}")
    name, block, size = layout
    if count % block or raw.numel() != count // block * size:
        raise ValueError(f"{raw.numel()} bytes of {name} blocks do not hold shape {shape}")
    fn = _DEQUANT.get(ggml_type)
    if fn is None:
        gguf = _import_gguf(f"dequantizing {name} tensors")
        try:
            values = gguf.quants.dequantize(raw.numpy().reshape(-1, size), gguf.GGMLQuantizationType(ggml_type))
        except NotImplementedError:
            raise _UnsupportedType(f"ggml type {name} cannot be dequantized (not by fastformers nor by gguf)") \
                from None
        return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).reshape(shape).to(dtype)
    blocks = raw.view(-1, size)
    n = blocks.shape[0]
    if n <= _CHUNK_BLOCKS:
        out = fn(blocks)
    else:
        out = torch.empty((n, block), dtype=torch.float32)
        for start in range(0, n, _CHUNK_BLOCKS):
            out[start:start + _CHUNK_BLOCKS] = fn(blocks[start:start + _CHUNK_BLOCKS])
    out = out.view(shape)
    return out if dtype == torch.float32 else out.to(dtype)


# ---------------------------------------------------------------------------------------------------------------
# llama.cpp's rotary permutation of Q / K rows
# ---------------------------------------------------------------------------------------------------------------

def permute_qk(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """What llama.cpp's convert_hf_to_gguf applies to a Llama q_proj (n_head heads) / k_proj (n_head = KV heads)
    weight or bias: within each head, interleave the two rotary halves (HF's rotate-half layout -> GGML's pairs)."""
    rows = weight.shape[0]
    if rows % (2 * n_head):
        raise ValueError(f"cannot permute {rows} rows into {n_head} heads of rotary pairs")
    rest = tuple(weight.shape[1:])
    return weight.reshape(n_head, 2, rows // n_head // 2, *rest).transpose(1, 2).reshape(weight.shape)


def unpermute_qk(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """The inverse of `permute_qk`: GGUF q/k rows back to the Hugging Face layout."""
    rows = weight.shape[0]
    if rows % (2 * n_head):
        raise ValueError(f"cannot un-permute {rows} rows from {n_head} heads of rotary pairs")
    rest = tuple(weight.shape[1:])
    return weight.reshape(n_head, rows // n_head // 2, 2, *rest).transpose(1, 2).reshape(weight.shape)


# ---------------------------------------------------------------------------------------------------------------
# The file
# ---------------------------------------------------------------------------------------------------------------

class GGUFTensorInfo(NamedTuple):
    """One tensor of the file: GGUF name, shape in torch order, ggml type, and where its bytes are."""

    name: str
    shape: Tuple[int, ...]
    ggml_type: int
    type_name: str
    offset: int  # absolute, in the file
    nbytes: Optional[int]  # None for a type whose block layout is unknown (no `gguf` package)


# metadata value types: id -> (struct format, width)
_SCALARS = {0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4), 6: ("<f", 4),
            7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8)}
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1", 10: "<u8", 11: "<i8",
          12: "<f8"}


class _Truncated(Exception):
    pass


# Every count in the header is checked against the bytes left in the file before anything is built from it:
# the least each item can take (a tensor info: name length, n_dims, type, offset; a key-value: key length and
# value type plus a 1-byte value; a nested array: its type and length).
_MIN_TENSOR_INFO, _MIN_KV, _MIN_ARRAY = 24, 13, 12
_MAX_ARRAY_DEPTH = 8  # arrays of arrays: llama.cpp writes none; a cap instead of a RecursionError
_MAX_DIMS = 4  # GGML_MAX_DIMS


class _HeaderParser:
    """Sequential reads over the mapped file. A read past the end raises _Truncated (the field being read is
    `self.field`); a length or count larger than the rest of the file raises ValueError before anything
    is allocated for it."""

    def __init__(self, buf, size: int):
        self.buf, self.size, self.pos = buf, size, 0
        self.field = "the header"

    def take(self, n: int) -> int:
        start = self.pos
        end = start + n
        if end > self.size or n < 0:
            raise _Truncated()
        self.pos = end
        return start

    def unpack(self, fmt: str, width: int):
        return struct.unpack_from(fmt, self.buf, self.take(width))[0]

    def fits(self, count: int, width: int, what: str) -> None:
        """`count` items of at least `width` bytes must fit in the rest of the file."""
        left = self.size - self.pos
        if count * width > left:
            raise ValueError(f"{what} {count} needs at least {count * width} bytes, but only {left} remain in the "
                             "file")

    def string(self) -> str:
        n = self.unpack("<Q", 8)
        self.fits(n, 1, "string length")
        start = self.take(n)
        return self.buf[start:start + n].decode("utf-8")

    def value(self, vtype: int, depth: int = 0):
        if vtype in _SCALARS:
            fmt, width = _SCALARS[vtype]
            value = self.unpack(fmt, width)
            return bool(value) if vtype == 7 else value
        if vtype == 8:
            return self.string()
        if vtype == 9:
            etype = self.unpack("<I", 4)
            count = self.unpack("<Q", 8)
            if etype in _NUMPY:
                width = _SCALARS[etype][1]
                self.fits(count, width, "array length")
                start = self.take(count * width)
                values = np.frombuffer(self.buf, dtype=_NUMPY[etype], count=count, offset=start).tolist()
                return [bool(v) for v in values] if etype == 7 else values
            if etype == 8:
                self.fits(count, 8, "array length")
                buf, size, unpack = self.buf, self.size, struct.unpack_from
                pos, out = self.pos, []
                append = out.append
                try:  # (a vocabulary is ~50k strings: the bounds are checked once, after the loop)
                    for _ in range(count):
                        (n,) = unpack("<Q", buf, pos)
                        pos += 8
                        append(buf[pos:pos + n].decode("utf-8"))  # a slice past the end is only shorter
                        pos += n
                except struct.error:  # a length read past the end
                    raise _Truncated() from None
                if pos > size:
                    raise _Truncated()
                self.pos = pos
                return out
            if etype == 9:
                if depth >= _MAX_ARRAY_DEPTH:
                    raise ValueError(f"arrays nested more than {_MAX_ARRAY_DEPTH} deep")
                self.fits(count, _MIN_ARRAY, "array length")
                return [self.value(9, depth + 1) for _ in range(count)]
            raise ValueError(f"array of unknown metadata value type {etype}")
        raise ValueError(f"unknown metadata value type {vtype}")


# The type each known metadata key must have: `{arch}.` keys after the architecture prefix, the others whole.
# A file stating `block_count` as a string gets an error naming the key, not a TypeError deep in config code.
_POSITIVE_INT, _POSITIVE_NUMBER, _STRING, _INT, _BOOL = "a positive integer", "a positive number", "a string", \
    "an integer", "a boolean"
_STRING_LIST, _NUMBER_LIST, _INT_LIST = "a list of strings", "a list of numbers", "a list of integers"
_ARCH_KEY_TYPES = {
    "vocab_size": _POSITIVE_INT, "embedding_length": _POSITIVE_INT, "block_count": _POSITIVE_INT,
    "attention.head_count": _POSITIVE_INT, "attention.head_count_kv": _POSITIVE_INT, "context_length": _POSITIVE_INT,
    "rope.dimension_count": _POSITIVE_INT, "attention.key_length": _POSITIVE_INT,
    "rope.scaling.original_context_length": _POSITIVE_INT,
    "attention.layer_norm_rms_epsilon": _POSITIVE_NUMBER, "rope.freq_base": _POSITIVE_NUMBER,
    "rope.scaling.factor": _POSITIVE_NUMBER, "rope.scale_linear": _POSITIVE_NUMBER, "rope.scaling.type": _STRING,
}
_KEY_TYPES = {
    "general.architecture": _STRING, "general.name": _STRING, "general.alignment": _POSITIVE_INT,
    "tokenizer.ggml.model": _STRING, "tokenizer.ggml.pre": _STRING, "tokenizer.chat_template": _STRING,
    "tokenizer.ggml.tokens": _STRING_LIST, "tokenizer.ggml.merges": _STRING_LIST,
    "tokenizer.ggml.scores": _NUMBER_LIST, "tokenizer.ggml.token_type": _INT_LIST,
    "tokenizer.ggml.add_bos_token": _BOOL, "tokenizer.ggml.add_eos_token": _BOOL,
    **{f"tokenizer.ggml.{t}_token_id": _INT for t in ("bos", "eos", "unknown", "padding", "separator", "mask", "cls")},
}
_MAX_SIZE = 1 << 40  # far above any real size / count / length, far below what would be allocated from it


def _has_type(value: Any, kind: str) -> bool:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == _POSITIVE_INT:
        return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _MAX_SIZE
    if kind == _POSITIVE_NUMBER:
        return number and math.isfinite(value) and value > 0
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _BOOL:
        return isinstance(value, bool)
    if kind == _STRING:
        return isinstance(value, str)
    if not isinstance(value, list):
        return False
    # a GGUF array has one element type (the parser returns it homogeneous): its first element tells (checking
    # all 49k tokens of a vocabulary cost 70 ms per read)
    first = value[0] if value else None
    if kind == _STRING_LIST:
        return not value or isinstance(first, str)
    if kind == _NUMBER_LIST:
        return not value or isinstance(first, (int, float)) and not isinstance(first, bool)
    return not value or isinstance(first, int) and not isinstance(first, bool)  # _INT_LIST


def _check_metadata_types(path: str, metadata: Dict[str, Any]) -> None:
    """Refuse a known key of the wrong type (naming the key and the value), and tokenizer arrays that disagree
    in length. (Special token ids outside the vocabulary are refused when a tokenizer is built from them:
    fastformers.tokenization.gguf.)"""
    arch = metadata.get("general.architecture")
    expected = dict(_KEY_TYPES)
    if isinstance(arch, str):
        expected.update({f"{arch}.{k}": kind for k, kind in _ARCH_KEY_TYPES.items()})
    for key, kind in expected.items():
        if key not in metadata:
            continue
        value = metadata[key]
        # per-layer lists of sizes (feed_forward_length, head_count, ...) are refused later, by name, in _key
        ok = _has_type(value, kind) or (key.startswith(f"{arch}.") and isinstance(value, list)
                                         and all(_has_type(v, kind) for v in value))
        if not ok:
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise GGUFError(f"{path}: metadata key {key!r} must be {kind}, got {type(value).__name__} {shown}")
    tokens = metadata.get("tokenizer.ggml.tokens")
    if tokens is not None:
        for key in ("tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
            if key in metadata and len(metadata[key]) != len(tokens):
                raise GGUFError(f"{path}: metadata key {key!r} has {len(metadata[key])} entries, but "
                                f"tokenizer.ggml.tokens has {len(tokens)}")


class GGUFCheckpoint:
    """A memory-mapped GGUF file: `metadata` (key -> value), `tensors` (GGUF name -> GGUFTensorInfo), and the
    config and weights transformers derives from them (its tokenizer: fastformers.tokenization.gguf). Use
    `read_gguf(path)` to open one."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"no GGUF file at {self.path}")
        self.file_size = os.path.getsize(self.path)
        if self.file_size < 4:
            raise GGUFError(f"{self.path} is not a GGUF file: it is only {self.file_size} bytes long")
        with open(self.path, "rb") as f:
            magic = f.read(4)
            if magic != GGUF_MAGIC:
                raise GGUFError(f"{self.path} is not a GGUF file: it starts with {magic!r}, not {GGUF_MAGIC!r}")
            self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        try:
            self._parse()
            del self._parser
        except _Truncated:
            parser = self.__dict__.pop("_parser", None)
            field = parser.field if parser is not None else "its GGUF header"
            self.close()
            raise GGUFError(f"{self.path} is truncated: {field} ends past the end of the file "
                            f"({self.file_size} bytes)") from None
        except UnicodeDecodeError as e:
            parser = self.__dict__.pop("_parser", None)
            field = parser.field if parser is not None else "a string"
            self.close()
            raise GGUFError(f"{self.path}: corrupt GGUF header ({field}: a string is not UTF-8: {e})") from None
        except GGUFError:
            self.close()
            raise
        except (ValueError, OverflowError, MemoryError) as e:
            self.close()
            raise GGUFError(f"{self.path}: corrupt GGUF header ({e})") from None

    # -- parsing ----------------------------------------------------------------------------------------------
    def _read_name(self, p: "_HeaderParser", what: str, field: str) -> str:
        """The name of a metadata key or tensor (`what`), read as `field` (what a truncation error names)."""
        p.field = field
        try:
            return p.string()
        except ValueError as e:
            raise GGUFError(f"{self.path}: cannot read the name of {what}: {e}") from None

    def _parse(self) -> None:
        p = self._parser = _HeaderParser(self._mmap, self.file_size)
        p.take(4)
        version = p.unpack("<I", 4)
        if version not in (2, 3):
            swapped = struct.unpack("<I", struct.pack(">I", version))[0]
            if swapped in (1, 2, 3):
                raise GGUFError(f"{self.path} is a big-endian GGUF file, which is not supported")
            raise GGUFError(f"{self.path} is GGUF version {version}; versions 2 and 3 are supported")
        self.version = version
        p.field = "the tensor and key-value counts"
        n_tensors = p.unpack("<Q", 8)
        n_kv = p.unpack("<Q", 8)
        for count, least, what in ((n_kv, _MIN_KV, "key-value count"), (n_tensors, _MIN_TENSOR_INFO, "tensor count")):
            left = p.size - p.pos
            if count * least > left:
                raise GGUFError(f"{self.path} is truncated or corrupt: the header's {what} is {count}, which needs "
                                f"at least {count * least} bytes, but only {left} remain in the file")
        metadata: Dict[str, Any] = {}
        for i in range(n_kv):
            key = self._read_name(p, f"metadata key #{i}", f"metadata key #{i}")
            p.field = f"metadata key {key!r}"
            if key in metadata:
                raise GGUFError(f"{self.path}: metadata key {key!r} appears twice")
            vtype = p.unpack("<I", 4)
            try:
                metadata[key] = p.value(vtype)
            except ValueError as e:
                raise GGUFError(f"{self.path}: cannot read metadata key {key!r}: {e}") from None
        _check_metadata_types(self.path, metadata)
        self.metadata = metadata
        infos = []
        seen = set()
        for i in range(n_tensors):
            name = self._read_name(p, f"tensor #{i}", f"tensor info #{i}")
            p.field = f"tensor info {name!r}"
            if name in seen:
                raise GGUFError(f"{self.path}: tensor {name!r} appears twice")
            seen.add(name)
            n_dims = p.unpack("<I", 4)
            if n_dims > _MAX_DIMS:
                raise GGUFError(f"{self.path}: tensor {name!r} claims {n_dims} dimensions (at most {_MAX_DIMS})")
            dims = struct.unpack_from(f"<{n_dims}Q", self._mmap, p.take(8 * n_dims))
            if 0 in dims:  # an empty weight is no weight: refused rather than carried into the model
                raise GGUFError(f"{self.path}: tensor {name!r} has a dimension of 0 (dims {list(dims)})")
            type_id = p.unpack("<I", 4)
            offset = p.unpack("<Q", 8)
            infos.append((name, tuple(reversed(dims)), type_id, offset))
        alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0:
            raise GGUFError(f"{self.path}: invalid general.alignment {alignment!r}")
        self.alignment = alignment
        self.data_offset = (p.pos + alignment - 1) // alignment * alignment
        tensors: Dict[str, GGUFTensorInfo] = {}
        for name, shape, type_id, offset in infos:
            layout = _type_layout(type_id)
            count = math.prod(shape)  # Python ints: no overflow to hide a lying shape
            start = self.data_offset + offset
            if start > self.file_size:
                raise GGUFError(f"{self.path}: tensor {name!r} has data offset {offset}, past the end of the file "
                                f"({self.file_size} bytes)")
            nbytes = None
            if layout is not None:
                type_name, block, size = layout
                if shape and shape[-1] % block:
                    raise GGUFError(f"{self.path}: tensor {name!r} of type {type_name} has rows of {shape[-1]} "
                                    f"values, not a multiple of its block size {block}")
                nbytes = count // block * size
                if nbytes > self.file_size:
                    raise GGUFError(f"{self.path}: tensor {name!r} claims shape {list(shape)} ({type_name}, "
                                    f"{nbytes} bytes), more than the whole file ({self.file_size} bytes)")
                if start + nbytes > self.file_size:
                    raise GGUFError(f"{self.path} is truncated: tensor {name!r} ({type_name}, shape {list(shape)}) "
                                    f"ends at byte {start + nbytes}, past the end of the file "
                                    f"({self.file_size} bytes)")
            elif count > 8 * self.file_size:  # no known type stores an element in under a bit
                raise GGUFError(f"{self.path}: tensor {name!r} claims shape {list(shape)} ({count} values), more than "
                                f"the whole file ({self.file_size} bytes) can hold")
            tensors[name] = GGUFTensorInfo(name, shape, type_id, _type_name(type_id), start, nbytes)
        self.tensors = tensors
        if "general.architecture" not in metadata:
            raise GGUFError(f"{self.path}: no general.architecture in the GGUF metadata")

    # -- resources --------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the memory map (tensors already returned stay valid: they own their memory)."""
        mm = self.__dict__.pop("_mmap", None)
        if mm is not None:
            try:
                mm.close()
            except BufferError:  # a view is still alive somewhere; the map is released with it
                pass

    def __enter__(self) -> "GGUFCheckpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"GGUFCheckpoint({self.path!r}, architecture={self.architecture!r}, "
                f"tensors={len(self.tensors)}, version={self.version})")

    # -- metadata ---------------------------------------------------------------------------------------------
    @property
    def architecture(self) -> str:
        """general.architecture as the file states it ("llama", "qwen2", ...)."""
        return self.metadata["general.architecture"]

    @property
    def model_type(self) -> str:
        """The transformers model_type of the file (transformers' rule: a "llama" file is "mistral" only when
        general.name is exactly "mistral")."""
        arch = self.architecture
        if arch == "llama" and self.metadata.get("general.name") == "mistral":
            return "mistral"
        return arch

    def _check_architecture(self) -> None:
        if self.architecture not in SUPPORTED_ARCHITECTURES:
            raise GGUFError(f"{self.path}: GGUF architecture {self.architecture!r} is not supported by fastformers; "
                            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}")

    def _key(self, name: str, default: Any = None, required: bool = False):
        key = f"{self.architecture}.{name}"
        if key not in self.metadata:
            if required:
                raise GGUFError(f"{self.path}: GGUF metadata has no {key!r}")
            return default
        value = self.metadata[key]
        if isinstance(value, list):
            raise GGUFError(f"{self.path}: {key} is a per-layer list {value[:4]}..., which is not supported")
        return value

    def config_dict(self) -> Dict[str, Any]:
        """The config.json transformers derives from the metadata (its AutoConfig.from_pretrained(dir,
        gguf_file=...) gives the config class of `model_type` built from these keys)."""
        self._check_architecture()
        md = self.metadata
        cfg: Dict[str, Any] = {"model_type": self.model_type}
        for key, name in (("vocab_size", "vocab_size"), ("embedding_length", "hidden_size"),
                          ("feed_forward_length", "intermediate_size"), ("block_count", "num_hidden_layers"),
                          ("attention.head_count", "num_attention_heads"),
                          ("attention.head_count_kv", "num_key_value_heads"),
                          ("context_length", "max_position_embeddings"),
                          ("attention.layer_norm_rms_epsilon", "rms_norm_eps")):
            value = self._key(key)
            if value is not None:
                cfg[name] = value
        for key in ("embedding_length", "block_count", "attention.head_count"):
            self._key(key, required=True)
        self._check_sizes_against_tensors(cfg)
        if "vocab_size" not in cfg:
            tokens = md.get("tokenizer.ggml.tokens")
            if tokens is not None:
                cfg["vocab_size"] = len(tokens)
        if self.architecture in ("llama", "mistral"):  # rope.dimension_count is the head size for these
            head_dim = self._key("rope.dimension_count")
            if head_dim is not None:
                cfg["head_dim"] = head_dim
        elif self.architecture == "qwen3":  # Qwen3's head size is independent of hidden_size / heads
            head_dim = self._key("attention.key_length")
            if head_dim is not None:
                cfg["head_dim"] = head_dim
        rope = {"rope_type": "default", "rope_theta": float(self._key("rope.freq_base", 10000.0))}
        scaling = self._key("rope.scaling.type")
        factor = self._key("rope.scaling.factor")
        if scaling is None and self._key("rope.scale_linear") not in (None, 1.0):  # older llama.cpp files
            scaling, factor = "linear", self._key("rope.scale_linear")
        if scaling not in (None, "none") and factor is not None:
            rope.update(rope_type=scaling, factor=float(factor))
            original = self._key("rope.scaling.original_context_length")
            if original is not None and scaling != "linear":
                rope["original_max_position_embeddings"] = original
        cfg["rope_parameters"] = rope
        cfg["tie_word_embeddings"] = "output.weight" not in self.tensors
        for key, name in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"),
                          ("padding_token_id", "pad_token_id"), ("unknown_token_id", "unk_token_id")):
            value = md.get(f"tokenizer.ggml.{key}")
            if value is not None:
                cfg[name] = value
        return cfg

    def _check_sizes_against_tensors(self, cfg: Dict[str, Any]) -> None:
        """The model the metadata describes is the one the tensors hold: a lying block_count / vocab_size /
        embedding_length would otherwise make the model allocate far more than the file justifies."""
        blocks = {int(m.group(1)) for m in map(re.compile(r"blk\.(\d+)\.").match, self.tensors) if m}
        if blocks and cfg["num_hidden_layers"] > max(blocks) + 1:
            raise GGUFError(f"{self.path}: metadata key '{self.architecture}.block_count' is "
                            f"{cfg['num_hidden_layers']}, but the file holds tensors for {max(blocks) + 1} blocks")
        embedding = self.tensors.get("token_embd.weight")
        if embedding is not None and len(embedding.shape) == 2:
            for key, name, size in (("embedding_length", "hidden_size", embedding.shape[1]),
                                    ("vocab_size", "vocab_size", embedding.shape[0])):
                if name in cfg and cfg[name] != size:
                    source = f"metadata key '{self.architecture}.{key}'" if self._key(key) is not None else \
                        "the length of tokenizer.ggml.tokens"
                    raise GGUFError(f"{self.path}: {source} is {cfg[name]}, but token_embd.weight has shape "
                                    f"{list(embedding.shape)}")

    # -- weights ----------------------------------------------------------------------------------------------
    def _raw(self, info: GGUFTensorInfo) -> torch.Tensor:
        mm = self.__dict__.get("_mmap")
        if mm is None:
            raise ValueError(f"{self.path}: the checkpoint was closed")
        return torch.frombuffer(mm, dtype=torch.uint8, count=info.nbytes, offset=info.offset)

    def tensor(self, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """One tensor by its GGUF name, dequantized, as stored (no Q/K un-permutation)."""
        if name not in self.tensors:
            raise KeyError(f"{self.path} has no tensor named {name!r}")
        info = self.tensors[name]
        if info.ggml_type not in _FLOAT_TYPES and info.ggml_type not in _DEQUANT:
            natives = ", ".join(NATIVE_QUANT_TYPES)
            _import_gguf(f"{self.path}: tensor {name!r} has quantization type {info.type_name}, which fastformers "
                         f"dequantizes itself only for {natives}; other types")
            if info.nbytes is None:
                raise GGUFError(f"{self.path}: tensor {name!r} has quantization type {info.type_name}, which cannot "
                                f"be dequantized (supported: {natives}, and the types gguf.quants dequantizes)")
        try:
            return dequantize(self._raw(info), info.ggml_type, info.shape, dtype)
        except _UnsupportedType:
            raise GGUFError(f"{self.path}: tensor {name!r} has quantization type {info.type_name}, which cannot be "
                            f"dequantized (supported: {', '.join(NATIVE_QUANT_TYPES)}, and the types gguf.quants "
                            "dequantizes)") from None

    def hf_name(self, gguf_name: str) -> Optional[str]:
        """The Hugging Face parameter name of a GGUF tensor, or None for tensors transformers does not load
        (e.g. llama.cpp's precomputed rope_freqs)."""
        return _hf_name(gguf_name, self.architecture)

    def hf_tensor_types(self) -> Dict[str, str]:
        """Hugging Face name -> ggml type name ("Q4_1", "F32", ...) of every tensor the model uses."""
        return {hf: info.type_name for name, info in self.tensors.items()
                if (hf := _hf_name(name, self.architecture)) is not None}

    def packed_tensor(self, is_wanted: Callable[[str], bool], dtype: torch.dtype = torch.float32):
        """The tensor whose Hugging Face name `is_wanted`, kept packed (a QuantizedWeight, scales in `dtype`) when it
        is a Q8_0 / Q4_0 / Q4_1 / Q4_K / Q6_K matrix the model uses unpermuted (not a rotary Q/K projection); else
        None."""
        for name, info in self.tensors.items():
            hf = _hf_name(name, self.architecture)
            if hf is None or not is_wanted(hf):
                continue
            if info.type_name not in _KEPT_QUANT_TYPES or len(info.shape) != 2 or ".attn_q." in name or \
                    ".attn_k." in name:
                return None
            from ..quantization.gguf import gguf_quantized_weight  # noqa: PLC0415 - optional path

            return gguf_quantized_weight(self._raw(info), info.ggml_type, info.shape, dtype,
                                         f"{self.path}: tensor {name!r}")
        return None

    def iter_state_dict(self, dtype: torch.dtype = torch.float32,
                        keep_quantized: Optional[Callable[[str], bool]] = None) -> Iterator[Tuple[str, Any]]:
        """(Hugging Face name, tensor) for every tensor the model uses, in file order, one at a time.

        keep_quantized: a predicate on Hugging Face names; a Q8_0 / Q4_0 / Q4_1 / Q4_K / Q6_K matrix it accepts comes
        as a packed `QuantizedWeight` (fastformers.quantization.gguf) with scales in `dtype`, not dequantized."""
        self._check_architecture()
        permute = self.architecture == "llama"
        if permute:
            cfg = self.config_dict()
            n_head = cfg["num_attention_heads"]
            n_kv = cfg.get("num_key_value_heads", n_head)
        for name, info in self.tensors.items():
            hf = _hf_name(name, self.architecture)
            if hf is None:
                logger.info("%s: tensor %s is not part of the %s model; skipped", self.path, name,
                            self.model_type)
                continue
            heads = (n_head if ".attn_q." in name else n_kv if ".attn_k." in name else None) if permute else None
            if keep_quantized is not None and info.type_name in _KEPT_QUANT_TYPES and len(info.shape) == 2 \
                    and keep_quantized(hf):
                from ..quantization.gguf import gguf_quantized_weight, map_rows  # noqa: PLC0415 - optional path

                value = gguf_quantized_weight(self._raw(info), info.ggml_type, info.shape, dtype,
                                              f"{self.path}: tensor {name!r}")
                if heads is not None:
                    value = map_rows(value, lambda t, h=heads: unpermute_qk(t, h).contiguous())
                yield hf, value
                continue
            value = self.tensor(name, dtype)
            if heads is not None:
                value = unpermute_qk(value, heads).contiguous()
            yield hf, value

    def state_dict(self, dtype: torch.dtype = torch.float32) -> Dict[str, torch.Tensor]:
        """Hugging Face parameter name -> dequantized tensor (float32 unless asked otherwise), for every tensor
        of the file the model uses (lm_head.weight only when the file has output.weight)."""
        return dict(self.iter_state_dict(dtype))

    # -- tokenizer metadata (the tokenizer itself: fastformers.tokenization.gguf) -----------------------------
    @property
    def chat_template(self) -> Optional[str]:
        return self.metadata.get("tokenizer.chat_template")


def read_gguf(path: str | os.PathLike) -> GGUFCheckpoint:
    """Open a GGUF file (memory-mapped; only the metadata is read)."""
    return GGUFCheckpoint(path)


# ---------------------------------------------------------------------------------------------------------------
# Tensor names
# ---------------------------------------------------------------------------------------------------------------

_TOP_LEVEL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_BLOCK = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_QWEN3_BLOCK = {"attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}
_BLOCK_RE = re.compile(r"blk\.(\d+)\.([a-z_0-9]+)\.(weight|bias)")


def _hf_name(gguf_name: str, architecture: str) -> Optional[str]:
    match = _BLOCK_RE.fullmatch(gguf_name)
    if match:
        layer, part, kind = match.groups()
        target = _BLOCK.get(part) or (_QWEN3_BLOCK.get(part) if architecture == "qwen3" else None)
        if target is None or (kind == "bias" and part.endswith("norm")):
            return None
        return f"model.layers.{layer}.{target}.{kind}"
    base, _, kind = gguf_name.rpartition(".")
    if base in _TOP_LEVEL and kind in ("weight", "bias"):
        return f"{_TOP_LEVEL[base]}.{kind}"
    return None
