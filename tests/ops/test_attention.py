"""ops.attention / ops.varlen_attention against explicit float64 math, on fresh random inputs."""

import math

import pytest
import torch

from fastformers import ops
from conftest import rel_err


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
