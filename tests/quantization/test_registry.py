"""The quantization protocol (quantization/registry.py, methods.py): quant_method -> config, method class and
loader; a QuantizedLinear runs the method object it holds; from_pretrained resolves its quantization arguments
and the checkpoint's quantization_config into one request, and the request never passes through the config."""

from __future__ import annotations

import pytest
import torch
from conftest import build_reference
from test_import_checkpoints import GPTQ_V1

import fastformers
from fastformers import QuantizationConfig, ops
from fastformers.quantization import QuantizedLinear
from fastformers.quantization.imported import ImportedConfig, ImportedLoader, ImportedMethod
from fastformers.quantization.linear import quantize_linear_weight
from fastformers.quantization.loader import QuantizedLoader
from fastformers.quantization.methods import GGUFMethod, PackedMethod
from fastformers.quantization.registry import QUANT_METHODS, get_quantization_config, resolve_request

LLAMA = dict(vocab_size=99, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)


@pytest.fixture(scope="module")
def llama_path(tmp_path_factory):
    return build_reference("llama", "AutoModelForCausalLM", tmp_path_factory.mktemp("llama"), **LLAMA)[0]


def test_each_quant_method_names_its_config_method_and_loader():
    assert set(QUANT_METHODS) == {"fastformers", "gguf", "gptq", "awq"}
    assert (QUANT_METHODS["fastformers"].method, QUANT_METHODS["fastformers"].loader) == (PackedMethod, QuantizedLoader)
    assert QUANT_METHODS["gguf"].method is GGUFMethod
    assert QUANT_METHODS["gptq"].method is QUANT_METHODS["awq"].method is ImportedMethod
    assert QUANT_METHODS["gptq"].loader is ImportedLoader

    own = get_quantization_config({"bits": 4})  # no quant_method: fastformers'
    assert own == QuantizationConfig(bits=4) and own.quant_method == "fastformers"
    gguf = get_quantization_config(QuantizationConfig.from_gguf().to_dict())
    assert gguf.quant_method == "gguf" and gguf == QuantizationConfig.from_gguf()
    gptq = get_quantization_config(GPTQ_V1, "m/config.json")
    assert isinstance(gptq, ImportedConfig) and gptq.quant_method == "gptq" and gptq.to_dict() == GPTQ_V1
    config = QuantizationConfig(bits=8)
    assert get_quantization_config(config) is config


def test_unknown_quant_method_names_the_file_and_the_supported_ones():
    with pytest.raises(ValueError, match=r"m/config\.json: quantization_config: quant_method='bitsandbytes' is not "
                                         r"supported; supported: fastformers, gguf, gptq, awq"):
        get_quantization_config({"quant_method": "bitsandbytes"}, "m/config.json")
    with pytest.raises(TypeError, match="quantization_config must be a QuantizationConfig or a dict, got int"):
        get_quantization_config(4)


class CountingMethod(PackedMethod):
    calls = 0

    def apply(self, layer, x):
        CountingMethod.calls += 1
        return super().apply(layer, x)


def test_quantized_linear_creates_and_runs_through_its_method():
    fmt = QuantizationConfig(bits=4, group_size=16).format_for("x")
    layer = QuantizedLinear(32, 8, method=CountingMethod(fmt))
    assert layer.format == fmt and layer.qweight.shape == (8, 16) and layer.mins.shape == (8, 2)
    w = torch.randn(8, 32, generator=torch.Generator().manual_seed(0))
    layer.weight = quantize_linear_weight(w, fmt)
    x = torch.randn(3, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = layer(x)
    assert CountingMethod.calls == 1
    torch.testing.assert_close(out, x @ ops.dequantize_weight(layer.weight, torch.float32).t(), rtol=1e-5, atol=1e-5)
    assert "method=fastformers" in repr(layer) and "int4 asymmetric group 16" in repr(layer)


def test_resolve_request():
    assert resolve_request() is None and resolve_request(False, gguf_on_gpu=True) is None
    config, packed = resolve_request(load_in_4bit=True)
    assert (config.bits, config.group_size, packed) == (4, 128, False)
    config, packed = resolve_request(gguf_on_gpu=True)
    assert config.quant_method == "gguf" and not packed
    saved = QuantizationConfig(bits=8).to_dict()
    config, packed = resolve_request(load_in_4bit=True, saved=saved)  # saved quantized: loads as saved
    assert config == QuantizationConfig(bits=8) and packed
    config, packed = resolve_request(saved=GPTQ_V1)
    assert config.quant_method == "gptq" and packed
    with pytest.raises(ValueError, match=r"already quantized \(quant_method='gptq'\)"):
        resolve_request(QuantizationConfig(bits=4), saved=GPTQ_V1)
    with pytest.raises(ValueError, match="either quantization_config or load_in_8bit"):
        resolve_request(QuantizationConfig(bits=4), load_in_8bit=True)
    with pytest.raises(ValueError, match="quantization_config=False .* contradicts"):
        resolve_request(False, load_in_4bit=True)
    with pytest.raises(ValueError, match=r"m/config\.json: quantization_config: bits=3"):
        resolve_request(saved={"quant_method": "fastformers", "bits": 3}, saved_where="m/config.json")


def test_the_request_is_a_load_argument_not_a_config_attribute(llama_path):
    for kwargs in (dict(load_in_8bit=True), dict(quantization_config=QuantizationConfig(bits=4)),
                   dict(quantization_config={"bits": 4, "group_size": 32})):
        model = fastformers.AutoModelForCausalLM.from_pretrained(llama_path, **kwargs)
        assert not {"load_in_8bit", "load_in_4bit"} & set(vars(model.config)), kwargs
        assert model.config.quantization_config["quant_method"] == "fastformers"
        assert isinstance(model.model.layers[0].mlp.up_proj, QuantizedLinear)


def test_a_gptq_config_cannot_quantize_a_float_checkpoint(llama_path):
    with pytest.raises(ValueError, match="quant_method='gptq' describes a GPTQ checkpoint; fastformers does not "
                                         "quantize into it"):
        fastformers.AutoModelForCausalLM.from_pretrained(llama_path, quantization_config=GPTQ_V1)
