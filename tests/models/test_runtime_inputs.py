"""Every model family on hostile or careless runtime inputs, through the shared checks of
models/_common.py (check_inputs, check_mask) and generation/cache.py (cache_step, check_mask_values).

What transformers 5.25 does on the same tiny models (checked when this was written), and what we do:
- float and bool 0/1 masks: accepted by both, same outputs.
- a mask holding 2, 0.5 or -inf: transformers reads any non-zero value as "attend" and runs on; we refuse it
  naming attention_mask (such a mask is a caller's mistake: token_type_ids, or an additive mask).
- a mask of the wrong shape: transformers' BERT ignores it silently, its Llama/GPT-2 return different
  numbers; we refuse it naming attention_mask and both shapes.
- an empty batch (0, n) or an empty sequence (n, 0): transformers fails inside attention
  ("cannot reshape tensor of 0 elements"); we name input_ids.
- ids outside the vocabulary: an IndexError naming input_ids' bad id and the vocabulary size, checked before
  the embedding (on CUDA the embedding's device assert would poison the context).
- past the learned positions: an error naming the length and max_position_embeddings, and telling the caller
  to truncate with the tokenizer. Llama (RoPE) and T5 (relative positions) have no such limit, as in
  transformers.
"""

from __future__ import annotations

import pytest
import torch

import fastformers

SIZES = {
    "bert": ("AutoModel", dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                               vocab_size=99, max_position_embeddings=16)),
    "roberta": ("AutoModel", dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                                  vocab_size=99, max_position_embeddings=18)),
    "distilbert": ("AutoModel", dict(dim=32, n_layers=1, n_heads=2, hidden_dim=37, vocab_size=99,
                                     max_position_embeddings=16)),
    "llama": ("AutoModelForCausalLM", dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                           intermediate_size=37, vocab_size=99, max_position_embeddings=16)),
    "gpt2": ("AutoModelForCausalLM", dict(n_embd=32, n_layer=1, n_head=2, vocab_size=99, n_positions=16)),
    "t5": ("AutoModelForSeq2SeqLM", dict(d_model=32, num_layers=1, num_heads=2, d_ff=37, vocab_size=99, d_kv=16)),
    "bart": ("AutoModelForSeq2SeqLM", dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                           decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37,
                                           vocab_size=99, max_position_embeddings=16)),
}
FAMILIES = list(SIZES)
_MODELS = {}


def tiny(family):
    if family not in _MODELS:
        task, sizes = SIZES[family]
        torch.manual_seed(0)
        config = fastformers.AutoConfig.for_model(family, **sizes)
        _MODELS[family] = getattr(fastformers, task).from_config(config).eval()
    return _MODELS[family]


def run(family, ids, mask=None):
    model = tiny(family)
    extra = {"decoder_input_ids": ids} if model.config.is_encoder_decoder else {}
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, **extra)[0]


IDS = torch.tensor([[5, 6, 7, 8, 9], [9, 8, 7, 6, 5]])


@pytest.mark.parametrize("family", FAMILIES)
def test_float_and_bool_masks_of_zeros_and_ones_are_accepted(family):
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    if family in ("llama", "gpt2"):
        mask = mask.flip(1)  # decoders: left padding
    expected = run(family, IDS, mask)
    for other in (mask.float(), mask.bool(), mask.to(torch.int32)):
        torch.testing.assert_close(run(family, IDS, other), expected, rtol=0, atol=0)


@pytest.mark.malformed
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("value", [2, 0.5, float("-inf"), -1])
def test_mask_values_other_than_zero_and_one_refused(family, value):
    mask = torch.ones(2, 5, dtype=torch.float32 if isinstance(value, float) else torch.long)
    mask[1, 2] = value
    with pytest.raises(ValueError, match=rf"attention_mask holds {value!r}: a mask holds 1 \(attend\) and 0"):
        run(family, IDS, mask)


@pytest.mark.malformed
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("shape", [(2, 4), (2, 6), (1, 5), (2, 1, 5)])
def test_mask_of_the_wrong_shape_refused(family, shape):
    with pytest.raises(ValueError, match=r"attention_mask must have shape .*\(2, 5\), got " + rf"\({shape[0]}, "):
        run(family, IDS, torch.ones(shape, dtype=torch.long))


@pytest.mark.malformed
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("shape, what", [((0, 5), r"an empty batch \(0 rows\)"), ((2, 0), r"no tokens \(sequence length 0\)")])
def test_empty_batch_or_sequence_names_input_ids(family, shape, what):
    with pytest.raises(ValueError, match=rf"input_ids holds {what}: shape \({shape[0]}, {shape[1]}\)"):
        run(family, torch.zeros(shape, dtype=torch.long))


@pytest.mark.malformed
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("bad", [-1, 99, 2**40])
def test_ids_outside_the_vocabulary_name_input_ids_value_and_size(family, bad):
    ids = IDS.clone()
    ids[1, 3] = bad
    with pytest.raises(IndexError, match=rf"input_ids holds token id {bad}, outside the vocabulary of size 99"):
        run(family, ids)


@pytest.mark.malformed
@pytest.mark.parametrize("family", ["bert", "distilbert", "gpt2", "bart", "roberta"])
def test_past_the_learned_positions_says_how_to_truncate(family):
    limit = tiny(family).config.max_position_embeddings - (2 if family == "roberta" else 0)  # RoBERTa's offset
    run(family, torch.full((1, limit), 5))
    with pytest.raises(ValueError, match=rf"sequence length {limit + 1} exceeds max_position_embeddings={limit}"
                                         rf".*truncation=True, max_length={limit}"):
        run(family, torch.full((1, limit + 1), 5))


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_relative_and_rotary_positions_have_no_limit_as_in_transformers(family):
    assert run(family, torch.full((1, 40), 5)).shape[:2] == (1, 40)
