"""One fine-tuning step: fastformers vs transformers on all-MiniLM-L6-v2 with a sequence-classification head, the
same weights and the same batch (8 x 64 tokens, labels), one run.

A step is forward (train mode, the checkpoint's dropout on) + backward + AdamW step, each library with its own
optimizer over its own copy of the weights, interleaved step by step. `max_abs_diff` is the loss difference on the
batch before any step, in eval mode (no dropout).
"""

from __future__ import annotations

import tempfile
from typing import List

import torch

from .harness import Row, latency_rows, time_interleaved


def run(quick: bool = False) -> List[Row]:
    import transformers

    import fastformers
    from fastformers.pipelines.defaults import default_embedding_model

    torch.manual_seed(0)
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(default_embedding_model(), num_labels=2,
                                                                             dtype=torch.float32)
    with tempfile.TemporaryDirectory() as folder:  # the same classifier head for both
        theirs.save_pretrained(folder)
        ours = fastformers.AutoModelForSequenceClassification.from_pretrained(folder, torch_dtype=torch.float32)

    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(1000, 30000, (8, 64), generator=g),
             "attention_mask": torch.ones(8, 64, dtype=torch.long),
             "labels": torch.randint(0, 2, (8,), generator=g)}
    with torch.no_grad():
        err = abs(ours.eval()(**batch).loss.item() - theirs.eval()(**batch).loss.item())

    def stepper(model):
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

        def step():
            optimizer.zero_grad(set_to_none=True)
            model(**batch).loss.backward()
            optimizer.step()
        return step

    times = time_interleaved({"fastformers": stepper(ours), "transformers": stepper(theirs)},
                             repeats=4 if quick else 20, warmup=1 if quick else 3)
    name, shape = "minilm-train-step", "8x64"
    rows = latency_rows(name, shape, "float32", times)
    med = {r.provider: r.value for r in rows if r.metric == "median_ms"}
    rows.append(Row(name, "fastformers", shape, "float32", "speedup_vs_transformers",
                    med["transformers"] / med["fastformers"]))
    rows.append(Row(name, "fastformers", shape, "float32", "max_abs_diff", err))
    return rows
