"""Encoder latency: fastformers vs transformers on all-MiniLM-L6-v2, same weights, same inputs, one run.

Shapes: batch 1 with a short sentence; batch 8 x 128 tokens. Both libraries run under
torch.inference_mode with the same thread count, interleaved call by call.
"""

from __future__ import annotations

from typing import List

import torch

from .harness import Row, latency_rows, time_interleaved

TEXT = "The quick brown fox jumps over the lazy dog near the river bank."


def run(quick: bool = False) -> List[Row]:
    import transformers

    import fastformers
    from fastformers.pipelines.defaults import default_embedding_model

    path = default_embedding_model()
    ours = fastformers.AutoModel.from_pretrained(path, torch_dtype=torch.float32)
    theirs = transformers.AutoModel.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)

    g = torch.Generator().manual_seed(0)
    cases = {
        "batch1-short": tokenizer([TEXT], return_tensors="pt"),
        "batch8x128": {"input_ids": torch.randint(1000, 30000, (8, 128), generator=g),
                       "attention_mask": torch.ones(8, 128, dtype=torch.long)},
    }
    rows: List[Row] = []
    repeats = {"batch1-short": 30 if quick else 300, "batch8x128": 5 if quick else 40}
    for case, enc in cases.items():
        enc = dict(enc)
        with torch.inference_mode():
            err = (ours(**enc).last_hidden_state - theirs(**enc).last_hidden_state).abs().max().item()
            times = time_interleaved({"fastformers": lambda: ours(**enc), "transformers": lambda: theirs(**enc)},
                                     repeats[case])
        shape = "x".join(map(str, enc["input_ids"].shape))
        rows += latency_rows(f"minilm-{case}", shape, "float32", times)
        med = {r.provider: r.value for r in rows if r.name == f"minilm-{case}" and r.metric == "median_ms"}
        rows.append(Row(f"minilm-{case}", "fastformers", shape, "float32", "speedup_vs_transformers",
                        med["transformers"] / med["fastformers"]))
        rows.append(Row(f"minilm-{case}", "fastformers", shape, "float32", "max_abs_diff", err))
    return rows
