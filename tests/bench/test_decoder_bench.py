"""The decoder benchmark's quantized rows on the embedded SmolLM2 GGUF (a short smoke run; the full numbers are for
the closing note and bench/results/): the Q4_1 file kept packed computes the dequantized float32 model (the same
greedy tokens, the same perplexity), with int8 activations it stays within 1% perplexity, int8 weight-only within
2%, and every time is positive; the prefill and batch rows run. (The llama.cpp anchor rows need llama-cpp-python,
which CI does not build: they are exercised by the benchmark runs whose results are committed.)"""

import math

import torch

import fastformers
from fastformers.bench import decoder


def test_quantized_rows_agree_with_the_float32_model():
    folder = decoder.smollm2_dir()
    fp32 = fastformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=decoder.GGUF_NAME,
                                                            quantization_config=False)
    tokenizer = fastformers.AutoTokenizer.from_pretrained(folder, gguf_file=decoder.GGUF_NAME)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="pt")["input_ids"]
    kwargs = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False)
    with torch.inference_mode():
        tokens = fp32.generate(prompt, **kwargs)[0, prompt.shape[1]:].tolist()
    rows = decoder._quantized_rows(folder, fp32, prompt, kwargs, tokens, "smoke", 10.0, quick=True)
    by = {(r.dtype, r.metric): r.value for r in rows}
    full = by[("float32", "perplexity")]
    assert 5 < full < 100
    assert by[("q4_1-packed", "tokens_agreeing_with_fp32")] == 6
    assert abs(by[("q4_1-packed", "perplexity")] / full - 1) < 1e-4
    assert abs(by[("int8", "perplexity")] / full - 1) < 0.02
    assert abs(by[("q4_1-packed-a8", "perplexity")] / full - 1) < 0.01  # int8 activations: the 1%
    for dtype in ("q4_1-packed", "q4_1-packed-a8", "int8"):
        for metric in ("tokens_per_s", "ttft_ms", "median_s"):
            assert math.isfinite(by[(dtype, metric)]) and by[(dtype, metric)] > 0, (dtype, metric)


def test_prefill_and_batch_rows_run():
    folder = decoder.smollm2_dir()
    packed = fastformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=decoder.GGUF_NAME)
    # any model with generate() stands in for transformers' here: the rows' plumbing is under test, not the speed
    rows = decoder._prefill_and_batch_rows(folder, packed, packed, quick=True)
    by = {(r.name, r.provider, r.metric): r.value for r in rows}
    for key in (("smollm2-prefill", "fastformers", "median_ms"), ("smollm2-batch-decode", "fastformers", "tokens_per_s"),
                ("smollm2-batch-decode", "transformers", "tokens_per_s")):
        assert math.isfinite(by[key]) and by[key] > 0, key
