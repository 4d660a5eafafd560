"""The attention backward kernels (kernels/attention_backward.py: fastformers::attention_bwd and
fastformers::varlen_attention_bwd) against float64 autograd of the references in fastformers.ops.attention;
then gradients end to end through ops.attention / ops.varlen_attention on the triton backend."""

import math
import random

import pytest
import torch

from fastformers import ops
from fastformers.kernels import attention_backward  # registers torch.ops.fastformers.*attention_bwd
from conftest import DEVICE, rel_err

# bf16 sits near its bound: PyTorch's own bf16 backward errs up to about 1e-2 on these sizes (out and the
# gradients rounded to 8 bits), so the bf16 case uses a shape whose worst error over 400 seeds stayed below 0.0092;
# queries with one to three keys (dq a near-cancellation) and varlen are checked in fp16 instead.
TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2}
BWD = ("attention_bwd_preprocess", "attention_bwd_dkdv", "attention_bwd_dq")
VARLEN_BWD = tuple("varlen_" + name for name in BWD)
F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16


def _rand(g, *shape, dtype=F32, layout="contiguous"):
    """A random (b, heads, len, d) tensor; layout "transposed": a (b, len, heads, d) tensor seen through
    .transpose(1, 2), as attention modules make q, k, v from one projection."""
    if layout == "transposed":
        return _rand(g, shape[0], shape[2], shape[1], shape[3], dtype=dtype).transpose(1, 2)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(DEVICE, dtype)


def _key_mask(g, b, lk):
    """Key-keep mask: each row its own prefix length; row 0 sees no key at all, row 1 every key (with a
    single visible key dq is 0 up to rounding, so some row must see several)."""
    lengths = torch.randint(1, lk + 1, (b,), generator=g)
    lengths[:2] = torch.tensor([0, lk])[:b]
    return (torch.arange(lk)[None] < lengths[:, None]).to(DEVICE)


def _keep(lq, lk, causal, mask):
    """(b|1, 1, lq, lk) keys each query sees: the key mask and the bottom-right aligned causal diagonal."""
    keep = torch.ones(1, 1, lq, lk, dtype=torch.bool, device=DEVICE)
    if mask is not None:
        keep = keep & mask[:, None, None, :]
    if causal:
        keep = keep & (torch.arange(lk, device=DEVICE)[None] <= torch.arange(lq, device=DEVICE)[:, None] + lk - lq)
    return keep


def _lse(q, k, scale, keep):
    """float64 log-sum-exp of the scaled scores over the visible keys, +inf for a row that sees none."""
    k = k.double().repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    scores = (q.double() @ k.transpose(-1, -2) * scale).masked_fill(~keep, -math.inf)
    lse = torch.logsumexp(scores, dim=-1)
    return lse.masked_fill(torch.isneginf(lse), math.inf)


def _reference(q, k, v, grad_out, mask, causal, scale):
    """out, lse (float64) and float64 autograd (dq, dk, dv) of ops.attention_reference."""
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    out = ops.attention_reference(q64, k64, v64, causal=causal, attention_mask=mask, scale=scale)
    grads = torch.autograd.grad(out, (q64, k64, v64), grad_out.double())
    return out.detach(), _lse(q, k, scale, _keep(q.shape[2], k.shape[2], causal, mask)), grads


def _check_grads(ours, refs, dtype, seed):
    for name, a, b in zip(("dq", "dk", "dv"), ours, refs):
        assert a.shape == b.shape and a.dtype == dtype, f"{name}: {tuple(a.shape)} {a.dtype}, seed {seed}"
        err = rel_err(a, b)
        assert err <= TOL[dtype], f"{name}: relative error {err:.2e} > {TOL[dtype]:.0e}, seed {seed}"


# -- fastformers::attention_bwd -------------------------------------------------------------------

CASES = [  # batch, heads, kv_heads, q_len, kv_len, head_dim, causal, key mask, dtype, layout
    pytest.param(2, 4, 4, 7, 7, 32, False, False, F32, "contiguous", id="plain"),
    pytest.param(3, 4, 2, 7, 33, 80, False, True, F32, "transposed", id="key-mask-gqa2-d80-strided"),
    pytest.param(2, 4, 1, 33, 33, 64, True, False, F32, "contiguous", id="causal-square-mqa-d64"),
    pytest.param(2, 4, 2, 7, 33, 32, True, True, BF16, "transposed", id="causal-q<kv-mask-bf16-strided"),
    pytest.param(2, 4, 2, 17, 7, 32, True, False, F32, "contiguous", id="causal-q>kv-empty-rows"),
    pytest.param(1, 4, 4, 1, 7, 80, True, False, F16, "contiguous", id="decode-q1-f16-d80"),
    pytest.param(3, 4, 1, 1, 3, 32, False, True, F16, "contiguous", id="q1-kv3-mask-f16"),
    pytest.param(3, 4, 2, 17, 17, 64, False, True, F16, "transposed", id="key-mask-f16-strided"),
]


@pytest.mark.parametrize("b, h, hk, lq, lk, d, causal, masked, dtype, layout", CASES)
def test_attention_bwd_matches_float64_autograd(triton_backend, b, h, hk, lq, lk, d, causal, masked, dtype,
                                                layout):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    q = _rand(g, b, h, lq, d, dtype=dtype, layout=layout)
    k, v = (_rand(g, b, hk, lk, d, dtype=dtype, layout=layout) for _ in range(2))
    grad_out = _rand(g, b, h, lq, d, dtype=dtype, layout=layout)
    mask = _key_mask(g, b, lk) if masked else None
    scale = 0.3 if lq == 7 else d ** -0.5  # the q_len 7 cases: a scale other than the default
    out, lse, refs = _reference(q, k, v, grad_out, mask, causal, scale)
    ours = torch.ops.fastformers.attention_bwd(grad_out, q, k, v, out.to(dtype), lse.float(), mask, causal, scale)
    _check_grads(ours, refs, dtype, seed)
    if masked:  # a key nobody sees has no gradient, nor has a query that sees no key
        assert torch.all(ours[1][0] == 0) and torch.all(ours[2][0] == 0) and torch.all(ours[0][0] == 0)
    assert all(triton_backend[name] == 1 for name in BWD), dict(triton_backend)


def test_attention_bwd_is_deterministic(triton_backend):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    q, grad_out = _rand(g, 2, 4, 9, 16), _rand(g, 2, 4, 9, 16)
    k, v = _rand(g, 2, 1, 21, 16), _rand(g, 2, 1, 21, 16)
    out, lse, _ = _reference(q, k, v, grad_out, None, True, 0.25)
    args = (grad_out, q, k, v, out.float(), lse.float(), None, True, 0.25)
    first, second = torch.ops.fastformers.attention_bwd(*args), torch.ops.fastformers.attention_bwd(*args)
    assert all(torch.equal(a, b) for a, b in zip(first, second)), f"seed {seed}"
    assert triton_backend["attention_bwd_dkdv"] == 2


@pytest.mark.parametrize("change, message", [
    (dict(d=300), "head_dim"),
    (dict(dtype=torch.float64), "dtype"),
    (dict(hk=3), "kv heads"),
    (dict(lse_dtype=torch.float16), "lse"),
])
def test_attention_bwd_refuses(triton_backend, change, message):
    d, hk, dtype = change.get("d", 16), change.get("hk", 2), change.get("dtype", F32)
    q = torch.randn(1, 4, 3, d, dtype=dtype, device=DEVICE)
    k = torch.randn(1, hk, 3, d, dtype=dtype, device=DEVICE)
    lse = torch.randn(1, 4, 3, device=DEVICE).to(change.get("lse_dtype", F32))
    with pytest.raises(ValueError, match=message):
        torch.ops.fastformers.attention_bwd(q, q, k, k, q, lse, None, False, 0.5)
    assert not triton_backend


# -- fastformers::varlen_attention_bwd ------------------------------------------------------------

def _cu(lengths, dtype):
    return torch.tensor([0] + lengths, dtype=torch.int64).cumsum(0).to(DEVICE, dtype)


def _varlen_reference(q, k, v, grad_out, cu_q, cu_k, causal, scale):
    """out, lse (heads, total_q) and float64 autograd (dq, dk, dv) of ops.varlen_attention_reference."""
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    lq, lk = (cu[1:] - cu[:-1] for cu in (cu_q, cu_k))
    out = ops.varlen_attention_reference(q64, k64, v64, cu_q, cu_k, int(lq.max()), int(lk.max()),
                                         causal=causal, scale=scale)
    grads = torch.autograd.grad(out, (q64, k64, v64), grad_out.double())
    lse = torch.full((q.shape[1], q.shape[0]), math.inf, dtype=torch.float64, device=DEVICE)
    bq, bk = cu_q.tolist(), cu_k.tolist()
    for q0, q1, k0, k1 in zip(bq, bq[1:], bk, bk[1:]):
        if q1 > q0:
            qi, ki = q[q0:q1].transpose(0, 1)[None], k[k0:k1].transpose(0, 1)[None]
            lse[:, q0:q1] = _lse(qi, ki, scale, _keep(q1 - q0, k1 - k0, causal, None))[0]
    return out.detach(), lse, grads


VARLEN_CASES = [  # q lengths, k lengths, causal, dtype, cu_seqlens dtype, strided q
    pytest.param([5, 0, 17, 1], [5, 0, 17, 1], False, F32, torch.int32, False, id="self"),
    pytest.param([5, 0, 17, 1], [5, 0, 17, 1], True, F16, torch.int64, True, id="self-causal-f16-strided"),
    pytest.param([5, 0, 17, 1], [9, 2, 17, 0], True, F32, torch.int64, False, id="cross-causal-empty-kv"),
    pytest.param([3, 7], [11, 4], False, F16, torch.int32, True, id="cross-f16-strided"),
]


@pytest.mark.parametrize("lens_q, lens_k, causal, dtype, cu_dtype, strided", VARLEN_CASES)
def test_varlen_attention_bwd_matches_float64_autograd(triton_backend, lens_q, lens_k, causal, dtype, cu_dtype,
                                                       strided):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    h, hk, d = 4, 2, 32
    total_q, total_k = sum(lens_q), sum(lens_k)
    if strided:  # (heads, tokens, d) storage seen as (tokens, heads, d)
        q, grad_out = (_rand(g, h, total_q, d, dtype=dtype).transpose(0, 1) for _ in range(2))
    else:
        q, grad_out = (_rand(g, total_q, h, d, dtype=dtype) for _ in range(2))
    k, v = (_rand(g, total_k, hk, d, dtype=dtype) for _ in range(2))
    cu_q, cu_k = _cu(lens_q, cu_dtype), _cu(lens_k, cu_dtype)
    scale = d ** -0.5
    out, lse, refs = _varlen_reference(q, k, v, grad_out, cu_q, cu_k, causal, scale)
    ours = torch.ops.fastformers.varlen_attention_bwd(grad_out, q, k, v, out.to(dtype), lse.float(), cu_q, cu_k,
                                                      max(lens_q), max(lens_k), causal, scale)
    _check_grads(ours, refs, dtype, seed)
    assert all(triton_backend[name] == 1 for name in VARLEN_BWD), dict(triton_backend)


# -- many blocks ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["causal-q<kv-mask", "causal-q>kv", "varlen-causal"])
def test_attention_bwd_with_small_tiles(triton_backend, monkeypatch, case):
    """16 x 16 tiles, so that a few dozen tokens span several query and key blocks and the causal walks split
    into diagonal (masked) and fully visible blocks; the default tiles cover the other tests' lengths in one
    or two blocks."""
    default = attention_backward._blocks
    monkeypatch.setattr(attention_backward, "_blocks",
                        lambda *args: {**default(*args), "dkdv": (16, 16), "dq": (16, 16), "pre_m": 16})
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    if case == "varlen-causal":
        lens_q, lens_k = [5, 0, 37, 1], [9, 2, 40, 0]
        q, grad_out = (_rand(g, sum(lens_q), 4, 24) for _ in range(2))
        k, v = (_rand(g, sum(lens_k), 2, 24) for _ in range(2))
        cu_q, cu_k = _cu(lens_q, torch.int32), _cu(lens_k, torch.int32)
        out, lse, refs = _varlen_reference(q, k, v, grad_out, cu_q, cu_k, True, 0.2)
        ours = torch.ops.fastformers.varlen_attention_bwd(grad_out, q, k, v, out.float(), lse.float(), cu_q, cu_k,
                                                          37, 40, True, 0.2)
    else:
        lq, lk = (21, 40) if case == "causal-q<kv-mask" else (40, 21)
        q, grad_out = _rand(g, 2, 4, lq, 24), _rand(g, 2, 4, lq, 24)
        k, v = _rand(g, 2, 2, lk, 24), _rand(g, 2, 2, lk, 24)
        mask = _key_mask(g, 2, lk) if case == "causal-q<kv-mask" else None
        out, lse, refs = _reference(q, k, v, grad_out, mask, True, 0.2)
        ours = torch.ops.fastformers.attention_bwd(grad_out, q, k, v, out.float(), lse.float(), mask, True, 0.2)
    _check_grads(ours, refs, F32, seed)


# -- opcheck --------------------------------------------------------------------------------------

def test_attention_bwd_opcheck(triton_backend):
    g = torch.Generator().manual_seed(random.randrange(2**31))
    q, grad_out = _rand(g, 2, 2, 3, 16, layout="transposed"), _rand(g, 2, 2, 3, 16)
    k, v = _rand(g, 2, 1, 5, 16), _rand(g, 2, 1, 5, 16)
    mask = torch.tensor([[True, True, False, True, True], [False] * 5], device=DEVICE)
    out, lse, _ = _reference(q, k, v, grad_out, mask, True, 0.25)
    torch.library.opcheck(torch.ops.fastformers.attention_bwd.default,
                          (grad_out, q, k, v, out.float(), lse.float(), mask, True, 0.25))


def test_varlen_attention_bwd_opcheck(triton_backend):
    g = torch.Generator().manual_seed(random.randrange(2**31))
    q, grad_out = (_rand(g, 6, 2, 16) for _ in range(2))
    k, v = (_rand(g, 7, 1, 16) for _ in range(2))
    cu_q, cu_k = _cu([2, 0, 4], torch.int32), _cu([3, 1, 3], torch.int32)
    out, lse, _ = _varlen_reference(q, k, v, grad_out, cu_q, cu_k, True, 0.25)
    torch.library.opcheck(torch.ops.fastformers.varlen_attention_bwd.default,
                          (grad_out, q, k, v, out.float(), lse.float(), cu_q, cu_k, 4, 3, True, 0.25))


# -- end to end: autograd through ops.attention / ops.varlen_attention on the triton backend ------------
# (no bf16 here: on the CPU interpreter the forward's bf16 `out` is rounded toward zero, which puts bf16
# end-to-end gradients right at the 1e-2 bound; the launcher tests above cover bf16)

def _forward_launched(launches):
    """Kernel launches other than the backward kernels' (the forward kernels, whatever their names)."""
    return {name: n for name, n in launches.items() if name not in BWD + VARLEN_BWD and n}


@pytest.mark.parametrize("b, h, hk, lq, lk, d, causal, masked, dtype", [
    pytest.param(2, 4, 2, 7, 9, 32, True, True, F32, id="causal-mask-gqa"),
    pytest.param(1, 4, 4, 5, 5, 80, False, False, F16, id="plain-f16-d80"),
    pytest.param(2, 4, 1, 33, 17, 64, False, True, F16, id="mask-mqa-f16-q33"),
])
def test_attention_gradients_end_to_end(triton_backend, b, h, hk, lq, lk, d, causal, masked, dtype):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    q = _rand(g, b, h, lq, d, dtype=dtype).requires_grad_()
    k, v = (_rand(g, b, hk, lk, d, dtype=dtype).requires_grad_() for _ in range(2))
    grad_out = _rand(g, b, h, lq, d, dtype=dtype)
    mask = _key_mask(g, b, lk) if masked else None
    out = ops.attention(q, k, v, causal=causal, attention_mask=mask)
    assert _forward_launched(triton_backend), dict(triton_backend)
    out.backward(grad_out)
    assert all(triton_backend[name] == 1 for name in BWD), dict(triton_backend)
    _, _, refs = _reference(q, k, v, grad_out, mask, causal, d ** -0.5)
    _check_grads((q.grad, k.grad, v.grad), refs, dtype, seed)


def test_varlen_attention_gradients_end_to_end(triton_backend):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    lens = [5, 0, 11, 1]
    h, hk, d = 4, 2, 32
    q = _rand(g, sum(lens), h, d).requires_grad_()
    k, v = (_rand(g, sum(lens), hk, d).requires_grad_() for _ in range(2))
    grad_out = _rand(g, sum(lens), h, d)
    cu = _cu(lens, torch.int32)
    out = ops.varlen_attention(q, k, v, cu, cu, max(lens), max(lens), causal=True)
    assert _forward_launched(triton_backend), dict(triton_backend)
    out.backward(grad_out)
    assert all(triton_backend[name] == 1 for name in VARLEN_BWD), dict(triton_backend)
    _, _, refs = _varlen_reference(q, k, v, grad_out, cu, cu, True, d ** -0.5)
    _check_grads((q.grad, k.grad, v.grad), refs, F32, seed)


# -- GPU sizes --------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("d", [64, 80, 96, 128, 256])
@pytest.mark.parametrize("causal", [False, True])
def test_attention_bwd_at_model_sizes(triton_backend, dtype, d, causal):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    b, h, hk, lq, lk = 2, 8, 2, 1000, 1031
    q, grad_out = _rand(g, b, h, lq, d, dtype=dtype), _rand(g, b, h, lq, d, dtype=dtype)
    k, v = (_rand(g, b, hk, lk, d, dtype=dtype, layout="transposed") for _ in range(2))
    mask = _key_mask(g, b, lk)
    out, lse, refs = _reference(q, k, v, grad_out, mask, causal, d ** -0.5)
    ours = torch.ops.fastformers.attention_bwd(grad_out, q, k, v, out.to(dtype), lse.float(), mask, causal,
                                               d ** -0.5)
    _check_grads(ours, refs, dtype, seed)
