"""generate() against transformers' on the same tiny random models: token-identical outputs for greedy
search, beam search and (under the same seed) sampling, with left-padded batches, eos lists, the
logits processors, stop strings and the return_dict outputs."""

from __future__ import annotations

import pytest
import torch

from gen_models import (
    assert_close_steps,
    assert_same_tokens,
    generate_both,
    left_padded,
    model_pair,
    smollm2_tokenizers,
)

MODELS = ["llama", "gpt2"]


def run_both(name, inputs, seed=0, **kwargs):
    return generate_both(model_pair(name), inputs, seed, **kwargs)


def batch():
    ids, mask = left_padded(lengths=(9, 5, 1))
    return dict(input_ids=ids, attention_mask=mask)


def eos_that_fires(name, inputs, **kwargs):
    """Token ids that greedy / beam generation produces early in some rows: as eos ids, they end those
    rows before max_new_tokens, so finishing and padding are exercised."""
    ours, _ = model_pair(name)
    out = ours.generate(**inputs, max_new_tokens=12, eos_token_id=None, **kwargs)
    new = out[:, inputs["input_ids"].shape[1]:]
    return sorted({int(new[0, 2]), int(new[-1, 5])} - {0})


@pytest.mark.parametrize("name", MODELS)
def test_greedy_single_prompt(name):
    ids = torch.randint(3, 99, (1, 7), generator=torch.Generator().manual_seed(1))
    a, b = run_both(name, dict(input_ids=ids), max_new_tokens=24)
    assert_same_tokens(a, b)
    assert a.shape[1] == 7 + 24


@pytest.mark.parametrize("name", MODELS)
def test_greedy_left_padded_batch(name):
    a, b = run_both(name, batch(), max_new_tokens=16)
    assert_same_tokens(a, b)


@pytest.mark.parametrize("name", MODELS)
def test_greedy_eos_list_pads_finished_rows(name):
    inputs = batch()
    eos = eos_that_fires(name, inputs)
    a, b = run_both(name, inputs, max_new_tokens=12, eos_token_id=eos, pad_token_id=0)
    assert_same_tokens(a, b)
    new = a[:, inputs["input_ids"].shape[1]:]
    assert (new == 0).any(), "no row finished early: the test does not exercise eos"


@pytest.mark.parametrize("name", MODELS)
def test_default_lengths_bos_start_and_inferred_mask(name):
    inputs = batch()
    a, b = run_both(name, inputs)  # max_length defaults to 20 new tokens
    assert_same_tokens(a, b)
    assert a.shape[1] == inputs["input_ids"].shape[1] + 20
    a, b = run_both(name, dict(input_ids=inputs["input_ids"]), max_new_tokens=8)  # mask from pad_token_id
    assert_same_tokens(a, b)
    a, b = run_both(name, {}, max_new_tokens=8)  # no prompt: starts from bos
    assert_same_tokens(a, b)
    a, b = run_both(name, inputs, max_length=inputs["input_ids"].shape[1] + 5, min_length=12)
    assert_same_tokens(a, b)


BEAM_CASES = {
    "3-beams": dict(num_beams=3),
    "4-beams-3-returned": dict(num_beams=4, num_return_sequences=3),
    "length-penalty-0.5-early": dict(num_beams=4, num_return_sequences=2, length_penalty=0.5, early_stopping=True),
    "length-penalty-2-never": dict(num_beams=3, length_penalty=2.0, early_stopping="never"),
    "negative-length-penalty": dict(num_beams=3, num_return_sequences=3, length_penalty=-1.0),
    "never-negative-penalty": dict(num_beams=2, length_penalty=-0.5, early_stopping="never"),
}


@pytest.mark.parametrize("case", list(BEAM_CASES))
@pytest.mark.parametrize("name", MODELS)
def test_beam_search(name, case):
    inputs = batch()
    kwargs = BEAM_CASES[case]
    eos = eos_that_fires(name, inputs, num_beams=kwargs["num_beams"])
    a, b = run_both(name, inputs, max_new_tokens=12, eos_token_id=eos, return_dict_in_generate=True,
                    output_scores=True, **kwargs)
    assert_same_tokens(a, b)
    assert torch.allclose(a.sequences_scores, b.sequences_scores, atol=1e-5)
    assert a.beam_indices.dtype == b.beam_indices.dtype and torch.equal(a.beam_indices, b.beam_indices)
    assert_close_steps(a.scores, b.scores)
    # and without eos (every beam runs to max_length), plain tensor output
    a, b = run_both(name, inputs, max_new_tokens=6, eos_token_id=None, **kwargs)
    assert_same_tokens(a, b)


PROCESSOR_CASES = {
    "repetition_penalty": dict(repetition_penalty=1.4),
    "repetition_penalty<1": dict(repetition_penalty=0.7),
    "no_repeat_ngram_size": dict(no_repeat_ngram_size=2),
    "bad_words_ids": dict(bad_words_ids="dynamic"),
    "min_new_tokens": dict(min_new_tokens=7),
    "forced_eos_and_suppress": dict(forced_eos_token_id=5, suppress_tokens=[7, 9, 11], begin_suppress_tokens=[13]),
    "renormalize_sequence_bias": dict(renormalize_logits=True, sequence_bias={(40,): 3.0, (41, 42): -2.5}),
    "everything": dict(repetition_penalty=1.2, no_repeat_ngram_size=3, min_new_tokens=4, bad_words_ids="dynamic"),
}


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
@pytest.mark.parametrize("case", list(PROCESSOR_CASES))
@pytest.mark.parametrize("name", MODELS)
def test_logits_processors_in_generate(name, case, strategy):
    inputs = batch()
    beams = dict(num_beams=3) if strategy == "beam" else {}
    kwargs = dict(PROCESSOR_CASES[case])
    eos = eos_that_fires(name, inputs, **beams)
    if kwargs.get("bad_words_ids") == "dynamic":
        # ban what greedy would generate: a single token and a two-token sequence from row 0
        ours, _ = model_pair(name)
        plain = ours.generate(**inputs, max_new_tokens=6, eos_token_id=None)[0, 9:].tolist()
        kwargs["bad_words_ids"] = [[plain[1]], [plain[3], plain[4]]]
    a, b = run_both(name, inputs, max_new_tokens=10, eos_token_id=eos, return_dict_in_generate=True,
                    output_scores=True, **beams, **kwargs)
    assert_same_tokens(a, b)
    assert_close_steps(a.scores, b.scores)


class BanToken:
    """A user logits processor (no base class needed)."""

    def __init__(self, token):
        self.token = token

    def __call__(self, input_ids, scores):
        return scores.index_fill(1, torch.tensor([self.token]), -float("inf"))


class StopAfter:
    """A user stopping criterion: a row is done once it holds `count` tokens from `tokens`."""

    def __init__(self, tokens, count):
        self.tokens, self.count = torch.tensor(tokens), count

    def __call__(self, input_ids, scores, **kwargs):
        return torch.isin(input_ids[:, 9:], self.tokens).sum(-1) >= self.count


@pytest.mark.parametrize("beams", [1, 3])
def test_user_logits_processor_and_stopping_criteria(beams):
    ours, theirs = model_pair("llama")
    inputs = batch()
    plain = ours.generate(**inputs, max_new_tokens=10, eos_token_id=None, num_beams=beams)[:, 9:]
    kwargs = dict(max_new_tokens=10, eos_token_id=[2], num_beams=beams, return_dict_in_generate=True,
                  output_scores=True)
    a = ours.generate(**inputs, logits_processor=[BanToken(int(plain[0, 0]))],
                      stopping_criteria=[StopAfter(plain[:, 3].tolist(), 2)], **kwargs)
    b = theirs.generate(**inputs, logits_processor=[BanToken(int(plain[0, 0]))],
                        stopping_criteria=[StopAfter(plain[:, 3].tolist(), 2)], **kwargs)
    assert_same_tokens(a, b)
    assert_close_steps(a.scores, b.scores)
    assert not (a.sequences[:, 9] == plain[0, 0]).any()
    if beams == 1:
        assert a.sequences.shape[1] < 9 + 10, "the user criterion stopped nothing"


@pytest.mark.parametrize("name", MODELS)
def test_return_dict_outputs(name):
    inputs = batch()
    eos = eos_that_fires(name, inputs)
    a, b = run_both(name, inputs, max_new_tokens=10, eos_token_id=eos, return_dict_in_generate=True,
                    output_scores=True, output_logits=True)
    assert_same_tokens(a, b)
    assert_close_steps(a.scores, b.scores)
    assert_close_steps(a.logits, b.logits)
    assert a.past_key_values.get_seq_length() == a.sequences.shape[1] - 1
    assert set(a.keys()) == {"sequences", "scores", "logits", "cache"}
    a, b = run_both(name, inputs, max_new_tokens=4, num_beams=2, return_dict_in_generate=True, output_logits=True)
    assert_same_tokens(a, b)
    assert_close_steps(a.logits, b.logits)
    assert a.sequences_scores is None and b.sequences_scores is None  # only with output_scores
    assert torch.equal(a.beam_indices, b.beam_indices)


@pytest.mark.parametrize("strategy", [dict(), dict(num_beams=3, num_return_sequences=2, length_penalty=0.0)])
def test_compute_transition_scores(strategy):
    ours, theirs = model_pair("llama")
    inputs = batch()
    eos = eos_that_fires("llama", inputs, num_beams=strategy.get("num_beams", 1))
    a, b = run_both("llama", inputs, max_new_tokens=8, eos_token_id=eos, return_dict_in_generate=True,
                    output_scores=True, **strategy)
    assert_same_tokens(a, b)
    for normalize in (False, True):
        x = ours.compute_transition_scores(a.sequences, a.scores, a.get("beam_indices"), normalize_logits=normalize)
        y = theirs.compute_transition_scores(b.sequences, b.scores, b.get("beam_indices"), normalize_logits=normalize)
        assert x.shape == y.shape and torch.allclose(x, y, atol=1e-5)
    if strategy:  # with length_penalty=0 a beam's score is the sum of its transition scores
        assert torch.allclose(x.sum(-1), a.sequences_scores, atol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_prefill_chunks_attentions_and_hidden_states(name):
    inputs = batch()
    a, b = run_both(name, inputs, max_new_tokens=5, prefill_chunk_size=4)
    assert_same_tokens(a, b)
    a, b = run_both(name, inputs, max_new_tokens=3, return_dict_in_generate=True, output_attentions=True,
                    output_hidden_states=True)
    assert_same_tokens(a, b)
    for field in ("attentions", "hidden_states"):
        assert len(a[field]) == len(b[field]) == 3
        for ours_step, their_step in zip(a[field], b[field]):
            assert [t.shape for t in ours_step] == [t.shape for t in their_step]
    real = torch.cat([inputs["attention_mask"], torch.ones(3, 2, dtype=torch.long)], 1).bool()
    assert torch.allclose(a.hidden_states[-1][-1][:, -1], b.hidden_states[-1][-1][:, -1], atol=1e-5)
    assert torch.allclose(a.attentions[-1][0][real[:, None, None, :].expand_as(a.attentions[-1][0])],
                          b.attentions[-1][0][real[:, None, None, :].expand_as(b.attentions[-1][0])], atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_without_cache_same_tokens(name):
    inputs = batch()
    a, b = run_both(name, inputs, max_new_tokens=8, use_cache=False)
    assert_same_tokens(a, b)
    ours, _ = model_pair(name)
    assert torch.equal(a, ours.generate(**inputs, max_new_tokens=8))
    a, b = run_both(name, inputs, max_new_tokens=6, use_cache=False, num_beams=2)
    assert_same_tokens(a, b)


def test_continue_from_a_dynamic_cache():
    from transformers import DynamicCache as TheirCache

    from fastformers.generation import DynamicCache

    ours, theirs = model_pair("llama")
    inputs = batch()
    first_a = ours.generate(**inputs, max_new_tokens=5, past_key_values=DynamicCache(), return_dict_in_generate=True)
    first_b = theirs.generate(**inputs, max_new_tokens=5, past_key_values=TheirCache(), return_dict_in_generate=True)
    assert_same_tokens(first_a, first_b)
    more = torch.tensor([[17, 18]] * 3)
    ids = torch.cat([first_a.sequences, more], dim=1)
    mask = torch.cat([inputs["attention_mask"], torch.ones(3, 7, dtype=torch.long)], dim=1)
    a = ours.generate(input_ids=ids, attention_mask=mask, past_key_values=first_a.past_key_values, max_new_tokens=6)
    b = theirs.generate(input_ids=ids, attention_mask=mask, past_key_values=first_b.past_key_values, max_new_tokens=6)
    assert_same_tokens(a, b)


# -- sampling --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("kwargs", [dict(), dict(temperature=0.7, top_k=20, top_p=0.8),
                                    dict(min_p=0.1, num_return_sequences=2), dict(typical_p=0.9, top_k=0),
                                    dict(num_beams=3, num_return_sequences=2)])
def test_sampling_matches_transformers_under_the_same_seed(name, kwargs):
    a, b = run_both(name, batch(), seed=42, max_new_tokens=10, do_sample=True, **kwargs)
    assert_same_tokens(a, b)


@pytest.mark.parametrize("name", MODELS)
def test_sampling_top_k_1_is_greedy_and_seeds_reproduce(name):
    ours, _ = model_pair(name)
    inputs = batch()
    greedy = ours.generate(**inputs, max_new_tokens=10)
    assert torch.equal(ours.generate(**inputs, max_new_tokens=10, do_sample=True, top_k=1), greedy)
    kw = dict(max_new_tokens=10, do_sample=True, temperature=1.5, top_k=0)
    x = ours.generate(**inputs, **kw, generator=torch.Generator().manual_seed(3))
    y = ours.generate(**inputs, **kw, generator=torch.Generator().manual_seed(3))
    z = ours.generate(**inputs, **kw, generator=torch.Generator().manual_seed(4))
    assert torch.equal(x, y) and not torch.equal(x, z)
    torch.manual_seed(5)
    x = ours.generate(**inputs, **kw)
    torch.manual_seed(5)
    assert torch.equal(x, ours.generate(**inputs, **kw))


# -- stop strings ---------------------------------------------------------------------------------
def test_stop_strings_match_transformers():
    tok, their_tok = smollm2_tokenizers()
    ours, theirs = model_pair("llama-smol-vocab")
    enc = tok(["The capital of France is", "Hi"], padding=True, padding_side="left", return_tensors="pt")
    inputs = dict(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    free = ours.generate(**inputs, max_new_tokens=16, eos_token_id=None)
    text = tok.decode(free[0, inputs["input_ids"].shape[1]:])
    # stop strings taken from the text row 0 generates: the middle of a token, across tokens, absent
    stops = [text[5:8], text[12:15], "\u2603 not generated"]
    for stop_strings in (stops[0], stops, [stops[2]]):
        a = ours.generate(**inputs, max_new_tokens=16, eos_token_id=None, stop_strings=stop_strings, tokenizer=tok)
        b = theirs.generate(**inputs, max_new_tokens=16, eos_token_id=None, stop_strings=stop_strings,
                            tokenizer=their_tok)
        assert_same_tokens(a, b)
    # a batch stops when every row has: the rows that ended keep generating (no eos, so no padding)
    assert a.shape[1] == free.shape[1]
    one = dict(input_ids=inputs["input_ids"][:1], attention_mask=inputs["attention_mask"][:1])
    a = ours.generate(**one, max_new_tokens=16, eos_token_id=None, stop_strings=stops[0], tokenizer=tok)
    b = theirs.generate(**one, max_new_tokens=16, eos_token_id=None, stop_strings=stops[0], tokenizer=their_tok)
    assert_same_tokens(a, b)
    assert a.shape[1] < free.shape[1]
    assert stops[0] in tok.decode(a[0, inputs["input_ids"].shape[1]:])
    # with an eos id the rows that stopped are padded
    a = ours.generate(**inputs, max_new_tokens=16, eos_token_id=2, stop_strings=stops[:1], tokenizer=tok)
    b = theirs.generate(**inputs, max_new_tokens=16, eos_token_id=2, stop_strings=stops[:1], tokenizer=their_tok)
    assert_same_tokens(a, b)


# -- invalid arguments ----------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, name", [
    (dict(top_p=1.5, do_sample=True), "top_p"), (dict(top_p=0.0, do_sample=True), "top_p"),
    (dict(temperature=-1.0), "temperature"), (dict(temperature=0.0, do_sample=True), "temperature"),
    (dict(num_beams=0), "num_beams"), (dict(max_new_tokens=-1), "max_new_tokens"),
    (dict(max_new_tokens=0), "max_new_tokens"), (dict(top_k=-1), "top_k"),
    (dict(num_beams=2, num_return_sequences=3), "num_return_sequences"),
    (dict(num_return_sequences=2), "num_return_sequences"), (dict(repetition_penalty=0.0), "repetition_penalty"),
    (dict(min_p=2.0), "min_p"), (dict(early_stopping="sometimes"), "early_stopping"),
    (dict(no_repeat_ngram_size=-2), "no_repeat_ngram_size"), (dict(bad_words_ids=[5]), "bad_words_ids"),
    (dict(eos_token_id=-3), "eos_token_id"), (dict(max_length=3), "max_length"),
    (dict(stop_strings=["x"]), "tokenizer"), (dict(typo_argument=1), "typo_argument"),
])
def test_invalid_arguments_raise_naming_them(kwargs, name):
    ours, _ = model_pair("llama")
    with pytest.raises(ValueError, match=name):
        ours.generate(**batch(), **kwargs)


def test_unsupported_strategies_raise():
    ours, _ = model_pair("llama")
    with pytest.raises(NotImplementedError, match="penalty_alpha"):
        ours.generate(**batch(), penalty_alpha=0.6, top_k=4)
    with pytest.raises(NotImplementedError, match="num_beam_groups"):
        ours.generate(**batch(), num_beams=4, num_beam_groups=2, diversity_penalty=1.0)
    with pytest.raises(ValueError, match="streamer"):
        ours.generate(**batch(), num_beams=2, streamer=object())


def test_cache_argument_under_its_transformers_5_25_name():
    """`cache=` (transformers 5.25) and `past_key_values=` (its deprecated name) are the same argument, in generate()
    and in a forward call; passing both is an error."""
    from transformers import DynamicCache as TheirCache

    from fastformers.generation import DynamicCache

    ours, theirs = model_pair("llama")
    inputs = batch()
    first_a = ours.generate(**inputs, max_new_tokens=4, cache=DynamicCache(), return_dict_in_generate=True)
    first_b = theirs.generate(**inputs, max_new_tokens=4, cache=TheirCache(), return_dict_in_generate=True)
    assert_same_tokens(first_a, first_b)
    assert first_a.cache is first_a.past_key_values and first_a.cache.get_seq_length() == first_a.sequences.shape[1] - 1
    ids = torch.cat([first_a.sequences, torch.tensor([[17]] * 3)], dim=1)
    mask = torch.cat([inputs["attention_mask"], torch.ones(3, 5, dtype=torch.long)], dim=1)
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():  # the cache lacks the last generated token: feed it with the new one
        step = ours(ids[:, -2:], attention_mask=mask, position_ids=positions[:, -2:], cache=first_a.cache,
                    use_cache=True)
        full = ours(ids, attention_mask=mask, position_ids=positions)
    torch.testing.assert_close(step.logits[:, -1], full.logits[:, -1], rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match="not both"):
        ours(ids, cache=DynamicCache(), past_key_values=DynamicCache())
