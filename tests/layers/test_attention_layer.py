"""layers.Attention: the fused op, the probabilities path and varlen attention over a Packing agree."""

import pytest
import torch

from fastformers import layers, ops


def qkv(batch=3, heads=2, seq=5, dim=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, seq, dim, generator=g) for _ in range(3)]


@pytest.mark.parametrize("causal", [False, True])
def test_probabilities_path_agrees_with_the_fused_op(causal):
    q, k, v = qkv()
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    attn = layers.Attention(causal=causal, scale=0.3)
    fast, none = attn(q, k, v, mask)
    slow, probs = attn(q, k, v, mask, return_probs=True)
    assert none is None and probs.shape == (3, 2, 5, 5)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 2, 5))


def test_dropout_only_in_training():
    q, k, v = qkv()
    attn = layers.Attention(dropout_p=0.5).eval()
    assert attn(q, k, v)[1] is None
    evaluated = attn(q, k, v)[0]
    attn.train()
    out, probs = attn(q, k, v)
    assert probs is None and not torch.allclose(out, evaluated)  # probabilities only when asked for
    out, probs = attn(q, k, v, return_probs=True)
    assert (probs == 0).any()


def test_packing_runs_varlen_attention_per_sequence():
    q, k, v = qkv()
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    attn = layers.Attention()
    padded, _ = attn(q, k, v, mask.bool())

    def pack(t):  # (batch, heads, seq, dim) -> (1, heads, total, dim)
        flat, packing = ops.unpad(t.transpose(1, 2).flatten(2), mask)
        return flat.view(1, -1, t.shape[1], t.shape[3]).transpose(1, 2), packing

    (pq, packing), (pk, _), (pv, _) = pack(q), pack(k), pack(v)
    packed, _ = attn(pq, pk, pv, packing)
    back = ops.pad(packed.transpose(1, 2).flatten(2), packing).view(3, 5, 2, 4).transpose(1, 2)
    keep = mask.bool()[:, None, :, None].expand_as(padded)
    torch.testing.assert_close(back[keep], padded[keep], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="not causal"):
        layers.Attention(causal=True)(pq, pk, pv, packing)


def test_additive_bias_goes_through_the_op_with_and_without_probabilities():
    q, k, v = qkv()
    bias = torch.randn(1, 2, 5, 5)
    attn = layers.Attention(scale=1.0).eval()
    expected = torch.softmax(q @ k.transpose(-1, -2) + bias, dim=-1) @ v
    out, none = attn(q, k, v, attn_bias=bias)
    assert none is None
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    out, probs = attn(q, k, v, attn_bias=bias, return_probs=True)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(probs, torch.softmax(q @ k.transpose(-1, -2) + bias, dim=-1))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    masked, _ = attn(q, k, v, mask, attn_bias=bias)  # bias and key mask together
    keep_bias = bias.masked_fill(~mask[:, None, None, :], float("-inf"))
    torch.testing.assert_close(masked, torch.softmax(q @ k.transpose(-1, -2) + keep_bias, dim=-1) @ v,
                               rtol=1e-5, atol=1e-6)
