"""KV caches for decoder models.

`StaticCache` (what generate() uses) preallocates (batch, kv_heads, max_length, head_dim) key/value
buffers per layer and writes each step in place, so a decode step has fixed shapes and can later be
captured in a CUDA graph. `DynamicCache` grows by concatenation; a plain `model(..., use_cache=True)`
call without a cache gets one, as in transformers.

The contract with a decoder model's forward, for q_len new tokens:
    start = cache.get_seq_length()               # host int: slots already written
    cache_position = arange(start, start + q_len)
    k_all, v_all = cache.update(layer_idx, k, v, cache_position)   # per layer
    ops.attention(q, k_all, v_all, causal=True, attention_mask=key_mask)
    cache.advance(q_len)                          # once, after the last layer
`k_all`/`v_all` hold the slots [0, start + q_len): bottom-right-aligned causal attention over them is
exact, and `key_mask` (batch, start + q_len), from the caller's attention_mask, hides padding.

Encoder-decoder models (BART, Marian, T5) use `EncoderDecoderCache`: the decoder's self-attention goes
through its `update`/`advance` exactly as above, and each layer's cross-attention keys/values, projected
from the encoder output once, are kept with `set_cross(layer_idx, k, v)` and read back with
`cross(layer_idx)` (None until set) on every later step.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch


class StaticCache:
    def __init__(self, *, num_layers: int, batch_size: int, num_kv_heads: int, head_dim: int,
                 max_length: int, dtype: torch.dtype, device) -> None:
        shape = (batch_size, num_kv_heads, max_length, head_dim)
        self.keys: List[torch.Tensor] = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values: List[torch.Tensor] = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.max_length = max_length
        self.length = 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_cache_shape(self) -> int:
        return self.max_length

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor, cache_position: torch.Tensor
               ) -> Tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.shape[2]
        if end > self.max_length:
            raise ValueError(f"the static cache holds {self.max_length} tokens; writing up to {end} does not fit "
                             f"(raise max_length / max_new_tokens accordingly)")
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        if k.shape[2] == 1:  # decode: a plain slice write is cheaper than index_copy_
            keys[:, :, self.length] = k[:, :, 0]
            values[:, :, self.length] = v[:, :, 0]
        else:
            keys.index_copy_(2, cache_position, k)
            values.index_copy_(2, cache_position, v)
        return keys[:, :, :end], values[:, :, :end]

    def advance(self, n: int) -> None:
        self.length += n

    def crop(self, length: int) -> None:
        self.length = min(self.length, length)

    def reorder(self, beam_idx: torch.Tensor) -> None:
        """Reorder the batch (beam search): row i becomes old row beam_idx[i]."""
        for buf in self.keys + self.values:
            buf[:, :, :self.length].copy_(buf[:, :, :self.length].index_select(0, beam_idx))

    # transformers' name for it
    reorder_cache = reorder


class DynamicCache:
    def __init__(self) -> None:
        self.keys: List[torch.Tensor] = []
        self.values: List[torch.Tensor] = []
        self.length = 0

    def get_seq_length(self) -> int:
        return self.length

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor, cache_position: torch.Tensor
               ) -> Tuple[torch.Tensor, torch.Tensor]:
        if layer_idx == len(self.keys):
            self.keys.append(k)
            self.values.append(v)
        else:
            self.keys[layer_idx] = torch.cat([self.keys[layer_idx], k], dim=2)
            self.values[layer_idx] = torch.cat([self.values[layer_idx], v], dim=2)
        return self.keys[layer_idx], self.values[layer_idx]

    def advance(self, n: int) -> None:
        self.length += n

    def crop(self, length: int) -> None:
        self.length = min(self.length, length)
        self.keys = [k[:, :, :self.length] for k in self.keys]
        self.values = [v[:, :, :self.length] for v in self.values]

    def reorder(self, beam_idx: torch.Tensor) -> None:
        self.keys = [k.index_select(0, beam_idx) for k in self.keys]
        self.values = [v.index_select(0, beam_idx) for v in self.values]

    reorder_cache = reorder


class EncoderDecoderCache:
    """The decoder self-attention cache (static or dynamic) plus each layer's cross-attention keys and
    values, which depend only on the encoder output and so are projected once per generate() call."""

    def __init__(self, self_attention_cache=None) -> None:
        self.self_attention_cache = self_attention_cache if self_attention_cache is not None else DynamicCache()
        self.cross_keys: dict = {}
        self.cross_values: dict = {}

    def get_seq_length(self) -> int:
        return self.self_attention_cache.get_seq_length()

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor, cache_position: torch.Tensor
               ) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.self_attention_cache.update(layer_idx, k, v, cache_position)

    def advance(self, n: int) -> None:
        self.self_attention_cache.advance(n)

    def cross(self, layer_idx: int) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        if layer_idx not in self.cross_keys:
            return None
        return self.cross_keys[layer_idx], self.cross_values[layer_idx]

    def set_cross(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> None:
        self.cross_keys[layer_idx], self.cross_values[layer_idx] = k, v

    def crop(self, length: int) -> None:
        self.self_attention_cache.crop(length)

    def reorder(self, beam_idx: torch.Tensor) -> None:
        self.self_attention_cache.reorder(beam_idx)
        for layer in self.cross_keys:
            self.cross_keys[layer] = self.cross_keys[layer].index_select(0, beam_idx)
            self.cross_values[layer] = self.cross_values[layer].index_select(0, beam_idx)

    reorder_cache = reorder
