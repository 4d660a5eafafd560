"""Encoder latency: fastformers vs transformers vs ONNX Runtime on all-MiniLM-L6-v2, same weights, one run.

Cases: batch 1 with a short sentence; batch 8 x 128 tokens; a corpus of sentences with natural lengths (5 to 120
tokens) embedded in batches of 32, each batch padded to its longest sentence as a user's code does.
Rows per case: float32 (fastformers, transformers, ONNX Runtime's optimized graph), int8 (fastformers w8a8,
fastformers blockwise_a8 with 8-bit weights in groups of 32, fastformers w8a8 with the FFN down-projections in
blockwise_a8, ONNX Runtime's dynamic quantization), and bfloat16 (fastformers and transformers) where `bf16` is asked
for.
Every engine's output is checked against transformers' float32 before it is timed, over the real tokens (padded
positions carry no meaning; fastformers unpads a padded batch and writes zeros there): max_abs_diff for float32,
the lowest cosine over those tokens for int8 / bfloat16. Engines run interleaved call by call, same thread count.
The first case also reports each engine's first call after loading (first_call_ms: its one-time costs, such as
fastformers packing weights; transformers' first call runs first and pays torch's own lazy setup).
"""

from __future__ import annotations

import random
import time
from typing import Callable, Dict, List

import torch

from .harness import Row, latency_rows, time_interleaved

TEXT = "The quick brown fox jumps over the lazy dog near the river bank."
CORPUS_SIZE = 256
CORPUS_BATCH = 32
WORDS = ("the of and to in is was for on that with as by at from it an be this are which or his her they had not "
         "have but one all were when there their can more has been would who will some other time into only about "
         "river city music language history people system water light field small large early later because "
         "between during several although however government university number country second important").split()


def corpus(tokenizer, size: int = CORPUS_SIZE, seed: int = 0) -> List[str]:
    """`size` sentences whose lengths spread from 5 to 120 tokens (log-uniform, as real text skews short)."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(size):
        target = int(round(5 * (120 / 5) ** rng.random()))
        words = [rng.choice(WORDS) for _ in range(target)]
        while len(tokenizer(" ".join(words))["input_ids"]) > target and len(words) > 1:
            words.pop()
        sentences.append(" ".join(words).capitalize() + ".")
    return sentences


def _min_cosine(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    cos = torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)
    return cos[mask.bool()].min().item()


def _engines(path: str, dtypes) -> Dict[str, Callable]:
    """name -> (dtype label, callable(enc) -> last hidden state); the anchors when onnxruntime is installed."""
    import transformers

    import fastformers

    from . import ort_anchor

    engines: Dict[str, tuple] = {}
    theirs = transformers.AutoModel.from_pretrained(path, dtype=torch.float32).eval()
    engines["transformers"] = ("float32", lambda enc: theirs(**enc).last_hidden_state)
    ours = fastformers.AutoModel.from_pretrained(path, torch_dtype=torch.float32)
    engines["fastformers"] = ("float32", lambda enc: ours(**enc).last_hidden_state)
    if ort_anchor.missing() is None:
        paths = ort_anchor.export_encoder(path)
        threads = torch.get_num_threads()
        ort_fp32, ort_int8 = ort_anchor.OrtEncoder(paths["float32"], threads), ort_anchor.OrtEncoder(paths["int8"], threads)
        engines["onnxruntime"] = ("float32", ort_fp32)
        engines["onnxruntime-int8"] = ("int8", ort_int8)
    else:
        print(f"bench encoder: no ONNX Runtime rows: {ort_anchor.missing()}")
    if "int8" in dtypes:
        w8a8 = fastformers.AutoModel.from_pretrained(
            path, torch_dtype=torch.float32, quantization_config=fastformers.QuantizationConfig(bits=8, method="w8a8"))
        engines["fastformers-w8a8"] = ("int8", lambda enc: w8a8(**enc).last_hidden_state)
        # int8 weights in groups of 32 and int8 activations per block of 32: finer scales than W8A8's per-channel /
        # per-token ones (MiniLM's lowest token cosine 0.997 against W8A8's 0.98)
        blockwise = fastformers.AutoModel.from_pretrained(
            path, torch_dtype=torch.float32,
            quantization_config=fastformers.QuantizationConfig(bits=8, group_size=32, method="blockwise_a8"))
        engines["fastformers-int8-blocks"] = ("int8", lambda enc: blockwise(**enc).last_hidden_state)
        # W8A8 but each layer's FFN down-projection in blockwise_a8: its input (the GELU's output) is where per-token
        # scales lose most (measured alone: MiniLM 8 x 128's lowest token cosine 0.981, the other linears >= 0.997)
        blocks = {"bits": 8, "group_size": 32, "method": "blockwise_a8"}
        down = {f"encoder.layer.{i}.output.dense": blocks for i in range(ours.config.num_hidden_layers)}
        mixed = fastformers.AutoModel.from_pretrained(
            path, torch_dtype=torch.float32,
            quantization_config=fastformers.QuantizationConfig(bits=8, method="w8a8", modules=down))
        engines["fastformers-w8a8-ffn-blocks"] = ("int8", lambda enc: mixed(**enc).last_hidden_state)
    if "bf16" in dtypes:
        ours_bf16 = fastformers.AutoModel.from_pretrained(path, torch_dtype=torch.bfloat16)
        theirs_bf16 = transformers.AutoModel.from_pretrained(path, dtype=torch.bfloat16).eval()
        engines["fastformers-bf16"] = ("bfloat16", lambda enc: ours_bf16(**enc).last_hidden_state)
        engines["transformers-bf16"] = ("bfloat16", lambda enc: theirs_bf16(**enc).last_hidden_state)
    return engines


def run(quick: bool = False, dtypes=("int8", "bf16"), cases=None) -> List[Row]:
    """dtypes: the extra rows ("int8", "bf16"); cases: a subset of batch1-short, batch8x128, corpus (all by default)."""
    import transformers

    from fastformers.pipelines.defaults import default_embedding_model

    path = default_embedding_model()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    wanted = set(cases or ())
    engines = _engines(path, dtypes)
    g = torch.Generator().manual_seed(0)
    sentences = corpus(tokenizer, CORPUS_SIZE // 4 if quick else CORPUS_SIZE)
    batches = [dict(tokenizer(sentences[i:i + CORPUS_BATCH], padding=True, return_tensors="pt"))
               for i in range(0, len(sentences), CORPUS_BATCH)]
    cases = {
        "batch1-short": [dict(tokenizer([TEXT], return_tensors="pt"))],
        "batch8x128": [{"input_ids": torch.randint(1000, 30000, (8, 128), generator=g),
                        "attention_mask": torch.ones(8, 128, dtype=torch.long),
                        "token_type_ids": torch.zeros(8, 128, dtype=torch.long)}],
        f"corpus{len(sentences)}-batch{CORPUS_BATCH}": batches,
    }
    cases = {k: v for k, v in cases.items() if not wanted or any(k.startswith(w) for w in wanted)}
    repeats = {"batch1-short": 30 if quick else 300, "batch8x128": 5 if quick else 40}
    rows: List[Row] = []
    for case, encs in cases.items():
        name = f"minilm-{case}"
        shape = "x".join(map(str, encs[0]["input_ids"].shape)) if len(encs) == 1 else f"{len(sentences)} sentences"
        with torch.inference_mode():
            first = not rows  # the first case holds every engine's first call after loading: its one-time costs
            start = time.perf_counter()
            reference = [engines["transformers"][1](enc) for enc in encs]
            seconds = {"transformers": time.perf_counter() - start}
            for engine, (dtype, fn) in engines.items():
                start = time.perf_counter()
                outs = [fn(enc) for enc in encs]
                seconds.setdefault(engine, time.perf_counter() - start)
                if dtype == "float32":
                    err = max((o - r)[enc["attention_mask"].bool()].abs().max().item()
                              for o, r, enc in zip(outs, reference, encs))
                    rows.append(Row(name, engine, shape, dtype, "max_abs_diff", err))
                else:
                    low = min(_min_cosine(o, r, enc["attention_mask"]) for o, r, enc in zip(outs, reference, encs))
                    rows.append(Row(name, engine, shape, dtype, "min_token_cosine", low))
            calls = {engine: (lambda fn=fn: [fn(enc) for enc in encs]) for engine, (_, fn) in engines.items()}
            times = time_interleaved(calls, repeats.get(case, 3 if quick else 10))
        for engine, ts in times.items():
            rows += latency_rows(name, shape, engines[engine][0], {engine: ts})
            if first:  # packing weights (fastformers), building the session (ONNX Runtime: before this), torch's own
                rows.append(Row(name, engine, shape, engines[engine][0], "first_call_ms", seconds[engine] * 1e3))
        medians = {r.provider: r.value for r in rows if r.name == name and r.metric == "median_ms"}
        for engine in engines:
            base = "transformers-bf16" if engines[engine][0] == "bfloat16" else "transformers"
            if not engine.startswith("transformers"):
                rows.append(Row(name, engine, shape, engines[engine][0], f"speedup_vs_{base}",
                                medians[base] / medians[engine]))
            if "onnxruntime" in engines and engine.startswith("fastformers"):
                anchor = "onnxruntime-int8" if engines[engine][0] == "int8" else "onnxruntime"
                rows.append(Row(name, engine, shape, engines[engine][0], f"speedup_vs_{anchor}",
                                medians[anchor] / medians[engine]))
        if len(encs) > 1:
            for engine in engines:
                rows.append(Row(name, engine, shape, engines[engine][0], "sentences_per_s",
                                len(sentences) / (medians[engine] / 1e3)))
    return rows
