"""Quantized matmul kernels: out = x @ W^T + b with W a packed `QuantizedWeight` (fastformers/ops/quant.py),
dequantized in registers tile by tile (no dequantized weight is ever written to memory).

Weight-only (int8 and int4, activations float32/float16/bfloat16, output in x's dtype):
- the weight format is quant.py's: int8 `qweight` (out, in), or int4 as uint8 (out, ceil(in / 2)) with
  column 2j in the low nibble of byte j and 2j+1 in the high one; `scales` and optional `mins` (out, groups),
  w = q * scale + min in float32, per group of `group_size` input columns (None: one group per row).
- GEMV (rows of x M <= GEMV_MAX_M, decode): `quantized_linear_gemv_kernel` streams the packed weight once.
  A program owns BLOCK_N output channels and a run of K tiles (split-K when the output tiles alone would
  not fill the device); with several splits it writes float32 partials (split, M, N) and
  `quantized_linear_reduce_kernel` sums them in split order (deterministic, no atomics) and adds the bias.
  M = 1 multiplies the float32 weight tile by x elementwise and reduces once after the loop; 2 <= M <= 16
  runs a tl.dot of a 16-row x tile with the weight tile rounded to x's dtype.
- GEMM (M > GEMV_MAX_M, prefill): `quantized_linear_gemm_kernel`, (BLOCK_M, BLOCK_N) output tiles in
  grouped order for L2 reuse; each K step loads the x tile and the packed weight tile, dequantizes the
  latter to x's dtype in registers and accumulates a float32 tl.dot.
- Group scales are loaded once per (row, tile) when a tile lies inside one group, as a (BLOCK_N, tile
  groups) block broadcast over each group when a tile holds whole groups (power-of-two group sizes), and
  per element otherwise (any other group size, e.g. 40).

W8A8 (qw.method == "w8a8": int8 per-channel symmetric weights): `quantize_activations_kernel` quantizes
each row of x exactly as ops.quant.quantize_activations (sx = max|x| / 127 clamped to the smallest normal
float32, q = round half to even of x / sx with IEEE divisions, clamped to +-127), then
`quantized_linear_w8a8_kernel` runs an int8 x int8 -> int32 tl.dot GEMM (exact) with the epilogue
out = acc * sx[row] * scales[col] (+ bias) in float32, rounded to x's dtype. One kernel for every M (16-row
tiles for decode; it has no split-K).

Tiles (GPU): GEMV 64 (int4) / 32 (int8) channels x 128 columns, 8 / 4 warps at M = 1, split K to about
4 programs per SM; GEMM 128 x 128 x 64 (fewer rows for small M), 3 stages; W8A8 128 x 128 x 128 (16 x 64 x
128 at M <= 16). Float32 activations take smaller tiles on the tl.dot paths (its FMA dot spills otherwise).
All configurations compile for sm_90 without spills (tests/ops/test_gpu_compile.py).

The floor (H100, ~3.0 TB/s measured copy): a batch-1 GEMV reads the packed weight once: 4096 x 4096 int4 g128
(fp16 scales and mins) is 8.9 MB, ~3.0 us; int8 16.8 MB, ~5.6 us; the fp16 weight cuBLAS reads is 33.5 MB,
~11 us: with cuBLAS at its floor, the targets (>= 3x / >= 1.8x fp16) need ~80% / ~90% of ours. W8A8 at
M=2048 on 4096 -> 14336 is 240 GOP: int8 tensor cores have twice the fp16 rate (datasheet 1979 vs 989 TOP/s).

Layout: x any shape (..., in_features) whose rows can be seen with a contiguous last dim (else copied once);
qweight needs a contiguous last dim (any row stride); scales/mins any strides; bias (out,) in x's dtype.
Offsets are 64-bit. Float32 activations use full-precision dots (not TF32). Inference only: there is no
autograd, and `quantized_linear_unsupported` refuses a call that would need gradients.
Not yet measured on a GPU (bench/kernels.py has the rows: int4/int8 GEMV at batch 1 and W8A8 at M=2048
against fp16 F.linear).
"""

from __future__ import annotations

import functools
import weakref

import torch
import triton
import triton.language as tl

from . import _common

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Knobs (module level so tests can shrink them; not part of the op's semantics).
GEMV_MAX_M = 16            # rows of x up to this run on the GEMV kernel
GEMM_BLOCKS: tuple | None = None   # (BLOCK_M, BLOCK_N, BLOCK_K) override for the GEMM and W8A8 kernels
GEMV_BLOCKS: tuple | None = None   # (BLOCK_N, BLOCK_K) override for the GEMV kernel


# -- kernels --------------------------------------------------------------------------------------

@triton.jit
def _dequant_tile(q_ptr, s_ptr, m_ptr, n, k0, N, K, stride_qn, stride_sn, stride_sg, stride_mn, stride_mg,
                  group, n_groups, BITS: tl.constexpr, HAS_MINS: tl.constexpr, GROUPS_PER_TILE: tl.constexpr,
                  BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """float32 weights (BLOCK_N, BLOCK_K) of output channels n (int64) and input columns k0 .. k0 + BLOCK_K
    (k0 a multiple of BLOCK_K). Columns >= K and rows >= N come out finite (0 codes, 0 scales); the caller
    zeroes them through x. GROUPS_PER_TILE: 1 = the tile lies in one group, >= 2 = it holds that many whole
    groups of BLOCK_K // GROUPS_PER_TILE columns, 0 = any group size (scales gathered per element)."""
    n_ok = n < N
    k = k0 + tl.arange(0, BLOCK_K)
    if BITS == 8:
        q = tl.load(q_ptr + n[:, None] * stride_qn + k[None, :], mask=n_ok[:, None] & (k < K)[None, :], other=0)
    else:
        j = k0 // 2 + tl.arange(0, BLOCK_K // 2)  # bytes holding columns 2j (low nibble) and 2j + 1 (high)
        b = tl.load(q_ptr + n[:, None] * stride_qn + j[None, :], mask=n_ok[:, None] & (j < (K + 1) // 2)[None, :],
                    other=0)
        q = tl.interleave(b & 15, b >> 4)
    q = q.to(tl.float32)
    if GROUPS_PER_TILE == 0:
        g = k // group
        sm = n_ok[:, None] & (k < K)[None, :]
        w = q * tl.load(s_ptr + n[:, None] * stride_sn + g[None, :] * stride_sg, mask=sm, other=0.0).to(tl.float32)
        if HAS_MINS:
            w += tl.load(m_ptr + n[:, None] * stride_mn + g[None, :] * stride_mg, mask=sm, other=0.0).to(tl.float32)
    elif GROUPS_PER_TILE == 1:
        g = k0 // group
        w = q * tl.load(s_ptr + n * stride_sn + g * stride_sg, mask=n_ok, other=0.0).to(tl.float32)[:, None]
        if HAS_MINS:
            w += tl.load(m_ptr + n * stride_mn + g * stride_mg, mask=n_ok, other=0.0).to(tl.float32)[:, None]
    else:
        GROUP: tl.constexpr = BLOCK_K // GROUPS_PER_TILE
        g = k0 // GROUP + tl.arange(0, GROUPS_PER_TILE)
        sm = n_ok[:, None] & (g < n_groups)[None, :]
        s = tl.load(s_ptr + n[:, None] * stride_sn + g[None, :] * stride_sg, mask=sm, other=0.0).to(tl.float32)
        w3 = tl.reshape(q, (BLOCK_N, GROUPS_PER_TILE, GROUP)) * s[:, :, None]
        if HAS_MINS:
            mn = tl.load(m_ptr + n[:, None] * stride_mn + g[None, :] * stride_mg, mask=sm, other=0.0).to(tl.float32)
            w3 += mn[:, :, None]
        w = tl.reshape(w3, (BLOCK_N, BLOCK_K))
    return w


@triton.jit
def _dot_wt(x, w, acc, UPCAST: tl.constexpr):
    """acc + x @ w^T: x (BLOCK_M, BLOCK_K) in the activations' dtype, w (BLOCK_N, BLOCK_K) float32 rounded to
    x's dtype for the tensor cores (float32 x: a full-precision dot, not TF32). UPCAST runs the bf16 product in
    float32 on the same rounded values: Triton's CPU interpreter multiplies the bit patterns of bf16 tl.dot
    operands (triton-lang/triton#11584), so the launcher sets it for bf16 on CPU tensors only."""
    if UPCAST:
        return tl.dot(x.to(tl.float32), tl.trans(w.to(x.dtype).to(tl.float32)), acc, input_precision="ieee")
    return tl.dot(x, tl.trans(w.to(x.dtype)), acc, input_precision="ieee")


@triton.jit
def _tile_ids(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(row tile, column tile) of program pid, column tiles swept by groups of GROUP_M row tiles (L2 reuse)."""
    n_m = tl.cdiv(M, BLOCK_M)
    width = GROUP_M * tl.cdiv(N, BLOCK_N)
    first_m = (pid // width) * GROUP_M
    size = tl.minimum(n_m - first_m, GROUP_M)
    return first_m + (pid % width) % size, (pid % width) // size


@triton.jit
def quantized_linear_gemv_kernel(x_ptr, q_ptr, s_ptr, m_ptr, bias_ptr, out_ptr, M, N, K, stride_xm, stride_qn,
                                 stride_sn, stride_sg, stride_mn, stride_mg, group, n_groups, k_tiles_per_split,
                                 BITS: tl.constexpr, HAS_MINS: tl.constexpr, HAS_BIAS: tl.constexpr,
                                 GROUPS_PER_TILE: tl.constexpr, PARTIAL: tl.constexpr, BLOCK_M: tl.constexpr,
                                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, UPCAST: tl.constexpr):
    """Program (n tile, split) computes out[:M, n tile] over K tiles split * k_tiles_per_split onwards.
    PARTIAL: write float32 to out_ptr[split, M, N] (no bias) for the reduce kernel; else the output itself."""
    pid_n = tl.program_id(0)
    split = tl.program_id(1)
    n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    k_start = split * k_tiles_per_split * BLOCK_K
    k_end = tl.minimum(K, k_start + k_tiles_per_split * BLOCK_K)
    rows = tl.arange(0, BLOCK_M)
    if BLOCK_M == 1:
        # one row: elementwise products accumulated per (channel, column), reduced once after the loop
        acc2 = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
        for k0 in range(k_start, k_end, BLOCK_K):
            w = _dequant_tile(q_ptr, s_ptr, m_ptr, n, k0, N, K, stride_qn, stride_sn, stride_sg, stride_mn,
                              stride_mg, group, n_groups, BITS, HAS_MINS, GROUPS_PER_TILE, BLOCK_N, BLOCK_K)
            k = k0 + tl.arange(0, BLOCK_K)
            xv = tl.load(x_ptr + k, mask=k < K, other=0.0).to(tl.float32)
            acc2 += w * xv[None, :]
        acc = tl.sum(acc2, axis=1)[None, :]
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        x_rows = x_ptr + rows.to(tl.int64)[:, None] * stride_xm
        for k0 in range(k_start, k_end, BLOCK_K):
            w = _dequant_tile(q_ptr, s_ptr, m_ptr, n, k0, N, K, stride_qn, stride_sn, stride_sg, stride_mn,
                              stride_mg, group, n_groups, BITS, HAS_MINS, GROUPS_PER_TILE, BLOCK_N, BLOCK_K)
            k = k0 + tl.arange(0, BLOCK_K)
            xt = tl.load(x_rows + k[None, :], mask=(rows < M)[:, None] & (k < K)[None, :], other=0.0)
            acc = _dot_wt(xt, w, acc, UPCAST)
    mask = (rows < M)[:, None] & (n < N)[None, :]
    offs = rows.to(tl.int64)[:, None] * N + n[None, :]
    if PARTIAL:
        tl.store(out_ptr + split.to(tl.int64) * M * N + offs, acc, mask=mask)
    else:
        if HAS_BIAS:
            acc += tl.load(bias_ptr + n, mask=n < N, other=0.0).to(tl.float32)[None, :]
        tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def quantized_linear_reduce_kernel(partial_ptr, bias_ptr, out_ptr, MN, N, n_splits, HAS_BIAS: tl.constexpr,
                                   BLOCK: tl.constexpr):
    """out[i] = sum over splits (in order) of partial[split, i] (+ bias[i % N]), i over the M * N outputs."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = i < MN
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for split in range(n_splits):
        acc += tl.load(partial_ptr + split * MN + i, mask=mask, other=0.0)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + i % N, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + i, acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def quantized_linear_gemm_kernel(x_ptr, q_ptr, s_ptr, m_ptr, bias_ptr, out_ptr, M, N, K, stride_xm, stride_qn,
                                 stride_sn, stride_sg, stride_mn, stride_mg, group, n_groups,
                                 BITS: tl.constexpr, HAS_MINS: tl.constexpr, HAS_BIAS: tl.constexpr,
                                 GROUPS_PER_TILE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                                 BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, UPCAST: tl.constexpr):
    pid_m, pid_n = _tile_ids(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rows = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    x_rows = x_ptr + rows[:, None] * stride_xm
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        xt = tl.load(x_rows + k[None, :], mask=(rows < M)[:, None] & (k < K)[None, :], other=0.0)
        w = _dequant_tile(q_ptr, s_ptr, m_ptr, n, k0, N, K, stride_qn, stride_sn, stride_sg, stride_mn, stride_mg,
                          group, n_groups, BITS, HAS_MINS, GROUPS_PER_TILE, BLOCK_N, BLOCK_K)
        acc = _dot_wt(xt, w, acc, UPCAST)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + n, mask=n < N, other=0.0).to(tl.float32)[None, :]
    mask = (rows < M)[:, None] & (n < N)[None, :]
    tl.store(out_ptr + rows[:, None] * N + n[None, :], acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _round_half_even(y):
    """torch.round of float32 y (|y| <= 128 here; larger saturates to 128) as int32: the integer part of |y|
    by truncation, its fraction exact (|y| - trunc|y| needs no rounding), up on > 0.5 or on 0.5 to even."""
    a = tl.minimum(tl.abs(y), 128.0)
    t = a.to(tl.int32)
    frac = a - t.to(tl.float32)
    t += ((frac > 0.5) | ((frac == 0.5) & ((t & 1) == 1))).to(tl.int32)
    return tl.where(y < 0, -t, t)


@triton.jit
def quantize_activations_kernel(x_ptr, xq_ptr, sx_ptr, K, stride_xm, BLOCK_K: tl.constexpr):
    """Row r of x (K columns) -> xq[r] int8 and sx[r] float32, as ops.quant.quantize_activations: two passes
    over the row (absmax, then quantize). IEEE divisions (div_rn): `/` is approximate on the GPU."""
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_xm
    amax = tl.zeros((BLOCK_K,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        amax = tl.maximum(amax, tl.abs(tl.load(x_row + k, mask=k < K, other=0.0).to(tl.float32)))
    sx = tl.maximum(tl.math.div_rn(tl.max(amax, axis=0), 127.0), 1.1754943508222875e-38)  # finfo(f32).tiny
    tl.store(sx_ptr + row, sx)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        v = tl.load(x_row + k, mask=k < K, other=0.0).to(tl.float32)
        q = tl.minimum(tl.maximum(_round_half_even(tl.math.div_rn(v, sx)), -127), 127)
        tl.store(xq_ptr + row * K + k, q.to(tl.int8), mask=k < K)


@triton.jit
def quantized_linear_w8a8_kernel(xq_ptr, sx_ptr, q_ptr, s_ptr, bias_ptr, out_ptr, M, N, K, stride_qn, stride_sn,
                                 HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                                 BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    """out = (xq @ q^T, exact in int32) * sx[row] * scales[col] (+ bias); xq contiguous (M, K)."""
    pid_m, pid_n = _tile_ids(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rows = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(xq_ptr + rows[:, None] * K + k[None, :], mask=(rows < M)[:, None] & (k < K)[None, :], other=0)
        b = tl.load(q_ptr + n[:, None] * stride_qn + k[None, :], mask=(n < N)[:, None] & (k < K)[None, :], other=0)
        acc = tl.dot(a, tl.trans(b), acc, out_dtype=tl.int32)
    sx = tl.load(sx_ptr + rows, mask=rows < M, other=0.0)
    s = tl.load(s_ptr + n * stride_sn, mask=n < N, other=0.0).to(tl.float32)
    out = acc.to(tl.float32) * sx[:, None] * s[None, :]
    if HAS_BIAS:
        out += tl.load(bias_ptr + n, mask=n < N, other=0.0).to(tl.float32)[None, :]
    mask = (rows < M)[:, None] & (n < N)[None, :]
    tl.store(out_ptr + rows[:, None] * N + n[None, :], out.to(out_ptr.dtype.element_ty), mask=mask)


# -- launchers ------------------------------------------------------------------------------------

def _rows(t: torch.Tensor) -> torch.Tensor:
    """`t` as (M, K) rows with a contiguous last dim: a view when the layout allows, else one copy."""
    t = t.reshape(-1, t.shape[-1])
    return t if t.stride(-1) == 1 or t.shape[-1] == 1 else t.contiguous()


@functools.cache
def _target_programs(device: torch.device) -> int:
    """Programs that keep the device busy: 4 per SM on a GPU; 4 in Triton's CPU interpreter (which runs
    programs one after another; 4 still splits K on the tests' small shapes)."""
    if device.type == "cuda":
        return 4 * torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def _groups_per_tile(group: int, K: int, block_k: int) -> int:
    """_dequant_tile's GROUPS_PER_TILE for tiles of block_k columns starting at multiples of block_k."""
    if group >= K or group % block_k == 0:
        return 1
    if block_k % group == 0:
        return block_k // group
    return 0


def _upcast(x: torch.Tensor) -> bool:
    return x.dtype == torch.bfloat16 and x.device.type != "cuda"  # see _dot_wt


def _weight_args(qweight, scales, mins, group):
    m = mins if mins is not None else scales
    n_groups = scales.shape[1]
    return (qweight.stride(0), scales.stride(0), scales.stride(1), m.stride(0), m.stride(1), group, n_groups)


def _gemv_launch(x2, qweight, scales, mins, bias, bits, group, out):
    M, K = x2.shape
    N = qweight.shape[0]
    block_m = 1 if M == 1 else 16
    if GEMV_BLOCKS is not None:
        block_n, block_k = GEMV_BLOCKS
    elif block_m > 1 and x2.dtype == torch.float32:
        block_n, block_k = 32, 32  # a float32 tl.dot runs on FMAs: small tiles, or it spills
    else:
        block_n, block_k = (64 if bits == 4 else 32), 128
    block_k = min(block_k, max(32, _common.next_pow2(K)))
    n_tiles, k_tiles = triton.cdiv(N, block_n), triton.cdiv(K, block_k)
    split = min(k_tiles, max(1, _target_programs(x2.device) // n_tiles))
    per_split = triton.cdiv(k_tiles, split)
    split = triton.cdiv(k_tiles, per_split)
    common = {"BITS": bits, "HAS_MINS": mins is not None, "HAS_BIAS": bias is not None,
              "GROUPS_PER_TILE": _groups_per_tile(group, K, block_k), "BLOCK_M": block_m, "BLOCK_N": block_n,
              "BLOCK_K": block_k, "UPCAST": _upcast(x2),
              "num_warps": 8 if block_m == 1 and block_n * block_k >= 8192 else 4}
    wargs = _weight_args(qweight, scales, mins, group)
    m_ptr = mins if mins is not None else scales
    b_ptr = bias if bias is not None else scales
    _common.count("quantized_linear_gemv")
    if split == 1:
        quantized_linear_gemv_kernel[(n_tiles, 1)](x2, qweight, scales, m_ptr, b_ptr, out, M, N, K, x2.stride(0),
                                                   *wargs, per_split, PARTIAL=False, **common)
        return
    partial = _common.empty((split, M, N), dtype=torch.float32, device=x2.device)
    quantized_linear_gemv_kernel[(n_tiles, split)](x2, qweight, scales, m_ptr, b_ptr, partial, M, N, K, x2.stride(0),
                                                   *wargs, per_split, PARTIAL=True, **common)
    block = min(1024, _common.next_pow2(M * N))
    _common.count("quantized_linear_reduce")
    quantized_linear_reduce_kernel[(triton.cdiv(M * N, block),)](partial, b_ptr, out, M * N, N, split,
                                                                 HAS_BIAS=bias is not None, BLOCK=block, num_warps=4)


def _gemm_blocks(M: int, int8_dot: bool, fp32: bool = False) -> tuple:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) of the GEMM and W8A8 kernels."""
    if GEMM_BLOCKS is not None:
        block_m, block_n, block_k = GEMM_BLOCKS
    elif fp32:  # a float32 tl.dot runs on FMAs: small tiles, or it spills
        return (16 if M <= 16 else 32 if M <= 32 else 64), 64, 32, 8, 2
    else:
        block_m = 16 if M <= 16 else 32 if M <= 32 else 64 if M <= 64 else 128
        block_n, block_k = 128, (128 if int8_dot else 64)
    return block_m, block_n, block_k, (8 if block_m >= 128 else 4), 3


def _gemm_launch(x2, qweight, scales, mins, bias, bits, group, out):
    M, K = x2.shape
    N = qweight.shape[0]
    block_m, block_n, block_k, warps, stages = _gemm_blocks(M, False, x2.dtype == torch.float32)
    grid = (triton.cdiv(M, block_m) * triton.cdiv(N, block_n),)
    _common.count("quantized_linear_gemm")
    quantized_linear_gemm_kernel[grid](
        x2, qweight, scales, mins if mins is not None else scales, bias if bias is not None else scales, out,
        M, N, K, x2.stride(0), *_weight_args(qweight, scales, mins, group),
        BITS=bits, HAS_MINS=mins is not None, HAS_BIAS=bias is not None,
        GROUPS_PER_TILE=_groups_per_tile(group, K, block_k), BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
        GROUP_M=8, UPCAST=_upcast(x2), num_warps=warps, num_stages=stages)


def _quantized_linear_launch(x, qweight, scales, mins, bias, bits, group_size, in_features):
    N = qweight.shape[0]
    out = _common.empty((*x.shape[:-1], N), dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    x2 = _rows(x)
    group = group_size or in_features
    if x2.shape[0] <= GEMV_MAX_M:
        _gemv_launch(x2, qweight, scales, mins, bias, bits, group, out)
    else:
        _gemm_launch(x2, qweight, scales, mins, bias, bits, group, out)
    return out


def _quantize_activations_launch(x):
    K = x.shape[-1]
    xq = _common.empty(x.shape, dtype=torch.int8, device=x.device)
    sx = _common.empty((*x.shape[:-1], 1), dtype=torch.float32, device=x.device)
    if xq.numel() == 0:
        return xq, sx
    x2 = _rows(x)
    block_k = min(4096, _common.next_pow2(K))
    _common.count("quantize_activations")
    quantize_activations_kernel[(x2.shape[0],)](x2, xq, sx, K, x2.stride(0), BLOCK_K=block_k,
                                                num_warps=8 if block_k >= 2048 else 4)
    return xq, sx


def _w8a8_launch(x, qweight, scales, bias):
    N, K = qweight.shape
    out = _common.empty((*x.shape[:-1], N), dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    xq, sx = _quantize_activations_launch(x)
    M = xq.numel() // K
    block_m, block_n, block_k, warps, stages = _gemm_blocks(M, True)
    if M <= GEMV_MAX_M and GEMM_BLOCKS is None:
        block_n = 64  # decode: twice the programs over N
    grid = (triton.cdiv(M, block_m) * triton.cdiv(N, block_n),)
    _common.count("quantized_linear_w8a8")
    quantized_linear_w8a8_kernel[grid](xq, sx, qweight, scales, bias if bias is not None else scales, out, M, N, K,
                                       qweight.stride(0), scales.stride(0), HAS_BIAS=bias is not None,
                                       BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=8,
                                       num_warps=warps, num_stages=stages)
    return out


# -- custom ops (torch.compile / CUDA graphs see these) -------------------------------------------

@torch.library.custom_op("fastformers::quantized_linear", mutates_args=())
def _quantized_linear_op(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor | None,
                         bias: torch.Tensor | None, bits: int, group_size: int | None,
                         in_features: int) -> torch.Tensor:
    """Weight-only: the QuantizedWeight's tensors and ints (group_size None: per output channel)."""
    return _quantized_linear_launch(x, qweight, scales, mins, bias, bits, group_size, in_features)


@_quantized_linear_op.register_fake
def _(x, qweight, scales, mins, bias, bits, group_size, in_features):
    return x.new_empty((*x.shape[:-1], qweight.shape[0]))


@torch.library.custom_op("fastformers::quantized_linear_w8a8", mutates_args=())
def _w8a8_op(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor,
             bias: torch.Tensor | None) -> torch.Tensor:
    return _w8a8_launch(x, qweight, scales, bias)


@_w8a8_op.register_fake
def _(x, qweight, scales, bias):
    return x.new_empty((*x.shape[:-1], qweight.shape[0]))


@torch.library.custom_op("fastformers::quantize_activations", mutates_args=())
def _quantize_activations_op(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _quantize_activations_launch(x)


@_quantize_activations_op.register_fake
def _(x):
    return x.new_empty(x.shape, dtype=torch.int8), x.new_empty((*x.shape[:-1], 1), dtype=torch.float32)


# -- public functions (the `fastformers.ops` triton backend) --------------------------------------

def quantized_linear(x, qw, bias=None):
    """x @ W^T + bias for a QuantizedWeight W (weight-only int8/int4, or W8A8), output in x's dtype.

    Weight-only: quantized_linear_gemv_kernel (+ quantized_linear_reduce_kernel when K is split) for up to
    GEMV_MAX_M rows of x, quantized_linear_gemm_kernel above; W8A8: quantize_activations_kernel then
    quantized_linear_w8a8_kernel. Layout and limits: see the module docstring and
    `quantized_linear_unsupported`. Inference only. Not yet measured on a GPU.
    """
    if qw.method == "w8a8":
        return _w8a8_op(x, qw.qweight, qw.scales, bias)
    return _quantized_linear_op(x, qw.qweight, qw.scales, qw.mins, bias, qw.bits, qw.group_size, qw.in_features)


def quantize_activations(x):
    """(xq int8, sx float32 (..., 1)) per row of x: the same values as ops.quant.quantize_activations."""
    return _quantize_activations_op(x)


# weight -> (what it was checked as, the reason or None): a decode step calls the predicate for every linear,
# and the weight's own checks (its format, dtypes, layout, devices) cost ~10 us; what can change between calls
# (the tensors, their strides, the format ints) is in the key, so a modified weight is checked again
_weight_checks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _weight_key(qw) -> tuple:
    return (id(qw.qweight), id(qw.scales), id(qw.mins), qw.qweight.dtype, qw.qweight.shape, qw.qweight.stride(),
            qw.scales.shape, qw.bits, qw.group_size, qw.in_features, qw.method)


def _weight_reason(qw) -> str | None:
    try:
        qw.check()
    except ValueError as e:
        return str(e)
    if qw.method == "blockwise_a8":
        return "method blockwise_a8 (int8 activations per block of 32) has no Triton kernel"
    if qw.in_features < 1:
        return f"in_features={qw.in_features}; the kernels need at least one input column"
    for part, t in (("scales", qw.scales), ("mins", qw.mins)):
        if t is not None and t.dtype not in _DTYPES:
            return f"{part} dtype {t.dtype}; the kernels take float32, float16 or bfloat16 {part}"
        if t is not None and t.device != qw.qweight.device:
            return f"{part} on {t.device}, qweight on {qw.qweight.device}"
    if qw.qweight.stride(-1) != 1 and qw.qweight.shape[-1] > 1:
        return f"packed weight with strides {qw.qweight.stride()}; the kernels need a contiguous last dim"
    return None


def quantized_linear_unsupported(x, qw, bias=None) -> str | None:
    if not hasattr(qw, "check"):
        return f"weight of type {type(qw).__name__}; the kernels take a QuantizedWeight"
    key = _weight_key(qw)
    cached = _weight_checks.get(qw)
    if cached is None or cached[0] != key:
        cached = _weight_checks[qw] = (key, _weight_reason(qw))
    if cached[1] is not None:
        return cached[1]
    if x.dtype not in _DTYPES:
        return f"x dtype {x.dtype}; the kernels take float32, float16 or bfloat16 activations"
    if x.dim() == 0 or x.shape[-1] != qw.in_features:
        return f"x shape {tuple(x.shape)} for a weight of {qw.in_features} in_features"
    if x.device != qw.qweight.device:
        return f"qweight on {qw.qweight.device}, x on {x.device}"
    if bias is not None:
        if bias.dim() != 1 or bias.shape[0] != qw.out_features:
            return f"bias shape {tuple(bias.shape)}; the kernels take a 1-D bias of {qw.out_features} out_features"
        if bias.dtype != x.dtype:
            return f"bias dtype {bias.dtype} differs from x dtype {x.dtype}"
        if bias.device != x.device:
            return f"bias on {bias.device}, x on {x.device}"
    if torch.is_grad_enabled() and (x.requires_grad or (bias is not None and bias.requires_grad)
                                    or qw.scales.requires_grad or (qw.mins is not None and qw.mins.requires_grad)):
        return "a tensor requires grad: the quantized kernels are inference-only (no autograd); call under " \
               "torch.no_grad() / torch.inference_mode(), or use the torch backend"
    return _common.device_reason(x)
