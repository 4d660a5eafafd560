"""KV caches for decoder models. Positions are the truth: a cache is written at `cache_position`.

`StaticCache` (what generate() uses) preallocates (batch, kv_heads, max_length, head_dim) key/value
buffers per layer. A one-token step writes its slot and attends over the whole buffers, masked by
position, so its tensor shapes never change: `torch.compile(fullgraph=True)` compiles it once and a
CUDA graph can capture it. `DynamicCache` grows by concatenation; a plain `model(..., use_cache=True)`
call without a cache gets one, as in transformers. `make_static_cache(config, ...)` builds the static
cache of any decoder (or encoder-decoder) config.

The contract with a decoder model's forward, for q_len new tokens:
    step = cache_step(cache, batch, q_len, device, cache_position, attention_mask)   # once, before the layers
    k_all, v_all = cache.update(layer_idx, k, v, step.cache_position)                # per layer
    ops.attention(q, k_all, v_all, causal=True, attention_mask=step.key_mask)
`cache_position` (q_len,) holds the positions of the new tokens (from the cache's length when not
given). `k_all`/`v_all` hold `step.kv_len` keys: the slots [0, end) for a dynamic cache or a
multi-token write (bottom-right-aligned causal attention over them is exact), or for a one-token write
into a static cache the whole buffers, whose slots after the token are hidden by `key_mask` (a single
query sees every key under bottom-right alignment). `key_mask` (batch|1, kv_len) also hides padding
from the caller's attention_mask, which covers the cached + new tokens (it may also cover the whole
static cache). Nothing advances a counter: the next step's positions say where it writes.

Encoder-decoder models (BART, Marian, T5) use `EncoderDecoderCache`: the decoder's self-attention goes
through its `update` exactly as above, and each layer's cross-attention keys/values, projected from
the encoder output once, are kept with `set_cross(layer_idx, k, v)` and read back with
`cross(layer_idx)` (None until set) on every later step.
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional, Tuple

import torch


class StaticCache:
    def __init__(self, *, num_layers: int, batch_size: int, num_kv_heads: int, head_dim: int,
                 max_length: int, dtype: torch.dtype, device) -> None:
        shape = (batch_size, num_kv_heads, max_length, head_dim)
        self.keys: List[torch.Tensor] = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values: List[torch.Tensor] = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.max_length = max_length
        # one past the last position written (a device scalar, so a compiled step updates it in place)
        self._end = torch.zeros((), dtype=torch.long, device=device)

    def get_seq_length(self) -> int:
        return int(self._end)

    def get_max_cache_shape(self) -> int:
        return self.max_length

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor, cache_position: torch.Tensor
               ) -> Tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        keys.index_copy_(2, cache_position, k)
        values.index_copy_(2, cache_position, v)
        if layer_idx == 0:
            self.mark_written(cache_position)
        if k.shape[2] == 1:
            return keys, values  # fixed shape: the caller masks the slots after cache_position
        # a multi-token write (prefill): its keys, causal from slot 0. A host read, so a compiled
        # multi-token step breaks the graph here: compile the one-token step.
        end = int(cache_position[-1]) + 1
        return keys[:, :, :end], values[:, :, :end]

    @property
    def written(self) -> torch.Tensor:
        """The int64 scalar that counts the positions written (what get_seq_length reads)."""
        return self._end

    def mark_written(self, cache_position: torch.Tensor) -> None:
        """Count the positions written (by `update`, or by a one-call decode step that writes every layer's buffers
        itself: ops.decode_layers)."""
        self._end.copy_(torch.maximum(self._end, cache_position[-1] + 1))

    def crop(self, length: int) -> None:
        self._end.clamp_(max=length)

    def reorder(self, beam_idx: torch.Tensor) -> None:
        """Reorder the batch (beam search): row i becomes old row beam_idx[i]."""
        for buf in self.keys + self.values:
            buf.copy_(buf.index_select(0, beam_idx))

    # transformers' name for it
    reorder_cache = reorder


class DynamicCache:
    """Keys/values grown by concatenation: a write appends, so its positions must follow the cache's."""

    def __init__(self) -> None:
        self.keys: List[torch.Tensor] = []
        self.values: List[torch.Tensor] = []

    def get_seq_length(self) -> int:
        return self.keys[0].shape[2] if self.keys else 0

    def get_max_cache_shape(self) -> Optional[int]:
        return None  # unbounded

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor, cache_position: torch.Tensor
               ) -> Tuple[torch.Tensor, torch.Tensor]:
        if layer_idx == len(self.keys):
            self.keys.append(k)
            self.values.append(v)
        else:
            self.keys[layer_idx] = torch.cat([self.keys[layer_idx], k], dim=2)
            self.values[layer_idx] = torch.cat([self.values[layer_idx], v], dim=2)
        return self.keys[layer_idx], self.values[layer_idx]

    def crop(self, length: int) -> None:
        self.keys = [k[:, :, :length] for k in self.keys]
        self.values = [v[:, :, :length] for v in self.values]

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

    def get_max_cache_shape(self) -> Optional[int]:
        return self.self_attention_cache.get_max_cache_shape()

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor, cache_position: torch.Tensor
               ) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.self_attention_cache.update(layer_idx, k, v, cache_position)

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


def rename_cache_argument(kwargs: dict) -> dict:
    """transformers 5.25 passes the KV cache as `cache=` (`past_key_values=` is its deprecated name, and the one
    fastformers' forwards take): accept both, in place."""
    if "cache" in kwargs:
        cache = kwargs.pop("cache")
        if cache is not None and kwargs.get("past_key_values") is not None:
            raise TypeError("pass the KV cache as cache= or as past_key_values=, not both")
        if cache is not None or "past_key_values" not in kwargs:
            kwargs["past_key_values"] = cache
    return kwargs


def _first(config, *names):
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    raise ValueError(f"{type(config).__name__} has none of {', '.join(names)}: cannot size a KV cache for it")


def _cache_dims(config) -> Tuple[int, int, int]:
    """(layers, key/value heads, head size) of the decoder self-attention cache `config` describes."""
    if getattr(config, "is_encoder_decoder", False):
        layers = _first(config, "num_decoder_layers", "decoder_layers")
        heads = kv_heads = _first(config, "decoder_attention_heads", "num_heads")
    else:
        layers = _first(config, "num_hidden_layers")
        heads = _first(config, "num_attention_heads")
        kv_heads = _first(config, "num_key_value_heads", "num_attention_heads")
    head_dim = getattr(config, "head_dim", None) or _first(config, "hidden_size", "d_model") // heads
    return layers, kv_heads, head_dim


def static_cache_nbytes(config, batch_size: int, max_length: int, dtype: torch.dtype) -> int:
    """The bytes make_static_cache would allocate (keys and values of every layer)."""
    layers, kv_heads, head_dim = _cache_dims(config)
    return 2 * layers * batch_size * kv_heads * max_length * head_dim * dtype.itemsize


def make_static_cache(config, batch_size: int, max_length: int, dtype: torch.dtype, device):
    """The preallocated self-attention cache of the decoder `config` describes (max_length positions per
    row); for an encoder-decoder config an `EncoderDecoderCache` around it, whose cross-attention
    keys/values are added on the first step."""
    layers, kv_heads, head_dim = _cache_dims(config)
    cache = StaticCache(num_layers=layers, batch_size=batch_size, num_kv_heads=kv_heads, head_dim=head_dim,
                        max_length=max_length, dtype=dtype, device=device)
    return EncoderDecoderCache(cache) if getattr(config, "is_encoder_decoder", False) else cache


class CacheStep(NamedTuple):
    """What the layers of one forward share (see the module docstring)."""

    cache_position: torch.Tensor  # (q_len,) positions of the new tokens
    key_mask: Optional[torch.Tensor]  # (batch|1, kv_len) bool, True = may attend; None = every key
    kv_len: int  # keys each layer's attention sees (what cache.update returns)
    end: Optional[int]  # one past the last new position; None while compiling (no host read)


def check_mask_values(mask: torch.Tensor, name: str = "attention_mask") -> bool:
    """Refuse a mask holding anything but 0 and 1 (bool, integer or float 0/1 masks are accepted, as in
    transformers, which reads any non-zero value as "attend": a 2 or -inf there is a caller's mistake, e.g.
    token_type_ids or an additive mask passed as attention_mask). Returns whether every entry is 1.
    Eager only (a host read); one device sync for both answers."""
    if mask.numel() == 0 or torch.compiler.is_compiling():
        return False
    if mask.dtype == torch.bool:
        return bool(mask.all())
    bad, zero = torch.stack([((mask != 0) & (mask != 1)).any(), (mask == 0).any()]).tolist()
    if bad:
        value = mask[(mask != 0) & (mask != 1)][0].item()
        raise ValueError(f"{name} holds {value!r}: a mask holds 1 (attend) and 0 (padding) only")
    return not zero


def cache_step(cache, batch: int, q_len: int, device, cache_position: Optional[torch.Tensor] = None,
               attention_mask: Optional[torch.Tensor] = None, *, max_positions: Optional[int] = None,
               mask_name: str = "attention_mask", raw_mask: bool = False) -> CacheStep:
    """The model side of the cache contract, once per forward. Checks (eagerly: a compiled one-token step
    reads no device value on the host) that the tokens fit the model's positions and the cache, and that
    the mask covers the cached + new tokens. `raw_mask`: the caller reads attention_mask itself, values
    included (a one-call step over a static cache that reads no key past the new token): key_mask is None."""
    if cache_position is None:
        past = cache.get_seq_length() if cache is not None else 0
        cache_position = torch.arange(past, past + q_len, device=device)
        end = past + q_len
    elif q_len > 1 or not torch.compiler.is_compiling():
        end = int(cache_position[-1]) + 1
    else:
        end = None
    capacity = cache.get_max_cache_shape() if cache is not None else None
    if capacity is not None:  # static: a one-token step reads the whole buffers
        kv_len = capacity if q_len == 1 else end
    else:  # dynamic (appends) or none
        kv_len = (cache.get_seq_length() if cache is not None else 0) + q_len
    if end is not None:
        if max_positions is not None and end > max_positions:
            raise ValueError(f"sequence length {end} exceeds max_position_embeddings={max_positions} of this model; "
                             f"truncate the input (e.g. tokenizer(..., truncation=True, max_length={max_positions}))")
        if capacity is not None and end > capacity:
            raise ValueError(f"the static cache holds {capacity} tokens; writing up to {end} does not fit "
                             f"(raise max_length / max_new_tokens accordingly)")
        if cache is not None and capacity is None and end != kv_len:
            raise ValueError(f"a dynamic cache appends: cache_position must continue it at "
                             f"{kv_len - q_len}, got positions ending at {end}")
    full = capacity is not None and q_len == 1  # keys after the token are unwritten (or stale) slots

    key_mask = None
    if attention_mask is not None:
        width = attention_mask.shape[1]
        if attention_mask.dim() != 2 or attention_mask.shape[0] != batch or not (
                width == kv_len or (full and width <= kv_len and end in (None, width))):
            raise ValueError(f"{mask_name} must have shape (batch, cached + new tokens) = {(batch, end)}, "
                             f"got {tuple(attention_mask.shape)}")
        if not raw_mask and (end is None or not check_mask_values(attention_mask, mask_name)):
            key_mask = attention_mask.bool()
            if width < kv_len:
                key_mask = torch.nn.functional.pad(key_mask, (0, kv_len - width))
    if full and not raw_mask:
        written = torch.arange(kv_len, device=device) <= cache_position[-1]
        key_mask = written[None] if key_mask is None else key_mask & written
    return CacheStep(cache_position, key_mask, kv_len, end)
