"""BERT x every head against transformers on tiny random weights (float32, padded batches)."""

import pytest
import torch

from conftest import HEAD_OUTPUTS, check_against_transformers

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, type_vocab_size=2, num_labels=3)


@pytest.mark.parametrize("task", list(HEAD_OUTPUTS))
def test_bert_head_matches_transformers(task, tmp_path, padded_batch):
    ids, mask = padded_batch()
    token_types = torch.zeros_like(ids)
    token_types[:, 3:] = 1
    inputs = dict(input_ids=ids, attention_mask=mask, token_type_ids=token_types * mask)
    config = dict(TINY, num_labels=2) if task == "AutoModelForQuestionAnswering" else TINY
    check_against_transformers("bert", task, tmp_path, inputs, **config)


@pytest.mark.parametrize("hidden_act", ["gelu_new", "relu"])
def test_bert_activations(hidden_act, tmp_path, padded_batch):
    ids, mask = padded_batch(lengths=(4, 7))
    check_against_transformers("bert", "AutoModel", tmp_path, dict(input_ids=ids, attention_mask=mask),
                               **dict(TINY, hidden_act=hidden_act))
