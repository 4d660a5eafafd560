"""GenerationConfig: defaults, update/validate, generation_config.json both ways with transformers, and
how generate() combines the call's arguments with the model's generation config."""

from __future__ import annotations

import json

import pytest
import torch

from fastformers.generation import GenerationConfig
from gen_models import left_padded, model_pair

transformers = pytest.importorskip("transformers")


def test_defaults_are_unset_like_transformers_5():
    config = GenerationConfig()
    assert config.max_length is None and config.do_sample is None and config.num_beams is None
    assert config.to_diff_dict() == {}
    assert GenerationConfig.global_defaults()["max_length"] == 20
    assert GenerationConfig.global_defaults()["top_k"] == 50
    assert GenerationConfig(do_sample=True).get_generation_mode() == "sample"
    assert GenerationConfig(num_beams=3).get_generation_mode() == "beam_search"


def test_update_returns_unused_kwargs():
    config = GenerationConfig(top_k=10)
    unused = config.update(top_k=5, temperature=0.5, attention_mask="x", foo=1)
    assert unused == {"attention_mask": "x", "foo": 1}
    assert config.top_k == 5 and config.temperature == 0.5
    config.update(top_k=7, top_p=0.9, defaults_only=True)
    assert config.top_k == 5 and config.top_p == 0.9
    assert config.update(custom_key=3, allow_custom_entries=True) == {} and config.custom_key == 3


@pytest.mark.parametrize("kwargs, name", [
    (dict(top_p=1.2), "top_p"), (dict(top_p=0.0), "top_p"), (dict(temperature=-0.5), "temperature"),
    (dict(temperature=0.0, do_sample=True), "temperature"), (dict(num_beams=0), "num_beams"),
    (dict(max_new_tokens=0), "max_new_tokens"), (dict(top_k=-1), "top_k"), (dict(min_p=1.5), "min_p"),
    (dict(num_beams=2, num_return_sequences=4), "num_return_sequences"), (dict(typical_p=0.0), "typical_p"),
    (dict(early_stopping="yes"), "early_stopping"), (dict(repetition_penalty=-1.0), "repetition_penalty"),
    (dict(min_new_tokens=-1), "min_new_tokens"), (dict(eos_token_id=[2, -1]), "eos_token_id"),
    (dict(streamer=object()), "streamer"), (dict(stop_strings=[""]), "stop_strings"),
])
def test_invalid_values_raise_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        GenerationConfig(**kwargs)
    if name != "streamer":  # not an attribute: update() hands it back as unused, as in transformers
        with pytest.raises(ValueError, match=name):
            GenerationConfig().update(**kwargs)


def test_valid_edge_values():
    GenerationConfig(temperature=0.0)  # greedy: the temperature is not used
    GenerationConfig(top_p=1.0, top_k=0, min_p=0.0, num_beams=1, max_new_tokens=1, early_stopping="never")
    GenerationConfig(do_sample=True, num_return_sequences=4)


def test_from_model_config_matches_transformers():
    import fastformers

    hf_config = transformers.LlamaConfig(bos_token_id=5, eos_token_id=[6, 7], pad_token_id=0)
    ours = GenerationConfig.from_model_config(fastformers.AutoConfig.for_model("llama", bos_token_id=5,
                                                                               eos_token_id=[6, 7], pad_token_id=0))
    theirs = transformers.GenerationConfig.from_model_config(hf_config)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id", "max_length", "do_sample", "num_beams"):
        assert getattr(ours, key) == getattr(theirs, key), key


def test_json_round_trips_with_transformers(tmp_path):
    ours = GenerationConfig(max_new_tokens=7, do_sample=True, top_p=0.8, eos_token_id=[2, 3], custom_entry="x")
    ours.save_pretrained(tmp_path / "ours")
    theirs = transformers.GenerationConfig.from_pretrained(tmp_path / "ours")
    assert (theirs.max_new_tokens, theirs.top_p, theirs.eos_token_id, theirs.custom_entry) == (7, 0.8, [2, 3], "x")
    theirs.num_beams = 3
    theirs.save_pretrained(tmp_path / "theirs")
    back = GenerationConfig.from_pretrained(tmp_path / "theirs", top_k=4)
    assert (back.max_new_tokens, back.do_sample, back.num_beams, back.top_k, back.custom_entry) == (7, True, 3, 4, "x")
    assert back == GenerationConfig.from_pretrained(tmp_path / "theirs", top_k=4)
    with pytest.raises(OSError, match="generation_config.json"):
        GenerationConfig.from_pretrained(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "generation_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        GenerationConfig.from_pretrained(tmp_path / "bad")


def test_generate_uses_the_model_generation_config():
    """The model's generation_config fills what the call leaves unset; call arguments win; a passed
    generation_config is completed by the model's, as in transformers."""
    ours, theirs = model_pair("llama")
    ids, mask = left_padded()
    saved = ours.generation_config, theirs.generation_config
    try:
        for model in (ours, theirs):
            model.generation_config = type(model.generation_config)(
                max_new_tokens=5, repetition_penalty=1.5, eos_token_id=[2, 40], pad_token_id=0, bos_token_id=1)
        for kwargs in (dict(), dict(max_new_tokens=8, repetition_penalty=1.0), dict(num_beams=2)):
            a = ours.generate(input_ids=ids, attention_mask=mask, **kwargs)
            b = theirs.generate(input_ids=ids, attention_mask=mask, **kwargs)
            assert torch.equal(a, b)
        assert a.shape[1] == ids.shape[1] + 5
        a = ours.generate(input_ids=ids, attention_mask=mask, generation_config=GenerationConfig(max_new_tokens=3))
        b = theirs.generate(input_ids=ids, attention_mask=mask,
                            generation_config=transformers.GenerationConfig(max_new_tokens=3))
        assert torch.equal(a, b) and a.shape[1] == ids.shape[1] + 3
        assert ours.generation_config.max_new_tokens == 5  # generate() works on a copy
    finally:
        ours.generation_config, theirs.generation_config = saved
    assert json.loads(GenerationConfig(top_k=3).to_json_string()) == {"top_k": 3}
