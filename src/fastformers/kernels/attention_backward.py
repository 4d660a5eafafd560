"""Attention backward kernels (flash-attention-2 style): dq, dk, dv from grad_out, q, k, v, out and lse.

With P = softmax(scale * q k^T) over the keys a query may see and lse its natural log-normaliser
(P_ij = exp(scale * q_i.k_j - lse_i)):

    delta_i = sum_d grad_out_id * out_id          (= sum_j P_ij dP_ij)
    dP_ij   = grad_out_i . v_j
    dS_ij   = P_ij (dP_ij - delta_i)
    dv_j    = sum_i P_ij grad_out_i       dk_j = scale sum_i dS_ij q_i       dq_i = scale sum_j dS_ij k_j

Three launches per call, no atomics, so the result is deterministic:
  1. `attention_bwd_preprocess_kernel`: delta (float32, laid out like lse).
  2. `attention_bwd_dkdv_kernel`: one program per (key block, kv head, sequence) holds its k, v tile and fp32
     dk, dv accumulators, and walks the query blocks of every query head of its GQA group.
  3. `attention_bwd_dq_kernel`: one program per (query block, head, sequence) walks the key blocks.
Causal programs split their walk into the blocks that straddle the diagonal (masked) and the blocks that
are wholly visible (no mask math). P is rebuilt from lse, never stored; a row with lse = +inf (no visible
key) gets P = 0, so it adds nothing and its dq is 0. A key hidden by the key-padding mask gets dk = dv = 0.

Layouts: padded q, out, grad_out (batch, heads, q_len, head_dim), k, v (batch, kv_heads, kv_len, head_dim),
lse (batch, heads, q_len); packed (varlen) q, out, grad_out (total_q, heads, head_dim), k, v
(total_k, kv_heads, head_dim), lse (heads, total_q) with cu_seqlens offsets (int32/int64, batch + 1, the
last one equal to the total). Any strides (passed to the kernels). Outputs are new contiguous tensors in
the input dtype; the math is float32 (fp32 dots in IEEE precision, fp16/bf16 dots on tensor cores with
fp32 accumulation).

Limits (`attention_bwd_unsupported` says why a call is refused; the ops raise ValueError): float32 / float16 /
bfloat16, one dtype for q, k, v, out, grad_out; head_dim 1 .. 256 (padded to a power of two >= 16 inside the
kernels); heads a multiple of kv_heads; lse float32. Varlen: max_seqlen_* at least the longest sequence and
cu_seqlens_*[-1] the total token count (not checked: that would read the device). On CPU tensors (Triton's
interpreter) bf16 dots run in float32, see `_dot`. Block sizes by head-dim block: <= 64:
dkdv 32x128 (queries x keys), dq 128x32, 4 warps, 3 stages; 128: the same tiles with 8 warps, 2 stages;
256: dkdv 16x64, dq 64x16, 8 warps, 1 stage; every tile is clamped to the sequence lengths (>= 16).
Not yet measured on a GPU: these block sizes are a starting point, not tuned.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from . import _common

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_MAX_HEAD_DIM = 256
_LOG2E = 1.4426950408889634


# -- kernels --------------------------------------------------------------------------------------

@triton.jit
def _seq_bounds(cu_ptr, b, fixed_len, VARLEN: tl.constexpr):
    """(first token, length) of sequence b: from cu_seqlens when VARLEN, else (0, fixed_len)."""
    if VARLEN:
        start = tl.load(cu_ptr + b).to(tl.int64)
        length = (tl.load(cu_ptr + b + 1).to(tl.int64) - start).to(tl.int32)
    else:
        start = tl.zeros([], dtype=tl.int64)
        length = tl.zeros([], dtype=tl.int32) + fixed_len
    return start, length


@triton.jit
def _dot(a, b, UPCAST: tl.constexpr):
    """a @ b accumulated in float32, with `a` (float32 P or dS) rounded to b's dtype for the tensor cores.

    UPCAST keeps both operands in float32 instead. Triton's CPU interpreter multiplies the bit patterns of
    bf16 tl.dot operands (triton-lang/triton#11584) and rounds float32 -> bf16 toward zero, so the launchers
    set it for bf16 on CPU tensors only (never on a GPU): the interpreter then checks the same algorithm
    without the bf16 rounding of P and dS."""
    if UPCAST:
        c = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        c = tl.dot(a.to(b.dtype), b, input_precision="ieee")
    return c


@triton.jit
def attention_bwd_preprocess_kernel(o_ptr, do_ptr, delta_ptr, cu_q_ptr, Q_LEN, D,
                                    so_b, so_h, so_m, so_d, sdo_b, sdo_h, sdo_m, sdo_d, sl_b, sl_h, sl_m,
                                    VARLEN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """delta[b, h, m] = sum_d out * grad_out in float32; grid (query blocks, heads, sequences)."""
    h = tl.program_id(1).to(tl.int64)
    b = tl.program_id(2)
    q_start, q_len = _seq_bounds(cu_q_ptr, b, Q_LEN, VARLEN)
    m0 = tl.program_id(0) * BLOCK_M
    if m0 >= q_len:
        return
    b = b.to(tl.int64)
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    rows = q_start + offs_m
    m_ok = offs_m < q_len
    mask = m_ok[:, None] & (offs_d < D)[None, :]
    o = tl.load(o_ptr + b * so_b + h * so_h + rows[:, None] * so_m + offs_d[None, :] * so_d, mask=mask, other=0.0)
    do = tl.load(do_ptr + b * sdo_b + h * sdo_h + rows[:, None] * sdo_m + offs_d[None, :] * sdo_d,
                 mask=mask, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)
    tl.store(delta_ptr + b * sl_b + h * sl_h + rows * sl_m, delta, mask=m_ok)


@triton.jit
def _dkdv_blocks(dk, dv, k, v, q_base, do_base, lse_base, delta_base, sq_m, sq_d, sdo_m, sdo_d, sl_m,
                 q_len, m_lo, m_hi, offs_n, offs_d, d_ok, causal_shift, qk_scale_log2,
                 CAUSAL_MASK: tl.constexpr, BLOCK_M: tl.constexpr, UPCAST: tl.constexpr):
    """Add the query blocks m_lo .. m_hi of one head to the (keys x head_dim) accumulators dk, dv.
    Works on transposed scores (keys x queries) so that k, v stay as loaded."""
    for m0 in range(m_lo, m_hi, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        m_ok = offs_m < q_len
        q_t = tl.load(q_base + offs_m[None, :] * sq_m + offs_d[:, None] * sq_d,
                      mask=m_ok[None, :] & d_ok[:, None], other=0.0)  # (D, M)
        do = tl.load(do_base + offs_m[:, None] * sdo_m + offs_d[None, :] * sdo_d,
                     mask=m_ok[:, None] & d_ok[None, :], other=0.0)  # (M, D)
        # rows past the end read lse = +inf: P = 0, like a row that sees no key
        lse2 = tl.load(lse_base + offs_m * sl_m, mask=m_ok, other=float("inf")) * 1.4426950408889634
        delta = tl.load(delta_base + offs_m * sl_m, mask=m_ok, other=0.0)
        s_t = _dot(k, q_t, UPCAST)  # (N, M)
        p_t = tl.exp2(s_t * qk_scale_log2 - lse2[None, :])
        if CAUSAL_MASK:
            p_t = tl.where(offs_n[:, None] <= offs_m[None, :] + causal_shift, p_t, 0.0)
        dv += _dot(p_t, do, UPCAST)
        dp_t = _dot(v, tl.trans(do), UPCAST)  # (N, M)
        ds_t = p_t * (dp_t - delta[None, :])
        dk += _dot(ds_t, tl.trans(q_t), UPCAST)
    return dk, dv


@triton.jit
def attention_bwd_dkdv_kernel(q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, mask_ptr, dk_ptr, dv_ptr,
                              cu_q_ptr, cu_k_ptr, Q_LEN, K_LEN, D, GROUP, qk_scale_log2, scale,
                              sq_b, sq_h, sq_m, sq_d, sk_b, sk_h, sk_n, sk_d, sv_b, sv_h, sv_n, sv_d,
                              sdo_b, sdo_h, sdo_m, sdo_d, sl_b, sl_h, sl_m, sm_b, sm_n, sdk_b, sdk_h, sdk_n,
                              CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr, VARLEN: tl.constexpr,
                              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                              UPCAST: tl.constexpr):
    """dk, dv of one key block of one kv head; grid (key blocks, kv heads, sequences). dk and dv share one
    contiguous layout (strides sdk_*, unit head-dim stride)."""
    kvh = tl.program_id(1).to(tl.int64)
    b = tl.program_id(2)
    q_start, q_len = _seq_bounds(cu_q_ptr, b, Q_LEN, VARLEN)
    k_start, k_len = _seq_bounds(cu_k_ptr, b, K_LEN, VARLEN)
    n0 = tl.program_id(0) * BLOCK_N
    if n0 >= k_len:
        return
    b = b.to(tl.int64)
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    n_ok = offs_n < k_len
    d_ok = offs_d < D
    kv_mask = n_ok[:, None] & d_ok[None, :]
    keys = k_start + offs_n
    k = tl.load(k_ptr + b * sk_b + kvh * sk_h + keys[:, None] * sk_n + offs_d[None, :] * sk_d,
                mask=kv_mask, other=0.0)
    v = tl.load(v_ptr + b * sv_b + kvh * sv_h + keys[:, None] * sv_n + offs_d[None, :] * sv_d,
                mask=kv_mask, other=0.0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    q_end = tl.cdiv(q_len, BLOCK_M) * BLOCK_M
    causal_shift = k_len - q_len  # query m sees key n <= m + causal_shift (bottom-right aligned)
    if CAUSAL:
        m_lo = (tl.maximum(n0 - causal_shift, 0) // BLOCK_M) * BLOCK_M   # first block that sees a key here
        m_full = tl.maximum(n0 + BLOCK_N - 1 - causal_shift, 0)            # first query that sees them all
        m_mid = tl.minimum(tl.cdiv(m_full, BLOCK_M) * BLOCK_M, q_end)
    else:
        m_lo = 0
        m_mid = 0
    for g in range(GROUP):
        h = kvh * GROUP + g
        q_base = q_ptr + b * sq_b + h * sq_h + q_start * sq_m
        do_base = do_ptr + b * sdo_b + h * sdo_h + q_start * sdo_m
        lse_base = lse_ptr + b * sl_b + h * sl_h + q_start * sl_m
        delta_base = delta_ptr + b * sl_b + h * sl_h + q_start * sl_m
        if CAUSAL:
            dk, dv = _dkdv_blocks(dk, dv, k, v, q_base, do_base, lse_base, delta_base, sq_m, sq_d, sdo_m, sdo_d,
                                  sl_m, q_len, m_lo, m_mid, offs_n, offs_d, d_ok, causal_shift, qk_scale_log2,
                                  True, BLOCK_M, UPCAST)
        dk, dv = _dkdv_blocks(dk, dv, k, v, q_base, do_base, lse_base, delta_base, sq_m, sq_d, sdo_m, sdo_d,
                              sl_m, q_len, m_mid, q_end, offs_n, offs_d, d_ok, causal_shift, qk_scale_log2,
                              False, BLOCK_M, UPCAST)
    if HAS_MASK:  # a padding key is seen by no query; its P column is garbage, so select (never multiply)
        keep = tl.load(mask_ptr + b * sm_b + offs_n * sm_n, mask=n_ok, other=0) != 0
        dk = tl.where(keep[:, None], dk, 0.0)
        dv = tl.where(keep[:, None], dv, 0.0)
    out_offs = b * sdk_b + kvh * sdk_h + keys[:, None] * sdk_n + offs_d[None, :]
    tl.store(dk_ptr + out_offs, (dk * scale).to(dk_ptr.dtype.element_ty), mask=kv_mask)
    tl.store(dv_ptr + out_offs, dv.to(dv_ptr.dtype.element_ty), mask=kv_mask)


@triton.jit
def _dq_blocks(dq, q, do, lse2, delta, k_base, v_base, mask_base, sk_n, sk_d, sv_n, sv_d, sm_n,
               k_len, n_lo, n_hi, offs_m, offs_d, d_ok, causal_shift, qk_scale_log2,
               BOUNDS_MASK: tl.constexpr, CAUSAL_MASK: tl.constexpr, HAS_MASK: tl.constexpr,
               BLOCK_N: tl.constexpr, UPCAST: tl.constexpr):
    """Add the key blocks n_lo .. n_hi to the (queries x head_dim) accumulator dq."""
    for n0 in range(n_lo, n_hi, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_ok = offs_n < k_len
        k_t = tl.load(k_base + offs_n[None, :] * sk_n + offs_d[:, None] * sk_d,
                      mask=n_ok[None, :] & d_ok[:, None], other=0.0)  # (D, N)
        v_t = tl.load(v_base + offs_n[None, :] * sv_n + offs_d[:, None] * sv_d,
                      mask=n_ok[None, :] & d_ok[:, None], other=0.0)  # (D, N)
        s = _dot(q, k_t, UPCAST)  # (M, N)
        p = tl.exp2(s * qk_scale_log2 - lse2[:, None])
        if BOUNDS_MASK:
            p = tl.where(n_ok[None, :], p, 0.0)
        if CAUSAL_MASK:
            p = tl.where(offs_n[None, :] <= offs_m[:, None] + causal_shift, p, 0.0)
        if HAS_MASK:
            keep = tl.load(mask_base + offs_n * sm_n, mask=n_ok, other=0) != 0
            p = tl.where(keep[None, :], p, 0.0)
        dp = _dot(do, v_t, UPCAST)  # (M, N)
        ds = p * (dp - delta[:, None])
        dq += _dot(ds, tl.trans(k_t), UPCAST)
    return dq


@triton.jit
def attention_bwd_dq_kernel(q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, mask_ptr, dq_ptr,
                            cu_q_ptr, cu_k_ptr, Q_LEN, K_LEN, D, GROUP, qk_scale_log2, scale,
                            sq_b, sq_h, sq_m, sq_d, sk_b, sk_h, sk_n, sk_d, sv_b, sv_h, sv_n, sv_d,
                            sdo_b, sdo_h, sdo_m, sdo_d, sl_b, sl_h, sl_m, sm_b, sm_n, sdq_b, sdq_h, sdq_m,
                            CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr, VARLEN: tl.constexpr,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                            UPCAST: tl.constexpr):
    """dq of one query block of one head; grid (query blocks, heads, sequences). dq is contiguous in
    head_dim (strides sdq_*)."""
    h = tl.program_id(1).to(tl.int64)
    b = tl.program_id(2)
    q_start, q_len = _seq_bounds(cu_q_ptr, b, Q_LEN, VARLEN)
    k_start, k_len = _seq_bounds(cu_k_ptr, b, K_LEN, VARLEN)
    m0 = tl.program_id(0) * BLOCK_M
    if m0 >= q_len:
        return
    b = b.to(tl.int64)
    kvh = h // GROUP
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < q_len
    d_ok = offs_d < D
    rows = q_start + offs_m
    q_mask = m_ok[:, None] & d_ok[None, :]
    q = tl.load(q_ptr + b * sq_b + h * sq_h + rows[:, None] * sq_m + offs_d[None, :] * sq_d, mask=q_mask, other=0.0)
    do = tl.load(do_ptr + b * sdo_b + h * sdo_h + rows[:, None] * sdo_m + offs_d[None, :] * sdo_d,
                 mask=q_mask, other=0.0)
    lse_offs = b * sl_b + h * sl_h + rows * sl_m
    lse2 = tl.load(lse_ptr + lse_offs, mask=m_ok, other=float("inf")) * 1.4426950408889634
    delta = tl.load(delta_ptr + lse_offs, mask=m_ok, other=0.0)
    k_base = k_ptr + b * sk_b + kvh * sk_h + k_start * sk_n
    v_base = v_ptr + b * sv_b + kvh * sv_h + k_start * sv_n
    mask_base = mask_ptr + b * sm_b
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    causal_shift = k_len - q_len
    if CAUSAL:
        # keys below n_full are in range and seen by every row of the block; keys from n_end on by none
        n_end = tl.minimum(tl.maximum(m0 + BLOCK_M + causal_shift, 0), k_len)
        n_full = (tl.minimum(tl.maximum(m0 + 1 + causal_shift, 0), k_len) // BLOCK_N) * BLOCK_N
    else:
        n_end = k_len
        n_full = (k_len // BLOCK_N) * BLOCK_N
    dq = _dq_blocks(dq, q, do, lse2, delta, k_base, v_base, mask_base, sk_n, sk_d, sv_n, sv_d, sm_n,
                    k_len, 0, n_full, offs_m, offs_d, d_ok, causal_shift, qk_scale_log2,
                    False, False, HAS_MASK, BLOCK_N, UPCAST)
    dq = _dq_blocks(dq, q, do, lse2, delta, k_base, v_base, mask_base, sk_n, sk_d, sv_n, sv_d, sm_n,
                    k_len, n_full, n_end, offs_m, offs_d, d_ok, causal_shift, qk_scale_log2,
                    True, CAUSAL, HAS_MASK, BLOCK_N, UPCAST)
    tl.store(dq_ptr + b * sdq_b + h * sdq_h + rows[:, None] * sdq_m + offs_d[None, :],
             (dq * scale).to(dq_ptr.dtype.element_ty), mask=q_mask)


# -- launchers ------------------------------------------------------------------------------------

def attention_bwd_unsupported(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                              *tensors: Optional[torch.Tensor]) -> Optional[str]:
    """Why the backward kernels cannot take these inputs (None when they can). `tensors`: out, grad_out."""
    if q.dtype not in _DTYPES:
        return f"dtype {q.dtype} (supported: float32, float16, bfloat16)"
    if any(t is not None and t.dtype != q.dtype for t in (k, v) + tensors):
        return "q, k, v, out and grad_out must share one dtype"
    if not 1 <= q.shape[-1] <= _MAX_HEAD_DIM or k.shape[-1] != q.shape[-1] or v.shape[-1] != q.shape[-1]:
        return f"head_dim {q.shape[-1]} (q, k and v need one head_dim of at most {_MAX_HEAD_DIM})"
    heads, kv_heads = q.shape[1], k.shape[1]  # dim 1 in the padded and the packed layout
    if kv_heads == 0 or heads % kv_heads:
        return f"{heads} query heads do not split into groups over {kv_heads} kv heads"
    return None


def _check(q, k, v, out, grad_out, lse, dims: int, lse_shape: tuple) -> None:
    if q.dim() != dims or k.dim() != dims or v.dim() != dims:
        raise ValueError(f"attention backward: q, k, v must be {dims}-D, got {q.dim()}, {k.dim()}, {v.dim()}")
    if out.shape != q.shape or grad_out.shape != q.shape or k.shape != v.shape:
        raise ValueError(f"attention backward: out {tuple(out.shape)} and grad_out {tuple(grad_out.shape)} must "
                         f"match q {tuple(q.shape)}, and k {tuple(k.shape)} match v {tuple(v.shape)}")
    if tuple(lse.shape) != lse_shape or lse.dtype != torch.float32:
        raise ValueError(f"attention backward: lse must be float32 {lse_shape}, got {lse.dtype} {tuple(lse.shape)}")
    reason = attention_bwd_unsupported(q, k, v, out, grad_out)
    if reason is not None:
        raise ValueError(f"attention backward kernels cannot run: {reason}")


def _blocks(head_dim: int, max_q: int, max_k: int) -> dict:
    """Tile sizes and launch settings (a starting point; not yet measured on a GPU)."""
    block_d = max(16, _common.next_pow2(head_dim))
    if block_d <= 64:
        dkdv, dq, warps, stages = (32, 128), (128, 32), 4, 3
    elif block_d <= 128:
        dkdv, dq, warps, stages = (32, 128), (128, 32), 8, 2
    else:
        dkdv, dq, warps, stages = (16, 64), (64, 16), 8, 1
    fit_q, fit_k = max(16, _common.next_pow2(max_q)), max(16, _common.next_pow2(max_k))
    return dict(block_d=block_d, dkdv=(min(dkdv[0], fit_q), min(dkdv[1], fit_k)),
                dq=(min(dq[0], fit_q), min(dq[1], fit_k)), warps=warps, stages=stages,
                pre_m=max(1, min(_common.next_pow2(max_q), 64, 8192 // block_d)))


def _launch(name, q, k, v, out, grad_out, lse, mask, cu_q, cu_k, batch, heads, kv_heads, max_q, max_k,
            strides, causal, scale, varlen):
    """Run the three kernels. strides: name -> (batch, head, token, feature) strides of that tensor as the
    kernels index it (batch stride 0 for packed tensors); lse, dq, dk/dv: (batch, head, token)."""
    head_dim = q.shape[-1]
    dq, dk, dv = _common.empty_like(q), _common.empty_like(k), _common.empty_like(v)  # contiguous: new tensors
    delta = _common.empty(lse.shape, dtype=torch.float32, device=q.device)
    if batch == 0 or heads == 0:
        return dq, dk, dv
    cfg = _blocks(head_dim, max_q, max_k)
    s = strides
    dummy = lse  # stands in for absent pointer arguments (never read)
    mask_ptr, sm = (mask, (mask.stride(0), mask.stride(1))) if mask is not None else (dummy, (0, 0))
    cu_q_ptr, cu_k_ptr = (cu_q, cu_k) if varlen else (dummy, dummy)
    group = heads // kv_heads
    upcast = q.dtype == torch.bfloat16 and q.device.type != "cuda"  # see _dot: the CPU interpreter only
    common = dict(CAUSAL=causal, HAS_MASK=mask is not None, VARLEN=varlen, BLOCK_D=cfg["block_d"], UPCAST=upcast,
                  num_warps=cfg["warps"], num_stages=cfg["stages"])
    args_in = (cu_q_ptr, cu_k_ptr, max_q, max_k, head_dim, group, scale * _LOG2E, scale,
               *s["q"], *s["k"], *s["v"], *s["do"], *s["lse"], *sm)
    if max_q > 0:
        _common.count(f"{name}_preprocess")
        grid = (triton.cdiv(max_q, cfg["pre_m"]), heads, batch)
        attention_bwd_preprocess_kernel[grid](out, grad_out, delta, cu_q_ptr, max_q, head_dim,
                                              *s["out"], *s["do"], *s["lse"], VARLEN=varlen,
                                              BLOCK_M=cfg["pre_m"], BLOCK_D=cfg["block_d"])
    if max_k > 0:
        _common.count(f"{name}_dkdv")
        block_m, block_n = cfg["dkdv"]
        grid = (triton.cdiv(max_k, block_n), kv_heads, batch)
        attention_bwd_dkdv_kernel[grid](q, k, v, grad_out, lse, delta, mask_ptr, dk, dv, *args_in, *s["dk"],
                                        BLOCK_M=block_m, BLOCK_N=block_n, **common)
    if max_q > 0:
        _common.count(f"{name}_dq")
        block_m, block_n = cfg["dq"]
        grid = (triton.cdiv(max_q, block_m), heads, batch)
        attention_bwd_dq_kernel[grid](q, k, v, grad_out, lse, delta, mask_ptr, dq, *args_in, *s["dq"],
                                      BLOCK_M=block_m, BLOCK_N=block_n, **common)
    return dq, dk, dv


def _attention_bwd(grad_out, q, k, v, out, lse, attention_mask, causal, scale):
    batch, heads, q_len, _ = q.shape
    kv_heads, kv_len = k.shape[1], k.shape[2]
    _check(q, k, v, out, grad_out, lse, 4, (batch, heads, q_len))
    mask = None
    if attention_mask is not None:
        if tuple(attention_mask.shape) != (batch, kv_len):
            raise ValueError(f"attention backward: attention_mask must be (batch, kv_len) = {(batch, kv_len)}, "
                             f"got {tuple(attention_mask.shape)}")
        mask = (attention_mask if attention_mask.dtype == torch.bool else attention_mask != 0).view(torch.uint8)
    lse = lse.contiguous()  # delta gets the same layout
    strides = {name: t.stride() for name, t in (("q", q), ("k", k), ("v", v), ("out", out), ("do", grad_out))}
    strides["lse"] = lse.stride()
    strides["dq"] = (heads * q_len * q.shape[3], q_len * q.shape[3], q.shape[3])
    strides["dk"] = (kv_heads * kv_len * k.shape[3], kv_len * k.shape[3], k.shape[3])
    return _launch("attention_bwd", q, k, v, out, grad_out, lse, mask, None, None, batch, heads, kv_heads,
                   q_len, kv_len, strides, causal, scale, varlen=False)


def _varlen_attention_bwd(grad_out, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                          causal, scale):
    total_q, heads, head_dim = q.shape
    total_k, kv_heads = k.shape[0], k.shape[1]
    _check(q, k, v, out, grad_out, lse, 3, (heads, total_q))
    if cu_seqlens_q.shape != cu_seqlens_k.shape or cu_seqlens_q.dim() != 1 or cu_seqlens_q.numel() < 1:
        raise ValueError(f"varlen attention backward: cu_seqlens_q {tuple(cu_seqlens_q.shape)} and cu_seqlens_k "
                         f"{tuple(cu_seqlens_k.shape)} must both be (batch + 1,)")
    if cu_seqlens_q.dtype not in (torch.int32, torch.int64) or cu_seqlens_k.dtype not in (torch.int32, torch.int64):
        raise ValueError("varlen attention backward: cu_seqlens must be int32 or int64")
    lse = lse.contiguous()

    def packed(t):  # (token, head, feature) -> (batch, head, token, feature) strides
        return (0, t.stride(1), t.stride(0), t.stride(2))

    strides = {name: packed(t) for name, t in (("q", q), ("k", k), ("v", v), ("out", out), ("do", grad_out))}
    strides["lse"] = (0, lse.stride(0), lse.stride(1))
    strides["dq"] = (0, head_dim, heads * head_dim)
    strides["dk"] = (0, head_dim, kv_heads * head_dim)
    return _launch("varlen_attention_bwd", q, k, v, out, grad_out, lse, None, cu_seqlens_q.contiguous(),
                   cu_seqlens_k.contiguous(), cu_seqlens_q.numel() - 1, heads, kv_heads,
                   max_seqlen_q if total_q else 0, max_seqlen_k if total_k else 0, strides, causal, scale,
                   varlen=True)


# -- custom ops (torch.compile / CUDA graphs see these) -------------------------------------------

@torch.library.custom_op("fastformers::attention_bwd", mutates_args=())
def _attention_bwd_op(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      out: torch.Tensor, lse: torch.Tensor, attention_mask: Optional[torch.Tensor], causal: bool,
                      scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) of padded attention; lse (batch, heads, q_len) float32, +inf for a row with no key."""
    return _attention_bwd(grad_out, q, k, v, out, lse, attention_mask, causal, scale)


@_attention_bwd_op.register_fake
def _(grad_out, q, k, v, out, lse, attention_mask, causal, scale):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


@torch.library.custom_op("fastformers::varlen_attention_bwd", mutates_args=())
def _varlen_attention_bwd_op(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             out: torch.Tensor, lse: torch.Tensor, cu_seqlens_q: torch.Tensor,
                             cu_seqlens_k: torch.Tensor, max_seqlen_q: int, max_seqlen_k: int, causal: bool,
                             scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) of packed varlen attention; lse (heads, total_q) float32."""
    return _varlen_attention_bwd(grad_out, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                 max_seqlen_k, causal, scale)


@_varlen_attention_bwd_op.register_fake
def _(grad_out, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, scale):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)
