"""generate() and memory: a cap where the model has no position limit (T5), and out-of-memory errors during
generation turned into a clear error that frees what generate() allocated and leaves the model usable.

The out-of-memory path is tested on the CPU by making the model's forward raise torch.OutOfMemoryError (what a
CUDA allocation failure raises); on a GPU the same handler also empties torch's allocator cache (not run here).
"""

from __future__ import annotations

import time
import weakref

import pytest
import torch

import fastformers
from conftest import build_reference
from gen_models import _TMP, model_pair
from fastformers.generation import utils as generation_utils

PROMPT = torch.tensor([[5, 6, 7]])


def tiny_t5():
    path, _ = build_reference("t5", "AutoModelForSeq2SeqLM", _TMP / "memory-t5", d_model=16, num_layers=1,
                              num_heads=2, d_kv=8, d_ff=32, vocab_size=99, decoder_start_token_id=0)
    return fastformers.AutoModelForSeq2SeqLM.from_pretrained(path)


@pytest.mark.malformed
def test_t5_refuses_a_generation_larger_than_memory_before_allocating():
    model = tiny_t5()
    start = time.perf_counter()
    with pytest.raises(torch.OutOfMemoryError, match=r"generate\(\) would allocate [\d,]+ bytes up front \(batch size "
                                                     r"1, max_new_tokens=1000000000.* bytes free: lower max_new_tokens"):
        model.generate(PROMPT, max_new_tokens=10**9)
    assert time.perf_counter() - start < 5
    assert model.generate(PROMPT, max_new_tokens=5).shape[1] <= 6  # a sane length still runs


@pytest.mark.malformed
def test_the_budget_counts_the_batch(monkeypatch):
    ours, _ = model_pair("llama")
    monkeypatch.setattr(generation_utils, "_free_memory", lambda device: 10**6)  # a small device
    ours.generate(PROMPT, max_new_tokens=20)  # a few KB
    with pytest.raises(torch.OutOfMemoryError, match=r"batch size 64, max_new_tokens=200"):
        ours.generate(PROMPT.repeat(64, 1), max_new_tokens=200)


@pytest.mark.malformed
@pytest.mark.parametrize("fail_at", [1, 4])  # the prefill, a decode step
@pytest.mark.parametrize("kwargs", [dict(), dict(num_beams=2), dict(do_sample=True)])
def test_out_of_memory_during_generate_is_clear_frees_and_leaves_the_model_usable(monkeypatch, fail_at, kwargs):
    ours, _ = model_pair("llama")
    expected = ours.generate(PROMPT, max_new_tokens=8, eos_token_id=None, **kwargs,
                             **({"generator": torch.Generator().manual_seed(0)} if kwargs.get("do_sample") else {}))
    caches, calls = [], []
    real_cache, real_forward = ours.make_static_cache, ours.forward

    def tracked_cache(*args):
        cache = real_cache(*args)
        caches.append(weakref.ref(cache.keys[0]))
        return cache

    def failing_forward(*args, **kw):
        calls.append(1)
        if len(calls) == fail_at:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(*args, **kw)

    monkeypatch.setattr(ours, "make_static_cache", tracked_cache)
    monkeypatch.setattr(ours, "forward", failing_forward)
    with pytest.raises(torch.OutOfMemoryError, match=r"ran out of memory on cpu \(batch size \d+, max_new_tokens=8; "
                                                     r"[\d,]+ bytes .*Tried to allocate 2.00 GiB.*freed"):
        ours.generate(PROMPT, max_new_tokens=8, eos_token_id=None, **kwargs)
    assert caches and all(ref() is None for ref in caches), "the KV cache of the failed call is still alive"
    monkeypatch.setattr(ours, "forward", real_forward)
    again = ours.generate(PROMPT, max_new_tokens=8, eos_token_id=None, **kwargs,
                          **({"generator": torch.Generator().manual_seed(0)} if kwargs.get("do_sample") else {}))
    assert torch.equal(again, expected)
