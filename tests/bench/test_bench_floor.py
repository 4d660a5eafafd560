"""The physical floor's accounting (fastformers.bench.floor): bytes per forward and decode step, FLOPs, rates."""

from __future__ import annotations

import math

import torch

import fastformers
from fastformers.bench import floor


def tiny(model_type: str, **config):
    cfg = fastformers.AutoConfig.for_model(model_type, **config)
    auto = fastformers.AutoModelForCausalLM if model_type in ("gpt2", "llama") else fastformers.AutoModel
    return auto.from_config(cfg).eval()


def test_tables_count_the_rows_looked_up_and_a_tied_head_in_full():
    bert = tiny("bert", vocab_size=1000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=64, type_vocab_size=2)
    shape = floor.Shape(bert, torch.float32)
    tables = {"word": 1000, "position": 64, "token_type": 2}
    assert sorted(shape.table_rows) == sorted(tables.values())
    everything = sum(p.numel() * 4 for p in bert.parameters())
    assert shape.full_bytes == everything - sum(rows * 32 * 4 for rows in tables.values())
    # 10 tokens read 10 word rows, 10 position rows and both token-type rows
    assert shape.weight_bytes(10) == shape.full_bytes + (10 + 10 + 2) * 32 * 4

    gpt2 = tiny("gpt2", vocab_size=500, n_embd=32, n_layer=1, n_head=2, n_positions=64)
    shape = floor.Shape(gpt2, torch.float32)
    assert gpt2.lm_head.weight.data_ptr() == gpt2.transformer.wte.weight.data_ptr()
    assert shape.table_rows == [64]  # wte is also the output head: read in full, counted once
    assert shape.full_bytes == sum(p.numel() * 4 for p in gpt2.parameters()) - 64 * 32 * 4


def test_flops_and_kv_cache_of_a_grouped_query_llama():
    llama = tiny("llama", vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False)
    shape = floor.Shape(llama, torch.float16)
    assert (shape.layers, shape.heads, shape.kv_heads, shape.head_dim, shape.kv_elem) == (2, 4, 2, 16, 2)
    body, head = floor.matmul_params(llama)
    per_layer = 64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 128  # q, o; k, v (2 kv heads of 16); gate, up, down
    assert (body, head) == (2 * per_layer, 256 * 64)
    assert shape.kv_bytes(batch=3, context=10) == 2 * 2 * 3 * 2 * 16 * 10 * 2
    nbytes, flops = floor.prefill_cost(shape, body, head, batch=1, length=8)
    assert flops == 2 * body * 8 + 2 * head + 4 * 2 * 4 * 16 * 8 * 4.5  # causal: 8 queries x (8 + 1) / 2 keys
    rates = {"copy_bytes_per_s": 1e9, "matmul_flops_per_s": 1e9}
    steps = floor.decode_floor_s(shape, body, head, batch=1, prompt=8, steps=3, rates=rates)
    one = floor.decode_floor_s(shape, body, head, batch=1, prompt=8, steps=1, rates=rates)
    assert steps > 3 * one > 0  # later steps read a longer cache


def test_measured_rates_are_positive_and_finite():
    rates = floor.measure_rates(torch.device("cpu"), torch.float32, repeats=2)
    assert rates["matmul_size"] in (256, 512, 1024)
    for key in ("copy_bytes_per_s", "matmul_flops_per_s"):
        assert math.isfinite(rates[key]) and rates[key] > 1e6, (key, rates[key])
    assert floor.floor_s(2e9, 1e9, {"copy_bytes_per_s": 1e9, "matmul_flops_per_s": 1e12}) == 2.0
