"""Quantized weights and the quantized matmul op: the packed format, quantize / dequantize, and the
reference `quantized_linear` (dequantize, then a dense matmul) that every kernel is tested against.

The format (one `QuantizedWeight` per (out_features, in_features) weight matrix):

- the input dimension is cut into groups of `group_size` columns (None: one group per row, i.e. per
  output channel); the last group may be shorter. groups = ceil(in_features / group_size).
- `scales` (out, groups) and, when present, `mins` (out, groups), in the model's float dtype. A weight
  is `w[o, k] = q[o, k] * scales[o, k // group_size] + mins[o, k // group_size]` (no min: `q * scale`).
  Integer zero points z of other formats (GPTQ, AWQ, GGUF Q4_0) become `mins = -z * scales`.
- bits=8: `qweight` int8 (out, in), q in [-127, 127] (symmetric, no mins) or, asymmetric, in
  [-128, 127] with mins.
- bits=4: `qweight` uint8 (out, ceil(in / 2)): column 2j in the low nibble of byte j, column 2j+1 in
  the high nibble (a padding nibble of 0 after an odd last column); q in [0, 15]; always with mins
  (symmetric quantization stores mins = -8 * scales).
- method "w8a8" (bits 8, symmetric, per output channel): activations are quantized per token at run
  time, `x ~ xq * sx` with `sx = max|x_row| / 127`, and the product accumulates int8 x int8 in int32.
- method "blockwise_a8" (any of the formats above, llama.cpp's arithmetic): activations are quantized at run time
  per token and block of 32 columns (`sx = max|x_block| / 127`, in float32), and the result is that of the
  dequantized activations `xq * sx` times the dequantized weight; the integer products sum exactly.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from . import native
from .backend import op

METHODS = ("weight_only", "w8a8", "blockwise_a8")


@dataclass(eq=False)
class QuantizedWeight:
    qweight: torch.Tensor
    scales: torch.Tensor
    mins: Optional[torch.Tensor]
    bits: int
    group_size: Optional[int]
    in_features: int
    method: str = "weight_only"

    @property
    def out_features(self) -> int:
        return self.qweight.shape[0]

    @property
    def shape(self) -> torch.Size:
        """The shape of the float weight it stands for: (out_features, in_features)."""
        return torch.Size((self.out_features, self.in_features))

    @property
    def dtype(self) -> torch.dtype:
        """The float dtype it dequantizes to (that of its scales)."""
        return self.scales.dtype

    @property
    def device(self) -> torch.device:
        return self.qweight.device

    @property
    def group(self) -> int:
        """Columns per group (in_features when there is one group per row)."""
        return self.group_size or self.in_features

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.qweight, self.scales, self.mins) if t is not None)

    def check(self, name: str = "weight") -> "QuantizedWeight":
        """Raise a clear error (naming `name`) when the tensors do not form a valid weight of this format."""
        if self.bits not in (4, 8):
            raise ValueError(f"{name}: bits={self.bits!r} is not supported; supported: 4, 8")
        if self.method not in METHODS:
            raise ValueError(f"{name}: method={self.method!r} is not supported; supported: {', '.join(METHODS)}")
        if self.method == "w8a8" and (self.bits != 8 or self.mins is not None or self.group_size is not None):
            raise ValueError(f"{name}: w8a8 needs bits=8, symmetric, one scale per output channel")
        if self.group_size is not None and (not isinstance(self.group_size, int) or self.group_size <= 0):
            raise ValueError(f"{name}: group_size={self.group_size!r} must be a positive int or None")
        out, groups = self.out_features, math.ceil(self.in_features / self.group)
        want = (out, self.in_features) if self.bits == 8 else (out, (self.in_features + 1) // 2)
        dtype = torch.int8 if self.bits == 8 else torch.uint8
        if self.qweight.dtype != dtype or tuple(self.qweight.shape) != want:
            raise ValueError(f"{name}: qweight must be {dtype} of shape {want} for {self.bits}-bit weights of "
                             f"{self.in_features} inputs, got {self.qweight.dtype} {tuple(self.qweight.shape)}")
        for part, tensor in (("scales", self.scales), ("mins", self.mins)):
            if tensor is None:
                if part == "scales" or self.bits == 4:
                    raise ValueError(f"{name}: {part} are missing ({self.bits}-bit weights need them)")
                continue
            if tuple(tensor.shape) != (out, groups) or not tensor.is_floating_point():
                raise ValueError(f"{name}: {part} must be a float tensor of shape {(out, groups)} "
                                 f"(out_features, groups of {self.group}), got {tensor.dtype} {tuple(tensor.shape)}")
        return self

    def to(self, *args, **kwargs) -> "QuantizedWeight":
        """Move to a device and/or cast the scales to a float dtype (the packed ints keep theirs)."""
        device = next((a for a in args if isinstance(a, (str, torch.device))), kwargs.get("device"))
        dtype = next((a for a in args if isinstance(a, torch.dtype)), kwargs.get("dtype"))

        def move(t, is_float):
            return None if t is None else t.to(device=device, dtype=dtype if is_float else None)

        return QuantizedWeight(move(self.qweight, False), move(self.scales, True), move(self.mins, True), self.bits,
                               self.group_size, self.in_features, self.method)


def _expand(groupwise: torch.Tensor, group: int, in_features: int) -> torch.Tensor:
    """(out, groups) -> (out, in_features): each group's value repeated over its columns."""
    return groupwise.repeat_interleave(group, dim=1)[:, :in_features]


def unpack_int4(packed: torch.Tensor, in_features: int) -> torch.Tensor:
    """uint8 (out, ceil(in/2)) -> uint8 (out, in) codes in [0, 15]."""
    low, high = packed & 0xF, packed >> 4
    return torch.stack((low, high), dim=-1).flatten(-2)[..., :in_features]


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes (out, in) in [0, 15] -> (out, ceil(in/2)), column 2j low nibble, 2j+1 high nibble."""
    if codes.shape[-1] % 2:
        codes = F.pad(codes, (0, 1))
    codes = codes.to(torch.uint8)
    return codes[..., 0::2] | (codes[..., 1::2] << 4)


def quantize_weight(weight: torch.Tensor, bits: int = 8, group_size: Optional[int] = None,
                    symmetric: Optional[bool] = None, method: str = "weight_only") -> QuantizedWeight:
    """Quantize a float weight (out_features, in_features) round-to-nearest.

    bits 8 or 4; group_size None for one scale per output channel; symmetric None picks the usual
    choice (int8 symmetric, int4 asymmetric with a min per group); method "weight_only" or "w8a8"
    (int8, symmetric, per channel). Scales (and mins) keep the weight's float dtype; the arithmetic
    runs in float32.
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or not weight.is_floating_point():
        raise ValueError(f"quantize_weight: weight must be a 2-D float tensor, got "
                         f"{getattr(weight, 'dtype', type(weight).__name__)} {tuple(getattr(weight, 'shape', ()))}")
    if bits not in (4, 8):
        raise ValueError(f"quantize_weight: bits={bits!r} is not supported; supported: 4, 8")
    if method not in METHODS:
        raise ValueError(f"quantize_weight: method={method!r} is not supported; supported: {', '.join(METHODS)}")
    if group_size is not None and (not isinstance(group_size, int) or group_size <= 0):
        raise ValueError(f"quantize_weight: group_size={group_size!r} must be a positive int or None")
    if method == "w8a8":
        if bits != 8 or group_size is not None or symmetric is False:
            raise ValueError("quantize_weight: method='w8a8' needs bits=8, group_size=None, symmetric weights")
        symmetric = True
    if symmetric is None:
        symmetric = bits == 8
    out, n = weight.shape
    group = group_size or n
    groups = math.ceil(n / group)
    w = F.pad(weight.float(), (0, groups * group - n)).view(out, groups, group)
    real = (torch.arange(groups * group, device=w.device) < n).view(1, groups, group)
    if symmetric:
        qmax = 127 if bits == 8 else 7
        absmax = w.abs().amax(-1)
        scales = (absmax / qmax).clamp_min(torch.finfo(torch.float32).tiny)
        q = torch.round(w / scales[..., None]).clamp(-qmax - (bits == 4), qmax)
        mins = None
        if bits == 4:
            q, mins = q + 8, -8 * scales
    else:
        qmax = 2 ** bits - 1
        lo = torch.where(real, w, torch.inf).amin(-1)
        hi = torch.where(real, w, -torch.inf).amax(-1)
        scales = ((hi - lo) / qmax).clamp_min(torch.finfo(torch.float32).tiny)
        q = torch.round((w - lo[..., None]) / scales[..., None]).clamp(0, qmax)
        mins = lo
        if bits == 8:
            q, mins = q - 128, lo + 128 * scales
    q = q.view(out, groups * group)[:, :n]
    qweight = q.to(torch.int8) if bits == 8 else pack_int4(q.to(torch.uint8))
    dtype = weight.dtype
    return QuantizedWeight(qweight, scales.to(dtype), None if mins is None else mins.to(dtype), bits, group_size, n,
                           method)


def dequantize_weight(qw: QuantizedWeight, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """The float weight (out_features, in_features) a QuantizedWeight stands for (in its scales' dtype,
    or `dtype`); computed in float32."""
    codes = qw.qweight if qw.bits == 8 else unpack_int4(qw.qweight, qw.in_features)
    w = codes.float() * _expand(qw.scales.float(), qw.group, qw.in_features)
    if qw.mins is not None:
        w = w + _expand(qw.mins.float(), qw.group, qw.in_features)
    return w.to(dtype or qw.dtype)


def with_half_scales(qw: QuantizedWeight) -> QuantizedWeight:
    """The same weight with float16 copies of its scales and mins when they hold float16 values exactly (GGUF's
    Q8_0 / Q4_0 / Q4_1 store them so), else `qw` itself. The CPU kernels read them as they are: for a group of 32
    int4 codes (16 bytes), 4 bytes of scale and min instead of 8, a sixth fewer bytes per token. Internal: a model's
    weights keep their float32 scales (what state_dict and dequantize_weight see)."""
    parts = [t for t in (qw.scales, qw.mins) if t is not None]
    if qw.scales.dtype != torch.float32 or not all(torch.equal(t.half().float(), t) for t in parts):
        return qw
    return QuantizedWeight(qw.qweight, qw.scales.half(), None if qw.mins is None else qw.mins.half(), qw.bits,
                           qw.group_size, qw.in_features, qw.method)


def quantize_activations(x: torch.Tensor):
    """Per-token symmetric int8: (xq int8, sx float32 (..., 1)) with x ~ xq * sx (W8A8's activations)."""
    sx = (x.float().abs().amax(-1, keepdim=True) / 127).clamp_min(torch.finfo(torch.float32).tiny)
    return torch.round(x.float() / sx).clamp(-127, 127).to(torch.int8), sx


def quantize_activations_blockwise(x: torch.Tensor, block: int = 32) -> torch.Tensor:
    """The dequantized activations of method "blockwise_a8": x quantized per block of `block` columns to int8 in
    float32 (`sx = max|x_block| / 127`, `xq = round(x / sx)`), returned as xq * sx in x's dtype (exact in float64)."""
    k = x.shape[-1]
    xf = F.pad(x.float(), (0, -k % block))
    xb = xf.view(*xf.shape[:-1], xf.shape[-1] // block, block)  # not -1: ambiguous for no rows
    sx = (xb.abs().amax(-1, keepdim=True) / 127).clamp_min(torch.finfo(torch.float32).tiny)
    xq = torch.round(xb / sx).clamp(-127, 127)
    return (xq.to(x.dtype) * sx.to(x.dtype)).flatten(-2)[..., :k]


# int8 products of up to this many columns sum below 2^24 (1024 * 127 * 127 = 16,516,096): exact in float32, in
# any order of summation
_EXACT_FLOAT_COLUMNS = 1024


@functools.lru_cache(maxsize=None)
def int_mm_is_fast() -> bool:
    """Whether torch._int_mm runs on integer dot-product instructions here (AVX-512 VNNI or AMX). Without them,
    oneDNN's int8 GEMM is ~20x slower than its float32 one (measured on an AVX2-only EPYC: 325 ms against 16 ms for
    (1024, 384) x (384, 1536)). Off Linux (no /proc/cpuinfo), torch._int_mm is trusted."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return "avx512_vnni" in flags or "amx_int8" in flags
    except OSError:
        pass
    return True


def int8_matmul(xq: torch.Tensor, wq: torch.Tensor) -> torch.Tensor:
    """xq (M, K) int8 times wq (N, K) int8 transposed, summed exactly in int32: torch._int_mm where it is fast
    (int_mm_is_fast), else float32 GEMMs over blocks of at most 1024 columns (every partial sum an integer below
    2^24, so exact), added in int32: the same sums."""
    if int_mm_is_fast():
        return torch._int_mm(xq, wq.t())
    acc = None
    for k0 in range(0, xq.shape[1], _EXACT_FLOAT_COLUMNS):
        k1 = k0 + _EXACT_FLOAT_COLUMNS
        part = torch.mm(xq[:, k0:k1].float(), wq[:, k0:k1].float().t()).to(torch.int32)
        acc = part if acc is None else acc.add_(part)
    return acc if acc is not None else torch.zeros(xq.shape[0], wq.shape[0], dtype=torch.int32)


def quantized_linear_reference(x: torch.Tensor, qw: QuantizedWeight, bias: Optional[torch.Tensor] = None):
    """x @ W^T + b for a quantized W: dequantize, then a dense matmul (W8A8: quantize x per token first,
    integer products accumulated exactly in float64; blockwise_a8: x quantized per block of 32 first)."""
    if qw.method == "blockwise_a8":
        return F.linear(quantize_activations_blockwise(x), dequantize_weight(qw, x.dtype), bias)
    if qw.method == "w8a8":
        xq, sx = quantize_activations(x)
        acc = xq.double() @ qw.qweight.double().t()  # exact: |sum| < 2^53
        out = (acc * sx.double() * qw.scales.double().view(1, -1)).to(x.dtype)
        return out if bias is None else out + bias
    return F.linear(x, dequantize_weight(qw, x.dtype), bias)


quantized_linear = op(quantized_linear_reference)
quantized_linear.register_lazy("triton", "fastformers.kernels.quant_matmul")


def cpu_kernel_layout(qw: QuantizedWeight) -> bool:
    """Whether fastformers._C's kernels read this weight's layout: in_features a multiple of 32, groups of a multiple
    of 32 columns, or of 16 for 8-bit codes (GGUF's Q6_K)."""
    return qw.in_features % 32 == 0 and (qw.group % 32 == 0 or (qw.group == 16 and qw.bits == 8))


def _cpu_unsupported(x: torch.Tensor, qw: QuantizedWeight, bias: Optional[torch.Tensor] = None) -> Optional[str]:
    if qw.method == "w8a8":
        return None if hasattr(torch, "_int_mm") else "this torch has no torch._int_mm"
    reason = native.load_error()
    if reason is not None:
        return f"weight-only and blockwise_a8 formats run on fastformers._C, which is unavailable: {reason}"
    group = qw.group
    if x.dtype != torch.float32 or qw.scales.dtype not in (torch.float32, torch.float16):
        return (f"the cpu kernels take float32 activations and float32 or float16 scales (got {x.dtype}, scales "
                f"{qw.scales.dtype})")
    if not cpu_kernel_layout(qw):
        return (f"the cpu kernels need in_features ({qw.in_features}) and the group ({group}) to be multiples of 32 "
                f"(or groups of 16 for 8-bit codes)")
    return None


@quantized_linear.register("cpu", unsupported=_cpu_unsupported)
def quantized_linear_cpu(x: torch.Tensor, qw: QuantizedWeight, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Weight-only int8 / int4 (fastformers' formats and GGUF Q8_0 / Q4_0 / Q4_1 / Q4_K / Q6_K kept packed): the compiled
    kernel (csrc/cpu/quant_linear.cpp) reads the packed codes, activations stay float32. blockwise_a8: the same
    codes against activations quantized per block of 32 (csrc/cpu/quant_linear_a8.cpp: VNNI integer dot products).

    W8A8: the int8 x int8 products summed in int32 (int8_matmul: torch._int_mm on CPUs with VNNI or AMX, exact
    float32 GEMMs elsewhere) -- the same integer sums the reference accumulates in float64 -- then scaled in
    float32."""
    if qw.method == "weight_only":
        return torch.ops.fastformers_ext.quant_linear(x, qw.qweight, qw.scales, qw.mins, qw.bits, qw.group, bias)
    if qw.method == "blockwise_a8":
        return torch.ops.fastformers_ext.quant_linear_a8(x, qw.qweight, qw.scales, qw.mins, qw.bits, qw.group, bias)
    xq, sx = quantize_activations(x)
    acc = int8_matmul(xq.reshape(-1, qw.in_features), qw.qweight)
    out = (acc.float() * sx.reshape(-1, 1)).mul_(qw.scales.float().reshape(1, -1)).reshape(*x.shape[:-1], qw.out_features)
    out = out.to(x.dtype)
    return out if bias is None else out + bias
