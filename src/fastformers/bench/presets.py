"""Named model shapes for `fastformers bench --preset NAME`: a config with seeded random weights, saved once as a
checkpoint folder that both transformers and fastformers load, so both engines read the same bytes.

Random weights are drawn at a trained model's scale (matrices and biases N(0, 0.02), norm weights 1 + N(0, 0.02)):
zeros would make every row of a matmul equal and attention uniform, and the timings of such a model still hold,
but its outputs could not tell a wrong engine from a right one.
"""

from __future__ import annotations

import json
import os
from typing import Dict, NamedTuple, Optional

import torch

from .harness import BenchError


class Preset(NamedTuple):
    model_type: str
    decoder: bool  # True: causal LM (prefill + decode); False: encoder (forward latency)
    config: Dict[str, object]
    shape_of: str  # the public model whose shapes these are


PRESETS: Dict[str, Preset] = {
    "bert-tiny": Preset("bert", False, dict(vocab_size=30522, hidden_size=128, num_hidden_layers=2,
                                             num_attention_heads=2, intermediate_size=512,
                                             max_position_embeddings=512), "google/bert_uncased_L-2_H-128_A-2"),
    "bert-base": Preset("bert", False, dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                                             num_attention_heads=12, intermediate_size=3072,
                                             max_position_embeddings=512), "bert-base-uncased"),
    "distilbert": Preset("distilbert", False, dict(vocab_size=30522, dim=768, n_layers=6, n_heads=12,
                                                    hidden_dim=3072, max_position_embeddings=512),
                         "distilbert-base-uncased"),
    "gpt2": Preset("gpt2", True, dict(vocab_size=50257, n_embd=768, n_layer=12, n_head=12, n_positions=1024,
                                      bos_token_id=50256, eos_token_id=50256), "gpt2 (124M)"),
    "llama-1b": Preset("llama", True, dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                                           num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                                           head_dim=64, max_position_embeddings=4096, tie_word_embeddings=True,
                                           rms_norm_eps=1e-5, rope_theta=500000.0, bos_token_id=1,
                                           eos_token_id=2), "Llama 3.2 1B"),
    "llama-8b": Preset("llama", True, dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                                           num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                           head_dim=128, max_position_embeddings=8192, tie_word_embeddings=False,
                                           rms_norm_eps=1e-5, rope_theta=500000.0, bos_token_id=1,
                                           eos_token_id=2), "Llama 3.1 8B"),
}


def _model_class(preset: Preset):
    from .. import AutoConfig, AutoModel, AutoModelForCausalLM

    config = AutoConfig.for_model(preset.model_type, **preset.config)
    auto = AutoModelForCausalLM if preset.decoder else AutoModel
    return auto.model_class(config), config


def parameter_count(name: str) -> int:
    """The preset's number of parameters (tied weights once), counted on the meta device: no memory."""
    cls, config = _model_class(PRESETS[name])
    with torch.device("meta"):
        model = cls(config)
    model.tie_weights()
    return sum(p.numel() for p in model.parameters())


def available_memory(device: torch.device) -> int:
    """Bytes free for new tensors on `device` (the GPU's free memory; on a CPU, MemAvailable of /proc/meminfo)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil  # not on Linux: psutil comes with accelerate, which the bench extra installs

    return psutil.virtual_memory().available


def check_fits(name: str, dtype: torch.dtype, device: torch.device, engines: int = 2) -> None:
    """Refuse a preset whose weights, once per engine, cannot fit (with 10% left for activations and caches).
    Building it takes float32 weights in CPU memory once (freed before the engines load)."""
    params = parameter_count(name)
    need = params * torch.empty((), dtype=dtype).element_size() * engines
    have = available_memory(device)
    what = f"{engines} engines x {str(dtype).removeprefix('torch.')} weights"
    if device.type == "cuda":
        if need * 1.1 > have:
            raise BenchError(f"preset {name} needs about {need / 2**30:.1f} GiB of GPU memory ({what}); "
                             f"{have / 2**30:.1f} GiB is free")
        need, what, have = params * 4, "float32 weights while it is built", available_memory(torch.device("cpu"))
    elif params * 4 > need:
        need, what = params * 4, "float32 weights while it is built"
    if need * 1.1 > have:
        raise BenchError(f"preset {name} needs about {need / 2**30:.1f} GiB of memory ({what}); "
                         f"{have / 2**30:.1f} GiB is available")


def _randomize(model: torch.nn.Module, dtype: torch.dtype, seed: int) -> None:
    """Seeded random weights in `dtype`, parameter by parameter (float32 copies are freed as it goes)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied weights are met once
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32) * 0.02
            if p.dim() == 1 and name.endswith("weight"):  # a norm's scale: near 1
                noise += 1.0
            p.data = noise.to(dtype)


def build_checkpoint(name: str, dtype: torch.dtype, cache_dir: str, seed: int = 0) -> str:
    """The preset's checkpoint folder under cache_dir, built (seeded random weights, saved in `dtype`) unless a
    complete one is there from an earlier run."""
    preset = PRESETS[name]
    folder = os.path.join(cache_dir, f"{name}-{str(dtype).removeprefix('torch.')}-seed{seed}")
    stamp = os.path.join(folder, "fastformers-bench.json")
    if os.path.exists(stamp):
        return folder
    cls, config = _model_class(preset)
    model = cls(config)
    model.tie_weights()
    _randomize(model, dtype, seed)
    model.to(dtype).save_pretrained(folder)
    with open(stamp, "w", encoding="utf-8") as f:  # written last: a folder without it is rebuilt
        json.dump({"preset": name, "seed": seed, "dtype": str(dtype), "shape_of": preset.shape_of}, f)
    return folder


def preset_names() -> str:
    return ", ".join(PRESETS)


def lookup(name: Optional[str]) -> Preset:
    if name not in PRESETS:
        raise BenchError(f"unknown --preset {name!r}; choose from {preset_names()}")
    return PRESETS[name]
