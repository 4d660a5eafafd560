"""ops.attention's one signature: keep-mask or additive bias, causal, scale, dropout, return_probs."""

import pytest
import torch

from fastformers import ops


def qkv(seed=0, batch=2, heads=2, q_len=4, kv_len=6, dim=8):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, q_len, dim, generator=g)
    return q, torch.randn(batch, heads, kv_len, dim, generator=g), torch.randn(batch, heads, kv_len, dim, generator=g)


def explicit(q, k, v, scale, bias=None, keep=None):
    scores = q.double() @ k.double().transpose(-1, -2) * scale
    if bias is not None:
        scores = scores + bias.double()
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    probs = torch.softmax(scores, -1)
    return probs @ v.double(), probs


@pytest.mark.parametrize("causal", [False, True])
def test_return_probs_gives_the_same_output_and_the_probabilities(causal):
    q, k, v = qkv()
    mask = torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    out, probs = ops.attention(q, k, v, attention_mask=mask, causal=causal, scale=0.5, return_probs=True)
    fast = ops.attention(q, k, v, attention_mask=mask, causal=causal, scale=0.5)
    keep = mask[:, None, None, :]
    if causal:
        keep = keep & (torch.arange(6)[None, :] <= torch.arange(4)[:, None] + 2)
    ref_out, ref_probs = explicit(q, k, v, 0.5, keep=keep)
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast.double(), ref_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(probs.double(), ref_probs, rtol=1e-5, atol=1e-6)


def test_additive_bias_broadcasts_and_combines_with_a_keep_mask():
    q, k, v = qkv(1)
    bias = torch.randn(1, 2, 4, 6)
    torch.testing.assert_close(ops.attention(q, k, v, attn_bias=bias, scale=1.0).double(),
                               explicit(q, k, v, 1.0, bias)[0], rtol=1e-5, atol=1e-6)
    mask = torch.tensor([[1] * 6, [1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    got = ops.attention(q, k, v, attn_bias=bias, attention_mask=mask, scale=1.0)
    torch.testing.assert_close(got.double(), explicit(q, k, v, 1.0, bias, mask[:, None, None, :])[0], rtol=1e-5,
                               atol=1e-6)


def test_dropout_applies_only_when_asked_and_returns_probabilities_after_it():
    q, k, v = qkv(2)
    torch.manual_seed(0)
    out, probs = ops.attention(q, k, v, dropout_p=0.5, return_probs=True)
    assert (probs == 0).any()
    torch.testing.assert_close(out, probs @ v)


def test_bias_and_probabilities_are_torch_math_on_a_forced_backend(triton_backend):
    q, k, v = qkv(3)
    ops.attention(q, k, v, attn_bias=torch.zeros(1, 1, 4, 6))
    ops.attention(q, k, v, return_probs=True)
    assert not triton_backend  # no kernel of ours takes a bias or returns probabilities
    ops.attention(q, k, v)
    assert sum(triton_backend.values()) >= 1, dict(triton_backend)  # the plain call runs the kernel


def test_a_packing_is_varlen_attention_not_attention():
    q, k, v = qkv(4, batch=1, q_len=6)
    _, packing = ops.unpad(torch.zeros(1, 6, 1), torch.ones(1, 6))
    with pytest.raises(TypeError, match="packed_attention"):
        ops.attention(q, k, v, attention_mask=packing, return_probs=True)
