"""Flash-attention forward kernels: batched (key-padding mask, causal, grouped-query), flash-decoding, varlen.

Semantics are those of `fastformers.ops.attention_reference` / `varlen_attention_reference`: softmax(scale *
q k^T) v over the keys a query may see; `causal` aligns the diagonal bottom right (query i of q_len sees keys
0 .. kv_len - q_len + i); a query that sees no key gets zeros and log-sum-exp +inf.

Every kernel tiles over keys with an online softmax (running max m, running sum l, unnormalised fp32
accumulator), so no score matrix is materialised; scores are kept in log2 units (scale * log2 e folded in)
and exponentiated with exp2. The key loop runs in two phases: blocks every query of the tile sees in full
(no masks besides the optional key-padding mask), then the blocks on the causal diagonal / kv_len edge
(masked). Besides the output each kernel returns lse = ln sum_j exp(scale q.k_j) in float32, which the
backward (`kernels/attention_backward.py`) uses.

- attention_fwd_kernel: grid (q blocks, heads, batch); q (batch, heads, q_len, head_dim), k/v (batch,
  kv_heads, kv_len, head_dim), any strides with a unit head-dim stride (transposed projections and KV-cache
  slices are read in place). Output (batch, heads, q_len, head_dim) seen through a (batch, q_len, heads,
  head_dim) buffer, so the models' transpose back to (batch, seq, hidden) is free; lse (batch, heads, q_len).
- attention_decode_kernel + attention_decode_reduce_kernel (flash-decoding, q_len <= DECODE_MAX_Q_LEN):
  grid (batch * kv_heads * row blocks, splits); the rows of a program are the q_len queries of every head
  of one GQA group, so each K/V tile is read once per group; keys are split in chunks of at least
  DECODE_MIN_CHUNK keys, as many splits as it takes to give the GPU about DECODE_TARGET_PROGRAMS programs
  (a single sequence with a long cache still fills it); each split writes a normalised partial output and
  its lse to a float32 workspace, reduced by the second kernel. With one split the first kernel writes
  the result directly (one launch). It returns the same (out, lse) as the tiled kernel, so it is chosen by
  shape alone (inside the custom op) and gradients go through the same backward.
- varlen_attention_fwd_kernel: grid (q blocks of max_seqlen_q, heads, batch); packed q (total_q, heads,
  head_dim), k/v (total_k, kv_heads, head_dim), cu_seqlens int32/int64; output (total_q, heads, head_dim)
  contiguous, lse (heads, total_q). max_seqlen_q must be at least the longest q sequence (not checked:
  that would cost a device sync).

Limits: float32/float16/bfloat16 (q, k, v of one dtype), head_dim <= 256 (the head-dim block is padded to
a power of two >= 16 and masked), v's head_dim equal to q/k's. fp32 dots use input_precision="ieee".
Block sizes are a first guess for an H100 (not yet measured on a GPU).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from . import _common

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_HEAD_DIM = 256
_LOG2E = 1.4426950408889634

# Knobs (module level so tests can shrink them; not part of the op's semantics).
FWD_BLOCKS: tuple | None = None  # (BLOCK_M, BLOCK_N) override for every kernel here
DECODE_MAX_Q_LEN = 8           # q_len up to this runs on the flash-decoding kernels
DECODE_MIN_CHUNK = 256         # fewest keys per split
DECODE_MAX_SPLITS = 128
DECODE_TARGET_PROGRAMS = 528   # about 4 programs per SM of an H100 (132 SMs)


# -- kernels --------------------------------------------------------------------------------------

@triton.jit
def _dot(a, b, UPCAST: tl.constexpr):
    """a @ b accumulated in float32, `a` (the float32 P for P @ V) rounded to b's dtype for the tensor cores;
    fp32 operands in full precision, not TF32. UPCAST keeps both operands in float32 instead: Triton's CPU
    interpreter multiplies the bit patterns of bf16 tl.dot operands (triton-lang/triton#11584), so the
    launchers set it for bf16 on CPU tensors only (never on a GPU)."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a.to(b.dtype), b, input_precision="ieee")


@triton.jit
def _attend_blocks(acc, l_i, m_i, q, k_base, v_base, km_base, sk_n, sv_n, lo, hi, row_last, qk_scale,
                   BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr,
                   HAS_MASK: tl.constexpr, CHECK: tl.constexpr, UPCAST: tl.constexpr):
    """Fold keys lo .. hi (lo a block start) into the online softmax state (acc, l_i, m_i) of the tile q.
    CHECK: mask keys >= hi and keys past each row's last visible key (row_last); without it every key
    of every block is loaded and kept (but the key-padding mask, if any)."""
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    for start_n in range(lo, hi, BLOCK_N):
        n = start_n + offs_n
        k_ptrs = k_base + n.to(tl.int64)[:, None] * sk_n + offs_d[None, :]
        v_ptrs = v_base + n.to(tl.int64)[:, None] * sv_n + offs_d[None, :]
        if CHECK:
            n_ok = n < hi
            kt = tl.load(k_ptrs, mask=n_ok[:, None] & d_ok[None, :], other=0.0)
        elif BLOCK_D == HEAD_DIM:
            kt = tl.load(k_ptrs)
        else:
            kt = tl.load(k_ptrs, mask=d_ok[None, :], other=0.0)
        s = _dot(q, tl.trans(kt), UPCAST) * qk_scale
        if CHECK:
            s = tl.where((n[None, :] <= row_last[:, None]) & n_ok[None, :], s, float("-inf"))
        if HAS_MASK:
            if CHECK:
                keep = tl.load(km_base + n, mask=n_ok, other=0)
            else:
                keep = tl.load(km_base + n)
            s = tl.where(keep[None, :] != 0, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing seen yet: no -inf - -inf
        p = tl.math.exp2(s - m_use[:, None])
        alpha = tl.math.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, 1)
        if CHECK:
            vt = tl.load(v_ptrs, mask=n_ok[:, None] & d_ok[None, :], other=0.0)
        elif BLOCK_D == HEAD_DIM:
            vt = tl.load(v_ptrs)
        else:
            vt = tl.load(v_ptrs, mask=d_ok[None, :], other=0.0)
        acc = acc * alpha[:, None] + _dot(p, vt, UPCAST)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attend(q, k_base, v_base, km_base, sk_n, sv_n, lo, hi, row_last, row_valid, qk_scale,
            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr,
            HAS_MASK: tl.constexpr, UPCAST: tl.constexpr):
    """Online softmax of the tile q over keys lo .. hi; row_last: each row's last visible key (inclusive,
    at most kv_len - 1). Returns (acc, l, m): unnormalised output, sum and max (log2 units)."""
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    last_min = tl.min(tl.where(row_valid, row_last, hi), 0)
    last_max = tl.max(tl.where(row_valid, row_last, -1), 0)
    hi = tl.minimum(hi, last_max + 1)  # keys no row of the tile sees are not read
    full_hi = tl.maximum(tl.minimum(hi, last_min + 1), lo)
    full_hi = lo + ((full_hi - lo) // BLOCK_N) * BLOCK_N  # whole blocks every row sees
    acc, l_i, m_i = _attend_blocks(acc, l_i, m_i, q, k_base, v_base, km_base, sk_n, sv_n, lo, full_hi,
                                   row_last, qk_scale, BLOCK_N, BLOCK_D, HEAD_DIM, HAS_MASK, False, UPCAST)
    acc, l_i, m_i = _attend_blocks(acc, l_i, m_i, q, k_base, v_base, km_base, sk_n, sv_n, full_hi, hi,
                                   row_last, qk_scale, BLOCK_N, BLOCK_D, HEAD_DIM, HAS_MASK, True, UPCAST)
    return acc, l_i, m_i


@triton.jit
def _finish(acc, l_i, m_i):
    """(output, natural-log lse) of a finished state; rows that saw no key: zeros and +inf."""
    seen = l_i > 0
    l_safe = tl.where(seen, l_i, 1.0)
    lse = tl.where(seen, (m_i + tl.math.log2(l_safe)) * 0.6931471805599453, float("inf"))
    return acc / l_safe[:, None], lse


@triton.jit
def attention_fwd_kernel(q_ptr, k_ptr, v_ptr, km_ptr, o_ptr, lse_ptr, H, GROUPS, Q_LEN, KV_LEN, qk_scale,
                         sq_b, sq_h, sq_m, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n, sm_b, so_b, so_h, so_m,
                         CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr, BLOCK_M: tl.constexpr,
                         BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr,
                         UPCAST: tl.constexpr):
    """One BLOCK_M tile of queries of one (batch, head) against all its keys."""
    pid_m = tl.program_id(0)
    if CAUSAL:  # the tiles with the most keys first
        pid_m = tl.num_programs(0) - 1 - pid_m
    h = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    kvh = (h // GROUPS).to(tl.int64)
    h = h.to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_valid = offs_m < Q_LEN
    tile_mask = row_valid[:, None] & (offs_d < HEAD_DIM)[None, :]
    q = tl.load(q_ptr + b * sq_b + h * sq_h + offs_m.to(tl.int64)[:, None] * sq_m + offs_d[None, :],
                mask=tile_mask, other=0.0)
    if CAUSAL:
        row_last = tl.minimum(offs_m + (KV_LEN - Q_LEN), KV_LEN - 1)
    else:
        row_last = tl.zeros([BLOCK_M], dtype=tl.int32) + (KV_LEN - 1)
    acc, l_i, m_i = _attend(q, k_ptr + b * sk_b + kvh * sk_h, v_ptr + b * sv_b + kvh * sv_h, km_ptr + b * sm_b,
                            sk_n, sv_n, 0, KV_LEN, row_last, row_valid, qk_scale,
                            BLOCK_M, BLOCK_N, BLOCK_D, HEAD_DIM, HAS_MASK, UPCAST)
    out, lse = _finish(acc, l_i, m_i)
    tl.store(o_ptr + b * so_b + h * so_h + offs_m.to(tl.int64)[:, None] * so_m + offs_d[None, :],
             out.to(o_ptr.dtype.element_ty), mask=tile_mask)
    tl.store(lse_ptr + (b * H + h) * Q_LEN + offs_m, lse, mask=row_valid)


@triton.jit
def attention_decode_kernel(q_ptr, k_ptr, v_ptr, km_ptr, o_ptr, lse_ptr, po_ptr, plse_ptr,
                            KV_HEADS, GROUPS, Q_LEN, KV_LEN, CHUNK, N_SPLITS, qk_scale,
                            sq_b, sq_h, sq_m, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n, sm_b, so_b, so_h, so_m,
                            CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr, WRITE_FINAL: tl.constexpr,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                            HEAD_DIM: tl.constexpr, UPCAST: tl.constexpr):
    """Keys split * CHUNK .. (split + 1) * CHUNK for a tile of rows (head g of the group, query i), row =
    g * Q_LEN + i, of one (batch, kv head). WRITE_FINAL (one split): the result; else a partial output
    (normalised) and its lse in log2 units (-inf for none) into the workspace (rows, splits, HEAD_DIM)."""
    pid = tl.program_id(0)
    split = tl.program_id(1)
    n_rows = GROUPS * Q_LEN
    n_row_blocks = tl.cdiv(n_rows, BLOCK_M)
    bk = pid // n_row_blocks
    rows = (pid % n_row_blocks) * BLOCK_M + tl.arange(0, BLOCK_M)
    kvh = (bk % KV_HEADS).to(tl.int64)
    b = (bk // KV_HEADS).to(tl.int64)
    row_valid = rows < n_rows
    i = rows % Q_LEN
    h = kvh * GROUPS + rows // Q_LEN  # int64 (BLOCK_M,)
    offs_d = tl.arange(0, BLOCK_D)
    tile_mask = row_valid[:, None] & (offs_d < HEAD_DIM)[None, :]
    q = tl.load(q_ptr + b * sq_b + (h * sq_h + i.to(tl.int64) * sq_m)[:, None] + offs_d[None, :],
                mask=tile_mask, other=0.0)
    if CAUSAL:
        row_last = tl.minimum(i + (KV_LEN - Q_LEN), KV_LEN - 1)
    else:
        row_last = tl.zeros([BLOCK_M], dtype=tl.int32) + (KV_LEN - 1)
    lo = split * CHUNK
    hi = tl.minimum(lo + CHUNK, KV_LEN)
    acc, l_i, m_i = _attend(q, k_ptr + b * sk_b + kvh * sk_h, v_ptr + b * sv_b + kvh * sv_h, km_ptr + b * sm_b,
                            sk_n, sv_n, lo, hi, row_last, row_valid, qk_scale,
                            BLOCK_M, BLOCK_N, BLOCK_D, HEAD_DIM, HAS_MASK, UPCAST)
    lse_row = (b * KV_HEADS * GROUPS + h) * Q_LEN + i  # row of the (batch, heads, q_len) lse
    if WRITE_FINAL:
        out, lse = _finish(acc, l_i, m_i)
        tl.store(o_ptr + b * so_b + (h * so_h + i.to(tl.int64) * so_m)[:, None] + offs_d[None, :],
                 out.to(o_ptr.dtype.element_ty), mask=tile_mask)
        tl.store(lse_ptr + lse_row, lse, mask=row_valid)
    else:
        seen = l_i > 0
        l_safe = tl.where(seen, l_i, 1.0)
        part = lse_row * N_SPLITS + split
        tl.store(po_ptr + part[:, None] * HEAD_DIM + offs_d[None, :], acc / l_safe[:, None], mask=tile_mask)
        tl.store(plse_ptr + part, tl.where(seen, m_i + tl.math.log2(l_safe), float("-inf")), mask=row_valid)


@triton.jit
def attention_decode_reduce_kernel(po_ptr, plse_ptr, o_ptr, lse_ptr, H, Q_LEN, N_SPLITS, so_b, so_h, so_m,
                                   BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr):
    """Combine the N_SPLITS partial results of one (batch, head, query) row."""
    r = tl.program_id(0).to(tl.int64)
    i = r % Q_LEN
    h = (r // Q_LEN) % H
    b = r // (Q_LEN * H)
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    s_ok = offs_s < N_SPLITS
    plse = tl.load(plse_ptr + r * N_SPLITS + offs_s, mask=s_ok, other=float("-inf"))
    m = tl.max(plse, 0)
    m_use = tl.where(m == float("-inf"), 0.0, m)
    w = tl.math.exp2(plse - m_use)  # 0 for splits that saw no key
    total = tl.sum(w, 0)
    d_ok = offs_d < HEAD_DIM
    part = tl.load(po_ptr + (r * N_SPLITS + offs_s)[:, None] * HEAD_DIM + offs_d[None, :],
                   mask=s_ok[:, None] & d_ok[None, :], other=0.0)
    out = tl.sum(part * w[:, None], 0) / tl.where(total > 0, total, 1.0)
    tl.store(o_ptr + b * so_b + h * so_h + i * so_m + offs_d, out.to(o_ptr.dtype.element_ty), mask=d_ok)
    lse = tl.where(total > 0, (m_use + tl.math.log2(tl.where(total > 0, total, 1.0))) * 0.6931471805599453,
                   float("inf"))
    tl.store(lse_ptr + r, lse)


@triton.jit
def varlen_attention_fwd_kernel(q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr, cu_q_ptr, cu_k_ptr, GROUPS, TOTAL_Q,
                                qk_scale, sq_t, sq_h, sk_t, sk_h, sv_t, sv_h, so_t, so_h,
                                CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                                BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr, UPCAST: tl.constexpr):
    """One BLOCK_M tile of queries of sequence `batch`, one head, against that sequence's keys."""
    pid_m = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2)
    q0 = tl.load(cu_q_ptr + b).to(tl.int64)
    q_len = (tl.load(cu_q_ptr + b + 1) - q0).to(tl.int32)
    k0 = tl.load(cu_k_ptr + b).to(tl.int64)
    kv_len = (tl.load(cu_k_ptr + b + 1) - k0).to(tl.int32)
    n_blocks = tl.cdiv(q_len, BLOCK_M)
    if pid_m >= n_blocks:  # the grid covers max_seqlen_q
        return
    if CAUSAL:
        pid_m = n_blocks - 1 - pid_m
    kvh = (h // GROUPS).to(tl.int64)
    h = h.to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_valid = offs_m < q_len
    tile_mask = row_valid[:, None] & (offs_d < HEAD_DIM)[None, :]
    tokens = q0 + offs_m
    q = tl.load(q_ptr + h * sq_h + tokens[:, None] * sq_t + offs_d[None, :], mask=tile_mask, other=0.0)
    if CAUSAL:
        row_last = tl.minimum(offs_m + (kv_len - q_len), kv_len - 1)
    else:
        row_last = tl.zeros([BLOCK_M], dtype=tl.int32) + (kv_len - 1)
    acc, l_i, m_i = _attend(q, k_ptr + k0 * sk_t + kvh * sk_h, v_ptr + k0 * sv_t + kvh * sv_h, k_ptr,
                            sk_t, sv_t, 0, kv_len, row_last, row_valid, qk_scale,
                            BLOCK_M, BLOCK_N, BLOCK_D, HEAD_DIM, False, UPCAST)
    out, lse = _finish(acc, l_i, m_i)
    tl.store(o_ptr + h * so_h + tokens[:, None] * so_t + offs_d[None, :], out.to(o_ptr.dtype.element_ty),
             mask=tile_mask)
    tl.store(lse_ptr + h * TOTAL_Q + tokens, lse, mask=row_valid)


# -- launchers ------------------------------------------------------------------------------------

def _unit_last(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 or t.shape[-1] <= 1 else t.contiguous()


def _tiles(head_dim: int, dtype: torch.dtype, q_len: int, kv_len: int, on_gpu: bool) -> dict:
    """Block sizes and launch options of the tiled kernels (a first guess for an H100's 228 KB of shared
    memory: fp32 tiles take twice the bytes; head_dim 256 halves the tiles)."""
    block_d = max(16, _common.next_pow2(head_dim))
    if FWD_BLOCKS is not None:
        block_m, block_n = FWD_BLOCKS
    elif dtype == torch.float32:
        block_m, block_n = (64, 32) if block_d <= 128 else (32, 32)
    else:
        block_m, block_n = (128, 64) if block_d <= 128 else (64, 32)
    block_m = min(block_m, max(16, _common.next_pow2(q_len)))
    block_n = min(block_n, max(16, _common.next_pow2(kv_len)))
    stages = 2 if block_d > 128 or dtype == torch.float32 else 3
    return {"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_D": block_d, "HEAD_DIM": head_dim,
            "UPCAST": dtype == torch.bfloat16 and not on_gpu,
            "num_warps": 8 if block_m * block_d >= 128 * 128 else 4, "num_stages": stages}


def _decode_plan(batch: int, kv_heads: int, rows: int, kv_len: int, head_dim: int, dtype: torch.dtype,
                 on_gpu: bool) -> tuple:
    """(launch options, chunk, splits) of the decode kernel: rows = groups * q_len per (batch, kv head)."""
    opts = _tiles(head_dim, dtype, rows, kv_len, on_gpu)
    opts["BLOCK_M"] = min(opts["BLOCK_M"], 64)
    if FWD_BLOCKS is None:  # a long, thin tile: the kernel is bound by reading K and V
        opts["BLOCK_N"] = min(64 if opts["BLOCK_D"] <= 128 else 32, max(16, _common.next_pow2(kv_len)))
    min_chunk = max(int(DECODE_MIN_CHUNK), 1)
    opts["BLOCK_N"] = max(16, min(opts["BLOCK_N"], 1 << (min_chunk.bit_length() - 1)))
    opts["num_warps"] = 4
    block_n = opts["BLOCK_N"]
    programs = batch * kv_heads * triton.cdiv(rows, opts["BLOCK_M"])
    splits = min(triton.cdiv(kv_len, max(min_chunk, block_n)), DECODE_MAX_SPLITS,
                 triton.cdiv(DECODE_TARGET_PROGRAMS, max(programs, 1)))
    splits = max(splits, 1)
    chunk = triton.cdiv(triton.cdiv(max(kv_len, 1), splits), block_n) * block_n
    return opts, chunk, max(triton.cdiv(kv_len, chunk), 1)


def _attention_launch(q, k, v, mask, causal: bool, scale: float):
    B, H, Q, D = q.shape
    KVH, KV = k.shape[1], k.shape[2]
    out = _common.empty((B, Q, H, D), dtype=q.dtype, device=q.device).transpose(1, 2)
    lse = _common.empty((B, H, Q), dtype=torch.float32, device=q.device)
    if B * H * Q == 0:
        return out, lse
    q, k, v = _unit_last(q), _unit_last(k), _unit_last(v)
    has_mask = mask is not None
    km, sm_b = (mask.view(torch.uint8), mask.stride(0)) if has_mask else (k, 0)
    qk_scale = scale * _LOG2E
    groups = H // KVH
    strides = (q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
               v.stride(0), v.stride(1), v.stride(2), sm_b, out.stride(0), out.stride(1), out.stride(2))
    if Q > DECODE_MAX_Q_LEN:
        opts = _tiles(D, q.dtype, Q, KV, q.is_cuda)
        grid = (triton.cdiv(Q, opts["BLOCK_M"]), H, B)
        _common.count("attention_fwd")
        attention_fwd_kernel[grid](q, k, v, km, out, lse, H, groups, Q, KV, qk_scale, *strides,
                                   CAUSAL=causal, HAS_MASK=has_mask, **opts)
        return out, lse
    opts, chunk, splits = _decode_plan(B, KVH, groups * Q, KV, D, q.dtype, q.is_cuda)
    grid = (B * KVH * triton.cdiv(groups * Q, opts["BLOCK_M"]), splits)
    if splits == 1:
        part_out = part_lse = lse  # unused
    else:
        part_out = _common.empty((B * H * Q, splits, D), dtype=torch.float32, device=q.device)
        part_lse = _common.empty((B * H * Q, splits), dtype=torch.float32, device=q.device)
    _common.count("attention_decode")
    attention_decode_kernel[grid](q, k, v, km, out, lse, part_out, part_lse, KVH, groups, Q, KV, chunk, splits,
                                  qk_scale, *strides, CAUSAL=causal, HAS_MASK=has_mask,
                                  WRITE_FINAL=splits == 1, **opts)
    if splits > 1:
        _common.count("attention_decode_reduce")
        attention_decode_reduce_kernel[(B * H * Q,)](
            part_out, part_lse, out, lse, H, Q, splits, out.stride(0), out.stride(1), out.stride(2),
            BLOCK_S=_common.next_pow2(splits), BLOCK_D=opts["BLOCK_D"], HEAD_DIM=D, num_warps=4)
    return out, lse


def _varlen_launch(q, k, v, cu_q, cu_k, max_q: int, max_k: int, causal: bool, scale: float):
    total_q, H, D = q.shape
    KVH = k.shape[1]
    batch = cu_q.shape[0] - 1
    out = _common.empty((total_q, H, D), dtype=q.dtype, device=q.device)
    lse = _common.empty((H, total_q), dtype=torch.float32, device=q.device)
    if total_q == 0 or H == 0 or batch <= 0 or max_q <= 0:
        return out, lse
    q, k, v = _unit_last(q), _unit_last(k), _unit_last(v)
    opts = _tiles(D, q.dtype, max_q, max_k, q.is_cuda)
    grid = (triton.cdiv(max_q, opts["BLOCK_M"]), H, batch)
    _common.count("varlen_attention_fwd")
    varlen_attention_fwd_kernel[grid](q, k, v, out, lse, cu_q, cu_k, H // KVH, total_q, scale * _LOG2E,
                                      q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                                      out.stride(0), out.stride(1), CAUSAL=causal, **opts)
    return out, lse


# -- custom ops (torch.compile / CUDA graphs see these) -------------------------------------------

@torch.library.custom_op("fastformers::attention_fwd", mutates_args=())
def _attention_fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention_mask: torch.Tensor | None,
                      causal: bool, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, lse): out like q (memory laid out (batch, q_len, heads, head_dim)), lse (batch, heads, q_len)
    float32. attention_mask: None or a contiguous bool (batch, kv_len)."""
    return _attention_launch(q, k, v, attention_mask, causal, scale)


@_attention_fwd_op.register_fake
def _(q, k, v, attention_mask, causal, scale):
    b, h, s, d = q.shape
    return q.new_empty((b, s, h, d)).transpose(1, 2), q.new_empty((b, h, s), dtype=torch.float32)


def _attention_setup(ctx, inputs, output):
    q, k, v, attention_mask, causal, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, attention_mask)
    ctx.causal, ctx.scale = causal, scale
    ctx.mark_non_differentiable(lse)


def _attention_backward(ctx, grad_out, grad_lse):
    from . import attention_backward  # noqa: F401  (defines fastformers::attention_bwd)

    q, k, v, out, lse, attention_mask = ctx.saved_tensors
    dq, dk, dv = torch.ops.fastformers.attention_bwd(grad_out, q, k, v, out, lse, attention_mask,
                                                     ctx.causal, ctx.scale)
    return dq, dk, dv, None, None, None


_attention_fwd_op.register_autograd(_attention_backward, setup_context=_attention_setup)


@torch.library.custom_op("fastformers::varlen_attention_fwd", mutates_args=())
def _varlen_attention_fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                             cu_seqlens_k: torch.Tensor, max_seqlen_q: int, max_seqlen_k: int, causal: bool,
                             scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, lse): out (total_q, heads, head_dim) contiguous, lse (heads, total_q) float32."""
    return _varlen_launch(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, scale)


@_varlen_attention_fwd_op.register_fake
def _(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, scale):
    return q.new_empty(q.shape), q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32)


def _varlen_setup(ctx, inputs, output):
    q, k, v, cu_q, cu_k, max_q, max_k, causal, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, cu_q, cu_k)
    ctx.max_q, ctx.max_k, ctx.causal, ctx.scale = max_q, max_k, causal, scale
    ctx.mark_non_differentiable(lse)


def _varlen_backward(ctx, grad_out, grad_lse):
    from . import attention_backward  # noqa: F401  (defines fastformers::varlen_attention_bwd)

    q, k, v, out, lse, cu_q, cu_k = ctx.saved_tensors
    dq, dk, dv = torch.ops.fastformers.varlen_attention_bwd(grad_out, q, k, v, out, lse, cu_q, cu_k,
                                                            ctx.max_q, ctx.max_k, ctx.causal, ctx.scale)
    return dq, dk, dv, None, None, None, None, None, None


_varlen_attention_fwd_op.register_autograd(_varlen_backward, setup_context=_varlen_setup)


# -- public functions (the `fastformers.ops` triton backend) --------------------------------------

def attention(q, k, v, *, causal: bool = False, attention_mask=None, scale=None):
    """softmax(scale q k^T) v: q (batch, heads, q_len, head_dim), k/v (batch, kv_heads, kv_len, head_dim),
    attention_mask a (batch|1, kv_len) key-padding mask (True/nonzero = keep). q_len <= DECODE_MAX_Q_LEN
    runs on the flash-decoding kernels, longer queries on attention_fwd_kernel (see the module docstring).
    Returns (batch, heads, q_len, head_dim) in q's dtype. Not yet measured on a GPU."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    mask = None
    if attention_mask is not None:
        mask = attention_mask.to(device=q.device, dtype=torch.bool).expand(q.shape[0], k.shape[2]).contiguous()
    return _attention_fwd_op(q, k, v, mask, bool(causal), scale)[0]


def varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *, causal: bool = False,
                     scale=None):
    """Attention within each packed sequence: q (total_q, heads, head_dim), k/v (total_k, kv_heads, head_dim),
    cu_seqlens_* (batch + 1,) int32/int64 offsets (empty sequences allowed). Returns (total_q, heads,
    head_dim) in q's dtype. Not yet measured on a GPU."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    cu_q = cu_seqlens_q.to(q.device).contiguous()
    cu_k = cu_seqlens_k.to(q.device).contiguous()
    return _varlen_attention_fwd_op(q, k, v, cu_q, cu_k, int(max_seqlen_q), int(max_seqlen_k), bool(causal),
                                    scale)[0]


def _common_unsupported(q, k, v) -> str | None:
    """Dtype, device and head-dim checks shared by both ops (k, v may be None: a probe with q only)."""
    tensors = [t for t in (q, k, v) if t is not None]
    if any(t.dtype not in _DTYPES for t in tensors):
        return f"dtypes {', '.join(str(t.dtype) for t in tensors)}; the kernels take float32, float16 or bfloat16"
    if any(t.dtype != q.dtype for t in tensors):
        return f"dtypes {', '.join(str(t.dtype) for t in tensors)} of q, k, v differ"
    if any(t.device != q.device for t in tensors):
        return f"devices {', '.join(str(t.device) for t in tensors)} of q, k, v differ"
    reason = _common.device_reason(q)
    if reason is not None:
        return reason
    if k is not None and v is not None:
        if not 0 < q.shape[-1] <= MAX_HEAD_DIM:
            return f"head_dim {q.shape[-1]}; the kernels take 1 .. {MAX_HEAD_DIM}"
        if k.shape[-1] != q.shape[-1] or v.shape[-1] != q.shape[-1]:
            return f"head dims q {q.shape[-1]}, k {k.shape[-1]}, v {v.shape[-1]}; the kernels need one head_dim"
    return None


def attention_unsupported(q, k=None, v=None, *, causal: bool = False, attention_mask=None, scale=None) -> str | None:
    reason = _common_unsupported(q, k, v)
    if reason is not None or k is None or v is None:
        return reason
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        return f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} must be 4-D (batch, heads, seq, head_dim)"
    if k.shape != v.shape or k.shape[0] != q.shape[0]:
        return f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}: k and v must match, batch must agree"
    if k.shape[1] == 0 or q.shape[1] % k.shape[1]:
        return f"{q.shape[1]} heads are not a multiple of {k.shape[1]} kv heads"
    if attention_mask is not None and (
            not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() != 2
            or attention_mask.shape[0] not in (1, q.shape[0]) or attention_mask.shape[1] != k.shape[2]):
        shape = tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else type(attention_mask)
        return f"attention_mask {shape}; the kernel takes a (batch, kv_len) key-padding mask " \
               f"(batch={q.shape[0]}, kv_len={k.shape[2]})"
    return None


def varlen_attention_unsupported(q, k=None, v=None, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None,
                                 max_seqlen_k=None, *, causal: bool = False, scale=None) -> str | None:
    reason = _common_unsupported(q, k, v)
    if reason is not None or k is None or v is None:
        return reason
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3 or k.shape != v.shape:
        return f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} must be packed (tokens, heads, " \
               f"head_dim), k and v alike"
    if k.shape[1] == 0 or q.shape[1] % k.shape[1]:
        return f"{q.shape[1]} heads are not a multiple of {k.shape[1]} kv heads"
    for name, cu in (("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
        if cu is None:
            continue
        if cu.dim() != 1 or cu.dtype not in (torch.int32, torch.int64):
            return f"{name} {tuple(cu.shape)} {cu.dtype}; the kernel takes a 1-D int32/int64 tensor"
    if cu_seqlens_q is not None and cu_seqlens_k is not None and cu_seqlens_q.shape != cu_seqlens_k.shape:
        return f"cu_seqlens_q {tuple(cu_seqlens_q.shape)} and cu_seqlens_k {tuple(cu_seqlens_k.shape)} differ in length"
    return None
