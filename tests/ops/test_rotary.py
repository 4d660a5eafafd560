"""ops.rotary (rotate-half convention) against explicit float64 complex rotation; the Triton kernel
(kernels/rotary.py) against the float64 reference, forward and backward."""

import random

import pytest
import torch

from fastformers import ops
from fastformers.ops.rotary import rotary_reference
from conftest import DEVICE, rel_err


def rope_tables(seq, dim, base=10000.0):
    inv = 1.0 / base ** (torch.arange(0, dim, 2).double() / dim)
    ang = torch.arange(seq).double()[:, None] * inv[None]
    return ang


@pytest.mark.parametrize("rot_dim", [16, 8])  # full head dim and partial rotary
def test_rotary_matches_complex_rotation(rot_dim):
    g = torch.Generator().manual_seed(rot_dim)
    b, h, hk, s, d = 2, 4, 2, 5, 16
    q, k = torch.randn(b, h, s, d, generator=g), torch.randn(b, hk, s, d, generator=g)
    ang = rope_tables(s, rot_dim)
    emb = torch.cat((ang, ang), -1)
    q2, k2 = ops.rotary(q, k, emb.cos().float(), emb.sin().float())

    def ref(x):
        x = x.double()
        half = rot_dim // 2
        z = torch.complex(x[..., :half], x[..., half:rot_dim]) * torch.polar(torch.ones_like(ang), ang)
        return torch.cat((z.real, z.imag, x[..., rot_dim:]), -1)

    assert rel_err(q2, ref(q)) <= 1e-5
    assert rel_err(k2, ref(k)) <= 1e-5
    # per-batch tables (batch, seq, dim) give the same answer
    q3, _ = ops.rotary(q, k, emb.cos().float()[None].expand(b, -1, -1), emb.sin().float()[None].expand(b, -1, -1))
    assert rel_err(q3, q2) == 0


# -- Triton kernel --------------------------------------------------------------------------------

TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2}


def _rand(g, *shape, dtype=torch.float32):
    return torch.randn(shape, generator=g, dtype=torch.float64).to(DEVICE, dtype)


def _projections(g, b, h, hk, s, d, dtype, layout):
    """q (b, h, s, d) and k (b, hk, s, d) leaves, and a function making the kernel's inputs from them."""
    if layout == "contiguous":
        return (_rand(g, b, h, s, d, dtype=dtype), _rand(g, b, hk, s, d, dtype=dtype)), lambda q, k: (q, k)
    # views of one fused qkv projection (b, s, (h + 2 hk) d), as attention modules make them
    qkv = _rand(g, b, s, (h + 2 * hk) * d, dtype=dtype)

    def split(qkv):
        q, k = qkv[..., :h * d], qkv[..., h * d:(h + hk) * d]
        return q.view(b, s, h, d).transpose(1, 2), k.view(b, s, hk, d).transpose(1, 2)
    return (qkv,), split


def _run(fn, leaves, make, tables, grads):
    leaves = [t.detach().requires_grad_() for t in leaves]
    outs = fn(*make(*leaves), *tables)
    return (*outs, *torch.autograd.grad(outs, leaves, [g.to(o.dtype) for g, o in zip(grads, outs)]))


@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("case", [
    # batch, heads, kv_heads, seq, head_dim, rot_dim, table dims, layout
    (2, 4, 2, 5, 16, 16, 2, "fused"),        # GQA, full rotary, one table for the batch
    (2, 4, 2, 7, 16, 8, 3, "fused"),         # partial rotary, batch-specific positions
    (1, 3, 3, 1, 10, 6, 3, "contiguous"),    # decode step (seq 1), odd head count, head_dim not a power of 2
    (3, 5, 1, 3, 24, 24, 2, "contiguous"),   # MQA
    (2, 2, 1, 9, 12, 4, 3, "fused"),
    (1, 32, 32, 2, 80, 32, 2, "fused"),     # phi-style: heads per program not a power of two before rounding
])
def test_rotary_kernel(triton_backend, case, dtype):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    b, h, hk, s, d, rot, table_dims, layout = case
    leaves, make = _projections(g, b, h, hk, s, d, dtype, layout)
    # arbitrary tables (halves differ): the kernel must follow the reference's formula, not just true angles
    table_shape = (b, s, rot) if table_dims == 3 else (s, rot)
    cos, sin = _rand(g, *table_shape, dtype=dtype), _rand(g, *table_shape, dtype=dtype)
    # the output gradients in the outputs' dtype, the same values for both (a rounding of the kernel's input is
    # not the kernel's error)
    grads = (_rand(g, b, h, s, d, dtype=dtype), _rand(g, b, hk, s, d, dtype=dtype))
    got = _run(ops.rotary, leaves, make, (cos, sin), grads)
    want = _run(rotary_reference, [t.double() for t in leaves], make, (cos.double(), sin.double()), grads)
    assert got[0].dtype == got[1].dtype == dtype
    assert got[0].shape == (b, h, s, d) and got[1].shape == (b, hk, s, d)
    for name, x, y in zip(("q", "k", "grad 0", "grad 1"), got, want):
        err = rel_err(x, y)
        assert err <= TOL[dtype], f"{name}: relative error {err:.2e} (seed {seed})"
    assert dict(triton_backend) == {"rotary": 1, "rotary_bwd": 1}


def test_rotary_kernel_promotes_like_the_reference_and_broadcasts_tables(triton_backend):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    q, k = _rand(g, 2, 3, 4, 8, dtype=torch.bfloat16), _rand(g, 2, 1, 4, 8, dtype=torch.bfloat16)
    cos, sin = _rand(g, 1, 1, 8), _rand(g, 1, 1, 8)  # float32 tables, one row for every batch and position
    q2, k2 = ops.rotary(q, k, cos, sin)
    want = rotary_reference(q.double(), k.double(), cos.double(), sin.double())
    assert q2.dtype == k2.dtype == rotary_reference(q, k, cos, sin)[0].dtype == torch.float32
    assert rel_err(q2, want[0]) <= 1e-4 and rel_err(k2, want[1]) <= 1e-4, f"seed {seed}"
    # a gradient for q only: k's is zero
    q.requires_grad_()
    k.requires_grad_()
    dq, dk = torch.autograd.grad(ops.rotary(q, k, cos, sin)[0].sum(), (q, k))
    assert dq.dtype == torch.bfloat16 and not dq.isnan().any() and torch.equal(dk, torch.zeros_like(k))
    assert triton_backend["rotary"] == 2 and triton_backend["rotary_bwd"] == 1


@pytest.mark.parametrize("shapes, reason", [
    (((1, 2, 3, 8), (1, 2, 3, 8), (3, 5)), "even rot_dim"),
    (((1, 2, 3, 8), (1, 2, 3, 8), (3, 10)), "even rot_dim"),
    (((1, 2, 3, 8), (1, 2, 4, 8), (3, 8)), "differ in batch, seq or head_dim"),
    (((1, 2, 3, 8), (1, 2, 3, 8), (2, 3, 8)), "do not broadcast"),
    (((2, 3, 8), (1, 2, 3, 8), (3, 8)), "must be 4-D"),
])
def test_rotary_kernel_refuses_with_a_reason(triton_backend, shapes, reason):
    (qs, ks, cs) = shapes
    with pytest.raises(ops.BackendUnavailableError, match=reason):
        ops.rotary(torch.randn(qs, device=DEVICE), torch.randn(ks, device=DEVICE), torch.randn(cs, device=DEVICE),
                   torch.randn(cs, device=DEVICE))
    assert not triton_backend


def test_rotary_kernel_refuses_dtype_mismatch_and_table_gradients(triton_backend):
    q, cos = torch.randn(1, 2, 3, 8, device=DEVICE), torch.randn(3, 8, device=DEVICE)
    with pytest.raises(ops.BackendUnavailableError, match="q/k and cos/sin must match"):
        ops.rotary(q, q.half(), cos, cos)
    with pytest.raises(ops.BackendUnavailableError, match="cos/sin require grad"):
        ops.rotary(q, q, cos.requires_grad_(), cos)
    with torch.no_grad():  # no gradient asked for: the kernel runs
        ops.rotary(q, q, cos, cos)
    assert dict(triton_backend) == {"rotary": 1}


@pytest.mark.parametrize("op_name", ["rotary", "rotary_bwd"])
def test_rotary_custom_ops_opcheck(triton_backend, op_name):
    import fastformers.kernels.rotary  # noqa: F401  (registers torch.ops.fastformers.*)

    g = torch.Generator().manual_seed(random.randrange(2**31))
    q = _rand(g, 1, 3, 2, 8).transpose(1, 2)  # (1, 2, 3, 8) seen through a transpose
    k, cos, sin = _rand(g, 1, 1, 3, 8), _rand(g, 3, 6), _rand(g, 3, 6)
    args = (q.requires_grad_(), k.requires_grad_(), cos, sin) if op_name == "rotary" else \
        (q, k, cos, sin, torch.float16)
    torch.library.opcheck(getattr(torch.ops.fastformers, op_name).default, args)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", list(TOL))
def test_rotary_kernel_at_model_sizes(triton_backend, dtype):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    b, h, hk, s, d = 2, 32, 8, 2048, 128
    leaves, make = _projections(g, b, h, hk, s, d, dtype, "fused")
    ang = rope_tables(s, d)
    emb = torch.cat((ang, ang), -1).to(DEVICE)
    cos, sin = emb.cos().to(dtype), emb.sin().to(dtype)
    # the output gradients in the outputs' dtype, the same values for both (a rounding of the kernel's input is
    # not the kernel's error)
    grads = (_rand(g, b, h, s, d, dtype=dtype), _rand(g, b, hk, s, d, dtype=dtype))
    got = _run(ops.rotary, leaves, make, (cos, sin), grads)
    want = _run(rotary_reference, [t.double() for t in leaves], make, (cos.double(), sin.double()), grads)
    for x, y in zip(got, want):
        assert rel_err(x, y) <= TOL[dtype], f"relative error {rel_err(x, y):.2e} (seed {seed})"
