"""config.json values that would make the loader allocate absurd amounts, or fail deep inside torch: a clear
error naming the key and value, before any module is built (from_pretrained and from_config).

Limits: every size key set is a positive integer; the hidden size is a multiple of the heads where the
model derives its head size from them (as transformers' BERT, GPT-2, BART, DistilBERT require); with weights,
a config implying over 10x the parameters the files can hold is refused; without (from_config), one whose
parameters (and per-layer overhead) exceed the memory available is refused."""

from __future__ import annotations

import json
import time

import pytest

import fastformers
from conftest import build_reference

LLAMA = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, vocab_size=99,
             max_position_embeddings=16)
BERT = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, vocab_size=99,
            max_position_embeddings=16)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("limits")
    return {"llama": build_reference("llama", "AutoModelForCausalLM", tmp, **LLAMA)[0],
            "bert": build_reference("bert", "AutoModel", tmp, **BERT)[0]}


def with_config(path, tmp_path, **changes):
    """A copy of the saved checkpoint (weights linked) whose config.json has `changes`."""
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "model.safetensors").symlink_to(path / "model.safetensors")
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (out / "config.json").write_text(json.dumps(config))
    return out


ABSURD = [
    ("num_hidden_layers", 10**6, r"implies at least [\d,]+ parameters .*num_hidden_layers=1000000"),
    ("hidden_size", 2**40, r"implies at least [\d,]+ parameters .*hidden_size=1099511627776"),
    ("vocab_size", 10**9, r"implies at least [\d,]+ parameters .*vocab_size=1000000000"),
    ("intermediate_size", 10**8, r"implies at least [\d,]+ parameters .*intermediate_size=100000000"),
]
BAD_TYPES = [
    ("vocab_size", -5, r"vocab_size=-5 must be a positive integer"),
    ("vocab_size", 0, r"vocab_size=0 must be a positive integer"),
    ("head_dim", 0, r"head_dim=0 must be a positive integer"),
    ("num_key_value_heads", 0, r"num_key_value_heads=0 must be a positive integer"),
    ("hidden_size", "32", r"hidden_size='32' must be a positive integer"),
    ("vocab_size", 99.0, r"vocab_size=99.0 must be a positive integer"),
    ("num_hidden_layers", True, r"num_hidden_layers=True must be a positive integer"),
    ("intermediate_size", [37], r"intermediate_size=\[37\] must be a positive integer"),
    ("max_position_embeddings", -1, r"max_position_embeddings=-1 must be a positive integer"),
    ("num_attention_heads", 3, r"num_attention_heads=3 is not a multiple of num_key_value_heads=2"),
]


@pytest.mark.malformed
@pytest.mark.parametrize("key, value, pattern", ABSURD + BAD_TYPES)
def test_from_pretrained_refuses_before_building(saved, tmp_path, key, value, pattern):
    path = with_config(saved["llama"], tmp_path, **{key: value})
    start = time.perf_counter()
    with pytest.raises(ValueError, match=pattern):
        fastformers.AutoModelForCausalLM.from_pretrained(path)
    assert time.perf_counter() - start < 5


@pytest.mark.malformed
@pytest.mark.parametrize("key, value, pattern", [
    ("num_hidden_layers", 10**6, r"needs at least [\d,]+ bytes .*num_hidden_layers=1000000.* more than the [\d,]+ "
                                 r"bytes of memory available"),
    ("hidden_size", 2**40, r"needs at least [\d,]+ bytes .*hidden_size=1099511627776"),
    ("num_key_value_heads", 3, r"num_attention_heads=2 is not a multiple of num_key_value_heads=3"),
] + BAD_TYPES[:-1])
def test_from_config_refuses_before_building(key, value, pattern):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=pattern):
        config = fastformers.AutoConfig.for_model("llama", **{**LLAMA, key: value})
        fastformers.AutoModelForCausalLM.from_config(config)
    assert time.perf_counter() - start < 5


@pytest.mark.malformed
def test_an_attribute_set_after_the_config_was_made_is_checked_too():
    config = fastformers.AutoConfig.for_model("llama", **LLAMA)
    config.num_hidden_layers = -2
    with pytest.raises(ValueError, match="num_hidden_layers=-2 must be a positive integer"):
        fastformers.AutoModelForCausalLM.from_config(config)


@pytest.mark.malformed
@pytest.mark.parametrize("model_type, sizes, pattern", [
    ("bert", dict(BERT, num_attention_heads=3), "hidden_size=32 is not a multiple of num_attention_heads=3"),
    ("gpt2", dict(n_embd=32, n_head=5, n_layer=1, vocab_size=99), "n_embd=32 is not a multiple of n_head=5"),
    ("bart", dict(d_model=32, encoder_attention_heads=3, vocab_size=99),
     "d_model=32 is not a multiple of encoder_attention_heads=3"),
])
def test_heads_that_do_not_divide_the_hidden_size_refused(model_type, sizes, pattern):
    task = "AutoModelForSeq2SeqLM" if model_type == "bart" else "AutoModel"
    with pytest.raises(ValueError, match=pattern):
        getattr(fastformers, task).from_config(fastformers.AutoConfig.for_model(model_type, **sizes))


def test_sane_configs_transformers_accepts_still_load(saved, tmp_path):
    # head_dim given explicitly (hidden size not a multiple of the heads): transformers' Llama accepts it
    config = fastformers.AutoConfig.for_model("llama", **{**LLAMA, "hidden_size": 30, "head_dim": 16})
    assert fastformers.AutoModelForCausalLM.from_config(config).config.hidden_size == 30
    # a T5 whose d_model is no multiple of its heads (d_kv sizes them)
    t5 = fastformers.AutoConfig.for_model("t5", d_model=30, num_heads=4, d_kv=8, d_ff=16, num_layers=1, vocab_size=99)
    fastformers.AutoModelForSeq2SeqLM.from_config(t5)
    # a config within 10x of its weights (e.g. a head the checkpoint lacks) loads; the saved ones load
    assert fastformers.AutoModel.from_pretrained(saved["bert"]).config.vocab_size == 99
    fastformers.AutoModelForCausalLM.from_pretrained(with_config(saved["llama"], tmp_path, num_hidden_layers=2))
