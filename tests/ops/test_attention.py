"""ops.attention / ops.varlen_attention against explicit float64 math, on fresh random inputs; the Triton
kernels (kernels/attention.py) against the float64 reference."""

import math
import random

import pytest
import torch
from conftest import DEVICE, rel_err

from fastformers import ops
from fastformers.ops.attention import attention_reference, varlen_attention_reference


def explicit_attention(q, k, v, causal, key_mask, scale):
    """softmax(q k^T * scale + mask) v in float64, one (batch, head) at a time; empty rows -> 0."""
    q, k, v = q.double(), k.double(), v.double()
    b, h, lq, d = q.shape
    hk, lk = k.shape[1], k.shape[2]
    scale = 1 / math.sqrt(d) if scale is None else scale
    out = torch.zeros_like(q)
    for bi in range(b):
        for hi in range(h):
            kv = hi // (h // hk)
            s = q[bi, hi] @ k[bi, kv].T * scale
            keep = torch.ones(lq, lk, dtype=torch.bool)
            if key_mask is not None:
                keep &= key_mask[bi].bool()[None]
            if causal:
                keep &= torch.arange(lk)[None] <= torch.arange(lq)[:, None] + (lk - lq)
            s = s.masked_fill(~keep, float("-inf"))
            p = torch.softmax(s, -1).nan_to_num(0.0)
            out[bi, hi] = p @ v[bi, kv]
    return out


CASES = [  # batch, heads, kv_heads, q_len, kv_len, head_dim
    (2, 4, 4, 7, 7, 16),
    (3, 6, 2, 5, 5, 32),   # GQA 3:1
    (1, 4, 1, 1, 13, 8),   # decode: one query against a cache, MQA
    (2, 2, 2, 3, 11, 24),  # q_len < kv_len: causal aligned bottom right
    (1, 3, 3, 1, 1, 64),   # length 1
]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_attention_matches_float64(case, causal, masked):
    b, h, hk, lq, lk, d = case
    g = torch.Generator().manual_seed(hash((case, causal, masked)) % 2**31)
    q, k, v = (torch.randn(b, hh, n, d, generator=g) for hh, n in ((h, lq), (hk, lk), (hk, lk)))
    mask = None
    if masked:
        mask = torch.rand(b, lk, generator=g) > 0.3
        mask[0] = False  # a sequence with no visible key: its rows are zero
    out = ops.attention(q, k, v, causal=causal, attention_mask=mask)
    ref = explicit_attention(q, k, v, causal, mask, None)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert rel_err(out, ref) <= 1e-5
    if masked:
        assert torch.all(out[0] == 0)


def test_attention_scale_and_probs():
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 4, 6, 8, generator=g) for _ in range(3))
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1] * 6])
    ref = explicit_attention(q, k, v, False, mask, 0.3)
    assert rel_err(ops.attention(q, k, v, attention_mask=mask, scale=0.3), ref) <= 1e-5
    out, probs = ops.attention_with_probs(q, k, v, attention_mask=mask, scale=0.3)
    assert rel_err(out, ref) <= 1e-5
    assert torch.allclose(probs.sum(-1), torch.ones(2, 4, 6))
    assert torch.all(probs[0, :, :, 3:] == 0)


@pytest.mark.parametrize("causal", [False, True])
def test_varlen_attention_matches_padded(causal):
    g = torch.Generator().manual_seed(11)
    lengths = [5, 1, 9, 3]
    h, hk, d = 4, 2, 16
    cu = torch.tensor([0] + list(torch.tensor(lengths).cumsum(0)), dtype=torch.int32)
    total = int(cu[-1])
    q, k, v = (torch.randn(total, hh, d, generator=g) for hh in (h, hk, hk))
    out = ops.varlen_attention(q, k, v, cu, cu, max(lengths), max(lengths), causal=causal)
    for i, n in enumerate(lengths):
        s = slice(int(cu[i]), int(cu[i + 1]))
        ref = explicit_attention(q[s].transpose(0, 1)[None], k[s].transpose(0, 1)[None],
                                 v[s].transpose(0, 1)[None], causal, None, None)[0].transpose(0, 1)
        assert rel_err(out[s], ref) <= 1e-5, f"sequence {i}"


VARLEN_CPU_CASES = [  # query lengths, key lengths (None: the same), heads, kv_heads, head_dim
    ((1, 3, 17, 120), None, 12, 12, 32),   # MiniLM's heads; odd lengths
    ((5, 1, 9, 3), None, 4, 2, 16),        # GQA 2:1
    ((0, 4, 7, 0, 2), None, 3, 3, 8),      # empty sequences
    ((2, 1, 6), (5, 9, 6), 4, 1, 24),      # queries shorter than keys (causal: aligned bottom right), MQA
    ((3, 2), (0, 4), 2, 2, 8),             # a sequence without keys: zeros
]


@pytest.mark.parametrize("len_q, len_k, h, hk, d", VARLEN_CPU_CASES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_varlen_attention_cpu_matches_float64_reference(len_q, len_k, h, hk, d, causal, dtype, tol):
    """The cpu backend (one SDPA call per sequence) against the reference in float64."""
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    len_k = len_k or len_q
    cu_q, cu_k = (torch.tensor([0, *torch.tensor(n).cumsum(0).tolist()], dtype=torch.int32) for n in (len_q, len_k))
    q = torch.randn(sum(len_q), h, d, generator=g, dtype=dtype)
    k, v = (torch.randn(sum(len_k), hk, d, generator=g, dtype=dtype) for _ in range(2))
    args = (q, k, v, cu_q, cu_k, max(len_q), max(len_k))
    assert ops.varlen_attention.choose("cpu", args) == "cpu"
    with ops.use_backend("cpu"):
        out = ops.varlen_attention(*args, causal=causal, scale=0.3)
    want = varlen_attention_reference(q.double(), k.double(), v.double(), cu_q, cu_k, max(len_q), max(len_k),
                                      causal=causal, scale=0.3)
    assert out.dtype == dtype and out.shape == q.shape
    assert rel_err(out, want) <= tol, f"seed {seed}"
    assert torch.isfinite(out).all()


def test_varlen_attention_cpu_zeros_outside_the_sequences():
    """Tokens past cu_seqlens[-1] belong to no sequence: zeros, as the reference writes."""
    q = torch.randn(7, 2, 8, dtype=torch.float64)
    cu = torch.tensor([0, 2, 5], dtype=torch.int32)
    with ops.use_backend("cpu"):
        out = ops.varlen_attention(q, q, q, cu, cu, 3, 3)
    assert torch.equal(out[5:], torch.zeros(2, 2, 8, dtype=torch.float64))
    assert rel_err(out, varlen_attention_reference(q, q, q, cu, cu, 3, 3)) <= 1e-12


# -- Triton kernels (kernels/attention.py) --------------------------------------------------------

TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2}


@pytest.fixture
def kernels(triton_backend, monkeypatch):
    """The kernel module, its knobs restored after the test (tests shrink tiles and decode chunks)."""
    from fastformers.kernels import attention as module

    for name in ("FWD_BLOCKS", "DECODE_MAX_Q_LEN", "DECODE_MIN_CHUNK"):
        monkeypatch.setattr(module, name, getattr(module, name))
    return module


def _rand(g, *shape, dtype=torch.float32):
    return torch.randn(shape, generator=g, dtype=torch.float64).to(DEVICE, dtype)


def _qkv(g, b, h, hk, lq, lk, d, dtype=torch.float32, layout="contiguous"):
    """q (b, h, lq, d), k/v (b, hk, lk, d): contiguous; "transposed" views of (b, seq, heads, d) projections
    (as attention modules make them); or "cache": k/v the first lk positions of a longer preallocated cache."""
    if layout == "transposed":
        return (_rand(g, b, n, hh, d, dtype=dtype).transpose(1, 2) for hh, n in ((h, lq), (hk, lk), (hk, lk)))
    if layout == "cache":
        k, v = (_rand(g, b, hk, lk + 5, d, dtype=dtype)[:, :, :lk] for _ in range(2))
        return _rand(g, b, h, lq, d, dtype=dtype), k, v
    return (_rand(g, b, hh, n, d, dtype=dtype) for hh, n in ((h, lq), (hk, lk), (hk, lk)))


def _key_mask(g, b, lk, int_mask=False):
    """Batch row 0 sees no key; row 1 random keys; later rows padded to decreasing lengths."""
    mask = torch.rand(b, lk, generator=g) > 0.3
    mask[0] = False
    for i in range(2, b):
        mask[i] = torch.arange(lk) < max(1, lk - 3 * i)
    mask = mask.to(DEVICE)
    return mask.long() if int_mask else mask


def _reference(q, k, v, causal=False, mask=None, scale=None):
    return attention_reference(q.double(), k.double(), v.double(), causal=causal, attention_mask=mask, scale=scale)


def _check(out, q, k, v, causal, mask, seed, scale=None):
    want = _reference(q, k, v, causal, mask, scale)
    assert out.shape == q.shape and out.dtype == q.dtype
    err = rel_err(out, want)
    assert err <= TOL[q.dtype], f"relative error {err:.2e} (seed {seed})"
    if mask is not None and not mask[0].any():
        assert torch.all(out[0] == 0), f"a row that sees no key is not zero (seed {seed})"


def _lse_reference(q, k, causal, mask, scale):
    """float64 log-sum-exp of each query's visible scores, (batch, heads, q_len); +inf where none is visible."""
    groups = q.shape[1] // k.shape[1]
    s = q.double() @ k.double().repeat_interleave(groups, 1).transpose(-1, -2) * scale
    lq, lk = q.shape[2], k.shape[2]
    keep = torch.ones(lq, lk, dtype=torch.bool, device=q.device)[None, None]
    if causal:
        keep = keep & (torch.arange(lk, device=q.device)[None] <= torch.arange(lq, device=q.device)[:, None]
                       + (lk - lq))
    if mask is not None:
        keep = keep & mask.bool()[:, None, None, :]
    lse = torch.logsumexp(s.masked_fill(~keep, float("-inf")), -1)
    return lse.masked_fill(~keep.any(-1).expand_as(lse), float("inf"))


def _check_lse(lse, want, seed):
    assert lse.dtype == torch.float32 and lse.shape == want.shape and lse.is_contiguous()
    empty = torch.isinf(want)
    assert torch.equal(torch.isposinf(lse), empty), f"+inf rows differ (seed {seed})"
    if empty.all():
        return
    assert (lse[~empty].double() - want[~empty]).abs().max() <= 1e-4 * want[~empty].abs().max().clamp_min(1), \
        f"lse (seed {seed})"


KERNEL_CASES = [  # batch, heads, kv_heads, q_len, kv_len, head_dim
    (2, 4, 4, 7, 7, 32),     # square
    (3, 4, 2, 33, 40, 80),   # GQA 2, q_len < kv_len: causal aligned bottom right, head_dim 80 padded to 128
    (2, 4, 1, 17, 17, 64),   # MQA (GQA 4)
    (2, 2, 2, 12, 5, 32),    # q_len > kv_len: the first causal rows see nothing
]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("case", KERNEL_CASES)
def test_attention_kernel_matches_reference(kernels, case, masked, causal):
    kernels.DECODE_MAX_Q_LEN = 0  # short queries too on the tiled kernel
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    b, h, hk, lq, lk, d = case
    q, k, v = _qkv(g, b, h, hk, lq, lk, d)
    mask = _key_mask(g, b, lk) if masked else None
    _check(ops.attention(q, k, v, causal=causal, attention_mask=mask), q, k, v, causal, mask, seed)
    assert dict(kernels._common.LAUNCHES) == {"attention_fwd": 1}


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("case", [(2, 4, 2, 40, 37, 32), (1, 2, 1, 9, 33, 24), (2, 2, 2, 35, 20, 16)])
def test_attention_kernel_small_tiles(kernels, case, causal):
    """16 x 16 tiles: several query tiles and key blocks, both loop phases, partial last tiles."""
    kernels.FWD_BLOCKS = (16, 16)
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    b, h, hk, lq, lk, d = case
    q, k, v = _qkv(g, b, h, hk, lq, lk, d)
    mask = _key_mask(g, b, lk, int_mask=True) if b > 1 else None
    _check(ops.attention(q, k, v, causal=causal, attention_mask=mask, scale=0.3), q, k, v, causal, mask, seed, 0.3)
    assert kernels._common.LAUNCHES["attention_fwd"] == 1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", [(2, 4, 2, 19, 23, 64), (3, 2, 1, 7, 7, 80)])
def test_attention_kernel_half_precision(kernels, case, dtype):
    kernels.DECODE_MAX_Q_LEN = 0
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    b, h, hk, lq, lk, d = case
    q, k, v = _qkv(g, b, h, hk, lq, lk, d, dtype)
    mask = _key_mask(g, b, lk)
    _check(ops.attention(q, k, v, causal=True, attention_mask=mask), q, k, v, True, mask, seed)
    assert kernels._common.LAUNCHES["attention_fwd"] == 1


@pytest.mark.parametrize("head_dim", [8, 96, 128, 200, 256])
def test_attention_kernel_head_dims(kernels, head_dim):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    q, k, v = _qkv(g, 1, 2, 1, 9, 11, head_dim)
    _check(ops.attention(q, k, v, causal=True), q, k, v, True, None, seed)
    assert kernels._common.LAUNCHES["attention_fwd"] == 1


@pytest.mark.parametrize("layout", ["transposed", "cache"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_kernel_strided_inputs(kernels, layout, dtype):
    """Transposed projections and KV-cache slices are read in place; the output's memory is (b, s, h, d)."""
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    q, k, v = _qkv(g, 2, 4, 2, 11, 13, 32, dtype, layout)
    assert not (k.is_contiguous() or v.is_contiguous())
    mask = _key_mask(g, 2, 13)
    out = ops.attention(q, k, v, causal=True, attention_mask=mask)
    _check(out, q, k, v, True, mask, seed)
    assert out.transpose(1, 2).is_contiguous()
    assert kernels._common.LAUNCHES["attention_fwd"] == 1


@pytest.mark.parametrize("q_len", [1, 3])
def test_attention_kernel_short_queries_without_decoding(kernels, q_len):
    """q_len 1 and 3 on the tiled kernel (the decode path switched off)."""
    kernels.DECODE_MAX_Q_LEN = 0
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    q, k, v = _qkv(g, 3, 4, 2, q_len, 21, 32, layout="cache")
    mask = _key_mask(g, 3, 21)
    _check(ops.attention(q, k, v, causal=True, attention_mask=mask), q, k, v, True, mask, seed)
    assert dict(kernels._common.LAUNCHES) == {"attention_fwd": 1}


@pytest.mark.parametrize("chunk", [16, 32])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("case", [(3, 4, 2, 1, 37, 32), (2, 4, 1, 3, 45, 80), (2, 2, 2, 1, 40, 64)])
def test_attention_decode_splits(kernels, case, causal, chunk):
    """Flash-decoding with chunks of 16 / 32 keys (16-key blocks): several splits, a partial last split,
    splits in which a row sees nothing; q_len 1 and 3 (rows of a GQA group x queries in one tile)."""
    kernels.FWD_BLOCKS = (16, 16)
    kernels.DECODE_MIN_CHUNK = chunk
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    b, h, hk, lq, lk, d = case
    q, k, v = _qkv(g, b, h, hk, lq, lk, d, layout="cache")
    mask = _key_mask(g, b, lk)
    mask[1, :chunk] = False  # batch row 1: its first split has no visible key
    out, lse = torch.ops.fastformers.attention_fwd(q, k, v, mask, causal, 0.25)
    _check(out, q, k, v, causal, mask, seed, 0.25)
    _check_lse(lse, _lse_reference(q, k, causal, mask, 0.25), seed)
    assert dict(kernels._common.LAUNCHES) == {"attention_decode": 1, "attention_decode_reduce": 1}


@pytest.mark.parametrize("dtype", list(TOL))
def test_attention_decode_single_split(kernels, dtype):
    """A short cache: one split, the decode kernel writes the result itself (no reduction)."""
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    q, k, v = _qkv(g, 2, 8, 2, 1, 29, 64, dtype, layout="cache")
    mask = _key_mask(g, 2, 29)
    _check(ops.attention(q, k, v, causal=True, attention_mask=mask), q, k, v, True, mask, seed)
    assert dict(kernels._common.LAUNCHES) == {"attention_decode": 1}


@pytest.mark.parametrize("case", [(2, 4, 2, 9, 9, 32, True), (3, 2, 1, 7, 20, 80, False),
                                  (2, 2, 2, 12, 5, 16, True)])
def test_attention_kernel_lse(kernels, case):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    b, h, hk, lq, lk, d, causal = case
    q, k, v = _qkv(g, b, h, hk, lq, lk, d, layout="transposed")
    mask = _key_mask(g, b, lk)
    out, lse = torch.ops.fastformers.attention_fwd(q, k, v, mask, causal, 1 / math.sqrt(d))
    _check(out, q, k, v, causal, mask, seed)
    _check_lse(lse, _lse_reference(q, k, causal, mask, 1 / math.sqrt(d)), seed)
    assert kernels._common.LAUNCHES["attention_fwd" if lq > kernels.DECODE_MAX_Q_LEN else "attention_decode"] == 1


def _packed(g, lengths, heads, d, dtype):
    """(total, heads, d) tokens seen through a fused (total, 3, heads, d) projection (non-contiguous)."""
    return _rand(g, sum(lengths), 3, heads, d, dtype=dtype)[:, 1]


def _cu(lengths, dtype=torch.int32):
    return torch.tensor([0] + lengths, dtype=dtype).cumsum(0, dtype=dtype).to(DEVICE)


@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lengths", [([5, 0, 17, 1], [5, 0, 17, 1]),     # self-attention, an empty sequence
                                     ([3, 4, 0, 9], [6, 0, 2, 12])])     # keys differ: a sequence with none
def test_varlen_attention_kernel(kernels, lengths, causal, dtype):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    len_q, len_k = lengths
    h, hk, d = 4, 2, 32
    q, k, v = _packed(g, len_q, h, d, dtype), _packed(g, len_k, hk, d, dtype), _packed(g, len_k, hk, d, dtype)
    cu_q, cu_k = _cu(len_q), _cu(len_k, torch.int64)
    out = ops.varlen_attention(q, k, v, cu_q, cu_k, max(len_q), max(len_k), causal=causal)
    want = varlen_attention_reference(q.double(), k.double(), v.double(), cu_q, cu_k, max(len_q), max(len_k),
                                      causal=causal)
    assert out.shape == q.shape and out.dtype == dtype
    err = rel_err(out, want)
    assert err <= TOL[dtype], f"relative error {err:.2e} (seed {seed})"
    assert kernels._common.LAUNCHES["varlen_attention_fwd"] == 1


def test_varlen_attention_kernel_lse(kernels):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    kernels.FWD_BLOCKS = (16, 16)
    len_q, len_k, h, hk, d = [5, 0, 21, 2, 3], [7, 4, 19, 2, 0], 4, 1, 16
    q, k, v = _packed(g, len_q, h, d, torch.float32), _packed(g, len_k, hk, d, torch.float32), \
        _packed(g, len_k, hk, d, torch.float32)
    cu_q, cu_k = _cu(len_q), _cu(len_k)
    out, lse = torch.ops.fastformers.varlen_attention_fwd(q, k, v, cu_q, cu_k, max(len_q), max(len_k), True, 0.4)
    assert lse.shape == (h, sum(len_q))
    for i in range(len(len_q)):
        sq, sk = slice(int(cu_q[i]), int(cu_q[i + 1])), slice(int(cu_k[i]), int(cu_k[i + 1]))
        if len_q[i] == 0:
            continue
        qi, ki, vi = (t[s].transpose(0, 1)[None] for t, s in ((q, sq), (k, sk), (v, sk)))
        if len_k[i]:
            _check(out[sq].transpose(0, 1)[None], qi, ki, vi, True, None, seed, 0.4)
        else:
            assert torch.all(out[sq] == 0)
        _check_lse(lse[:, sq][None].contiguous(), _lse_reference(qi, ki, True, None, 0.4), seed)
    assert kernels._common.LAUNCHES["varlen_attention_fwd"] == 1


@pytest.mark.parametrize("path", ["tiled", "decode"])
def test_attention_fwd_opcheck(kernels, path):
    kernels.DECODE_MIN_CHUNK = 16
    g = torch.Generator().manual_seed(random.randrange(2**31))
    q_len = 1 if path == "decode" else 5
    q, k, v = _qkv(g, 2, 4, 2, q_len, 37, 16, layout="transposed")
    mask = torch.ones(2, 37, dtype=torch.bool, device=DEVICE)
    mask[1, 30:] = False
    torch.library.opcheck(torch.ops.fastformers.attention_fwd.default, (q, k, v, mask, True, 0.25),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor",
                                      "test_aot_dispatch_dynamic"))


def test_varlen_attention_fwd_opcheck(kernels):
    g = torch.Generator().manual_seed(random.randrange(2**31))
    lengths = [3, 0, 6]
    q, k, v = _packed(g, lengths, 2, 16, torch.float32), _packed(g, lengths, 1, 16, torch.float32), \
        _packed(g, lengths, 1, 16, torch.float32)
    torch.library.opcheck(torch.ops.fastformers.varlen_attention_fwd.default,
                          (q, k, v, _cu(lengths), _cu(lengths), 6, 6, False, 0.25),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor",
                                      "test_aot_dispatch_dynamic"))


def test_attention_kernels_refuse_with_a_reason(kernels):
    q = torch.randn(1, 2, 3, 8, device=DEVICE)
    cases = [
        (torch.randn(1, 1, 3, 288, device=DEVICE), "head_dim 288"),
        (q.double(), "float32, float16 or bfloat16"),
        (q.half(), "differ"),
        (torch.randn(1, 3, 3, 8, device=DEVICE), "not a multiple"),
    ]
    for bad, reason in cases:
        args = (bad, bad, bad) if bad.dtype == torch.float64 or bad.shape[-1] == 288 else (q, bad, bad)
        if bad.shape[1] == 3:
            args = (q, bad, bad)
        with pytest.raises(ops.BackendUnavailableError, match=reason):
            ops.attention(*args)
    with pytest.raises(ops.BackendUnavailableError, match="key-padding mask"):
        ops.attention(q, q, q, attention_mask=torch.ones(1, 4, dtype=torch.bool, device=DEVICE))
    packed = torch.randn(5, 2, 8, device=DEVICE)
    cu = torch.tensor([0, 5], device=DEVICE)
    with pytest.raises(ops.BackendUnavailableError, match="int32/int64"):
        ops.varlen_attention(packed, packed, packed, cu.float(), cu, 5, 5)
    assert not kernels._common.LAUNCHES
    # a probe with the hidden states only (ops.padding.unpadding_pays) asks about dtype and device
    assert kernels.varlen_attention_unsupported(torch.randn(2, 3, 768, device=DEVICE)) is None


# -- GPU sizes ------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("case", [(2, 32, 8, 1000, 1000, 128, True), (2, 12, 12, 384, 384, 64, False),
                                  (1, 32, 8, 1, 16384, 128, True), (4, 32, 8, 4, 4100, 128, True),
                                  (2, 8, 8, 77, 300, 256, True)])
def test_attention_kernel_at_model_sizes(kernels, case, dtype):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    b, h, hk, lq, lk, d, causal = case
    q, k, v = _qkv(g, b, h, hk, lq, lk, d, dtype, layout="cache")
    mask = _key_mask(g, b, lk) if b > 1 else None
    out, lse = torch.ops.fastformers.attention_fwd(q, k, v, mask, causal, 1 / math.sqrt(d))
    _check(out, q, k, v, causal, mask, seed)
    _check_lse(lse, _lse_reference(q, k, causal, mask, 1 / math.sqrt(d)), seed)
    expect = "attention_decode" if lq <= kernels.DECODE_MAX_Q_LEN else "attention_fwd"
    assert kernels._common.LAUNCHES[expect] == 1
    if lq == 1:
        assert kernels._common.LAUNCHES["attention_decode_reduce"] == 1  # one sequence, a long cache: split


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", list(TOL))
def test_varlen_attention_kernel_at_model_sizes(kernels, dtype):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    lengths = [512, 1, 0, 77, 1000, 130]
    h, hk, d = 16, 4, 128
    q, k, v = _packed(g, lengths, h, d, dtype), _packed(g, lengths, hk, d, dtype), _packed(g, lengths, hk, d, dtype)
    cu = _cu(lengths)
    for causal in (False, True):
        out = ops.varlen_attention(q, k, v, cu, cu, max(lengths), max(lengths), causal=causal)
        want = varlen_attention_reference(q.double(), k.double(), v.double(), cu, cu, max(lengths), max(lengths),
                                          causal=causal)
        err = rel_err(out, want)
        assert err <= TOL[dtype], f"relative error {err:.2e} (seed {seed})"
