"""The decode step over the static KV cache has fixed shapes: `torch.compile(fullgraph=True)` of the
model's forward compiles it once and replays it for every later token, with eager's logits.

What is counted: the prefill runs eagerly; the compiled forward then runs 32 one-token greedy steps.
The first step compiles (one graph, no graph break: fullgraph=True); from the second step on
`error_on_recompile` is set, so any recompilation fails the test, and Dynamo's counters must show one
graph in all. The backend is aot_eager (Dynamo + AOTAutograd's functionalisation of the in-place cache
writes, without Inductor's C++ compile, which takes about a minute on this CPU).
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from conftest import randomize_, rel_err
from fastformers.models.gpt2 import GPT2Config, GPT2LMHeadModel
from fastformers.models.llama import LlamaConfig, LlamaForCausalLM

STEPS, PROMPT, BATCH = 32, 5, 2


def tiny(name: str):
    if name == "llama":
        config = LlamaConfig(vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
        return randomize_(LlamaForCausalLM(config)).eval()
    config = GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=256)
    return randomize_(GPT2LMHeadModel(config)).eval()


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def greedy(model, forward, ids, mask):
    """Eager prefill, then STEPS one-token steps through `forward` over a static cache; returns the
    logits of every step (STEPS, batch, vocab). `mask` (batch, prompt + STEPS) covers the whole cache, so
    each step passes tensors of the same shapes; positions skip the left padding."""
    length = PROMPT + STEPS
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    cache_positions = torch.arange(length)
    cache = model.make_static_cache(BATCH, length)
    out = model(ids, attention_mask=mask[:, :PROMPT], position_ids=positions[:, :PROMPT], past_key_values=cache)
    token = out.logits[:, -1:].argmax(-1)
    logits = []
    for t in range(PROMPT, length):
        with torch._dynamo.config.patch(error_on_recompile=t > PROMPT):
            out = forward(input_ids=token, attention_mask=mask, position_ids=positions[:, t:t + 1],
                          past_key_values=cache, cache_position=cache_positions[t:t + 1], use_cache=True,
                          return_dict=True)
        logits.append(out.logits[:, -1])
        token = out.logits[:, -1:].argmax(-1)
    return torch.stack(logits)


@pytest.mark.parametrize("padded", [True, False], ids=["left-padded", "unpadded"])
@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_decode_step_compiles_once_and_matches_eager(name, padded, fresh_dynamo):
    model = tiny(name)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 99, (BATCH, PROMPT), generator=g)
    mask = torch.ones(BATCH, PROMPT + STEPS, dtype=torch.long)
    if padded:
        mask[1, :2] = 0
    with torch.no_grad():
        expected = greedy(model, model, ids, mask)
        compiled = torch.compile(model.forward, fullgraph=True, backend="aot_eager")
        got = greedy(model, compiled, ids, mask)
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert torch.equal(got.argmax(-1), expected.argmax(-1))
    assert rel_err(got, expected) <= 1e-6
