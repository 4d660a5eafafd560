"""Rotary position embedding kernel (rotate-half convention of Llama/NeoX), q and k in one launch.

For features j < rot_dim / 2 = half, with x1 = x[j], x2 = x[half + j] and the tables' two halves
c1 = cos[j], c2 = cos[half + j], s1 = sin[j], s2 = sin[half + j]:

    forward   out[j] = x1 c1 - x2 s1      out[half + j] = x2 c2 + x1 s2
    backward  dx[j]  = g1 c1 + g2 s2      dx[half + j]  = g2 c2 - g1 s1   (the transposed map)

and features rot_dim .. head_dim pass through. The backward uses the tables' halves as given, so it is
exact even for tables whose halves differ (the usual tables repeat one half, where it is the forward with
sin negated).
"""

from __future__ import annotations


import torch
import triton
import triton.language as tl

from . import _common

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_TILE = 2048  # elements of q/k per program


# -- kernel ---------------------------------------------------------------------------------------

@triton.jit
def _rotate_heads(x_ptr, out_ptr, n_heads, stride_xh, stride_oh, head0, c1, c2, s1, s2, HALF, D,
                  BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr, BLOCK_PASS: tl.constexpr,
                  BACKWARD: tl.constexpr):
    """Rotate heads head0 .. head0 + BLOCK_H of one (batch, position): x_ptr/out_ptr point at head 0."""
    heads = head0 + tl.arange(0, BLOCK_H)
    head_mask = heads < n_heads
    x_rows = x_ptr + heads.to(tl.int64)[:, None] * stride_xh
    o_rows = out_ptr + heads.to(tl.int64)[:, None] * stride_oh
    j = tl.arange(0, BLOCK_HALF)[None, :]
    mask = head_mask[:, None] & (j < HALF)
    x1 = tl.load(x_rows + j, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(x_rows + HALF + j, mask=mask, other=0.0).to(tl.float32)
    if BACKWARD:
        o1 = x1 * c1 + x2 * s2
        o2 = x2 * c2 - x1 * s1
    else:
        o1 = x1 * c1 - x2 * s1
        o2 = x2 * c2 + x1 * s2
    tl.store(o_rows + j, o1.to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(o_rows + HALF + j, o2.to(out_ptr.dtype.element_ty), mask=mask)
    if BLOCK_PASS > 0:  # features rot_dim .. head_dim are copied
        p = 2 * HALF + tl.arange(0, BLOCK_PASS)[None, :]
        pass_mask = head_mask[:, None] & (p < D)
        xp = tl.load(x_rows + p, mask=pass_mask, other=0.0)
        tl.store(o_rows + p, xp.to(out_ptr.dtype.element_ty), mask=pass_mask)


@triton.jit
def rotary_kernel(q_ptr, k_ptr, cos_ptr, sin_ptr, qo_ptr, ko_ptr, S, H, HK, HALF, D,
                  sq_b, sq_h, sq_s, sk_b, sk_h, sk_s, sqo_b, sqo_h, sqo_s, sko_b, sko_h, sko_s,
                  sc_b, sc_s, ss_b, ss_s,
                  BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr, BLOCK_PASS: tl.constexpr,
                  BACKWARD: tl.constexpr):
    """Grid (batch * seq, q head blocks + k head blocks): the tables of one position are read once per
    program, which then rotates a block of q heads or of k heads."""
    pid = tl.program_id(0)
    b = (pid // S).to(tl.int64)
    s = (pid % S).to(tl.int64)
    j = tl.arange(0, BLOCK_HALF)
    j_mask = j < HALF
    cos_row = cos_ptr + b * sc_b + s * sc_s
    sin_row = sin_ptr + b * ss_b + s * ss_s
    c1 = tl.load(cos_row + j, mask=j_mask, other=0.0).to(tl.float32)[None, :]
    c2 = tl.load(cos_row + HALF + j, mask=j_mask, other=0.0).to(tl.float32)[None, :]
    s1 = tl.load(sin_row + j, mask=j_mask, other=0.0).to(tl.float32)[None, :]
    s2 = tl.load(sin_row + HALF + j, mask=j_mask, other=0.0).to(tl.float32)[None, :]
    head_block = tl.program_id(1)
    n_q_blocks = tl.cdiv(H, BLOCK_H)
    if head_block < n_q_blocks:
        _rotate_heads(q_ptr + b * sq_b + s * sq_s, qo_ptr + b * sqo_b + s * sqo_s, H, sq_h, sqo_h,
                      head_block * BLOCK_H, c1, c2, s1, s2, HALF, D, BLOCK_H, BLOCK_HALF, BLOCK_PASS, BACKWARD)
    else:
        _rotate_heads(k_ptr + b * sk_b + s * sk_s, ko_ptr + b * sko_b + s * sko_s, HK, sk_h, sko_h,
                      (head_block - n_q_blocks) * BLOCK_H, c1, c2, s1, s2, HALF, D,
                      BLOCK_H, BLOCK_HALF, BLOCK_PASS, BACKWARD)


# -- launcher -------------------------------------------------------------------------------------

def _last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 or t.shape[-1] <= 1 else t.contiguous()


def _table(t: torch.Tensor, batch: int, seq: int) -> torch.Tensor:
    """A (seq, rot) or (batch|1, seq|1, rot) table as a (batch, seq, rot) view (broadcast dims: stride 0)."""
    t = _last_dim_contiguous(t if t.dim() == 3 else t[None])
    return t.expand(batch, seq, t.shape[-1])


def _rotary_launch(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   out_dtype: torch.dtype, backward: bool) -> tuple:
    q_out = _common.empty(q.shape, dtype=out_dtype, device=q.device)
    k_out = _common.empty(k.shape, dtype=out_dtype, device=k.device)
    B, H, S, D = q.shape
    HK = k.shape[1]
    if B * S == 0 or H + HK == 0 or D == 0:
        return q_out, k_out
    q, k = _last_dim_contiguous(q), _last_dim_contiguous(k)
    cos, sin = _table(cos, B, S), _table(sin, B, S)
    half = cos.shape[-1] // 2
    block_half = _common.next_pow2(half)
    block_pass = _common.next_pow2(D - 2 * half) if D > 2 * half else 0
    per_head = 2 * block_half + block_pass
    # heads per program: a power of two (tl.arange needs one), about _TILE elements
    block_h = min(_common.next_pow2(max(H, HK)), 1 << (max(1, _TILE // per_head).bit_length() - 1))
    grid = (B * S, triton.cdiv(H, block_h) + triton.cdiv(HK, block_h))
    _common.count("rotary_bwd" if backward else "rotary")
    rotary_kernel[grid](
        q, k, cos, sin, q_out, k_out, S, H, HK, half, D,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        q_out.stride(0), q_out.stride(1), q_out.stride(2), k_out.stride(0), k_out.stride(1), k_out.stride(2),
        cos.stride(0), cos.stride(1), sin.stride(0), sin.stride(1),
        BLOCK_H=block_h, BLOCK_HALF=block_half, BLOCK_PASS=block_pass, BACKWARD=backward, num_warps=4)
    return q_out, k_out


# -- custom ops (torch.compile / CUDA graphs see these) -------------------------------------------

@torch.library.custom_op("fastformers::rotary", mutates_args=())
def _rotary_op(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
               sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _rotary_launch(q, k, cos, sin, torch.promote_types(q.dtype, cos.dtype), backward=False)


@_rotary_op.register_fake
def _(q, k, cos, sin):
    dtype = torch.promote_types(q.dtype, cos.dtype)
    return q.new_empty(q.shape, dtype=dtype), k.new_empty(k.shape, dtype=dtype)


@torch.library.custom_op("fastformers::rotary_bwd", mutates_args=())
def _rotary_bwd_op(grad_q: torch.Tensor, grad_k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(dq, dk) in `dtype` (q's), from the output gradients (in the output dtype)."""
    return _rotary_launch(grad_q, grad_k, cos, sin, dtype, backward=True)


@_rotary_bwd_op.register_fake
def _(grad_q, grad_k, cos, sin, dtype):
    return grad_q.new_empty(grad_q.shape, dtype=dtype), grad_k.new_empty(grad_k.shape, dtype=dtype)


def _rotary_setup(ctx, inputs, output):
    q, k, cos, sin = inputs
    ctx.save_for_backward(cos, sin)
    ctx.dtype = q.dtype
    ctx.shapes = (q.shape, k.shape)
    ctx.out_dtype = output[0].dtype


def _rotary_backward(ctx, grad_q, grad_k):
    cos, sin = ctx.saved_tensors
    if grad_q is None:
        grad_q = cos.new_zeros(ctx.shapes[0], dtype=ctx.out_dtype)
    if grad_k is None:
        grad_k = cos.new_zeros(ctx.shapes[1], dtype=ctx.out_dtype)
    dq, dk = _rotary_bwd_op(grad_q, grad_k, cos, sin, ctx.dtype)
    return dq, dk, None, None


_rotary_op.register_autograd(_rotary_backward, setup_context=_rotary_setup)


# -- public function (the `fastformers.ops` triton backend) ---------------------------------------

def rotary(q, k, cos, sin):
    """Return (q, k) rotated: q (batch, heads, seq, head_dim), k (batch, kv_heads, seq, head_dim), cos and
    sin (seq, rot_dim) or (batch, seq, rot_dim) (size-1 batch/seq broadcast); the first rot_dim features
    rotate, the rest pass through.

    rotary_kernel, one launch for q and k (forward and backward). Layout: q and k any strides (e.g. the
    (batch, seq, heads, dim) projection seen through .transpose(1, 2)) with a contiguous last dim (else
    copied once); outputs new contiguous (batch, heads, seq, head_dim) tensors in the dtype of
    q * cos (torch's promotion, as the reference). Gradients for q and k only (cos/sin get none; a call
    where they require grad is refused). Limits: float32/float16/bfloat16, q and k of one dtype, cos and
    sin of one dtype and shape, rot_dim even, 0 < rot_dim <= head_dim. Not yet measured on a GPU.
    """
    return _rotary_op(q, k, cos, sin)


def rotary_unsupported(q, k, cos, sin) -> str | None:
    if q.dim() != 4 or k.dim() != 4:
        return f"q {tuple(q.shape)} and k {tuple(k.shape)} must be 4-D (batch, heads, seq, head_dim)"
    if (q.shape[0], q.shape[2], q.shape[3]) != (k.shape[0], k.shape[2], k.shape[3]):
        return f"q {tuple(q.shape)} and k {tuple(k.shape)} differ in batch, seq or head_dim"
    if cos.shape != sin.shape or cos.dim() not in (2, 3):
        return f"cos {tuple(cos.shape)} and sin {tuple(sin.shape)} must share one (seq, rot_dim) or " \
               f"(batch, seq, rot_dim) shape"
    rot, (batch, _, seq, head_dim) = cos.shape[-1], q.shape
    if rot == 0 or rot % 2 or rot > head_dim:
        return f"rot_dim {rot}; the kernel needs an even rot_dim with 0 < rot_dim <= head_dim ({head_dim})"
    if cos.shape[-2] not in (1, seq) or (cos.dim() == 3 and cos.shape[0] not in (1, batch)):
        return f"cos/sin {tuple(cos.shape)} do not broadcast to (batch={batch}, seq={seq}, {rot})"
    if q.dtype not in _DTYPES or cos.dtype not in _DTYPES:
        return f"dtypes q {q.dtype}, cos {cos.dtype}; the kernel takes float32, float16 or bfloat16"
    if k.dtype != q.dtype or sin.dtype != cos.dtype:
        return f"dtypes q {q.dtype}, k {k.dtype}, cos {cos.dtype}, sin {sin.dtype}: q/k and cos/sin must match"
    if not q.device == k.device == cos.device == sin.device:
        return f"devices q {q.device}, k {k.device}, cos {cos.device}, sin {sin.device} differ"
    if torch.is_grad_enabled() and (cos.requires_grad or sin.requires_grad):
        return "cos/sin require grad; the kernel gives gradients for q and k only"
    return _common.device_reason(q)
