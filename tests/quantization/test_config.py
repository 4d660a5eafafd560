"""QuantizationConfig (fastformers/quantization/config.py): defaults, validation errors that name the argument,
the dict written to config.json and read back, skip patterns, the transformers-style shortcuts."""

from __future__ import annotations

import pytest

import fastformers
from fastformers.quantization.config import LinearFormat, QuantizationConfig, matches


def test_exported_and_defaults():
    assert fastformers.QuantizationConfig is QuantizationConfig
    c = QuantizationConfig()
    assert (c.bits, c.group_size, c.symmetric, c.method, c.skip) == (8, 128, None, "weight_only", None)
    assert QuantizationConfig(bits=4, group_size=None).group_size is None  # per output channel
    assert QuantizationConfig(method="w8a8").group_size is None  # w8a8 is per channel: its default
    assert c.format_for("model.layers.0.mlp.up_proj") == LinearFormat(8, 128, True, "weight_only")
    assert QuantizationConfig(bits=4).format_for("x") == LinearFormat(4, 128, False, "weight_only")
    assert QuantizationConfig(bits=4, symmetric=True).format_for("x").has_mins  # int4 always has mins
    assert not c.format_for("x").has_mins and QuantizationConfig(symmetric=False).format_for("x").has_mins


def test_dict_round_trip():
    c = QuantizationConfig(bits=4, group_size=64, symmetric=True, skip=["lm_head", "*.mlp.down_proj"],
                           modules={"model.layers.0.self_attn.q_proj": {"bits": 8, "group_size": None}})
    d = c.to_dict()
    assert d["quant_method"] == "fastformers"
    assert QuantizationConfig.from_dict(d) == c
    assert QuantizationConfig.from_dict(d).format_for("model.layers.0.self_attn.q_proj") == LinearFormat(8, None, True)
    assert QuantizationConfig.from_dict({"bits": 4}) == QuantizationConfig(bits=4)  # quant_method optional
    g = QuantizationConfig.from_gguf()
    assert g.source == "gguf" and QuantizationConfig.from_dict(g.to_dict()) == g
    assert "bits=4" in repr(c)


@pytest.mark.parametrize("kwargs, words", [
    (dict(bits=3), ["bits=3", "8, 4"]),
    (dict(bits=True), ["bits=True"]),
    (dict(group_size=0), ["group_size=0"]),
    (dict(group_size=32.0), ["group_size=32.0"]),
    (dict(symmetric="yes"), ["symmetric='yes'"]),
    (dict(method="int8"), ["method='int8'", "weight_only", "w8a8"]),
    (dict(method="w8a8", bits=4), ["w8a8", "bits=8"]),
    (dict(method="w8a8", group_size=128), ["w8a8", "group_size=None"]),
    (dict(method="w8a8", symmetric=False), ["w8a8", "symmetric"]),
    (dict(skip="lm_head"), ["skip", "list"]),
    (dict(skip=[""]), ["skip", "''"]),
    (dict(skip=[".lm_head"]), ["skip", "'.lm_head'"]),
    (dict(modules={"a.b": {"bits": 5}}), ["modules['a.b']", "bits=5"]),
    (dict(modules={"a.b": {"size": 5}}), ["modules['a.b']", "bits, group_size"]),
    (dict(source="awq"), ["source='awq'"]),
    (dict(source="gguf", bits=8), ["source='gguf'", "from_gguf"]),
])
def test_validation_names_the_argument(kwargs, words):
    with pytest.raises(ValueError) as e:
        QuantizationConfig(**kwargs)
    for word in words:
        assert word in str(e.value)


def test_from_dict_errors():
    with pytest.raises(ValueError, match="quant_method='gptq'"):
        QuantizationConfig.from_dict({"quant_method": "gptq", "bits": 4})
    with pytest.raises(ValueError, match="where.json: quantization_config: bits=2"):
        QuantizationConfig.from_dict({"quant_method": "fastformers", "bits": 2}, "where.json: quantization_config")
    with pytest.raises(ValueError, match="unknown key.*zero_point"):
        QuantizationConfig.from_dict({"bits": 4, "zero_point": True})
    with pytest.raises(TypeError, match="QuantizationConfig or a dict"):
        QuantizationConfig.from_dict([4])


def test_load_in_flags():
    assert QuantizationConfig.from_flags() is None
    assert QuantizationConfig.from_flags(load_in_8bit=True) == QuantizationConfig(bits=8, group_size=128)
    assert QuantizationConfig.from_flags(load_in_4bit=True) == QuantizationConfig(bits=4, group_size=128)
    with pytest.raises(ValueError, match="load_in_8bit=True and load_in_4bit=True"):
        QuantizationConfig.from_flags(True, True)


def test_skip_patterns():
    name = "model.layers.10.mlp.down_proj"
    assert matches("down_proj", name) and matches("mlp.down_proj", name) and matches("layers.10", name)
    assert matches(name, name) and matches("model", name)
    assert not matches("layers.1", name) and not matches("down", name) and not matches("proj", name)
    assert matches("*.layers.1?.mlp.*", name) and not matches("*.layers.1.*", name)
    c = QuantizationConfig()
    assert c.skips("lm_head") and not c.skips(name)  # the default: the output head
    assert QuantizationConfig(skip=["mlp"]).skips(name) and not QuantizationConfig(skip=["mlp"]).skips("lm_head")
    assert not QuantizationConfig(skip=[]).skips("lm_head")
