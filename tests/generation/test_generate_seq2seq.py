"""generate() for encoder-decoder models (BART, Marian) against transformers' on the same tiny random weights:
greedy, beam search and sampling token-identical on right-padded encoder batches, the decoder start, forced
bos/eos, length settings counted in decoder tokens, and the return_dict outputs with their encoder fields."""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import build_reference
from gen_models import _TMP, assert_close_steps, assert_same_tokens, generate_both

import fastformers

TINY = dict(vocab_size=99, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
            tie_word_embeddings=False)  # tied tiny random models mostly repeat their input token
CONFIGS = {
    "bart": dict(TINY, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
                 forced_eos_token_id=2),
    "marian": dict(TINY, pad_token_id=98, eos_token_id=0, decoder_start_token_id=98, forced_eos_token_id=0,
                   scale_embedding=True),
}
MODELS = list(CONFIGS)


@functools.cache
def model_pair(name: str):
    path, theirs = build_reference(name, "AutoModelForSeq2SeqLM", _TMP / f"seq2seq-{name}", seed=0, **CONFIGS[name])
    with torch.no_grad():
        for module in theirs.modules():  # Marian's sinusoidal positions are not saved: undo randomize_
            if hasattr(module, "create_weight"):
                module.weight.copy_(module.create_weight())
    return fastformers.AutoModelForSeq2SeqLM.from_pretrained(path), theirs


def batch(name="bart", lengths=(9, 5, 2), seed=0):
    """A right-padded encoder batch of random ids >= 3 and its attention mask."""
    pad = CONFIGS[name]["pad_token_id"]
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((len(lengths), max(lengths)), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(3, 90, (n,), generator=g)
        mask[i, :n] = 1
    return dict(input_ids=ids, attention_mask=mask)


def run_both(name, inputs, seed=0, **kwargs):
    return generate_both(model_pair(name), inputs, seed, **kwargs)


NO_EOS = dict(eos_token_id=None, forced_eos_token_id=None)


def eos_that_fires(name, inputs, **kwargs):
    """Token ids that generation produces early in some rows: as eos ids they end those rows early."""
    ours, _ = model_pair(name)
    out = ours.generate(**inputs, max_new_tokens=12, **NO_EOS, **kwargs)
    return sorted({int(out[0, 6]), int(out[-1, 9])})


@pytest.mark.parametrize("name", MODELS)
def test_greedy_padded_encoder_batch(name):
    inputs = batch(name)
    a, b = run_both(name, inputs, max_new_tokens=12, **NO_EOS)
    assert_same_tokens(a, b)
    start = CONFIGS[name]["decoder_start_token_id"]
    assert a.shape == (3, 13) and (a[:, 0] == start).all()  # the decoder start token + 12 new tokens


@pytest.mark.parametrize("name", MODELS)
def test_greedy_eos_list_pads_finished_rows(name):
    inputs = batch(name)
    eos = eos_that_fires(name, inputs)
    a, b = run_both(name, inputs, max_new_tokens=12, eos_token_id=eos)
    assert_same_tokens(a, b)
    assert a.shape[1] < 13 or (a[:, 1:] == CONFIGS[name]["pad_token_id"]).any(), "no row finished early"
    assert a.shape[1] > 4, "every row finished at once: the test does not exercise padding"


@pytest.mark.parametrize("name", MODELS)
def test_model_generation_config_defaults(name):
    """max_length 20 (counted in decoder tokens), forced eos, and no attention_mask (transformers does not
    infer one from the padding for an encoder-decoder model)."""
    inputs = batch(name)
    assert_same_tokens(*run_both(name, inputs))
    assert_same_tokens(*run_both(name, dict(input_ids=inputs["input_ids"]), max_new_tokens=6, **NO_EOS))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("case", [dict(num_beams=3, num_return_sequences=2, length_penalty=0.7, early_stopping=True),
                                  dict(num_beams=3, length_penalty=1.5, early_stopping=False),
                                  dict(num_beams=2, early_stopping="never", length_penalty=-0.5)])
def test_beam_search(name, case):
    inputs = batch(name)
    eos = eos_that_fires(name, inputs, num_beams=case["num_beams"])
    a, b = run_both(name, inputs, max_new_tokens=10, eos_token_id=eos, **case)
    assert_same_tokens(a, b)
    a, b = run_both(name, inputs, max_new_tokens=6, **NO_EOS, **case)
    assert_same_tokens(a, b)


@pytest.mark.parametrize("name", MODELS)
def test_sampling(name):
    inputs = batch(name)
    ours, _ = model_pair(name)
    greedy = ours.generate(**inputs, max_new_tokens=10, **NO_EOS)
    assert torch.equal(ours.generate(**inputs, max_new_tokens=10, do_sample=True, top_k=1, **NO_EOS), greedy)
    for kwargs in (dict(temperature=0.8, top_k=20), dict(top_p=0.9, num_return_sequences=2),
                   dict(num_beams=2, num_return_sequences=2)):
        a, b = run_both(name, inputs, seed=7, max_new_tokens=8, do_sample=True, **NO_EOS, **kwargs)
        assert_same_tokens(a, b)


@pytest.mark.parametrize("name", MODELS)
def test_decoder_start_and_decoder_input_ids(name):
    inputs = batch(name)
    a, b = run_both(name, inputs, max_new_tokens=5, decoder_start_token_id=7, **NO_EOS)
    assert_same_tokens(a, b)
    assert (a[:, 0] == 7).all()
    start = CONFIGS[name]["decoder_start_token_id"]
    for prefix in ([start, 11, 12], [11, 12]):  # without the start token, it is prepended
        dec = torch.tensor([prefix] * 3)
        a, b = run_both(name, inputs, decoder_input_ids=dec, max_new_tokens=5, **NO_EOS)
        assert_same_tokens(a, b)
        assert a.shape[1] == 3 + 5 and (a[:, :3] == torch.tensor([start, 11, 12])).all()
    a, b = run_both(name, inputs, decoder_input_ids=dec, max_length=6, num_beams=2, **NO_EOS)
    assert_same_tokens(a, b)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("strategy", [dict(), dict(num_beams=3)])
def test_forced_bos_and_eos(name, strategy):
    inputs = batch(name)
    a, b = run_both(name, inputs, max_length=8, forced_bos_token_id=17, forced_eos_token_id=[19, 23],
                    eos_token_id=[19, 23], **strategy)
    assert_same_tokens(a, b)
    assert (a[:, 1] == 17).all()
    assert torch.isin(a, torch.tensor([19, 23])).any(1).all()  # by max_length at the latest, forced


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("lengths", [dict(min_new_tokens=6), dict(min_length=7)])
def test_min_lengths_count_decoder_tokens(name, lengths):
    inputs = batch(name)
    eos = eos_that_fires(name, inputs)
    a, b = run_both(name, inputs, max_new_tokens=12, eos_token_id=eos, **lengths)
    assert_same_tokens(a, b)
    assert not torch.isin(a[:, 1:7], torch.tensor(eos)).any()


@pytest.mark.parametrize("name", MODELS)
def test_return_dict_outputs(name):
    inputs = batch(name)
    eos = eos_that_fires(name, inputs)
    flags = dict(return_dict_in_generate=True, output_scores=True, output_logits=True, output_attentions=True,
                 output_hidden_states=True)
    a, b = run_both(name, inputs, max_new_tokens=6, eos_token_id=eos, **flags)
    assert type(a).__name__ == type(b).__name__ == "GenerateEncoderDecoderOutput"
    assert set(a.keys()) == set(b.keys())
    assert_same_tokens(a, b)
    assert_close_steps(a.scores, b.scores)
    assert_close_steps(a.logits, b.logits)
    assert a.past_key_values.get_seq_length() == a.sequences.shape[1] - 1
    for field in ("encoder_hidden_states", "encoder_attentions"):  # (un-expanded) encoder outputs
        assert len(a[field]) == len(b[field])
        for x, y in zip(a[field], b[field]):
            assert x.shape == y.shape and torch.allclose(x, y, atol=1e-5)
    for field in ("decoder_attentions", "cross_attentions", "decoder_hidden_states"):  # per step, per layer
        assert len(a[field]) == len(b[field]) == len(a.scores)
        for ours_step, their_step in zip(a[field], b[field]):
            assert [t.shape for t in ours_step] == [t.shape for t in their_step]
            assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(ours_step, their_step))

    a, b = run_both(name, inputs, max_new_tokens=5, num_beams=3, num_return_sequences=2, eos_token_id=eos,
                    **flags)
    assert type(a).__name__ == type(b).__name__ == "GenerateBeamEncoderDecoderOutput"
    assert set(a.keys()) == set(b.keys())
    assert_same_tokens(a, b)
    assert torch.equal(a.beam_indices, b.beam_indices)
    assert torch.allclose(a.sequences_scores, b.sequences_scores, atol=1e-5)
    assert a.encoder_hidden_states[-1].shape[0] == 3  # the encoder ran once, on the un-expanded batch


@pytest.mark.parametrize("name", MODELS)
def test_without_cache_and_with_given_encoder_outputs(name):
    inputs = batch(name)
    ours, _ = model_pair(name)
    reference = ours.generate(**inputs, max_new_tokens=7, **NO_EOS)
    a, b = run_both(name, inputs, max_new_tokens=7, use_cache=False, **NO_EOS)
    assert_same_tokens(a, b)
    assert torch.equal(a, reference)
    encoded = ours.get_encoder()(**inputs)
    given = ours.generate(encoder_outputs=encoded, attention_mask=inputs["attention_mask"], max_new_tokens=7, **NO_EOS)
    assert torch.equal(given, reference)
    beams = ours.generate(**inputs, max_new_tokens=5, num_beams=2, use_cache=False, **NO_EOS)
    assert torch.equal(beams, ours.generate(**inputs, max_new_tokens=5, num_beams=2, **NO_EOS))


def test_invalid_arguments_raise_naming_them():
    ours, _ = model_pair("bart")
    inputs = batch("bart")
    with pytest.raises(ValueError, match="decoder_start_token_id"):
        ours.generate(**inputs, decoder_start_token_id=None, bos_token_id=None, max_new_tokens=2)
    with pytest.raises(ValueError, match="decoder_input_ids is 3"):
        ours.generate(**inputs, decoder_input_ids=torch.tensor([[2, 5, 6]] * 3), max_length=3)
    with pytest.raises(ValueError, match="not used by the model"):
        ours.generate(**inputs, decoder_inputs=torch.tensor([[2]] * 3))
    with pytest.raises(NotImplementedError, match="decoder_attention_mask"):
        ours.generate(**inputs, decoder_input_ids=torch.tensor([[2, 5]] * 3),
                      decoder_attention_mask=torch.tensor([[1, 0]] * 3))
    with pytest.raises(ValueError, match="input_ids"):
        ours.generate(attention_mask=inputs["attention_mask"], max_new_tokens=2)
    with pytest.raises(ValueError, match="decoder_start_token_id"):
        ours.generate(**inputs, decoder_start_token_id=[2, 2], max_new_tokens=2)
