"""RoBERTa and XLM-RoBERTa x every head against transformers on tiny random weights."""

import pytest
import torch

from conftest import ENCODER_HEADS, check_against_transformers

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=40, type_vocab_size=1, num_labels=3, pad_token_id=1)


@pytest.mark.parametrize("model_type", ["roberta", "xlm-roberta"])
@pytest.mark.parametrize("task", ENCODER_HEADS)
def test_roberta_head_matches_transformers(model_type, task, tmp_path, padded_batch):
    ids, mask = padded_batch(pad_id=1)
    config = dict(TINY, num_labels=2) if task == "AutoModelForQuestionAnswering" else TINY
    check_against_transformers(model_type, task, tmp_path, dict(input_ids=ids, attention_mask=mask), **config)


def test_roberta_inputs_embeds_positions(tmp_path):
    """Without input_ids, positions run from padding_idx + 1, as in transformers."""
    embeds = torch.randn(2, 6, 32, generator=torch.Generator().manual_seed(3))
    check_against_transformers("roberta", "AutoModel", tmp_path, dict(inputs_embeds=embeds), **TINY)


def test_roberta_longest_sequence(tmp_path):
    """max_position_embeddings - padding_idx - 1 tokens fit; one more is a clear error."""
    import fastformers
    from conftest import build_reference

    path, _ = build_reference("roberta", "AutoModel", tmp_path, **TINY)
    model = fastformers.AutoModel.from_pretrained(path)
    model(torch.full((1, 38), 5))
    with pytest.raises(ValueError, match=r"sequence length 39 exceeds max_position_embeddings=38"):
        model(torch.full((1, 39), 5))
