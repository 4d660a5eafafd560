"""Unpadding: run an encoder on the real tokens of a padded batch only.

`unpad(x, attention_mask)` gathers the real tokens of a (batch, seq, hidden) batch into
(1, total, hidden) and returns a `Packing` describing them; `ops.packed_attention(q, k, v, packing)` runs
varlen attention over the packed tokens (each sequence attends only to its own tokens), and
`pad(x, packing)` scatters the result back (zeros at padded positions). Linear layers, norms and activations
then cost what the real tokens cost. Whether that pays is `ops.unpadding_pays` (ops/attention.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Packing:
    """Where the real tokens of a padded (batch, seq) batch are, and their sequence offsets."""

    indices: torch.Tensor      # (total,) flat positions of the real tokens in batch * seq
    cu_seqlens: torch.Tensor   # (batch + 1,) int32 offsets of each sequence in the packed tokens
    max_seqlen: int
    batch: int
    seq: int


def unpad(x: torch.Tensor, attention_mask: torch.Tensor):
    """(batch, seq, ...) with a (batch, seq) keep mask -> ((1, total, ...), Packing)."""
    batch, seq = attention_mask.shape
    keep = attention_mask.bool()
    lengths = keep.sum(1, dtype=torch.int32)
    indices = keep.flatten().nonzero().flatten()
    cu_seqlens = F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
    packing = Packing(indices, cu_seqlens, int(lengths.max()), batch, seq)
    return x.reshape(batch * seq, *x.shape[2:])[indices][None], packing


def pad(x: torch.Tensor, packing: Packing) -> torch.Tensor:
    """(1, total, ...) -> (batch, seq, ...), zeros where the batch was padded."""
    out = x.new_zeros(packing.batch * packing.seq, *x.shape[2:])
    out[packing.indices] = x[0]
    return out.view(packing.batch, packing.seq, *x.shape[2:])
