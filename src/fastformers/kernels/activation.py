"""Activation kernels: bias + GELU (erf and tanh forms) and SwiGLU's silu(gate) * up, forward and backward.

Layout shared by every kernel here: a tensor (..., N) is seen as rows (M, N) whose last dimension is
contiguous and whose rows sit `stride` elements apart. Any row stride works, so `torch.split` halves of a
fused gate/up GEMM output are read in place; a layout that cannot be seen as such rows (a strided last
dimension, dims that do not collapse) is copied once by the launcher. Outputs are new contiguous tensors in
the input dtype; the math runs in float32. The grid is 1-D over (row tiles x column tiles) of about 4096
elements each, so a large activation fills the GPU; offsets are 64-bit.

Checks live in `gelu_unsupported` / `silu_mul_unsupported`, which `fastformers.ops` calls before the
kernel; the launchers trust their inputs. Gradients are first order only (the backward ops have no
autograd of their own).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from . import _common

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_TILE = 4096  # elements per program


# -- kernels --------------------------------------------------------------------------------------

@triton.jit
def _tile_offsets(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Rows (int64), columns and mask of tile `pid` of an (M, N) grid of tiles in row-major order."""
    n_col_tiles = tl.cdiv(N, BLOCK_N)
    rows = (pid // n_col_tiles) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = (pid % n_col_tiles) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rows < M)[:, None] & (cols < N)[None, :]
    return rows.to(tl.int64), cols, mask


@triton.jit
def _sigmoid(z):
    """1 / (1 + exp(-z)) through exp(-|z|), which never overflows."""
    e = tl.exp(-tl.abs(z))
    return tl.where(z >= 0, 1.0, e) / (1.0 + e)


@triton.jit
def _normal_cdf(x):
    """Phi(x) with a small relative error in both tails: 0.5 erfc(-x / sqrt 2), erfc from the Chebyshev
    fit of Numerical Recipes' erfcc (fractional error < 1.2e-7 for all arguments). 1 + erf(x / sqrt 2)
    would lose every digit for x below about -5."""
    z = tl.abs(x) * 0.7071067811865476
    t = 1.0 / (1.0 + 0.5 * z)
    p = -0.82215223 + t * 0.17087277
    p = 1.48851587 + t * p
    p = -1.13520398 + t * p
    p = 0.27886807 + t * p
    p = -0.18628806 + t * p
    p = 0.09678418 + t * p
    p = 0.37409196 + t * p
    p = 1.00002368 + t * p
    half_erfc = 0.5 * t * tl.exp(-z * z - 1.26551223 + t * p)  # 0.5 erfc(|x| / sqrt 2) = Phi(-|x|)
    return tl.where(x < 0, half_erfc, 1.0 - half_erfc)


@triton.jit
def _gelu_and_grad(x, TANH: tl.constexpr, GRAD: tl.constexpr):
    """gelu(x) (GRAD False) or d gelu / dx (GRAD True), float32. Both forms are written as x * F(x) with
    F a cdf (0.5 (1 + tanh u) = sigmoid(2u)), so neither loses precision for negative x."""
    if TANH:
        s = _sigmoid(1.5957691216057308 * (x + 0.044715 * x * x * x))  # sigmoid(2 sqrt(2/pi) (x + c x^3))
        if GRAD:
            out = s + x * s * (1.0 - s) * (1.5957691216057308 * (1.0 + 3.0 * 0.044715 * x * x))
        else:
            out = x * s
    else:
        cdf = _normal_cdf(x)
        if GRAD:
            out = cdf + x * tl.exp(-0.5 * x * x) * 0.3989422804014327  # + x * pdf(x)
        else:
            out = x * cdf
    return out


@triton.jit
def gelu_kernel(x_ptr, bias_ptr, y_ptr, M, N, stride_x, stride_y,
                HAS_BIAS: tl.constexpr, TANH: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rows, cols, mask = _tile_offsets(tl.program_id(0), M, N, BLOCK_M, BLOCK_N)
    x = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        x += tl.load(bias_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
    y = _gelu_and_grad(x, TANH, False)
    tl.store(y_ptr + rows[:, None] * stride_y + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def gelu_bwd_kernel(dy_ptr, x_ptr, bias_ptr, dx_ptr, partial_ptr, M, N, stride_dy, stride_x, stride_dx,
                    n_groups, HAS_BIAS: tl.constexpr, BIAS_GRAD: tl.constexpr, TANH: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Program (group g, column tile c) handles row tiles g, g + n_groups, ... of column tile c; with
    BIAS_GRAD it writes its float32 column sums of dx to partial[g, cols] (a fixed order: deterministic)."""
    pid = tl.program_id(0)
    n_col_tiles = tl.cdiv(N, BLOCK_N)
    group = pid // n_col_tiles
    col_tile = pid % n_col_tiles
    cols = col_tile * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < N
    if HAS_BIAS:
        bias = tl.load(bias_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for row_tile in range(group, tl.cdiv(M, BLOCK_M), n_groups):
        rows = (row_tile * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        mask = (rows < M)[:, None] & col_mask[None, :]
        x = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            x += bias[None, :]
        dy = tl.load(dy_ptr + rows[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dx = dy * _gelu_and_grad(x, TANH, True)
        tl.store(dx_ptr + rows[:, None] * stride_dx + cols[None, :], dx.to(dx_ptr.dtype.element_ty), mask=mask)
        if BIAS_GRAD:
            acc += tl.sum(tl.where(mask, dx, 0.0), axis=0)
    if BIAS_GRAD:
        tl.store(partial_ptr + group * N + cols, acc, mask=col_mask)


@triton.jit
def gelu_bias_grad_kernel(partial_ptr, dbias_ptr, N, n_groups, BLOCK_N: tl.constexpr):
    """dbias[cols] = sum over groups of partial[group, cols], groups in order."""
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = cols < N
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for group in range(n_groups):
        acc += tl.load(partial_ptr + group * N + cols, mask=mask, other=0.0)
    tl.store(dbias_ptr + cols, acc.to(dbias_ptr.dtype.element_ty), mask=mask)


@triton.jit
def silu_mul_kernel(gate_ptr, up_ptr, y_ptr, M, N, stride_gate, stride_up, stride_y,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rows, cols, mask = _tile_offsets(tl.program_id(0), M, N, BLOCK_M, BLOCK_N)
    g = tl.load(gate_ptr + rows[:, None] * stride_gate + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    u = tl.load(up_ptr + rows[:, None] * stride_up + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    y = g * _sigmoid(g) * u
    tl.store(y_ptr + rows[:, None] * stride_y + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def silu_mul_bwd_kernel(dy_ptr, gate_ptr, up_ptr, dgate_ptr, dup_ptr, M, N,
                        stride_dy, stride_gate, stride_up, stride_dgate, stride_dup,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rows, cols, mask = _tile_offsets(tl.program_id(0), M, N, BLOCK_M, BLOCK_N)
    dy = tl.load(dy_ptr + rows[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    g = tl.load(gate_ptr + rows[:, None] * stride_gate + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    u = tl.load(up_ptr + rows[:, None] * stride_up + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    s = _sigmoid(g)
    dgate = dy * u * s * (1.0 + g * (1.0 - s))  # d silu / dg = s + g s (1 - s)
    dup = dy * g * s
    tl.store(dgate_ptr + rows[:, None] * stride_dgate + cols[None, :], dgate.to(dgate_ptr.dtype.element_ty),
             mask=mask)
    tl.store(dup_ptr + rows[:, None] * stride_dup + cols[None, :], dup.to(dup_ptr.dtype.element_ty), mask=mask)


# -- launchers ------------------------------------------------------------------------------------

def _rows(t: torch.Tensor) -> torch.Tensor:
    """`t` as (M, N) rows with a contiguous last dim: a view when the layout allows, else one copy."""
    t = t.reshape(-1, t.shape[-1] if t.dim() else 1)
    return t if t.stride(-1) == 1 or t.shape[-1] == 1 else t.contiguous()


def _tiles(M: int, N: int) -> tuple:
    """(BLOCK_M, BLOCK_N, num_warps): about _TILE elements, a power-of-two width up to 1024 columns."""
    block_n = min(_common.next_pow2(N), 1024)
    block_m = min(_common.next_pow2(M), max(1, _TILE // block_n))
    return block_m, block_n, 8 if block_m * block_n >= 4096 else 4


@functools.cache
def _target_programs(device: torch.device) -> int:
    """Programs that keep the device busy: 4 per SM on a GPU; 4 in Triton's CPU interpreter (which runs
    programs one after another)."""
    if device.type == "cuda":
        return 4 * torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def _gelu_launch(x: torch.Tensor, bias: torch.Tensor | None, approximate: str) -> torch.Tensor:
    y = _common.empty_like(x)
    if x.numel() == 0:
        return y
    x2 = _rows(x)
    M, N = x2.shape
    block_m, block_n, warps = _tiles(M, N)
    grid = (triton.cdiv(M, block_m) * triton.cdiv(N, block_n),)
    _common.count("gelu")
    gelu_kernel[grid](x2, bias if bias is not None else x2, y, M, N, x2.stride(0), N,
                      HAS_BIAS=bias is not None, TANH=approximate == "tanh",
                      BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps)
    return y


def _gelu_bwd_launch(dy: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None, approximate: str,
                     bias_grad: bool) -> list:
    dx = _common.empty_like(x)
    dbias = _common.empty_like(bias) if bias_grad else None
    if x.numel() == 0:
        return [dx] if dbias is None else [dx, dbias.zero_()]
    x2, dy2 = _rows(x), _rows(dy)
    M, N = x2.shape
    block_m, block_n, warps = _tiles(M, N)
    n_row_tiles, n_col_tiles = triton.cdiv(M, block_m), triton.cdiv(N, block_n)
    # without a bias gradient every row tile is its own program; with one, each program loops over
    # row tiles and keeps one float32 column sum, so the partial sums stay few
    n_groups = min(n_row_tiles, triton.cdiv(_target_programs(x.device), n_col_tiles)) if bias_grad else n_row_tiles
    partial = _common.empty((n_groups, N), dtype=torch.float32, device=x.device) if bias_grad else dx
    _common.count("gelu_bwd")
    gelu_bwd_kernel[(n_groups * n_col_tiles,)](
        dy2, x2, bias if bias is not None else x2, dx, partial, M, N, dy2.stride(0), x2.stride(0), N, n_groups,
        HAS_BIAS=bias is not None, BIAS_GRAD=bias_grad, TANH=approximate == "tanh",
        BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps)
    if not bias_grad:
        return [dx]
    _common.count("gelu_bias_grad")
    gelu_bias_grad_kernel[(n_col_tiles,)](partial, dbias, N, n_groups, BLOCK_N=block_n, num_warps=4)
    return [dx, dbias]


def _silu_mul_launch(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    y = _common.empty_like(gate)
    if gate.numel() == 0:
        return y
    g2, u2 = _rows(gate), _rows(up)
    M, N = g2.shape
    block_m, block_n, warps = _tiles(M, N)
    _common.count("silu_mul")
    silu_mul_kernel[(triton.cdiv(M, block_m) * triton.cdiv(N, block_n),)](
        g2, u2, y, M, N, g2.stride(0), u2.stride(0), N, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps)
    return y


def _silu_mul_bwd_launch(dy: torch.Tensor, gate: torch.Tensor, up: torch.Tensor) -> tuple:
    dgate, dup = _common.empty_like(gate), _common.empty_like(up)
    if gate.numel() == 0:
        return dgate, dup
    dy2, g2, u2 = _rows(dy), _rows(gate), _rows(up)
    M, N = g2.shape
    block_m, block_n, warps = _tiles(M, N)
    _common.count("silu_mul_bwd")
    silu_mul_bwd_kernel[(triton.cdiv(M, block_m) * triton.cdiv(N, block_n),)](
        dy2, g2, u2, dgate, dup, M, N, dy2.stride(0), g2.stride(0), u2.stride(0), N, N,
        BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps)
    return dgate, dup


# -- custom ops (torch.compile / CUDA graphs see these) -------------------------------------------

@torch.library.custom_op("fastformers::gelu", mutates_args=())
def _gelu_op(x: torch.Tensor, bias: torch.Tensor | None, approximate: str) -> torch.Tensor:
    return _gelu_launch(x, bias, approximate)


@_gelu_op.register_fake
def _(x, bias, approximate):
    return x.new_empty(x.shape)


@torch.library.custom_op("fastformers::gelu_bwd", mutates_args=())
def _gelu_bwd_op(grad: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None, approximate: str,
                 bias_grad: bool) -> list[torch.Tensor]:
    """[dx] or, with bias_grad, [dx, dbias]."""
    return _gelu_bwd_launch(grad, x, bias, approximate, bias_grad)


@_gelu_bwd_op.register_fake
def _(grad, x, bias, approximate, bias_grad):
    return [x.new_empty(x.shape)] + ([bias.new_empty(bias.shape)] if bias_grad else [])


def _gelu_setup(ctx, inputs, output):
    x, bias, approximate = inputs
    ctx.save_for_backward(x, bias)
    ctx.approximate = approximate


def _gelu_backward(ctx, grad):
    x, bias = ctx.saved_tensors
    bias_grad = bias is not None and ctx.needs_input_grad[1]
    grads = _gelu_bwd_op(grad, x, bias, ctx.approximate, bias_grad)
    return grads[0], (grads[1] if bias_grad else None), None


_gelu_op.register_autograd(_gelu_backward, setup_context=_gelu_setup)


@torch.library.custom_op("fastformers::silu_mul", mutates_args=())
def _silu_mul_op(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return _silu_mul_launch(gate, up)


@_silu_mul_op.register_fake
def _(gate, up):
    return gate.new_empty(gate.shape)


@torch.library.custom_op("fastformers::silu_mul_bwd", mutates_args=())
def _silu_mul_bwd_op(grad: torch.Tensor, gate: torch.Tensor, up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _silu_mul_bwd_launch(grad, gate, up)


@_silu_mul_bwd_op.register_fake
def _(grad, gate, up):
    return gate.new_empty(gate.shape), up.new_empty(up.shape)


def _silu_mul_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _silu_mul_backward(ctx, grad):
    gate, up = ctx.saved_tensors
    return _silu_mul_bwd_op(grad, gate, up)


_silu_mul_op.register_autograd(_silu_mul_backward, setup_context=_silu_mul_setup)


# -- public functions (the `fastformers.ops` triton backend) --------------------------------------

def gelu(x, *, bias=None, approximate: str = "none"):
    """gelu(x + bias), bias (N,) broadcast over the rows of x (..., N); erf ("none") or "tanh" form.

    gelu_kernel / gelu_bwd_kernel / gelu_bias_grad_kernel. Layout: x any shape, rows with a contiguous last
    dim and any row stride (else copied once); output contiguous, x's dtype. Backward gives dx and, when the
    bias needs it, dbias: per-group float32 column sums then an ordered sum (deterministic, no atomics).
    Limits: float32/float16/bfloat16, bias of x's dtype. Not yet measured on a GPU.
    """
    return _gelu_op(x, bias, approximate)


def silu_mul(gate, up):
    """silu(gate) * up (SwiGLU), gate and up of one shape (..., N).

    silu_mul_kernel / silu_mul_bwd_kernel. Layout: rows with a contiguous last dim and any row stride, each
    input its own (the two halves of a fused gate/up projection are read in place); outputs contiguous in the
    input dtype. Limits: float32/float16/bfloat16, gate and up of one dtype. Not yet measured on a GPU.
    """
    return _silu_mul_op(gate, up)


def gelu_unsupported(x, *, bias=None, approximate: str = "none") -> str | None:
    if approximate not in ("none", "tanh"):
        return f"approximate={approximate!r}; expected 'none' or 'tanh'"
    if x.dtype not in _DTYPES:
        return f"x dtype {x.dtype}; the kernel takes float32, float16 or bfloat16"
    if bias is not None:
        if x.dim() == 0 or bias.dim() != 1 or bias.shape[0] != x.shape[-1]:
            return f"bias shape {tuple(bias.shape)} for x {tuple(x.shape)}; the kernel takes a 1-D bias of " \
                   f"x's last dim"
        if bias.dtype != x.dtype:
            return f"bias dtype {bias.dtype} differs from x dtype {x.dtype}"
        if bias.device != x.device:
            return f"bias on {bias.device}, x on {x.device}"
    return _common.device_reason(x)


def silu_mul_unsupported(gate, up) -> str | None:
    if gate.dtype not in _DTYPES:
        return f"gate dtype {gate.dtype}; the kernel takes float32, float16 or bfloat16"
    if up.dtype != gate.dtype:
        return f"up dtype {up.dtype} differs from gate dtype {gate.dtype}"
    if up.shape != gate.shape:
        return f"gate shape {tuple(gate.shape)} and up shape {tuple(up.shape)} differ (no broadcasting)"
    if up.device != gate.device:
        return f"gate on {gate.device}, up on {up.device}"
    return _common.device_reason(gate)
