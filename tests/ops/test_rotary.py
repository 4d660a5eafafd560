"""ops.rotary (rotate-half convention) against explicit float64 complex rotation."""

import pytest
import torch

from fastformers import ops
from conftest import rel_err


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
