"""Normalisation kernels: LayerNorm fused with dropout and a residual add, and RMSNorm (with an optional
fused residual add), forward and backward.

Layout shared by every kernel here: a tensor (..., N) is seen as rows (M, N) whose last dimension is
contiguous and whose rows sit `stride` elements apart (a view with any row stride is read in place; a layout
that cannot be seen as such rows is copied once by the launcher). A program normalises BLOCK_M whole rows,
BLOCK_N = next power of two >= N (so N <= 65536), BLOCK_M a few rows when rows are short; outputs are new
contiguous tensors, statistics (mean, rstd) are float32 per row. Math in float32.

Backward kernels loop over row tiles g, g + n_groups, ... and keep float32 column sums for the weight (and
bias) gradient in registers; each program writes its sums to a (n_groups, N) buffer that
`norm_weight_grad_kernel` reduces in a fixed order: deterministic, no atomics.

Dropout uses Triton's counter-based Philox RNG: element (row, col) is kept when
`tl.rand(seed, row * N + col) >= p`. The seed is an int64 tensor drawn from torch's generator of the input's
device (`torch.manual_seed` reproduces a run; CUDA graphs and torch.compile see an ordinary RNG op), passed
to the kernels by pointer; the backward regenerates the mask from (seed, offsets) instead of storing it.

Checks live in `layer_norm_unsupported` / `rms_norm_unsupported`, which `fastformers.ops` calls before the
kernels; the launchers trust their inputs. Gradients are first order only. Not yet measured on a GPU.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from . import _common

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_HIDDEN = 65536  # one row per program: the whole row lives in registers
_TILE = 4096  # elements per program when rows are short


# -- kernels --------------------------------------------------------------------------------------

@triton.jit
def _row_tile(tile, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Rows (int64), columns, row mask and element mask of row tile `tile`."""
    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    row_mask = rows < M
    mask = row_mask[:, None] & (cols < N)[None, :]
    return rows.to(tl.int64), cols, row_mask, mask


@triton.jit
def _dropout_keep(seed_ptr, rows, cols, N, dropout_p):
    """Keep mask of elements (rows, cols) of an (M, N) tensor: the Philox uniform of the element's row-major
    index is >= p. The forward, the backward and `dropout_keep_mask` all draw it here."""
    seed = tl.load(seed_ptr)
    return tl.rand(seed, rows[:, None] * N + cols[None, :]) >= dropout_p


@triton.jit
def _ln_input(x_ptr, res_ptr, seed_ptr, rows, cols, mask, N, stride_x, stride_res, dropout_p,
              HAS_RESIDUAL: tl.constexpr, DROPOUT: tl.constexpr):
    """s = dropout(x) + residual in float32, rounded once to x's dtype (the value the reference normalises)."""
    s = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if DROPOUT:
        keep = _dropout_keep(seed_ptr, rows, cols, N, dropout_p)
        s = tl.where(keep, s * (1.0 / (1.0 - dropout_p)), 0.0)
    if HAS_RESIDUAL:
        s += tl.load(res_ptr + rows[:, None] * stride_res + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL or DROPOUT:
        s = s.to(x_ptr.dtype.element_ty).to(tl.float32)
    return s


@triton.jit
def layer_norm_kernel(x_ptr, res_ptr, w_ptr, b_ptr, seed_ptr, y_ptr, mean_ptr, rstd_ptr, M, N,
                      stride_x, stride_res, eps, dropout_p, HAS_RESIDUAL: tl.constexpr, HAS_WEIGHT: tl.constexpr,
                      HAS_BIAS: tl.constexpr, DROPOUT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rows, cols, row_mask, mask = _row_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N)
    s = _ln_input(x_ptr, res_ptr, seed_ptr, rows, cols, mask, N, stride_x, stride_res, dropout_p,
                  HAS_RESIDUAL, DROPOUT)
    mean = tl.sum(s, axis=1) / N
    centred = tl.where(mask, s - mean[:, None], 0.0)
    rstd = tl.rsqrt(tl.sum(centred * centred, axis=1) / N + eps)
    y = centred * rstd[:, None]
    if HAS_WEIGHT:
        y *= tl.load(w_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
    if HAS_BIAS:
        y += tl.load(b_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + rows[:, None] * N + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(mean_ptr + rows, mean, mask=row_mask)
    tl.store(rstd_ptr + rows, rstd, mask=row_mask)


@triton.jit
def layer_norm_bwd_kernel(dy_ptr, x_ptr, res_ptr, w_ptr, seed_ptr, mean_ptr, rstd_ptr, dx_ptr, dres_ptr,
                          dw_partial_ptr, db_partial_ptr, M, N, stride_dy, stride_x, stride_res, dropout_p, n_groups,
                          HAS_RESIDUAL: tl.constexpr, HAS_WEIGHT: tl.constexpr, DROPOUT: tl.constexpr,
                          RESIDUAL_GRAD: tl.constexpr, WEIGHT_GRAD: tl.constexpr, BIAS_GRAD: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """ds = rstd (g - mean(g) - xhat mean(g xhat)) with g = dy w; dx = ds * keep / (1 - p), dresidual = ds
    (written to dres only with RESIDUAL_GRAD, i.e. when dropout makes it differ from dx)."""
    group = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    if HAS_WEIGHT:
        w = tl.load(w_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)
    acc_w = tl.zeros([BLOCK_N], dtype=tl.float32)
    acc_b = tl.zeros([BLOCK_N], dtype=tl.float32)
    for tile in range(group, tl.cdiv(M, BLOCK_M), n_groups):
        rows, _, row_mask, mask = _row_tile(tile, M, N, BLOCK_M, BLOCK_N)
        s = _ln_input(x_ptr, res_ptr, seed_ptr, rows, cols, mask, N, stride_x, stride_res, dropout_p,
                      HAS_RESIDUAL, DROPOUT)
        mean = tl.load(mean_ptr + rows, mask=row_mask, other=0.0)
        rstd = tl.load(rstd_ptr + rows, mask=row_mask, other=0.0)
        xhat = tl.where(mask, (s - mean[:, None]) * rstd[:, None], 0.0)
        dy = tl.load(dy_ptr + rows[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        if HAS_WEIGHT:
            g = dy * w[None, :]
        else:
            g = dy
        c_xhat = tl.sum(g * xhat, axis=1) / N
        c_mean = tl.sum(g, axis=1) / N
        ds = (g - xhat * c_xhat[:, None] - c_mean[:, None]) * rstd[:, None]
        if DROPOUT:
            keep = _dropout_keep(seed_ptr, rows, cols, N, dropout_p)
            dx = tl.where(keep, ds * (1.0 / (1.0 - dropout_p)), 0.0)
        else:
            dx = ds
        tl.store(dx_ptr + rows[:, None] * N + cols[None, :], dx.to(dx_ptr.dtype.element_ty), mask=mask)
        if RESIDUAL_GRAD:
            tl.store(dres_ptr + rows[:, None] * N + cols[None, :], ds.to(dres_ptr.dtype.element_ty), mask=mask)
        if WEIGHT_GRAD:
            acc_w += tl.sum(dy * xhat, axis=0)
        if BIAS_GRAD:
            acc_b += tl.sum(dy, axis=0)
    if WEIGHT_GRAD:
        tl.store(dw_partial_ptr + group * N + cols, acc_w, mask=cols < N)
    if BIAS_GRAD:
        tl.store(db_partial_ptr + group * N + cols, acc_b, mask=cols < N)


@triton.jit
def rms_norm_kernel(x_ptr, res_ptr, w_ptr, y_ptr, sum_ptr, rstd_ptr, M, N, stride_x, stride_res, eps,
                    HAS_RESIDUAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Llama's arithmetic: s = x + residual (in x's dtype), y = w * (s * rsqrt(mean(s^2) + eps)).to(x dtype)."""
    rows, cols, row_mask, mask = _row_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N)
    s = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        s += tl.load(res_ptr + rows[:, None] * stride_res + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        s_io = s.to(sum_ptr.dtype.element_ty)
        tl.store(sum_ptr + rows[:, None] * N + cols[None, :], s_io, mask=mask)
        s = s_io.to(tl.float32)
    rstd = tl.rsqrt(tl.sum(s * s, axis=1) / N + eps)
    h = (s * rstd[:, None]).to(x_ptr.dtype.element_ty).to(tl.float32)
    y = h * tl.load(w_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + rows[:, None] * N + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(rstd_ptr + rows, rstd, mask=row_mask)


@triton.jit
def rms_norm_bwd_kernel(dy_ptr, dsum_ptr, s_ptr, w_ptr, rstd_ptr, ds_ptr, dw_partial_ptr, M, N,
                        stride_dy, stride_dsum, stride_s, n_groups, HAS_DSUM: tl.constexpr, WEIGHT_GRAD: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """ds = rstd (g - h mean(g h)) + dsum with g = dy w, h = s rstd; dsum is the gradient of the second output
    s = x + residual (the next residual stream); ds is the gradient of both x and residual."""
    group = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    w = tl.load(w_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)
    acc_w = tl.zeros([BLOCK_N], dtype=tl.float32)
    for tile in range(group, tl.cdiv(M, BLOCK_M), n_groups):
        rows, _, row_mask, mask = _row_tile(tile, M, N, BLOCK_M, BLOCK_N)
        s = tl.load(s_ptr + rows[:, None] * stride_s + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr + rows, mask=row_mask, other=0.0)
        h = s * rstd[:, None]
        dy = tl.load(dy_ptr + rows[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        g = dy * w[None, :]
        ds = (g - h * (tl.sum(g * h, axis=1) / N)[:, None]) * rstd[:, None]
        if HAS_DSUM:
            ds += tl.load(dsum_ptr + rows[:, None] * stride_dsum + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        tl.store(ds_ptr + rows[:, None] * N + cols[None, :], ds.to(ds_ptr.dtype.element_ty), mask=mask)
        if WEIGHT_GRAD:  # the forward multiplies w by h rounded to s's dtype
            acc_w += tl.sum(dy * h.to(s_ptr.dtype.element_ty).to(tl.float32), axis=0)
    if WEIGHT_GRAD:
        tl.store(dw_partial_ptr + group * N + cols, acc_w, mask=cols < N)


@triton.jit
def norm_weight_grad_kernel(pw_ptr, pb_ptr, dw_ptr, db_ptr, N, n_groups, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
                            BLOCK_N: tl.constexpr):
    """dw[cols] (and db[cols]) = sum over groups of the float32 partial sums, groups in order."""
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = cols < N
    acc_w = tl.zeros([BLOCK_N], dtype=tl.float32)
    acc_b = tl.zeros([BLOCK_N], dtype=tl.float32)
    for group in range(n_groups):
        if HAS_W:
            acc_w += tl.load(pw_ptr + group * N + cols, mask=mask, other=0.0)
        if HAS_B:
            acc_b += tl.load(pb_ptr + group * N + cols, mask=mask, other=0.0)
    if HAS_W:
        tl.store(dw_ptr + cols, acc_w.to(dw_ptr.dtype.element_ty), mask=mask)
    if HAS_B:
        tl.store(db_ptr + cols, acc_b.to(db_ptr.dtype.element_ty), mask=mask)


@triton.jit
def dropout_mask_kernel(seed_ptr, keep_ptr, M, N, dropout_p, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rows, cols, _, mask = _row_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N)
    keep = _dropout_keep(seed_ptr, rows, cols, N, dropout_p)
    tl.store(keep_ptr + rows[:, None] * N + cols[None, :], keep.to(tl.int8), mask=mask)


# -- launchers ------------------------------------------------------------------------------------

def _rows(t: torch.Tensor) -> torch.Tensor:
    """`t` as (M, N) rows with a contiguous last dim: a view when the layout allows, else one copy."""
    t = t.reshape(-1, t.shape[-1])
    return t if t.stride(-1) == 1 or t.shape[-1] == 1 else t.contiguous()


def _tiles(M: int, N: int, backward: bool = False) -> tuple:
    """(BLOCK_M, BLOCK_N, num_warps): whole rows, several per program while a tile stays near _TILE elements.
    The backward holds about twice the live values per element, so it gets twice the warps. Compiled for sm_90
    (ptxas -v, bfloat16): no register spills up to N = 4096; from 8192 on the backward spills, and at 65536
    both directions do (correct, slower)."""
    block_n = _common.next_pow2(N)
    block_m = min(_common.next_pow2(M), max(1, _TILE // block_n))
    elems = block_m * block_n * (2 if backward else 1)
    warps = 4 if elems <= 2048 else 8 if elems <= 4096 else 16 if elems <= 32768 else 32
    return block_m, block_n, warps


@functools.cache
def _target_programs(device: torch.device) -> int:
    """Backward programs (each with its own row of partial weight sums): 2 per SM on a GPU; 4 in Triton's
    CPU interpreter (which runs programs one after another)."""
    if device.type == "cuda":
        return 2 * torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def _weight_grads(partial_w, partial_b, weight, bias, N: int, n_groups: int) -> tuple:
    dw = _common.empty_like(weight) if partial_w is not None else None
    db = _common.empty_like(bias) if partial_b is not None else None
    if dw is None and db is None:
        return dw, db
    block_n = min(_common.next_pow2(N), 1024)
    _common.count("norm_weight_grad")
    norm_weight_grad_kernel[(triton.cdiv(N, block_n),)](
        partial_w if partial_w is not None else partial_b, partial_b if partial_b is not None else partial_w,
        dw if dw is not None else db, db if db is not None else dw, N, n_groups,
        HAS_W=dw is not None, HAS_B=db is not None, BLOCK_N=block_n, num_warps=4)
    return dw, db


def _layer_norm_launch(x, weight, bias, residual, seed, eps: float, dropout_p: float):
    N = x.shape[-1]
    y = _common.empty(x.shape, dtype=x.dtype, device=x.device)
    mean = _common.empty(x.shape[:-1], dtype=torch.float32, device=x.device)
    rstd = _common.empty(x.shape[:-1], dtype=torch.float32, device=x.device)
    if x.numel() == 0:
        return y, mean, rstd
    x2 = _rows(x)
    r2 = _rows(residual) if residual is not None else x2
    M = x2.shape[0]
    block_m, block_n, warps = _tiles(M, N)
    _common.count("layer_norm")
    layer_norm_kernel[(triton.cdiv(M, block_m),)](
        x2, r2, weight if weight is not None else x2, bias if bias is not None else x2,
        seed if seed is not None else x2, y, mean, rstd, M, N, x2.stride(0), r2.stride(0), eps, dropout_p,
        HAS_RESIDUAL=residual is not None, HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None,
        DROPOUT=seed is not None, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps)
    return y, mean, rstd


def _layer_norm_bwd_launch(dy, x, weight, bias, residual, seed, mean, rstd, dropout_p: float,
                           residual_grad: bool, weight_grad: bool, bias_grad: bool) -> list:
    N = x.shape[-1]
    dx = _common.empty(x.shape, dtype=x.dtype, device=x.device)
    dres = _common.empty(x.shape, dtype=x.dtype, device=x.device) if residual_grad else None
    M = x.numel() // N
    block_m, block_n, warps = _tiles(M, N, backward=True)
    n_groups = max(1, min(triton.cdiv(M, block_m), _target_programs(x.device)))
    partial_w = _common.empty((n_groups, N), dtype=torch.float32, device=x.device) if weight_grad else None
    partial_b = _common.empty((n_groups, N), dtype=torch.float32, device=x.device) if bias_grad else None
    if M > 0:
        x2, dy2 = _rows(x), _rows(dy)
        r2 = _rows(residual) if residual is not None else x2
        _common.count("layer_norm_bwd")
        layer_norm_bwd_kernel[(n_groups,)](
            dy2, x2, r2, weight if weight is not None else x2, seed if seed is not None else x2, mean, rstd, dx,
            dres if dres is not None else dx, partial_w if partial_w is not None else dx,
            partial_b if partial_b is not None else dx, M, N, dy2.stride(0), x2.stride(0), r2.stride(0),
            dropout_p, n_groups, HAS_RESIDUAL=residual is not None, HAS_WEIGHT=weight is not None,
            DROPOUT=seed is not None, RESIDUAL_GRAD=residual_grad, WEIGHT_GRAD=weight_grad, BIAS_GRAD=bias_grad,
            BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps)
    else:  # no rows: the weight gradients are sums over nothing
        for p in (partial_w, partial_b):
            if p is not None:
                p.zero_()
    dw, db = _weight_grads(partial_w, partial_b, weight, bias, N, n_groups)
    return [t for t in (dx, dres, dw, db) if t is not None]


def _rms_norm_launch(x, weight, residual, eps: float):
    N = x.shape[-1]
    y = _common.empty(x.shape, dtype=torch.promote_types(x.dtype, weight.dtype), device=x.device)
    summed = _common.empty(x.shape, dtype=x.dtype, device=x.device) if residual is not None else None
    rstd = _common.empty(x.shape[:-1], dtype=torch.float32, device=x.device)
    if x.numel() > 0:
        x2 = _rows(x)
        r2 = _rows(residual) if residual is not None else x2
        M = x2.shape[0]
        block_m, block_n, warps = _tiles(M, N)
        _common.count("rms_norm")
        rms_norm_kernel[(triton.cdiv(M, block_m),)](
            x2, r2, weight, y, summed if summed is not None else y, rstd, M, N, x2.stride(0), r2.stride(0), eps,
            HAS_RESIDUAL=residual is not None, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps)
    return y, summed, rstd


def _rms_norm_bwd_launch(dy, dsum, s, weight, rstd, weight_grad: bool) -> list:
    N = s.shape[-1]
    ds = _common.empty(s.shape, dtype=s.dtype, device=s.device)
    M = s.numel() // N
    block_m, block_n, warps = _tiles(M, N, backward=True)
    n_groups = max(1, min(triton.cdiv(M, block_m), _target_programs(s.device)))
    partial_w = _common.empty((n_groups, N), dtype=torch.float32, device=s.device) if weight_grad else None
    if M > 0:
        s2, dy2 = _rows(s), _rows(dy)
        dsum2 = _rows(dsum) if dsum is not None else dy2
        _common.count("rms_norm_bwd")
        rms_norm_bwd_kernel[(n_groups,)](
            dy2, dsum2, s2, weight, rstd, ds, partial_w if partial_w is not None else ds, M, N,
            dy2.stride(0), dsum2.stride(0), s2.stride(0), n_groups, HAS_DSUM=dsum is not None,
            WEIGHT_GRAD=weight_grad, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps)
    elif partial_w is not None:
        partial_w.zero_()
    dw, _ = _weight_grads(partial_w, None, weight, None, N, n_groups)
    return [ds] if dw is None else [ds, dw]


# -- custom ops (torch.compile / CUDA graphs see these) -------------------------------------------

@torch.library.custom_op("fastformers::layer_norm", mutates_args=())
def _layer_norm_op(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                   residual: torch.Tensor | None, seed: torch.Tensor | None, eps: float,
                   dropout_p: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(LayerNorm(dropout(x) + residual), mean, rstd); dropout (keyed by `seed`) only when seed is given."""
    return _layer_norm_launch(x, weight, bias, residual, seed, eps, dropout_p)


@_layer_norm_op.register_fake
def _(x, weight, bias, residual, seed, eps, dropout_p):
    stats = x.new_empty(x.shape[:-1], dtype=torch.float32)
    return x.new_empty(x.shape), stats, torch.empty_like(stats)


@torch.library.custom_op("fastformers::layer_norm_bwd", mutates_args=())
def _layer_norm_bwd_op(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None,
                       bias: torch.Tensor | None, residual: torch.Tensor | None, seed: torch.Tensor | None,
                       mean: torch.Tensor, rstd: torch.Tensor, dropout_p: float, residual_grad: bool,
                       weight_grad: bool, bias_grad: bool) -> list[torch.Tensor]:
    """[dx] + [dresidual if residual_grad] + [dweight if weight_grad] + [dbias if bias_grad]; dresidual is only
    separate from dx under dropout."""
    return _layer_norm_bwd_launch(grad, x, weight, bias, residual, seed, mean, rstd, dropout_p,
                                  residual_grad, weight_grad, bias_grad)


@_layer_norm_bwd_op.register_fake
def _(grad, x, weight, bias, residual, seed, mean, rstd, dropout_p, residual_grad, weight_grad, bias_grad):
    out = [x.new_empty(x.shape)] + ([x.new_empty(x.shape)] if residual_grad else [])
    out += [weight.new_empty(weight.shape)] if weight_grad else []
    return out + ([bias.new_empty(bias.shape)] if bias_grad else [])


def _layer_norm_setup(ctx, inputs, output):
    x, weight, bias, residual, seed, _, dropout_p = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, weight, bias, residual, seed, mean, rstd)
    ctx.dropout_p = dropout_p
    ctx.mark_non_differentiable(mean, rstd)


def _layer_norm_backward(ctx, grad, grad_mean, grad_rstd):
    x, weight, bias, residual, seed, mean, rstd = ctx.saved_tensors
    needs = ctx.needs_input_grad
    residual_grad = residual is not None and needs[3] and seed is not None
    weight_grad = weight is not None and needs[1]
    bias_grad = bias is not None and needs[2]
    grads = iter(_layer_norm_bwd_op(grad, x, weight, bias, residual, seed, mean, rstd, ctx.dropout_p,
                                    residual_grad, weight_grad, bias_grad))
    dx = next(grads)
    dres = next(grads) if residual_grad else (dx if residual is not None and needs[3] else None)
    dw = next(grads) if weight_grad else None
    db = next(grads) if bias_grad else None
    return dx if needs[0] else None, dw, db, dres, None, None, None


_layer_norm_op.register_autograd(_layer_norm_backward, setup_context=_layer_norm_setup)


@torch.library.custom_op("fastformers::rms_norm", mutates_args=())
def _rms_norm_op(x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(RMSNorm(x), rstd)."""
    y, _, rstd = _rms_norm_launch(x, weight, None, eps)
    return y, rstd


@_rms_norm_op.register_fake
def _(x, weight, eps):
    return x.new_empty(x.shape, dtype=torch.promote_types(x.dtype, weight.dtype)), \
        x.new_empty(x.shape[:-1], dtype=torch.float32)


@torch.library.custom_op("fastformers::add_rms_norm", mutates_args=())
def _add_rms_norm_op(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                     eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """rms_norm with a residual: (RMSNorm(x + residual), x + residual, rstd)."""
    return _rms_norm_launch(x, weight, residual, eps)


@_add_rms_norm_op.register_fake
def _(x, residual, weight, eps):
    return x.new_empty(x.shape, dtype=torch.promote_types(x.dtype, weight.dtype)), x.new_empty(x.shape), \
        x.new_empty(x.shape[:-1], dtype=torch.float32)


@torch.library.custom_op("fastformers::rms_norm_bwd", mutates_args=())
def _rms_norm_bwd_op(grad: torch.Tensor, grad_sum: torch.Tensor | None, s: torch.Tensor, weight: torch.Tensor,
                     rstd: torch.Tensor, weight_grad: bool) -> list[torch.Tensor]:
    """[ds] or, with weight_grad, [ds, dweight]; s is the normalised input (x + residual), grad_sum the
    gradient of that sum as an output."""
    return _rms_norm_bwd_launch(grad, grad_sum, s, weight, rstd, weight_grad)


@_rms_norm_bwd_op.register_fake
def _(grad, grad_sum, s, weight, rstd, weight_grad):
    return [s.new_empty(s.shape)] + ([weight.new_empty(weight.shape)] if weight_grad else [])


def _rms_norm_grads(ctx, grad, grad_sum, s, weight, rstd):
    if grad is None:  # only the sum was used downstream
        grad = torch.zeros(s.shape, dtype=torch.promote_types(s.dtype, weight.dtype), device=s.device)
    weight_grad = ctx.needs_input_grad[ctx.weight_index]
    grads = _rms_norm_bwd_op(grad, grad_sum, s, weight, rstd, weight_grad)
    return grads[0], (grads[1] if weight_grad else None)


def _rms_norm_setup(ctx, inputs, output):
    x, weight, _ = inputs
    ctx.save_for_backward(x, weight, output[1])
    ctx.weight_index = 1
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)


def _rms_norm_backward(ctx, grad, grad_rstd):
    x, weight, rstd = ctx.saved_tensors
    dx, dw = _rms_norm_grads(ctx, grad, None, x, weight, rstd)
    return dx, dw, None


_rms_norm_op.register_autograd(_rms_norm_backward, setup_context=_rms_norm_setup)


def _add_rms_norm_setup(ctx, inputs, output):
    _, _, weight, _ = inputs
    _, summed, rstd = output
    ctx.save_for_backward(summed, weight, rstd)
    ctx.weight_index = 2
    ctx.mark_non_differentiable(rstd)
    ctx.set_materialize_grads(False)


def _add_rms_norm_backward(ctx, grad, grad_sum, grad_rstd):
    summed, weight, rstd = ctx.saved_tensors
    ds, dw = _rms_norm_grads(ctx, grad, grad_sum, summed, weight, rstd)
    return ds, ds, dw, None


_add_rms_norm_op.register_autograd(_add_rms_norm_backward, setup_context=_add_rms_norm_setup)


# -- public functions (the `fastformers.ops` triton backend) --------------------------------------

def draw_dropout_seed(device) -> torch.Tensor:
    """The (1,) int64 Philox seed of one dropout call, drawn from torch's generator of `device`."""
    return torch.randint(0, 2**63 - 1, (1,), dtype=torch.int64, device=device)


def layer_norm(x, weight, bias, eps: float, *, residual=None, dropout_p: float = 0.0, training: bool = False):
    """LayerNorm(dropout(x) + residual) over the last dim; weight and bias (N,) or None.

    layer_norm_kernel / layer_norm_bwd_kernel / norm_weight_grad_kernel. Layout: x and residual rows with a
    contiguous last dim and any row stride (else copied once); output contiguous in x's dtype. The forward
    keeps float32 mean and rstd per row; the backward recomputes dropout(x) + residual from x, residual and
    the seed (no stored mask or sum) and gives dx (through the mask and 1/(1-p)), dresidual, dweight and
    dbias (weight/bias sums deterministic). Dropout runs only when training and dropout_p > 0, keyed by a
    seed from `draw_dropout_seed`. Limits: float32/float16/bfloat16, weight/bias/residual of x's dtype,
    N <= 65536. Not yet measured on a GPU.
    """
    seed = draw_dropout_seed(x.device) if training and dropout_p > 0 else None
    residual = _full_residual(residual, x)
    return _layer_norm_op(x, weight, bias, residual, seed, float(eps), float(dropout_p) if seed is not None else 0.0)[0]


def rms_norm(x, weight, eps: float, *, residual=None):
    """RMSNorm over the last dim in float32 as Llama does; with `residual`, (rms_norm(x + residual), x + residual).

    rms_norm_kernel / rms_norm_bwd_kernel / norm_weight_grad_kernel. Layout: x and residual rows with a
    contiguous last dim and any row stride (else copied once); outputs contiguous. Output dtype
    promote(x, weight) as in the reference, the sum in x's dtype. The backward reads the normalised input
    (x, or the sum it wrote) and float32 rstd, adds the gradient of the sum output, and gives dx = dresidual
    and a deterministic dweight. Limits: float32/float16/bfloat16, residual of x's dtype, N <= 65536.
    Not yet measured on a GPU.
    """
    if residual is None:
        return _rms_norm_op(x, weight, float(eps))[0]
    out, summed, _ = _add_rms_norm_op(x, _full_residual(residual, x), weight, float(eps))
    return out, summed


def dropout_keep_mask(seed: torch.Tensor, shape, dropout_p: float) -> torch.Tensor:
    """The bool keep mask layer_norm's dropout draws for an input of `shape` with this seed (for tests and
    debugging: the kernels themselves never store it)."""
    N = shape[-1]
    M = 1
    for d in shape[:-1]:
        M *= d
    keep = _common.empty(tuple(shape), dtype=torch.int8, device=seed.device)
    if keep.numel() > 0:
        block_m, block_n, warps = _tiles(M, N)
        _common.count("dropout_mask")
        dropout_mask_kernel[(triton.cdiv(M, block_m),)](seed, keep, M, N, float(dropout_p),
                                                         BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps)
    return keep.bool()


def _rows_reason(x) -> str | None:
    if x.dtype not in _DTYPES:
        return f"x dtype {x.dtype}; the kernel takes float32, float16 or bfloat16"
    if x.dim() == 0 or x.shape[-1] == 0:
        return f"x shape {tuple(x.shape)}; the kernel normalises a non-empty last dimension"
    if x.shape[-1] > MAX_HIDDEN:
        return f"hidden size {x.shape[-1]} > {MAX_HIDDEN} (the kernel keeps one whole row per program)"
    return None


def _param_reason(name: str, p, x, same_dtype: bool) -> str | None:
    if p.dim() != 1 or p.shape[0] != x.shape[-1]:
        return f"{name} shape {tuple(p.shape)} for x {tuple(x.shape)}; the kernel takes a 1-D {name} of x's last dim"
    if same_dtype and p.dtype != x.dtype:
        return f"{name} dtype {p.dtype} differs from x dtype {x.dtype}"
    if p.dtype not in _DTYPES:
        return f"{name} dtype {p.dtype}; the kernel takes float32, float16 or bfloat16"
    if p.device != x.device:
        return f"{name} on {p.device}, x on {x.device}"
    return None


def _broadcasts_to(residual, x) -> bool:
    try:
        return torch.broadcast_shapes(residual.shape, x.shape) == x.shape
    except RuntimeError:
        return False


def _full_residual(residual, x):
    """A residual that broadcasts to x (BERT's position embeddings, (1, seq, hidden)) expanded and
    materialised once: the kernels read one residual row per x row. Autograd sums its gradient back."""
    if residual is None or residual.shape == x.shape:
        return residual
    return residual.expand(x.shape).contiguous()


def _residual_reason(residual, x) -> str | None:
    if residual.shape != x.shape and not _broadcasts_to(residual, x):
        return f"residual shape {tuple(residual.shape)} does not broadcast to x shape {tuple(x.shape)}"
    if residual.dtype != x.dtype:
        return f"residual dtype {residual.dtype} differs from x dtype {x.dtype}"
    if residual.device != x.device:
        return f"residual on {residual.device}, x on {x.device}"
    return None


def layer_norm_unsupported(x, weight, bias, eps: float, *, residual=None, dropout_p: float = 0.0,
                           training: bool = False) -> str | None:
    reason = _rows_reason(x)
    for name, p in (("weight", weight), ("bias", bias)):
        if reason is None and p is not None:
            reason = _param_reason(name, p, x, same_dtype=True)
    if reason is None and residual is not None:
        reason = _residual_reason(residual, x)
    if reason is None and training and not 0.0 <= dropout_p < 1.0:
        reason = f"dropout_p={dropout_p}; the kernel takes 0 <= p < 1"
    return reason or _common.device_reason(x)


def rms_norm_unsupported(x, weight, eps: float, *, residual=None) -> str | None:
    reason = _rows_reason(x)
    if reason is None:
        reason = "weight is None; RMSNorm needs a weight" if weight is None else \
            _param_reason("weight", weight, x, same_dtype=False)
    if reason is None and residual is not None:
        reason = _residual_reason(residual, x)
    return reason or _common.device_reason(x)
