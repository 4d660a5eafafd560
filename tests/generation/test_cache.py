"""KV caches (generation/cache.py): sized from the config, written at positions, masked by position."""

from __future__ import annotations

import pytest
import torch

from fastformers.generation.cache import (
    DynamicCache,
    EncoderDecoderCache,
    StaticCache,
    cache_step,
    make_static_cache,
)
from fastformers.models.bart import BartConfig
from fastformers.models.gpt2 import GPT2Config
from fastformers.models.llama import LlamaConfig, Qwen3Config
from fastformers.models.t5 import T5Config


@pytest.mark.parametrize("config, layers, kv_heads, head_dim", [
    (LlamaConfig(hidden_size=64, num_hidden_layers=3, num_attention_heads=8, num_key_value_heads=2), 3, 2, 8),
    (Qwen3Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32),
     2, 2, 32),
    (GPT2Config(n_embd=48, n_layer=2, n_head=4), 2, 4, 12),
    (BartConfig(d_model=32, encoder_layers=1, decoder_layers=3, encoder_attention_heads=2,
                decoder_attention_heads=4), 3, 4, 8),
    (T5Config(d_model=32, d_kv=16, num_heads=2, num_layers=1, num_decoder_layers=2), 2, 2, 16),
])
def test_make_static_cache_is_sized_by_the_config(config, layers, kv_heads, head_dim):
    cache = make_static_cache(config, 3, 10, torch.float16, "cpu")
    if config.is_encoder_decoder:
        assert isinstance(cache, EncoderDecoderCache) and cache.cross(0) is None
        cache = cache.self_attention_cache
    assert isinstance(cache, StaticCache)
    assert len(cache.keys) == len(cache.values) == layers
    assert all(t.shape == (3, kv_heads, 10, head_dim) and t.dtype == torch.float16 for t in cache.keys + cache.values)


def _kv(n, value):
    return torch.full((1, 1, n, 2), float(value)), torch.full((1, 1, n, 2), -float(value))


def test_static_cache_writes_at_positions_and_returns_fixed_shapes_for_one_token():
    cache = StaticCache(num_layers=1, batch_size=1, num_kv_heads=1, head_dim=2, max_length=6, dtype=torch.float32,
                        device="cpu")
    k, v = cache.update(0, *_kv(3, 1), torch.arange(3))
    assert k.shape[2] == 3 and cache.get_seq_length() == 3  # a multi-token write: its keys, from slot 0
    k, v = cache.update(0, *_kv(1, 7), torch.tensor([3]))
    assert k.shape[2] == 6  # a one-token write: the whole buffer
    assert k[0, 0, :, 0].tolist() == [1, 1, 1, 7, 0, 0] and v[0, 0, 3, 0] == -7
    assert cache.get_seq_length() == 4
    cache.update(0, *_kv(1, 9), torch.tensor([1]))  # rewriting an earlier slot does not move the end
    assert cache.get_seq_length() == 4 and k[0, 0, 1, 0] == 9
    cache.crop(2)
    assert cache.get_seq_length() == 2


def test_one_token_step_masks_the_slots_after_its_position():
    cache = StaticCache(num_layers=1, batch_size=2, num_kv_heads=1, head_dim=2, max_length=6, dtype=torch.float32,
                        device="cpu")
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    step = cache_step(cache, 2, 1, "cpu", torch.tensor([3]), mask)
    assert step.kv_len == 6 and step.end == 4
    assert step.key_mask.tolist() == [[False, True, True, True, False, False], [True, True, True, True, False, False]]
    full = torch.ones(2, 6, dtype=torch.long)  # a mask over the whole cache is accepted too
    assert cache_step(cache, 2, 1, "cpu", torch.tensor([3]), full).key_mask[0].tolist() == [True] * 4 + [False] * 2
    prefill = cache_step(cache, 2, 4, "cpu", torch.arange(4), mask)
    assert prefill.kv_len == 4 and prefill.key_mask.tolist() == mask.bool().tolist()


def test_cache_step_errors_name_the_problem():
    static = StaticCache(num_layers=1, batch_size=1, num_kv_heads=1, head_dim=2, max_length=4, dtype=torch.float32,
                         device="cpu")
    with pytest.raises(ValueError, match="static cache holds 4 tokens; writing up to 5"):
        cache_step(static, 1, 1, "cpu", torch.tensor([4]))
    with pytest.raises(ValueError, match="exceeds max_position_embeddings=3"):
        cache_step(None, 1, 4, "cpu", max_positions=3)
    with pytest.raises(ValueError, match=r"decoder_attention_mask must have shape \(batch, cached \+ new tokens\) = "
                                         r"\(1, 3\), got \(1, 2\)"):
        cache_step(static, 1, 1, "cpu", torch.tensor([2]), torch.ones(1, 2), mask_name="decoder_attention_mask")
    dynamic = DynamicCache()
    dynamic.update(0, *_kv(2, 1), torch.arange(2))
    assert cache_step(dynamic, 1, 1, "cpu").cache_position.tolist() == [2]
    with pytest.raises(ValueError, match="a dynamic cache appends: cache_position must continue it at 2"):
        cache_step(dynamic, 1, 1, "cpu", torch.tensor([5]))
