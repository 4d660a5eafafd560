"""The decode step over the static KV cache has fixed shapes: `torch.compile(fullgraph=True)` of the
model's forward compiles it once and replays it for every later token, with eager's logits; for
decoder-only models (Llama, GPT-2) and encoder-decoder ones (BART, T5: the decoder step, with the
cross-attention keys/values the eager first step cached).

What is counted: the prefill (first decoder step) runs eagerly; the compiled forward then runs 32
one-token greedy steps.
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
from fastformers.models.bart import BartConfig, BartForConditionalGeneration
from fastformers.models.gpt2 import GPT2Config, GPT2LMHeadModel
from fastformers.models.llama import LlamaConfig, LlamaForCausalLM
from fastformers.models.t5 import T5Config, T5ForConditionalGeneration

STEPS, PROMPT, BATCH = 32, 5, 2


def tiny(name: str):
    if name == "llama":
        config = LlamaConfig(vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
        return randomize_(LlamaForCausalLM(config)).eval()
    if name == "gpt2":
        config = GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=256)
        return randomize_(GPT2LMHeadModel(config)).eval()
    if name == "bart":
        config = BartConfig(vocab_size=99, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                            decoder_attention_heads=4, encoder_ffn_dim=32, decoder_ffn_dim=32,
                            max_position_embeddings=64)
        return randomize_(BartForConditionalGeneration(config)).eval()
    config = T5Config(vocab_size=99, d_model=32, d_kv=8, d_ff=32, num_heads=4, num_layers=2)
    return randomize_(T5ForConditionalGeneration(config)).eval()


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


def greedy_seq2seq(model, forward, ids, mask):
    """The same for an encoder-decoder model: the encoder and the first decoder step eagerly, then
    STEPS one-token decoder steps through `forward` (`mask` is the encoder's)."""
    length = 1 + STEPS
    cache_positions = torch.arange(length)
    encoded = model.get_encoder()(input_ids=ids, attention_mask=mask)
    cache = model.make_static_cache(BATCH, length)
    start = torch.zeros(BATCH, 1, dtype=torch.long)
    out = model(decoder_input_ids=start, encoder_outputs=encoded, attention_mask=mask, past_key_values=cache)
    token = out.logits[:, -1:].argmax(-1)
    logits = []
    for t in range(1, length):
        with torch._dynamo.config.patch(error_on_recompile=t > 1):
            out = forward(decoder_input_ids=token, encoder_outputs=encoded, attention_mask=mask,
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


@pytest.mark.parametrize("name", ["bart", "t5"])
def test_seq2seq_decode_step_compiles_once_and_matches_eager(name, fresh_dynamo):
    model = tiny(name)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 99, (BATCH, 7), generator=g)
    mask = torch.ones(BATCH, 7, dtype=torch.long)
    mask[1, 5:] = 0  # the encoder batch is right-padded
    with torch.no_grad():
        expected = greedy_seq2seq(model, model, ids, mask)
        compiled = torch.compile(model.forward, fullgraph=True, backend="aot_eager")
        got = greedy_seq2seq(model, compiled, ids, mask)
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert torch.equal(got.argmax(-1), expected.argmax(-1))
    assert rel_err(got, expected) <= 1e-6
