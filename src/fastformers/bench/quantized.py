"""Quantized end-to-end decode on a GPU: a Llama-shaped 1B model (Llama 3.2 1B's shapes, random weights) in
fp16, int8 (per channel) and int4 (groups of 128), greedy generate() of the same prompt, in one run.

Rows: tokens/s of the decode (new tokens / (generate time - time to first token)), time to first token, and
each quantized model's tokens/s as a ratio to fp16's (the issue's target: int4 >= 2.5x). Weight bytes per
model too. Needs a CUDA device (on a CPU the quantized matmul is the torch reference, which dequantizes
every weight per call: timing it says nothing). Not yet run on a GPU.
"""

from __future__ import annotations

import statistics
import time
from typing import List

import torch

from .harness import Row

LLAMA_1B = dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=4096,
                tie_word_embeddings=True, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)


def _model(config: dict, device: str, dtype: torch.dtype, seed: int = 0):
    from fastformers.models.llama import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM.from_config(LlamaConfig(**config))
    with torch.no_grad():
        for p in model.parameters():  # random weights of a trained model's scale, no zeros
            if p.dim() > 1:
                p.normal_(0, 0.02)
    return model.to(device=device, dtype=dtype).eval()


def _decode(model, prompt: torch.Tensor, new: int, repeats: int):
    """(median tokens/s of the decode, median time to first token in ms, the generated ids)."""
    def timed(n):
        if prompt.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        if prompt.is_cuda:
            torch.cuda.synchronize()
        return out, time.perf_counter() - t0

    timed(new)  # warm-up: kernel compilation and autotuning
    rates, ttfts, out = [], [], None
    for _ in range(repeats):
        _, first = timed(1)
        out, total = timed(new)
        rates.append((new - 1) / (total - first))
        ttfts.append(first * 1e3)
    return statistics.median(rates), statistics.median(ttfts), out


def run(quick: bool = False, device: str = "cuda", config: dict | None = None) -> List[Row]:
    from fastformers import QuantizationConfig
    from fastformers.quantization import quantize_model

    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench quantized needs a CUDA device: on a CPU the quantized matmul is the torch reference")
    config = config or LLAMA_1B
    dtype = torch.float16 if device == "cuda" else torch.float32
    new, repeats = (32, 2) if quick else (128, 5)
    prompt = torch.randint(3, config["vocab_size"], (1, 32), generator=torch.Generator().manual_seed(1)).to(device)
    shape = f"llama-1b-shaped ({config['num_hidden_layers']} layers, hidden {config['hidden_size']}), " \
            f"prompt 32 + {new} new"
    rows: List[Row] = []
    variants = (("fp16" if device == "cuda" else "fp32", None),
                ("int8", QuantizationConfig(bits=8, group_size=None)),
                ("int4_g128", QuantizationConfig(bits=4, group_size=128)))
    base_rate = None
    for name, qconfig in variants:
        model = _model(config, device, dtype)
        if qconfig is not None:
            model = quantize_model(model, qconfig)
        nbytes = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
        rate, ttft, _ = _decode(model, prompt, new, repeats)
        provider = f"fastformers-{name}"
        rows += [Row("llama1b-decode", provider, shape, str(dtype).removeprefix("torch."), "tokens_per_s", rate),
                 Row("llama1b-decode", provider, shape, str(dtype).removeprefix("torch."), "ttft_ms", ttft),
                 Row("llama1b-decode", provider, shape, str(dtype).removeprefix("torch."), "model_gib",
                     nbytes / 2 ** 30)]
        if base_rate is None:
            base_rate = rate
        else:
            rows.append(Row("llama1b-decode", provider, shape, str(dtype).removeprefix("torch."),
                            "speedup_vs_float", rate / base_rate))
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows
