"""`fastformers generate` (cli/generate.py) on the embedded SmolLM2-135M-Instruct GGUF: chat formatting, tokens
streamed to stdout as they come, raw text, sampling with a seed, quantization, and refused inputs."""

import functools

import pytest

import fastformers
from fastformers.cli import generate, main

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module", autouse=True)
def _load_once():
    """One load of the GGUF per (model, file, quantize) for the whole module (a load takes seconds)."""
    original = generate.load
    cached = functools.lru_cache(maxsize=None)(
        lambda model, gguf, quantize, device: original(_Args(model, gguf, quantize), device))
    generate.load = lambda args, device: cached(args.model, args.gguf_file, args.quantize, device)
    yield
    generate.load = original


class _Args:
    def __init__(self, model, gguf_file, quantize):
        self.model, self.gguf_file, self.quantize = model, gguf_file, quantize


def test_chat_answer_is_streamed(capsys, monkeypatch):
    pieces = []
    real = fastformers.TextStreamer.on_finalized_text

    def record(self, text, stream_end=False):
        pieces.append(text)
        real(self, text, stream_end)

    monkeypatch.setattr(fastformers.TextStreamer, "on_finalized_text", record)
    assert main(["generate", QUESTION, "--max-new-tokens", "20"]) == 0
    out = capsys.readouterr().out
    assert "Paris" in out and "<|im_end|>" not in out and QUESTION not in out
    assert out == "".join(pieces) + "\n" and sum(bool(p) for p in pieces) > 2  # printed piece by piece


def test_same_as_generate_with_the_chat_template(capsys):
    from fastformers.pipelines.defaults import chat_checkpoint

    assert main(["generate", QUESTION, "--system", "Answer in one word.", "--max-new-tokens", "8"]) == 0
    out = capsys.readouterr().out
    ckpt = chat_checkpoint()
    tokenizer, model = generate.load(_Args(None, None, None), None)
    ids = tokenizer.apply_chat_template([{"role": "system", "content": "Answer in one word."},
                                         {"role": "user", "content": QUESTION}], add_generation_prompt=True,
                                        return_tensors="pt")["input_ids"]
    expected = model.generate(ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1]:]
    assert out.strip() == tokenizer.decode(expected, skip_special_tokens=True).strip()
    assert ckpt.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_no_chat_continues_raw_text(capsys):
    assert main(["generate", "The capital of France is", "--no-chat", "--max-new-tokens", "5"]) == 0
    out = capsys.readouterr().out
    assert "Paris" in out and not out.startswith("The capital")


def test_sampling_with_a_seed_repeats(capsys):
    args = ["generate", "Tell me a story.", "--temperature", "0.9", "--top-k", "40", "--max-new-tokens", "8"]
    assert main([*args, "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert main([*args, "--seed", "3"]) == 0
    assert capsys.readouterr().out == first


def test_quantized_int8_still_answers(capsys):
    assert main(["generate", QUESTION, "--quantize", "int8", "--max-new-tokens", "12"]) == 0
    assert "Paris" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["generate", "  "], "the prompt is empty"),
    (["generate", "hi", "--max-new-tokens", "0"], "--max-new-tokens must be a positive integer"),
    (["generate", "hi", "--no-chat", "--system", "x"], "--system needs the chat template"),
])
def test_refused_inputs(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastformers: error: ") and message in err and len(err.strip().splitlines()) == 1


def test_missing_gguf_file_is_named(tmp_path, capsys):
    assert main(["generate", "hi", "--model", str(tmp_path), "--gguf-file", "missing.gguf"]) == 2
    assert "missing.gguf" in capsys.readouterr().err
