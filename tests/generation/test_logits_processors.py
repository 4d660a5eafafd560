"""Each logits processor / warper against transformers' class of the same name on random scores:
bitwise-identical outputs, and the same errors for invalid arguments."""

from __future__ import annotations

import pytest
import torch

import fastformers.generation as ours_gen

transformers = pytest.importorskip("transformers")
theirs_gen = transformers.generation

VOCAB = 50


def random_inputs(seed=0, batch=4, length=12, vocab=VOCAB):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 12, (batch, length), generator=g)  # few distinct ids: repeats and n-grams recur
    ids[:, ::3] = torch.randint(0, vocab, (batch, (length + 2) // 3), generator=g)
    if length >= 6:
        ids[-1, -2:] = ids[-1, 2:4]  # the last bigram occurred before: a trigram to ban
        ids[-2, -1] = 11  # the prefix of the two-token bad word [11, 2]
    scores = torch.randn(batch, vocab, generator=g) * 3
    scores[0, 5] = scores[0, 6]  # a tie
    scores[1, :3] = -float("inf")  # already filtered entries
    return ids, scores


def same(a, b):
    return torch.allclose(a, b, rtol=0, atol=0, equal_nan=True)


CASES = [
    ("TemperatureLogitsWarper", (0.7,), {}),
    ("TemperatureLogitsWarper", (1.9,), {}),
    ("TopKLogitsWarper", (5,), {}),
    ("TopKLogitsWarper", (1,), {}),
    ("TopKLogitsWarper", (3,), dict(min_tokens_to_keep=7)),
    ("TopKLogitsWarper", (500,), {}),
    ("TopPLogitsWarper", (0.9,), {}),
    ("TopPLogitsWarper", (0.3,), dict(min_tokens_to_keep=3)),
    ("TopPLogitsWarper", (1.0,), {}),
    ("MinPLogitsWarper", (0.1,), {}),
    ("MinPLogitsWarper", (0.9,), dict(min_tokens_to_keep=2)),
    ("TypicalLogitsWarper", (0.9,), {}),
    ("TypicalLogitsWarper", (0.2,), dict(min_tokens_to_keep=3)),
    ("EpsilonLogitsWarper", (0.02,), {}),
    ("EtaLogitsWarper", (0.05,), {}),
    ("RepetitionPenaltyLogitsProcessor", (1.3,), {}),
    ("RepetitionPenaltyLogitsProcessor", (0.6,), {}),
    ("RepetitionPenaltyLogitsProcessor", (1.3,), dict(prompt_ignore_length=5)),
    ("RepetitionPenaltyLogitsProcessor", (1.3,), dict(prompt_ignore_length=torch.tensor([0, 3, 11, 12]))),
    ("NoRepeatNGramLogitsProcessor", (1,), {}),
    ("NoRepeatNGramLogitsProcessor", (2,), {}),
    ("NoRepeatNGramLogitsProcessor", (3,), {}),
    ("NoRepeatNGramLogitsProcessor", (20,), {}),
    ("NoBadWordsLogitsProcessor", ([[3], [4, 5], [1, 2, 7], [9]],), dict(eos_token_id=9)),
    ("NoBadWordsLogitsProcessor", ([[3], [11, 2]],), dict(eos_token_id=[3, 8])),
    ("SequenceBiasLogitsProcessor", ({(3,): 2.5, (4, 5): -1.0, (1, 2, 7): 4.0, (6,): -0.5},), {}),
    ("MinLengthLogitsProcessor", (20,), dict(eos_token_id=[2, 7])),
    ("MinLengthLogitsProcessor", (5,), dict(eos_token_id=2)),
    ("MinNewTokensLengthLogitsProcessor", (8, 10), dict(eos_token_id=[2, 7])),
    ("MinNewTokensLengthLogitsProcessor", (8, 2), dict(eos_token_id=2)),
    ("ForcedEOSTokenLogitsProcessor", (13,), dict(eos_token_id=[2, 7])),
    ("ForcedEOSTokenLogitsProcessor", (14,), dict(eos_token_id=2)),
    ("InfNanRemoveLogitsProcessor", (), {}),
    ("LogitNormalization", (), {}),
    ("SuppressTokensLogitsProcessor", ([1, 4, 49],), {}),
    ("SuppressTokensAtBeginLogitsProcessor", ([1, 4],), dict(begin_index=12)),
    ("SuppressTokensAtBeginLogitsProcessor", ([1, 4],), dict(begin_index=3)),
    ("ExponentialDecayLengthPenalty", ((4, 1.5),), dict(eos_token_id=[2, 7], input_ids_seq_length=3)),
    ("ExponentialDecayLengthPenalty", ((20, 1.5),), dict(eos_token_id=2, input_ids_seq_length=3)),
]


# cases that leave these scores unchanged (a condition not met, nothing to filter); every other case
# must change them for at least one seed, so that no comparison passes vacuously
UNCHANGED = {"TopKLogitsWarper-5", "TopPLogitsWarper-8", "NoRepeatNGramLogitsProcessor-22",
             "MinLengthLogitsProcessor-27", "MinNewTokensLengthLogitsProcessor-29", "ForcedEOSTokenLogitsProcessor-31",
             "SuppressTokensAtBeginLogitsProcessor-36", "ExponentialDecayLengthPenalty-38"}
IDS = [f"{c[0]}-{i}" for i, c in enumerate(CASES)]


@pytest.mark.parametrize("case_id, name, args, kwargs", [(i, *c) for i, c in zip(IDS, CASES)], ids=IDS)
def test_processor_matches_transformers(case_id, name, args, kwargs):
    changed = False
    for seed in range(3):
        ids, scores = random_inputs(seed)
        if name == "InfNanRemoveLogitsProcessor":
            scores[2, 4], scores[3, 1] = float("nan"), float("inf")
        before = scores.clone()
        a = getattr(ours_gen, name)(*args, **kwargs)(ids, scores)
        b = getattr(theirs_gen, name)(*args, **kwargs)(ids, scores.clone())
        assert same(scores, before), "the processor wrote into its input"
        assert a.dtype == b.dtype and a.shape == b.shape
        assert same(a, b), f"{name}: max difference {(a - b).abs().nan_to_num().max()}"
        changed |= not same(a, scores)
    assert changed == (case_id not in UNCHANGED)


def test_prefix_constrained_and_forced_bos():
    ids, scores = random_inputs(1, batch=4, length=1)
    fn = lambda batch_id, sent: [batch_id, 7, int(sent[-1]) % VOCAB]  # noqa: E731
    a = ours_gen.PrefixConstrainedLogitsProcessor(fn, 2)(ids, scores)
    b = theirs_gen.PrefixConstrainedLogitsProcessor(fn, 2)(ids, scores.clone())
    assert torch.equal(a, b)
    a = ours_gen.ForcedBOSTokenLogitsProcessor(3)(ids, scores)
    b = theirs_gen.ForcedBOSTokenLogitsProcessor(3)(ids, scores.clone())
    assert torch.equal(a, b)


def test_processor_list_passes_extra_arguments():
    class NeedsStep(ours_gen.LogitsProcessor):
        def __call__(self, input_ids, scores, step):
            return scores + step

    ids, scores = random_inputs(0)
    procs = ours_gen.LogitsProcessorList([ours_gen.TemperatureLogitsWarper(2.0), NeedsStep()])
    assert torch.equal(procs(ids, scores, step=1.0), scores / 2.0 + 1.0)
    with pytest.raises(ValueError, match="step"):
        procs(ids, scores, other=1)


@pytest.mark.parametrize("name, args, match", [
    ("TemperatureLogitsWarper", (0.0,), "temperature"), ("TemperatureLogitsWarper", (-1.0,), "temperature"),
    ("TopKLogitsWarper", (0,), "top_k"), ("TopKLogitsWarper", (-2,), "top_k"),
    ("TopPLogitsWarper", (1.5,), "top_p"), ("MinPLogitsWarper", (-0.1,), "min_p"),
    ("TypicalLogitsWarper", (1.0,), "typical_p"), ("RepetitionPenaltyLogitsProcessor", (0.0,), "penalty"),
    ("NoRepeatNGramLogitsProcessor", (0,), "ngram_size"), ("NoBadWordsLogitsProcessor", ([],), "bad_words_ids"),
    ("NoBadWordsLogitsProcessor", ([[1], 2],), "bad_words_ids"), ("MinLengthLogitsProcessor", (-1, 2), "min_length"),
    ("EpsilonLogitsWarper", (1.0,), "epsilon_cutoff"), ("EtaLogitsWarper", (0.0,), "eta_cutoff"),
])
def test_invalid_processor_arguments(name, args, match):
    with pytest.raises(ValueError, match=match):
        getattr(ours_gen, name)(*args)
