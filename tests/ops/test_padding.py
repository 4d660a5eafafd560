"""Unpadding: ops.unpad / ops.pad round trips and ops.packed_attention over a Packing equals padded attention."""

import random

import pytest
import torch

from fastformers import ops
from conftest import rel_err


def _mask(lengths, seq, left=False):
    mask = torch.zeros(len(lengths), seq, dtype=torch.long)
    for i, n in enumerate(lengths):
        if left:
            mask[i, seq - n:] = 1
        else:
            mask[i, :n] = 1
    return mask


@pytest.mark.parametrize("left", [False, True])
def test_unpad_pad_round_trip(left):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    lengths = (5, 1, 7, 3)
    mask = _mask(lengths, 7, left)
    x = torch.randn(4, 7, 6, generator=g)
    packed, packing = ops.unpad(x, mask)
    assert packed.shape == (1, sum(lengths), 6)
    assert packing.cu_seqlens.tolist() == [0, 5, 6, 13, 16] and packing.max_seqlen == 7
    assert packing.cu_seqlens.dtype == torch.int32
    back = ops.pad(packed, packing)
    keep = mask.bool()
    assert torch.equal(back[keep], x[keep]), f"seed {seed}"
    assert (back[~keep] == 0).all()


def test_attention_over_a_packing_equals_padded_attention_on_real_rows():
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    mask = _mask((6, 2, 9), 9)
    q, k, v = (torch.randn(3, 4, 9, 8, generator=g) for _ in range(3))
    padded = ops.attention(q, k, v, attention_mask=mask)
    pq, packing = ops.unpad(q.transpose(1, 2), mask)
    pk, _ = ops.unpad(k.transpose(1, 2), mask)
    pv, _ = ops.unpad(v.transpose(1, 2), mask)
    out = ops.packed_attention(pq.transpose(1, 2), pk.transpose(1, 2), pv.transpose(1, 2), packing)
    back = ops.pad(out.transpose(1, 2), packing)
    keep = mask.bool()
    assert rel_err(back[keep], padded.transpose(1, 2)[keep]) <= 1e-6, f"seed {seed}"
    with pytest.raises(TypeError, match="packed_attention"):  # varlen attention is its own call
        ops.attention(pq.transpose(1, 2), pk.transpose(1, 2), pv.transpose(1, 2), attention_mask=packing)


def test_unpadding_pays_only_when_varlen_attention_runs_on_a_kernel():
    x, mask = torch.randn(2, 3, 4), torch.ones(2, 3)
    assert not ops.unpadding_pays(x, mask)  # CPU, no padding: nothing to unpad
    assert not ops.unpadding_pays(x, None)
    mask[1, 2] = 0
    assert ops.unpadding_pays(x, mask)  # CPU, auto: the cpu backend's varlen attention
    with ops.use_backend("cpu"):
        assert ops.unpadding_pays(x, mask)
    with ops.use_backend("torch"):
        assert not ops.unpadding_pays(x, mask)  # the reference: the padded batch as it is
    # autograd (training on a CPU): the padded path, so a loss sees padded positions as transformers' does
    assert not ops.unpadding_pays(x.requires_grad_(), mask)
    with torch.no_grad():
        assert ops.unpadding_pays(x, mask)


def test_unpadding_stays_off_under_torch_compile():
    """A compiled encoder keeps the padded batch: unpadding reads the mask on the host (a graph break)."""
    x, mask = torch.randn(2, 3, 4), torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert ops.unpadding_pays(x, mask)

    @torch.compile(fullgraph=True, backend="eager")
    def scaled(x, mask):
        return x * 2 if ops.unpadding_pays(x, mask) else x * 3

    assert torch.equal(scaled(x, mask), x * 3)
